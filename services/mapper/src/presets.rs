//! Built-in app layouts (reference: `shared/APP-LAYOUTS.md`): where each app looks for each
//! model type, the older folder names it still reads, and the file extensions its loader takes.

/// How models are laid out in an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Files straight into the type's folder; multi-file models into `<folder>/<slug>/`.
    Folders,
    /// LM Studio: exactly `<publisher>/<repo>/<file>`.
    LmStudio,
    /// A Hugging Face hub cache: `models--org--name/{blobs,snapshots/<commit>,refs/main}`.
    HfCache,
    /// No folders: the app's own API registers each model by its path in the library, in place
    /// (InvokeAI's model manager). A rule's folder names the app's model type.
    Api,
}

/// One model type's folder in an app.
#[derive(Clone, Debug)]
pub struct Folder {
    /// Library model type (`lora`, ...).
    pub model_type: &'static str,
    /// Only models of these formats (empty = any).
    pub formats: &'static [&'static str],
    /// Folder under the app root ("" = the root itself).
    pub folder: &'static str,
    /// Older names the app still reads.
    pub legacy: &'static [&'static str],
    /// Extensions the app's loader accepts there (empty = any).
    pub extensions: &'static [&'static str],
}

/// A preset.
#[derive(Clone, Debug)]
pub struct Preset {
    pub kind: &'static str,
    pub display_name: &'static str,
    pub layout: Layout,
    pub folders: Vec<Folder>,
    /// Folders whose models must be full pipelines (a diffusion-model-only file there is not loaded).
    pub checkpoint_folders: &'static [&'static str],
}

const COMFY_EXT: &[&str] = &[
    ".ckpt",
    ".pt",
    ".pt2",
    ".bin",
    ".pth",
    ".safetensors",
    ".pkl",
    ".sft",
    ".gguf",
];
const A1111_CKPT: &[&str] = &[".ckpt", ".safetensors"];
const FORGE_CKPT: &[&str] = &[".ckpt", ".safetensors", ".gguf"];
const WEIGHTS: &[&str] = &[".safetensors", ".ckpt", ".pt", ".pth", ".bin"];
const GGUF: &[&str] = &[".gguf"];
/// What InvokeAI's model probe takes (and diffusers/transformers folders).
const INVOKE_EXT: &[&str] = &[".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx"];
const ANY: &[&str] = &[];
const DIFFUSERS: &[&str] = &["diffusers"];
const NOT_DIRS: &[&str] = &["safetensors", "gguf", "pickle", "onnx", "unknown"];

const fn folder(
    model_type: &'static str,
    folder: &'static str,
    legacy: &'static [&'static str],
    extensions: &'static [&'static str],
) -> Folder {
    Folder {
        model_type,
        formats: &[],
        folder,
        legacy,
        extensions,
    }
}

const fn only(mut f: Folder, formats: &'static [&'static str]) -> Folder {
    f.formats = formats;
    f
}

