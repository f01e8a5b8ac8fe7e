//! JSR packages: `jsr:@scope/name@range/export`, resolved through the registry protocol as
//! Deno resolves them, and fetched through the remote-module cache.
//!
//! - The registry is `JSR_URL` (as Deno reads it), else `https://jsr.io/`.
//! - A frozen lockfile's `specifiers` decide which version a request gets. Else, as in Deno,
//!   a version of the package the worker already uses, if one satisfies the range (so ranges
//!   that overlap share one copy); else the highest version in `<registry>@scope/name/meta.json`
//!   that satisfies the range and is not yanked (`latest` for the `latest` tag). Requests are
//!   decided one at a time, in the order the worker's imports ask for them.
//! - `<registry>@scope/name/<version>_meta.json` gives the `exports` (what an export name
//!   leads to) and the manifest: the SHA-256 of every file. A package file whose bytes are not
//!   the manifest's is refused, and the version meta's own SHA-256 is the package's integrity
//!   in `deno.lock` (its `jsr` section), as Deno records it.
//! - Every fetch goes through [`RemoteModules`]: cached on disk, fetched again with
//!   `--reload`, and served from the cache when the registry is down. A cached `meta.json`
//!   with no version in range is fetched again once, as Deno does.
//!
//! What a worker may import (the import permission, the allowed origins) is the loader's
//! business; this module only says where a specifier leads and whether bytes are the package's.

use std::collections::HashMap;
use std::sync::Arc;

use deno_error::JsErrorBox;
use deno_runtime::deno_core::url::Url;
use deno_runtime::deno_core::ModuleSpecifier;
use deno_semver::jsr::JsrPackageReqReference;
use deno_semver::package::{PackageNv, PackageReq};
use deno_semver::{Version, VersionReq};
use serde::Deserialize;

use crate::lock::{self, Lock};
use crate::remote::RemoteModules;

/// The default registry, as in Deno.
const DEFAULT_REGISTRY: &str = "https://jsr.io/";

/// A package's `meta.json`: its versions.
#[derive(Debug, Deserialize)]
struct PackageMeta {
    #[serde(default)]
    latest: Option<String>,
    #[serde(default)]
    versions: HashMap<String, VersionInfo>,
}

#[derive(Debug, Default, Deserialize)]
struct VersionInfo {
    #[serde(default)]
    yanked: bool,
}

/// A version's `<version>_meta.json`: its exports and the checksums of its files.
#[derive(Debug, Deserialize)]
struct VersionMeta {
    #[serde(default)]
    exports: HashMap<String, String>,
    #[serde(default)]
    manifest: HashMap<String, ManifestEntry>,
}

#[derive(Debug, Deserialize)]
struct ManifestEntry {
    checksum: String,
}

/// Why a `jsr:` import cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum JsrError {
    #[error(
        "{0} is not a JSR specifier ({1}); write jsr:@scope/name, jsr:@scope/name@^1.2 or jsr:@scope/name@1.2.3/export"
    )]
    BadSpecifier(String, String),
    #[error("{url} is not a package's meta data ({why}); check JSR_URL ({registry})")]
    BadMeta { url: String, why: String, registry: String },
    #[error("no version of {name} on {registry} satisfies {range} (it has {available})")]
    NoVersion { name: String, range: String, available: String, registry: String },
    #[error("{name} has no version tagged {tag}")]
    NoTag { name: String, tag: String },
    #[error("{nv} does not export {export} (it exports {exports})")]
    NotExported { nv: String, export: String, exports: String },
    #[error("{url} is not a file of {nv}: its manifest does not list {path}")]
    NotInManifest { url: String, nv: String, path: String },
    #[error("{url} does not match the manifest of {nv}: the registry lists {expected}, the file's bytes have sha256-{actual}")]
    Checksum { url: String, nv: String, expected: String, actual: String },
    #[error(transparent)]
    Fetch(JsErrorBox),
    #[error(transparent)]
    Lock(JsErrorBox),
}

