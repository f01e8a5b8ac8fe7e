//! `denorun console`: a web console for operators, over the same Redis data the admin
//! commands read: an overview of each type (its streams and workers, refreshed by bounded
//! polling that pauses while the tab is hidden), a worker's page (its hash without secrets,
//! its latest exits, charts of its requests/s and p99), each type's dead letters, which can be
//! requeued or deleted (one, the ones ticked, or all, each behind a confirmation), and a
//! request found by its ref.
//!
//! Safe by default (`auth`): loopback only unless `--allow-remote-console`; an access token
//! (printed at start, or `DENORUN_CONSOLE_TOKEN`) exchanged for an HttpOnly SameSite=Strict
//! cookie; every change a POST from the console's own pages; `--read-only` removes every
//! action; every action is logged (and written to the audit log with `--audit`).

mod auth;
mod chart;
mod history;
mod pages;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use redis::AsyncCommands;

use self::auth::{Access, Asked, Credential};
use self::history::{History, Sample};
use crate::admin::{board, dead, find, Entry};
use crate::config::RedisTarget;
use crate::keys::{Keys, EXITS_KEPT};
use crate::topology::Conn;

/// The most dead letters a page lists, and an action on "all" takes.
const MOST_DEAD: usize = 1000;

/// The largest form a POST may send, 1 MiB (a thousand ticked ids take about 40 KiB).
const MOST_FORM: usize = 1 << 20;

/// The most connections served at once; more wait to be accepted.
const MOST_CONNECTIONS: usize = 256;

/// How long a client may take to send a request's headers (also how long an idle keep-alive
/// connection is kept).
const HEADER_READ: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest a connection is served.
const MOST_CONNECTION: std::time::Duration = std::time::Duration::from_secs(600);

/// The most requests the finder lists whose fields hold the text asked for.
const MOST_MATCHES: usize = 50;

/// How `denorun console` was asked to run.
pub struct Options {
    pub listen: SocketAddr,
    pub allow_remote: bool,
    pub read_only: bool,
    /// Seconds between refreshes of an open page (the command line bounds it, 1 to 3600).
    pub refresh_s: u64,
    pub types: Vec<String>,
}

struct Console {
    conn: Conn,
    types: Vec<Keys>,
    credential: Credential,
    read_only: bool,
    refresh_s: u64,
    history: Mutex<History>,
}

/// Serves the console until the process ends.
pub fn run(redis: &RedisTarget, options: Options) -> anyhow::Result<i32> {
    if !options.listen.ip().is_loopback() && !options.allow_remote {
        anyhow::bail!(
            "--listen {} is not a loopback address; the console shows every worker and can requeue \
             and delete requests, so serving it beyond this host needs --allow-remote-console",
            options.listen
        );
    }
    let named = options.types.iter().map(|t| Keys::of(t)).collect::<Result<Vec<_>, _>>()?;
    let token = match std::env::var("DENORUN_CONSOLE_TOKEN") {
        Ok(token) if token.len() >= 16 => token,
        Ok(_) => {
            anyhow::bail!("DENORUN_CONSOLE_TOKEN must be at least 16 characters; make one with: openssl rand -hex 16")
        }
        Err(_) => hex::encode(rand::random::<[u8; 16]>()),
    };
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let mut conn = redis.connect().await?;
        let types = if named.is_empty() {
            log::info!("console: looking for worker types (one SCAN of the keyspace)");
            let found = crate::admin::types::discover(&mut conn, redis.topology.is_cluster()).await?;
            if found.is_empty() {
                anyhow::bail!(
                    "no worker type has a request stream (<type>:req:x) in this Redis yet; name the types to \
                     show: denorun console <type>..."
                );
            }
            found.iter().map(|t| Keys::of(t)).collect::<Result<Vec<_>, _>>()?
        } else {
            named
        };
        let listener = tokio::net::TcpListener::bind(options.listen).await.map_err(|e| {
            anyhow::anyhow!("cannot serve the console on {}: {e}; choose another --listen address", options.listen)
        })?;
        let bound = listener.local_addr()?;
        let history = Mutex::new(History::default());
        let credential = Credential::new(bound.port(), token);
        let (read_only, refresh_s) = (options.read_only, options.refresh_s);
        let console = Arc::new(Console { conn, types, credential, read_only, refresh_s, history });
        println!("denorun console: http://{bound}/?token={}", console.credential.token());
        log::info!(
            "console on http://{bound}/ for {}{}",
            console.types.iter().map(Keys::worker_type).collect::<Vec<_>>().join(", "),
            if options.read_only { " (read-only)" } else { "" }
        );
        tokio::spawn(console.clone().sample());
        let room = Arc::new(tokio::sync::Semaphore::new(MOST_CONNECTIONS));
        loop {
            let place = room.clone().acquire_owned().await.expect("the semaphore is never closed");
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    log::warn!("console: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let console = console.clone();
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let console = console.clone();
                async move { Ok::<_, Infallible>(console.answer(request, peer).await) }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let serving = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ)
                    .serve_connection(io, service);
                let _ = tokio::time::timeout(MOST_CONNECTION, serving).await;
                drop(place);
            });
        }
    })
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    respond_with(status, content_type, body, "default-src 'none'; frame-ancestors 'none'".to_string())
}

