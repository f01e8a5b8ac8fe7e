//! A local worker's project: the `deno.json` / `package.json` found from its directory up, and
//! the `node_modules` beside them, resolved as `deno run` resolves them with
//! `"nodeModulesDir": "manual"` (Deno's BYONM, "bring your own node_modules").
//!
//! It resolves `npm:` specifiers, bare specifiers (a package in `node_modules`, an import
//! map alias, a `package.json` dependency), subpaths and scoped packages, with Deno's
//! conditions for `exports`/`imports`. It loads files inside `node_modules` with CommonJS
//! translated to ESM (named exports found by [`analyzer`]), and refuses TypeScript there as
//! Deno does. It gives deno_node what `require()` and `createRequire` need
//! ([`Project::node_services`]). All of it is deno_resolver's and node_resolver's, wired as
//! Deno's own runtime wires them: nothing is ever installed or downloaded, and an `npm:`
//! package missing from `node_modules` is an error that says to run `npm install`.

mod analyzer;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use deno_ast::MediaType;
use deno_config::deno_json::NodeModulesDirMode;
use deno_error::JsErrorBox;
use deno_resolver::cjs::analyzer::{DenoCjsCodeAnalyzer, NullNodeAnalysisCache};
use deno_resolver::cjs::{CjsTrackerRc, IsCjsResolutionMode};
use deno_resolver::factory::{
    ConfigDiscoveryOption, ResolverFactory, ResolverFactoryOptions, WorkspaceFactory, WorkspaceFactoryOptions,
};
use deno_resolver::loader::{DenoNpmModuleLoader, LoadedModuleSource, NpmModuleLoader, RequestedModuleType};
use deno_resolver::npm::{DenoInNpmPackageChecker, NpmResolver};
use deno_resolver::{DefaultRawDenoResolverRc, DenoIsBuiltInNodeModuleChecker};
use deno_runtime::deno_core::{FastString, ModuleSpecifier, ModuleType};
use deno_runtime::deno_node::{NodeExtInitServices, NodeRequireLoader, NodeRequireLoaderRc};
use deno_runtime::deno_permissions::{OpenAccessKind, PermissionsContainer};
use node_resolver::analyze::{CjsModuleExportAnalyzer, NodeCodeTranslator, NodeCodeTranslatorMode};
use node_resolver::cache::NodeResolutionThreadLocalCache;
use node_resolver::errors::PackageJsonLoadError;
use node_resolver::{
    InNpmPackageChecker, NodeResolutionKind, NodeResolverRc, PackageJsonResolverRc, PackageJsonThreadLocalCache,
    ResolutionMode,
};
use sys_traits::impls::RealSys;

type Resolver = NodeResolverRc<DenoInNpmPackageChecker, DenoIsBuiltInNodeModuleChecker, NpmResolver<RealSys>, RealSys>;

/// A file of an npm package, as V8 takes it.
pub struct Loaded {
    /// Where the file is (after following `exports` and symlinks).
    pub found: ModuleSpecifier,
    pub module_type: ModuleType,
    pub code: String,
}

/// What resolves and loads a local worker's packages.
pub struct Project {
    resolver: DefaultRawDenoResolverRc<RealSys>,
    in_npm: DenoInNpmPackageChecker,
    cjs_tracker: CjsTrackerRc<DenoInNpmPackageChecker, RealSys>,
    npm_loader: Arc<DenoNpmModuleLoader<RealSys>>,
    node_resolver: Resolver,
    pkg_json_resolver: PackageJsonResolverRc<RealSys>,
    /// The `node_modules` packages come from (it may not exist).
    node_modules: Option<PathBuf>,
    /// What a package's files resolved to: see [`Project::resolve`].
    in_package_resolutions: RefCell<HashMap<(String, String, bool), ModuleSpecifier>>,
    /// Whether a package file is CommonJS, by its URL.
    cjs: RefCell<HashMap<ModuleSpecifier, bool>>,
}

