//! The module loader: built-in modules first, then local files and remote URLs, with
//! TypeScript transpiled (inline source maps, so stack traces and debuggers show TS lines).
//! A remote module, static or dynamic `import()`, is checked against the worker's import
//! permission before anything is fetched, as in Deno: a refused import sends nothing.

use deno_ast::{EmitOptions, MediaType, ParseParams, SourceMapOption, TranspileModuleOptions, TranspileOptions};
use deno_error::JsErrorBox;
use deno_runtime::deno_core::{
    resolve_import, ModuleLoadOptions, ModuleLoadReferrer, ModuleLoadResponse, ModuleLoader, ModuleSource,
    ModuleSourceCode, ModuleSpecifier, ModuleType, RequestedModuleType, ResolutionKind,
};

use deno_runtime::deno_permissions::{CheckSpecifierKind, PermissionsContainer};

use crate::builtins;
use crate::remote::RemoteModules;

pub struct Loader {
    remote: RemoteModules,
    permissions: PermissionsContainer,
}

impl Loader {
    pub fn new(remote: RemoteModules, permissions: PermissionsContainer) -> Loader {
        Loader { remote, permissions }
    }
}

impl ModuleLoader for Loader {
    fn resolve(&self, specifier: &str, referrer: &str, _kind: ResolutionKind) -> Result<ModuleSpecifier, JsErrorBox> {
        let url = resolve_import(specifier, referrer).map_err(JsErrorBox::from_err)?;
        Ok(builtins::canonical(&url).unwrap_or(url))
    }

    fn load(
        &self,
        specifier: &ModuleSpecifier,
        _referrer: Option<&ModuleLoadReferrer>,
        options: ModuleLoadOptions,
    ) -> ModuleLoadResponse {
        let json = matches!(options.requested_module_type, RequestedModuleType::Json);
        if let Some(source) = builtins::source(specifier) {
            return ModuleLoadResponse::Sync(emit(
                specifier,
                specifier,
                source.to_string(),
                MediaType::TypeScript,
                json,
            ));
        }
        match specifier.scheme() {
            "file" => ModuleLoadResponse::Sync(load_file(specifier, json)),
            "http" | "https" => {
                let kind =
                    if options.is_dynamic_import { CheckSpecifierKind::Dynamic } else { CheckSpecifierKind::Static };
                if let Err(e) = self.permissions.check_specifier(specifier, kind) {
                    return ModuleLoadResponse::Sync(Err(JsErrorBox::from_err(e)));
                }
                let (remote, specifier) = (self.remote.clone(), specifier.clone());
                ModuleLoadResponse::Async(Box::pin(async move {
                    let module = remote.get(specifier.clone()).await?;
                    let found = ModuleSpecifier::parse(&module.url).map_err(JsErrorBox::from_err)?;
                    let media_type = MediaType::from_specifier_and_content_type(&found, module.content_type.as_deref());
                    emit(&specifier, &found, module.source, media_type, json)
                }))
            }
            // node: and ext: specifiers are served by the runtime itself before they get here.
            other => ModuleLoadResponse::Sync(Err(JsErrorBox::generic(format!(
                "cannot load {specifier}: '{other}:' modules are not supported; use a path, https:// or http://"
            )))),
        }
    }
}

fn load_file(specifier: &ModuleSpecifier, json: bool) -> Result<ModuleSource, JsErrorBox> {
    let path = specifier.to_file_path().map_err(|_| JsErrorBox::generic(format!("{specifier} is not a file path")))?;
    let source = std::fs::read_to_string(&path)
        .map_err(|e| JsErrorBox::generic(format!("cannot read module {}: {e}", path.display())))?;
    emit(specifier, specifier, source, MediaType::from_path(&path), json)
}

/// Makes a module of `source`: JSON as JSON, TypeScript and JSX transpiled, JavaScript as is.
/// `found` is where the module really is (after redirects); `requested` is what was imported.
fn emit(
    requested: &ModuleSpecifier,
    found: &ModuleSpecifier,
    source: String,
    media_type: MediaType,
    json: bool,
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
        | MediaType::Dcts => (ModuleType::JavaScript, transpile(found, source, media_type)?),
        _ => (ModuleType::JavaScript, source),
    };
    let code = ModuleSourceCode::String(code.into());
    Ok(if requested == found {
        ModuleSource::new(module_type, code, found, None)
    } else {
        ModuleSource::new_with_redirect(module_type, code, requested, found, None)
    })
}

fn transpile(specifier: &ModuleSpecifier, source: String, media_type: MediaType) -> Result<String, JsErrorBox> {
    let parsed = deno_ast::parse_module(ParseParams {
        specifier: specifier.clone(),
        text: source.into(),
        media_type,
        capture_tokens: false,
        scope_analysis: false,
        maybe_syntax: None,
    })
    .map_err(JsErrorBox::from_err)?;
    let emitted = parsed
        .transpile(
            &TranspileOptions {
                // As Deno did in 2021: imports used only as types are dropped, so a 2021 worker's
                // `import { ArrayReply, connect }` links even though ArrayReply is a type.
                imports_not_used_as_values: deno_ast::ImportsNotUsedAsValues::Remove,
                ..Default::default()
            },
            &TranspileModuleOptions::default(),
            &EmitOptions { source_map: SourceMapOption::Inline, inline_sources: true, ..Default::default() },
        )
        .map_err(JsErrorBox::from_err)?
        .into_source();
    Ok(emitted.text)
}