impl From<JsrError> for JsErrorBox {
    fn from(e: JsrError) -> JsErrorBox {
        match e {
            JsrError::Fetch(e) | JsrError::Lock(e) => e,
            other => JsErrorBox::generic(other.to_string()),
        }
    }
}

/// Parses a `jsr:` specifier. Its name must be a JSR name, `@scope/name` of lowercase letters,
/// digits and `-`: anything else (`jsr:http:evil.example`) could lead outside the registry.
pub fn parse(specifier: &ModuleSpecifier) -> Result<JsrPackageReqReference, JsrError> {
    let bad = |why: String| JsrError::BadSpecifier(specifier.to_string(), why);
    let reference = JsrPackageReqReference::from_specifier(specifier).map_err(|e| bad(e.to_string()))?;
    if !is_jsr_name(&reference.req().name) {
        return Err(bad(format!("'{}' is not a JSR package name", reference.req().name)));
    }
    Ok(reference)
}

/// Whether `name` is `@scope/name`, each part of lowercase ASCII letters, digits and `-`.
fn is_jsr_name(name: &str) -> bool {
    let part = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    match name.strip_prefix('@').and_then(|rest| rest.split_once('/')) {
        Some((scope, name)) => part(scope) && part(name),
        None => false,
    }
}

/// The version a request gets from a package's versions: for a tag, what the registry tags
/// `latest`; for a range, the highest version in it that is not yanked, else (as in Deno) the
/// highest yanked one.
fn pick(req: &VersionReq, meta: &PackageMeta) -> Option<Version> {
    if let Some(tag) = req.tag() {
        let latest = meta.latest.as_deref().filter(|_| tag == "latest")?;
        return Version::parse_standard(latest).ok();
    }
    let in_range = |yanked: bool| {
        meta.versions
            .iter()
            .filter(move |(_, info)| info.yanked == yanked)
            .filter_map(|(text, _)| Version::parse_standard(text).ok())
            .filter(|version| req.matches(version))
            .max()
    };
    in_range(false).or_else(|| in_range(true))
}

/// The file an export name leads to, as a path in the package (`/mod.ts`).
fn export_path<'a>(meta: &'a VersionMeta, export: &str) -> Option<&'a str> {
    let target = meta.exports.get(export)?;
    Some(target.strip_prefix('.').unwrap_or(target))
}

/// Where a file's URL is in a registry: its package and its path (`/mod.ts`).
fn package_file(registry: &Url, url: &Url) -> Option<(PackageNv, String)> {
    let rest = url.as_str().strip_prefix(registry.as_str())?;
    let mut parts = rest.splitn(4, '/');
    let (scope, name, version, path) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if !scope.starts_with('@') || name.is_empty() || path.is_empty() {
        return None;
    }
    let version = Version::parse_standard(version).ok()?;
    Some((PackageNv { name: format!("{scope}/{name}").as_str().into(), version }, format!("/{path}")))
}

/// A package's versions, for an error message: `1.0.0, 1.2.0 (yanked)`.
fn available(meta: &PackageMeta) -> String {
    let mut versions: Vec<(Version, bool)> = meta
        .versions
        .iter()
        .filter_map(|(text, info)| Some((Version::parse_standard(text).ok()?, info.yanked)))
        .collect();
    versions.sort();
    let listed: Vec<String> =
        versions.iter().map(|(v, yanked)| if *yanked { format!("{v} (yanked)") } else { v.to_string() }).collect();
    if listed.is_empty() {
        "no versions".to_string()
    } else {
        listed.join(", ")
    }
}

fn sorted_list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let mut items: Vec<&str> = items.map(String::as_str).collect();
    items.sort();
    items.join(", ")
}

/// A JSR registry, reached through the remote-module cache, and the versions one worker uses.
#[derive(Clone)]
pub struct Registry {
    url: Url,
    remote: RemoteModules,
    /// The versions of each package the worker uses so far.
    chosen: Arc<tokio::sync::Mutex<HashMap<String, Vec<Version>>>>,
    /// The version metas read so far (each admitted by the locks once): every file of a
    /// package is checked against the same one.
    metas: Arc<std::sync::Mutex<HashMap<PackageNv, Arc<VersionMeta>>>>,
}

