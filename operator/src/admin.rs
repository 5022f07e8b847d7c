//! The admin HTTP server: `/healthz`, `/readyz`, `/metrics`.
//!
//! `/readyz` is 200 once the controllers run with their caches filled, and
//! also while this replica is a leader-election standby: a standby is healthy
//! and must count as ready, or a rolling update (new pod waiting for the
//! lease the old pod holds) could never complete.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::metrics::Metrics;

const STARTING: u8 = 0;
const STANDBY: u8 = 1;
const RUNNING: u8 = 2;

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Health(AtomicU8);

impl Health {
    pub fn set_standby(&self) {
        self.0.store(STANDBY, Ordering::Release);
    }

    /// Leading (or not electing) and every cache filled.
    pub fn set_running(&self) {
        self.0.store(RUNNING, Ordering::Release);
    }

    /// Leadership acquired: not ready again until the caches fill.
    pub fn set_starting(&self) {
        self.0.store(STARTING, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.0.load(Ordering::Acquire), STANDBY | RUNNING)
    }
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::AdminServer { addr, source })
}

/// Serves until `shutdown`, then gives open connections a moment to finish.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin server listening");
    }
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!(%error, "admin server accept failed");
                    continue;
                }
            },
        };
        let (health, metrics) = (health.clone(), metrics.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let response = route(&req, &health, &metrics);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

fn route<B>(req: &Request<B>, health: &Health, metrics: &Metrics) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if health.is_ready() => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n"),
        "/metrics" => Response::builder()
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(metrics.encode())))
            .expect("a static response is valid"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a static response is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, health: &Health) -> StatusCode {
        let req = Request::get(path).body(()).unwrap();
        route(&req, health, &Metrics::new()).status()
    }

    #[test]
    fn readiness_follows_the_health_state() {
        let health = Health::default();
        assert_eq!(get("/healthz", &health), StatusCode::OK);
        assert_eq!(get("/readyz", &health), StatusCode::SERVICE_UNAVAILABLE);
        health.set_standby();
        assert_eq!(get("/readyz", &health), StatusCode::OK);
        health.set_starting();
        assert_eq!(get("/readyz", &health), StatusCode::SERVICE_UNAVAILABLE);
        health.set_running();
        assert_eq!(get("/readyz", &health), StatusCode::OK);
        assert_eq!(get("/metrics", &health), StatusCode::OK);
        assert_eq!(get("/nope", &health), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn serves_over_tcp_and_stops_on_shutdown() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            Arc::new(Health::default()),
            Arc::new(Metrics::new()),
            shutdown.clone(),
        ));
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("strake_operator_leader"));
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }
}
