//! The admin commands against a real redis-server: encrypt, setup-worker, show-worker,
//! create-req-stream, info, xadd-req, xrange-*, xtrim-*, dead, find.

mod common;

use common::*;

#[test]
fn encrypt_matches_openssl_enc() {
    // printf '%s' '{ "password": "hello", "type": "demo-worker" }' | openssl enc -aes-128-cbc
    //   -K 00112233445566778899aabbccddeeff -iv 0f0e0d0c0b0a09080706050403020100 -base64 -A
    let out =
        run(denorun(&["encrypt", "--key", SECRET, "--iv", IV]), r#"{ "password": "hello", "type": "demo-worker" }"#);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        format!(
            "encryptedAlg aes-128-cbc\nencryptedIv {IV}\nencryptedJson rVqq2SB3JPzVSbwq5LprVdzlVmfQJIcBCpRNcD60Jpdxvaaf0ikP+v1tcUdiFWli\n"
        )
    );
    let random_iv = run(denorun(&["encrypt", "--key", SECRET]), "{}");
    assert_eq!(random_iv.code, 0, "{random_iv:?}");
    assert_ne!(
        random_iv.stdout.lines().nth(1),
        run(denorun(&["encrypt", "--key", SECRET]), "{}").stdout.lines().nth(1)
    );

    let short = run(denorun(&["encrypt", "--key", "0011"]), "{}");
    assert_eq!(short.code, 1, "{short:?}");
    assert!(short.stderr.contains("--key must be 16, 24 or 32 bytes"), "{short:?}");
    let not_json = run(denorun(&["encrypt", "--key", SECRET]), "password=hello");
    assert_eq!(not_json.code, 1, "{not_json:?}");
    assert!(not_json.stderr.contains("not valid JSON"), "{not_json:?}");
}

#[test]
fn set_up_a_worker_and_its_streams() {
    let t = unique("admin");
    let setup = run(denorun(&["setup-worker", &t, "7", "--request-limit", "3", "--start"]), "");
    assert_eq!(setup.code, 0, "{setup:?}");
    let show = run(denorun(&["show-worker", &t, "7"]), "");
    assert_eq!(
        show.stdout,
        format!(
            "{t}:7:h\n  consumerId 7\n  requestLimit 3\n  requestStream {t}:req:x\n  responseStream {t}:res:x\n  workerType {t}\n"
        )
    );
    let queued: Vec<String> = redis().cmd(&["LRANGE", &format!("{t}:start:q"), "0", "-1"]);
    assert_eq!(queued, ["7"]);
    let missing = run(denorun(&["show-worker", &t, "8"]), "");
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("does not exist"), "{missing:?}");

    let no_stream = run(denorun(&["info", &t]), "");
    assert_eq!(no_stream.code, 1, "{no_stream:?}");
    assert!(no_stream.stderr.contains("create-req-stream"), "{no_stream:?}");
    for _ in 0..2 {
        let created = run(denorun(&["create-req-stream", &t]), "");
        assert_eq!(created.code, 0, "{created:?}");
    }
    let info = run(denorun(&["info", &t]), "");
    assert_eq!(info.code, 0, "{info:?}");
    assert!(info.stdout.contains("  name worker\n") && info.stdout.contains("  consumers 0\n"), "{info:?}");
    let bad_type = run(denorun(&["info", "Not A Type"]), "");
    assert!(bad_type.stderr.contains("must match"), "{bad_type:?}");
}

#[test]
fn requests_without_a_worker_time_out_clearly_and_streams_can_be_read_and_trimmed() {
    let t = unique("admin");
    assert_eq!(run(denorun(&["create-req-stream", &t]), "").code, 0);
    let sent = run(denorun(&["xadd-req", &t, "--ref", "r1", "--data", "{\"n\":1}", "--timeout", "1"]), "");
    assert_eq!(sent.code, 1, "{sent:?}");
    assert!(sent.stdout.starts_with("ref=r1 id="), "{sent:?}");
    assert!(sent.stderr.contains(&format!("no reply for r1 within 1s: is a {t} worker running?")), "{sent:?}");
    let request: std::collections::HashMap<String, String> = redis().cmd(&["HGETALL", "req:r1:h"]);
    assert_eq!(request["requestData"], "{\"n\":1}");
    let bad = run(denorun(&["xadd-req", &t, "--data", "{nope"]), "");
    assert!(bad.stderr.contains("--data is not JSON"), "{bad:?}");

    let listed = run(denorun(&["xrange-req", &t]), "");
    assert_eq!(listed.code, 0, "{listed:?}");
    assert_eq!(listed.stdout.lines().count(), 1, "{listed:?}");
    assert!(listed.stdout.contains("data={\"n\":1} ref=r1 time="), "{listed:?}");
    assert_eq!(run(denorun(&["xrange-res", &t]), "").stdout, "");
    let trimmed = run(denorun(&["xtrim-req", &t, "0"]), "");
    assert_eq!(trimmed.stdout, format!("trimmed 1 from {t}:req:x\n"), "{trimmed:?}");
    assert_eq!(run(denorun(&["xrange-req", &t]), "").stdout, "");
}