fn respond_with(status: StatusCode, content_type: &str, body: String, policy: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header("Cache-Control", "no-store")
        .header("X-Frame-Options", "DENY")
        .header("X-Content-Type-Options", "nosniff")
        .header("Content-Security-Policy", policy)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn not_found(worker_type: &str) -> Response<Full<Bytes>> {
    respond(StatusCode::NOT_FOUND, "text/plain", format!("no type {worker_type} in this console\n"))
}

fn html(title: &str, body: &str, console: &Console) -> Response<Full<Bytes>> {
    page(title, body, console, Some(console.refresh_s))
}

/// A page; with `refresh_s`, one that reloads itself.
fn page(title: &str, body: &str, console: &Console, refresh_s: Option<u64>) -> Response<Full<Bytes>> {
    let types: Vec<&str> = console.types.iter().map(Keys::worker_type).collect();
    let page = pages::page(title, body, &types, refresh_s);
    respond_with(StatusCode::OK, "text/html; charset=utf-8", page, pages::policy(refresh_s))
}

fn redirect(location: &str, cookie: Option<String>) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(StatusCode::SEE_OTHER).header(hyper::header::LOCATION, location);
    if let Some(cookie) = cookie {
        response = response.header(hyper::header::SET_COOKIE, cookie);
    }
    response.body(Full::new(Bytes::new())).expect("a valid response")
}

