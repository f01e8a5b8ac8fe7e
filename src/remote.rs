//! Remote modules: fetched over http(s) with redirects followed, and kept on disk under
//! `$DENORUN_DIR/remote` (default `~/.cache/denorun/remote`) so that a worker restarts while
//! its origin is down.
//!
//! As in Deno, a cached module is used without asking the network; `--reload` in the flags
//! fetches again (and still falls back to the cache if the origin cannot be reached). A fetch
//! that has not finished within [`FETCH_TIMEOUT`] (redirects included) counts as unreachable,
//! so an origin that accepts connections but never answers cannot hold a worker's start; the
//! worker then asks that origin nothing more, and takes what it needs from the cache.

use std::path::{Path, PathBuf};

use deno_error::JsErrorBox;
use deno_runtime::deno_core::ModuleSpecifier;
use deno_runtime::deno_fetch::{self, CreateHttpClientOptions, ReqBody};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MAX_REDIRECTS: usize = 10;

/// How long one fetch of a module may take, from the request to its last byte.
pub const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// A fetched module.
#[derive(Debug, Serialize, Deserialize)]
pub struct RemoteModule {
    /// The URL after redirects: relative imports resolve against it.
    pub url: String,
    pub content_type: Option<String>,
    pub source: String,
}

#[derive(Clone)]
pub struct RemoteModules {
    dir: PathBuf,
    client: deno_fetch::Client,
    reload: bool,
    /// Origins (`scheme://host:port`) that let a fetch time out: not asked again.
    silent: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// `$DENORUN_DIR`, or `~/.cache/denorun`.
pub fn denorun_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DENORUN_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("denorun")
}

impl RemoteModules {
    pub fn new(reload: bool) -> anyhow::Result<RemoteModules> {
        let client = deno_fetch::create_http_client(
            concat!("denorun/", env!("CARGO_PKG_VERSION")),
            CreateHttpClientOptions::default(),
        )?;
        Ok(RemoteModules { dir: denorun_dir().join("remote"), client, reload, silent: Default::default() })
    }

    /// The same cache, fetching again what it is asked for (as `--reload` does).
    pub fn reloading(&self) -> RemoteModules {
        RemoteModules { reload: true, ..self.clone() }
    }

    /// The module at `url`, from the cache or the network.
    pub async fn get(self, url: ModuleSpecifier) -> Result<RemoteModule, JsErrorBox> {
        let path = self.cache_path(&url);
        let cached = || read_cached(&path);
        if !self.reload {
            if let Some(module) = cached() {
                return Ok(module);
            }
        }
        let origin = url.origin().ascii_serialization();
        let fetched = if self.silent.lock().unwrap().contains(&origin) {
            Err(FetchError::Silent(url.clone()))
        } else {
            match tokio::time::timeout(FETCH_TIMEOUT, self.fetch(&url)).await {
                Ok(fetched) => fetched,
                Err(_) => {
                    self.silent.lock().unwrap().insert(origin);
                    Err(FetchError::TimedOut(url.clone()))
                }
            }
        };
        match fetched {
            Ok(module) => {
                if let Err(e) = write_cached(&path, &module) {
                    log::warn!("could not cache {url} in {}: {e}", path.display());
                }
                Ok(module)
            }
            Err(e) => match cached() {
                Some(module) => {
                    log::warn!("{e}; using the cached copy");
                    Ok(module)
                }
                None => Err(JsErrorBox::generic(format!(
                    "{e}, and it is not in the module cache ({}); check the URL and that the server is up",
                    self.dir.display()
                ))),
            },
        }
    }

    fn cache_path(&self, url: &ModuleSpecifier) -> PathBuf {
        let digest = Sha256::digest(url.as_str().as_bytes());
        self.dir.join(format!("{}.json", hex::encode(digest)))
    }

    async fn fetch(&self, url: &ModuleSpecifier) -> Result<RemoteModule, FetchError> {
        let mut current = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let unreachable = |e: &dyn std::fmt::Display| FetchError::Unreachable(current.clone(), e.to_string());
            let request = http::Request::get(current.as_str()).body(ReqBody::empty()).map_err(|e| unreachable(&e))?;
            let response = self.client.clone().send(request).await.map_err(|e| unreachable(&e))?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| FetchError::NoLocation(current.clone(), status))?;
                current = current.join(location).map_err(|e| FetchError::BadRedirect(current.clone(), e))?;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status(current, status));
            }
            let content_type =
                response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(String::from);
            let body =
                response.into_body().collect().await.map_err(|e| FetchError::Body(current.clone(), e.to_string()))?;
            let source =
                String::from_utf8(body.to_bytes().to_vec()).map_err(|_| FetchError::NotText(current.clone()))?;
            return Ok(RemoteModule { url: current.to_string(), content_type, source });
        }
        Err(FetchError::Redirects(url.clone()))
    }
}

/// Why a remote module could not be fetched (its cached copy, if any, is used instead).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("cannot fetch {0}: {1}")]
    Unreachable(ModuleSpecifier, String),
    #[error("cannot fetch {0}: HTTP {1} without a Location")]
    NoLocation(ModuleSpecifier, http::StatusCode),
    #[error("bad redirect from {0}: {1}")]
    BadRedirect(ModuleSpecifier, deno_runtime::deno_core::url::ParseError),
    #[error("cannot fetch {0}: HTTP {1}")]
    Status(ModuleSpecifier, http::StatusCode),
    #[error("cannot read {0}: {1}")]
    Body(ModuleSpecifier, String),
    #[error("{0} is not UTF-8 text")]
    NotText(ModuleSpecifier),
    #[error("cannot fetch {0}: no answer within {secs} s", secs = FETCH_TIMEOUT.as_secs())]
    TimedOut(ModuleSpecifier),
    #[error("cannot fetch {0}: its origin did not answer a moment ago")]
    Silent(ModuleSpecifier),
    #[error("cannot fetch {0}: more than {MAX_REDIRECTS} redirects")]
    Redirects(ModuleSpecifier),
}

fn read_cached(path: &Path) -> Option<RemoteModule> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes through a temporary file, so that a reader never sees half an entry.
fn write_cached(path: &Path, module: &RemoteModule) -> std::io::Result<()> {
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(module)?)?;
    std::fs::rename(tmp, path)
}