#[test]
fn stream_shards_are_created_listed_and_chosen_by_ref() {
    let t = unique("shards");
    let dir = temp_dir();
    let path = write(
        dir.path(),
        "h.ts",
        "export default { request(req: any) { return { code: 200, stream: req.stream }; } };",
    );
    // trimAcked 0: the answered request stays on its shard for the XRANGE below.
    let fields =
        [("workerUrl", path.to_str().unwrap()), ("workerVersion", "local"), ("streamShards", "3"), ("trimAcked", "0")];
    redis().hset(&format!("{t}:h"), &fields);
    redis().hset(&format!("{t}:1:h"), &[("consumerId", "1")]);

    let created = run(denorun(&["create-req-stream", &t]), "");
    assert_eq!(created.code, 0, "{created:?}");
    let streams: Vec<String> = created.stdout.lines().map(|l| l.split(' ').nth(1).unwrap().to_string()).collect();
    assert_eq!(streams.len(), 3, "{created:?}");
    assert!(streams.iter().all(|s| s.starts_with(&format!("{t}:req:{{")) && s.ends_with("}:x")), "{streams:?}");
    let info = run(denorun(&["info", &t]), "");
    assert_eq!(info.code, 0, "{info:?}");
    assert!(streams.iter().all(|s| info.stdout.contains(&format!("stream {s}:"))), "{info:?}");

    // A worker reads every shard; xadd-req puts the request on the shard of its ref.
    let mut cmd = denorun(&[&format!("{t}:1:h")]);
    cmd.stdin(std::process::Stdio::null());
    let mut worker = Killed::new(cmd.spawn().unwrap());
    wait_until("the worker claims its hash", || redis().cmd::<bool>(&["HEXISTS", &format!("{t}:1:h"), "pid"]));
    // A ref of its own: the other tests share this Redis and its res:{ref} lists.
    let reference = unique("ref");
    let sent = run(denorun(&["xadd-req", &t, "--ref", &reference, "--data", "{}"]), "");
    assert_eq!(sent.code, 0, "{sent:?}");
    let reply: serde_json::Value = serde_json::from_str(sent.stdout.lines().nth(1).unwrap()).unwrap();
    let shard = reply["stream"].as_str().unwrap().to_string();
    assert!(streams.contains(&shard), "{reply} {streams:?}");
    let entries: redis::Value = redis().cmd(&["XRANGE", &shard, "-", "+"]);
    assert!(format!("{entries:?}").contains(&reference), "{entries:?}");
    worker.kill();
}

