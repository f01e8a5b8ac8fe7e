//! The V8 inspector from `denoOptions`: a Chrome DevTools Protocol client over a WebSocket
//! against a running worker, as DevTools or VS Code would attach.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::cdp::{http_json, targets, Cdp};
use common::*;
use serde_json::{json, Value};

fn start(key: &str) -> Child {
    let mut cmd = denorun(&[key]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

#[test]
fn inspect_serves_the_target_list_and_evaluates_in_the_worker() {
    let port = free_port();
    let dir = temp_dir();
    let source = "globalThis.answer = 42;\nawait new Promise((resolve) => setTimeout(resolve, 60_000));\n";
    let options = format!("--inspect=127.0.0.1:{port}");
    let key = local_worker(dir.path(), source, &[("denoOptions", &options)]);
    let mut worker = start(&key);

    let version = http_json(port, "/json/version");
    assert!(version["V8-Version"].is_string(), "{version}");
    let (mut cdp, target) = Cdp::connect(port);
    assert!(target["title"].as_str().unwrap().contains(&key), "{target}");
    assert!(target["url"].as_str().unwrap().starts_with("file://"), "{target}");
    assert_eq!(http_json(port, "/json")[0]["id"], target["id"]);
    // The target is listed before the module's first statement has run: wait for it.
    let expected = format!("{key} 42");
    wait_for("the module has run", Duration::from_secs(20), || {
        let result = cdp.call("Runtime.evaluate", json!({"expression": "`${Deno.args[0]} ${globalThis.answer}`"}));
        (result["result"]["value"] == expected.as_str()).then_some(())
    });
    // The worker's console reaches DevTools.
    cdp.call("Runtime.enable", json!({}));
    cdp.call("Runtime.evaluate", json!({"expression": "console.log('to devtools')"}));
    let logged = cdp.event("Runtime.consoleAPICalled");
    assert_eq!(logged["args"][0]["value"], "to devtools", "{logged}");

    worker.kill().unwrap();
    let run = finish(worker);
    assert!(run.stderr.contains(&format!("Debugger listening on ws://127.0.0.1:{port}/")), "{run:?}");
    assert!(run.stderr.contains("Visit chrome://inspect to connect to the debugger."), "{run:?}");
}

/// Maps between the TypeScript source and the JavaScript V8 runs, through the inline source
/// map, as DevTools and VS Code do.
struct SourceMap(sourcemap::SourceMap);

impl SourceMap {
    fn of_script(cdp: &mut Cdp, script_id: &Value) -> SourceMap {
        let source = cdp.call("Debugger.getScriptSource", json!({"scriptId": script_id}));
        let source = source["scriptSource"].as_str().unwrap();
        let data = source.rsplit("sourceMappingURL=data:application/json;base64,").next().unwrap().trim();
        use base64::Engine;
        let json = base64::engine::general_purpose::STANDARD.decode(data).unwrap();
        SourceMap(sourcemap::SourceMap::from_slice(&json).unwrap())
    }

    /// The TypeScript line (0-based) of a JavaScript position.
    fn ts_line(&self, location: &Value) -> u32 {
        let (line, column) = (location["lineNumber"].as_u64().unwrap(), location["columnNumber"].as_u64().unwrap());
        self.0.lookup_token(line as u32, column as u32).unwrap().get_src_line()
    }

    /// The first JavaScript line (0-based) generated from a TypeScript line.
    fn js_line(&self, ts_line: u32) -> u32 {
        self.0.tokens().filter(|t| t.get_src_line() == ts_line).map(|t| t.get_dst_line()).min().unwrap()
    }
}

#[test]
fn inspect_brk_pauses_on_the_first_statement_and_breakpoints_hit_typescript_lines() {
    let port = free_port();
    let dir = temp_dir();
    // Types before the statements shift the JavaScript lines; the source map shifts them back.
    let source = "\
interface Totals {
  sum: number;
}
const totals: Totals = { sum: 0 };
for (let i = 0; i < 3; i++) {
  totals.sum += i;
}
console.log(`sum ${totals.sum}`);
";
    let options = format!("--inspect-brk=127.0.0.1:{port}");
    let key = local_worker(dir.path(), source, &[("denoOptions", &options)]);
    let mut worker = start(&key);

    let (mut cdp, target) = Cdp::connect(port);
    cdp.call("Runtime.enable", json!({}));
    cdp.call("Debugger.enable", json!({}));
    cdp.call("Runtime.runIfWaitingForDebugger", json!({}));
    let paused = cdp.event("Debugger.paused");
    let frame = &paused["callFrames"][0];
    let map = SourceMap::of_script(&mut cdp, &frame["location"]["scriptId"]);
    assert_eq!(map.ts_line(&frame["location"]), 3, "first statement is TS line 4: {paused}");

    let js_line = map.js_line(7);
    let url = target["url"].as_str().unwrap();
    cdp.call("Debugger.setBreakpointByUrl", json!({"url": url, "lineNumber": js_line}));
    cdp.call("Debugger.resume", json!({}));
    let paused = cdp.event("Debugger.paused");
    assert_eq!(map.ts_line(&paused["callFrames"][0]["location"]), 7, "breakpoint on TS line 8: {paused}");
    let sum = cdp.call(
        "Debugger.evaluateOnCallFrame",
        json!({"callFrameId": paused["callFrames"][0]["callFrameId"], "expression": "totals.sum"}),
    );
    assert_eq!(sum["result"]["value"], 3);
    cdp.call("Debugger.resume", json!({}));
    drop(cdp); // the worker stays while a debugger is attached

    wait_until("the worker exits after the debugger detached", || worker.try_wait().unwrap().is_some());
    let run = finish(worker);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "sum 3\n");
}

