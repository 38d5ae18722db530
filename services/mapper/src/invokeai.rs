//! InvokeAI's model manager API (InvokeAI 4 and later), the way the mapper uses it: list the
//! installed models, install one by its path in the library *in place* (InvokeAI keeps no copy),
//! follow the install job to its end, and delete a model it installed. Endpoints (see
//! docs/MAPPING.md):
//!
//! - `GET  /api/v2/models/` -> `{"models": [{"key", "path", "name", "type", ...}]}`
//! - `POST /api/v2/models/install?source=<path>&inplace=true` -> an install job `{"id", "status", ...}`
//! - `GET  /api/v2/models/install/{id}` -> the job; `status` ends `completed` (with
//!   `config_out.key`), `error` (with `error`) or `cancelled`
//! - `DELETE /api/v2/models/i/{key}` -> the model is forgotten; in-place files stay where they are

use std::time::Duration;

use serde::Deserialize;

/// How long one install may take (InvokeAI hashes the file while it installs it).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(200);

/// A model InvokeAI knows.
#[derive(Clone, Debug, Deserialize)]
pub struct Installed {
    pub key: String,
    pub path: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Deserialize)]
struct Listing {
    models: Vec<Installed>,
}

#[derive(Deserialize)]
struct Job {
    id: serde_json::Value,
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_reason: Option<String>,
    #[serde(default)]
    config_out: Option<JobConfig>,
}

#[derive(Deserialize)]
struct JobConfig {
    key: String,
}

/// One InvokeAI.
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client for the InvokeAI at `base` (e.g. `http://127.0.0.1:9090`).
    pub fn new(base: &str) -> Result<Self, String> {
        // rustls with ring (STACK.md): an https InvokeAI needs the provider installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> String {
        format!(
            "InvokeAI at {} cannot be reached ({e}); is it running?",
            self.base
        )
    }

    async fn answer<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
        what: &str,
    ) -> Result<T, String> {
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(format!(
                "InvokeAI refused to {what}: HTTP {status}: {}",
                body.chars().take(300).collect::<String>()
            ));
        }
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        serde_json::from_slice::<T>(&body)
            .map_err(|e| format!("InvokeAI's answer to {what} is not what its model manager API sends: {e}"))
    }

    /// Every model InvokeAI has installed.
    pub async fn list(&self) -> Result<Vec<Installed>, String> {
        let response = self
            .http
            .get(format!("{}/api/v2/models/", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(self.answer::<Listing>(response, "list its models").await?.models)
    }

    /// Installs the model at `path` in place and answers its key once InvokeAI has it.
    pub async fn install(&self, path: &str) -> Result<String, String> {
        let mut url = url::Url::parse(&format!("{}/api/v2/models/install", self.base))
            .map_err(|e| format!("InvokeAI address {}: {e}", self.base))?;
        url.query_pairs_mut()
            .append_pair("source", path)
            .append_pair("inplace", "true");
        let response = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("{}")
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let mut job: Job = self.answer(response, &format!("install {path}")).await?;
        let id = match &job.id {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let deadline = tokio::time::Instant::now() + INSTALL_TIMEOUT;
        loop {
            match job.status.as_str() {
                "completed" => {
                    return job
                        .config_out
                        .map(|c| c.key)
                        .ok_or_else(|| format!("InvokeAI installed {path} but did not say its key"));
                }
                "error" | "cancelled" => {
                    return Err(format!(
                        "InvokeAI could not install {path}: {}",
                        job.error
                            .or(job.error_reason)
                            .unwrap_or_else(|| job.status.clone())
                    ));
                }
                _ if tokio::time::Instant::now() > deadline => {
                    return Err(format!(
                        "InvokeAI did not finish installing {path} in {INSTALL_TIMEOUT:?}"
                    ));
                }
                _ => {}
            }
            tokio::time::sleep(POLL).await;
            let response = self
                .http
                .get(format!("{}/api/v2/models/install/{id}", self.base))
                .send()
                .await
                .map_err(|e| self.unreachable(e))?;
            job = self
                .answer(response, &format!("say how installing {path} goes"))
                .await?;
        }
    }

    /// Forgets a model (its in-place files stay in the library).
    pub async fn delete(&self, key: &str) -> Result<(), String> {
        let response = self
            .http
            .delete(format!("{}/api/v2/models/i/{key}", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(format!(
            "InvokeAI refused to delete model {key}: HTTP {status}: {}",
            body.chars().take(300).collect::<String>()
        ))
    }
}
