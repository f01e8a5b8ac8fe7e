//! Lockfiles in Deno's `deno.lock` format (read and written with the `deno_lockfile` crate):
//! the SHA-256 of every remote module a worker may load.
//!
//! A running worker only checks, as `deno run --frozen` does: a remote module that is not in
//! the lock, or whose bytes have another digest, is refused before it is evaluated, and the
//! file is never written. JSR packages are locked as Deno locks them: `specifiers` pins the
//! version a `jsr:` request gets, and `jsr` the SHA-256 of that version's meta data, whose
//! manifest in turn holds the digest of every file (checked by `jsr`). `denorun lock <key>`
//! is what writes it, by loading the worker's module graph (without running it) through a
//! recording lock.

use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use deno_error::JsErrorBox;
use deno_lockfile::{Lockfile, NewLockfileOptions, NpmPackageInfoProvider};
use deno_runtime::deno_core::ModuleSpecifier;
use deno_semver::jsr::JsrDepPackageReq;
use deno_semver::package::{PackageNv, PackageReq};
use deno_semver::Version;
use sha2::Digest;

/// One lockfile, either checked (frozen) or filled in (`denorun lock`).
#[derive(Debug)]
pub struct Lock {
    file: Mutex<Lockfile>,
    recording: bool,
}

/// The hex SHA-256 of a module's bytes, as `deno.lock` records it.
pub fn digest(source: &str) -> String {
    hex::encode(sha2::Sha256::digest(source.as_bytes()))
}

impl Lock {
    /// The lockfile `--lock=FILE` names on a command line, checked, never written.
    pub fn from_flags(flags: &crate::flags::DenoFlags) -> anyhow::Result<Vec<std::sync::Arc<Lock>>> {
        flags.lock.iter().map(|path| Lock::frozen(path).map(std::sync::Arc::new)).collect()
    }

