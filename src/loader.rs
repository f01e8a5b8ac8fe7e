//! The module loader: built-in modules first, then local files and remote URLs, with
//! TypeScript transpiled (inline source maps, so stack traces and debuggers show TS lines).
//! A remote module, static or dynamic `import()`, is checked against the worker's import
//! permission before anything is fetched, as in Deno: a refused import sends nothing.
//! What may be loaded at all is the worker's [`Provenance`]: the origins code may come from,
//! the main module's pinned digest, and the lockfiles remote modules must match.
//! A local worker's imports are resolved through its [`Project`] (import maps, `npm:` and
//! bare specifiers from its `node_modules`), and files of npm packages are loaded by it, under
//! the same origin rule as the worker's own files.

use deno_ast::MediaType;
use deno_error::JsErrorBox;
use deno_runtime::deno_core::{
    resolve_import, FastString, ModuleLoadOptions, ModuleLoadReferrer, ModuleLoadResponse, ModuleLoader, ModuleSource,
    ModuleSourceCode, ModuleSpecifier, ModuleType, RequestedModuleType, ResolutionKind,
};

use deno_runtime::deno_permissions::{CheckSpecifierKind, PermissionsContainer};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use crate::audit;
use crate::builtins;
use crate::code_cache::CodeCache;
use crate::jsr::{self, Registry};
use crate::lock::{self, Lock};
use crate::npm::Project;
use crate::remote::RemoteModules;
use crate::transpile;
use crate::watch::ModuleFiles;

/// Where a worker's code may come from, and which bytes it must have.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// URL prefixes modules may come from; `None`: anywhere (`denorun run`).
    pub origins: Option<Vec<String>>,
    /// The main module and the SHA-256 (hex) its bytes must have (`workerSha256`).
    pub pin: Option<(ModuleSpecifier, String)>,
    /// Lockfiles every remote module must match (the operator's and the hash's).
    pub locks: Vec<Arc<Lock>>,
}

pub struct Loader {
    remote: RemoteModules,
    /// The JSR registry `jsr:` imports are resolved through.
    jsr: Registry,
    /// Files of JSR packages imported by files of the same package (checked against its manifest).
    package_files: RefCell<HashSet<ModuleSpecifier>>,
    permissions: PermissionsContainer,
    provenance: Arc<Provenance>,
    /// Transpiled JavaScript and V8's code cache of the modules it loads, unless `--no-code-cache`.
    code_cache: Option<CodeCache>,
    /// For the audit log: the module each pending dynamic `import()` came from (Deno gives
    /// the loader a referrer for static imports only).
    dynamic_referrers: RefCell<HashMap<ModuleSpecifier, ModuleSpecifier>>,
    /// A local worker's project (`npm`); none for a remote one.
    project: Option<Rc<Project>>,
    /// Referrers as parsed: deno_core names a referrer by a string, once per import it makes.
    referrers: RefCell<HashMap<String, Option<ModuleSpecifier>>>,
    /// Under `--watch`: where the local files it reads are noted.
    watched: Option<ModuleFiles>,
}

impl Loader {
    pub fn new(
        remote: RemoteModules,
        permissions: PermissionsContainer,
        provenance: Provenance,
        code_cache: Option<CodeCache>,
        project: Option<Rc<Project>>,
        watched: Option<ModuleFiles>,
    ) -> anyhow::Result<Loader> {
        Ok(Loader {
            jsr: Registry::from_env(remote.clone())?,
            package_files: Default::default(),
            remote,
            permissions,
            provenance: Arc::new(provenance),
            code_cache,
            dynamic_referrers: Default::default(),
            project,
            referrers: Default::default(),
            watched,
        })
    }

    /// Whether `specifier` is a file of an npm package (and not the pinned main module).
    fn in_package(&self, specifier: &ModuleSpecifier) -> bool {
        let pinned = self.provenance.pin.as_ref().is_some_and(|(main, _)| main == specifier);
        !pinned && self.project.as_ref().is_some_and(|project| project.in_package(specifier))
    }

