//! The Hugging Face Hub client, built to `shared/HUB-CONTRACT.md`: search, model info, tree,
//! resolve (with its headers and the CDN redirect) and ranged file reads.
//!
//! Retries (jittered exponential backoff that honors `Retry-After`) come from `backon`; a small
//! circuit breaker stops hammering a hub that keeps failing. The token goes only to the hub's own
//! origin: never to the CDN or any other host a redirect names.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable as _};
use pumas_runtime::FailureKind;
use pumas_runtime::secret::SecretSource;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use url::Url;

/// Why a hub call failed, in terms a user can act on.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HubError {
    /// The repository does not exist, or is private and no valid token was sent.
    #[error(
        "repository `{0}` was not found on the hub (if it is private, configure a token with HF_TOKEN or --hub-token)"
    )]
    RepoNotFound(String),
    /// The branch, tag or commit does not exist.
    #[error("revision `{revision}` of `{repo}` was not found on the hub")]
    RevisionNotFound { repo: String, revision: String },
    /// The file does not exist at that revision.
    #[error("`{path}` was not found in `{repo}`")]
    EntryNotFound { repo: String, path: String },
    /// Gated repository: no token, or a token without access.
    #[error("{0}")]
    Gated(String),
    /// The hub refused the token.
    #[error("the hub refused the configured token (HF_TOKEN / --hub-token): {0}")]
    BadToken(String),
    /// The hub refused for another reason (e.g. a disabled repository).
    #[error("the hub refused the request: {0}")]
    Forbidden(String),
    /// Too many requests, after the retries.
    #[error("the hub is rate limiting this client; retry later")]
    RateLimited { retry_after: Option<Duration> },
    /// Network trouble or a 5xx, after the retries.
    #[error("the hub at {endpoint} is unreachable: {message}")]
    Unavailable { endpoint: String, message: String },
    /// The hub answered something this client cannot use.
    #[error("unexpected answer from the hub: {0}")]
    Protocol(String),
}

impl HubError {
    /// Worth another try.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Unavailable { .. })
    }

    /// What kind of failure this is for a job that meets it.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::RepoNotFound(_) | Self::RevisionNotFound { .. } | Self::EntryNotFound { .. } => {
                FailureKind::NotFound
            }
            Self::Gated(_) | Self::Forbidden(_) => FailureKind::PermissionDenied,
            Self::BadToken(_) => FailureKind::Unauthenticated,
            Self::RateLimited { .. } => FailureKind::ResourceExhausted,
            Self::Unavailable { .. } | Self::Protocol(_) => FailureKind::Unavailable,
        }
    }
}

/// What a request was about, to name the right thing in a 404.
#[derive(Clone, Copy)]
enum Subject<'a> {
    Search,
    Revision(&'a str, &'a str),
    File(&'a str, &'a str, &'a str),
}

/// Opens after this many consecutive failures...
const BREAKER_THRESHOLD: u32 = 5;
/// ...for this long.
const BREAKER_COOLDOWN: Duration = Duration::from_secs(15);

#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct HubSettings {
    /// Hub endpoint (HF_ENDPOINT).
    pub endpoint: String,
    /// Token (HF_TOKEN).
    pub token: SecretSource,
    /// Retries per call.
    pub retries: usize,
    /// First backoff delay.
    pub min_backoff: Duration,
    /// Timeout of API calls (not file bodies).
    pub api_timeout: Duration,
}

/// The hub client.
pub struct Hub {
    http: reqwest::Client,
    endpoint: Url,
    token: SecretSource,
    breaker: Mutex<Breaker>,
    settings: HubSettings,
}

/// A search request in hub terms.
#[derive(Clone, Debug, Default)]
pub struct SearchQuery {
    pub search: String,
    pub author: String,
    pub filters: Vec<String>,
    pub pipeline_tag: String,
    pub library: String,
    pub sort: Option<&'static str>,
    pub limit: u32,
    pub cursor: Option<String>,
}