/// The highest of the versions already chosen that satisfies `req` (yanked or not, as in Deno).
fn reuse(req: &VersionReq, chosen: &[Version]) -> Option<Version> {
    if req.tag().is_some() {
        return None;
    }
    chosen.iter().filter(|version| req.matches(version)).max().cloned()
}

impl Registry {
    /// The registry `JSR_URL` names, else jsr.io.
    pub fn from_env(remote: RemoteModules) -> anyhow::Result<Registry> {
        let text = std::env::var("JSR_URL").unwrap_or_else(|_| DEFAULT_REGISTRY.to_string());
        let text = if text.ends_with('/') { text } else { format!("{text}/") };
        let url = Url::parse(&text).map_err(|e| anyhow::anyhow!("JSR_URL={text} is not a URL ({e})"))?;
        Ok(Registry { url, remote, chosen: Default::default(), metas: Default::default() })
    }

    /// The registry's URL, ending in `/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Whether `url` is a file of the same package version as `referrer`: a package's own
    /// import of its own file, checked against its manifest like the file a `jsr:` import
    /// leads to. (A file of the registry imported from elsewhere, by its https URL, is a plain
    /// remote module.)
    pub fn same_package(&self, referrer: &Url, url: &Url) -> bool {
        match (package_file(&self.url, referrer), package_file(&self.url, url)) {
            (Some((a, _)), Some((b, _))) => a == b,
            _ => false,
        }
    }

    /// The package file `reference` leads to: in the version the locks pin, else in the
    /// registry's best match.
    pub async fn resolve(&self, reference: &JsrPackageReqReference, locks: &[Arc<Lock>]) -> Result<Url, JsrError> {
        let req = reference.req();
        let version = self.choose(req, locks).await?;
        for lock in locks {
            lock.record_jsr_specifier(req, &version);
        }
        let nv = PackageNv { name: req.name.clone(), version };
        let meta = self.version_meta(&nv, locks).await?;
        let export = reference.export_name();
        let path = export_path(&meta, &export).ok_or_else(|| JsrError::NotExported {
            nv: nv.to_string(),
            export: export.to_string(),
            exports: sorted_list(meta.exports.keys()),
        })?;
        self.join(&format!("{}/{}{path}", nv.name, nv.version))
    }