impl Project {
    /// The project of a worker whose main module is a local file: its config found from the
    /// module's directory up (or `config`, a `deno.json` named by the worker), and its
    /// `node_modules`. None for a remote module: its packages would have to be downloaded.
    pub async fn discover(main: &ModuleSpecifier, config: Option<&Path>) -> anyhow::Result<Option<Project>> {
        let Ok(path) = main.to_file_path() else {
            if let Some(config) = config {
                anyhow::bail!(
                    "{} names a deno.json ({}), but only a local worker has a project",
                    main,
                    config.display()
                );
            }
            return Ok(None);
        };
        if let Some(config) = config.filter(|config| !config.is_file()) {
            anyhow::bail!("the worker's deno.json {} does not exist; fix --config or denoConfig", config.display());
        }
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let config_discovery = match config {
            Some(config) => ConfigDiscoveryOption::Path(config.to_path_buf()),
            None => ConfigDiscoveryOption::Discover { start_paths: vec![path.clone()] },
        };
        let options = WorkspaceFactoryOptions {
            config_discovery,
            node_modules_dir: Some(NodeModulesDirMode::Manual),
            no_lock: true,
            ..Default::default()
        };
        let workspace = Arc::new(WorkspaceFactory::new(RealSys, dir, options));
        let node_modules = workspace.node_modules_dir_path()?.map(Path::to_path_buf);
        let factory = ResolverFactory::new(
            workspace,
            ResolverFactoryOptions {
                is_cjs_resolution_mode: IsCjsResolutionMode::ExplicitTypeCommonJs,
                // Each package.json is read and parsed once per worker thread: a package such
                // as date-fns has hundreds of modules under one large package.json.
                package_json_cache: Some(Arc::new(PackageJsonThreadLocalCache)),
                node_resolution_cache: Some(Arc::new(NodeResolutionThreadLocalCache)),
                ..Default::default()
            },
        );
        let resolver = factory.raw_deno_resolver().await?.clone();
        let in_npm = factory.in_npm_package_checker()?.clone();
        let npm_resolver = factory.npm_resolver()?.clone();
        let node_resolver = factory.node_resolver()?.clone();
        let pkg_json_resolver = factory.pkg_json_resolver().clone();
        let cjs_tracker = factory.cjs_tracker()?.clone();
        let code_analyzer = DenoCjsCodeAnalyzer::new(
            Arc::new(NullNodeAnalysisCache),
            cjs_tracker.clone(),
            Arc::new(analyzer::Analyzer),
        );
        let exports = Arc::new(CjsModuleExportAnalyzer::new(
            code_analyzer,
            in_npm.clone(),
            node_resolver.clone(),
            npm_resolver,
            pkg_json_resolver.clone(),
            RealSys,
        ));
        let translator = Arc::new(NodeCodeTranslator::new(exports, NodeCodeTranslatorMode::ModuleLoader));
        let npm_loader = Arc::new(NpmModuleLoader::new(cjs_tracker.clone(), in_npm.clone(), translator, RealSys));
        Ok(Some(Project {
            resolver,
            in_npm,
            cjs_tracker,
            npm_loader,
            node_resolver,
            pkg_json_resolver,
            node_modules,
            in_package_resolutions: Default::default(),
            cjs: Default::default(),
        }))
    }

    /// Whether the worker has a `node_modules` directory (deno_node's bootstrap option).
    pub fn has_node_modules_dir(&self) -> bool {
        self.node_modules.as_deref().is_some_and(Path::is_dir)
    }

    /// Where `specifier`, imported by `referrer` (a local file), leads.
    ///
    /// A package's file is resolved by Node's rules alone (no import map), from its directory
    /// and its module kind; so for the worker's life (as for its package.json cache), what
    /// one file of a directory resolved a specifier to is what every file of that directory of
    /// the same kind gets, without asking the file system again (date-fns has hundreds of
    /// files importing the same few).
    pub fn resolve(&self, specifier: &str, referrer: &ModuleSpecifier) -> Result<ModuleSpecifier, JsErrorBox> {
        let in_package = self.in_package(referrer);
        let require = self.is_cjs(referrer, in_package)?;
        let key = in_package.then(|| {
            let dir = &referrer.as_str()[..referrer.as_str().rfind('/').map_or(0, |slash| slash + 1)];
            (dir.to_string(), specifier.to_string(), require)
        });
        if let Some(url) = key.as_ref().and_then(|key| self.in_package_resolutions.borrow().get(key).cloned()) {
            return Ok(url);
        }
        let mode = if require { ResolutionMode::Require } else { ResolutionMode::Import };
        match self.resolver.resolve(specifier, referrer, mode, NodeResolutionKind::Execution) {
            Ok(resolution) => {
                if let Some(key) = key {
                    self.in_package_resolutions.borrow_mut().insert(key, resolution.url.clone());
                }
                Ok(resolution.url)
            }
            Err(e) => Err(JsErrorBox::generic(match self.missing(specifier) {
                Some(why) => format!("cannot import {specifier}: {why}\n    imported by {referrer}"),
                None => format!("{e}\n    imported by {referrer}"),
            })),
        }
    }

