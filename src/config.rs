//! The worker hash: where a worker's module, version and Deno options come from.
//!
//! A worker key is `${type}:${id}:h`; HGETALL of it gives fields in either of the spellings the
//! original deno-run-worker used (`workerUrl` or `url`, `workerVersion` or `version`, ...).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use deno_runtime::deno_core::ModuleSpecifier;
use redis::{AsyncCommands, ConnectionAddr};

use crate::fields::Fields;
use crate::keys::{Keys, WorkerKey};
use crate::permissions;
use crate::topology::{Conn, Patience, Sentinels, Topology};

/// How long to wait for Redis before saying it is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A worker's configuration, read from its hash.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub key: String,
    pub url: String,
    pub version: String,
    pub worker_type: Option<String>,
    pub deno_options: String,
    /// `maxHeapMb`: the worker's V8 heap limit, when the hashes set one.
    pub max_heap_mb: Option<u64>,
    /// `maxBlockMs`: how long its JavaScript may run without yielding, when the hashes set it.
    pub max_block_ms: Option<u64>,
    /// `workerSha256`: the SHA-256 (hex) the main module's bytes must have.
    pub sha256: Option<String>,
    /// `denoConfig`: the worker's `deno.json`, a path relative to its module's directory
    /// (as `--config` in `denoOptions`), when not the one found from there up.
    pub deno_config: Option<String>,
}

impl WorkerConfig {
    /// Reads the fields of a worker hash. Fails, naming the key and the field, when the hash
    /// is missing or has no URL.
    pub fn from_hash(key: &str, hash: &HashMap<String, String>) -> anyhow::Result<WorkerConfig> {
        if hash.is_empty() {
            bail!(
                "worker hash '{key}' does not exist (HGETALL {key} is empty); \
                 create it, e.g. redis-cli hset {key} workerUrl ./worker.ts workerVersion local"
            );
        }
        let field = |a: &str, b: &str| {
            hash.get(a).or_else(|| hash.get(b)).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
        };
        let Some(url) = field("workerUrl", "url") else {
            bail!(
                "worker hash '{key}' has no workerUrl (or url) field; \
                 set it, e.g. redis-cli hset {key} workerUrl ./worker.ts workerVersion local"
            );
        };
        let fields = Fields::new(key, hash);
        let number = |name: &str| fields.number(name, 1);
        Ok(WorkerConfig {
            max_heap_mb: number("maxHeapMb")?,
            max_block_ms: number("maxBlockMs")?,
            key: key.to_string(),
            url,
            version: field("workerVersion", "version").unwrap_or_else(|| "main".to_string()),
            worker_type: field("workerType", "type"),
            deno_options: field("denoOptions", "denoOptions").unwrap_or_default(),
            deno_config: field("denoConfig", "denoConfig"),
            sha256: match field("workerSha256", "workerSha256") {
                Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Some(hex.to_lowercase()),
                Some(other) => bail!(
                    "worker hash '{key}': workerSha256 '{other}' is not a SHA-256 in hex (64 digits); \
                     make one with sha256sum <module>"
                ),
                None => None,
            },
        })
    }

    /// The main module: a local path (version `local`), or an http(s) or file URL.
    pub fn main_module(&self, cwd: &Path) -> anyhow::Result<ModuleSpecifier> {
        if self.version == "local" {
            let path = cwd.join(&self.url);
            if !path.is_file() {
                bail!(
                    "worker '{}': local module '{}' not found (looked at {}); \
                     workerUrl must be a path to the worker's .ts file when workerVersion is local",
                    self.key,
                    self.url,
                    path.display()
                );
            }
            let path = path.canonicalize().with_context(|| format!("resolving {}", path.display()))?;
            return ModuleSpecifier::from_file_path(&path)
                .map_err(|_| anyhow::anyhow!("cannot make a file URL of {}", path.display()));
        }
        let url = ModuleSpecifier::parse(&self.url).with_context(|| {
            format!(
                "worker '{}': workerUrl '{}' is not a URL; with workerVersion '{}' it must be \
                 https://, http:// or file:// (set workerVersion to local for a path)",
                self.key, self.url, self.version
            )
        })?;
        match url.scheme() {
            "https" | "http" | "file" => Ok(url),
            other => bail!(
                "worker '{}': workerUrl scheme '{other}:' is not supported; use https://, http:// or file://",
                self.key
            ),
        }
    }
}

/// Reads and checks a worker type's defaults, `${type}:h`, as the original bootstrap did:
/// the hash exists, has a URL, its version is `local`, `main` or `vN.N.N`, and a local
/// module exists.
pub async fn load_type(conn: &mut Conn, keys: &Keys) -> anyhow::Result<HashMap<String, String>> {
    let key = &keys.hash;
    let hash: HashMap<String, String> = conn.hgetall(key).await.with_context(|| format!("HGETALL {key} failed"))?;
    if is_sync(&hash) {
        // A type of sync instances: no module to check (`sync::supervised` checks the rest).
        return Ok(hash);
    }
    check(key, &WorkerConfig::from_hash(key, &hash)?)?;
    Ok(hash)
}

