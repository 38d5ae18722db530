//! The library through the real `pumas` binary: `pumas import/search/show/rm/reindex` against
//! `pumas up`, and the gateway's answers when a backend is down.

use std::path::Path;
use std::time::Duration;

use pumas_e2e::*;
use pumas_proto::gateway::v1::model_library_service_client::ModelLibraryServiceClient;
use pumas_proto::gateway::v1::{
    GetModelRequest, HubResultsState, PreviewMappingRequest, SearchModelsRequest, search_result,
};
use pumas_proto::mapper::v1::LinkState;
use tonic::Code;

/// A tiny SDXL LoRA: realistic tensor names, zeroed data.
fn write_lora(path: &Path) {
    let header = serde_json::json!({
        "__metadata__": {"ss_base_model_version": "sdxl_base_v1-0"},
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": {"dtype": "F16", "shape": [4, 1280], "data_offsets": [0, 10240]},
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight": {"dtype": "F16", "shape": [640, 4], "data_offsets": [10240, 15360]},
    });
    let mut json = serde_json::to_vec(&header).expect("json");
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(b' ');
    }
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    bytes.resize(bytes.len() + 15360, 0);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

async fn pumas(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(pumas_bin().expect("bin"))
        .args(args)
        .output()
        .await
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn import_search_show_rm_through_the_cli() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let inbox = suite.data_root.path().join("inbox");
    write_lora(&inbox.join("Detail Tweaker XL.safetensors"));
    let gw = suite.gateway.as_str();

    let (ok, out, err) = pumas(&["import", "--gateway", gw, inbox.to_str().unwrap_or_default()]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("added      lora/sdxl/detail-tweaker-xl"), "{out}");
    assert!(
        suite
            .root()
            .join("shared-resources/models/lora/sdxl/detail-tweaker-xl/metadata.json")
            .is_file()
    );

    let (ok, out, _) = pumas(&["import", "--gateway", gw, inbox.to_str().unwrap_or_default()]).await;
    assert!(ok && out.contains("duplicate"), "{out}");

    let (ok, out, _) = pumas(&["search", "--gateway", gw, "detail", "twea"]).await;
    assert!(ok && out.contains("lora/sdxl/detail-tweaker-xl"), "{out}");
    let (ok, out, _) = pumas(&["search", "--gateway", gw, "--type", "checkpoint", "detail"]).await;
    assert!(ok && out.contains("no models match"), "{out}");

    let (ok, out, _) = pumas(&["show", "--gateway", gw, "lora/sdxl/detail-tweaker-xl"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("sha256:") && out.contains("ss_base_model_version"),
        "{out}"
    );

    // The catalog bound the LoRA as it came in: it resolves on this platform with the backends
    // the profile has here (torch-cpu on plain Linux), pinned.
    let lora = "lora/sdxl/detail-tweaker-xl";
    let (ok, out, _) = pumas(&["resolve", "--gateway", gw, lora, "--platform", "linux-x86_64"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("state: resolved") && out.contains("diffusers-sd@1"),
        "{out}"
    );
    assert!(
        out.contains("torch==2.11.0  --index-url https://download.pytorch.org/whl/cpu"),
        "{out}"
    );
    assert!(!out.contains("torch-mps"), "no variant here, so not shown: {out}");
    let (ok, out, _) = pumas(&["bindings", "--gateway", gw, lora]).await;
    assert!(ok && out.contains("catalog rule stable-diffusion"), "{out}");
    let (ok, out, _) = pumas(&["show", "--gateway", gw, lora]).await;
    assert!(
        ok && out.contains("needs         diffusers-sd@1 on torch-cuda (*, bound by the catalog)"),
        "{out}"
    );
    let (ok, out, _) = pumas(&["profiles", "list", "--gateway", gw]).await;
    assert!(ok && out.contains("diffusers-sd@1  built-in"), "{out}");

    // A profile of one's own, published from a file in the catalog's short form, replaces the
    // catalog's bindings when bound; a profile without a torch pin fails the pin policy.
    let file = suite.data_root.path().join("no-torch.json");
    std::fs::write(
        &file,
        r#"{"profile_id": "no-torch", "version": "1", "variants": [{"backend_key": "torch-cpu",
            "platform_selector": "linux-*", "requirements": [{"kind": "python_package",
            "name": "Diffusers", "exact_pin": "==0.42.1"}]}]}"#,
    )?;
    let (ok, out, err) = pumas(&[
        "profiles",
        "put",
        "--gateway",
        gw,
        file.to_str().unwrap_or_default(),
    ])
    .await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("no-torch@1  published") && out.contains("diffusers==0.42.1"),
        "{out}"
    );
    let (ok, out, err) = pumas(&[
        "bind",
        "--gateway",
        gw,
        lora,
        "no-torch@1",
        "--backend",
        "torch-cpu",
    ])
    .await;
    assert!(ok && out.contains(" user"), "{out}{err}");
    let binding = out.split_whitespace().next().unwrap_or_default().to_owned();
    let (ok, out, _) = pumas(&["resolve", "--gateway", gw, lora, "--platform", "linux-x86_64"]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("state: invalid_profile") && out.contains("unpinned_dependency"),
        "{out}"
    );
    assert!(
        out.contains("torch (a torch backend needs it)") && out.contains("torchvision"),
        "{out}"
    );
    let (ok, out, _) = pumas(&["deps", "audit", "--gateway", gw]).await;
    assert!(!ok, "findings exit 1: {out}");
    assert!(
        out.contains("no-torch@1  torch-cpu on linux-*  image models") && out.contains("add torch==2.11.0"),
        "{out}"
    );
    let (ok, _, err) = pumas(&["bind", "--gateway", gw, lora, "ghost@1", "--backend", "torch-cpu"]).await;
    assert!(
        !ok && err.contains("ghost@1") && err.contains("NotFound"),
        "{err}"
    );
    let (ok, out, err) = pumas(&["unbind", "--gateway", gw, &binding]).await;
    assert!(ok, "{out}{err}");
    let (ok, out, _) = pumas(&["resolve", "--gateway", gw, lora, "--platform", "linux-x86_64"]).await;
    assert!(
        ok && out.contains("diffusers-sd@1"),
        "the catalog's binding is back: {out}"
    );

    // Mistakes are explained and exit non-zero.
    let (ok, _, err) = pumas(&["import", "--gateway", gw, "/definitely/not/here"]).await;
    assert!(!ok && err.contains("cannot be read"), "{err}");
    let (ok, _, err) = pumas(&["search", "--gateway", gw, "\"unclosed"]).await;
    assert!(!ok && err.contains("not closed"), "{err}");
    let (ok, _, err) = pumas(&["show", "--gateway", gw, "lora/sdxl/nope"]).await;
    assert!(!ok && err.contains("not found"), "{err}");

    let (ok, out, _) = pumas(&["rm", "--gateway", gw, "lora/sdxl/detail-tweaker-xl"]).await;
    assert!(ok && out.contains("deleted"), "{out}");
    let (ok, out, _) = pumas(&["reindex", "--gateway", gw]).await;
    assert!(ok && out.contains("reindexed 0"), "{out}");
    Ok(())
}

