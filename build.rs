//! Build script: makes what a worker would otherwise make at each start.
//!
//! - The V8 startup snapshot of deno_runtime's JavaScript and denorun's own extension (its
//!   ops and `src/ops/*.js`, from the library in `runtime/`). Without it every worker would
//!   read ~390 extension sources from cargo's registry at start-up and transpile them: slow,
//!   and the binary would not run anywhere else. With every op in it, a worker does not bind
//!   ~1,600 ops at each start either. The lazily loaded sources the snapshot did not consume
//!   are transpiled here and embedded in the binary as `residual.rs`.
//! - No start-up relocations: the binary is linked at a fixed address; identical functions are
//!   folded into one.
//!
//! (The built-in modules under `js/` are transpiled by the library's own build script.)

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use deno_runtime::deno_core::{wrap_lazy_ext_script, ModuleCodeString, ModuleName};
use deno_runtime::ops::bootstrap::SnapshotOptions;
use deno_runtime::snapshot::{create_runtime_snapshot, LazyExtensionFileKind};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    position_dependent();
    fold_identical_code();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    snapshot(&out);
}

/// Links denorun at a fixed address (`-no-pie`), so that the loader has no relocations to
/// apply at start-up: a position-independent denorun spends about 3 ms of each start writing
/// ~200,000 addresses into its own pages (BENCHMARKS.md). The cost is ASLR for denorun's own
/// code (libraries, stacks, heaps and V8's heap are still placed at random); `DENORUN_PIE=1`
/// at build time keeps a position-independent executable.
fn position_dependent() {
    println!("cargo:rerun-if-env-changed=DENORUN_PIE");
    if std::env::var_os("DENORUN_PIE").is_none_or(|v| v.is_empty() || v == "0") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}

/// Has the linker (LLD, Rust's default on this target) keep one copy of functions whose code is
/// identical, among those whose address nothing compares (`--icf=safe`: the compilers mark the
/// others, V8's included). Generic Rust code instantiated for many types often compiles to the
/// same bytes: this takes 4.7 MB off the binary (127.8 to 123.1 MB) and changes no behaviour.
fn fold_identical_code() {
    println!("cargo:rustc-link-arg-bins=-Wl,--icf=safe");
}

fn snapshot(out: &Path) {
    let extensions = denorun_runtime::snapshot_extensions();
    let output = create_runtime_snapshot(out.join("DENORUN_SNAPSHOT.bin"), SnapshotOptions::default(), extensions);
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
