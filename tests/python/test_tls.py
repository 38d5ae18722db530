"""The gateway's bearer-token auth over TLS, from Python's grpcio with generated stubs: the way a
non-Rust client reaches a gateway on another host (docs/DEPLOY.md)."""

import pathlib
import subprocess

import grpc
import pytest

from conftest import pumas_bin, wait_serving

TOKEN = "py-s3cret"


def make_certs(out: pathlib.Path) -> pathlib.Path:
    tool = pathlib.Path(pumas_bin()).with_name("make-certs")
    if not tool.exists():
        pytest.fail(f"{tool} not found; build it with `cargo build -p pumas-e2e`")
    subprocess.run([str(tool), str(out)], check=True, capture_output=True)
    return out


def serve(role: str, args: list, log: pathlib.Path) -> tuple:
    """Starts `pumas serve <role>` on an ephemeral loopback port; returns (process, address)."""
    proc = subprocess.Popen(
        [pumas_bin(), "serve", role, "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE, stderr=open(log, "wb"), stdin=subprocess.DEVNULL, text=True,
    )
    for line in proc.stdout:
        if " listening on " in line:
            return proc, line.split()[-1]
    proc.kill()
    raise RuntimeError(f"pumas serve {role} did not start:\n{log.read_text()}")


@pytest.fixture
def tls_gateway(tmp_path):
    certs = make_certs(tmp_path / "certs")
    index, index_addr = serve("index", ["--data-root", str(tmp_path / "root")], tmp_path / "index.log")
    # The index listens at once and answers UNAVAILABLE while it opens models.db.
    wait_serving(index_addr, "pumas.index.v1.IndexService")
    gateway, gateway_addr = serve(
        "gateway",
        [
            "--index", index_addr, "--fetch", "127.0.0.1:9", "--mapper", "local=127.0.0.1:9",
            "--api-token", TOKEN,
            "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
        ],
        tmp_path / "gateway.log",
    )
    yield gateway_addr, (certs / "ca.pem").read_bytes()
    for proc in (gateway, index):
        proc.terminate()
        proc.wait(timeout=30)


def test_bearer_token_over_tls_from_grpcio(tls_gateway, stubs):
    from pumas.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    addr, ca = tls_gateway
    tls = grpc.ssl_channel_credentials(root_certificates=ca)

    # grpcio's own call credentials send `authorization: Bearer <token>` on every call.
    with grpc.secure_channel(addr, grpc.composite_channel_credentials(
            tls, grpc.access_token_call_credentials(TOKEN))) as channel:
        answer = gateway_pb2_grpc.ModelLibraryServiceStub(channel).SearchModels(
            gateway_pb2.SearchModelsRequest(query=""), timeout=10)
        assert list(answer.results) == []

    with grpc.secure_channel(addr, tls) as channel:
        stub = gateway_pb2_grpc.ModelLibraryServiceStub(channel)
        for metadata in ([], [("authorization", "Bearer wrong")]):
            with pytest.raises(grpc.RpcError) as err:
                stub.SearchModels(gateway_pb2.SearchModelsRequest(), metadata=metadata, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value.details()
            assert TOKEN not in (err.value.details() or "")

    # Plain text to a TLS port fails at the transport, never reaching the API.
    with grpc.insecure_channel(addr) as channel:
        with pytest.raises(grpc.RpcError) as err:
            gateway_pb2_grpc.ModelLibraryServiceStub(channel).SearchModels(
                gateway_pb2.SearchModelsRequest(), metadata=[("authorization", f"Bearer {TOKEN}")],
                timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