/// Checks what a supervisor checks before it runs a worker: its version is `local`, `main`
/// or `vN.N.N`, and its local module exists (from the current directory).
pub fn check(key: &str, config: &WorkerConfig) -> anyhow::Result<()> {
    let version = &config.version;
    let tag = version.strip_prefix('v').map(|v| v.split('.').collect::<Vec<_>>());
    let is_tag = tag.is_some_and(|parts| {
        parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    if version != "local" && version != "main" && !is_tag {
        bail!("{key}: workerVersion '{version}' must be local, main or a tag vN.N.N; fix it with redis-cli hset {key} workerVersion ...");
    }
    config.main_module(&std::env::current_dir()?)?;
    Ok(())
}

/// The version a worker runs, as `status` shows it: its `workerVersion`, or for a local
/// worker (`local`) its path.
pub fn version_label(config: &WorkerConfig) -> String {
    match config.version.as_str() {
        "local" => config.url.clone(),
        version => version.to_string(),
    }
}

/// What tells two versions of a worker apart, as a rollout waits for it: a digest of its
/// `workerVersion`, `workerUrl` and `workerSha256` (any of which a rollout may change alone).
pub fn version_digest(config: &WorkerConfig) -> String {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    for part in [&config.version, &config.url, config.sha256.as_deref().unwrap_or("")] {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    hex::encode(&digest.finalize()[..8])
}

/// A worker's configuration: its type's defaults, overridden by its own hash.
pub fn merged(
    key: &str,
    defaults: &HashMap<String, String>,
    own: HashMap<String, String>,
) -> anyhow::Result<WorkerConfig> {
    let mut fields = defaults.clone();
    fields.extend(own);
    WorkerConfig::from_hash(key, &fields)
}

/// A Redis URL, parsed, with the address a worker is allowed to reach.
#[derive(Clone)]
pub struct RedisTarget {
    pub topology: Topology,
    /// `host:port`, when Redis is reached over TCP: behind Sentinel, the master's when denorun
    /// started.
    pub addr: Option<(String, u16)>,
    /// What workers get in `REDIS_URL`: the URL as given, or behind Sentinel the master's
    /// `redis://` URL (their connections to it follow failovers).
    pub worker_url: String,
}

impl RedisTarget {
    pub fn parse(url: &str) -> anyhow::Result<RedisTarget> {
        if url.starts_with("redis+sentinel://") {
            return RedisTarget::behind_sentinel(url);
        }
        if url.starts_with("redis+cluster://") {
            let topology = Topology::cluster(url).with_context(|| format!("invalid Redis URL '{url}'"))?;
            return Ok(RedisTarget { topology, addr: None, worker_url: url.to_string() });
        }
        let client = crate::topology::client_for_url(url).with_context(|| {
            format!(
                "invalid Redis URL '{url}'; expected redis://[:password@]host[:port][/db], rediss://... \
                 or redis+sentinel://host:port[,host:port...]/<master name>[/db]"
            )
        })?;
        let addr = match client.get_connection_info().addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => Some((host.clone(), *port)),
            _ => None,
        };
        Ok(RedisTarget { topology: Topology::Server(client), addr, worker_url: url.to_string() })
    }

    /// Asks the sentinels where the master is, and makes workers' connections to it follow
    /// failovers.
    fn behind_sentinel(url: &str) -> anyhow::Result<RedisTarget> {
        let sentinels = Arc::new(Sentinels::parse(url).with_context(|| format!("invalid Redis URL '{url}'"))?);
        let master = sentinels.master_blocking().map_err(|e| {
            anyhow::anyhow!(
                "cannot find {}: {e}; start the sentinels, or check the master's name in --redis or REDIS_URL",
                sentinels.describe()
            )
        })?;
        let ConnectionAddr::Tcp(host, port) = &master else {
            anyhow::bail!("the sentinels name a master that is not on plain TCP ({master}); denorun needs TCP")
        };
        let settings = &sentinels.settings;
        let mut worker_url =
            deno_core::url::Url::parse(&format!("redis://{}/{}", permissions::net_addr(host, *port), settings.db()))?;
        if let Some(user) = settings.username() {
            let _ = worker_url.set_username(user);
        }
        if let Some(password) = settings.password() {
            let _ = worker_url.set_password(Some(password));
        }
        crate::topology::set_host_sentinels(sentinels.clone(), master.clone());
        Ok(RedisTarget {
            topology: Topology::Sentinel(sentinels.clone(), settings.clone()),
            addr: Some((host.clone(), *port)),
            worker_url: worker_url.to_string(),
        })
    }

    /// What Redis this is, for messages.
    pub fn describe(&self) -> String {
        match (&self.topology, &self.addr) {
            (Topology::Sentinel(sentinels, _), _) => sentinels.describe(),
            (Topology::Cluster(nodes), _) => {
                let nodes: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
                format!("the Redis Cluster at {}", nodes.join(","))
            }
            (_, Some((host, port))) => crate::permissions::net_addr(host, *port),
            (_, None) => "the configured socket".to_string(),
        }
    }

    /// Connects, or says how to make Redis reachable. Each command's deadline is its own
    /// (`topology::silence`): a blocking one (BRPOP, XREADGROUP BLOCK) waits its block and more.
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        let fail = |reason: String| {
            anyhow::anyhow!(
                "cannot reach Redis at {}: {reason}; start redis-server there, \
                 or point denorun at it with --redis <URL> or REDIS_URL",
                self.describe()
            )
        };
        let patience = Patience { connect: CONNECT_TIMEOUT, retries: 0 };
        match tokio::time::timeout(CONNECT_TIMEOUT, self.topology.managed(patience)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) if e.kind() == redis::ErrorKind::AuthenticationFailed => Err(anyhow::anyhow!(
                "Redis at {} refused the credentials in the Redis URL ({e}); fix the user or password in --redis or REDIS_URL",
                self.describe()
            )),
            Ok(Err(e)) => Err(fail(e.to_string())),
            Err(_) => Err(fail(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))),
        }
    }
}

