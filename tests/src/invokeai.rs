//! A small stand-in of InvokeAI's model manager API (InvokeAI 4+), the endpoints the mapper
//! uses: list, install by path in place (a job that runs, then completes), follow the job, and
//! delete. It checks what the real one checks that matters here: the path exists, installs are
//! in place, a path is installed once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

/// A JSON answer (the workspace's axum has no `json` feature; this is all it would do).
fn json_answer(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// The query pairs of a request.
fn query(uri: &Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

#[derive(Default)]
struct Inner {
    models: Vec<(String, String)>,
    jobs: HashMap<u64, (String, Value, u32)>,
    next_job: u64,
    requests: Vec<String>,
}

/// A running stand-in. Stops when dropped.
pub struct InvokeAi {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for InvokeAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key_of(path: &str) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(path.as_bytes()))[..32].to_owned()
}

impl InvokeAi {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let app = Router::new()
            .route("/api/v2/models/", get(list))
            .route("/api/v2/models/install", post(install))
            .route("/api/v2/models/install/{id}", get(job))
            .route("/api/v2/models/i/{key}", delete(remove))
            .with_state(Arc::clone(&inner));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, inner, task })
    }

    /// Paths of the installed models, sorted.
    pub fn paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .inner
            .lock()
            .map(|i| i.models.iter().map(|(_, p)| p.clone()).collect())
            .unwrap_or_default();
        paths.sort();
        paths
    }

    /// A model the user installed themselves.
    pub fn install_by_hand(&self, path: &str) {
        if let Ok(mut i) = self.inner.lock() {
            i.models.push((key_of(path), path.to_owned()));
        }
    }

    /// Every request, as `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().map(|i| i.requests.clone()).unwrap_or_default()
    }
}

type Shared = State<Arc<Mutex<Inner>>>;

fn locked(inner: &Arc<Mutex<Inner>>) -> std::sync::MutexGuard<'_, Inner> {
    match inner.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

async fn list(State(inner): Shared) -> Response {
    let mut i = locked(&inner);
    i.requests.push("GET /api/v2/models/".to_owned());
    let models: Vec<Value> = i
        .models
        .iter()
        .map(|(key, path)| json!({"key": key, "path": path, "name": path.rsplit('/').next(), "type": "lora", "base": "sdxl"}))
        .collect();
    json_answer(StatusCode::OK, &json!({ "models": models }))
}

async fn install(State(inner): Shared, uri: Uri) -> Response {
    let q = query(&uri);
    let mut i = locked(&inner);
    let source = q.get("source").cloned().unwrap_or_default();
    i.requests.push(format!("POST /api/v2/models/install {source}"));
    if q.get("inplace").map(String::as_str) != Some("true") {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "the stand-in installs in place only",
        )
            .into_response();
    }
    i.next_job += 1;
    let id = i.next_job;
    let outcome = if !std::path::Path::new(&source).exists() {
        json!({"status": "error", "error": format!("InvalidModelConfigException: {source} does not exist")})
    } else if i.models.iter().any(|(_, p)| *p == source) {
        json!({"status": "error", "error": format!("DuplicateModelException: {source} is installed")})
    } else {
        json!({"status": "completed"})
    };
    i.jobs.insert(id, (source.clone(), outcome, 0));
    json_answer(
        StatusCode::CREATED,
        &json!({"id": id, "status": "waiting", "source": {"path": source}}),
    )
}

async fn job(State(inner): Shared, Path(id): Path<u64>) -> Response {
    let mut i = locked(&inner);
    i.requests.push(format!("GET /api/v2/models/install/{id}"));
    let Some((source, outcome, polls)) = i.jobs.get(&id).cloned() else {
        return (StatusCode::NOT_FOUND, "no such job").into_response();
    };
    // The first look finds it running, as a real install that hashes the file does.
    if polls == 0 {
        if let Some(j) = i.jobs.get_mut(&id) {
            j.2 = 1;
        }
        return json_answer(StatusCode::OK, &json!({"id": id, "status": "running"}));
    }
    let mut answer = outcome.clone();
    answer["id"] = json!(id);
    if outcome["status"] == "completed" {
        let key = key_of(&source);
        if !i.models.iter().any(|(k, _)| *k == key) {
            i.models.push((key.clone(), source));
        }
        answer["config_out"] = json!({"key": key});
    }
    json_answer(StatusCode::OK, &answer)
}

async fn remove(State(inner): Shared, Path(key): Path<String>) -> StatusCode {
    let mut i = locked(&inner);
    i.requests.push(format!("DELETE /api/v2/models/i/{key}"));
    let before = i.models.len();
    i.models.retain(|(k, _)| *k != key);
    if i.models.len() < before {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}