    /// The project that resolves `specifier` for `referrer`: a local module's imports, but
    /// not the built-in `jsr:` and `denorun:` modules.
    fn project_for<'a>(
        &'a self,
        specifier: &str,
        referrer: Option<&'a ModuleSpecifier>,
    ) -> Option<(&'a Project, &'a ModuleSpecifier)> {
        let project = self.project.as_deref()?;
        let referrer = referrer.filter(|r| r.scheme() == "file")?;
        let builtin_scheme = specifier.starts_with("jsr:") || specifier.starts_with("denorun:");
        (!builtin_scheme).then_some((project, referrer))
    }

    /// `referrer` parsed, once per referrer; none if it is not a URL (the main module's ".").
    fn referrer_url(&self, referrer: &str) -> Option<ModuleSpecifier> {
        if let Some(parsed) = self.referrers.borrow().get(referrer) {
            return parsed.clone();
        }
        let parsed = ModuleSpecifier::parse(referrer).ok();
        self.referrers.borrow_mut().insert(referrer.to_string(), parsed.clone());
        parsed
    }

    fn fetcher(&self) -> Fetcher {
        Fetcher {
            remote: self.remote.clone(),
            jsr: self.jsr.clone(),
            provenance: self.provenance.clone(),
            cache: self.code_cache.clone(),
        }
    }

    /// A remote import about to be checked: the kind of check, with the audit log told where
    /// the import was asked for.
    fn remote_import(
        &self,
        specifier: &ModuleSpecifier,
        referrer: Option<&ModuleLoadReferrer>,
        dynamic: bool,
    ) -> CheckSpecifierKind {
        if audit::enabled() {
            audit::at(self.importer(specifier, referrer));
        }
        if dynamic {
            CheckSpecifierKind::Dynamic
        } else {
            CheckSpecifierKind::Static
        }
    }

    /// Where an import was asked for, for the audit log.
    fn importer(&self, specifier: &ModuleSpecifier, referrer: Option<&ModuleLoadReferrer>) -> Option<audit::Location> {
        let dynamic = self.dynamic_referrers.borrow_mut().remove(specifier);
        match referrer {
            Some(r) => Some(audit::Location {
                module: r.specifier.to_string(),
                line: Some(r.line_number),
                column: Some(r.column_number),
            }),
            None => dynamic.map(|module| audit::Location { module: module.to_string(), line: None, column: None }),
        }
    }
}

/// Refuses a module from outside the allowed origins (`--allow-module-from`).
pub(crate) fn check_origin(origins: Option<&Vec<String>>, specifier: &ModuleSpecifier) -> Result<(), JsErrorBox> {
    match origins {
        Some(origins) if !origins.iter().any(|prefix| specifier.as_str().starts_with(prefix.as_str())) => {
            Err(JsErrorBox::generic(format!(
                "{specifier} comes from outside the origins workers may load code from ({}); if it is \
                 trusted, start denorun with --allow-module-from <prefix>",
                origins.join(", ")
            )))
        }
        _ => Ok(()),
    }
}

/// Refuses a pinned module whose bytes have another SHA-256, naming both digests.
fn check_pin(
    pin: Option<&(ModuleSpecifier, String)>,
    specifier: &ModuleSpecifier,
    source: &str,
) -> Result<(), JsErrorBox> {
    let Some((pinned, expected)) = pin.filter(|(pinned, _)| pinned == specifier) else { return Ok(()) };
    let actual = lock::digest(source);
    if &actual != expected {
        return Err(JsErrorBox::generic(format!(
            "{pinned} does not match workerSha256: the hash pins {expected}, the module's bytes have {actual}; \
             if the change is intended, set workerSha256 to the new digest"
        )));
    }
    Ok(())
}

