//! The console's pages, rendered on the server as plain HTML (no script but the polling
//! refresh): the overview of each type (its stream numbers and workers, as `denorun status`
//! reads them), a worker's page, a type's dead letters with their actions, and what was
//! found of a ref.

use std::collections::HashMap;
use std::fmt::Write;

use super::chart;
use super::history::{Sample, WINDOW_S};
use crate::admin::board::{self, Board};
use crate::admin::find::{self, Found};
use crate::admin::Entry;
use crate::keys;

/// Text made safe to put in HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's one style sheet.
const STYLE: &str =
    "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}\
td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#f4f4f4}\
.num{text-align:right}form{display:inline}nav{margin-bottom:1em}figure{margin:1em 0}\
.actions{margin:.5em 0}code{word-break:break-all}";

/// The refresh every `refresh_s` seconds, which waits while the tab is hidden, a box is ticked
/// or a field has the focus.
fn refresher(refresh_s: u64) -> String {
    format!(
        "setInterval(()=>{{if(!document.hidden&&!document.querySelector('input:checked')\
         &&document.activeElement.tagName!=='INPUT')location.reload()}},{})",
        refresh_s * 1000
    )
}

/// The Content-Security-Policy of a page: nothing but its own style sheet and refresh script,
/// by their SHA-256 (no `'unsafe-inline'`).
pub fn policy(refresh_s: Option<u64>) -> String {
    use base64::Engine;
    use sha2::Digest;
    let hash = |text: &str| base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes()));
    let script = match refresh_s {
        Some(s) => format!("'sha256-{}'", hash(&refresher(s))),
        None => "'none'".to_string(),
    };
    format!(
        "default-src 'none'; style-src 'sha256-{}'; script-src {script}; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
        hash(STYLE)
    )
}

/// A whole page: `title`, `body`, a bar with the overview, each type's dead letters and the
/// finder, and with `refresh_s` the refresh (see [`refresher`]).
pub fn page(title: &str, body: &str, types: &[&str], refresh_s: Option<u64>) -> String {
    let mut nav = String::from("<a href=\"/\">overview</a>");
    for t in types {
        let _ = write!(nav, " · <a href=\"/dead/{}\">{} dead letters</a>", path(t), escape(t));
    }
    nav.push_str(
        " · <form method=get action=\"/find\"><input name=ref placeholder=\"find a ref or text\" size=18></form>",
    );
    let script = refresh_s.map_or(String::new(), |s| format!("<script>{}</script>", refresher(s)));
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{title} · denorun console</title>\
         <style>{STYLE}</style></head><body><nav>{nav}</nav><h1>{title}</h1>{body}{script}</body></html>",
        title = escape(title),
    )
}

/// A path segment made safe for a URL.
pub fn path(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A type's section of the overview: a sync type's stream and table, its streams' numbers,
/// and each worker with a link to its page.
pub fn overview(worker_type: &str, board: &Board) -> String {
    let type_hash = &board.type_hash;
    let mut html = String::new();
    let t = escape(worker_type);
    let _ = write!(html, "<section id=\"type-{t}\"><h2>{t}</h2>");
    if crate::config::is_sync(type_hash) {
        let field = |name: &str| escape(type_hash.get(name).map(String::as_str).unwrap_or("-"));
        let _ = write!(
            html,
            "<p class=sync>sync instances: {} → PostgreSQL table {}</p>",
            field("syncStream"),
            field("syncTable")
        );
    }
    let _ = write!(
        html,
        "<p>supervisor: {}</p><p class=stream>{}</p>",
        escape(board.supervisor.as_deref().unwrap_or("not running")),
        escape(&board::stream_line(board))
    );
    if let Some(rollout) = board::rollout_line(board) {
        let _ = write!(html, "<p class=rollout>{}</p>", escape(&rollout));
    }
    if board.rows.is_empty() {
        let _ = write!(html, "<p>no workers: push ids on {t}:start:q</p></section>");
        return html;
    }
    html.push_str(
        "<table><tr><th>id</th><th>state</th><th>version</th><th>supervisor</th><th>uptime</th><th>req/s</th>\
         <th>p99 ms</th><th>heap</th><th>restarts</th><th>last exit</th><th>last error</th></tr>",
    );
    for row in &board.rows {
        let _ = write!(
            html,
            "<tr class=worker><td><a href=\"/worker/{}/{}\">{}</a></td><td>{}</td><td class=version>{}</td><td>{}</td><td>{}</td>\
             <td class=\"num rps\">{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            path(worker_type),
            path(&row.id),
            escape(&row.id),
            escape(&row.state),
            escape(&row.version),
            escape(&row.supervisor),
            board::uptime(row.uptime_s),
            row.rps.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into()),
            board::millis(row.p99_ms),
            board::heap(row),
            escape(&row.restarts),
            escape(&row.last_exit),
            escape(&row.last_error)
        );
    }
    html.push_str("</table></section>");
    html
}

