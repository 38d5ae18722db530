"""Fixtures for the Python client tests: stubs generated from proto/, and a running suite."""

import os
import pathlib
import subprocess
import sys
import tempfile
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"


def generate_stubs(out_dir: pathlib.Path) -> None:
    """Runs grpcio-tools' bundled protoc over every .proto in proto/."""
    from grpc_tools import protoc  # noqa: PLC0415  (only after the venv is active)

    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    wkt = pathlib.Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{wkt}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")


@pytest.fixture(scope="session")
def stubs():
    out = pathlib.Path(tempfile.mkdtemp(prefix="pumas-stubs-"))
    generate_stubs(out)
    sys.path.insert(0, str(out))
    yield out
    sys.path.remove(str(out))


def pumas_bin() -> str:
    binary = os.environ.get("PUMAS_BIN") or str(REPO / "target" / "debug" / "pumas")
    if not os.path.exists(binary):
        pytest.fail(f"pumas binary not found at {binary}; build it with `cargo build -p pumas`")
    return binary


def wait_serving(address, service, timeout=30.0):
    """Waits until `service` at `address` says SERVING on gRPC health (a backend listens before
    it is ready, and answers UNAVAILABLE until then)."""
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
            if last == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError as err:  # not up yet
            last = err.code()
        time.sleep(0.05)
    pytest.fail(f"{service} at {address} not SERVING after {timeout}s (last: {last})")


class Suite:
    """A `pumas up` process on ephemeral ports with a temporary data root."""

    def __init__(self, extra=()):
        self.tmp = tempfile.TemporaryDirectory(prefix="pumas-py-")
        self.root = pathlib.Path(self.tmp.name) / "root"
        self.log = open(pathlib.Path(self.tmp.name) / "up.log", "wb")
        self.proc = subprocess.Popen(
            [
                pumas_bin(), "up", "--data-root", str(self.root),
                "--gateway-port", "0", "--index-port", "0", "--fetch-port", "0", "--mapper-port", "0",
                "--backend-check-ms", "100", *extra,
            ],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        self.addresses = {}
        for line in self.proc.stdout:
            words = line.split()
            if len(words) >= 2 and words[0] in ("gateway", "index", "fetch", "mapper"):
                self.addresses[words[0]] = words[1]
            if line.startswith("Stop with Ctrl-C"):
                break
        if len(self.addresses) != 4:
            self.stop()
            raise RuntimeError(f"pumas up did not start; addresses {self.addresses}")
        # What the suite's own services send each other; a backend refuses calls without it.
        token = (self.root / "launcher-data" / "secrets" / "service-token").read_text().split()[0]
        self.service_metadata = (("x-pumas-service-token", token),)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        finally:
            self.log.close()
            self.tmp.cleanup()


@pytest.fixture(scope="session")
def suite(stubs):
    running = Suite()
    yield running
    running.stop()
