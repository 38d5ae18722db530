#!/usr/bin/env python3
"""Writes docs/API.md from the .proto files (their comments are the source of truth).

    .venv/bin/python tools/gen_api_doc.py          # rewrite docs/API.md
    .venv/bin/python tools/gen_api_doc.py --check  # exit 1 if docs/API.md is stale (tests run this)
"""

import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parents[1]
PROTO = REPO / "proto"
OUT = REPO / "docs" / "API.md"

PORTS = {"gateway": 50051, "index": 50052, "fetch": 50053, "mapper": 50054}

# RPCs that are built (the rest answer UNIMPLEMENTED naming their capability). Update with the code.
BUILT_EVERYWHERE = {"GetServiceInfo"}
BUILT = {
    f"pumas.gateway.v1.ModelLibraryService/{rpc}"
    for rpc in [
        "SearchModels", "ListModels", "GetModel", "UpdateModelMetadata", "DeleteModel", "ImportModels", "Reindex",
        "GetImportJob", "WatchImportJob", "SearchHub", "StartDownload", "GetDownload", "ListDownloads", "WatchDownload",
        "CancelDownload", "PauseDownload", "ResumeDownload", "ListApps", "PreviewMapping", "ApplyMapping",
        "RepairMapping", "Unmap", "WatchMappingJob", "PreviewAdoption", "StartAdoption",
        "ResolveModelDependencyRequirements",
        "BatchResolveModelDependencyRequirements",
    ]
} | {
    f"pumas.index.v1.IndexService/{rpc}"
    for rpc in [
        "ListModels", "SearchModels", "GetModel", "BatchGetModels", "FindModelsByHash", "UpdateModelMetadata",
        "DeleteModel", "ImportModels", "Reindex", "GetJob", "ListJobs", "WatchJob", "CancelJob", "WatchChanges",
        "ReplaceLinkHolds", "VerifyModels", "PutDependencyProfile", "GetDependencyProfile", "ListDependencyProfiles",
        "PutModelDependencyBinding", "ListModelDependencyBindings", "DeleteModelDependencyBinding", "GetDependencyData",
        "BeginModelDownload", "CommitModelDownload", "AbortModelDownload",
    ]
} | {
    f"pumas.fetch.v1.FetchService/{rpc}"
    for rpc in [
        "SearchHub", "GetHubModel", "ListHubFiles", "StartDownload", "GetDownload", "ListDownloads", "WatchDownload",
        "CancelDownload", "PauseDownload", "ResumeDownload", "SetDownloadPriority",
    ]
} | {
    f"pumas.mapper.v1.MapperService/{rpc}"
    for rpc in [
        "ListApps", "GetApp", "ListPresets", "ValidateMappingConfig", "PutMappingConfig", "PreviewMapping",
        "ApplyMapping", "RepairMapping", "Unmap", "GetMappingJob", "WatchMappingJob", "ListLinks",
        "GetModelLinkStates", "PreviewAdoption", "StartAdoption",
    ]
}

# Example values for request fields, by field name, for the grpcurl lines.
EXAMPLES = {
    "model_id": '"checkpoint/sdxl/juggernaut-xl"',
    "model_ids": '["checkpoint/sdxl/juggernaut-xl"]',
    "query": '"sdxl"',
    "page_size": "20",
    "paths": '["/home/me/Downloads/juggernaut-xl.safetensors"]',
    "mode": '"IMPORT_MODE_HARDLINK"',
    "repo_id": '"TheBloke/Llama-2-7B-GGUF"',
    "revision": '"main"',
    "app": '"comfyui"',
    "mapper": '"local"',
    "job_id": '"job-01"',
    "download_id": '"dl-01"',
    "backend_key": '"torch-cuda"',
    "platform_context": '{"os": "linux", "arch": "x86_64", "accelerator": "cuda", "accelerator_version": "12.4"}',
    "digest": '"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"',
    "profile_id": '"diffusers-sdxl"',
    "binding_id": '"bind-01"',
    "include_hub": "true",
    "after_cursor": "0",
    "force": "false",
    "priority": "10",
    "holder": '"workstation/comfyui"',
}


def descriptor_set():
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "set.bin"
        wkt = pathlib.Path(protoc.__file__).parent / "_proto"
        protos = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
        args = ["protoc", f"-I{PROTO}", f"-I{wkt}", "--include_source_info", f"--descriptor_set_out={out}", *protos]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(out.read_bytes())
        return fds


def comments(file):
    """Maps a source path tuple to its leading comment."""
    return {tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location}


