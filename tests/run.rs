//! `denorun run [FLAGS] <SCRIPT> [ARGS]...`, and the built-in modules that reach denorun's ops.

mod common;

use common::*;

fn run_script(flags: &[&str], source: &str, args: &[&str]) -> Run {
    let dir = temp_dir();
    let path = write(dir.path(), "script.ts", source);
    let mut argv = vec!["run"];
    argv.extend_from_slice(flags);
    argv.push(path.to_str().unwrap());
    argv.extend_from_slice(args);
    run(denorun(&argv), "")
}

#[test]
fn run_passes_arguments_and_denies_by_default() {
    let source = r#"
console.log(JSON.stringify(Deno.args));
try { await Deno.connect({ hostname: "127.0.0.1", port: 1 }); } catch (e) { console.log(e.constructor.name); }
try { Deno.env.get("HOME"); } catch (e) { console.log(e.constructor.name); }
"#;
    let run1 = run_script(&[], source, &["--allow-net", "x y"]);
    assert_eq!(run1.code, 0, "{run1:?}");
    assert_eq!(run1.stdout, "[\"--allow-net\",\"x y\"]\nNotCapable\nNotCapable\n", "{run1:?}");
    let run2 = run_script(&["--allow-env=HOME"], "console.log(typeof Deno.env.get('HOME'));", &[]);
    assert_eq!(run2.stdout, "string\n", "{run2:?}");
}

#[test]
fn denorun_alone_says_how_to_get_started() {
    // A usage error still (exit 2): a service started without its worker key fails.
    let alone = run(denorun(&[]), "");
    assert_eq!(alone.code, 2, "{alone:?}");
    for line in ["Getting started", "denorun new greeter", "demo/demo.sh", "denorun console", "denorun --help"] {
        assert!(alone.stderr.contains(line), "{line}: {alone:?}");
    }
    // A missing worker key after flags is still an error that says what is missing.
    let flags_only = run(denorun(&["--redis", "redis://127.0.0.1:1"]), "");
    assert_eq!(flags_only.code, 2, "{flags_only:?}");
    assert!(flags_only.stderr.contains("<WORKER_KEY>"), "{flags_only:?}");
}

#[test]
fn run_reports_a_missing_script_and_bad_flags() {
    let run1 = run(denorun(&["run", "/no/such/script.ts"]), "");
    assert_eq!(run1.code, 1, "{run1:?}");
    assert!(run1.stderr.contains("script '/no/such/script.ts' not found"), "{run1:?}");
    let run2 = run(denorun(&["run", "--allow-nothing", "x.ts"]), "");
    assert_eq!(run2.code, 1, "{run2:?}");
    assert!(run2.stderr.contains("unknown Deno flag '--allow-nothing'"), "{run2:?}");
    let run3 = run(denorun(&["run", "-A"]), "");
    assert_eq!(run3.code, 1, "{run3:?}");
    assert!(run3.stderr.contains("no script given"), "{run3:?}");
}

#[test]
fn seed_makes_math_random_repeatable() {
    let source = "console.log(Math.random());";
    let a = run_script(&["--seed=7"], source, &[]);
    let b = run_script(&["--seed=7"], source, &[]);
    let c = run_script(&["--seed=8"], source, &[]);
    assert_eq!(a.code, 0, "{a:?}");
    assert_eq!(a.stdout, b.stdout);
    assert_ne!(a.stdout, c.stdout);
}

/// The built-in std hex module is served for any std version and runs on a Rust op.
#[test]
fn builtin_hex_module_reaches_its_op() {
    let source = r#"
import { decode, encode } from "https://deno.land/std@0.109.0/encoding/hex.ts";
import * as hex from "https://deno.land/std/encoding/hex.ts";
const te = new TextEncoder(), td = new TextDecoder();
console.log(Array.from(decode(te.encode("00ff10Ab"))).join(","));
console.log(td.decode(encode(new Uint8Array([0, 255, 16, 171]))));
console.log(hex.decode === decode);
for (const bad of ["0g", "abc", "ab\u00e9"]) {
  try { decode(te.encode(bad)); } catch (e) { console.log(e.constructor.name, e.message); }
}
try { decode(te.encode("ab"+"z")); } catch (e) { console.log(e.constructor.name, e.message); }
"#;
    let run = run_script(&[], source, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "0,255,16,171",
            "00ff10ab",
            "true",
            "TypeError Invalid byte 'g'",
            "RangeError Odd length hex string",
            "TypeError Invalid byte '\u{c3}'",
            "TypeError Invalid byte 'z'",
        ],
        "{run:?}"
    );
}

/// V8's code cache: the first run keeps one for each module it compiles (the script, its local
/// import and the built-in module) and the JavaScript of the two TypeScript files, later runs
/// use them, a damaged V8 cache is replaced rather than trusted, and `--no-code-cache` keeps
/// none.
#[test]
fn modules_are_compiled_once_and_kept_in_the_code_cache() {
    let dir = temp_dir();
    write(dir.path(), "lib.ts", "export function twice(n: number): number { return 2 * n; }\n");
    let script = write(
        dir.path(),
        "main.ts",
        "import { twice } from \"./lib.ts\";\nimport { encode } from \"https://deno.land/std/encoding/hex.ts\";\n\
         console.log(twice(21), new TextDecoder().decode(encode(new Uint8Array([1, 255]))));\n",
    );
    let (cache, none) = (temp_dir(), temp_dir());
    let go = |denorun_dir: &std::path::Path, flags: &[&str]| {
        let mut argv = vec!["run"];
        argv.extend_from_slice(flags);
        argv.push(script.to_str().unwrap());
        let mut cmd = denorun(&argv);
        cmd.env("DENORUN_DIR", denorun_dir);
        let out = run(cmd, "");
        assert_eq!((out.code, out.stdout.as_str()), (0, "42 01ff\n"), "{out:?}");
    };
    let files = |dir: &std::path::Path| -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir.join("code_cache"))
            .map(|entries| entries.map(|e| e.unwrap().path()).map(|p| (p.clone(), std::fs::read(p).unwrap())).collect())
            .unwrap_or_default();
        // The V8 caches; the transpiled JavaScript is in `<name>.js` beside them.
        let javascript = files.iter().filter(|(p, _)| p.extension().is_some_and(|e| e == "js")).count();
        assert_eq!(javascript, 2, "main.ts and lib.ts transpiled and kept");
        files.retain(|(p, _)| p.extension().is_none());
        files.sort();
        files
    };
    go(cache.path(), &[]);
    let first = files(cache.path());
    assert_eq!(first.len(), 3, "one cache per module: {:?}", first.iter().map(|f| &f.0).collect::<Vec<_>>());
    go(cache.path(), &[]);
    assert_eq!(files(cache.path()), first, "a cache that was used is not written again");
    for (path, _) in &first {
        std::fs::write(path, b"not a code cache").unwrap();
    }
    go(cache.path(), &[]);
    let again = files(cache.path());
    assert_eq!(again.len(), first.len());
    for ((path, made), (_, before)) in again.iter().zip(&first) {
        // The same module's code (the hash in the first 8 bytes), and V8's bytes after it.
        assert_eq!(made[..8], before[..8], "{path:?}");
        assert!(made.len() > 8 && made != b"not a code cache", "{path:?} was not made again");
    }
    go(none.path(), &["--no-code-cache"]);
    assert!(!none.path().join("code_cache").exists());
}
