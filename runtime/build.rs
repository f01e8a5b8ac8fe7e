//! The library's build script: transpiles every built-in module under `../js` with
//! `../src/transpile.rs` (as the loader transpiles a worker's own TypeScript), so that a worker
//! that imports one runs it at once, and writes the table `src/builtins.rs` serves them from.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[path = "../src/transpile.rs"]
mod transpile;

fn main() {
    // The library's sources are outside this package's directory, so cargo records them by
    // absolute path, and a checkout elsewhere sharing the target directory would look fresh.
    // A change under ../src reruns this script, which rebuilds the library, in this checkout.
    println!("cargo:rerun-if-changed=../src");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    builtins(&out);
}

/// Transpiles every module under `js/` and writes `builtins.rs`, the table `src/builtins.rs`
/// serves them from: `js/<host>/<path>` at `https://<host>/<path>`, and `js/denorun/<name>.ts`
/// at `denorun:<name>`.
fn builtins(out: &Path) {
    println!("cargo:rerun-if-changed=../src/transpile.rs");
    println!("cargo:rerun-if-changed=../js");
    println!("cargo:rerun-if-changed=build.rs");
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR")).join("../js");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let mut table = String::new();
    for path in files {
        let relative = path.strip_prefix(&root).unwrap().to_str().expect("a UTF-8 path").replace('\\', "/");
        let url = match relative.strip_prefix("denorun/") {
            Some(name) => format!("denorun:{}", name.trim_end_matches(".ts")),
            None => format!("https://{relative}"),
        };
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let specifier = deno_ast::ModuleSpecifier::parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let media_type = deno_ast::MediaType::from_path(&path);
        let javascript = transpile::to_javascript(&specifier, source, media_type)
            .unwrap_or_else(|e| panic!("transpiling {}: {e}", path.display()));
        let js_path = out.join(format!("builtin_{}.js", relative.replace(['/', '@', '.'], "_")));
        std::fs::write(&js_path, javascript).expect("writing a built-in module");
        writeln!(
            table,
            "    Builtin {{ url: {url:?}, typescript: include_str!({:?}), javascript: include_str!({:?}) }},",
            path.display().to_string(),
            js_path.display().to_string()
        )
        .unwrap();
    }
    std::fs::write(
        out.join("builtins.rs"),
        format!(
            "/// The built-in modules, sorted by path under `js/`.\npub static BUILTINS: &[Builtin] = &[\n{table}];\n"
        ),
    )
    .expect("writing builtins.rs");
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "ts") {
            files.push(path);
        }
    }
}