impl ModuleLoader for Loader {
    fn resolve(&self, specifier: &str, referrer: &str, kind: ResolutionKind) -> Result<ModuleSpecifier, JsErrorBox> {
        let referrer_url = self.referrer_url(referrer);
        // A path relative to a local file is a local file: no built-in module, no URL parsing.
        let relative = ["./", "../", "/"].iter().any(|prefix| specifier.starts_with(prefix));
        let local = relative && referrer_url.as_ref().is_some_and(|r| r.scheme() == "file");
        // Built-in modules first: no import map redirects them.
        let plain = || resolve_import(specifier, referrer);
        let builtin = if local { None } else { plain().ok().as_ref().and_then(builtins::canonical) };
        let url = match (builtin, self.project_for(specifier, referrer_url.as_ref())) {
            (Some(builtin), _) => builtin,
            // An import map may lead to a built-in module too (`"@std/assert": "jsr:@std/assert@1"`).
            (None, Some((project, referrer))) => {
                let url = project.resolve(specifier, referrer)?;
                builtins::canonical(&url).unwrap_or(url)
            }
            (None, None) => plain().map_err(JsErrorBox::from_err)?,
        };
        // Only remote imports concern what follows.
        if let Some(referrer) = referrer_url.as_ref().filter(|_| url.scheme() == "http" || url.scheme() == "https") {
            if self.jsr.same_package(referrer, &url) {
                self.package_files.borrow_mut().insert(url.clone());
            }
        }
        if audit::enabled() && matches!(kind, ResolutionKind::DynamicImport) {
            if let Some(referrer) = referrer_url {
                self.dynamic_referrers.borrow_mut().insert(url.clone(), referrer);
            }
        }
        Ok(url)
    }

    fn load(
        &self,
        specifier: &ModuleSpecifier,
        referrer: Option<&ModuleLoadReferrer>,
        options: ModuleLoadOptions,
    ) -> ModuleLoadResponse {
        let json = matches!(options.requested_module_type, RequestedModuleType::Json);
        let cache = self.code_cache.as_ref();
        if let Some(builtin) = builtins::find(specifier) {
            let cached = cache.map(|cache| cache.lookup(specifier, builtin.javascript));
            let code = ModuleSourceCode::String(FastString::from_static(builtin.javascript));
            return ModuleLoadResponse::Sync(Ok(ModuleSource::new(ModuleType::JavaScript, code, specifier, cached)));
        }
        let provenance = &self.provenance;
        // A `jsr:` specifier is not a place: the package file it leads to is checked instead.
        if specifier.scheme() != "jsr" {
            if let Err(e) = check_origin(provenance.origins.as_ref(), specifier) {
                return ModuleLoadResponse::Sync(Err(e));
            }
        }
        match specifier.scheme() {
            // A pinned main module is read and checked as a file, wherever it is.
            "file" if self.in_package(specifier) => {
                let project = self.project.clone().expect("checked above");
                let (specifier, referrer) = (specifier.clone(), referrer.map(|r| r.specifier.clone()));
                let cache = cache.cloned();
                ModuleLoadResponse::Async(Box::pin(async move {
                    let loaded = project.load(&specifier, referrer.as_ref(), json).await?;
                    Ok(module(&specifier, &loaded.found, loaded.module_type, loaded.code, cache.as_ref()))
                }))
            }
            "file" => {
                if let Some(watched) = &self.watched {
                    watched.record(specifier);
                }
                ModuleLoadResponse::Sync(load_file(specifier, json, provenance.pin.as_ref(), cache))
            }
            "http" | "https" => {
                let kind = self.remote_import(specifier, referrer, options.is_dynamic_import);
                if let Err(e) = self.permissions.check_specifier(specifier, kind) {
                    return ModuleLoadResponse::Sync(Err(JsErrorBox::from_err(e)));
                }
                let in_package = self.package_files.borrow().contains(specifier);
                let fetch = self.fetcher().fetch(specifier.clone(), specifier.clone(), json, in_package);
                let imported_by = imported_by(referrer);
                ModuleLoadResponse::Async(Box::pin(async move { fetch.await.map_err(imported_by) }))
            }
            "jsr" => {
                let imported_by = imported_by(referrer);
                let reference = match jsr::parse(specifier) {
                    Ok(reference) => reference,
                    Err(e) => return ModuleLoadResponse::Sync(Err(imported_by(e.into()))),
                };
                // Asking the registry is an import from it: refused, nothing is sent.
                let kind = self.remote_import(specifier, referrer, options.is_dynamic_import);
                if let Err(e) = self.permissions.check_specifier(self.jsr.url(), kind) {
                    let e = JsErrorBox::generic(format!("cannot import {specifier} from {}: {e}", self.jsr.url()));
                    return ModuleLoadResponse::Sync(Err(imported_by(e)));
                }
                let (registry, locks, specifier) = (self.jsr.clone(), provenance.locks.clone(), specifier.clone());
                let (loader, permissions) = (self.fetcher(), self.permissions.clone());
                ModuleLoadResponse::Async(Box::pin(async move {
                    let url = registry.resolve(&reference, &locks).await.map_err(|e| imported_by(e.into()))?;
                    // The file is checked as any remote module is, before it is fetched.
                    check_origin(loader.provenance.origins.as_ref(), &url).map_err(&imported_by)?;
                    permissions.check_specifier(&url, kind).map_err(|e| imported_by(JsErrorBox::from_err(e)))?;
                    loader.fetch(specifier, url, json, true).await.map_err(imported_by)
                }))
            }
            "npm" => ModuleLoadResponse::Sync(Err(JsErrorBox::generic(format!(
                "cannot load {specifier}: npm packages come from a local worker's node_modules (run `npm install` \
                 in its directory); a worker loaded from a URL cannot import them"
            )))),
            // node: and ext: specifiers are served by the runtime itself before they get here.
            other => ModuleLoadResponse::Sync(Err(JsErrorBox::generic(format!(
                "cannot load {specifier}: '{other}:' modules are not supported; use a path, https:// or http://"
            )))),
        }
    }