#[test]
fn a_sharded_types_dead_letters_go_back_to_their_shard_and_its_board_counts_every_shard() {
    let t = unique("deadshards");
    let dir = temp_dir();
    let handler = format!(
        r#"export default {{
  async request(req: any, ctx: any) {{
    if (await ctx.redis.exists("{t}:broken") === 1) throw new Error("broken");
    return {{ code: 200, stream: req.stream }};
  }},
}};"#
    );
    let path = write(dir.path(), "h.ts", &handler);
    let fields = [
        ("workerUrl", path.to_str().unwrap()),
        ("workerVersion", "local"),
        ("streamShards", "3"),
        ("maxAttempts", "1"),
        // The board's length is what the shards hold: keep the acked request to count it.
        ("trimAcked", "0"),
    ];
    redis().hset(&format!("{t}:h"), &fields);
    let _: () = redis().cmd(&["SET", &format!("{t}:broken"), "1"]);
    let _: i64 = redis().cmd(&["RPUSH", &format!("{t}:start:q"), "1"]);
    let supervisor = common::demo::Supervisor::start_type(&redis().url(), &t, &[]);
    wait_until("the worker claims its hash", || redis().cmd::<bool>(&["HEXISTS", &format!("{t}:1:h"), "pid"]));

    // Broken: the request is dead-lettered at its first attempt, from its shard.
    let reference = unique("ref");
    let sent = run(denorun(&["xadd-req", &t, "--ref", &reference, "--data", "{}"]), "");
    assert!(sent.stdout.contains(r#""code":500"#), "{sent:?}");

    // The board counts the shards, not a `<type>:req:x` that no one uses.
    let stats = format!("{t}:stats:h");
    wait_until("the board shows the request and its dead letter", || {
        let board: std::collections::HashMap<String, String> = redis().cmd(&["HGETALL", &stats]);
        board.get("length").map(String::as_str) == Some("1") && board.get("dead").map(String::as_str) == Some("1")
    });
    let shown: String = redis().cmd(&["HGET", &stats, "stream"]);
    assert!(shown.starts_with(&format!("{t}:req:{{")) && shown.ends_with("and 2 more shards"), "{shown}");

    // Fixed: requeued onto the shard of its ref, where the worker reads, and answered.
    let _: i64 = redis().cmd(&["DEL", &format!("{t}:broken")]);
    let requeued = run(denorun(&["dead", &t, "--requeue"]), "");
    assert_eq!(requeued.code, 0, "{requeued:?}");
    assert!(requeued.stdout.contains(&format!("requeued on {t}:req:{{")), "{requeued:?}");
    let reply: Option<(String, String)> =
        redis::cmd("BRPOP").arg(format!("res:{reference}")).arg(10).query(&mut redis().conn()).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply.expect("an answer to the requeued request").1).unwrap();
    assert_eq!(reply["code"], 200, "{reply}");
    assert!(requeued.stdout.contains(reply["stream"].as_str().unwrap()), "{requeued:?} {reply}");
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.finish().code, 0);
}