    /// Whether `referrer`'s imports are `require`s: a package's file may be CommonJS (its
    /// package.json says); the worker's own files are ES modules unless named .cjs/.cts,
    /// whatever "type" its package.json gives.
    fn is_cjs(&self, referrer: &ModuleSpecifier, in_package: bool) -> Result<bool, JsErrorBox> {
        let media_type = MediaType::from_specifier(referrer);
        if !in_package {
            return Ok(matches!(media_type, MediaType::Cjs | MediaType::Cts));
        }
        if let Some(cjs) = self.cjs.borrow().get(referrer) {
            return Ok(*cjs);
        }
        let cjs = self.cjs_tracker.is_maybe_cjs(referrer, media_type).map_err(JsErrorBox::from_err)?;
        self.cjs.borrow_mut().insert(referrer.clone(), cjs);
        Ok(cjs)
    }

    /// Why an `npm:` package could not be found, and what to do, from what is installed.
    fn missing(&self, specifier: &str) -> Option<String> {
        let bare = !specifier.contains(':') && !specifier.starts_with(['.', '/', '#']);
        let as_npm = if bare { format!("npm:{specifier}") } else { specifier.to_string() };
        let (name, range) = npm_request(&as_npm)?;
        let range = range.filter(|_| !bare);
        let node_modules = self.node_modules.as_deref()?;
        let project = node_modules.parent().map_or(String::new(), |dir| dir.display().to_string());
        if !node_modules.is_dir() {
            return Some(format!(
                "there is no {}; denorun installs nothing: list {name} in package.json and run `npm install` in {project}",
                node_modules.display()
            ));
        }
        let manifest = std::fs::read_to_string(node_modules.join(name).join("package.json")).ok();
        let installed = manifest
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|json| json.get("version")?.as_str().map(str::to_owned));
        match (installed, range) {
            (Some(version), Some(range)) => Some(format!(
                "{name} {version} is installed in {}, which does not satisfy {range}; run `npm install {name}@{range}` in {project}",
                node_modules.display()
            )),
            (Some(_), None) => None,
            (None, _) => Some(format!(
                "{name} is not installed in {}; list it in package.json and run `npm install` in {project}",
                node_modules.display()
            )),
        }
    }

    /// Whether `specifier` is a file of an npm package.
    pub fn in_package(&self, specifier: &ModuleSpecifier) -> bool {
        self.in_npm.in_npm_package(specifier)
    }

    /// Loads a file of an npm package: JSON as JSON, CommonJS as an ES module.
    pub async fn load(
        &self,
        specifier: &ModuleSpecifier,
        referrer: Option<&ModuleSpecifier>,
        json: bool,
    ) -> Result<Loaded, JsErrorBox> {
        let requested = if json { RequestedModuleType::Json } else { RequestedModuleType::None };
        let loaded =
            self.npm_loader.load(Cow::Borrowed(specifier), referrer, &requested, None).await.map_err(
                |e| match referrer {
                    Some(referrer) => JsErrorBox::generic(format!("{e}\n    imported by {referrer}")),
                    None => JsErrorBox::from_err(e),
                },
            )?;
        let module_type = if loaded.media_type == MediaType::Json { ModuleType::Json } else { ModuleType::JavaScript };
        let code = match loaded.source {
            LoadedModuleSource::ArcStr(text) => text.to_string(),
            LoadedModuleSource::String(text) => text.into_owned(),
            LoadedModuleSource::ArcBytes(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            // Valid UTF-8 (nearly always) is taken as it is, without a lossy copy.
            LoadedModuleSource::Bytes(bytes) => String::from_utf8(bytes.into_owned())
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        };
        Ok(Loaded { found: loaded.specifier.into_owned(), module_type, code })
    }

    /// What deno_node needs for `require()` and `createRequire`.
    /// `origins` are the worker's (`Provenance::origins`): what `require()` runs must come
    /// from them, as what `import` loads must.
    pub fn node_services(
        self: &Rc<Self>,
        origins: Option<Vec<String>>,
    ) -> NodeExtInitServices<DenoInNpmPackageChecker, NpmResolver<RealSys>, RealSys> {
        let require_loader: NodeRequireLoaderRc = Rc::new(RequireLoader { project: self.clone(), origins });
        NodeExtInitServices {
            node_require_loader: require_loader,
            node_resolver: self.node_resolver.clone(),
            pkg_json_resolver: self.pkg_json_resolver.clone(),
            sys: RealSys,
        }
    }
}

