//! `denorun <WORKER_KEY>` against a real redis-server: the hash, permissions, Deno.args,
//! stdin, exit codes, remote modules and the errors a user sees.

mod common;

use std::collections::HashMap;

use common::*;

/// A worker that talks RESP to its own Redis over `Deno.connect`, so that nothing but the
/// default net permission is involved.
fn resp_worker(port: u16) -> String {
    format!(
        r#"
const key: string = Deno.args[0];
async function command(port: number, ...args: string[]): Promise<string> {{
  const conn = await Deno.connect({{ hostname: "127.0.0.1", port }});
  const enc = new TextEncoder();
  let req = `*${{args.length}}\r\n`;
  for (const a of args) req += `$${{enc.encode(a).length}}\r\n${{a}}\r\n`;
  await conn.write(enc.encode(req));
  const buf = new Uint8Array(65536);
  const n = await conn.read(buf);
  conn.close();
  return new TextDecoder().decode(buf.subarray(0, n ?? 0));
}}
const reply = await command({port}, "HGETALL", key);
console.log("hgetall:", JSON.stringify(reply));
try {{
  await command({other}, "PING");
  console.log("other port: connected");
}} catch (e) {{
  console.log("other port:", e instanceof Deno.errors.NotCapable, (e as Error).message);
}}
try {{
  await Deno.readTextFile("/etc/hostname");
  console.log("read: allowed");
}} catch (e) {{
  console.log("read:", e instanceof Deno.errors.NotCapable, (e as Error).message);
}}
"#,
        other = port + 1
    )
}

#[test]
fn default_permission_is_the_workers_own_redis_only() {
    let dir = temp_dir();
    let key = local_worker(dir.path(), &resp_worker(redis().port), &[]);
    let run = run(denorun(&[&key]), "");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("workerUrl") && run.stdout.contains("workerVersion"), "{run:?}");
    let other = redis().port + 1;
    assert!(
        run.stdout.contains(&format!(
            "other port: true Requires net access to \"127.0.0.1:{other}\", run again with the --allow-net flag"
        )),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("read: true Requires read access to \"/etc/hostname\", run again with the --allow-read flag"),
        "{run:?}"
    );
}

#[test]
fn args_stdin_and_pid() {
    let dir = temp_dir();
    let source = r#"
const buf = new Uint8Array(256);
const n = await Deno.stdin.read(buf);
const line = new TextDecoder().decode(buf.subarray(0, n ?? 0)).trim();
console.log(JSON.stringify({ args: Deno.args, line, pid: Deno.pid }));
"#;
    let key = local_worker(dir.path(), source, &[]);
    let run = run(denorun(&[&key]), "worker-v0 00112233445566778899aabbccddeeff\n");
    assert_eq!(run.code, 0, "{run:?}");
    let out: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(out["args"], serde_json::json!([key]));
    assert_eq!(out["line"], "worker-v0 00112233445566778899aabbccddeeff");
    assert!(out["pid"].as_u64().unwrap() > 1);
}

#[test]
fn exit_codes() {
    let dir = temp_dir();
    let cases = [
        ("Deno.exit(3);", 3),
        ("try { Deno.exit(0); } catch { Deno.exit(1); }", 0),
        ("try { Deno.exit(0); } finally { Deno.exit(1); }", 0),
        ("console.log('done');", 0),
        ("await new Promise((r) => setTimeout(r, 10)); Deno.exit(7);", 7),
    ];
    for (source, expected) in cases {
        let key = local_worker(dir.path(), source, &[]);
        let run = run(denorun(&[&key]), "");
        assert_eq!(run.code, expected, "{source}: {run:?}");
    }
}

