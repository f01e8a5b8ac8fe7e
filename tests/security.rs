//! Trust boundaries: what a worker hash may grant (the operator's ceiling), remote imports
//! checked before anything is fetched, and the default denials a worker meets.

mod common;

use std::collections::HashMap;

use common::*;

/// The permission matrix: each attempt by a worker with no grants is denied with NotCapable
/// (a denied import rejects with the TypeError Deno gives, naming the permission).
const MATRIX: &str = r#"
const tries: Record<string, () => Promise<unknown> | unknown> = {
  read: () => Deno.readTextFile("/etc/hostname"),
  write: () => Deno.writeTextFile("/tmp/denorun-matrix", "x"),
  net: () => fetch("http://example.com/"),
  connect: () => Deno.connect({ hostname: "127.0.0.1", port: 1 }),
  env: () => Deno.env.get("HOME"),
  sys: () => Deno.hostname(),
  run: () => new Deno.Command("true").output(),
  ffi: () => Deno.dlopen("libc.so.6", {}),
  import: () => import("https://example.com/x.ts"),
};
const out: Record<string, string> = {};
for (const [name, attempt] of Object.entries(tries)) {
  try {
    await attempt();
    out[name] = "allowed";
  } catch (e) {
    out[name] = `${(e as Error).constructor.name}: ${(e as Error).message}`;
  }
}
console.log(JSON.stringify(out));
"#;

#[test]
fn a_worker_with_no_grants_is_denied_each_kind() {
    let dir = temp_dir();
    let key = local_worker(dir.path(), MATRIX, &[]);
    let run = run(denorun(&[&key]), "");
    assert_eq!(run.code, 0, "{run:?}");
    let out: HashMap<String, String> = serde_json::from_str(run.stdout.trim()).unwrap();
    for kind in ["read", "write", "net", "connect", "env", "sys", "run", "ffi"] {
        assert!(out[kind].starts_with("NotCapable: Requires "), "{kind}: {out:?}");
    }
    assert_eq!(
        out["import"],
        "TypeError: Requires import access to \"example.com:443\", run again with the --allow-import flag"
    );
}

#[test]
fn a_refused_import_sends_nothing_and_an_allowed_one_loads() {
    let routes = HashMap::from([(
        "/x.ts?secret=42".to_string(),
        Response::Body("application/typescript", "export const x = 42;\n".into()),
    )]);
    let server = HttpServer::start(routes);
    let dir = temp_dir();
    let source = format!(
        "try {{ const m = await import(\"{}\"); console.log(`loaded ${{m.x}}`); }}\n\
         catch (e) {{ console.log(`${{(e as Error).constructor.name}}: ${{(e as Error).message}}`); }}\n",
        server.url("/x.ts?secret=42")
    );
    let refused = local_worker(dir.path(), &source, &[]);
    let run1 = run(denorun(&[&refused]), "");
    assert_eq!(run1.code, 0, "{run1:?}");
    assert_eq!(
        run1.stdout.trim(),
        format!(
            "TypeError: Requires import access to \"127.0.0.1:{}\", run again with the --allow-import flag",
            server.port
        )
    );
    assert_eq!(server.hits(), 0, "nothing was fetched");
    let allow = format!("--allow-import=127.0.0.1:{}", server.port);
    let allowed = local_worker(dir.path(), &source, &[("denoOptions", &allow)]);
    let cache = temp_dir();
    let mut cmd = denorun(&[&allowed]);
    cmd.env("DENORUN_DIR", cache.path());
    let run2 = run(cmd, "");
    assert_eq!(run2.stdout.trim(), "loaded 42", "{run2:?}");
    assert_eq!(server.hits(), 1);
}