/// A list item or model info (the fields we read; everything is optional but `id`).
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HubModel {
    pub id: String,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub sha: Option<String>,
    #[serde(default)]
    pub last_modified: Option<String>,
    #[serde(default)]
    pub private: bool,
    #[serde(default)]
    pub gated: serde_json::Value,
    #[serde(default)]
    pub downloads: u64,
    #[serde(default)]
    pub likes: u64,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, rename = "pipeline_tag")]
    pub pipeline_tag: Option<String>,
    #[serde(default, rename = "library_name")]
    pub library_name: Option<String>,
    #[serde(default)]
    pub card_data: Option<serde_json::Value>,
    #[serde(default)]
    pub safetensors: Option<SafetensorsSummary>,
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

impl HubModel {
    /// Gated: `false`, or `"auto"` / `"manual"`.
    pub fn is_gated(&self) -> bool {
        !matches!(
            self.gated,
            serde_json::Value::Bool(false) | serde_json::Value::Null
        )
    }
}

/// `safetensors` of model info.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub struct SafetensorsSummary {
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub total: u64,
}

/// `siblings[i]`.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub struct Sibling {
    pub rfilename: String,
}

/// A tree entry.
#[derive(Clone, Debug, Deserialize)]
pub struct TreeEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    #[serde(default)]
    pub oid: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub lfs: Option<TreeLfs>,
}

/// `lfs` of a tree entry.
#[derive(Clone, Debug, Deserialize)]
pub struct TreeLfs {
    pub oid: String,
    pub size: u64,
}

/// Where a file's bytes are and what they should be.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// URL to GET the bytes from (the CDN for LFS files).
    pub url: String,
    /// Commit the revision resolved to.
    pub commit: String,
    /// Size.
    pub size: Option<u64>,
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    header_str(headers, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Escapes one path segment completely (revisions: `refs/pr/1` -> `refs%2Fpr%2F1`).
fn escape_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Escapes a repo file path, keeping its `/`.
/// A URL as it may be shown: no user info, no query (signed CDN URLs carry credentials there).
pub fn without_secrets(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => url.split(['?', '@']).next().unwrap_or_default().to_owned(),
    }
}

fn escape_path(path: &str) -> String {
    path.split('/').map(escape_segment).collect::<Vec<_>>().join("/")
}

