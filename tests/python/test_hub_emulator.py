"""Fidelity of the hub emulator in tests/: the official `huggingface_hub` client, pointed at it,
searches, reads model info and downloads single files and whole snapshots, as it does against
the real Hub. The fetch service's tests rely on the emulator behaving like the Hub."""

import hashlib
import os
import pathlib
import subprocess

import pytest


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    binary = pathlib.Path(os.environ.get("PUMAS_BIN") or "target/debug/pumas").with_name("hub-emulator")
    if not binary.exists():
        pytest.fail(f"hub-emulator not found at {binary}; build it with `cargo build --workspace`")
    proc = subprocess.Popen(
        [str(binary), "--page-cap", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    line = proc.stdout.readline().strip()
    fields = dict(part.split("=", 1) for part in line.split())
    home = tmp_path_factory.mktemp("hf-home")
    saved = {k: os.environ.get(k) for k in ("HF_ENDPOINT", "HF_HOME", "HF_HUB_DISABLE_TELEMETRY", "HF_TOKEN")}
    os.environ.update(HF_ENDPOINT=fields["hub"], HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1")
    os.environ.pop("HF_TOKEN", None)
    # huggingface_hub reads HF_ENDPOINT at import time: import it only now.
    import importlib

    import huggingface_hub.constants

    importlib.reload(huggingface_hub.constants)
    yield fields
    proc.kill()
    proc.wait()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_list_models_pages_through_absolute_links(emulator):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=emulator["hub"])
    ids = [m.id for m in api.list_models(search="tiny")]
    # Page cap 2 forces the client to follow Link headers across pages.
    assert len(ids) >= 4
    assert "acme/tiny-model" in ids and "acme/tiny-gguf" in ids
    assert [m.id for m in api.list_models(search="tiny", limit=2)] == ids[:2]
    gguf = list(api.list_models(filter="gguf", full=True))
    assert [m.id for m in gguf] == ["acme/tiny-gguf"]
    assert gguf[0].sha and len(gguf[0].sha) == 40


def test_model_info_with_file_metadata(emulator):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=emulator["hub"])
    info = api.model_info("acme/tiny-model", revision="v1.0", files_metadata=True)
    assert len(info.sha) == 40
    siblings = {s.rfilename: s for s in info.siblings}
    assert {"config.json", "model.safetensors", "sub/notes.txt"} <= set(siblings)
    weights = siblings["model.safetensors"]
    assert weights.lfs is not None and weights.lfs.size == weights.size
    assert info.safetensors.total > 0
    assert info.card_data.license == "apache-2.0"


def test_hf_hub_download_verifies_against_the_tree(emulator):
    from huggingface_hub import HfApi, hf_hub_download

    path = hf_hub_download("acme/tiny-model", "model.safetensors", endpoint=emulator["hub"])
    tree = {e.path: e for e in HfApi(endpoint=emulator["hub"]).list_repo_tree("acme/tiny-model", recursive=True)}
    digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    assert digest == tree["model.safetensors"].lfs.sha256
    config = hf_hub_download("acme/tiny-model", "config.json", endpoint=emulator["hub"])
    assert b"LlamaForCausalLM" in pathlib.Path(config).read_bytes()


def test_snapshot_download_and_checksums(emulator):
    from huggingface_hub import HfApi, snapshot_download

    folder = pathlib.Path(snapshot_download("acme/tiny-model", endpoint=emulator["hub"]))
    assert (folder / "sub" / "notes.txt").read_text() == "notes in a sub folder\n"
    assert (folder / "model.safetensors").is_symlink()
    result = HfApi(endpoint=emulator["hub"]).verify_repo_checksums("acme/tiny-model", local_dir=folder)
    assert not result.mismatches, result


def test_errors_map_to_the_clients_exceptions(emulator):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hub = emulator["hub"]
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("acme/tiny-model", "nope.bin", endpoint=hub)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("acme/tiny-model", "config.json", revision="no-such-branch", endpoint=hub)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/does-not-exist", "config.json", endpoint=hub)
    with pytest.raises(GatedRepoError):
        hf_hub_download("acme/gated-model", "config.json", endpoint=hub, token=False)
    path = hf_hub_download("acme/gated-model", "model.safetensors", endpoint=hub, token="hf_goodtoken")
    assert pathlib.Path(path).stat().st_size > 0
    # Renamed repository: a relative 307 the client follows.
    readme = hf_hub_download("acme/old-tiny-model", "README.md", endpoint=hub)
    assert "Tiny model" in pathlib.Path(readme).read_text()