#[test]
fn inspect_wait_runs_nothing_until_a_debugger_connects() {
    let port = free_port();
    let dir = temp_dir();
    let marker = unique("inspect-wait");
    let source = format!(
        "import {{ connect }} from \"https://deno.land/x/redis/mod.ts\";\n\
         const redis = await connect({{ hostname: \"127.0.0.1\", port: {} }});\n\
         await redis.set(\"{marker}\", \"ran\");\n\
         Deno.exit(0);\n",
        redis().port
    );
    let options = format!("--inspect-wait=127.0.0.1:{port}");
    let key = local_worker(dir.path(), &source, &[("denoOptions", &options)]);
    let worker = start(&key);
    targets(port);
    std::thread::sleep(Duration::from_millis(500));
    let before: Option<String> = redis().cmd(&["GET", &marker]);
    assert_eq!(before, None, "the worker ran before a debugger connected");

    // What DevTools and VS Code send on attaching.
    let (mut cdp, _) = Cdp::connect(port);
    cdp.call("Runtime.enable", json!({}));
    cdp.call("Runtime.runIfWaitingForDebugger", json!({}));
    wait_until("the worker runs after a debugger connected", || {
        redis().cmd::<Option<String>>(&["GET", &marker]).is_some()
    });
    drop(cdp);
    let run = finish(worker);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn unsafe_or_busy_inspector_addresses_are_refused() {
    let dir = temp_dir();
    let port = free_port();
    let options = format!("--inspect=0.0.0.0:{port}");
    let key = local_worker(dir.path(), "console.log('started');", &[("denoOptions", &options)]);
    let refused = run(denorun(&[&key]), "");
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("not a loopback address"), "{refused:?}");
    assert!(refused.stderr.contains("--allow-remote-inspect"), "{refused:?}");
    assert!(!refused.stdout.contains("started"));

    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let options = format!("--inspect=127.0.0.1:{}", busy.local_addr().unwrap().port());
    let key = local_worker(dir.path(), "console.log('started');", &[("denoOptions", &options)]);
    let mut cmd = denorun(&[&key]);
    cmd.stdin(Stdio::null());
    let in_use = run(cmd, "");
    assert_eq!(in_use.code, 1, "{in_use:?}");
    assert!(in_use.stderr.contains("is the port in use?"), "{in_use:?}");
    assert!(!in_use.stdout.contains("started"));
}

#[test]
fn two_workers_of_one_supervisor_each_get_their_own_inspector() {
    let dir = temp_dir();
    let script = write(dir.path(), "sleep.ts", "await new Promise((resolve) => setTimeout(resolve, 60_000));\n");
    let worker_type = unique("inspected");
    let c = redis();
    c.hset(&format!("{worker_type}:h"), &[("workerUrl", script.to_str().unwrap()), ("workerVersion", "local")]);
    let ports = [free_port(), free_port()];
    for (id, port) in ["a", "b"].iter().zip(ports) {
        c.hset(&format!("{worker_type}:{id}:h"), &[("denoOptions", &format!("--inspect=127.0.0.1:{port}"))]);
        let _: i64 = c.cmd(&["LPUSH", &format!("{worker_type}:start:q"), id]);
    }
    let mut cmd = denorun(&["supervise", &worker_type]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut supervisor = cmd.spawn().unwrap();
    supervisor.stdin.take().unwrap().write_all(b"worker-v0 00\n").unwrap();
    for (id, port) in ["a", "b"].iter().zip(ports) {
        let listed = targets(port);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert!(listed[0]["title"].as_str().unwrap().contains(&format!("{worker_type}:{id}:h")), "{listed:?}");
    }
    supervisor.kill().unwrap();
    supervisor.wait().unwrap();
}