impl Hub {
    /// A client for `settings.endpoint`.
    pub fn new(settings: HubSettings) -> Result<Self, String> {
        // rustls without aws-lc: ring is the provider (STACK.md); installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut endpoint = Url::parse(settings.endpoint.trim_end_matches('/')).map_err(|_| {
            format!(
                "hub endpoint `{}` is not a URL",
                without_secrets(&settings.endpoint)
            )
        })?;
        // Credentials in the URL would travel in every error and answer: use a token instead.
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            let _ = endpoint.set_username("");
            let _ = endpoint.set_password(None);
            tracing::warn!(hub = %endpoint, "ignoring the user name and password in the hub endpoint; give a token (HF_TOKEN) instead");
        }
        let token = settings.token.clone();
        let loopback = match endpoint.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        if token.is_configured() && endpoint.scheme() == "http" && !loopback {
            return Err(format!(
                "refusing to send the hub token in plain text to {endpoint}: use an https:// endpoint, \
                 or no token for a public mirror"
            ));
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "pumas/",
                env!("CARGO_PKG_VERSION"),
                "; hf_hub/compatible"
            ))
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self {
            http,
            endpoint,
            token,
            breaker: Mutex::new(Breaker::default()),
            settings,
        })
    }

    /// The endpoint, without a token.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str().trim_end_matches('/')
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token.is_configured()
    }

    fn url(&self, path_and_query: &str) -> Result<Url, HubError> {
        Url::parse(&format!("{}{path_and_query}", self.endpoint()))
            .map_err(|e| HubError::Protocol(format!("bad URL {path_and_query}: {e}")))
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.endpoint.scheme()
            && url.host_str() == self.endpoint.host_str()
            && url.port_or_known_default() == self.endpoint.port_or_known_default()
    }

    /// A request with the token attached only when `url` is the hub's own origin.
    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let with_token = self.same_origin(&url);
        let mut builder = self.http.request(method, url);
        if with_token && let Some(token) = self.token.current().filter(|t| !t.expose().is_empty()) {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .unwrap_or(HeaderValue::from_static(""));
            value.set_sensitive(true);
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder
    }

    fn unavailable(&self, message: impl Into<String>) -> HubError {
        HubError::Unavailable {
            endpoint: self.endpoint().to_owned(),
            message: message.into(),
        }
    }

    fn breaker_check(&self) -> Result<(), HubError> {
        let breaker = self
            .breaker
            .lock()
            .map_err(|_| self.unavailable("breaker poisoned"))?;
        match breaker.open_until {
            Some(until) if Instant::now() < until => Err(self.unavailable(format!(
                "{} calls in a row failed; not trying again for {} s",
                breaker.failures,
                until.saturating_duration_since(Instant::now()).as_secs() + 1
            ))),
            _ => Ok(()),
        }
    }

    fn breaker_record(&self, ok: bool) {
        if let Ok(mut breaker) = self.breaker.lock() {
            if ok {
                *breaker = Breaker::default();
            } else {
                breaker.failures += 1;
                if breaker.failures >= BREAKER_THRESHOLD {
                    breaker.open_until = Some(Instant::now() + BREAKER_COOLDOWN);
                }
            }
        }
    }

    /// Turns a non-success answer into the error it means.
    fn classify(&self, status: StatusCode, headers: &HeaderMap, subject: Subject<'_>) -> HubError {
        let code = header_str(headers, "x-error-code").unwrap_or_default();
        let message = header_str(headers, "x-error-message").unwrap_or_else(|| status.to_string());
        let repo = match subject {
            Subject::Revision(r, _) | Subject::File(r, _, _) => r,
            Subject::Search => "",
        };
        match code.as_str() {
            "RepoNotFound" => return HubError::RepoNotFound(repo.to_owned()),
            "RevisionNotFound" => {
                let revision = match subject {
                    Subject::Revision(_, rev) | Subject::File(_, rev, _) => rev,
                    _ => "",
                };
                return HubError::RevisionNotFound {
                    repo: repo.to_owned(),
                    revision: revision.to_owned(),
                };
            }
            "EntryNotFound" => {
                let path = match subject {
                    Subject::File(_, _, path) => path,
                    _ => "",
                };
                return HubError::EntryNotFound {
                    repo: repo.to_owned(),
                    path: path.to_owned(),
                };
            }
            "GatedRepo" => {
                return HubError::Gated(if self.token.is_configured() {
                    format!(
                        "`{repo}` is gated and the configured token has no access yet: request access on the hub's model page, then retry"
                    )
                } else {
                    format!(
                        "`{repo}` is gated: request access on the hub's model page, then configure a token with HF_TOKEN or --hub-token"
                    )
                });
            }
            _ => {}
        }
        match status {
            StatusCode::UNAUTHORIZED if message.contains("Invalid credentials") => {
                HubError::BadToken(message)
            }
            StatusCode::UNAUTHORIZED if !repo.is_empty() => HubError::RepoNotFound(repo.to_owned()),
            StatusCode::UNAUTHORIZED => HubError::BadToken(message),
            StatusCode::FORBIDDEN => HubError::Forbidden(message),
            StatusCode::NOT_FOUND => match subject {
                Subject::File(r, _, p) => HubError::EntryNotFound {
                    repo: r.to_owned(),
                    path: p.to_owned(),
                },
                Subject::Revision(r, rev) => HubError::RevisionNotFound {
                    repo: r.to_owned(),
                    revision: rev.to_owned(),
                },
                _ => HubError::RepoNotFound(repo.to_owned()),
            },
            StatusCode::TOO_MANY_REQUESTS => HubError::RateLimited {
                retry_after: retry_after(headers),
            },
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                self.unavailable(format!("the hub answered {s}"))
            }
            s => HubError::Protocol(format!("status {s}: {message}")),
        }
    }

    /// Sends one request with retries, backoff and the breaker; returns the first non-retryable
    /// answer (success or not).
    async fn send(
        &self,
        method: Method,
        url: Url,
        extra: &[(header::HeaderName, HeaderValue)],
        subject: Subject<'_>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, HubError> {
        self.breaker_check()?;
        let attempt = || async {
            let mut builder = self.request(method.clone(), url.clone());
            for (name, value) in extra {
                builder = builder.header(name, value.clone());
            }
            if let Some(t) = timeout {
                builder = builder.timeout(t);
            }
            let response = builder.send().await.map_err(|e| {
                self.unavailable(if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    "cannot connect".to_owned()
                } else {
                    // Without the URL: a CDN location carries signed credentials in its query.
                    e.without_url().to_string()
                })
            })?;
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                return Err(self.classify(status, response.headers(), subject));
            }
            Ok(response)
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.min_backoff)
            .with_max_delay(Duration::from_secs(30))
            .with_max_times(self.settings.retries)
            .with_jitter();
        let result = attempt
            .retry(backoff)
            .when(HubError::retryable)
            .adjust(|err, delay| match err {
                HubError::RateLimited {
                    retry_after: Some(after),
                } => delay.map(|_| *after),
                _ => delay,
            })
            .notify(|err, delay| tracing::debug!(error = %err, ?delay, "retrying hub call"))
            .await;
        self.breaker_record(!matches!(&result, Err(e) if e.retryable()));
        result
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: Url,
        subject: Subject<'_>,
    ) -> Result<(T, HeaderMap), HubError> {
        let mut url = url;
        // Renamed repositories answer a relative 307 on the hub itself.
        for _ in 0..5 {
            let response = self
                .send(
                    Method::GET,
                    url.clone(),
                    &[],
                    subject,
                    Some(self.settings.api_timeout),
                )
                .await?;
            let status = response.status();
            if status.is_redirection() {
                let location = header_str(response.headers(), "location")
                    .ok_or_else(|| HubError::Protocol(format!("{status} without Location")))?;
                let next = url.join(&location).map_err(|e| {
                    HubError::Protocol(format!("bad Location {}: {e}", without_secrets(&location)))
                })?;
                if !self.same_origin(&next) {
                    return Err(HubError::Protocol(format!(
                        "API redirect to another host: {next}"
                    )));
                }
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(self.classify(status, response.headers(), subject));
            }
            let headers = response.headers().clone();
            let body = response
                .bytes()
                .await
                .map_err(|e| self.unavailable(format!("reading the answer: {e}")))?;
            let value = serde_json::from_slice(&body)
                .map_err(|e| HubError::Protocol(format!("bad JSON from {}: {e}", url.path())))?;
            return Ok((value, headers));
        }
        Err(HubError::Protocol("too many redirects".to_owned()))
    }

    /// One page of a model search; returns the models and the next page's cursor.
    pub async fn search(&self, query: &SearchQuery) -> Result<(Vec<HubModel>, Option<String>), HubError> {
        let mut url = self.url("/api/models")?;
        {
            let mut pairs = url.query_pairs_mut();
            if !query.search.is_empty() {
                pairs.append_pair("search", &query.search);
            }
            if !query.author.is_empty() {
                pairs.append_pair("author", &query.author);
            }
            for filter in &query.filters {
                pairs.append_pair("filter", filter);
            }
            if !query.pipeline_tag.is_empty() {
                pairs.append_pair("pipeline_tag", &query.pipeline_tag);
            }
            if !query.library.is_empty() {
                pairs.append_pair("library", &query.library);
            }
            if let Some(sort) = query.sort {
                pairs.append_pair("sort", sort);
            }
            pairs.append_pair("limit", &query.limit.to_string());
            pairs.append_pair("full", "true");
            if let Some(cursor) = &query.cursor {
                pairs.append_pair("cursor", cursor);
            }
        }
        let (models, headers): (Vec<HubModel>, _) = self.get_json(url, Subject::Search).await?;
        Ok((models, next_cursor(&headers)))
    }

    /// Model info at a revision.
    pub async fn model_info(&self, repo: &str, revision: &str) -> Result<HubModel, HubError> {
        let url = self.url(&format!(
            "/api/models/{repo}/revision/{}",
            escape_segment(revision)
        ))?;
        let (info, _): (HubModel, _) = self.get_json(url, Subject::Revision(repo, revision)).await?;
        Ok(info)
    }

    /// Every entry under `path` at `revision` (following `Link` pages).
    pub async fn tree(
        &self,
        repo: &str,
        revision: &str,
        path: &str,
        recursive: bool,
    ) -> Result<Vec<TreeEntry>, HubError> {
        let mut address = format!("/api/models/{repo}/tree/{}", escape_segment(revision));
        if !path.is_empty() {
            address.push('/');
            address.push_str(&escape_segment(path.trim_matches('/')));
        }
        let mut url = self.url(&address)?;
        url.query_pairs_mut()
            .append_pair("recursive", if recursive { "true" } else { "false" })
            .append_pair("expand", "false");
        let mut entries = Vec::new();
        for _ in 0..10_000 {
            let subject = if path.is_empty() {
                Subject::Revision(repo, revision)
            } else {
                Subject::File(repo, revision, path)
            };
            let (page, headers): (Vec<TreeEntry>, _) = self.get_json(url.clone(), subject).await?;
            entries.extend(page);
            match next_link(&headers) {
                // The next URL is used verbatim, but only on the hub's own origin.
                Some(next) => match Url::parse(&next) {
                    Ok(next) if self.same_origin(&next) => url = next,
                    _ => {
                        return Err(HubError::Protocol(format!(
                            "tree page link to another host: {next}"
                        )));
                    }
                },
                None => return Ok(entries),
            }
        }
        Err(HubError::Protocol("tree paging did not end".to_owned()))
    }

    /// Resolves a file: HEAD `/resolve`, following relative redirects (renamed repos) and
    /// stopping at the CDN. The token is never sent to the CDN.
    pub async fn resolve(&self, repo: &str, revision: &str, path: &str) -> Result<Resolved, HubError> {
        let mut url = self.url(&format!(
            "/{repo}/resolve/{}/{}",
            escape_segment(revision),
            escape_path(path)
        ))?;
        let identity = [(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"))];
        for _ in 0..5 {
            let response = self
                .send(
                    Method::HEAD,
                    url.clone(),
                    &identity,
                    Subject::File(repo, revision, path),
                    Some(self.settings.api_timeout),
                )
                .await?;
            let status = response.status();
            let headers = response.headers();
            if status.is_redirection() {
                let location = header_str(headers, "location")
                    .ok_or_else(|| HubError::Protocol(format!("{status} without Location")))?;
                let next = url.join(&location).map_err(|e| {
                    HubError::Protocol(format!("bad Location {}: {e}", without_secrets(&location)))
                })?;
                if self.same_origin(&next) && !location.starts_with("http") {
                    url = next;
                    continue;
                }
                let commit = header_str(headers, "x-repo-commit")
                    .ok_or_else(|| HubError::Protocol("redirect without X-Repo-Commit".to_owned()))?;
                let size = header_str(headers, "x-linked-size").and_then(|s| s.parse().ok());
                return Ok(Resolved {
                    url: next.to_string(),
                    commit,
                    size,
                });
            }
            if !status.is_success() {
                return Err(self.classify(status, headers, Subject::File(repo, revision, path)));
            }
            let commit = header_str(headers, "x-repo-commit")
                .ok_or_else(|| HubError::Protocol("answer without X-Repo-Commit".to_owned()))?;
            let size = header_str(headers, "content-length").and_then(|s| s.parse().ok());
            return Ok(Resolved {
                url: url.to_string(),
                commit,
                size,
            });
        }
        Err(HubError::Protocol("too many redirects".to_owned()))
    }

    /// GETs `url` from byte `start` (to `end`, exclusive, when given). The caller reads the body;
    /// a 200 to a ranged request means the server ignored the range.
    pub async fn get_range(
        &self,
        url: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<reqwest::Response, HubError> {
        let url = Url::parse(url).map_err(|e| HubError::Protocol(format!("bad file URL: {e}")))?;
        let mut extra = vec![(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"))];
        if start > 0 || end.is_some() {
            let range = match end {
                Some(end) => format!("bytes={start}-{}", end.saturating_sub(1)),
                None => format!("bytes={start}-"),
            };
            if let Ok(v) = HeaderValue::from_str(&range) {
                extra.push((header::RANGE, v));
            }
        }
        let response = self.send(Method::GET, url, &extra, Subject::Search, None).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.classify(status, response.headers(), Subject::Search));
        }
        Ok(response)
    }
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = header_str(headers, "link")?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// The `cursor` query parameter of the next page.
fn next_cursor(headers: &HeaderMap) -> Option<String> {
    let next = next_link(headers)?;
    let url = Url::parse(&next).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "cursor")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pumas_runtime::Secret;

    fn settings(endpoint: &str, token: Option<&str>) -> HubSettings {
        HubSettings {
            endpoint: endpoint.to_owned(),
            token: token.map_or(SecretSource::None, |t| SecretSource::Fixed(Secret::new(t))),
            retries: 0,
            min_backoff: Duration::from_millis(1),
            api_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_token_never_travels_in_plain_text_beyond_loopback() {
        let refused = Hub::new(settings("http://mirror.example:8080", Some("hf_secret")))
            .err()
            .unwrap_or_default();
        assert!(
            refused.contains("refusing to send the hub token in plain text"),
            "{refused}"
        );
        assert!(!refused.contains("hf_secret"), "{refused}");
        assert!(
            Hub::new(settings("http://mirror.example:8080", None)).is_ok(),
            "no token: fine"
        );
        assert!(
            Hub::new(settings("http://127.0.0.1:9", Some("hf_secret"))).is_ok(),
            "loopback: fine"
        );
        assert!(
            Hub::new(settings("http://localhost:9", Some("hf_secret"))).is_ok(),
            "localhost: fine"
        );
        assert!(Hub::new(settings("https://huggingface.co", Some("hf_secret"))).is_ok());
    }

    #[test]
    fn credentials_in_urls_are_never_shown() {
        let hub = Hub::new(settings("https://user:pa55word@mirror.example/hf", None)).expect("hub");
        assert_eq!(hub.endpoint(), "https://mirror.example/hf");
        let signed = "https://cdn.example/repos/ab/cd?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA";
        assert_eq!(without_secrets(signed), "https://cdn.example/repos/ab/cd");
        assert_eq!(
            without_secrets("https://u:p@h.example/x?sig=1"),
            "https://h.example/x"
        );
        let bad = Hub::new(settings("not a url with secret?token=x", None))
            .err()
            .unwrap_or_default();
        assert!(!bad.contains("token=x"), "{bad}");
    }

    #[test]
    fn escapes_revisions_fully_and_paths_by_segment() {
        assert_eq!(escape_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(escape_path("sub dir/a+b.txt"), "sub%20dir/a%2Bb.txt");
    }

    #[test]
    fn finds_the_next_link_and_its_cursor() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "link",
            HeaderValue::from_static("<http://h/api/models?search=x&cursor=Mg%3D%3D>; rel=\"next\""),
        );
        assert_eq!(next_cursor(&headers).as_deref(), Some("Mg=="));
    }
}
