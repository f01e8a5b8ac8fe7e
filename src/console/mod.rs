//! `denorun console`: a web console for operators, over the same Redis data the admin
//! commands read: an overview of each type (its streams and workers, refreshed by bounded
//! polling that pauses while the tab is hidden) and each type's dead letters, which can be
//! requeued or deleted (one or all, each behind a confirmation).
//!
//! Safe by default (`auth`): loopback only unless `--allow-remote-console`; an access token
//! (printed at start, or `DENORUN_CONSOLE_TOKEN`) exchanged for an HttpOnly SameSite=Strict
//! cookie; every change a POST from the console's own pages; `--read-only` removes every
//! action; every action is logged.

mod auth;
mod pages;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};

use self::auth::{Access, Asked};
use crate::admin::{board, dead};
use crate::config::RedisTarget;
use crate::keys::Keys;
use crate::topology::Conn;

/// The most dead letters a page lists, and an action on "all" takes.
const MOST_DEAD: usize = 1000;

/// How `denorun console` was asked to run.
pub struct Options {
    pub listen: SocketAddr,
    pub allow_remote: bool,
    pub read_only: bool,
    /// Seconds between refreshes of an open page.
    pub refresh_s: u64,
    pub types: Vec<String>,
}

struct Console {
    conn: Conn,
    types: Vec<Keys>,
    token: String,
    read_only: bool,
    refresh_s: u64,
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
    let types = options.types.iter().map(|t| Keys::of(t)).collect::<Result<Vec<_>, _>>()?;
    let token = match std::env::var("DENORUN_CONSOLE_TOKEN") {
        Ok(token) if token.len() >= 16 => token,
        Ok(_) => {
            anyhow::bail!("DENORUN_CONSOLE_TOKEN must be at least 16 characters; make one with: openssl rand -hex 16")
        }
        Err(_) => hex::encode(rand::random::<[u8; 16]>()),
    };
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let conn = redis.connect().await?;
        let listener = tokio::net::TcpListener::bind(options.listen).await.map_err(|e| {
            anyhow::anyhow!("cannot serve the console on {}: {e}; choose another --listen address", options.listen)
        })?;
        let bound = listener.local_addr()?;
        let refresh_s = options.refresh_s.clamp(1, 3600);
        let console = Arc::new(Console { conn, types, token, read_only: options.read_only, refresh_s });
        println!("denorun console: http://{bound}/?token={}", console.token);
        log::info!(
            "console on http://{bound}/ for {}{}",
            options.types.join(", "),
            if options.read_only { " (read-only)" } else { "" }
        );
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let console = console.clone();
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let console = console.clone();
                async move { Ok::<_, Infallible>(console.answer(request).await) }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    })
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header("Cache-Control", "no-store")
        .header("X-Frame-Options", "DENY")
        .header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn redirect(location: &str, cookie: Option<String>) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(StatusCode::SEE_OTHER).header(hyper::header::LOCATION, location);
    if let Some(cookie) = cookie {
        response = response.header(hyper::header::SET_COOKIE, cookie);
    }
    response.body(Full::new(Bytes::new())).expect("a valid response")
}

impl Console {
    async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
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
        match auth::decide(&asked, &self.token, self.read_only) {
            Access::Allowed => {}
            Access::SetCookie { location } => return redirect(&location, Some(auth::set_cookie(&self.token))),
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
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let answered = match (method.as_str(), parts.as_slice()) {
            ("GET", [""]) => self.overview().await,
            ("GET", ["dead", t]) => match self.keys(t) {
                Some(keys) => self.dead_page(keys).await,
                None => Ok(respond(StatusCode::NOT_FOUND, "text/plain", format!("no type {t} in this console\n"))),
            },
            ("POST", ["dead", t, what @ ("requeue" | "delete")]) => match self.keys(t) {
                Some(keys) => {
                    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    self.dead_action(keys, what, &body).await
                }
                None => Ok(respond(StatusCode::NOT_FOUND, "text/plain", format!("no type {t} in this console\n"))),
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

    async fn overview(&self) -> anyhow::Result<Response<Full<Bytes>>> {
        let mut body = String::new();
        for keys in &self.types {
            let board = board::read(&mut self.conn.clone(), keys).await?;
            body.push_str(&pages::overview(keys.worker_type(), &board));
        }
        Ok(respond(StatusCode::OK, "text/html; charset=utf-8", pages::page("overview", &body, self.refresh_s)))
    }

    async fn dead_page(&self, keys: &Keys) -> anyhow::Result<Response<Full<Bytes>>> {
        let entries = dead::list(&mut self.conn.clone(), keys, MOST_DEAD).await?;
        let body = pages::dead(keys.worker_type(), &entries, self.read_only);
        let title = format!("{} dead letters", keys.worker_type());
        Ok(respond(StatusCode::OK, "text/html; charset=utf-8", pages::page(&title, &body, self.refresh_s)))
    }

    /// Requeues or deletes one dead letter (`id`) or all (`all=1`), once `confirm=yes`.
    async fn dead_action(&self, keys: &Keys, what: &str, body: &[u8]) -> anyhow::Result<Response<Full<Bytes>>> {
        let form: Vec<(String, String)> =
            deno_runtime::deno_core::url::form_urlencoded::parse(body).into_owned().collect();
        let value = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        if value("confirm") != Some("yes") {
            return Ok(respond(StatusCode::BAD_REQUEST, "text/plain", "400: tick the confirmation box\n".into()));
        }
        let mut conn = self.conn.clone();
        let all = dead::list(&mut conn, keys, MOST_DEAD).await?;
        let chosen: Vec<&dead::DeadEntry> = match (value("all"), value("id")) {
            (Some("1"), _) => all.iter().collect(),
            (_, Some(id)) => all.iter().filter(|e| e.id == id).collect(),
            _ => return Ok(respond(StatusCode::BAD_REQUEST, "text/plain", "400: say id=... or all=1\n".into())),
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
            "console: {what} {} dead letter(s) of {}: {}", ids.len(), keys.worker_type(), ids.join(" ")
        );
        Ok(redirect(&format!("/dead/{}", keys.worker_type()), None))
    }
}