def render(fds):
    messages = {}
    for f in fds.file:
        for i, m in enumerate(f.message_type):
            messages[f".{f.package}.{m.name}"] = (f, i, m)
    lines = [
        "# Pumas gRPC API",
        "",
        "Generated from `proto/` by `tools/gen_api_doc.py` (the proto comments are the source); do not",
        "edit by hand. `tools/test` fails when this file is stale.",
        "",
        "Every service also serves `grpc.health.v1.Health` (per service name) and server reflection",
        "(`grpc.reflection.v1` and `v1alpha`), so `grpcurl list`, `describe` and calls work without",
        "`.proto` files. Default ports with `pumas up`: " + ", ".join(f"{k} {v}" for k, v in PORTS.items()) + ".",
        "Without grpcurl, `tools/grpcurl.py ADDR call Service/Method JSON` does the same from reflection.",
        "",
        "## Errors",
        "",
        "Every error carries the canonical gRPC code, a message a person can act on, and",
        "`google.rpc` details: always `ErrorInfo` (domain `pumas`, `reason` below), plus `BadRequest`",
        "field violations for INVALID_ARGUMENT, `ResourceInfo` for NOT_FOUND / ALREADY_EXISTS,",
        "`RetryInfo` for UNAVAILABLE / RESOURCE_EXHAUSTED, `PreconditionFailure` for",
        "FAILED_PRECONDITION. INTERNAL never describes internals (the server log does, with the trace id)",
        "and is never the answer to a caller's mistake.",
        "",
        "| ErrorInfo.reason | meaning |",
        "| --- | --- |",
    ]
    for f in fds.file:
        if f.package != "pumas.common.v1":
            continue
        c = comments(f)
        for ei, enum in enumerate(f.enum_type):
            if enum.name != "ErrorReason":
                continue
            for vi, value in enumerate(enum.value):
                if value.number == 0:
                    continue
                doc = " ".join(c.get((5, ei, 2, vi), "").split())
                lines.append(f"| `{value.name.removeprefix('ERROR_REASON_')}` | {doc} |")
    lines += [
        "",
        "RPCs that are part of the contract but not built yet answer UNIMPLEMENTED with reason",
        "`NOT_IMPLEMENTED`, and a message naming the capability that brings them — never a fake success.",
        "",
    ]
    order = ["pumas.gateway.v1", "pumas.index.v1", "pumas.fetch.v1", "pumas.mapper.v1"]
    files = sorted((f for f in fds.file if f.service), key=lambda f: order.index(f.package))
    for f in files:
        c = comments(f)
        for si, service in enumerate(f.service):
            full = f"{f.package}.{service.name}"
            role = f.package.split(".")[1]
            lines += [f"## `{full}`", "", " ".join(c.get((6, si), "").split()), ""]
            lines.append(f"Port {PORTS[role]} with `pumas up`. File `proto/{f.name}`.")
            lines.append("")
            for mi, method in enumerate(service.method):
                doc = c.get((6, si, 2, mi), "")
                purpose, _, errors = " ".join(doc.split()).partition("Errors:")
                stream = "stream " if method.server_streaming else ""
                lines += [
                    f"### {method.name}",
                    "",
                    f"`rpc {method.name}({method.input_type.lstrip('.')}) returns ({stream}{method.output_type.lstrip('.')})`",
                    "",
                    purpose.strip(),
                    "",
                    "Errors: " + (errors.strip().rstrip(".") + "." if errors
                                  else "only the common ones (UNAVAILABLE when a service it needs is down)."),
                    "",
                    "Status: " + ("built." if f"{full}/{method.name}" in BUILT or method.name in BUILT_EVERYWHERE
                                  else "in the contract; answers UNIMPLEMENTED until its capability lands."),
                    "",
                ]
                req = messages.get(method.input_type)
                body = {}
                if req:
                    for field in req[2].field:
                        if field.name in EXAMPLES and len(body) < 4:
                            body[field.name] = EXAMPLES[field.name]
                data = "{" + ", ".join(f'"{k}": {v}' for k, v in body.items()) + "}"
                lines += [
                    "```sh",
                    f"grpcurl -plaintext -d '{data}' 127.0.0.1:{PORTS[role]} {full}/{method.name}",
                    "```",
                    "",
                ]
    return "\n".join(lines).rstrip() + "\n"


def main():
    text = render(descriptor_set())
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print("docs/API.md is stale: run .venv/bin/python tools/gen_api_doc.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
