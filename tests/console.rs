//! `denorun console` against a real redis-server and real handler workers: over HTTP as a
//! browser speaks it (the token and its cookie, a dead letter requeued from the page and then
//! answered, cross-origin and read-only changes refused), and in headless Chromium (the
//! overview and its rates under load, a worker's page, a dead letter requeued, a ref found,
//! another site's form refused, read-only without buttons).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::browser::Browser;
use common::*;
use redis::Commands;

const TOKEN: &str = "console-test-token-0123456789";

/// The cookie the console on `port` sets.
fn cookie(port: u16) -> String {
    format!("denorun_console_{port}={TOKEN}")
}

/// What an HTTP exchange gave: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on loopback, `Connection: close`.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let Some((name, value)) = line.trim_end().split_once(':') else { break };
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut raw = Vec::new();
    reader.read_to_end(&mut raw).unwrap();
    Answer { status, headers, body: String::from_utf8_lossy(&raw).into_owned() }
}

/// Starts `denorun console <types> --listen 127.0.0.1:<port> <extra>` and waits until it
/// answers.
fn console(types: &[&str], extra: &[&str]) -> (Child, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["console", "--listen", &listen];
    args.extend_from_slice(extra);
    args.extend_from_slice(types);
    let mut cmd = denorun(&args);
    cmd.env("DENORUN_CONSOLE_TOKEN", TOKEN).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    assert_eq!(first.trim(), format!("denorun console: http://127.0.0.1:{port}/?token={TOKEN}"));
    (child, port)
}

const GREETER: &str = r#"
export default {
  request(req: any) {
    return { code: 200, greeting: `hello ${req.data?.name}` };
  },
};
"#;

/// A handler worker type with one worker hash; returns the type.
fn greeter(dir: &std::path::Path) -> String {
    let worker_type = unique("console-greeter");
    let path = write(dir, "greeter.ts", GREETER);
    // trimAcked 0: the finder's text search reads the request streams, answered requests too.
    let fields = [("workerUrl", path.to_str().unwrap()), ("workerVersion", "local"), ("trimAcked", "0")];
    redis().hset(&format!("{worker_type}:h"), &fields);
    redis().hset(&format!("{worker_type}:1:h"), &[("consumerId", "1")]);
    worker_type
}

