//! From a worker's hash to a [`WorkerSpec`]: module, Deno flags, permissions, inspector
//! address, limits and where its code may come from. `denorun <key>`, `denorun supervise` and
//! `denorun lock` all assemble workers here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deno_runtime::deno_io::Stdio;

use crate::ceiling::Ceiling;
use crate::cli::TrustArgs;
use crate::config::{RedisTarget, WorkerConfig};
use crate::flags;
use crate::loader::Provenance;
use crate::lock::Lock;
use crate::permissions;
use crate::worker::{inspector, Limits, WorkerSpec};

/// Limits for workers whose hashes set none: `--max-heap-mb` and `--max-block-ms`.
#[derive(Debug, Clone, Copy)]
pub struct LimitDefaults {
    pub max_heap_mb: u64,
    pub max_block_ms: u64,
}

impl LimitDefaults {
    /// Without flags: the flags' defaults (a 512 MiB heap, 10 s at most without yielding).
    pub const STANDARD: LimitDefaults =
        LimitDefaults { max_heap_mb: crate::cli::DEFAULT_MAX_HEAP_MB, max_block_ms: crate::cli::DEFAULT_MAX_BLOCK_MS };
}

/// What the host contributes to every worker it runs.
pub struct Host<'a> {
    pub redis: &'a RedisTarget,
    pub limits: LimitDefaults,
    /// `--allow-remote-inspect`, from denorun's own command line.
    pub allow_remote_inspect: bool,
    pub trust: &'a Trust,
}

/// What the operator trusts worker hashes with, from denorun's command line.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The most a hash may grant (`--max-permissions`).
    pub ceiling: Ceiling,
    /// URL prefixes a worker's modules may come from (`--allow-module-from`).
    pub origins: Vec<String>,
    /// The lockfile every worker's remote modules must match (`--lock`).
    pub lock: Option<PathBuf>,
    /// `denorun lock`: the worker's lockfile records its modules instead of checking them.
    pub write_lock: bool,
}

impl Trust {
    pub fn from_args(args: &TrustArgs) -> anyhow::Result<Trust> {
        let ceiling = match args.max_permissions.as_deref() {
            None => Ceiling::default_ceiling(),
            Some(flags) => Ceiling::parse(flags).context("bad --max-permissions")?,
        };
        Ok(Trust { ceiling, origins: origins(&args.allow_module_from)?, lock: args.lock.clone(), write_lock: false })
    }

    /// The defaults of denorun's command line: the default ceiling, modules from the current
    /// directory and https, no lockfile.
    pub fn host_defaults() -> anyhow::Result<Trust> {
        Ok(Trust { ceiling: Ceiling::default_ceiling(), origins: origins(&[])?, lock: None, write_lock: false })
    }
}

/// `--allow-module-from`, or the default: local files under the current directory, and https.
fn origins(given: &[String]) -> anyhow::Result<Vec<String>> {
    if !given.is_empty() {
        return Ok(given.iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect());
    }
    let cwd = std::env::current_dir()?.canonicalize()?;
    let cwd = deno_runtime::deno_core::ModuleSpecifier::from_directory_path(&cwd)
        .map_err(|_| anyhow::anyhow!("cannot make a file URL of {}", cwd.display()))?;
    Ok(vec![cwd.to_string(), "https://".to_string()])
}