#[test]
fn find_tells_where_a_request_stands_by_its_ref() {
    use redis::Commands;
    let worker_type = unique("find");
    let stream = format!("{worker_type}:req:x");
    let mut c = redis().conn();
    let _: () = redis::cmd("XGROUP").arg(&["CREATE", &stream, "worker", "$", "MKSTREAM"]).query(&mut c).unwrap();
    let find = |reference: &str| run(denorun(&["find", &worker_type, reference]), "");

    let missing = find("nowhere");
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stdout.starts_with("ref nowhere: not found"), "{missing:?}");

    let id: String = c.xadd(&stream, "*", &[("ref", "a"), ("data", "{}")]).unwrap();
    let waiting = find("a");
    assert_eq!(waiting.code, 0, "{waiting:?}");
    assert!(waiting.stdout.starts_with("ref a: waiting"), "{waiting:?}");
    assert!(waiting.stdout.contains(&format!("request {stream} {id}: data={{}} ref=a")), "{waiting:?}");

    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(&["GROUP", "worker", "c1", "COUNT", "1", "STREAMS", &stream, ">"])
        .query(&mut c)
        .unwrap();
    let pending = find("a");
    assert!(pending.stdout.starts_with("ref a: pending"), "{pending:?}");
    assert!(pending.stdout.contains("pending with c1 for "), "{pending:?}");

    let _: () = c.xack(&stream, "worker", &[&id]).unwrap();
    assert!(find("a").stdout.starts_with("ref a: read and acked, no reply kept"));

    let _: () = c.lpush("res:a", r#"{"code":200}"#).unwrap();
    let answered = find("a");
    assert!(answered.stdout.starts_with("ref a: answered"), "{answered:?}");
    assert!(answered.stdout.contains(r#"reply res:a: {"code":200}"#), "{answered:?}");
    let _: () = c.del("res:a").unwrap();

    let _: String = c.xadd(format!("{worker_type}:dead:x"), "*", &[("ref", "a"), ("deadError", "Error: no")]).unwrap();
    let dead = find("a");
    assert!(dead.stdout.starts_with("ref a: dead"), "{dead:?}");
    assert!(dead.stdout.contains("deadError=Error: no"), "{dead:?}");
}

/// A handler type whose dead-letter stream holds `refs`, as the handler loop writes letters,
/// and whose worker 1 is not started yet; returns the type.
fn type_with_dead_letters(dir: &std::path::Path, refs: &[String]) -> String {
    let t = unique("requeue");
    let path = write(dir, "h.ts", "export default { request(req: any) { return { code: 200, ref: req.ref }; } };");
    // trimAcked 0: the request stream is counted once the requests are answered.
    let fields = [("workerUrl", path.to_str().unwrap()), ("workerVersion", "local"), ("trimAcked", "0")];
    redis().hset(&format!("{t}:h"), &fields);
    redis().hset(&format!("{t}:1:h"), &[("consumerId", "1")]);
    for reference in refs {
        let letter = [
            "XADD",
            &format!("{t}:dead:x"),
            "*",
            "ref",
            reference,
            "data",
            "{}",
            "deadId",
            "1-0",
            "deadError",
            "Error: down",
            "deadAttempts",
            "5",
            "deadWorker",
            &format!("{t}:1:h"),
        ];
        let _: String = redis().cmd(&letter);
    }
    t
}

/// Two operators requeue the same dead letters at the same moment: each letter goes back
/// once, and its request runs once.
#[test]
fn dead_letters_requeued_twice_at_once_run_once() {
    let dir = temp_dir();
    let refs: Vec<String> = (0..50).map(|i| unique(&format!("twice{i}"))).collect();
    let t = type_with_dead_letters(dir.path(), &refs);
    let requeuers: Vec<_> = (0..2)
        .map(|_| {
            let t = t.clone();
            std::thread::spawn(move || run(denorun(&["dead", &t, "--requeue"]), ""))
        })
        .collect();
    let outputs: Vec<Run> = requeuers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(outputs.iter().all(|o| o.code == 0), "{outputs:?}");
    let requeued: usize = outputs.iter().map(|o| o.stdout.matches(" requeued on ").count()).sum();
    assert_eq!(requeued, refs.len(), "{outputs:?}");
    assert_eq!(redis().cmd::<usize>(&["XLEN", &format!("{t}:dead:x")]), 0);
    assert_eq!(redis().cmd::<usize>(&["XLEN", &format!("{t}:req:x")]), refs.len());

    let mut cmd = denorun(&[&format!("{t}:1:h")]);
    cmd.stdin(std::process::Stdio::null());
    let mut worker = Killed::new(cmd.spawn().unwrap());
    let responses = format!("{t}:res:x");
    wait_until("every requeued request is answered", || redis().cmd::<usize>(&["XLEN", &responses]) >= refs.len());
    // A moment for a second run, had there been one to make.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let answered: redis::streams::StreamRangeReply = redis().cmd(&["XRANGE", &responses, "-", "+"]);
    let mut runs: Vec<String> = answered.ids.iter().map(|e| e.get::<String>("ref").unwrap()).collect();
    runs.sort();
    let mut expected = refs.clone();
    expected.sort();
    assert_eq!(runs, expected, "each ref answered exactly once");
    worker.kill();
}

/// A dead letter goes back byte for byte: values that are not UTF-8, its fields' order and a
/// repeated field, without the fields the handler loop added.
#[test]
fn a_requeued_dead_letter_keeps_its_bytes() {
    let dir = temp_dir();
    let t = type_with_dead_letters(dir.path(), &[]);
    let dead = format!("{t}:dead:x");
    let binary: &[u8] = &[0xff, 0x00, 0xfe, b'\r', b'\n', 0x80];
    let mut c = redis().conn();
    let _: String = redis::cmd("XADD")
        .arg(&dead)
        .arg("*")
        .arg("zeta")
        .arg(binary)
        .arg("deadError")
        .arg("Error: down")
        .arg("ref")
        .arg("bin-ref")
        .arg("alpha")
        .arg("1")
        .arg("alpha")
        .arg("2")
        .arg("deadAttempts")
        .arg("5")
        .query(&mut c)
        .unwrap();
    for _ in 0..2 {
        let requeued = run(denorun(&["dead", &t, "--requeue"]), "");
        assert_eq!(requeued.code, 0, "{requeued:?}");
    }
    let entries: Vec<(String, Vec<Vec<u8>>)> =
        redis::cmd("XRANGE").arg(format!("{t}:req:x")).arg("-").arg("+").query(&mut c).unwrap();
    assert_eq!(entries.len(), 1, "requeued once");
    let expected: Vec<&[u8]> = vec![b"zeta", binary, b"ref", b"bin-ref", b"alpha", b"1", b"alpha", b"2"];
    assert_eq!(entries[0].1, expected);
    assert_eq!(redis().cmd::<usize>(&["XLEN", &dead]), 0);
}
