//! `denorun console` against a real redis-server and a real handler worker, over HTTP as a
//! browser speaks it: the token and its cookie, the overview, a dead letter requeued from the
//! page and then answered, cross-origin and read-only changes refused.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use redis::Commands;

const TOKEN: &str = "console-test-token-0123456789";
const COOKIE: &str = "denorun_console=console-test-token-0123456789";

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
    redis().hset(&format!("{worker_type}:h"), &[("workerUrl", path.to_str().unwrap()), ("workerVersion", "local")]);
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
    assert_eq!(exchanged.header("set-cookie"), Some(format!("{COOKIE}; HttpOnly; SameSite=Strict; Path=/").as_str()));
    let overview = http(port, "GET", "/", &[("Cookie", COOKIE)], "");
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
    // A dead letter as the handler loop writes one.
    let reference = unique("dead-ref");
    let dead_stream = format!("{worker_type}:dead:x");
    let data = r#"{"name":"ann"}"#;
    let dead_id: String = c
        .xadd(
            &dead_stream,
            "*",
            &[
                ("ref", reference.as_str()),
                ("type", worker_type.as_str()),
                ("data", data),
                ("deadId", "1-0"),
                ("deadError", "Error: <b>was</b> down"),
                ("deadAttempts", "5"),
                ("deadWorker", key.as_str()),
            ],
        )
        .unwrap();
    let (mut console, port) = console(&[&worker_type], &[]);
    let page = http(port, "GET", &format!("/dead/{worker_type}"), &[("Cookie", COOKIE)], "");
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&reference) && page.body.contains("Error: &lt;b&gt;was&lt;/b&gt; down"),
        "{}",
        page.body
    );
    assert_eq!(page.body.matches("<form").count(), 4, "{}", page.body);

    let path = format!("/dead/{worker_type}/requeue");
    let form = format!("id={dead_id}&confirm=yes");
    // From another site: refused, and the letter stays.
    let cross = http(port, "POST", &path, &[("Cookie", COOKIE), ("Origin", "http://evil.example")], &form);
    assert_eq!(cross.status, 403);
    let cross = http(port, "POST", &path, &[("Cookie", COOKIE), ("Sec-Fetch-Site", "cross-site")], &form);
    assert_eq!(cross.status, 403);
    // Without the confirmation: refused.
    let unconfirmed =
        http(port, "POST", &path, &[("Cookie", COOKIE), ("Sec-Fetch-Site", "same-origin")], &format!("id={dead_id}"));
    assert_eq!(unconfirmed.status, 400);
    assert_eq!(c.xlen::<_, usize>(&dead_stream).unwrap(), 1);

    let requeued = http(port, "POST", &path, &[("Cookie", COOKIE), ("Sec-Fetch-Site", "same-origin")], &form);
    assert_eq!(requeued.status, 303, "{}", requeued.body);
    let reply: Option<(String, String)> = c.brpop(format!("res:{reference}"), 30.0).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply.expect("the requeued request is answered").1).unwrap();
    assert_eq!(reply["greeting"], "hello ann");
    assert_eq!(c.xlen::<_, usize>(&dead_stream).unwrap(), 0);

    console.kill().unwrap();
    let run = finish(console);
    assert!(run.stderr.contains("console: requeue 1 dead letter(s)"), "{}", run.stderr);
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
    let page = http(port, "GET", &format!("/dead/{worker_type}"), &[("Cookie", COOKIE)], "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&id) && !page.body.contains("<form") && !page.body.contains("<button"), "{}", page.body);
    let delete = http(
        port,
        "POST",
        &format!("/dead/{worker_type}/delete"),
        &[("Cookie", COOKIE), ("Sec-Fetch-Site", "same-origin")],
        "all=1&confirm=yes",
    );
    assert_eq!(delete.status, 403);
    assert!(delete.body.contains("read-only"), "{}", delete.body);
    assert_eq!(c.xlen::<_, usize>(&dead_stream).unwrap(), 1);
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn a_remote_address_needs_its_flag() {
    let run = run(denorun(&["console", "--listen", "0.0.0.0:0", "greeter"]), "");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--allow-remote-console"), "{run:?}");
}