/// Assembles the worker a hash describes. Its stdin is `stdio`'s.
pub fn assemble(config: &WorkerConfig, host: &Host, stdio: Stdio) -> anyhow::Result<WorkerSpec> {
    let key = &config.key;
    let main_module = config.main_module(&std::env::current_dir()?)?;
    let mut flags = flags::parse_options(&config.deno_options).with_context(|| {
        format!("worker '{key}': bad denoOptions; fix the field with redis-cli hset {key} denoOptions ...")
    })?;
    // A worker's deno.json is named relative to its module's directory, wherever denorun runs.
    if let Some(config_file) = config.deno_config.as_deref().map(PathBuf::from).or(flags.config.take()) {
        let dir = main_module.to_file_path().ok().and_then(|path| path.parent().map(Path::to_path_buf));
        flags.config = Some(match dir {
            Some(dir) if config_file.is_relative() => dir.join(config_file),
            _ => config_file,
        });
    }
    host.trust.ceiling.check(&flags).map_err(|e| anyhow::anyhow!("worker '{key}': {e}"))?;
    inspector::check_address(flags.inspect, host.allow_remote_inspect).with_context(|| format!("worker '{key}'"))?;
    let redis_addr = host.redis.addr.as_ref().map(|(h, p)| permissions::net_addr(h, *p));
    let permissions = permissions::build(&flags, redis_addr.as_deref())?;
    let limits = limits(config, host.limits, flags.inspect.is_some());
    let provenance = Provenance {
        origins: Some(host.trust.origins.clone()),
        pin: config.sha256.clone().map(|hex| (main_module.clone(), hex)),
        locks: locks(host.trust, &flags).with_context(|| format!("worker '{key}'"))?,
    };
    Ok(WorkerSpec {
        name: key.clone(),
        main_module,
        args: vec![key.clone()],
        flags,
        permissions,
        stdio,
        limits,
        mode: crate::worker::Mode::Worker,
        provenance,
        stats: None,
        redis_url: None,
        watched: None,
    })
}

/// The lockfiles a worker's remote modules must match: the operator's and the hash's, each
/// read afresh for each start. For `denorun lock`, the one lockfile that records them: the
/// operator's, else the hash's, else `./deno.lock`.
fn locks(trust: &Trust, flags: &flags::DenoFlags) -> anyhow::Result<Vec<Arc<Lock>>> {
    let (operator, hash) = (trust.lock.as_ref(), flags.lock.as_ref());
    if trust.write_lock {
        let path = operator.or(hash).cloned().unwrap_or_else(|| PathBuf::from("deno.lock"));
        return Ok(vec![Arc::new(Lock::recording(&path)?)]);
    }
    [operator, hash].into_iter().flatten().map(|path| Lock::frozen(path).map(Arc::new)).collect()
}

/// The hash's limits, else the host's. A worker under a debugger may sit paused at a
/// breakpoint for as long as its user likes, so it has no watchdog.
pub fn limits(config: &WorkerConfig, defaults: LimitDefaults, inspecting: bool) -> Limits {
    let max_block_ms = config.max_block_ms.unwrap_or(defaults.max_block_ms);
    Limits {
        max_heap_mb: Some(config.max_heap_mb.unwrap_or(defaults.max_heap_mb)),
        max_block: (!inspecting).then(|| Duration::from_millis(max_block_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(fields: &[(&str, &str)]) -> WorkerConfig {
        let mut hash: std::collections::HashMap<String, String> =
            fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        hash.insert("workerUrl".into(), "w.ts".into());
        WorkerConfig::from_hash("t:1:h", &hash).unwrap()
    }

    const DEFAULTS: LimitDefaults = LimitDefaults::STANDARD;

    #[test]
    fn the_hash_overrides_the_host() {
        let l = limits(&config(&[("maxHeapMb", "64"), ("maxBlockMs", "500")]), DEFAULTS, false);
        assert_eq!(l, Limits { max_heap_mb: Some(64), max_block: Some(Duration::from_millis(500)) });
        let l = limits(&config(&[]), DEFAULTS, false);
        assert_eq!(l, Limits { max_heap_mb: Some(512), max_block: Some(Duration::from_secs(10)) });
    }

    #[test]
    fn a_debugged_worker_has_no_watchdog() {
        let l = limits(&config(&[("maxBlockMs", "500")]), DEFAULTS, true);
        assert_eq!(l.max_block, None);
        assert_eq!(l.max_heap_mb, Some(512));
    }
}
