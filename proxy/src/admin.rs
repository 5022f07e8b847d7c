//! The admin port: health, readiness, metrics and per-token usage. Never
//! exposed with the traffic port: it names every token and identity.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;

use crate::server::Proxy;

pub fn handle<B>(proxy: &Proxy, req: Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/healthz" if proxy.is_healthy() => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy: the config source stopped; changes and revocations no longer arrive\n",
        ),
        "/readyz" if proxy.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the configuration has not been loaded yet\n",
        ),
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(proxy.metrics().encode())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/usage" => {
            let snapshot = proxy.snapshot();
            let mut tokens: Vec<_> = snapshot
                .tokens()
                .filter(|p| p.state.requests.load(Ordering::Relaxed) > 0)
                .map(|p| {
                    let s = &p.state;
                    json!({
                        "name": &*p.name,
                        "identity": &*p.identity,
                        "requests": s.requests.load(Ordering::Relaxed),
                        "inputTokens": s.input_tokens.load(Ordering::Relaxed),
                        "outputTokens": s.output_tokens.load(Ordering::Relaxed),
                        // Exact, as a decimal string: a float would round it.
                        "spendUsd": s.spend.total().to_decimal_string(),
                        "unpricedRequests": s.spend.unpriced_requests(),
                        "lastUsedAt": s.last_used.load(Ordering::Relaxed),
                    })
                })
                .collect();
            tokens.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            let body =
                serde_json::to_vec(&json!({ "tokens": tokens })).expect("JSON values serialize");
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz, /metrics or /usage\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