/// Whether a hash field holds a secret, never shown: the sealed config and anything named
/// like a password, secret or token.
pub fn is_secret(field: &str) -> bool {
    let name = field.to_ascii_lowercase();
    name == "encryptedjson" || ["password", "secret", "token"].iter().any(|word| name.contains(word))
}

/// What a worker's page shows.
pub struct WorkerPage {
    pub hash: HashMap<String, String>,
    pub stats: HashMap<String, String>,
    /// Newest first.
    pub exits: Vec<Entry>,
    pub samples: Vec<Sample>,
    pub now_s: u64,
}

/// A worker's page: charts of its requests/s and p99, its hash (secrets hidden), what its
/// supervisor publishes, and its latest exits.
pub fn worker(page: &WorkerPage) -> String {
    let series = |value: fn(&Sample) -> Option<f64>| -> Vec<(u64, f64)> {
        page.samples.iter().filter_map(|s| Some((s.at_s, value(s)?))).collect()
    };
    let mut html = String::new();
    html.push_str(&chart::line("requests/s", "", &series(|s| s.rps), page.now_s, WINDOW_S));
    html.push_str(&chart::line("p99", " ms", &series(|s| s.p99_ms), page.now_s, WINDOW_S));
    let table = |title: &str, map: &HashMap<String, String>| -> String {
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        let mut html = format!("<h2>{title}</h2><table class=fields>");
        for name in names {
            let value = if is_secret(name) { "(secret, not shown)".into() } else { escape(&map[name]) };
            let _ = write!(html, "<tr><th>{}</th><td><code>{value}</code></td></tr>", escape(name));
        }
        html.push_str("</table>");
        html
    };
    if page.hash.is_empty() {
        html.push_str("<p>no such worker hash</p>");
    } else {
        html.push_str(&table("hash", &page.hash));
    }
    if !page.stats.is_empty() {
        html.push_str(&table("published by its supervisor", &page.stats));
    }
    html.push_str("<h2>latest exits</h2>");
    if page.exits.is_empty() {
        html.push_str("<p>none recorded</p>");
        return html;
    }
    html.push_str("<table class=exits><tr><th>when</th><th>reason</th><th>code</th><th>error</th></tr>");
    for exit in &page.exits {
        let _ = write!(
            html,
            "<tr class=exit><td>{}</td><td>{}</td><td class=num>{}</td><td>{}</td></tr>",
            when(&exit.id),
            escape(exit.field("reason")),
            escape(exit.field("code")),
            escape(exit.field("error"))
        );
    }
    html.push_str("</table>");
    html
}