#[test]
fn the_operator_ceiling_bounds_what_a_hash_may_grant() {
    let dir = temp_dir();
    let source = "console.log('ran');\n";
    for (options, flag) in [
        ("-A", "-A (--allow-all)"),
        ("--allow-run", "--allow-run"),
        ("--allow-ffi", "--allow-ffi"),
        ("--allow-write", "--allow-write"),
    ] {
        let key = local_worker(dir.path(), source, &[("denoOptions", options)]);
        let refused = run(denorun(&[&key]), "");
        assert_eq!(refused.code, 1, "{options}: {refused:?}");
        assert_eq!(refused.stdout, "", "nothing ran: {refused:?}");
        assert!(refused.stderr.contains(&format!("asks for {flag} beyond the operator's ceiling")), "{refused:?}");
        // The command line may lift it, as in 2021.
        let lifted = run(denorun(&["--max-permissions=-A", &key]), "");
        assert_eq!((lifted.code, lifted.stdout.as_str()), (0, "ran\n"), "{options}: {lifted:?}");
    }
    // An operator's own ceiling: within it runs, beyond it is refused with both named.
    let key = local_worker(dir.path(), source, &[("denoOptions", "--allow-env=HOME")]);
    let refused = run(denorun(&["--max-permissions", "--allow-env=REDIS_URL", &key]), "");
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("--allow-env=HOME beyond the operator's ceiling (--max-permissions '--allow-env=REDIS_URL')"),
        "{refused:?}"
    );
    let within = run(denorun(&["--max-permissions", "--allow-env=HOME,REDIS_URL", &key]), "");
    assert_eq!((within.code, within.stdout.as_str()), (0, "ran\n"), "{within:?}");
}

#[test]
fn worker_sha256_pins_the_main_module() {
    let dir = temp_dir();
    let source = "console.log('pinned');\n";
    let key = local_worker(dir.path(), source, &[]);
    let path: String = redis().cmd(&["HGET", &key, "workerUrl"]);
    let sum = std::process::Command::new("sha256sum").arg(&path).output().unwrap();
    let digest = String::from_utf8(sum.stdout).unwrap().split_whitespace().next().unwrap().to_string();
    let _: i64 = redis().cmd(&["HSET", &key, "workerSha256", &digest]);
    let ok = run(denorun(&[&key]), "");
    assert_eq!((ok.code, ok.stdout.as_str()), (0, "pinned\n"), "{ok:?}");

    std::fs::write(&path, "console.log('changed');\n").unwrap();
    let changed = run(denorun(&[&key]), "");
    assert_eq!(changed.code, 1, "{changed:?}");
    assert_eq!(changed.stdout, "", "nothing ran: {changed:?}");
    assert!(changed.stderr.contains("does not match workerSha256"), "{changed:?}");
    assert!(changed.stderr.contains(&format!("the hash pins {digest}")), "{changed:?}");

    let _: i64 = redis().cmd(&["HSET", &key, "workerSha256", "not-a-digest"]);
    let bad = run(denorun(&[&key]), "");
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("workerSha256 'not-a-digest' is not a SHA-256 in hex"), "{bad:?}");
}

