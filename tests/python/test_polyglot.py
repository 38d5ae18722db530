"""A Python client drives the suite through stubs generated from proto/ with grpcio-tools:
health, reflection (what grpcurl does), GetServiceInfo on every service, and rich error details."""

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2

from conftest import wait_serving

GATEWAY = "pumas.gateway.v1.ModelLibraryService"


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
        # Backends answer only the suite's own services (the service token); the gateway anyone.
        metadata = () if role == "gateway" else suite.service_metadata
        info = stub.GetServiceInfo(request(), timeout=5, metadata=metadata).info
        assert info.name == role
        assert info.dependency_contract_version == current
        if role != "gateway":
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetServiceInfo(request(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

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
    from pumas.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    stub = gateway_pb2_grpc.ModelLibraryServiceStub(grpc.insecure_channel(suite.addresses["gateway"]))
    with pytest.raises(grpc.RpcError) as raised:
        stub.StartDownload(gateway_pb2.StartDownloadRequest(repo_id="not a repo"), timeout=5)
    err = raised.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err)
    assert status is not None, "google.rpc.Status details are attached"
    infos, violations = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(bad.field_violations)
    assert [(i.reason, i.domain) for i in infos] == [("INVALID_ARGUMENT", "pumas")]
    assert [v.field for v in violations] == ["repo_id"]
    assert "org/name" in err.details()


def write_lora(path):
    """A tiny SDXL LoRA with realistic tensor names and zeroed data."""
    import json
    import struct
    header = {
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight":
            {"dtype": "F16", "shape": [4, 1280], "data_offsets": [0, 10240]},
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight":
            {"dtype": "F16", "shape": [640, 4], "data_offsets": [10240, 15360]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - (8 + len(raw)) % 8) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(15360))


def test_search_and_resolution_from_python(suite, stubs, tmp_path):
    from pumas.common.v1 import dependency_pb2, model_pb2
    from pumas.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    wait_serving(suite.addresses["gateway"], GATEWAY)
    gateway = gateway_pb2_grpc.ModelLibraryServiceStub(grpc.insecure_channel(suite.addresses["gateway"]))
    source = tmp_path / "Polyglot Detail XL.safetensors"
    write_lora(source)
    job = gateway.ImportModels(gateway_pb2.ImportModelsRequest(paths=[str(source)], mode=model_pb2.IMPORT_MODE_COPY), timeout=10).job
    final = None
    for update in gateway.WatchImportJob(gateway_pb2.WatchImportJobRequest(job_id=job.status.job_id), timeout=30):
        final = update.job
    model_id = final.results[0].model_id
    assert model_id == "lora/sdxl/polyglot-detail-xl"

    found = gateway.SearchModels(gateway_pb2.SearchModelsRequest(query="polyglot det", page_size=5), timeout=5)
    assert [r.local.model.model_id for r in found.results] == [model_id]
    assert found.dependency_contract_version == 1

    # Out of the box, the built-in catalog bound the LoRA as it came in.
    cuda = dependency_pb2.PlatformContext(os="linux", arch="x86_64", accelerator="cuda", accelerator_version="12.4")
    answer = gateway.ResolveModelDependencyRequirements(gateway_pb2.ResolveModelDependencyRequirementsRequest(
        model_id=model_id, backend_key="torch-cuda", platform_context=cuda,
        expected_dependency_contract_version=1), timeout=5).requirements
    assert answer.validation_state == dependency_pb2.VALIDATION_STATE_RESOLVED, answer
    assert answer.groups[0].profile_id == "diffusers-sd"
    assert ("torch", "==2.11.0") in [(r.name, r.exact_pin) for r in answer.groups[0].requirements]

    # A gateway-only client authors its own profile and binding (no index address, no service
    # token) and resolves with them.
    def requirement(name, pin):
        return dependency_pb2.Requirement(kind=dependency_pb2.REQUIREMENT_KIND_PYTHON_PACKAGE, name=name, exact_pin=pin)

    def kohya(torch_pin):
        return dependency_pb2.DependencyProfile(
            profile_id="kohya-lora", version="1", environment_kind="python-venv",
            variants=[dependency_pb2.DependencyProfileVariant(
                backend_key="torch-cuda", platform_selector="linux-*",
                requirements=[requirement("torch", torch_pin), requirement("torchvision", "==0.20.1")])])

    stored = gateway.PutDependencyProfile(gateway_pb2.PutDependencyProfileRequest(profile=kohya("==2.5.1")), timeout=5).profile
    assert stored.valid and stored.origin == dependency_pb2.PROFILE_ORIGIN_STORED
    bound = gateway.PutModelDependencyBinding(gateway_pb2.PutModelDependencyBindingRequest(
        binding=dependency_pb2.DependencyBinding(
            model_id=model_id, profile_id="kohya-lora", profile_version="1", backend_key="torch-cuda",
            platform_selector="linux-x86_64")), timeout=5).binding
    assert bound.origin == dependency_pb2.BINDING_ORIGIN_USER
    answer = gateway.ResolveModelDependencyRequirements(gateway_pb2.ResolveModelDependencyRequirementsRequest(
        model_id=model_id, backend_key="torch-cuda",
        platform_context=dependency_pb2.PlatformContext(os="linux", arch="x86_64")), timeout=5).requirements
    # A consumer checks the contract version first, then treats anything but RESOLVED as not ready.
    assert answer.dependency_contract_version == 1
    assert answer.validation_state == dependency_pb2.VALIDATION_STATE_RESOLVED, answer
    assert [(r.name, r.exact_pin) for r in answer.groups[0].requirements] == [
        ("torch", "==2.5.1"), ("torchvision", "==0.20.1")]
    assert answer.groups[0].env_id.startswith("env-")

    # Versions are immutable: other content is ALREADY_EXISTS naming the version as the resource.
    with pytest.raises(grpc.RpcError) as raised:
        gateway.PutDependencyProfile(gateway_pb2.PutDependencyProfileRequest(profile=kohya("==2.4.0")), timeout=5)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    status = rpc_status.from_call(raised.value)
    resources = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            info = error_details_pb2.ResourceInfo()
            detail.Unpack(info)
            resources.append(info.resource_name)
    assert resources == ["kohya-lora@1"]
    assert "publish a new version" in raised.value.details()

    with pytest.raises(grpc.RpcError) as raised:
        gateway.ResolveModelDependencyRequirements(gateway_pb2.ResolveModelDependencyRequirementsRequest(
            model_id=model_id, platform_context=dependency_pb2.PlatformContext()), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
