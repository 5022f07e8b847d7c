//! Shared test harness: a mock upstream, a proxy in file mode on a temp
//! config, and a small HTTP client.
#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use strake_crds::token::Token;
use strake_mock_upstream::{Keys, MockConfig, MockUpstream};
pub use strake_proxy::Replicas;
use strake_proxy::{ConfigSource, Options, ReloadTiming, Running, Settings};

/// The real key every mock provider expects.
pub const KEY: &str = "sk-real-upstream-key-7d3f9a";

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "strake-proxy-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `text` to `path` atomically (write + rename), as editors and
/// config management do.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub async fn mock() -> MockUpstream {
    MockUpstream::start(MockConfig {
        keys: Keys::all(KEY),
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

/// One token in a config: its plaintext and YAML entry.
pub struct TestToken {
    pub token: Token,
    pub yaml: String,
}

impl TestToken {
    pub fn new(name: &str, upstreams: &[&str], extra: &str) -> TestToken {
        let token = Token::mint();
        let yaml = format!(
            "  - name: {name}\n    identity: {name}@example.com\n    sha256: {}\n    upstreams: [{}]\n{extra}",
            token.hash(),
            upstreams.join(", ")
        );
        TestToken { token, yaml }
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token.expose())
    }

    pub fn expose(&self) -> &str {
        self.token.expose()
    }
}

/// All five providers, pointing at the mock, named after their provider.
pub fn upstreams_yaml(mock_url: &str) -> String {
    [
        "openai",
        "anthropic",
        "azure-openai",
        "gemini",
        "openai-compatible",
    ]
    .iter()
    .map(|p| {
        format!("  - name: {p}\n    provider: {p}\n    baseUrl: {mock_url}\n    apiKey: {KEY}\n")
    })
    .collect()
}

/// A one-message chat completion request for `model`.
pub fn chat_body(model: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

pub fn config_yaml(mock_url: &str, tokens: &[&TestToken]) -> String {
    let mut s = format!("upstreams:\n{}tokens:\n", upstreams_yaml(mock_url));
    if tokens.is_empty() {
        s = s.replace("tokens:\n", "tokens: []\n");
    }
    for t in tokens {
        s.push_str(&t.yaml);
    }
    s
}

/// [`config_yaml`] with the first upstream (openai) pointed at a port nobody
/// listens on; the others still reach the mock.
pub fn config_yaml_openai_unreachable(mock_url: &str, tokens: &[&TestToken]) -> String {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    config_yaml(mock_url, tokens).replacen(mock_url, &format!("http://{closed}"), 1)
}

pub struct Harness {
    pub dir: TempDir,
    pub config: PathBuf,
    pub proxy: Running,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

pub async fn start_proxy(config_text: &str) -> Harness {
    start_proxy_with(config_text, Settings::default()).await
}

pub async fn start_proxy_with(config_text: &str, settings: Settings) -> Harness {
    start_replica(config_text, settings, Replicas::Fixed(1)).await
}

/// A proxy that is one of `replicas` sharing each token's rate limits.
pub async fn start_replica(config_text: &str, settings: Settings, replicas: Replicas) -> Harness {
    let dir = TempDir::new();
    let config = dir.path("strake.yaml");
    std::fs::write(&config, config_text).unwrap();
    let proxy = strake_proxy::start(Options {
        source: ConfigSource::File(config.clone()),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        settings,
        replicas,
        reload: ReloadTiming {
            poll_interval: Duration::from_millis(100),
            ..ReloadTiming::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    Harness {
        dir,
        config,
        proxy,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Everything the client saw, for leak checks.
    pub fn everything(&self) -> String {
        let mut s = format!("{}\n", self.status);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        s.push_str(&self.text());
        s
    }
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy.listen_addr())
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.listen_addr()
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        self.send_bytes(method, path, headers, body.as_bytes().to_vec())
            .await
    }

    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body))).unwrap();
        let resp = self.client.request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    pub async fn post_json(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: serde_json::Value,
    ) -> Reply {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        self.send(Method::POST, path, &h, &body.to_string()).await
    }

    pub async fn admin(&self, path: &str) -> Reply {
        let req = Request::get(format!("http://{}{path}", self.proxy.admin_addr()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    /// The value of one metric line (exact label match), or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.admin("/metrics").await.text();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until `check` passes, for up to `limit`; returns the time taken.
    pub async fn eventually<F, Fut>(&self, limit: Duration, mut check: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while start.elapsed() < limit {
            if check().await {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("condition not met within {limit:?}");
    }
}

/// Sends raw bytes on a fresh connection and reads until the server closes
/// or `wait` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