/// When a stream entry was added, from its id: `2026-12-05 06:36:51 UTC`.
fn when(id: &str) -> String {
    let ms = id.split('-').next().and_then(|ms| ms.parse().ok());
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// The confirmation box and the requeue and delete buttons of a form (none when read-only).
fn actions(t: &str, label: &str) -> String {
    format!(
        "<label><input type=checkbox name=confirm value=yes required> sure</label> \
         <button formaction=\"/dead/{t}/requeue\">requeue{label}</button> \
         <button formaction=\"/dead/{t}/delete\">delete{label}</button>"
    )
}

/// A type's dead letters: requeue or delete one, the ones ticked, or all, each behind a
/// confirmation box (no forms at all when `read_only`).
pub fn dead(worker_type: &str, entries: &[Entry], read_only: bool) -> String {
    let t = escape(worker_type);
    let (stream, p) = (format!("{t}:dead:x"), path(worker_type));
    if entries.is_empty() {
        return format!("<p>no dead letters in {stream}</p>");
    }
    let mut html = format!("<p>{} dead letter(s) in {stream}</p>", entries.len());
    if !read_only {
        let _ = write!(
            html,
            "<div class=actions><form method=post><input type=hidden name=all value=1>{}</form></div>\
             <div class=actions><form id=chosen method=post>{}</form></div>",
            actions(&p, " all"),
            actions(&p, " ticked")
        );
    }
    html.push_str(
        "<table><tr><th></th><th>buried at</th><th>ref</th><th>error</th><th>attempts</th><th>worker</th><th></th></tr>",
    );
    for entry in entries {
        let id = escape(&entry.id);
        let (tick, row_actions) = if read_only {
            (String::new(), String::new())
        } else {
            (
                format!("<input type=checkbox name=id value=\"{id}\" form=chosen aria-label=\"tick {id}\">"),
                format!("<form method=post><input type=hidden name=id value=\"{id}\">{}</form>", actions(&p, "")),
            )
        };
        let _ = write!(
            html,
            "<tr class=dead><td>{tick}</td><td title=\"{id}\">{}</td><td><a href=\"/find?ref={}\">{}</a></td><td>{}</td>\
             <td class=num>{}</td><td>{}</td><td>{row_actions}</td></tr>",
            when(&entry.id),
            path(entry.field("ref")),
            escape(entry.field("ref")),
            escape(entry.field("deadError")),
            escape(entry.field("deadAttempts")),
            escape(entry.field("deadWorker"))
        );
    }
    html.push_str("</table>");
    html
}

/// The finder's form, with `reference` filled in.
pub fn find_form(reference: &str) -> String {
    format!(
        "<form method=get action=\"/find\"><input name=ref value=\"{}\" placeholder=\"a ref, or text in a request\" size=30> \
         <button>find</button></form>",
        escape(reference)
    )
}

/// The requests whose fields hold `text` (by type, stream and entry), each with a link to
/// what is known of its ref.
pub fn matches(text: &str, matches: &[(&str, String, Entry)]) -> String {
    let t = escape(text);
    if matches.is_empty() {
        return format!(
            "<p class=standing>not found: no request has the ref {t}, and none of the newest {} entries \
             (at most {} MiB) of each request or dead-letter stream holds it</p>",
            find::SEARCHED,
            find::BUDGET >> 20
        );
    }
    let mut html = format!(
        "<p class=standing>no request has the ref {t}; {} of the newest hold it:</p>\
         <table><tr><th>type</th><th>added</th><th>stream</th><th>ref</th><th>fields</th></tr>",
        matches.len()
    );
    for (worker_type, stream, entry) in matches {
        let fields: Vec<String> =
            entry.fields.iter().filter(|(k, _)| k != "ref" && !is_secret(k)).map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(
            html,
            "<tr class=match><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/find?ref={}\">{}</a></td><td><code>{}</code></td></tr>",
            escape(worker_type),
            when(&entry.id),
            escape(stream),
            path(entry.field("ref")),
            escape(entry.field("ref")),
            escape(&fields.join("  "))
        );
    }
    html.push_str("</table>");
    html
}

/// What was found of `reference` in `worker_type`.
pub fn found(worker_type: &str, reference: &str, found: &Found) -> String {
    let mut html = format!(
        "<section class=found><h2>{}</h2><p class=standing>{}</p><table>",
        escape(worker_type),
        escape(found.standing().describe())
    );
    let mut row = |what: String, text: String| {
        let _ = write!(html, "<tr><th>{what}</th><td><code>{}</code></td></tr>", escape(&text));
    };
    let pairs = |fields: &[(String, String)]| {
        fields.iter().filter(|(k, _)| !is_secret(k)).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("  ")
    };
    if let Some((stream, entry)) = &found.request {
        row(format!("request {}", escape(stream)), format!("{}  {}", entry.id, pairs(&entry.fields)));
    }
    if let Some(p) = &found.pending {
        row("pending".into(), format!("with {} for {} ms, delivered {} time(s)", p.consumer, p.idle_ms, p.deliveries));
    }
    if let Some(entry) = &found.dead {
        row("dead letter".into(), format!("{}  {}", entry.id, pairs(&entry.fields)));
    }
    if let Some((stream, entry)) = &found.response {
        row(format!("response {}", escape(stream)), format!("{}  {}", entry.id, pairs(&entry.fields)));
    }
    for reply in &found.replies {
        row(escape(&keys::reply(reference)), reply.clone());
    }
    if !found.trace.is_empty() {
        row(escape(&keys::trace(reference)), pairs(&found.trace));
    }
    html.push_str("</table></section>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_read_only_has_no_forms() {
        assert_eq!(escape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
        let entry = Entry {
            id: "1-0".into(),
            fields: vec![("deadError".into(), "<script>".into()), ("ref".into(), "r1".into())],
        };
        let live = dead("g", std::slice::from_ref(&entry), false);
        assert!(live.contains("&lt;script&gt;") && !live.contains("<script>"));
        // All, the ticked ones, and the one row; each with a confirmation box.
        assert_eq!(live.matches("<form").count(), 3);
        assert_eq!(live.matches("name=confirm").count(), 3);
        assert!(live.contains("form=chosen"));
        let read_only = dead("g", &[entry], true);
        assert!(!read_only.contains("<form") && !read_only.contains("<button") && !read_only.contains("checkbox"));
    }

    #[test]
    fn a_sync_type_names_its_stream_and_table() {
        let type_hash = HashMap::from([
            ("syncStream".to_string(), "greeter:res:x".to_string()),
            ("syncTable".to_string(), "responses".to_string()),
        ]);
        let sync = overview("archive", &Board { type_hash, ..Board::default() });
        assert!(
            sync.contains("<p class=sync>sync instances: greeter:res:x → PostgreSQL table responses</p>"),
            "{sync}"
        );
        assert!(sync.contains("supervisor: not running"), "{sync}");
        assert!(!overview("greeter", &Board::default()).contains("class=sync"));
    }

    #[test]
    fn an_entry_is_dated_by_its_id() {
        assert_eq!(when("1796452607880-0"), "2026-12-05 06:36:47 UTC");
        assert_eq!(when("0-1"), "1970-01-01 00:00:00 UTC");
        assert_eq!(when("nonsense"), "-");
    }

    #[test]
    fn secrets_are_never_shown() {
        for name in ["encryptedJson", "aclPassword", "pgPassword", "apiSecret", "accessToken"] {
            assert!(is_secret(name), "{name}");
        }
        for name in ["encryptedIv", "workerUrl", "aclUser", "consumerId"] {
            assert!(!is_secret(name), "{name}");
        }
        let hash = HashMap::from([
            ("encryptedJson".to_string(), "c2VjcmV0".to_string()),
            ("aclPassword".to_string(), "sealed".to_string()),
            ("workerUrl".to_string(), "w.ts".to_string()),
        ]);
        let html = worker(&WorkerPage { hash, stats: HashMap::new(), exits: vec![], samples: vec![], now_s: 0 });
        assert!(html.contains("w.ts") && !html.contains("c2VjcmV0") && !html.contains("sealed"), "{html}");
        assert_eq!(html.matches("(secret, not shown)").count(), 2);
    }
}