impl Console {
    async fn answer(&self, request: Request<hyper::body::Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let asked = Asked {
            method: request.method().as_str(),
            path: request.uri().path(),
            query: request.uri().query(),
            cookie: header("cookie"),
            host: header("host"),
            origin: header("origin"),
            fetch_site: header("sec-fetch-site"),
        };
        match auth::decide(&asked, &self.credential, self.read_only) {
            Access::Allowed => {}
            Access::SetCookie { location } => return redirect(&location, Some(self.credential.set_cookie())),
            Access::Unauthorized => {
                let text = "401: open the URL with ?token= that denorun console printed at its start\n";
                return respond(StatusCode::UNAUTHORIZED, "text/plain; charset=utf-8", text.into());
            }
            Access::Forbidden(why) => {
                log::warn!("console: refused {} {}: {why}", asked.method, asked.path);
                return respond(StatusCode::FORBIDDEN, "text/plain; charset=utf-8", format!("403: {why}\n"));
            }
        }
        let (method, path) = (request.method().clone(), request.uri().path().to_string());
        let query = request.uri().query().unwrap_or_default().to_string();
        let parts: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .map(|part| percent_encoding::percent_decode_str(part).decode_utf8_lossy().into_owned())
            .collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        // HEAD is answered as GET; hyper sends the headers only.
        let answered = match (method.as_str(), parts.as_slice()) {
            ("GET" | "HEAD", [""]) => self.overview().await,
            ("GET" | "HEAD", ["find"]) => self.find_page(&query).await,
            ("GET" | "HEAD", ["worker", t, id]) => match self.keys(t) {
                Some(keys) => self.worker_page(keys, id).await,
                None => Ok(not_found(t)),
            },
            ("GET" | "HEAD", ["dead", t]) => match self.keys(t) {
                Some(keys) => self.dead_page(keys).await,
                None => Ok(not_found(t)),
            },
            ("POST", ["dead", t, what @ ("requeue" | "delete")]) => match self.keys(t) {
                Some(keys) => match Limited::new(request.into_body(), MOST_FORM).collect().await {
                    Ok(body) => self.dead_action(keys, what, &body.to_bytes(), peer).await,
                    Err(e) => Ok(respond(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", format!("413: {e}\n"))),
                },
                None => Ok(not_found(t)),
            },
            _ => Ok(respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into())),
        };
        answered.unwrap_or_else(|e| {
            log::warn!("console: {method} {path}: {e:#}");
            respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("503: {e:#}\n"))
        })
    }

    fn keys(&self, worker_type: &str) -> Option<&Keys> {
        self.types.iter().find(|k| k.worker_type() == worker_type)
    }

    /// Reads every type's board each [`history::SAMPLE_EVERY`], for the charts.
    async fn sample(self: Arc<Self>) {
        let mut conn = self.conn.clone();
        loop {
            for keys in &self.types {
                if let Ok(board) = board::read(&mut conn, keys).await {
                    let mut history = self.history.lock().unwrap();
                    for row in &board.rows {
                        history.record(&keys.worker(&row.id), Sample::of(row, now_s()));
                    }
                }
            }
            self.history.lock().unwrap().sweep(now_s());
            tokio::time::sleep(history::SAMPLE_EVERY).await;
        }
    }

    async fn overview(&self) -> anyhow::Result<Response<Full<Bytes>>> {
        let mut body = String::new();
        let mut conn = self.conn.clone();
        for keys in &self.types {
            let board = board::read(&mut conn, keys).await?;
            body.push_str(&pages::overview(keys.worker_type(), &board));
        }
        Ok(html("overview", &body, self))
    }

    async fn worker_page(&self, keys: &Keys, id: &str) -> anyhow::Result<Response<Full<Bytes>>> {
        let mut conn = self.conn.clone();
        let key = keys.worker(id);
        let hash: HashMap<String, String> = conn.hgetall(&key).await?;
        let stats: HashMap<String, String> = conn.hgetall(keys.stats(id)).await?;
        let exits: redis::streams::StreamRangeReply =
            conn.xrevrange_count(keys.exits(id), "+", "-", EXITS_KEPT).await?;
        let exits: Vec<Entry> = exits.ids.iter().map(Entry::of).collect();
        let samples = self.history.lock().unwrap().of(&key);
        let body = pages::worker(&pages::WorkerPage { hash, stats, exits, samples, now_s: now_s() });
        Ok(html(&key, &body, self))
    }

    async fn dead_page(&self, keys: &Keys) -> anyhow::Result<Response<Full<Bytes>>> {
        let entries = dead::list(&mut self.conn.clone(), keys, MOST_DEAD).await?;
        let body = pages::dead(keys.worker_type(), &entries, self.read_only);
        Ok(html(&format!("{} dead letters", keys.worker_type()), &body, self))
    }

