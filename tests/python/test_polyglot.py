"""A Python client drives the suite through stubs generated from proto/ with grpcio-tools:
health, reflection (what grpcurl does), GetServiceInfo on every service, and rich error details."""

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2

GATEWAY = "pumas.gateway.v1.ModelLibraryService"


def wait_serving(address, service, timeout=30.0):
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


def test_health_per_service(suite):
    names = {
        "gateway": GATEWAY,
        "index": "pumas.index.v1.IndexService",
        "fetch": "pumas.fetch.v1.FetchService",
        "mapper": "pumas.mapper.v1.MapperService",
    }
    for role, service in names.items():
        wait_serving(suite.addresses[role], service)


def test_service_info_from_generated_stubs(suite, stubs):
    from pumas.gateway.v1 import gateway_pb2, gateway_pb2_grpc
    from pumas.index.v1 import index_pb2, index_pb2_grpc
    from pumas.fetch.v1 import fetch_pb2, fetch_pb2_grpc
    from pumas.mapper.v1 import mapper_pb2, mapper_pb2_grpc
    from pumas.common.v1 import contract_pb2

    wait_serving(suite.addresses["gateway"], GATEWAY)
    current = contract_pb2.DEPENDENCY_CONTRACT_VERSION_V1
    assert current == 1
    calls = [
        (gateway_pb2_grpc.ModelLibraryServiceStub, gateway_pb2.GetServiceInfoRequest, "gateway"),
        (index_pb2_grpc.IndexServiceStub, index_pb2.GetServiceInfoRequest, "index"),
        (fetch_pb2_grpc.FetchServiceStub, fetch_pb2.GetServiceInfoRequest, "fetch"),
        (mapper_pb2_grpc.MapperServiceStub, mapper_pb2.GetServiceInfoRequest, "mapper"),
    ]
    for stub_class, request, role in calls:
        stub = stub_class(grpc.insecure_channel(suite.addresses[role]))
        info = stub.GetServiceInfo(request(), timeout=5).info
        assert info.name == role
        assert info.dependency_contract_version == current

    gateway = gateway_pb2_grpc.ModelLibraryServiceStub(grpc.insecure_channel(suite.addresses["gateway"]))
    backends = gateway.GetServiceInfo(gateway_pb2.GetServiceInfoRequest(), timeout=5).backends
    assert [b.role for b in backends] == ["index", "fetch", "mapper"]
    assert all(b.state == gateway_pb2.BACKEND_STATE_SERVING for b in backends)


def test_reflection_lists_and_calls_without_stubs(suite):
    """What `grpcurl list` / `grpcurl -d '{}' addr Service/Method` do, from reflection alone."""
    channel = grpc.insecure_channel(suite.addresses["gateway"])
    database = ProtoReflectionDescriptorDatabase(channel)
    services = database.get_services()
    assert GATEWAY in services
    assert "grpc.health.v1.Health" in services
    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName(GATEWAY)
    method = service.FindMethodByName("GetServiceInfo")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        f"/{GATEWAY}/GetServiceInfo",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    answer = json_format.MessageToDict(call(request_class(), timeout=5))
    assert answer["info"]["dependencyContractVersion"] == 1
    assert {m.name for m in service.methods} >= {
        "SearchModels", "ListModels", "GetModel", "ResolveModelDependencyRequirements", "ImportModels",
        "StartDownload", "GetDownload", "WatchDownload", "CancelDownload", "SearchHub",
        "PreviewMapping", "ApplyMapping", "GetServiceInfo",
    }


def test_contract_request_fields_clients_rely_on(stubs):
    from pumas.gateway.v1 import gateway_pb2

    def fields(message):
        return set(message.DESCRIPTOR.fields_by_name)

    assert fields(gateway_pb2.SearchModelsRequest) >= {"query", "page_size", "page_token", "include_hub", "filters"}
    assert fields(gateway_pb2.ImportModelsRequest) >= {"paths", "mode"}
    assert fields(gateway_pb2.GetModelRequest) >= {"model_id"}
    assert fields(gateway_pb2.ResolveModelDependencyRequirementsRequest) >= {
        "model_id", "platform_context", "backend_key"}
    assert fields(gateway_pb2.StartDownloadRequest) >= {"repo_id", "revision"}
    assert fields(gateway_pb2.ApplyMappingRequest) >= {"app", "mapper"}


def test_errors_carry_rich_details(suite, stubs):
    from pumas.index.v1 import index_pb2, index_pb2_grpc

    stub = index_pb2_grpc.IndexServiceStub(grpc.insecure_channel(suite.addresses["index"]))
    with pytest.raises(grpc.RpcError) as raised:
        stub.BeginModelDownload(index_pb2.BeginModelDownloadRequest(), timeout=5)
    err = raised.value
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    status = rpc_status.from_call(err)
    assert status is not None, "google.rpc.Status details are attached"
    infos = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
    assert [(i.reason, i.domain) for i in infos] == [("NOT_IMPLEMENTED", "pumas")]
    assert "fetch capability" in err.details()
