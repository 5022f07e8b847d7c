//! The `strake-proxy` binary: `mint`, startup errors, graceful shutdown on
//! SIGTERM with a stream in flight (on each of two workers) or an idle
//! keep-alive connection, and logs that never hold a key or token.

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
/// How long a signalled proxy gets to exit: a client's idle pooled
/// connection holds it for the drain window (5 s by default) first.
const EXIT: Duration = Duration::from_secs(15);

struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
    listen: SocketAddr,
    admin: SocketAddr,
    _dir: TempDir,
}

impl Proc {
    fn start(config: &str, args: &[&str]) -> Proc {
        Proc::start_with(config, args, None)
    }

    /// Starts the proxy, under the file limit that `ulimit` arguments such
    /// as `-n 48` (soft and hard) or `-Sn 64` (soft only) set, if given.
    fn start_with(config: &str, args: &[&str], ulimit: Option<&str>) -> Proc {
        let dir = TempDir::new();
        let path = dir.path("strake.yaml");
        std::fs::write(&path, config).unwrap();
        let mut command = match ulimit {
            None => Command::new(BIN),
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
                    .arg(BIN);
                sh
            }
        };
        let mut child = command
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

    /// The value of one admin metric line (exact label match), or 0.
    async fn metric(&self, series: &str) -> f64 {
        let req = http::Request::get(format!("http://{}/metrics", self.admin))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client().request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
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

/// New connections are refused once the listener is closed.
async fn refused_within_a_second(addr: SocketAddr) -> bool {
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
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
    let (first, body) = open_stream(&client(), p.listen, &t, 10).await;
    assert!(first.starts_with(b"data:"));

    p.signal("-TERM");
    assert!(
        refused_within_a_second(p.listen).await,
        "still accepting after SIGTERM"
    );

    let text = rest_of_stream(first, body).await;
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream was cut: {text}"
    );
    assert_eq!(text.matches("\"content\"").count(), 10 + 1, "{text}");
    let status = p.wait(EXIT);
    assert!(status.success(), "{status:?}");
    let logs = p.logs();
    assert!(
        logs.contains("\"output_tokens\":10") && logs.contains("\"complete\":true"),
        "{logs}"
    );
    mock.shutdown().await;
}

/// Thread per core: with two workers, new connections reach both
/// listeners, and SIGTERM lets the streams in flight on each of them finish.
#[tokio::test]
async fn two_workers_both_serve_and_both_drain_their_streams_on_sigterm() {
    let mock = mock().await;
    let t = TestToken::new("alice", &["openai"], "");
    let mut p = Proc::start(
        &config_yaml(&mock.url(), &[&t]),
        &["--workers", "2", "--shutdown-grace", "30s"],
    );
    let accepted = async |p: &Proc| {
        let mut by_worker = [0.0; 2];
        for (i, n) in by_worker.iter_mut().enumerate() {
            *n = p
                .metric(&format!(
                    "strake_worker_connections_total{{worker=\"{i}\"}}"
                ))
                .await;
        }
        by_worker
    };
    // A new connection for every request.
    let fresh = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<Bytes>>();
    for _ in 0..64 {
        let resp = fresh.request(chat(p.listen, &t)).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    let [zero, one] = accepted(&p).await;
    assert_eq!(zero + one, 64.0, "every connection was counted once");
    // The kernel hashes each connection to a listener: 64 on one worker
    // has odds of 2^-63.
    assert!(
        zero >= 1.0 && one >= 1.0,
        "worker 0: {zero}, worker 1: {one}"
    );

    // Streams in flight on both workers (each connection's worker read
    // off the counters).
    let mut streams: [Vec<_>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..24 {
        if streams.iter().all(|s| !s.is_empty()) {
            break;
        }
        let before = accepted(&p).await;
        let stream = open_stream(&fresh, p.listen, &t, 30).await;
        let after = accepted(&p).await;
        let worker = (0..2).find(|&i| after[i] > before[i]).unwrap();
        streams[worker].push(stream);
    }
    assert!(
        streams.iter().all(|s| !s.is_empty()),
        "no stream reached one of the workers"
    );

    p.signal("-TERM");
    assert!(
        refused_within_a_second(p.listen).await,
        "a worker still accepts after SIGTERM"
    );
    for (worker, in_flight) in streams.into_iter().enumerate() {
        for (first, body) in in_flight {
            let text = rest_of_stream(first, body).await;
            assert!(
                text.trim_end().ends_with("data: [DONE]"),
                "worker {worker} cut its stream: {text}"
            );
            assert_eq!(text.matches("\"content\"").count(), 30 + 1, "{text}");
        }
    }
    let status = p.wait(EXIT);
    assert!(status.success(), "{status:?}: {}", p.logs());
    mock.shutdown().await;
}

/// A rolling update's race: the client reuses an idle keep-alive connection
/// just as the proxy shuts down. In the drain window the connection stays
/// open and the response tells the client to close it.
#[tokio::test]
async fn sigterm_answers_on_an_idle_keep_alive_connection_and_asks_it_to_close() {
    let mock = mock().await;
    let t = TestToken::new("alice", &["openai"], "");
    let mut p = Proc::start(
        &config_yaml(&mock.url(), &[&t]),
        &["--shutdown-grace", "10s", "--drain-window", "3s"],
    );
    let stream = tokio::net::TcpStream::connect(p.listen).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let bearer = t.bearer();
    // Origin-form, as a client sends it on its own connection.
    let chat = || {
        let body =
            serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
        http::Request::post("/v1/chat/completions")
            .header("host", p.listen.to_string())
            .header("content-type", "application/json")
            .header("authorization", &bearer)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    let first = sender.send_request(chat()).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("connection").is_none());
    first.into_body().collect().await.unwrap();

    p.signal("-TERM");
    assert!(
        refused_within_a_second(p.listen).await,
        "still accepting after SIGTERM"
    );

    sender
        .ready()
        .await
        .expect("the idle connection stays open while draining");
    let second = sender
        .send_request(chat())
        .await
        .expect("a request on the idle connection is answered while draining");
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["connection"], "close");
    second.into_body().collect().await.unwrap();
    conn.await.unwrap().unwrap();
    let status = p.wait(EXIT);
    assert!(status.success(), "{status:?}: {}", p.logs());
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
    let status = p.wait(EXIT);
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
    p.wait(EXIT);
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

/// Opens `n` connections that send `prefix` (perhaps nothing) and then
/// nothing more.
async fn silent_sockets(addr: SocketAddr, n: usize, prefix: &[u8]) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        if !prefix.is_empty() {
            s.write_all(prefix).await.unwrap();
        }
        sockets.push(s);
    }
    sockets
}

/// Waits until the server closes `socket` (end of file or a reset),
/// for up to `limit`.
async fn closed_within(socket: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    tokio::time::timeout(limit, socket.read_to_end(&mut buf))
        .await
        .is_ok()
}

/// A streamed chat completion of `chunks` content events, 100 ms apart, with
/// usage: answered 200, its first body frame read.
async fn open_stream(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    t: &TestToken,
    chunks: u32,
) -> (Bytes, hyper::body::Incoming) {
    let chunks = chunks.to_string();
    let req = post(
        addr,
        "/v1/chat/completions",
        &[
            ("authorization", &t.bearer()),
            ("x-mock-chunks", &chunks),
            ("x-mock-interval-ms", "100"),
        ],
        serde_json::json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    (first, body)
}

/// The whole text of a stream whose `first` frame was read already.
async fn rest_of_stream(first: Bytes, mut body: hyper::body::Incoming) -> String {
    let mut text = Vec::from(&first[..]);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            text.extend_from_slice(&data);
        }
    }
    String::from_utf8(text).unwrap()
}