#[test]
fn uncaught_error_prints_the_typescript_stack_and_exits_1() {
    let dir = temp_dir();
    let source = "interface Shape { sides: number }\nconst s: Shape = { sides: 3 };\n\nfunction fail(n: number): never {\n  throw new Error(`boom ${n}`);\n}\nfail(s.sides);\n";
    let key = local_worker(dir.path(), source, &[]);
    let thrown = run(denorun(&[&key]), "");
    assert_eq!(thrown.code, 1, "{thrown:?}");
    assert!(thrown.stderr.contains("error: Uncaught") && thrown.stderr.contains("Error: boom 3"), "{thrown:?}");
    // Line 5, column 9 of the TypeScript source, not of the transpiled JavaScript.
    assert!(thrown.stderr.contains(".ts:5:9"), "{thrown:?}");
    // An unhandled rejection also ends with 1.
    let key = local_worker(dir.path(), "await Promise.reject(new TypeError('nope'));", &[]);
    let rejected = run(denorun(&[&key]), "");
    assert_eq!(rejected.code, 1, "{rejected:?}");
    assert!(rejected.stderr.contains("TypeError: nope"), "{rejected:?}");
}

#[test]
fn deno_options_allow_read_of_one_directory() {
    let dir = temp_dir();
    let allowed = dir.path().join("allowed");
    write(&allowed, "a.txt", "inside");
    write(dir.path(), "b.txt", "outside");
    let source = format!(
        r#"
console.log(await Deno.readTextFile({inside:?}));
try {{ await Deno.readTextFile({outside:?}); console.log("outside: read"); }}
catch (e) {{ console.log("outside:", e instanceof Deno.errors.NotCapable); }}
"#,
        inside = allowed.join("a.txt").to_str().unwrap(),
        outside = dir.path().join("b.txt").to_str().unwrap(),
    );
    let options = format!("--allow-read={}", allowed.to_str().unwrap());
    let key = local_worker(dir.path(), &source, &[("denoOptions", &options)]);
    let run = run(denorun(&[&key]), "");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "inside\noutside: true\n", "{run:?}");
}

#[test]
fn bad_deno_options_stop_the_worker_before_it_starts() {
    let dir = temp_dir();
    for (options, named) in [
        ("--allow-everything", "--allow-everything"),
        ("--allow-read=/tmp --inspect=nowhere", "--inspect"),
        ("--v8-flags=--no-such-v8-flag", "--no-such-v8-flag"),
    ] {
        let key = local_worker(dir.path(), "console.log('started');", &[("denoOptions", options)]);
        let run = run(denorun(&[&key]), "");
        assert_eq!(run.code, 1, "{options}: {run:?}");
        assert!(!run.stdout.contains("started"), "{options}: {run:?}");
        assert!(run.stderr.contains(named), "{options}: {run:?}");
    }
}

#[test]
fn remote_worker_with_relative_import_runs_again_from_the_cache() {
    let cache = temp_dir();
    let main = "import { greet } from \"./lib/greet.ts\";\nconsole.log(greet(Deno.args[0]));\n";
    let lib = "export function greet(who: string): string { return `hello ${who}`; }\n";
    let mut routes = HashMap::new();
    routes.insert("/v1/main.ts".to_string(), Response::Body("application/typescript", main.into()));
    routes.insert("/v1/lib/greet.ts".to_string(), Response::Body("application/typescript", lib.into()));
    routes.insert("/latest/main.ts".to_string(), Response::Redirect("/v1/main.ts".into()));
    let mut server = HttpServer::start(routes);

    let key = format!("{}:1:h", unique("remote"));
    let allow = format!("--allow-import=127.0.0.1:{}", server.port);
    redis().hset(
        &key,
        &[("workerUrl", &server.url("/latest/main.ts")), ("workerVersion", "main"), ("denoOptions", &allow)],
    );
    let runs: Vec<Run> = (0..2)
        .map(|i| {
            if i == 1 {
                server.stop();
            }
            let mut cmd = denorun(&[&key]);
            cmd.env("DENORUN_DIR", cache.path());
            run(cmd, "")
        })
        .collect();
    for run in &runs {
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(run.stdout, format!("hello {key}\n"), "{run:?}");
    }
}