/// A lockfile (the hash's `--lock=` or the operator's `--lock`) pins every remote module,
/// static or dynamic; `denorun lock` writes it.
#[test]
fn a_lockfile_pins_every_remote_module() {
    let ts = |body: &str| Response::Body("application/typescript", body.to_string());
    let server = HttpServer::start(HashMap::from([
        ("/dep.ts".to_string(), ts("export const dep = 'v1';\n")),
        ("/mod.ts".to_string(), ts("import { dep } from './dep.ts';\nexport const x = `mod ${dep}`;\n")),
        ("/other.ts".to_string(), ts("export const other = 1;\n")),
    ]));
    let (dir, cache) = (temp_dir(), temp_dir());
    let lock = dir.path().join("deno.lock");
    let source = format!(
        "import {{ x }} from '{}';\nconsole.log(x);\n\
         try {{ await import('{}'); console.log('other loaded'); }}\n\
         catch (e) {{ console.log(`other refused: ${{(e as Error).message}}`); }}\n",
        server.url("/mod.ts"),
        server.url("/other.ts"),
    );
    let options = format!("--allow-import=127.0.0.1:{} --reload --lock={}", server.port, lock.display());
    let key = local_worker(dir.path(), &source, &[("denoOptions", &options)]);
    let denorun = |args: &[&str]| {
        let mut cmd = denorun(args);
        cmd.env("DENORUN_DIR", cache.path());
        cmd
    };

    let unlocked = run(denorun(&[&key]), "");
    assert_eq!((unlocked.code, unlocked.stdout.as_str()), (1, ""), "{unlocked:?}");
    assert!(unlocked.stderr.contains("cannot read the lockfile") && unlocked.stderr.contains("denorun lock"));

    // `denorun lock` records the static graph (not the dynamic import), without running it.
    let locked = run(denorun(&["lock", &key]), "");
    assert_eq!(locked.code, 0, "{locked:?}");
    assert_eq!(locked.stdout, format!("{key}: 2 remote modules locked in {}\n", lock.display()));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&lock).unwrap()).unwrap();
    assert_eq!(json["version"], "5");
    let digest = |text: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
    assert_eq!(json["remote"][server.url("/dep.ts")], digest("export const dep = 'v1';\n").as_str());

    let ok = run(denorun(&[&key]), "");
    assert_eq!(ok.code, 0, "{ok:?}");
    let refused_other =
        format!("other refused: {} is not in the lockfile {} (it is frozen)", server.url("/other.ts"), lock.display());
    assert!(ok.stdout.starts_with(&format!("mod v1\n{refused_other}")), "{ok:?}");

    // A module that changed at its origin is refused with both digests; nothing runs.
    server.set("/dep.ts", ts("export const dep = 'v2';\n"));
    let changed = run(denorun(&[&key]), "");
    assert_eq!((changed.code, changed.stdout.as_str()), (1, ""), "{changed:?}");
    assert!(changed.stderr.contains(&format!("{} does not match the lockfile", server.url("/dep.ts"))), "{changed:?}");
    assert!(changed.stderr.contains(&digest("export const dep = 'v1';\n")), "{changed:?}");
    assert!(changed.stderr.contains(&digest("export const dep = 'v2';\n")), "{changed:?}");

    // The operator's lock applies to a hash that names none.
    let options = format!("--allow-import=127.0.0.1:{} --reload", server.port);
    let free = local_worker(dir.path(), &source, &[("denoOptions", &options)]);
    let lock_arg = lock.display().to_string();
    let operator = run(denorun(&["--lock", &lock_arg, &free]), "");
    assert_eq!((operator.code, operator.stdout.as_str()), (1, ""), "{operator:?}");
    assert!(operator.stderr.contains("does not match the lockfile"), "{operator:?}");
    server.set("/dep.ts", ts("export const dep = 'v1';\n"));
    let operator = run(denorun(&["--lock", &lock_arg, &free]), "");
    assert_eq!(operator.code, 0, "{operator:?}");
    assert!(operator.stdout.starts_with(&format!("mod v1\n{refused_other}")), "{operator:?}");
}

/// What the audit test's worker tries, one attempt per line (3 to 7).
const TRIES: &str = r#"import { connect } from "https://deno.land/x/redis/mod.ts";
type Port = number;
try { await fetch("http://example.com/"); } catch { /* denied */ }
try { Deno.env.get("HOME"); } catch { /* denied */ }
try { await import("https://example.com/x.ts"); } catch { /* denied */ }
try { await connect({ hostname: "127.0.0.1", port: 1 as Port }); } catch { /* denied */ }
try { Deno.env.get("HOME"); } catch { /* denied again: Deno remembers, no second line */ }
console.log("done");
"#;

