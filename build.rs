//! Build script: makes the V8 startup snapshot of deno_runtime's own JavaScript.
//!
//! Without a snapshot every worker would read ~390 extension sources from cargo's registry
//! at start-up and transpile them: slow, and the binary would not run anywhere else. The
//! snapshot holds the evaluated runtime; the lazily loaded sources the snapshot did not
//! consume are transpiled here and embedded in the binary as `residual.rs`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use deno_runtime::deno_core::{wrap_lazy_ext_script, ModuleCodeString, ModuleName};
use deno_runtime::ops::bootstrap::SnapshotOptions;
use deno_runtime::snapshot::{create_runtime_snapshot, LazyExtensionFileKind};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-no-pie");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let output = create_runtime_snapshot(out.join("DENORUN_SNAPSHOT.bin"), SnapshotOptions::default(), vec![]);
    let consumed: HashSet<&str> = output.consumed_lazy_specifiers.iter().map(String::as_str).collect();

    let (mut js, mut esm) = (String::new(), String::new());
    for file in &output.lazy_extension_files {
        if consumed.contains(file.specifier.as_str()) {
            continue;
        }
        println!("cargo:rerun-if-changed={}", file.path.display());
        let source =
            std::fs::read_to_string(&file.path).unwrap_or_else(|e| panic!("reading {}: {e}", file.path.display()));
        // The runtime does not transpile residual sources, so they are stored as JavaScript.
        let (code, _map) = deno_runtime::transpile::maybe_transpile_source(
            ModuleName::from(file.specifier.clone()),
            ModuleCodeString::from(source),
        )
        .unwrap_or_else(|e| panic!("transpiling {}: {e}", file.specifier));
        let mut code = code.as_str().to_owned();
        if file.kind == LazyExtensionFileKind::Js {
            code = wrap_lazy_ext_script(&code);
        }
        let name: String = file.specifier.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let path = out.join(format!("residual_{name}.js"));
        std::fs::write(&path, code).expect("writing a residual source");
        let table = if file.kind == LazyExtensionFileKind::Js { &mut js } else { &mut esm };
        writeln!(table, "    ({:?}, include_str!({:?})),", file.specifier, path.display().to_string()).unwrap();
    }
    std::fs::write(
        out.join("residual.rs"),
        format!(
            "/// Lazily loaded runtime scripts that are not in the snapshot, sorted by specifier.\n\
             pub static RESIDUAL_LAZY_JS: &[(&str, &str)] = &[\n{js}];\n\
             /// Lazily loaded runtime modules that are not in the snapshot, sorted by specifier.\n\
             pub static RESIDUAL_LAZY_ESM: &[(&str, &str)] = &[\n{esm}];\n"
        ),
    )
    .expect("writing residual.rs");
}
