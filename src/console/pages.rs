//! The console's pages, rendered on the server as plain HTML (no script but the polling
//! refresh): the overview of each type (its stream numbers and workers, as `denorun status`
//! reads them) and a type's dead letters with their actions.

use std::fmt::Write;

use crate::admin::board::{self, Board};
use crate::admin::dead::DeadEntry;

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

/// A whole page: `title`, `body`, and a refresh every `refresh_s` seconds that pauses while
/// the tab is hidden.
pub fn page(title: &str, body: &str, refresh_s: u64) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{title} · denorun console</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:1.5em}}table{{border-collapse:collapse}}\
         td,th{{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left}}th{{background:#f4f4f4}}\
         .num{{text-align:right}}form{{display:inline}}</style></head><body>\
         <nav><a href=\"/\">overview</a></nav><h1>{title}</h1>{body}\
         <script>setInterval(()=>{{if(!document.hidden&&!document.querySelector('input:checked'))location.reload()}},{ms})</script>\
         </body></html>",
        title = escape(title),
        ms = refresh_s * 1000
    )
}

/// A type's section of the overview.
pub fn overview(worker_type: &str, board: &Board) -> String {
    let mut html = String::new();
    let t = escape(worker_type);
    let _ = write!(html, "<section id=\"type-{t}\"><h2>{t}</h2>");
    let _ = write!(
        html,
        "<p>supervisor: {}</p><p>{}</p><p><a href=\"/dead/{t}\">dead letters</a></p>",
        escape(board.supervisor.as_deref().unwrap_or("not running")),
        escape(&board::stream_line(board))
    );
    if board.rows.is_empty() {
        let _ = write!(html, "<p>no workers: push ids on {t}:start:q</p></section>");
        return html;
    }
    html.push_str(
        "<table><tr><th>id</th><th>state</th><th>supervisor</th><th>uptime</th><th>req/s</th><th>p99 ms</th>\
         <th>heap</th><th>restarts</th><th>last exit</th><th>last error</th></tr>",
    );
    for row in &board.rows {
        let _ = write!(
            html,
            "<tr class=worker><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num rps\">{}</td>\
             <td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&row.id),
            escape(&row.state),
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

/// A type's dead letters, with requeue and delete for one or all, each behind a
/// confirmation box (none of them when `read_only`).
pub fn dead(worker_type: &str, entries: &[DeadEntry], read_only: bool) -> String {
    let t = escape(worker_type);
    if entries.is_empty() {
        return format!("<p>no dead letters in {t}:dead:x</p>");
    }
    let action = |what: &str, id: Option<&str>| -> String {
        if read_only {
            return String::new();
        }
        let target = id.map_or_else(
            || "<input type=hidden name=all value=1>".to_string(),
            |id| format!("<input type=hidden name=id value=\"{}\">", escape(id)),
        );
        format!(
            "<form method=post action=\"/dead/{t}/{what}\">{target}<label><input type=checkbox name=confirm value=yes required> sure</label>\
             <button>{what}{}</button></form>",
            if id.is_none() { " all" } else { "" }
        )
    };
    let mut html = format!("<p>{} dead letter(s) in {t}:dead:x</p>", entries.len());
    html.push_str(&action("requeue", None));
    html.push_str(&action("delete", None));
    html.push_str("<table><tr><th>id</th><th>ref</th><th>error</th><th>attempts</th><th>worker</th><th></th></tr>");
    for entry in entries {
        let _ = write!(
            html,
            "<tr class=dead><td>{}</td><td>{}</td><td>{}</td><td class=num>{}</td><td>{}</td><td>{}{}</td></tr>",
            escape(&entry.id),
            escape(entry.field("ref")),
            escape(entry.field("deadError")),
            escape(entry.field("deadAttempts")),
            escape(entry.field("deadWorker")),
            action("requeue", Some(&entry.id)),
            action("delete", Some(&entry.id))
        );
    }
    html.push_str("</table>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_read_only_has_no_forms() {
        assert_eq!(escape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
        let entry = DeadEntry {
            id: "1-0".into(),
            fields: vec![("deadError".into(), "<script>".into()), ("ref".into(), "r1".into())],
        };
        let live = dead("g", std::slice::from_ref(&entry), false);
        assert!(live.contains("&lt;script&gt;") && !live.contains("<script>"));
        assert_eq!(live.matches("<form").count(), 4);
        assert!(!dead("g", &[entry], true).contains("<form"));
    }
}