    /// Checks the bytes of a package file, fetched from `url`, against its version's manifest
    /// (and the version meta against the locks).
    pub async fn verify(&self, url: &Url, source: &str, locks: &[Arc<Lock>]) -> Result<(), JsrError> {
        let Some((nv, path)) = package_file(&self.url, url) else {
            return Err(JsrError::NotInManifest {
                url: url.to_string(),
                nv: "any package".into(),
                path: url.path().into(),
            });
        };
        let meta = self.version_meta(&nv, locks).await?;
        let entry = meta.manifest.get(&path).ok_or_else(|| JsrError::NotInManifest {
            url: url.to_string(),
            nv: nv.to_string(),
            path: path.clone(),
        })?;
        let actual = lock::digest(source);
        if entry.checksum != format!("sha256-{actual}") {
            return Err(JsrError::Checksum {
                url: url.to_string(),
                nv: nv.to_string(),
                expected: entry.checksum.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// The version `req` gets: the locks', else one already chosen, else the registry's best.
    async fn choose(&self, req: &PackageReq, locks: &[Arc<Lock>]) -> Result<Version, JsrError> {
        if let Some(version) = lock::jsr_version(locks, req).map_err(JsrError::Lock)? {
            return Ok(version);
        }
        let mut chosen = self.chosen.lock().await;
        let versions = chosen.entry(req.name.to_string()).or_default();
        if let Some(version) = reuse(&req.version_req, versions) {
            return Ok(version);
        }
        let version = self.best_version(req).await?;
        versions.push(version.clone());
        Ok(version)
    }

    /// The highest version in range, from the cached `meta.json`, or a fresh one if the
    /// cached one has none.
    async fn best_version(&self, req: &PackageReq) -> Result<Version, JsrError> {
        let url = self.join(&format!("{}/meta.json", req.name))?;
        let meta = self.meta(&url, self.remote.clone()).await?;
        if let Some(version) = pick(&req.version_req, &meta) {
            return Ok(version);
        }
        let meta = self.meta(&url, self.remote.reloading()).await?;
        pick(&req.version_req, &meta).ok_or_else(|| match req.version_req.tag() {
            Some(tag) => JsrError::NoTag { name: req.name.to_string(), tag: tag.to_string() },
            None => JsrError::NoVersion {
                name: req.name.to_string(),
                range: req.version_req.version_text().to_string(),
                available: available(&meta),
                registry: self.url.to_string(),
            },
        })
    }

    async fn meta(&self, url: &Url, remote: RemoteModules) -> Result<PackageMeta, JsrError> {
        let fetched = remote.get(url.clone()).await.map_err(JsrError::Fetch)?;
        serde_json::from_str(&fetched.source).map_err(|e| self.bad_meta(url, e))
    }

    /// A version's meta, checked against the locks (which record it when recording) the first
    /// time this worker reads it.
    async fn version_meta(&self, nv: &PackageNv, locks: &[Arc<Lock>]) -> Result<Arc<VersionMeta>, JsrError> {
        if let Some(meta) = self.metas.lock().unwrap().get(nv) {
            return Ok(meta.clone());
        }
        let url = self.join(&format!("{}/{}_meta.json", nv.name, nv.version))?;
        let fetched = self.remote.clone().get(url.clone()).await.map_err(JsrError::Fetch)?;
        let integrity = lock::digest(&fetched.source);
        for lock in locks {
            lock.admit_jsr_package(nv, &integrity).map_err(JsrError::Lock)?;
        }
        let meta: Arc<VersionMeta> =
            Arc::new(serde_json::from_str(&fetched.source).map_err(|e| self.bad_meta(&url, e))?);
        self.metas.lock().unwrap().insert(nv.clone(), meta.clone());
        Ok(meta)
    }

    /// `path` under the registry; never a URL outside it.
    fn join(&self, path: &str) -> Result<Url, JsrError> {
        let url = self.url.join(path).map_err(|e| self.bad_meta(&self.url, e))?;
        if !url.as_str().starts_with(self.url.as_str()) {
            return Err(self.bad_meta(&url, "it is outside the registry"));
        }
        Ok(url)
    }

    fn bad_meta(&self, url: &Url, e: impl std::fmt::Display) -> JsrError {
        JsrError::BadMeta { url: url.to_string(), why: e.to_string(), registry: self.url.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(latest: &str, versions: &[(&str, bool)]) -> PackageMeta {
        PackageMeta {
            latest: Some(latest.to_string()),
            versions: versions.iter().map(|(v, yanked)| (v.to_string(), VersionInfo { yanked: *yanked })).collect(),
        }
    }

    fn pick_for(specifier: &str, meta: &PackageMeta) -> Option<String> {
        let reference = JsrPackageReqReference::from_str(specifier).unwrap();
        pick(&reference.req().version_req, meta).map(|v| v.to_string())
    }

    #[test]
    fn the_highest_version_in_range_that_is_not_yanked_wins() {
        let meta = meta(
            "2.0.0",
            &[("1.0.0", false), ("1.1.0", false), ("1.2.0", true), ("2.0.0", false), ("3.0.0-rc.1", false)],
        );
        assert_eq!(pick_for("jsr:@a/b@^1", &meta).as_deref(), Some("1.1.0"));
        assert_eq!(pick_for("jsr:@a/b@1.0", &meta).as_deref(), Some("1.0.0"));
        assert_eq!(pick_for("jsr:@a/b", &meta).as_deref(), Some("2.0.0"), "no range: the highest release");
        assert_eq!(pick_for("jsr:@a/b@latest", &meta).as_deref(), Some("2.0.0"));
        assert_eq!(pick_for("jsr:@a/b@^1.0", &meta).as_deref(), Some("1.1.0"), "a yanked version is passed over");
        assert_eq!(pick_for("jsr:@a/b@~1.2", &meta).as_deref(), Some("1.2.0"), "unless it is the only one in range");
        assert_eq!(pick_for("jsr:@a/b@^4", &meta), None);
        assert_eq!(pick_for("jsr:@a/b@beta", &meta), None, "only the latest tag exists");
    }

    #[test]
    fn a_version_already_chosen_is_reused_when_it_is_in_range() {
        let chosen: Vec<Version> =
            ["1.0.0", "2.1.0", "1.2.0"].iter().map(|v| Version::parse_standard(v).unwrap()).collect();
        let reuse_for = |specifier: &str| {
            let reference = JsrPackageReqReference::from_str(specifier).unwrap();
            reuse(&reference.req().version_req, &chosen).map(|v| v.to_string())
        };
        assert_eq!(reuse_for("jsr:@a/b@~1.0.0").as_deref(), Some("1.0.0"));
        assert_eq!(reuse_for("jsr:@a/b@^1.0.0").as_deref(), Some("1.2.0"), "the highest, even if it was yanked");
        assert_eq!(reuse_for("jsr:@a/b").as_deref(), Some("2.1.0"));
        assert_eq!(reuse_for("jsr:@a/b@^1.3"), None);
        assert_eq!(reuse_for("jsr:@a/b@latest"), None, "a tag asks the registry");
    }

    #[test]
    fn export_names_lead_to_package_paths() {
        let meta = VersionMeta {
            exports: [(".", "./mod.ts"), ("./loud", "./src/loud.ts")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            manifest: HashMap::new(),
        };
        let export = |specifier: &str| {
            let reference = JsrPackageReqReference::from_str(specifier).unwrap();
            export_path(&meta, &reference.export_name()).map(str::to_string)
        };
        assert_eq!(export("jsr:@a/b@1").as_deref(), Some("/mod.ts"));
        assert_eq!(export("jsr:@a/b@1/loud").as_deref(), Some("/src/loud.ts"));
        assert_eq!(export("jsr:@a/b/src/loud.ts"), None, "only exports can be imported");
    }

    #[test]
    fn package_files_are_recognised_under_the_registry_only() {
        let registry = Url::parse("http://127.0.0.1:4545/jsr/").unwrap();
        let file = |url: &str| package_file(&registry, &Url::parse(url).unwrap()).map(|(nv, p)| (nv.to_string(), p));
        assert_eq!(
            file("http://127.0.0.1:4545/jsr/@a/b/1.2.3/src/x.ts"),
            Some(("@a/b@1.2.3".to_string(), "/src/x.ts".to_string()))
        );
        assert_eq!(file("http://127.0.0.1:4545/jsr/@a/b/meta.json"), None);
        assert_eq!(file("http://127.0.0.1:4545/jsr/a/b/1.2.3/x.ts"), None, "scopes start with @");
        assert_eq!(file("http://127.0.0.1:4545/other/@a/b/1.2.3/x.ts"), None);
        assert_eq!(file("http://127.0.0.1:4545/jsr/@a/b/latest/x.ts"), None);
    }

    #[test]
    fn only_jsr_names_are_accepted() {
        for bad in ["jsr:http:evil.example", "jsr:fixture", "jsr:@Up/per", "jsr:@a/b:c", "jsr:@a/"] {
            let specifier = ModuleSpecifier::parse(bad).unwrap();
            assert!(parse(&specifier).is_err(), "{bad}");
        }
        assert!(parse(&ModuleSpecifier::parse("jsr:@std/log-2@^0.224/mod").unwrap()).is_ok());
    }

    #[test]
    fn bad_specifiers_say_how_to_write_one() {
        let e = parse(&ModuleSpecifier::parse("jsr:@a/b@>=1 <2").unwrap()).err().unwrap();
        assert!(e.to_string().contains("jsr:@scope/name"), "{e}");
    }
}
