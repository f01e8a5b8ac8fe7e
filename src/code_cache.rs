//! What a worker keeps between starts so as not to compile a module twice, on disk under
//! `$DENORUN_DIR/code_cache` as Deno keeps its own: the JavaScript a TypeScript module was
//! transpiled to, and V8's code cache (the module's compiled top level). `--no-code-cache` in
//! the flags turns both off.
//!
//! Files are named by the SHA-256 of the module's URL. `<name>` holds the hash of the
//! JavaScript V8 compiled (8 bytes, little-endian), then V8's bytes; `<name>.js` holds the
//! SHA-256 of the TypeScript on its first line, then the JavaScript. A file made from other
//! source is ignored and replaced; V8 itself rejects a cache made by another V8 or with other
//! flags. Files are written whole (a temporary file, then a rename), so workers sharing the
//! directory never read half a file.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

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

    /// Keeps what V8 made of a module whose cache was missing or rejected.
    pub fn store(&self, specifier: &ModuleSpecifier, hash: u64, cache: &[u8]) {
        self.write(specifier, &self.path(specifier), &[&hash.to_le_bytes()[..], cache].concat());
    }

    /// The JavaScript of a TypeScript module: the one kept for exactly this `source`, or what
    /// `transpile` makes of it, then kept.
    pub fn javascript<E>(
        &self,
        specifier: &ModuleSpecifier,
        source: String,
        transpile: impl FnOnce(String) -> Result<String, E>,
    ) -> Result<String, E> {
        let path = self.path(specifier).with_extension("js");
        let digest = format!("// {}\n", hex::encode(Sha256::digest(source.as_bytes())));
        let kept = std::fs::read_to_string(&path).ok().and_then(|text| text.strip_prefix(&digest).map(String::from));
        if let Some(javascript) = kept {
            return Ok(javascript);
        }
        let javascript = transpile(source)?;
        self.write(specifier, &path, format!("{digest}{javascript}").as_bytes());
        Ok(javascript)
    }

    /// Writes a file whole. A cache that cannot be written only costs the next start a
    /// compile, so errors are logged, not raised.
    fn write(&self, specifier: &ModuleSpecifier, path: &std::path::Path, bytes: &[u8]) {
        // Unique to this write: workers of one process may keep the same module at once.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{}-{n}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            log::debug!("cannot keep the compiled {specifier} in {}: {e}", self.dir.display());
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Drops the V8 cache of a module V8 will not cache (deno_core asks after some warnings).
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

    #[test]
    fn a_module_is_transpiled_again_only_when_its_source_changes() {
        let dir = std::env::temp_dir().join(format!("denorun-emit-cache-{}", std::process::id()));
        let cache = CodeCache::new(dir.clone());
        let url = ModuleSpecifier::parse("file:///w/worker.ts").unwrap();
        let calls = std::cell::Cell::new(0);
        let transpile = |source: String| -> Result<String, ()> {
            calls.set(calls.get() + 1);
            Ok(format!("js of {source}"))
        };
        assert_eq!(cache.javascript(&url, "a".into(), transpile), Ok("js of a".to_string()));
        assert_eq!(cache.javascript(&url, "a".into(), transpile), Ok("js of a".to_string()));
        assert_eq!(calls.get(), 1);
        assert_eq!(cache.javascript(&url, "b".into(), transpile), Ok("js of b".to_string()));
        assert_eq!(calls.get(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }
}
