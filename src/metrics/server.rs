//! The metrics endpoint (`--metrics <addr>`): `/metrics` in Prometheus's text format and
//! `/healthz`, 200 while the supervisor (or sync) reaches its servers and is not draining,
//! else 503. A small
//! hyper HTTP/1.1 server on the supervisor's runtime.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};

use super::Metrics;

/// What `/healthz` answers from.
#[derive(Debug)]
pub struct Health {
    redis_up: AtomicBool,
    /// For `denorun sync`: its PostgreSQL answers.
    postgres_up: AtomicBool,
    draining: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health { redis_up: AtomicBool::new(true), postgres_up: AtomicBool::new(true), draining: AtomicBool::new(false) }
    }
}

impl Health {
    pub fn redis(&self, up: bool) {
        self.redis_up.store(up, Ordering::Relaxed);
    }

    pub fn postgres(&self, up: bool) {
        self.postgres_up.store(up, Ordering::Relaxed);
    }

    pub fn draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub(crate) fn ok(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
            && self.postgres_up.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
    }
}

/// Refuses a non-loopback address unless the operator opted in, as for the inspector:
/// the metrics name every worker and stream.
pub fn check_address(addr: SocketAddr, allow_remote: bool) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && !allow_remote {
        anyhow::bail!(
            "--metrics {addr} is not a loopback address; metrics name every worker and stream, so \
             serving them beyond this host needs --allow-remote-metrics"
        );
    }
    Ok(())
}

/// Binds `addr` and serves until the runtime ends. Binding errors are returned at once.
pub async fn serve(addr: SocketAddr, metrics: Metrics, health: Arc<Health>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}; choose another --metrics address"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (metrics, health) = (metrics.clone(), health.clone());
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = answer(request.uri().path(), &metrics, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    Ok(bound)
}

fn answer(path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (StatusCode::OK, prometheus_client::encoding::prometheus_text::CONTENT_TYPE, metrics.encode()),
        "/healthz" if health.ok() => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/healthz" => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "unavailable\n".to_string()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics or /healthz\n".to_string()),
    };
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