#[test]
fn the_token_becomes_a_cookie_and_nothing_is_shown_without_it() {
    let dir = temp_dir();
    let worker_type = greeter(dir.path());
    let (mut child, port) = console(&[&worker_type], &[]);
    assert_eq!(http(port, "GET", "/", &[], "").status, 401);
    assert_eq!(http(port, "GET", "/?token=wrong-token-0123456789012", &[], "").status, 401);
    let exchanged = http(port, "GET", &format!("/dead/{worker_type}?token={TOKEN}"), &[], "");
    assert_eq!(exchanged.status, 303);
    assert_eq!(exchanged.header("location"), Some(format!("/dead/{worker_type}").as_str()));
    let cookie = cookie(port);
    assert_eq!(exchanged.header("set-cookie"), Some(format!("{cookie}; HttpOnly; SameSite=Strict; Path=/").as_str()));
    let head = http(port, "HEAD", "/", &[("Cookie", &cookie)], "");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(head.header("content-type"), Some("text/html; charset=utf-8"));
    let overview = http(port, "GET", "/", &[("Cookie", &cookie)], "");
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert!(overview.body.contains(&format!("<h2>{worker_type}</h2>")), "{}", overview.body);
    assert!(overview.body.contains("no workers: push ids on"), "{}", overview.body);
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn a_dead_letter_is_requeued_from_the_page_and_then_answered() {
    let dir = temp_dir();
    let worker_type = greeter(dir.path());
    let key = format!("{worker_type}:1:h");
    let mut worker =
        denorun(&[&key]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut c = redis().conn();
    wait_until("the worker claims its hash", || c.hexists::<_, _, bool>(&key, "pid").unwrap());
    let reference = unique("dead-ref");
    let dead_stream = format!("{worker_type}:dead:x");
    let dead_id = bury(&mut c, &worker_type, &reference, "Error: <b>was</b> down");
    let audit = dir.path().join("audit.jsonl");
    let (mut console, port) = console(&[&worker_type], &["--audit", audit.to_str().unwrap()]);
    let cookie = cookie(port);
    let cookie = cookie.as_str();
    let page = http(port, "GET", &format!("/dead/{worker_type}"), &[("Cookie", cookie)], "");
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&reference) && page.body.contains("Error: &lt;b&gt;was&lt;/b&gt; down"),
        "{}",
        page.body
    );
    // All, the ticked ones, and the one row.
    assert_eq!(page.body.matches("method=post").count(), 3, "{}", page.body);

    let path = format!("/dead/{worker_type}/requeue");
    let form = format!("id={dead_id}&confirm=yes");
    // From another site: refused, and the letter stays.
    let cross = http(port, "POST", &path, &[("Cookie", cookie), ("Origin", "http://evil.example")], &form);
    assert_eq!(cross.status, 403);
    let cross = http(port, "POST", &path, &[("Cookie", cookie), ("Sec-Fetch-Site", "cross-site")], &form);
    assert_eq!(cross.status, 403);
    // Without the confirmation: refused.
    let unconfirmed =
        http(port, "POST", &path, &[("Cookie", cookie), ("Sec-Fetch-Site", "same-origin")], &format!("id={dead_id}"));
    assert_eq!(unconfirmed.status, 400);
    assert_eq!(c.xlen::<_, usize>(&dead_stream).unwrap(), 1);

    let requeued = http(port, "POST", &path, &[("Cookie", cookie), ("Sec-Fetch-Site", "same-origin")], &form);
    assert_eq!(requeued.status, 303, "{}", requeued.body);
    let reply: Option<(String, String)> = c.brpop(format!("res:{reference}"), 30.0).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply.expect("the requeued request is answered").1).unwrap();
    assert_eq!(reply["greeting"], "hello ann");
    assert_eq!(c.xlen::<_, usize>(&dead_stream).unwrap(), 0);

    console.kill().unwrap();
    let run = finish(console);
    assert!(run.stderr.contains("console: requeue 1 dead letter(s)"), "{}", run.stderr);
    // With --audit, the action is in the audit log too: what, on which, from where.
    let logged = std::fs::read_to_string(&audit).unwrap();
    let line: serde_json::Value = serde_json::from_str(logged.lines().next().unwrap()).unwrap();
    assert_eq!(line["event"], "console", "{logged}");
    assert_eq!(line["action"], "requeue", "{logged}");
    assert_eq!(line["type"], worker_type.as_str(), "{logged}");
    assert_eq!(line["ids"], serde_json::json!([dead_id]), "{logged}");
    assert!(line["from"].as_str().unwrap().starts_with("127.0.0.1:"), "{logged}");
    assert_eq!(logged.lines().count(), 1, "refused changes are not actions: {logged}");
    let _: () = c.hset(&key, "pid", "stop").unwrap();
    let _ = worker.kill();
    let _ = worker.wait();
}