#[test]
fn unreachable_remote_module_is_a_clear_error() {
    let cache = temp_dir();
    let key = format!("{}:1:h", unique("remote"));
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/main.ts");
    let allow = format!("--allow-import=127.0.0.1:{port}");
    redis().hset(&key, &[("workerUrl", &url), ("workerVersion", "v1.0.0"), ("denoOptions", &allow)]);
    let mut cmd = denorun(&[&key]);
    cmd.env("DENORUN_DIR", cache.path());
    let run = run(cmd, "");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(&format!("cannot fetch {url}")), "{run:?}");
    assert!(run.stderr.contains("not in the module cache"), "{run:?}");
}

#[test]
fn missing_hash_url_file_or_redis_say_what_to_do() {
    let key = format!("{}:1:h", unique("absent"));
    let run1 = run(denorun(&[&key]), "");
    assert_eq!(run1.code, 1, "{run1:?}");
    assert!(run1.stderr.contains(&format!("worker hash '{key}' does not exist")), "{run1:?}");
    assert!(run1.stderr.contains("redis-cli hset"), "{run1:?}");

    redis().hset(&key, &[("workerVersion", "local")]);
    let run2 = run(denorun(&[&key]), "");
    assert_eq!(run2.code, 1, "{run2:?}");
    assert!(run2.stderr.contains("has no workerUrl"), "{run2:?}");

    redis().hset(&key, &[("workerUrl", "/no/such/worker.ts"), ("workerVersion", "local")]);
    let run3 = run(denorun(&[&key]), "");
    assert_eq!(run3.code, 1, "{run3:?}");
    assert!(run3.stderr.contains("local module '/no/such/worker.ts' not found"), "{run3:?}");

    let down = format!("redis://127.0.0.1:{}", free_port());
    let run4 = run(denorun(&["--redis", &down, &key]), "");
    assert_eq!(run4.code, 1, "{run4:?}");
    assert!(run4.stderr.contains("cannot reach Redis at 127.0.0.1:"), "{run4:?}");
    assert!(run4.stderr.contains("--redis"), "{run4:?}");

    let run5 = run(denorun(&["not-a-hash-key"]), "");
    assert_eq!(run5.code, 1, "{run5:?}");
    assert!(run5.stderr.contains("must name a hash ending in ':h'"), "{run5:?}");
}

#[test]
fn redis_url_with_password_and_db() {
    // A second Redis user with a password, on db 3 of the test server.
    let key = format!("{}:1:h", unique("authdb"));
    let user = unique("user");
    let _: String = redis().cmd(&["ACL", "SETUSER", &user, "on", ">s3cret", "~*", "+@all"]);
    let dir = temp_dir();
    let path = write(dir.path(), "w.ts", "console.log('db3 ok');");
    let mut conn = redis().conn();
    redis::cmd("SELECT").arg(3).query::<()>(&mut conn).unwrap();
    redis::cmd("HSET")
        .arg(&key)
        .arg("workerUrl")
        .arg(path.to_str().unwrap())
        .arg("workerVersion")
        .arg("local")
        .query::<i64>(&mut conn)
        .unwrap();
    let url = format!("redis://{user}:s3cret@127.0.0.1:{}/3", redis().port);
    let run1 = run(denorun(&["--redis", &url, &key]), "");
    assert_eq!(run1.code, 0, "{run1:?}");
    assert_eq!(run1.stdout, "db3 ok\n");
    let wrong = format!("redis://{user}:wrong@127.0.0.1:{}/3", redis().port);
    let run2 = run(denorun(&["--redis", &wrong, &key]), "");
    assert_eq!(run2.code, 1, "{run2:?}");
    assert!(run2.stderr.contains("refused the credentials"), "{run2:?}");
}

#[test]
fn web_workers_are_not_offered_and_fail_cleanly() {
    let dir = temp_dir();
    let key = local_worker(dir.path(), "new Worker(new URL('data:text/javascript,1'), { type: 'module' });", &[]);
    let run = run(denorun(&[&key]), "");
    // Uncaught, it ends the worker like any error: no panic, a clear message.
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("Error: denorun workers cannot start Web Workers"), "{run:?}");
    assert!(!run.stderr.contains("panicked"), "{run:?}");
}
