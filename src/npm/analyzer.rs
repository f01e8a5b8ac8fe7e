//! CommonJS export analysis for npm packages: which names `module.exports` has, so that
//! `import { parse } from "some-cjs-package"` finds them. It parses with deno_ast (the
//! transpiler denorun already carries) and asks deno_ast's own CJS analysis; deno_resolver's
//! analyzer of the same kind needs deno_graph, which denorun does not build.

use std::collections::BTreeMap;
use std::sync::Arc;

use deno_ast::{MediaType, ParsedSource};
use deno_error::JsErrorBox;
use deno_resolver::cjs::analyzer::{ModuleExportAnalyzer, ModuleExportsAndReExports, ModuleForExportAnalysis};
use deno_runtime::deno_core::url::Url;

/// Parses a module for export analysis.
pub struct Analyzer;

/// One parsed module (a newtype: the trait and `ParsedSource` are both foreign).
struct Parsed(ParsedSource);

impl ModuleExportAnalyzer for Analyzer {
    fn parse_module(
        &self,
        specifier: Url,
        media_type: MediaType,
        source: Arc<str>,
    ) -> Result<Box<dyn ModuleForExportAnalysis>, JsErrorBox> {
        let parsed = deno_ast::parse_program(deno_ast::ParseParams {
            specifier,
            text: source,
            media_type,
            capture_tokens: true,
            scope_analysis: false,
            maybe_syntax: None,
        })
        .map_err(JsErrorBox::from_err)?;
        Ok(Box::new(Parsed(parsed)))
    }
}

impl ModuleForExportAnalysis for Parsed {
    fn specifier(&self) -> &Url {
        self.0.specifier()
    }

    fn compute_is_script(&self) -> bool {
        self.0.compute_is_script()
    }

    fn analyze_cjs(&self) -> ModuleExportsAndReExports {
        let analysis = self.0.analyze_cjs();
        ModuleExportsAndReExports { exports: analysis.exports, reexports: analysis.reexports, member_reexports: vec![] }
    }

    fn analyze_es_runtime_exports(&self) -> ModuleExportsAndReExports {
        let analysis = self.0.analyze_es_runtime_exports();
        ModuleExportsAndReExports { exports: analysis.exports, reexports: analysis.reexports, member_reexports: vec![] }
    }

    /// No member re-exports are reported (`analyze_cjs` gives none), so this is never asked.
    fn analyze_member_export_props(&self) -> BTreeMap<String, Vec<String>> {
        BTreeMap::new()
    }
}