fn chat(addr: SocketAddr, t: &TestToken) -> http::Request<Full<Bytes>> {
    post(
        addr,
        "/v1/chat/completions",
        &[("authorization", &t.bearer())],
        serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
}

#[tokio::test]
async fn silent_sockets_and_partial_prefaces_are_closed_at_the_header_deadline() {
    let mock = mock().await;
    let t = TestToken::new("alice", &["openai"], "");
    let p = Proc::start(
        &config_yaml(&mock.url(), &[&t]),
        &["--header-read-timeout", "300ms"],
    );
    // Nothing at all; a prefix of the HTTP/2 preface (protocol detection
    // waits for the rest); an unfinished HTTP/1 request line.
    let mut sockets = silent_sockets(p.listen, 20, b"").await;
    sockets.extend(silent_sockets(p.listen, 5, b"PRI * HTTP/2.0\r\n").await);
    sockets.extend(silent_sockets(p.listen, 5, b"GET /v1/mod").await);

    // Meanwhile a real request is served.
    let resp = client().request(chat(p.listen, &t)).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();

    for (i, s) in sockets.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(10)).await,
            "socket {i} is still open"
        );
    }
    assert!(
        p.metric("strake_client_connections_timed_out_total").await >= 25.0,
        "{}",
        p.logs()
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn at_the_connection_cap_requests_wait_for_a_slot_instead_of_failing() {
    // The finding: 300 silent sockets and a low file limit kept valid
    // requests out until the attacker let go.
    let mock = mock().await;
    let t = TestToken::new("alice", &["openai"], "");
    let p = Proc::start_with(
        &config_yaml(&mock.url(), &[&t]),
        &[
            "--header-read-timeout",
            "300ms",
            "--max-connections",
            "32",
            "--workers",
            "2",
        ],
        Some("-n 128"),
    );
    let sockets = silent_sockets(p.listen, 300, b"").await;
    assert!(p.metric("strake_client_connections").await <= 32.0);

    let resp = tokio::time::timeout(
        Duration::from_secs(60),
        client().request(chat(p.listen, &t)),
    )
    .await
    .expect("the request waited forever")
    .unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    drop(sockets);
    assert!(p.metric("strake_client_connection_limit_waits_total").await >= 1.0);
    let logs = p.logs();
    assert!(
        !logs.contains("accept failed"),
        "the cap keeps the proxy below its file limit:\n{logs}"
    );
    assert!(
        !logs.contains("needs more file descriptors"),
        "32 connections fit in 128 descriptors:\n{logs}"
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn accept_failures_are_logged_at_most_once_per_interval_and_counted() {
    let mock = mock().await;
    let t = TestToken::new("alice", &["openai"], "");
    // A cap above the file limit: accepting fails for want of descriptors
    // while the silent sockets hold them, until the deadline closes them.
    let p = Proc::start_with(
        &config_yaml(&mock.url(), &[&t]),
        &["--header-read-timeout", "2s", "--max-connections", "1000"],
        Some("-n 48"),
    );
    let sockets = silent_sockets(p.listen, 100, b"").await;
    // Accepted as the last descriptors go, the request can find none left
    // for its upstream connection (a 502) or its connection is closed: a
    // client retries either.
    let status = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(resp) = client().request(chat(p.listen, &t)).await {
                let status = resp.status();
                if resp.into_body().collect().await.is_ok() && status != 502 {
                    return status;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the request waited forever");
    assert_eq!(status, 200);
    drop(sockets);
    let errors = p.metric("strake_accept_errors_total").await;
    let suppressed = p.metric("strake_accept_warnings_suppressed_total").await;
    let logged = p.logs().matches("accept failed").count();
    assert!(errors >= 2.0, "no accept failed: {}", p.logs());
    // It said so at start, and what to do about it.
    assert!(
        p.logs()
            .contains("--max-connections needs more file descriptors than the limit allows"),
        "{}",
        p.logs()
    );
    assert_eq!(p.metric("strake_file_descriptor_limit").await, 48.0);
    assert!(logged <= 2, "{logged} warnings for {errors} failures");
    assert_eq!(errors, suppressed + logged as f64);
    mock.shutdown().await;
}

/// The soft and hard "Max open files" of a process, from /proc.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut numbers = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[tokio::test]
async fn a_low_soft_file_limit_is_raised_to_the_hard_one_at_start() {
    let mock = mock().await;
    let t = TestToken::new("alice", &["openai"], "");
    // What a container runtime commonly gives: a soft limit of 1024 (here
    // 64) under a higher hard one, too low for the default cap.
    let (_, hard) = open_file_limits(std::process::id());
    assert!(
        hard > 64,
        "the test needs a hard limit above 64, not {hard}"
    );
    let p = Proc::start_with(&config_yaml(&mock.url(), &[&t]), &[], Some("-Sn 64"));
    assert_eq!(open_file_limits(p.child.id()), (hard, hard));
    assert_eq!(p.metric("strake_file_descriptor_limit").await, hard as f64);
    let logs = p.logs();
    assert!(logs.contains("raised the file descriptor limit"), "{logs}");
    // 200 connections at once, each proxied, under a soft limit that
    // would have held 30.
    let c = client();
    let requests = (0..200).map(|_| c.request(chat(p.listen, &t)));
    for resp in futures::future::join_all(requests).await {
        assert_eq!(resp.unwrap().status(), 200);
    }
    mock.shutdown().await;
}

#[tokio::test]
async fn client_chosen_values_are_capped_in_access_lines() {
    let mock = mock().await;
    let t = TestToken::new("alice", &["openai"], "");
    let mut p = Proc::start(&config_yaml(&mock.url(), &[&t]), &[]);
    let c = client();
    let huge_model = "m".repeat(900 * 1024);
    let long_path = format!("/v1/{}", "p".repeat(60 * 1024));
    for (path, model) in [
        ("/v1/chat/completions", huge_model.as_str()),
        (long_path.as_str(), "gpt-4o"),
    ] {
        let req = post(
            p.listen,
            path,
            &[("authorization", &t.bearer())],
            serde_json::json!({"model": model, "messages": []}),
        );
        let resp = c.request(req).await.unwrap();
        resp.into_body().collect().await.unwrap();
    }
    p.signal("-TERM");
    p.wait(EXIT);
    let logs = p.logs();
    let access: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"target\":\"access\""))
        .collect();
    assert_eq!(
        access.len(),
        2,
        "{}",
        logs.chars().take(4096).collect::<String>()
    );
    for (line, field, start) in [
        (access[0], "model", "mmmm"),
        (access[1], "path", "/v1/pppp"),
    ] {
        assert!(line.len() < 4096, "an access line of {} bytes", line.len());
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let value = v[field].as_str().unwrap();
        assert!(
            value.starts_with(start) && value.ends_with('…'),
            "{field}: {value}"
        );
    }
    mock.shutdown().await;
}

/// Cached and cache-written tokens are read from each provider's own
/// fields, streamed and not, and logged with the input they are part of.
#[tokio::test]
async fn cached_and_cache_write_tokens_of_every_provider_are_logged() {
    use serde_json::json;
    let mock = mock().await;
    let t = TestToken::new(
        "alice",
        &["openai", "anthropic", "gemini", "azure-openai"],
        "",
    );
    let mut p = Proc::start(&config_yaml(&mock.url(), &[&t]), &[]);
    let c = client();
    let bearer = t.bearer();
    // 4,400 bytes = 1,100 tokens at the mock: cacheable, 1,024 of them cached on a hit.
    let long = "0123456789012345678901234567890123456789".repeat(110);
    let chat = |stream: bool| json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": long}]});
    let responses = |stream: bool| json!({"model": "gpt-4o", "stream": stream, "input": long});
    // Anthropic: 1,100 cached tokens of system prompt, then 10 of question.
    let anthropic = |stream: bool| {
        json!({
            "model": "claude-sonnet-4-6", "max_tokens": 8, "stream": stream,
            "system": [{"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": &long[..40]}],
        })
    };
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": long}]}]});
    let openai_auth = [("authorization", bearer.as_str()), ("x-mock-cache", "hit")];
    let anthropic_auth = |cache: &'static str| {
        [
            ("x-api-key", t.expose()),
            ("anthropic-version", "2023-06-01"),
            ("x-mock-cache", cache),
        ]
    };
    let gemini_auth = [("x-goog-api-key", t.expose()), ("x-mock-cache", "hit")];
    let azure_auth = [("api-key", t.expose()), ("x-mock-cache", "hit")];
    let gemini_path = "/v1beta/models/gemini-2.5-flash";
    // (request, input, cached, cache writes) as the access log must show them.
    let cases = [
        (
            post(p.listen, "/v1/chat/completions", &openai_auth, chat(false)),
            1100,
            Some(1024),
            None,
        ),
        (
            post(p.listen, "/v1/chat/completions", &openai_auth, chat(true)),
            1100,
            Some(1024),
            None,
        ),
        (
            post(p.listen, "/v1/responses", &openai_auth, responses(false)),
            1100,
            Some(1024),
            None,
        ),
        (
            post(p.listen, "/v1/responses", &openai_auth, responses(true)),
            1100,
            Some(1024),
            None,
        ),
        (
            post(
                p.listen,
                "/v1/messages",
                &anthropic_auth("miss"),
                anthropic(false),
            ),
            1110,
            Some(0),
            Some(1100),
        ),
        (
            post(
                p.listen,
                "/v1/messages",
                &anthropic_auth("hit"),
                anthropic(true),
            ),
            1110,
            Some(1100),
            Some(0),
        ),
        (
            post(
                p.listen,
                &format!("{gemini_path}:generateContent"),
                &gemini_auth,
                gemini.clone(),
            ),
            1100,
            Some(1024),
            None,
        ),
        (
            post(
                p.listen,
                &format!("{gemini_path}:streamGenerateContent?alt=sse"),
                &gemini_auth,
                gemini,
            ),
            1100,
            Some(1024),
            None,
        ),
        (
            post(
                p.listen,
                "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
                &azure_auth,
                chat(true),
            ),
            1100,
            Some(1024),
            None,
        ),
    ];
    let mut expected = Vec::new();
    for (req, input, cached, written) in cases {
        let path = req.uri().path().to_owned();
        let resp = c.request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        resp.into_body().collect().await.unwrap();
        expected.push((path, input, cached, written));
    }
    p.signal("-TERM");
    p.wait(EXIT);
    let logs = p.logs();
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| l.contains("\"target\":\"access\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(access.len(), expected.len(), "{logs}");
    for (line, (path, input, cached, written)) in access.iter().zip(expected) {
        assert_eq!(line["path"], path.as_str(), "{line}");
        assert_eq!(line["input_tokens"], input, "{path}: {line}");
        assert_eq!(
            line["cached_input_tokens"].as_u64(),
            cached,
            "{path}: {line}"
        );
        assert_eq!(
            line["cache_write_tokens"].as_u64(),
            written,
            "{path}: {line}"
        );
    }
    mock.shutdown().await;
}

/// The access line of the request to `path`, once it is written.
async fn access_line(p: &Proc, path: &str) -> serde_json::Value {
    for _ in 0..250 {
        if let Some(line) = p.logs().lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["path"] == path).then_some(v)
        }) {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no access line for {path}: {}", p.logs());
}

/// Reads a streamed answer until an event naming `last` has arrived
/// whole, then hangs up.
async fn read_until_then_leave(req: http::Request<Full<Bytes>>, last: &str) {
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    while !(String::from_utf8_lossy(&seen).contains(last) && seen.ends_with(b"\n\n")) {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the final event arrives before the body ends")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.extend_from_slice(&data);
        }
    }
    drop(body);
}

#[tokio::test]
async fn a_client_that_hangs_up_after_the_final_event_is_logged_complete() {
    let mock = mock().await;
    let t = TestToken::new("alice", &["openai", "anthropic"], "");
    let p = Proc::start(&config_yaml(&mock.url(), &[&t]), &[]);
    let bearer = t.bearer();
    // The upstream keeps each stream open for a while after its last event,
    // so the client leaves before the body ends, as Codex does.
    let linger = ("x-mock-linger-ms", "3000");
    let user = serde_json::json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            "/openai/v1/chat/completions",
            serde_json::json!({"model": "gpt-4o", "stream": true, "messages": user}),
            "data: [DONE]",
        ),
        (
            "/anthropic/v1/messages",
            serde_json::json!({"model": "claude-sonnet-4-6", "max_tokens": 50, "stream": true, "messages": user}),
            "event: message_stop",
        ),
        (
            "/openai/v1/responses",
            serde_json::json!({"model": "gpt-5", "stream": true, "input": "hi"}),
            "event: response.completed\n",
        ),
    ];
    for (path, body, last) in cases {
        let mut headers = vec![("authorization", bearer.as_str()), linger];
        if path.starts_with("/anthropic") {
            headers.push(("anthropic-version", "2023-06-01"));
        }
        read_until_then_leave(post(p.listen, path, &headers, body), last).await;
        let line = access_line(&p, path).await;
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["complete"], true, "{path}: {line}");
        assert!(line["output_tokens"].as_u64().unwrap() > 0, "{line}");
    }
    // A client that leaves before the final event is not.
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-mock-interval-ms", "200"),
        linger,
    ];
    let body = serde_json::json!({"model": "gpt-4o", "stream": true, "messages": user});
    read_until_then_leave(
        post(p.listen, "/v1/chat/completions", &headers, body),
        "\"content\"",
    )
    .await;
    let line = access_line(&p, "/v1/chat/completions").await;
    assert_eq!(line["complete"], false, "{line}");
    mock.shutdown().await;
}