    fn code_cache_ready(
        &self,
        specifier: ModuleSpecifier,
        hash: u64,
        code_cache: &[u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        if let Some(cache) = &self.code_cache {
            cache.store(&specifier, hash, code_cache);
        }
        Box::pin(std::future::ready(()))
    }

    fn purge_and_prevent_code_cache(&self, specifier: &str) {
        if let Some(cache) = &self.code_cache {
            cache.purge(specifier);
        }
    }

    /// The line of a local or built-in module's own source (before transpiling) that an
    /// error report shows under its message, as `deno run` and `deno test` do.
    fn get_source_mapped_source_line(&self, file_name: &str, line_number: usize) -> Option<String> {
        let specifier = ModuleSpecifier::parse(file_name).ok()?;
        let source = match builtins::source(&specifier) {
            Some(source) => source.to_string(),
            None => std::fs::read_to_string(specifier.to_file_path().ok()?).ok()?,
        };
        source.split('\n').nth(line_number).map(|line| line.trim_end_matches('\r').to_string())
    }
}

/// Adds the module that imported a module to the error that loading it ended in.
fn imported_by(referrer: Option<&ModuleLoadReferrer>) -> impl Fn(JsErrorBox) -> JsErrorBox {
    let importer = referrer.map(|r| r.specifier.clone());
    move |e: JsErrorBox| match &importer {
        Some(importer) => JsErrorBox::generic(format!("{e}\n    imported by {importer}")),
        None => e,
    }
}

/// What fetching a remote module needs, apart from the loader (which a future cannot borrow).
struct Fetcher {
    remote: RemoteModules,
    jsr: Registry,
    provenance: Arc<Provenance>,
    cache: Option<CodeCache>,
}

impl Fetcher {
    /// Fetches `url` (from the cache or the network) as the module `requested`, and admits it:
    /// the pin, the origins (redirects included), and for a file of a JSR package (`in_package`:
    /// a `jsr:` import, or a package's import of its own file) its version's manifest, for any
    /// other module the lockfiles.
    async fn fetch(
        self,
        requested: ModuleSpecifier,
        url: ModuleSpecifier,
        json: bool,
        in_package: bool,
    ) -> Result<ModuleSource, JsErrorBox> {
        let provenance = &self.provenance;
        let module = self.remote.get(url.clone()).await?;
        check_pin(provenance.pin.as_ref(), &requested, &module.source)?;
        let found = ModuleSpecifier::parse(&module.url).map_err(JsErrorBox::from_err)?;
        // A redirect may not lead outside the allowed origins either.
        check_origin(provenance.origins.as_ref(), &found)?;
        if in_package {
            // The bytes are judged by the file asked for, wherever a redirect found them.
            self.jsr.verify(&url, &module.source, &provenance.locks).await?;
        } else {
            for lock in &provenance.locks {
                lock.admit(&url, &found, &module.source)?;
            }
        }
        let media_type = MediaType::from_specifier_and_content_type(&found, module.content_type.as_deref());
        emit(&requested, &found, module.source, media_type, json, self.cache.as_ref())
    }
}

fn load_file(
    specifier: &ModuleSpecifier,
    json: bool,
    pin: Option<&(ModuleSpecifier, String)>,
    cache: Option<&CodeCache>,
) -> Result<ModuleSource, JsErrorBox> {
    let path = specifier.to_file_path().map_err(|_| JsErrorBox::generic(format!("{specifier} is not a file path")))?;
    let source = std::fs::read_to_string(&path)
        .map_err(|e| JsErrorBox::generic(format!("cannot read module {}: {e}", path.display())))?;
    check_pin(pin, specifier, &source)?;
    emit(specifier, specifier, source, MediaType::from_path(&path), json, cache)
}

/// Makes a module of `source`: JSON as JSON, TypeScript and JSX transpiled, JavaScript as is,
/// with its code cache. `found` is where the module really is (after redirects); `requested`
/// is what was imported.
fn emit(
    requested: &ModuleSpecifier,
    found: &ModuleSpecifier,
    source: String,
    media_type: MediaType,
    json: bool,
    cache: Option<&CodeCache>,
) -> Result<ModuleSource, JsErrorBox> {
    let (module_type, code) = match media_type {
        _ if json => (ModuleType::Json, source),
        MediaType::Json => (ModuleType::Json, source),
        MediaType::TypeScript
        | MediaType::Mts
        | MediaType::Cts
        | MediaType::Tsx
        | MediaType::Jsx
        | MediaType::Dts
        | MediaType::Dmts
        | MediaType::Dcts => {
            let transpile = |source| transpile(found, source, media_type);
            let javascript = match cache {
                Some(cache) => cache.javascript(found, source, transpile)?,
                None => transpile(source)?,
            };
            (ModuleType::JavaScript, javascript)
        }
        _ => (ModuleType::JavaScript, source),
    };
    Ok(module(requested, found, module_type, code, cache))
}

/// A module V8 compiles with its code cache (JavaScript only), under the name it was imported
/// by and the one it was found at.
fn module(
    requested: &ModuleSpecifier,
    found: &ModuleSpecifier,
    module_type: ModuleType,
    code: String,
    cache: Option<&CodeCache>,
) -> ModuleSource {
    let cached = cache.filter(|_| module_type == ModuleType::JavaScript).map(|cache| cache.lookup(found, &code));
    let code = ModuleSourceCode::String(code.into());
    if requested == found {
        ModuleSource::new(module_type, code, found, cached)
    } else {
        ModuleSource::new_with_redirect(module_type, code, requested, found, cached)
    }
}

fn transpile(specifier: &ModuleSpecifier, source: String, media_type: MediaType) -> Result<String, JsErrorBox> {
    transpile::to_javascript(specifier, source, media_type).map_err(|e| match e {
        transpile::Error::Parse(e) => JsErrorBox::from_err(e),
        transpile::Error::Transpile(e) => JsErrorBox::from_err(e),
    })
}
