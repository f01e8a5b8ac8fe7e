//! TypeScript to JavaScript, the one way denorun does it: by the loader for a worker's own
//! modules, and by `build.rs` for the built-in modules under `js/`, which are stored in the
//! binary already transpiled. The JavaScript carries an inline source map with the original
//! source, so stack traces and debuggers show TypeScript lines.
//!
//! `build.rs` includes this file as a module of its own, so it uses deno_ast alone.

use deno_ast::{EmitOptions, MediaType, ModuleSpecifier, ParseParams, SourceMapOption};
use deno_ast::{ImportsNotUsedAsValues, TranspileModuleOptions, TranspileOptions};

/// Why a module could not be transpiled.
#[derive(Debug)]
pub enum Error {
    Parse(deno_ast::ParseDiagnostic),
    Transpile(deno_ast::TranspileError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Parse(e) => e.fmt(f),
            Error::Transpile(e) => e.fmt(f),
        }
    }
}

/// The JavaScript for `source`, a module of `media_type` at `specifier`.
pub fn to_javascript(specifier: &ModuleSpecifier, source: String, media_type: MediaType) -> Result<String, Error> {
    let parsed = deno_ast::parse_module(ParseParams {
        specifier: specifier.clone(),
        text: source.into(),
        media_type,
        capture_tokens: false,
        scope_analysis: false,
        maybe_syntax: None,
    })
    .map_err(Error::Parse)?;
    let emitted = parsed
        .transpile(
            &TranspileOptions {
                // As Deno did in 2021: imports used only as types are dropped, so a 2021 worker's
                // `import { ArrayReply, connect }` links even though ArrayReply is a type.
                imports_not_used_as_values: ImportsNotUsedAsValues::Remove,
                ..Default::default()
            },
            &TranspileModuleOptions::default(),
            &EmitOptions { source_map: SourceMapOption::Inline, inline_sources: true, ..Default::default() },
        )
        .map_err(Error::Transpile)?
        .into_source();
    Ok(emitted.text)
}
