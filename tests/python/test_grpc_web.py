"""A browser's way in: gRPC-Web on the gateway's own port, spoken by a stock HTTP/1.1 client
(urllib, as curl would with an application/grpc-web+proto body), answering what gRPC answers,
with the same statuses, streams, auth, and CORS for configured origins only."""

import struct
import urllib.error
import urllib.parse
import urllib.request

import grpc
import pytest

from conftest import Suite, wait_serving
from test_polyglot import write_lora

GATEWAY = "pumas.gateway.v1.ModelLibraryService"
UI_ORIGIN = "http://ui.example:5173"
TOKEN = "web-test-token-0123456789"


def grpc_web(address, method, request, response_cls, headers=None):
    """One gRPC-Web call over HTTP/1.1: the messages, and the status and message from the
    trailers (or the headers, for a trailers-only answer)."""
    payload = request.SerializeToString()
    body = b"\x00" + struct.pack(">I", len(payload)) + payload
    req = urllib.request.Request(
        f"http://{address}/{GATEWAY}/{method}",
        data=body,
        method="POST",
        headers={
            "content-type": "application/grpc-web+proto",
            "accept": "application/grpc-web+proto",
            "x-grpc-web": "1",
            **(headers or {}),
        },
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("application/grpc-web")
        status = resp.headers.get("grpc-status")
        message = resp.headers.get("grpc-message", "")
        details = resp.headers.get("grpc-status-details-bin")
        data = resp.read()
    messages, at = [], 0
    while at < len(data):
        flag, length = data[at], struct.unpack(">I", data[at + 1:at + 5])[0]
        frame = data[at + 5:at + 5 + length]
        at += 5 + length
        if flag & 0x80:
            for line in frame.decode().split("\r\n"):
                if ":" in line:
                    key, value = line.split(":", 1)
                    key, value = key.strip().lower(), value.strip()
                    if key == "grpc-status":
                        status = value
                    elif key == "grpc-message":
                        message = value
                    elif key == "grpc-status-details-bin":
                        details = value
        else:
            messages.append(response_cls.FromString(frame))
    return messages, int(status), urllib.parse.unquote(message), details


@pytest.fixture(scope="module")
def guarded():
    """A suite whose gateway requires a token and lets one other origin's pages call it."""
    running = Suite(extra=("--web-origin", UI_ORIGIN, "--api-token", TOKEN))
    yield running
    running.stop()


def test_grpc_web_answers_what_grpc_answers(suite, stubs):
    from pumas.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    address = suite.addresses["gateway"]
    wait_serving(address, GATEWAY)
    stub = gateway_pb2_grpc.ModelLibraryServiceStub(grpc.insecure_channel(address))
    by_grpc = stub.ListModels(gateway_pb2.ListModelsRequest(page_size=5), timeout=10)
    [by_web], status, _, _ = grpc_web(address, "ListModels", gateway_pb2.ListModelsRequest(page_size=5),
                                      gateway_pb2.ListModelsResponse)
    assert status == 0
    assert by_web == by_grpc
    [info], status, _, _ = grpc_web(address, "GetServiceInfo", gateway_pb2.GetServiceInfoRequest(),
                                    gateway_pb2.GetServiceInfoResponse)
    assert status == 0
    same = stub.GetServiceInfo(gateway_pb2.GetServiceInfoRequest(), timeout=10).info
    assert (info.info.name, info.info.version, info.info.dependency_contract_version) == (
        same.name, same.version, same.dependency_contract_version)
    assert info.info.name == "gateway"


def test_grpc_web_errors_carry_the_status_and_rich_details(suite, stubs):
    from pumas.gateway.v1 import gateway_pb2

    messages, status, message, details = grpc_web(
        suite.addresses["gateway"], "GetModel", gateway_pb2.GetModelRequest(model_id="not an id"),
        gateway_pb2.GetModelResponse)
    assert messages == []
    assert status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "model id" in message, message
    assert details, "google.rpc.Status with ErrorInfo/BadRequest travels as grpc-status-details-bin"


def test_grpc_web_streams_a_job_to_its_end(suite, stubs, tmp_path):
    from pumas.common.v1 import job_pb2, model_pb2
    from pumas.gateway.v1 import gateway_pb2

    address = suite.addresses["gateway"]
    source = tmp_path / "Web Stream Lora.safetensors"
    write_lora(source)
    # Bytes of its own: the session's suite is shared, and the same bytes are one model.
    data = bytearray(source.read_bytes())
    data[-1] = 0x5A
    source.write_bytes(bytes(data))
    [started], status, message, _ = grpc_web(
        address, "ImportModels",
        gateway_pb2.ImportModelsRequest(paths=[str(source)], mode=model_pb2.IMPORT_MODE_COPY),
        gateway_pb2.ImportModelsResponse)
    assert status == 0, message
    updates, status, message, _ = grpc_web(
        address, "WatchImportJob", gateway_pb2.WatchImportJobRequest(job_id=started.job.status.job_id),
        gateway_pb2.WatchImportJobResponse)
    assert status == 0, message
    assert updates, "the stream sent the job's states"
    assert updates[-1].job.status.state == job_pb2.JOB_STATE_SUCCEEDED
    assert updates[-1].job.results[0].model_id == "lora/sdxl/web-stream-lora"


def test_the_same_token_guards_grpc_web(guarded, stubs):
    from pumas.gateway.v1 import gateway_pb2

    address = guarded.addresses["gateway"]
    wait_serving(address, GATEWAY)
    request = gateway_pb2.ListModelsRequest(page_size=1)
    _, status, _, _ = grpc_web(address, "ListModels", request, gateway_pb2.ListModelsResponse)
    assert status == grpc.StatusCode.UNAUTHENTICATED.value[0]
    _, status, _, _ = grpc_web(address, "ListModels", request, gateway_pb2.ListModelsResponse,
                               headers={"authorization": f"Bearer {TOKEN}"})
    assert status == 0


def preflight(address, origin):
    req = urllib.request.Request(
        f"http://{address}/{GATEWAY}/ListModels",
        method="OPTIONS",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-grpc-web,authorization",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers
    except urllib.error.HTTPError as err:
        return err.code, err.headers


def test_cors_admits_configured_origins_only(guarded, suite):
    status, headers = preflight(guarded.addresses["gateway"], UI_ORIGIN)
    assert status == 200
    assert headers.get("access-control-allow-origin") == UI_ORIGIN
    assert "authorization" in headers.get("access-control-allow-headers", "").lower()
    _, headers = preflight(guarded.addresses["gateway"], "http://evil.example")
    assert headers.get("access-control-allow-origin") is None
    # With no origin configured, no other origin's page may call at all.
    _, headers = preflight(suite.addresses["gateway"], UI_ORIGIN)
    assert headers.get("access-control-allow-origin") is None