    /// `?ref=R`: the request whose ref is R, in each type that has it; when none has, the
    /// newest requests whose fields hold R (a name in the payload, say).
    async fn find_page(&self, query: &str) -> anyhow::Result<Response<Full<Bytes>>> {
        let text = form_value(query.as_bytes(), "ref").unwrap_or_default();
        let mut body = pages::find_form(&text);
        if !text.is_empty() {
            let mut conn = self.conn.clone();
            let mut by_ref = false;
            for keys in &self.types {
                let found = find::find(&mut conn, keys, &text).await?;
                if found.standing() != find::Standing::NotFound {
                    body.push_str(&pages::found(keys.worker_type(), &text, &found));
                    by_ref = true;
                }
            }
            if !by_ref {
                let mut matches = Vec::new();
                for keys in &self.types {
                    let holding = find::containing(&mut conn, keys, &text, MOST_MATCHES).await?;
                    matches.extend(holding.into_iter().map(|(stream, entry)| (keys.worker_type(), stream, entry)));
                }
                body.push_str(&pages::matches(&text, &matches));
            }
        }
        // Not refreshed: each look at the streams costs a search of them.
        Ok(page("find a request", &body, self, None))
    }

    /// Requeues or deletes the dead letters chosen (`id`, once or more) or all (`all=1`),
    /// once `confirm=yes`.
    async fn dead_action(
        &self,
        keys: &Keys,
        what: &str,
        body: &[u8],
        peer: SocketAddr,
    ) -> anyhow::Result<Response<Full<Bytes>>> {
        let form: Vec<(String, String)> =
            deno_runtime::deno_core::url::form_urlencoded::parse(body).into_owned().collect();
        let value = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        if value("confirm") != Some("yes") {
            return Ok(respond(StatusCode::BAD_REQUEST, "text/plain", "400: tick the confirmation box\n".into()));
        }
        let wanted: Vec<&str> = form.iter().filter(|(k, _)| k == "id").map(|(_, v)| v.as_str()).collect();
        let mut conn = self.conn.clone();
        let listed = dead::list(&mut conn, keys, MOST_DEAD).await?;
        let chosen: Vec<&Entry> = match (value("all"), wanted.is_empty()) {
            (Some("1"), _) => listed.iter().collect(),
            (_, false) => listed.iter().filter(|e| wanted.contains(&e.id.as_str())).collect(),
            _ => {
                let text = "400: choose one or more dead letters (id=...), or all (all=1)\n";
                return Ok(respond(StatusCode::BAD_REQUEST, "text/plain", text.into()));
            }
        };
        let ids: Vec<String> = chosen.iter().map(|e| e.id.clone()).collect();
        if what == "requeue" {
            let requests = crate::admin::request_streams(&mut conn, keys).await?;
            for entry in &chosen {
                dead::requeue(&mut conn, keys, &requests, entry).await?;
            }
        } else {
            dead::delete(&mut conn, keys, &ids).await?;
        }
        log::info!(
            event = "console_action", action = what, r#type = keys.worker_type(), count = ids.len();
            "console: {what} {} dead letter(s) of {} for {peer}: {}", ids.len(), keys.worker_type(), ids.join(" ")
        );
        crate::audit::console_action(what, keys.worker_type(), &ids, &peer.to_string());
        Ok(redirect(&format!("/dead/{}", keys.worker_type()), None))
    }
}

/// A form field's value (the first), decoded.
fn form_value(form: &[u8], name: &str) -> Option<String> {
    deno_runtime::deno_core::url::form_urlencoded::parse(form).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any form body gives a value or none, never a panic.
        #[test]
        fn any_form_is_read(form in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), name in "[a-z]{1,4}") {
            let _ = form_value(&form, &name);
            let _ = form_value(format!("{name}=%FF%&{name}").as_bytes(), &name);
        }
    }

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(form_value(b"id=1-0&confirm=yes&id=2-0", "id").as_deref(), Some("1-0"));
        assert_eq!(form_value(b"ref=a%20b+c", "ref").as_deref(), Some("a b c"));
        assert_eq!(form_value(b"x=1", "ref"), None);
    }
}