/// `--audit FILE` (or `DENORUN_AUDIT=1`, to stderr) writes one JSON line per denied check,
/// naming the worker, the kind, the value and the line of its TypeScript that asked.
#[test]
fn denied_checks_are_audited_with_the_worker_and_the_line() {
    let dir = temp_dir();
    let key = local_worker(dir.path(), TRIES, &[]);
    let module: String = redis().cmd(&["HGET", &key, "workerUrl"]);
    let module = format!("file://{module}");
    let audit = dir.path().join("audit.jsonl");
    let ran = run(denorun(&["--audit", audit.to_str().unwrap(), &key]), "");
    assert_eq!((ran.code, ran.stdout.as_str()), (0, "done\n"), "{ran:?}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let seen: Vec<(String, String, Option<i64>)> = lines
        .iter()
        .map(|l| {
            assert_eq!(
                (&l["event"], &l["worker"], &l["module"]),
                (&"denied".into(), &key.clone().into(), &module.clone().into())
            );
            (l["kind"].as_str().unwrap().into(), l["value"].as_str().unwrap().into(), l["line"].as_i64())
        })
        .collect();
    let expected = [
        ("net", "example.com:80", Some(3)),
        ("env", "HOME", Some(4)),
        ("import", "example.com:443", None), // a dynamic import names its module, not its line
        ("net", "127.0.0.1:1", Some(6)),
    ];
    assert_eq!(seen, expected.map(|(k, v, l)| (k.to_string(), v.to_string(), l)), "{lines:#?}");

    // To stderr with DENORUN_AUDIT=1; a granted check writes nothing.
    let granted = local_worker(dir.path(), TRIES, &[("denoOptions", "--allow-env=HOME")]);
    let mut cmd = denorun(&[&granted]);
    cmd.env("DENORUN_AUDIT", "1");
    let ran = run(cmd, "");
    assert_eq!(ran.code, 0, "{ran:?}");
    let kinds: Vec<String> = ran
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|l| l["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["net", "import", "net"], "{ran:?}");
    // Without the flag, nothing is written.
    let quiet = run(denorun(&[&key]), "");
    assert_eq!((quiet.code, quiet.stderr.as_str()), (0, ""), "{quiet:?}");
}

#[test]
fn code_comes_only_from_the_allowed_origins() {
    let dir = temp_dir();
    let key = local_worker(dir.path(), "console.log('ran');\n", &[]);
    // The default: local files under the current directory (the repository here) and https.
    let mut default = denorun(&[&key]);
    default.env_remove("DENORUN_ALLOW_MODULE_FROM");
    let refused = run(default, "");
    assert_eq!(refused.code, 1, "{refused:?}");
    assert_eq!(refused.stdout, "", "nothing ran: {refused:?}");
    assert!(refused.stderr.contains("comes from outside the origins workers may load code from"), "{refused:?}");
    // The operator names the directory: it runs.
    let prefix = format!("file://{}/", dir.path().canonicalize().unwrap().display());
    let mut named = denorun(&["--allow-module-from", &prefix, &key]);
    named.env_remove("DENORUN_ALLOW_MODULE_FROM");
    let ran = run(named, "");
    assert_eq!((ran.code, ran.stdout.as_str()), (0, "ran\n"), "{ran:?}");

    // A remote module from an origin outside the list is refused before it is fetched.
    let routes = HashMap::from([(
        "/w.ts".to_string(),
        Response::Body("application/typescript", "console.log('remote');\n".into()),
    )]);
    let server = HttpServer::start(routes);
    let remote = format!("{}:1:h", unique("origin"));
    let allow = format!("--allow-import=127.0.0.1:{}", server.port);
    redis().hset(&remote, &[("workerUrl", &server.url("/w.ts")), ("workerVersion", "main"), ("denoOptions", &allow)]);
    let cache = temp_dir();
    let mut cmd = denorun(&["--allow-module-from", "https://", &remote]);
    cmd.env_remove("DENORUN_ALLOW_MODULE_FROM").env("DENORUN_DIR", cache.path());
    let refused = run(cmd, "");
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("comes from outside the origins workers may load code from (https://)"),
        "{refused:?}"
    );
    assert_eq!(server.hits(), 0, "nothing was fetched");
}

/// A worker that tries what its type's ACL user may and may not do, through a plain
/// `connect()` to its own Redis without a password, as the original demo did.
const ROGUE: &str = r#"
import { connect } from "https://deno.land/x/redis/mod.ts";
const redis = await connect({ hostname: "127.0.0.1", port: PORT });
const attempt = async (f: () => Promise<unknown>) => {
  try { return String(await f()); } catch (e) { return (e as Error).message.split(" ")[0]; }
};
const key = Deno.args[0];
const out = {
  whoami: await attempt(() => redis.aclWhoami()),
  own: await attempt(() => redis.hset(key, "note", "mine")),
  other: await attempt(() => redis.hset("other-type:1:h", "denoOptions", "-A")),
  config: await attempt(() => redis.configGet("*")),
  keys: await attempt(() => redis.keys("*")),
  flush: await attempt(() => redis.flushall()),
};
console.log(`ROGUE ${JSON.stringify(out)}`);
await redis.hdel(key, "pid");
Deno.exit(0);
"#;

/// A worker type running `module`, with id 1 queued, and its ACL user (`denorun acl`).
fn acl_type(url: &str, worker_type: &str, module: &std::path::Path) {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{worker_type}:h"))
        .arg(&["workerUrl", module.to_str().unwrap(), "workerVersion", "local"])
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("LPUSH").arg(format!("{worker_type}:start:q")).arg("1").query(&mut c).unwrap();
    let mut acl = std::process::Command::new(DENORUN);
    acl.args(["acl", worker_type]).env("REDIS_URL", url);
    assert_eq!(run(acl, &format!("worker-v0 {SECRET}\n")).code, 0);
}

#[test]
fn a_types_acl_user_keeps_its_workers_to_their_own_keys() {
    let db = 13;
    let url = redis().db_url(db);
    // The demo type, its ACL user, and a supervisor: the demo worker still serves.
    common::demo::setup(&url, &common::demo::demo_worker(), &["1"], 0);
    let mut acl = std::process::Command::new(DENORUN);
    acl.args(["acl", "demo-worker"]).env("REDIS_URL", &url);
    let made = run(acl, &format!("worker-v0 {SECRET}\n"));
    assert_eq!(made.code, 0, "{made:?}");
    assert!(made.stdout.contains("ACL user denorun-demo-worker"), "{made:?}");
    let supervisor = common::demo::Supervisor::start(&url, &[]);
    assert_eq!(common::demo::request(&url, "acl-1")["code"], 200);
    let log = supervisor.stderr();
    assert!(log.contains("workers connect to Redis as the ACL user denorun-demo-worker"), "{log}");
    supervisor.signal(libc::SIGTERM);
    let drained = supervisor.finish();
    assert_eq!(drained.code, 0, "{drained:?}");
    assert!(!drained.stderr.contains(SECRET) && !drained.stdout.contains(SECRET), "{drained:?}");

    // A rogue worker of another type, under its own ACL user.
    let dir = temp_dir();
    let rogue_type = unique("rogue");
    let path = write(dir.path(), "rogue.ts", &ROGUE.replace("PORT", &redis().port.to_string()));
    let mut c = redis().db(db);
    acl_type(&url, &rogue_type, &path);
    let supervisor = common::demo::Supervisor::start_type(&url, &rogue_type, &[]);
    let out = wait_for("the rogue reports", std::time::Duration::from_secs(30), || {
        let text = std::fs::read_to_string(supervisor.stdout_path()).unwrap();
        // Each line of a supervised worker comes after its name: `<type>:1 | ROGUE {...}`.
        text.lines().find_map(|l| l.split_once(" | ROGUE ").map(|(_, json)| json.to_string()))
    });
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Its own hash is writable; the rest, ACL itself included, is not: it is not the default user.
    assert_eq!(out["own"], "1", "{out}");
    for denied in ["whoami", "other", "config", "keys", "flush"] {
        assert_eq!(out[denied], "-NOPERM", "{denied}: {out}");
    }
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.finish().code, 0);

    // Unsupervised, `denorun <key>` reads the secret line to unseal the same user, then hands
    // the line on to the worker.
    let rogue_key = format!("{rogue_type}:1:h");
    let _: () = redis::cmd("HSET")
        .arg(&rogue_key)
        .arg(&["workerUrl", path.to_str().unwrap(), "workerVersion", "local"])
        .query(&mut c)
        .unwrap();
    let alone = |stdin: &str| {
        let mut cmd = denorun(&[&rogue_key]);
        cmd.env("REDIS_URL", &url);
        run(cmd, stdin)
    };
    let ran = alone(&format!("worker-v0 {SECRET}\n"));
    assert_eq!(ran.code, 0, "{ran:?}");
    let out = ran.stdout.lines().find_map(|l| l.strip_prefix("ROGUE ")).expect("the rogue reports");
    let out: serde_json::Value = serde_json::from_str(out).unwrap();
    // Its own hash is writable (HSET gives 0: the supervised run made the field).
    assert_eq!(out["own"], "0", "{out}");
    for denied in ["whoami", "other", "config", "keys", "flush"] {
        assert_eq!(out[denied], "-NOPERM", "{denied}: {out}");
    }
    let no_secret = alone("");
    assert_eq!((no_secret.code, no_secret.stdout.as_str()), (1, ""), "{no_secret:?}");
    assert!(no_secret.stderr.contains("no secret line on stdin"), "{no_secret:?}");

    // A handler worker serves under its type's user too (its loop, and ctx.redis).
    let handler_type = unique("aclhandler");
    let source = "export default { async request(req: any, ctx: any) {\n\
                  await ctx.redis.hset(ctx.key, \"last\", req.id);\n\
                  return { code: 200, who: ctx.key };\n} };\n";
    let path = write(dir.path(), "handler.ts", source);
    acl_type(&url, &handler_type, &path);
    let supervisor = common::demo::Supervisor::start_type(&url, &handler_type, &[]);
    let worker_key = format!("{handler_type}:1:h");
    wait_until("the handler claims its hash", || {
        redis::cmd("HEXISTS").arg(&worker_key).arg("pid").query::<bool>(&mut c).unwrap()
    });
    let _: String =
        redis::cmd("XADD").arg(format!("{handler_type}:req:x")).arg("*").arg(&["ref", "acl-h"]).query(&mut c).unwrap();
    let reply: Option<(String, String)> = redis::cmd("BRPOP").arg("res:acl-h").arg(10).query(&mut c).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply.expect("a reply").1).unwrap();
    assert_eq!(reply, serde_json::json!({"code": 200, "who": worker_key}));
    let last: Option<String> = redis::cmd("HGET").arg(&worker_key).arg("last").query(&mut c).unwrap();
    assert!(last.is_some(), "ctx.redis wrote its own hash");
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.finish().code, 0);
}