#[tokio::test]
async fn search_degrades_without_fetch_and_fails_clearly_without_the_index() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let root_arg = root.to_str().unwrap_or_default().to_owned();
    let (index, index_addr) =
        serve_role("index", "127.0.0.1:0", &["--data-root", &root_arg], dir.path()).await?;
    let (mapper, mapper_addr) =
        serve_role("mapper", "127.0.0.1:0", &["--data-root", &root_arg], dir.path()).await?;
    // Fetch is never started: its address refuses connections.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let fetch_addr = dead.local_addr()?.to_string();
    drop(dead);
    let mapper_arg = format!("local={mapper_addr}");
    let (_gateway, gateway_addr) = serve_role(
        "gateway",
        "127.0.0.1:0",
        &[
            "--index",
            &index_addr,
            "--fetch",
            &fetch_addr,
            "--mapper",
            &mapper_arg,
            "--backend-check-ms",
            "100",
        ],
        dir.path(),
    )
    .await?;
    write_lora(&dir.path().join("inbox/pixel art xl.safetensors"));
    let (ok, out, err) = pumas(&[
        "import",
        "--gateway",
        &gateway_addr,
        dir.path().join("inbox").to_str().unwrap_or_default(),
    ])
    .await;
    assert!(ok, "{out}{err}");

    let mut client = ModelLibraryServiceClient::new(channel(&gateway_addr).await?);
    let answer = client
        .search_models(SearchModelsRequest {
            query: "pixel".into(),
            include_hub: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(answer.hub_results_state, HubResultsState::Unavailable as i32);
    assert!(
        answer.hub_unavailable_reason.contains("fetch"),
        "{}",
        answer.hub_unavailable_reason
    );
    assert!(matches!(
        answer.results.first().and_then(|r| r.result.as_ref()),
        Some(search_result::Result::Local(_))
    ));

    // Model views carry link state per mapper; one that cannot say is UNKNOWN, and listed.
    let id = match answer.results.first().and_then(|r| r.result.as_ref()) {
        Some(search_result::Result::Local(view)) => view
            .model
            .as_ref()
            .map(|m| m.model_id.clone())
            .unwrap_or_default(),
        _ => String::new(),
    };
    // Mappers are addressed by name; an unknown one is NOT_FOUND naming the configured ones.
    let err = client
        .preview_mapping(PreviewMappingRequest {
            app: "comfyui".into(),
            mapper: "studio".into(),
            include_unchanged: false,
        })
        .await
        .expect_err("unknown mapper");
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("studio") && err.message().contains("local"),
        "{}",
        err.message()
    );

    mapper.kill().await?;
    let view = client
        .get_model(GetModelRequest {
            model_id: id,
            include_chat_template: false,
            include_preview: false,
        })
        .await?
        .into_inner()
        .model
        .expect("view");
    assert_eq!(view.unavailable_mappers, ["local"]);
    assert_eq!(
        view.link_states.first().map(|l| l.state),
        Some(LinkState::Unknown as i32)
    );
    // A results page asks no mapper unless link states are asked for.
    let local_view = |answer: &pumas_proto::gateway::v1::SearchModelsResponse| match answer
        .results
        .first()
        .and_then(|r| r.result.as_ref())
    {
        Some(search_result::Result::Local(view)) => Some(view.clone()),
        _ => None,
    };
    let plain = client
        .search_models(SearchModelsRequest {
            query: "pixel".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let plain = local_view(&plain).expect("a local result");
    assert!(
        plain.unavailable_mappers.is_empty() && plain.link_states.is_empty(),
        "{plain:?}"
    );
    let asked = client
        .search_models(SearchModelsRequest {
            query: "pixel".into(),
            include_link_states: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let asked = local_view(&asked).expect("a local result");
    assert_eq!(asked.unavailable_mappers, ["local"]);

    index.kill().await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = client
        .search_models(SearchModelsRequest {
            query: "pixel".into(),
            ..Default::default()
        })
        .await
        .expect_err("index down");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("the index service cannot be reached")
            && err.message().contains("--index address"),
        "{}",
        err.message()
    );
    Ok(())
}