/// Every preset, sorted by kind.
pub fn all() -> Vec<Preset> {
    let mut presets = vec![
        Preset {
            kind: "a1111",
            display_name: "Stable Diffusion web UI (AUTOMATIC1111)",
            layout: Layout::Folders,
            folders: vec![
                only(
                    folder("checkpoint", "models/Stable-diffusion", &[], A1111_CKPT),
                    NOT_DIRS,
                ),
                folder("lora", "models/Lora", &["models/LyCORIS"], WEIGHTS),
                folder("vae", "models/VAE", &[], WEIGHTS),
                folder("text_encoder", "models/CLIP", &[], WEIGHTS),
                folder("controlnet", "models/ControlNet", &[], WEIGHTS),
                folder("embedding", "embeddings", &[], WEIGHTS),
                folder("upscaler", "models/ESRGAN", &[], WEIGHTS),
            ],
            checkpoint_folders: &["models/Stable-diffusion"],
        },
        Preset {
            kind: "comfyui",
            display_name: "ComfyUI",
            layout: Layout::Folders,
            folders: vec![
                only(folder("checkpoint", "models/diffusers", &[], ANY), DIFFUSERS),
                only(
                    folder("checkpoint", "models/checkpoints", &[], COMFY_EXT),
                    NOT_DIRS,
                ),
                folder(
                    "diffusion_model",
                    "models/diffusion_models",
                    &["models/unet"],
                    COMFY_EXT,
                ),
                folder("lora", "models/loras", &[], COMFY_EXT),
                folder("vae", "models/vae", &[], COMFY_EXT),
                folder(
                    "text_encoder",
                    "models/text_encoders",
                    &["models/clip"],
                    COMFY_EXT,
                ),
                folder("clip_vision", "models/clip_vision", &[], COMFY_EXT),
                folder("controlnet", "models/controlnet", &[], COMFY_EXT),
                folder("embedding", "models/embeddings", &[], COMFY_EXT),
                folder("upscaler", "models/upscale_models", &[], COMFY_EXT),
            ],
            checkpoint_folders: &["models/checkpoints"],
        },
        Preset {
            kind: "fooocus",
            display_name: "Fooocus",
            layout: Layout::Folders,
            folders: vec![
                only(
                    folder("checkpoint", "models/checkpoints", &[], A1111_CKPT),
                    NOT_DIRS,
                ),
                folder("lora", "models/loras", &[], WEIGHTS),
                folder("vae", "models/vae", &[], WEIGHTS),
                folder("embedding", "models/embeddings", &[], WEIGHTS),
                folder("controlnet", "models/controlnet", &[], WEIGHTS),
                folder("clip_vision", "models/clip_vision", &[], WEIGHTS),
                folder("upscaler", "models/upscale_models", &[], WEIGHTS),
            ],
            checkpoint_folders: &["models/checkpoints"],
        },
        Preset {
            kind: "forge",
            display_name: "Stable Diffusion WebUI Forge",
            layout: Layout::Folders,
            folders: vec![
                only(
                    folder("checkpoint", "models/Stable-diffusion", &[], FORGE_CKPT),
                    NOT_DIRS,
                ),
                folder("diffusion_model", "models/Stable-diffusion", &[], FORGE_CKPT),
                folder("lora", "models/Lora", &["models/LyCORIS"], WEIGHTS),
                folder("vae", "models/VAE", &[], WEIGHTS),
                folder("text_encoder", "models/text_encoder", &[], FORGE_CKPT),
                folder("controlnet", "models/ControlNet", &[], WEIGHTS),
                folder("embedding", "embeddings", &[], WEIGHTS),
                folder("upscaler", "models/ESRGAN", &[], WEIGHTS),
            ],
            checkpoint_folders: &[],
        },
        Preset {
            kind: "hf-cache",
            display_name: "Hugging Face hub cache (transformers, diffusers, vLLM)",
            layout: Layout::HfCache,
            folders: [
                "checkpoint",
                "diffusion_model",
                "lora",
                "vae",
                "text_encoder",
                "clip_vision",
                "controlnet",
                "embedding",
                "upscaler",
                "llm",
                "text_embedding",
                "audio",
                "vision",
                "reranker",
                "vision_language",
                "tts",
            ]
            .iter()
            .map(|t| folder(t, "", &[], ANY))
            .collect(),
            checkpoint_folders: &[],
        },
        // InvokeAI 4 and later scan no folders (its autoimport folder is gone): models are
        // installed through its model manager API, by path, in place.
        Preset {
            kind: "invokeai",
            display_name: "InvokeAI (model manager API)",
            layout: Layout::Api,
            folders: vec![
                folder("checkpoint", "main", &[], INVOKE_EXT),
                folder("diffusion_model", "main", &[], INVOKE_EXT),
                folder("lora", "lora", &[], INVOKE_EXT),
                folder("embedding", "embedding", &[], INVOKE_EXT),
                folder("controlnet", "controlnet", &[], INVOKE_EXT),
                folder("vae", "vae", &[], INVOKE_EXT),
                folder("clip_vision", "clip_vision", &[], INVOKE_EXT),
                folder("text_encoder", "t5_encoder", &[], INVOKE_EXT),
                folder("upscaler", "spandrel_image_to_image", &[], INVOKE_EXT),
            ],
            checkpoint_folders: &[],
        },
        Preset {
            kind: "llamacpp",
            display_name: "llama.cpp (a models folder)",
            layout: Layout::Folders,
            folders: vec![only(folder("llm", "", &[], GGUF), &["gguf"])],
            checkpoint_folders: &[],
        },
        Preset {
            kind: "lmstudio",
            display_name: "LM Studio",
            layout: Layout::LmStudio,
            folders: vec![only(folder("llm", "", &[], GGUF), &["gguf"])],
            checkpoint_folders: &[],
        },
        Preset {
            kind: "sdnext",
            display_name: "SD.Next",
            layout: Layout::Folders,
            folders: vec![
                only(folder("checkpoint", "models/Diffusers", &[], ANY), DIFFUSERS),
                only(
                    folder("checkpoint", "models/Stable-diffusion", &[], A1111_CKPT),
                    NOT_DIRS,
                ),
                folder("diffusion_model", "models/UNET", &[], WEIGHTS),
                folder("lora", "models/Lora", &["models/LyCORIS"], WEIGHTS),
                folder("vae", "models/VAE", &[], WEIGHTS),
                folder("text_encoder", "models/CLIP", &[], WEIGHTS),
                folder("controlnet", "models/ControlNet", &[], WEIGHTS),
                folder("embedding", "models/embeddings", &[], WEIGHTS),
                folder("upscaler", "models/ESRGAN", &[], WEIGHTS),
            ],
            checkpoint_folders: &["models/Stable-diffusion"],
        },
    ];
    presets.sort_by_key(|p| p.kind);
    presets
}

/// The preset of `kind` (`forge` also answers to `a1111-forge`; `a1111` to `automatic1111`).
pub fn find(kind: &str) -> Option<Preset> {
    let kind = match kind {
        "automatic1111" => "a1111",
        "a1111-forge" | "webui-forge" => "forge",
        "llama.cpp" | "llama-cpp" => "llamacpp",
        "lm-studio" => "lmstudio",
        "hf_cache" | "huggingface" => "hf-cache",
        "sd.next" => "sdnext",
        other => other,
    };
    all().into_iter().find(|p| p.kind == kind)
}

/// Kinds, for error messages.
pub fn kinds() -> Vec<&'static str> {
    all().iter().map(|p| p.kind).collect()
}
