//! V8's code cache for modules, kept on disk under `$DENORUN_DIR/code_cache` as Deno keeps
//! its own: a worker that starts again finds each module's compiled top level there instead
//! of parsing and compiling it again. `--no-code-cache` in the flags turns it off.
//!
//! One file per module URL, named by the URL's SHA-256: the hash of the JavaScript it was
//! made from (8 bytes, little-endian), then V8's bytes. A file whose hash differs from the
//! module's current JavaScript is ignored and replaced; V8 itself rejects a cache made by
//! another V8 or with other flags. Files are written whole (a temporary file, then a rename),
//! so workers sharing the directory never read half a file.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use deno_runtime::deno_core::{ModuleSpecifier, SourceCodeCacheInfo};
use sha2::{Digest, Sha256};

#[derive(Clone)]
pub struct CodeCache {
    dir: PathBuf,
}

impl CodeCache {
    pub fn new(dir: PathBuf) -> CodeCache {
        CodeCache { dir }
    }

    /// What deno_core needs to compile `code` for `specifier`: its hash, and the cached bytes
    /// if there are some for exactly this code.
    pub fn lookup(&self, specifier: &ModuleSpecifier, code: &str) -> SourceCodeCacheInfo {
        let hash = hash_of(code);
        let data = std::fs::read(self.path(specifier)).ok().and_then(|bytes| {
            let (stored, cache) = bytes.split_at_checked(8)?;
            (u64::from_le_bytes(stored.try_into().ok()?) == hash).then(|| cache.to_vec().into())
        });
        SourceCodeCacheInfo { hash, data }
    }

    /// Keeps what V8 made of a module whose cache was missing or rejected. A cache that cannot
    /// be written only costs the next start its compile, so errors are logged, not raised.
    pub fn store(&self, specifier: &ModuleSpecifier, hash: u64, cache: &[u8]) {
        let path = self.path(specifier);
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            std::fs::write(&tmp, [&hash.to_le_bytes()[..], cache].concat())?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            log::debug!("cannot keep the code cache of {specifier} in {}: {e}", self.dir.display());
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Drops the cache of a module V8 will not cache (deno_core asks after some warnings).
    pub fn purge(&self, specifier: &str) {
        if let Ok(specifier) = ModuleSpecifier::parse(specifier) {
            let _ = std::fs::remove_file(self.path(&specifier));
        }
    }

    fn path(&self, specifier: &ModuleSpecifier) -> PathBuf {
        self.dir.join(hex::encode(Sha256::digest(specifier.as_str().as_bytes())))
    }
}

/// The hash of a module's whole JavaScript (V8 checks only its length).
fn hash_of(code: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    code.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_serves_only_the_code_it_was_made_from() {
        let dir = std::env::temp_dir().join(format!("denorun-code-cache-{}", std::process::id()));
        let cache = CodeCache::new(dir.clone());
        let url = ModuleSpecifier::parse("file:///w/worker.ts").unwrap();
        let first = cache.lookup(&url, "export const a = 1;");
        assert!(first.data.is_none());
        cache.store(&url, first.hash, b"compiled");
        assert_eq!(cache.lookup(&url, "export const a = 1;").data.as_deref(), Some(&b"compiled"[..]));
        assert!(cache.lookup(&url, "export const a = 2;").data.is_none(), "other code, same length");
        let other = ModuleSpecifier::parse("file:///w/other.ts").unwrap();
        assert!(cache.lookup(&other, "export const a = 1;").data.is_none());
        cache.purge(url.as_str());
        assert!(cache.lookup(&url, "export const a = 1;").data.is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
