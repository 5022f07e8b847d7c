//! The one upstream HTTP client: pooled, rustls (ring, webpki roots),
//! HTTP/1.1 and HTTP/2 by ALPN; plain http for `http://` base URLs.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub fn build(connect_timeout: Duration, pool_idle_timeout: Duration) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .expect("ring supports rustls' default protocol versions")
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        // Below the keep-alive of most servers, so the pool rarely hands out
        // a connection the upstream is closing (hyper#2136). Requests that
        // fail on a reused connection before anything was sent are retried
        // by the client (`retry_canceled_requests`, on by default).
        .pool_idle_timeout(pool_idle_timeout)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_timeout(Duration::from_secs(20))
        .build(https)
}