#[test]
fn read_only_shows_no_actions_and_takes_none() {
    let dir = temp_dir();
    let worker_type = greeter(dir.path());
    let mut c = redis().conn();
    let dead_stream = format!("{worker_type}:dead:x");
    let id: String = c.xadd(&dead_stream, "*", &[("ref", "r"), ("deadError", "e")]).unwrap();
    let (mut child, port) = console(&[&worker_type], &["--read-only"]);
    let cookie = cookie(port);
    let cookie = cookie.as_str();
    let page = http(port, "GET", &format!("/dead/{worker_type}"), &[("Cookie", cookie)], "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&id), "{}", page.body);
    assert!(!page.body.contains("method=post") && !page.body.contains("<button"), "{}", page.body);
    let delete = http(
        port,
        "POST",
        &format!("/dead/{worker_type}/delete"),
        &[("Cookie", cookie), ("Sec-Fetch-Site", "same-origin")],
        "all=1&confirm=yes",
    );
    assert_eq!(delete.status, 403);
    assert!(delete.body.contains("read-only"), "{}", delete.body);
    assert_eq!(c.xlen::<_, usize>(&dead_stream).unwrap(), 1);
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn without_a_type_it_shows_every_type_with_a_request_stream() {
    let server = OwnRedis::start();
    let url = server.url();
    let empty = run(denorun(&["console", "--redis", &url, "--listen", "127.0.0.1:0"]), "");
    assert_eq!(empty.code, 1, "{empty:?}");
    assert!(empty.stderr.contains("denorun console <type>"), "{empty:?}");

    let mut c = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let group = |c: &mut redis::Connection, stream: &str| {
        let () = redis::cmd("XGROUP").arg(&["CREATE", stream, "worker", "$", "MKSTREAM"]).query(c).unwrap();
    };
    group(&mut c, "plain:req:x");
    group(&mut c, "sharded:req:{a1}:x");
    group(&mut c, "sharded:req:{b2}:x");
    group(&mut c, "other:res:x");
    let _: () = c.set("lonely:req:x", "a string, not a stream").unwrap();
    // Another application's stream: no `worker` group.
    let _: String = c.xadd("foreign:req:x", "*", &[("a", "1")]).unwrap();
    // A stream with the group, but its type's hash is not a hash.
    group(&mut c, "clash:req:x");
    let _: () = c.set("clash:h", "a string").unwrap();
    let _: () = c.hset("req:r1:h", "demoWorkerTrace", "{}").unwrap();
    let (mut child, port) = console(&[], &["--redis", &url]);
    let overview = http(port, "GET", "/", &[("Cookie", &cookie(port))], "");
    assert_eq!(overview.status, 200, "{}", overview.body);
    let shown: Vec<&str> =
        overview.body.split("<h2>").skip(1).filter_map(|rest| rest.split_once("</h2>")).map(|(t, _)| t).collect();
    assert_eq!(shown, ["plain", "sharded"], "{}", overview.body);
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn a_remote_address_needs_its_flag() {
    let run = run(denorun(&["console", "--listen", "0.0.0.0:0", "greeter"]), "");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--allow-remote-console"), "{run:?}");
}

// In a real browser: headless Chromium over the DevTools protocol (`common::browser`).
// With DENORUN_SCREENSHOTS=<dir>, the pages are also saved there as PNGs (the README's).

fn screenshot(browser: &mut Browser, name: &str) {
    if let Ok(dir) = std::env::var("DENORUN_SCREENSHOTS") {
        browser.screenshot(&std::path::Path::new(&dir).join(name));
    }
}

/// The requests/s the overview shows, one per worker (`-` before a supervisor published).
fn rates(browser: &mut Browser) -> Vec<String> {
    let cells = browser.eval("[...document.querySelectorAll('td.rps')].map(td => td.innerText)");
    cells.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

#[test]
fn in_a_browser_the_overview_lists_the_workers_and_their_rates_move_under_load() {
    let dir = temp_dir();
    let worker_type = greeter(dir.path());
    redis().hset(&format!("{worker_type}:2:h"), &[("consumerId", "2")]);
    common::demo::encrypt_into(&redis().url(), &format!("{worker_type}:1:h"));
    let mut c = redis().conn();
    let _: () = c.rpush(format!("{worker_type}:start:q"), &["1", "2"]).unwrap();
    let supervisor = common::demo::Supervisor::start_type(&redis().url(), &worker_type, &[]);
    let (mut console, port) = console(&[&worker_type], &["--refresh", "3600"]);
    let mut browser = Browser::start();

    browser.open(&format!("http://127.0.0.1:{port}/?token={TOKEN}"));
    assert_eq!(browser.location(), "/", "the token leaves the address bar");
    // Idle: both workers run and their supervisor publishes 0 requests/s.
    wait_for("the overview shows two idle workers", Duration::from_secs(30), || {
        browser.open(&format!("http://127.0.0.1:{port}/"));
        (browser.count("tr.worker") == 2 && rates(&mut browser) == ["0.0", "0.0"]).then_some(())
    });
    assert_eq!(browser.count("tr.worker td:nth-child(2)"), 2);
    assert!(browser.text().contains("running"), "{}", browser.text());

    // Load: a client sends requests one after another and counts the replies.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (stop, stream) = (stop.clone(), format!("{worker_type}:req:x"));
        std::thread::spawn(move || {
            let mut c = redis().conn();
            let mut answered = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let reference = unique("load");
                let _: String =
                    c.xadd(&stream, "*", &[("ref", reference.as_str()), ("data", r#"{"name":"x"}"#)]).unwrap();
                let reply: Option<(String, String)> = c.brpop(format!("res:{reference}"), 10.0).unwrap();
                assert!(reply.is_some(), "{reference} was answered");
                answered += 1;
            }
            answered
        })
    };
    let busy = wait_for("the overview shows requests/s above 0", Duration::from_secs(30), || {
        browser.open(&format!("http://127.0.0.1:{port}/"));
        let rates = rates(&mut browser);
        rates.iter().any(|r| r.parse::<f64>().is_ok_and(|r| r > 0.0)).then_some(rates)
    });
    screenshot(&mut browser, "console-overview.png");

    // A worker's page: its chart has points, its secret is not shown.
    wait_for("worker 1's charts have a line", Duration::from_secs(30), || {
        browser.open(&format!("http://127.0.0.1:{port}/worker/{worker_type}/1"));
        let points = browser.eval("[...document.querySelectorAll('svg polyline')].map(l => l.getAttribute('points'))");
        let lines = points.as_array().unwrap().iter().filter(|p| p.as_str().unwrap().contains(' ')).count();
        (lines == 2).then_some(())
    });
    let sealed: String = c.hget(format!("{worker_type}:1:h"), "encryptedJson").unwrap();
    let page = browser.text();
    assert!(page.contains("requests/s: now") && page.contains("consumerId"), "{page}");
    assert!(!page.contains(&sealed) && page.contains("(secret, not shown)"), "{page}");
    screenshot(&mut browser, "console-worker.png");

    // A worker asked to stop (its pid cleared) is restarted, and its page lists the exit.
    let _: () = c.hdel(format!("{worker_type}:2:h"), "pid").unwrap();
    // The exit is recorded before the supervisor publishes its restart count: wait for both.
    wait_for("worker 2's page lists its exit and one restart", Duration::from_secs(30), || {
        browser.open(&format!("http://127.0.0.1:{port}/worker/{worker_type}/2"));
        (browser.count("tr.exit") == 1 && browser.text().contains("restarts\t1")).then_some(())
    });

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = client.join().unwrap();
    assert!(answered > 0, "rates {busy:?} with {answered} answered");
    console.kill().unwrap();
    let _ = console.wait();
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.finish().code, 0);
}

/// Adds a dead letter of worker 1 as the handler loop writes one; returns its id.
fn bury(c: &mut redis::Connection, worker_type: &str, reference: &str, error: &str) -> String {
    let worker = format!("{worker_type}:1:h");
    let fields = [
        ("ref", reference),
        ("type", worker_type),
        ("data", r#"{"name":"ann"}"#),
        ("deadId", "1-0"),
        ("deadError", error),
        ("deadAttempts", "5"),
        ("deadWorker", worker.as_str()),
    ];
    c.xadd(format!("{worker_type}:dead:x"), "*", &fields).unwrap()
}

/// Clicks `button` (`requeue` or `delete`) in the dead-letter row of `reference`, after
/// ticking its confirmation box.
fn in_row(reference: &str, button: &str) -> String {
    format!(
        "(() => {{ const row = [...document.querySelectorAll('tr.dead')].find(r => r.innerText.includes('{reference}'));\
         row.querySelector('input[name=confirm]').checked = true;\
         row.querySelector('button[formaction$=\"/{button}\"]').click(); }})()"
    )
}

#[test]
fn in_a_browser_a_dead_letter_is_requeued_then_answered_and_found_by_its_ref() {
    let dir = temp_dir();
    let worker_type = greeter(dir.path());
    let key = format!("{worker_type}:1:h");
    let mut worker =
        Killed::new(denorun(&[&key]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let mut c = redis().conn();
    wait_until("the worker claims its hash", || c.hexists::<_, _, bool>(&key, "pid").unwrap());
    let (fixed, broken) = (unique("fixed"), unique("broken"));
    bury(&mut c, &worker_type, &fixed, "Error: the database was down");
    bury(&mut c, &worker_type, &broken, "TypeError: name is <undefined>");
    let dead_stream = format!("{worker_type}:dead:x");
    let (mut console, port) = console(&[&worker_type], &["--refresh", "3600"]);
    let base = format!("http://127.0.0.1:{port}");
    let mut browser = Browser::start();

    // Without the token: 401.
    browser.open(&format!("{base}/dead/{worker_type}"));
    assert!(browser.text().starts_with("401"), "{}", browser.text());
    browser.open(&format!("{base}/dead/{worker_type}?token={TOKEN}"));
    assert_eq!(browser.location(), format!("/dead/{worker_type}"));
    assert_eq!(browser.count("tr.dead"), 2);
    assert!(browser.text().contains("TypeError: name is <undefined>"), "{}", browser.text());
    screenshot(&mut browser, "console-dead.png");

    // Requeued from its row: it leaves the dead letters and the worker answers it.
    browser.and_wait(&in_row(&fixed, "requeue"));
    assert_eq!(browser.location(), format!("/dead/{worker_type}"));
    assert_eq!(browser.count("tr.dead"), 1);
    let reply: Option<(String, String)> = c.brpop(format!("res:{fixed}"), 30.0).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply.expect("the requeued request is answered").1).unwrap();
    assert_eq!(reply["greeting"], "hello ann");

    // Found by its ref, from the bar's finder: answered, with its response entry.
    browser.and_wait(&format!(
        "document.querySelector('nav input[name=ref]').value = '{fixed}'; document.querySelector('nav form').submit()"
    ));
    assert_eq!(browser.location(), format!("/find?ref={fixed}"));
    let standing = browser.eval("document.querySelector('.standing').innerText");
    assert_eq!(standing, "answered", "{}", browser.text());
    assert!(browser.text().contains(&format!("response {worker_type}:res:x")), "{}", browser.text());

    // Text in a request, not a ref: the requests that hold it, linked to their ref.
    browser.open(&format!("{base}/find?ref=ann"));
    assert_eq!(browser.count("tr.match"), 2, "{}", browser.text());
    assert!(browser.text().contains(&broken) && browser.text().contains(&fixed), "{}", browser.text());
    browser.open(&format!("{base}/find?ref=nobody-has-this"));
    assert!(browser.text().contains("not found: no request has the ref nobody-has-this"), "{}", browser.text());

    // Another site's form cannot delete: 403, and nothing is deleted.
    let evil = format!(
        "<form method=post action=\"{base}/dead/{worker_type}/delete\"><input name=all value=1>\
         <input name=confirm value=yes></form><script>document.forms[0].submit()</script>"
    );
    let site = HttpServer::start(HashMap::from([("/".to_string(), Response::Body("text/html", evil))]));
    browser.open(&site.url("/"));
    wait_for("the other site's form was answered", Duration::from_secs(30), || {
        browser.text().starts_with("403").then_some(())
    });
    assert_eq!(c.xlen::<_, usize>(&dead_stream).unwrap(), 1);

    // Ticked and deleted.
    browser.open(&format!("{base}/dead/{worker_type}"));
    browser.and_wait(
        "document.querySelector('input[form=chosen]').checked = true;\
         document.querySelector('#chosen input[name=confirm]').checked = true;\
         document.querySelector('#chosen button[formaction$=\"/delete\"]').click()",
    );
    assert_eq!(browser.count("tr.dead"), 0);
    assert!(browser.text().contains("no dead letters"), "{}", browser.text());
    assert_eq!(c.xlen::<_, usize>(&dead_stream).unwrap(), 0);

    console.kill().unwrap();
    let run = finish(console);
    assert!(run.stderr.contains("console: requeue 1 dead letter(s)"), "{}", run.stderr);
    assert!(run.stderr.contains("console: refused POST"), "{}", run.stderr);
    assert!(run.stderr.contains("console: delete 1 dead letter(s)"), "{}", run.stderr);
    let _: () = c.hset(&key, "pid", "stop").unwrap();
    worker.kill();
}

#[test]
fn in_a_browser_read_only_shows_no_buttons() {
    let dir = temp_dir();
    let worker_type = greeter(dir.path());
    let mut c = redis().conn();
    bury(&mut c, &worker_type, "ro", "Error: e");
    let (mut console, port) = console(&[&worker_type], &["--read-only", "--refresh", "3600"]);
    let mut browser = Browser::start();
    // A link with the token keeps the rest of its query.
    browser.open(&format!("http://127.0.0.1:{port}/find?ref=ro&token={TOKEN}"));
    assert_eq!(browser.location(), "/find?ref=ro");
    let standing = browser.eval("document.querySelector('.standing').innerText");
    assert!(standing.as_str().unwrap().starts_with("dead"), "{}", browser.text());
    browser.open(&format!("http://127.0.0.1:{port}/dead/{worker_type}"));
    assert_eq!(browser.count("tr.dead"), 1);
    assert_eq!(browser.count("button"), 0);
    assert_eq!(browser.count("input[type=checkbox]"), 0);
    console.kill().unwrap();
    let _ = console.wait();
}