/// Whether a worker's fields (its hash over its type's) name a sync instance (`syncStream`)
/// rather than a module.
pub fn is_sync(fields: &HashMap<String, String>) -> bool {
    fields.contains_key("syncStream")
}

/// Reads and checks a worker's hash, with its type's (`${type}:h`, empty if there is none)
/// as defaults, in one round trip; also returns the type's.
pub async fn load(redis: &RedisTarget, key: &WorkerKey) -> anyhow::Result<(WorkerConfig, HashMap<String, String>)> {
    let conn = redis.connect().await?;
    // Two commands rather than a pipeline, which a Cluster refuses across slots; sent
    // together, they still take one round trip.
    let (mut own, mut of_type) = (conn.clone(), conn);
    let (hash, type_hash): (HashMap<String, String>, HashMap<String, String>) =
        tokio::try_join!(own.hgetall(key), of_type.hgetall(key.keys().hash))
            .with_context(|| format!("HGETALL {key} failed"))?;
    if hash.is_empty() {
        WorkerConfig::from_hash(key.as_str(), &hash)?; // says the hash does not exist
    }
    // Its type's hash gives the defaults, as under `denorun supervise`.
    Ok((merged(key.as_str(), &type_hash, hash)?, type_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn both_spellings_are_read() {
        let c = WorkerConfig::from_hash("t:1:h", &hash(&[("url", "https://x/w.ts"), ("type", "t")])).unwrap();
        assert_eq!((c.url.as_str(), c.version.as_str()), ("https://x/w.ts", "main"));
        assert_eq!(c.worker_type.as_deref(), Some("t"));
        let c = WorkerConfig::from_hash(
            "t:1:h",
            &hash(&[("workerUrl", "w.ts"), ("workerVersion", "local"), ("denoOptions", "-R")]),
        )
        .unwrap();
        assert_eq!((c.url.as_str(), c.version.as_str(), c.deno_options.as_str()), ("w.ts", "local", "-R"));
    }

    #[test]
    fn limits_are_positive_numbers() {
        let c =
            WorkerConfig::from_hash("t:1:h", &hash(&[("url", "w.ts"), ("maxHeapMb", "64"), ("maxBlockMs", " 250 ")]));
        let c = c.unwrap();
        assert_eq!((c.max_heap_mb, c.max_block_ms), (Some(64), Some(250)));
        for bad in ["0", "-1", "lots", "1.5"] {
            let e = WorkerConfig::from_hash("t:1:h", &hash(&[("url", "w.ts"), ("maxHeapMb", bad)])).unwrap_err();
            assert!(e.to_string().contains("maxHeapMb"), "{e}");
        }
    }

    #[test]
    fn missing_hash_or_url_names_the_key() {
        let err = WorkerConfig::from_hash("t:1:h", &HashMap::new()).unwrap_err().to_string();
        assert!(err.contains("'t:1:h' does not exist"), "{err}");
        let err = WorkerConfig::from_hash("t:1:h", &hash(&[("workerVersion", "local")])).unwrap_err().to_string();
        assert!(err.contains("no workerUrl"), "{err}");
    }

    #[test]
    fn main_module_by_version() {
        let c = WorkerConfig::from_hash("t:1:h", &hash(&[("workerUrl", "ftp://x/w.ts"), ("workerVersion", "v1.0.0")]))
            .unwrap();
        assert!(c.main_module(Path::new("/")).unwrap_err().to_string().contains("scheme 'ftp:'"));
        let c =
            WorkerConfig::from_hash("t:1:h", &hash(&[("workerUrl", "nope.ts"), ("workerVersion", "local")])).unwrap();
        assert!(c.main_module(Path::new("/")).unwrap_err().to_string().contains("not found"));
    }
}