/// The package name and version range of an `npm:` specifier (`npm:@scope/name@^1/sub`).
fn npm_request(specifier: &str) -> Option<(&str, Option<&str>)> {
    let rest = specifier.strip_prefix("npm:")?.trim_start_matches('/');
    let name_end = if rest.starts_with('@') {
        let slash = rest.find('/')?;
        slash + 1 + rest[slash + 1..].find(['@', '/']).unwrap_or(rest.len() - slash - 1)
    } else {
        rest.find(['@', '/']).unwrap_or(rest.len())
    };
    let (name, after) = rest.split_at(name_end);
    let range = after.strip_prefix('@').map(|r| r.split('/').next().unwrap_or(r)).filter(|r| !r.is_empty());
    (!name.is_empty()).then_some((name, range))
}

/// `path` without `.` and `..` (each `..` takes away the part before it), as written.
fn normalized(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `require()`'s file access.
struct RequireLoader {
    project: Rc<Project>,
    origins: Option<Vec<String>>,
}

impl NodeRequireLoader for RequireLoader {
    /// As under Deno: a package's own files may be read by `require`; any other file needs
    /// the worker's read permission. "A package's own" is judged on the real path (no `..`,
    /// no symlink), so `node_modules/../../etc/passwd` needs the permission.
    fn ensure_read_permission<'a>(
        &self,
        permissions: &mut PermissionsContainer,
        path: Cow<'a, Path>,
    ) -> Result<Cow<'a, Path>, JsErrorBox> {
        // Paths that do not exist (require() tries candidates) are judged without their `..`.
        let real = std::fs::canonicalize(&path).unwrap_or_else(|_| normalized(&path));
        if real.components().any(|part| part.as_os_str() == "node_modules") {
            return Ok(Cow::Owned(real));
        }
        permissions
            .check_open(path, OpenAccessKind::Read, Some("require()"))
            .map(|checked| checked.into_path())
            .map_err(JsErrorBox::from_err)
    }

    /// Reads a file `require()` runs, if it comes from the worker's origins (its real path).
    fn load_text_file_lossy(&self, path: &Path) -> Result<FastString, JsErrorBox> {
        let real = std::fs::canonicalize(path)
            .map_err(|e| JsErrorBox::generic(format!("cannot read {} for require(): {e}", path.display())))?;
        let url = ModuleSpecifier::from_file_path(&real)
            .map_err(|_| JsErrorBox::generic(format!("cannot make a file URL of {}", real.display())))?;
        crate::loader::check_origin(self.origins.as_ref(), &url)?;
        let media_type = MediaType::from_path(path);
        if media_type.is_emittable() {
            return Err(JsErrorBox::generic(format!(
                "cannot require {}: TypeScript is not loaded by require(); import it instead, or require its JavaScript",
                path.display()
            )));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| JsErrorBox::generic(format!("cannot read {} for require(): {e}", path.display())))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned().into())
    }

    fn is_maybe_cjs(&self, specifier: &ModuleSpecifier) -> Result<bool, PackageJsonLoadError> {
        self.project.cjs_tracker.is_maybe_cjs(specifier, MediaType::from_specifier(specifier))
    }

    fn is_maybe_cjs_from_require(&self, specifier: &ModuleSpecifier) -> Result<bool, PackageJsonLoadError> {
        self.project.cjs_tracker.is_maybe_cjs_from_require(specifier, MediaType::from_specifier(specifier))
    }
}

#[cfg(test)]
mod tests {
    use super::{normalized, npm_request};
    use std::path::Path;

    #[test]
    fn dot_dot_takes_away_what_is_before_it() {
        assert_eq!(normalized(Path::new("/p/node_modules/../../etc/passwd")), Path::new("/etc/passwd"));
        assert_eq!(normalized(Path::new("/p/./node_modules/x/../y")), Path::new("/p/node_modules/y"));
        assert_eq!(normalized(Path::new("/../..")), Path::new("/"));
    }

    #[test]
    fn an_npm_specifier_gives_its_package_and_range() {
        assert_eq!(npm_request("npm:zod"), Some(("zod", None)));
        assert_eq!(npm_request("npm:zod@^3.22"), Some(("zod", Some("^3.22"))));
        assert_eq!(npm_request("npm:date-fns@4/format"), Some(("date-fns", Some("4"))));
        assert_eq!(npm_request("npm:lodash/fp"), Some(("lodash", None)));
        assert_eq!(npm_request("npm:@scope/pkg"), Some(("@scope/pkg", None)));
        assert_eq!(npm_request("npm:@scope/pkg@1.2.3/sub"), Some(("@scope/pkg", Some("1.2.3"))));
        assert_eq!(npm_request("npm:/@scope/pkg@2"), Some(("@scope/pkg", Some("2"))));
        assert_eq!(npm_request("zod"), None);
        assert_eq!(npm_request("npm:"), None);
        assert_eq!(npm_request("npm:@scope"), None);
    }
}
