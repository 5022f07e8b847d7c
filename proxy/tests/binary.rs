//! The `strake-proxy` binary: `mint`, startup errors, graceful shutdown on
//! SIGTERM with a stream in flight, and logs that never hold a key or token.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strake_crds::token::{self, TokenHash};

const BIN: &str = env!("CARGO_BIN_EXE_strake-proxy");

struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
    listen: SocketAddr,
    admin: SocketAddr,
    _dir: TempDir,
}

impl Proc {
    fn start(config: &str, args: &[&str]) -> Proc {
        let dir = TempDir::new();
        let path = dir.path("strake.yaml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap());
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "serving"
                {
                    let _ = tx.send((
                        v["listen"].as_str().unwrap().parse().unwrap(),
                        v["admin"].as_str().unwrap().parse().unwrap(),
                    ));
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let (listen, admin) = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the proxy did not start: {}", stderr.lock().unwrap()));
        Proc {
            child,
            stderr,
            listen,
            admin,
            _dir: dir,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "the proxy did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: serde_json::Value,
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

#[test]
fn mint_prints_a_valid_token_and_its_hash() {
    let out = Command::new(BIN).args(["mint", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = v["token"].as_str().unwrap();
    assert_eq!(token::check(t), Ok(()));
    assert_eq!(v["sha256"].as_str().unwrap(), TokenHash::of(t).to_hex());

    let out = Command::new(BIN).arg("mint").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let token_line = text
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .unwrap()
        .trim();
    let hash_line = text
        .lines()
        .find_map(|l| l.strip_prefix("sha256:"))
        .unwrap()
        .trim();
    assert_eq!(TokenHash::of(token_line).to_hex(), hash_line);
}

#[test]
fn a_bad_config_at_startup_exits_with_a_clear_message() {
    let dir = TempDir::new();
    let path = dir.path("strake.yaml");
    std::fs::write(&path, format!("upstreams:\n  - name: openai\n    provider: openai\n    baseUrl: nope\n    apiKey: {KEY}\ntokens: []\n")).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("baseUrl"), "{err}");
    assert!(!err.contains(KEY), "{err}");

    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config FILE"));
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish() {
    let mock = mock().await;
    let t = TestToken::new("alice", &["openai"], "");
    let mut p = Proc::start(
        &config_yaml(&mock.url(), &[&t]),
        &["--shutdown-grace", "10s"],
    );
    let bearer = t.bearer();
    let req = post(
        p.listen,
        "/v1/chat/completions",
        &[
            ("authorization", &bearer),
            ("x-mock-chunks", "10"),
            ("x-mock-interval-ms", "100"),
        ],
        serde_json::json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"data:"));

    p.signal("-TERM");
    // New connections are refused once the listener is closed.
    let addr = p.listen;
    let refused = async {
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    assert!(refused.await, "still accepting after SIGTERM");

    let mut rest = Vec::from(&first[..]);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            rest.extend_from_slice(&data);
        }
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream was cut: {text}"
    );
    assert_eq!(text.matches("\"content\"").count(), 10 + 1, "{text}");
    let status = p.wait(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    let logs = p.logs();
    assert!(
        logs.contains("\"output_tokens\":10") && logs.contains("\"complete\":true"),
        "{logs}"
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn the_grace_period_bounds_the_drain() {
    let mock = mock().await;
    let t = TestToken::new("alice", &["openai"], "");
    let mut p = Proc::start(
        &config_yaml(&mock.url(), &[&t]),
        &["--shutdown-grace", "300ms"],
    );
    let bearer = t.bearer();
    let req = post(
        p.listen,
        "/v1/chat/completions",
        &[
            ("authorization", &bearer),
            ("x-mock-chunks", "100"),
            ("x-mock-interval-ms", "100"),
        ],
        serde_json::json!({"model": "gpt-4o", "stream": true, "messages": []}),
    );
    let resp = client().request(req).await.unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    let start = Instant::now();
    p.signal("-INT");
    let status = p.wait(Duration::from_secs(5));
    assert!(status.success(), "{status:?}: {}", p.logs());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn logs_hold_neither_keys_nor_tokens() {
    let mock = mock().await;
    let t = TestToken::new("alice", &["openai", "anthropic", "gemini"], "");
    let revoked = TestToken::new("revoked", &["openai"], "");
    let mut p = Proc::start(&config_yaml(&mock.url(), &[&t]), &[]);
    let c = client();
    let bearer = t.bearer();
    let chat =
        serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let sends = [
        post(
            p.listen,
            "/v1/chat/completions",
            &[("authorization", &bearer)],
            chat.clone(),
        ),
        post(
            p.listen,
            "/v1/chat/completions",
            &[("authorization", &format!("Bearer {}", revoked.expose()))],
            chat.clone(),
        ),
        post(
            p.listen,
            "/v1/chat/completions",
            &[(
                "authorization",
                &format!("Bearer {}x", &t.expose()[..t.expose().len() - 1]),
            )],
            chat.clone(),
        ),
        post(
            p.listen,
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-proj-not-a-strake-token")],
            chat.clone(),
        ),
        post(
            p.listen,
            &format!(
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key={}",
                t.expose()
            ),
            &[],
            serde_json::json!({"contents": [{"parts": [{"text": "hi"}]}]}),
        ),
        post(
            p.listen,
            "/v1/messages",
            &[
                ("x-api-key", t.expose()),
                ("anthropic-version", "2023-06-01"),
                ("x-mock-status", "401"),
            ],
            serde_json::json!({"model": "claude-3-5-haiku", "max_tokens": 5, "messages": []}),
        ),
    ];
    for req in sends {
        let resp = c.request(req).await.unwrap();
        resp.into_body().collect().await.unwrap();
    }
    // Admin endpoints too.
    for path in ["/metrics", "/usage"] {
        let resp = c
            .request(
                http::Request::get(format!("http://{}{path}", p.admin))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            !body.contains(KEY) && !body.contains("sk-strk-"),
            "{path}: {body}"
        );
    }
    p.signal("-TERM");
    p.wait(Duration::from_secs(5));
    let logs = p.logs();
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("\"target\":\"access\""))
            .count(),
        6,
        "{logs}"
    );
    for secret in [
        KEY,
        t.expose(),
        revoked.expose(),
        "sk-strk-",
        "sk-proj-not-a-strake-token",
        &t.expose()[8..20],
    ] {
        assert!(!logs.contains(secret), "the logs contain {secret}:\n{logs}");
    }
    assert!(
        logs.contains("\"path\":\"/v1beta/models/gemini-2.0-flash:streamGenerateContent\""),
        "no query in paths"
    );
    mock.shutdown().await;
}