#[test]
fn replica_acks_are_checked_under_the_types_acl_user() {
    // A master with one replica; a handler type with `replicaAcks 1` under its ACL user.
    let (master_port, replica_port) = (free_port(), free_port());
    let _master = Killed::new(spawn_redis_server(master_port, &[]));
    let url = format!("redis://127.0.0.1:{master_port}");
    let mut c = wait_for("the master answers", std::time::Duration::from_secs(10), || {
        redis::Client::open(url.as_str()).ok()?.get_connection().ok()
    });
    let replica_of = master_port.to_string();
    let _replica = Killed::new(spawn_redis_server(replica_port, &["--replicaof", "127.0.0.1", &replica_of]));
    wait_until("the replica is connected", || {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
        info.contains("connected_slaves:1") && info.contains("state=online")
    });
    let dir = temp_dir();
    let handler_type = unique("aclwait");
    let path = write(dir.path(), "handler.ts", "export default { request() { return { code: 200 }; } };\n");
    let _: () = redis::cmd("HSET").arg(format!("{handler_type}:h")).arg(&["replicaAcks", "1"]).query(&mut c).unwrap();
    acl_type(&url, &handler_type, &path);
    let supervisor = common::demo::Supervisor::start_type(&url, &handler_type, &[]);
    for n in 0..5 {
        let reference = format!("{handler_type}-{n}");
        let _: String = redis::cmd("XADD")
            .arg(format!("{handler_type}:req:x"))
            .arg("*")
            .arg(&["ref", reference.as_str()])
            .query(&mut c)
            .unwrap();
        let reply: Option<(String, String)> =
            redis::cmd("BRPOP").arg(format!("res:{reference}")).arg(10).query(&mut c).unwrap();
        assert!(reply.expect("a reply").1.contains("200"));
    }
    supervisor.signal(libc::SIGTERM);
    let run = supervisor.finish();
    assert_eq!(run.code, 0, "{run:?}");
    // WAIT ran under the type's user and the replica acknowledged every reply.
    assert!(!run.stderr.contains("WAIT failed") && !run.stderr.contains("replicaAcks asks"), "{}", run.stderr);
    assert!(run.stderr.contains("as the ACL user"), "{}", run.stderr);
}