    /// The lockfile at `path`, to check remote modules against. It must exist.
    pub fn frozen(path: &Path) -> anyhow::Result<Lock> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("cannot read the lockfile {}; write it with `denorun lock <worker-key>`", path.display())
        })?;
        Ok(Lock { file: Mutex::new(parse(path, &text)?), recording: false })
    }

    /// The lockfile at `path` (or a new one), to add the modules a graph loads to.
    pub fn recording(path: &Path) -> anyhow::Result<Lock> {
        let file = match std::fs::read_to_string(path) {
            Ok(text) => parse(path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Lockfile::new_empty(path.to_path_buf(), false),
            Err(e) => return Err(e).with_context(|| format!("cannot read the lockfile {}", path.display())),
        };
        Ok(Lock { file: Mutex::new(file), recording: true })
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.file.lock().unwrap().filename.clone()
    }

    /// Checks (or records) a remote module: `requested` is what was imported, `found` where
    /// it was after redirects, `source` its bytes.
    pub fn admit(&self, requested: &ModuleSpecifier, found: &ModuleSpecifier, source: &str) -> Result<(), JsErrorBox> {
        let mut file = self.file.lock().unwrap();
        let actual = digest(source);
        if self.recording {
            if requested != found {
                file.insert_redirect(requested.to_string(), found.to_string());
            }
            file.insert_remote(found.to_string(), actual);
            return Ok(());
        }
        let path = file.filename.display().to_string();
        if requested != found && file.content.redirects.get(requested.as_str()) != Some(&found.to_string()) {
            return Err(refuse(format!("{requested} redirects to {found}, which the lockfile {path} does not record")));
        }
        match file.remote().get(found.as_str()) {
            None => Err(refuse(format!("{found} is not in the lockfile {path} (it is frozen)"))),
            Some(expected) if *expected != actual => Err(refuse(format!(
                "{found} does not match the lockfile {path}: the lock has {expected}, the module's bytes have {actual}"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Records the version a `jsr:` request got (a frozen lock records nothing).
    pub fn record_jsr_specifier(&self, req: &PackageReq, version: &Version) {
        if self.recording {
            let mut file = self.file.lock().unwrap();
            file.insert_package_specifier(JsrDepPackageReq::jsr(req.clone()), version.to_string().as_str().into());
        }
    }

    /// Checks (or records) a JSR package version: `integrity` is its version meta's SHA-256.
    pub fn admit_jsr_package(&self, nv: &PackageNv, integrity: &str) -> Result<(), JsErrorBox> {
        let mut file = self.file.lock().unwrap();
        if self.recording {
            file.insert_package(nv.clone(), integrity.to_string());
            return Ok(());
        }
        let path = file.filename.display().to_string();
        match file.content.packages.jsr.get(nv) {
            None => Err(refuse(format!("the JSR package {nv} is not in the lockfile {path} (it is frozen)"))),
            Some(info) if info.integrity != integrity => Err(refuse(format!(
                "the JSR package {nv} does not match the lockfile {path}: the lock has {}, the registry's \
                 {}_meta.json has {integrity}",
                info.integrity, nv.version
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Writes a recording lock (through a temporary file, so no reader sees half of it).
    /// Returns how many remote modules and JSR packages it holds.
    pub fn write(&self) -> anyhow::Result<(usize, usize)> {
        let mut file = self.file.lock().unwrap();
        let count = (file.remote().len(), file.content.packages.jsr.len());
        let path = file.filename.clone();
        let text = file.as_json_string();
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write the lockfile {}", path.display()))?;
        file.has_content_changed = false;
        Ok(count)
    }
}

/// The version the frozen locks pin for a `jsr:` request; `None` when no lock is frozen. A
/// frozen lock without the request refuses it, and two that disagree refuse it too.
pub fn jsr_version(locks: &[std::sync::Arc<Lock>], req: &PackageReq) -> Result<Option<Version>, JsErrorBox> {
    let dep = JsrDepPackageReq::jsr(req.clone());
    let mut pinned: Option<(Version, String)> = None;
    for lock in locks.iter().filter(|lock| !lock.recording) {
        let file = lock.file.lock().unwrap();
        let path = file.filename.display().to_string();
        let Some(text) = file.content.packages.specifiers.get(&dep) else {
            return Err(refuse(format!("jsr:{req} is not in the lockfile {path} (it is frozen)")));
        };
        let version = Version::parse_standard(text).map_err(|e| {
            refuse(format!("the lockfile {path} pins jsr:{req} to {text}, which is not a version ({e})"))
        })?;
        match &pinned {
            Some((other, other_path)) if *other != version => {
                return Err(refuse(format!(
                    "the lockfiles disagree on jsr:{req}: {other_path} pins {other}, {path} pins {version}"
                )))
            }
            Some(_) => {}
            None => pinned = Some((version, path)),
        }
    }
    Ok(pinned.map(|(version, _)| version))
}

fn refuse(why: String) -> JsErrorBox {
    JsErrorBox::generic(format!(
        "{why}; if the change is intended, update the lockfile with `denorun lock <worker-key>`"
    ))
}

fn parse(path: &Path, text: &str) -> anyhow::Result<Lockfile> {
    let options = NewLockfileOptions { file_path: path.to_path_buf(), content: text, overwrite: false };
    deno_runtime::deno_core::futures::executor::block_on(Lockfile::new(options, &NoNpm))
        .map_err(|e| anyhow::anyhow!("{e}; fix or remove it, then run `denorun lock <worker-key>`"))
}

/// Workers have no npm packages, so an old lockfile's npm section cannot be upgraded.
struct NoNpm;

#[async_trait::async_trait(?Send)]
impl NpmPackageInfoProvider for NoNpm {
    async fn get_npm_package_info(
        &self,
        _values: &[deno_semver::package::PackageNv],
    ) -> Result<Vec<deno_lockfile::Lockfile5NpmInfo>, Box<dyn std::error::Error + Send + Sync>> {
        Err("denorun workers have no npm packages; remove the lockfile's npm section".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> ModuleSpecifier {
        ModuleSpecifier::parse(s).unwrap()
    }

    #[test]
    fn a_recorded_lock_admits_the_same_bytes_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("denorun-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("deno.lock");
        let _ = std::fs::remove_file(&path);
        let recording = Lock::recording(&path).unwrap();
        let (a, b, moved) = (url("https://x.test/a.ts"), url("https://x.test/b.ts"), url("https://x.test/v1/b.ts"));
        recording.admit(&a, &a, "export const a = 1;").unwrap();
        recording.admit(&b, &moved, "export const b = 2;").unwrap();
        assert_eq!(recording.write().unwrap(), (2, 0));

        let frozen = Lock::frozen(&path).unwrap();
        frozen.admit(&a, &a, "export const a = 1;").unwrap();
        frozen.admit(&b, &moved, "export const b = 2;").unwrap();
        let changed = frozen.admit(&a, &a, "export const a = 666;").unwrap_err().to_string();
        assert!(changed.contains(&digest("export const a = 1;")) && changed.contains(&digest("export const a = 666;")));
        let missing = frozen.admit(&url("https://x.test/c.ts"), &url("https://x.test/c.ts"), "").unwrap_err();
        assert!(missing.to_string().contains("is not in the lockfile"), "{missing}");
        let redirected = frozen.admit(&a, &moved, "export const b = 2;").unwrap_err();
        assert!(redirected.to_string().contains("does not record"), "{redirected}");
        // The file is Deno's format, version 5.
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["version"], "5");
        assert_eq!(json["remote"]["https://x.test/a.ts"], digest("export const a = 1;").as_str());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_frozen_lock_says_how_to_make_one() {
        let err = Lock::frozen(Path::new("/nonexistent/deno.lock")).unwrap_err();
        assert!(format!("{err:#}").contains("denorun lock"), "{err:#}");
    }
}
