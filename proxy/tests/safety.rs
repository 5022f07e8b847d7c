//! What a request may not do: name a host, climb out of the base path,
//! send too much, or hold a connection with half a header.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use strake_proxy::Settings;

fn request(target: &str, token: &TestToken, extra: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: proxy.example\r\nAuthorization: Bearer {}\r\n{extra}Connection: close\r\n\r\n",
        token.expose()
    )
    .into_bytes()
}

#[tokio::test]
async fn requests_cannot_pick_the_host_or_escape_the_path() {
    let mock = mock().await;
    let t = TestToken::new("t", &["openai"], "");
    let h = start_proxy(&config_yaml(&mock.url(), &[&t])).await;
    let wait = Duration::from_secs(2);
    for (target, reason) in [
        ("http://169.254.169.254/latest/meta-data", "unsafe_target"),
        ("http://evil.example/v1/models", "unsafe_target"),
        ("/v1/../../admin", "unsafe_target"),
        ("/v1/%2e%2e/%2e%2e/admin", "unsafe_target"),
        ("/v1/%2E%2e/admin", "unsafe_target"),
        ("/v1/.%2e/admin", "unsafe_target"),
        ("/v1/%252e%252e/admin", "unsafe_target"),
        ("/v1%2f..%2fadmin", "unsafe_target"),
        ("/v1/models/..;/admin", "unsafe_target"),
        ("/v1/%25252525252e%25252525252e/admin", "unsafe_target"),
        ("*", "unsafe_target"),
    ] {
        let reply = raw(h.addr(), &request(target, &t, ""), wait).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{target}: {reply}");
        assert!(
            reply.contains(&format!("x-strake-error: {reason}")),
            "{target}: {reply}"
        );
    }
    let reply = raw(
        h.addr(),
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        wait,
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "CONNECT: {reply}");
    // Backslashes: refused by the HTTP parser or by the proxy, never forwarded.
    let reply = raw(h.addr(), &request("/v1\\..\\admin", &t, ""), wait).await;
    assert!(
        reply.starts_with("HTTP/1.1 400") || reply.is_empty(),
        "{reply}"
    );
    assert!(
        mock.requests().is_empty(),
        "nothing reached the upstream: {:?}",
        mock.requests()
    );

    // Host, X-Forwarded-Host and friends change nothing: the upstream is
    // the record's.
    let reply = raw(
        h.addr(),
        &request(
            "/v1/models",
            &t,
            "X-Forwarded-Host: evil.example\r\nForwarded: host=evil.example\r\n",
        ),
        wait,
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].header("host"),
        Some(mock.addr().to_string().as_str())
    );
    assert_eq!(recorded[0].path, "/v1/models");
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_whether_declared_or_streamed() {
    let mock = mock().await;
    let t = TestToken::new("t", &["openai", "anthropic"], "");
    let settings = Settings {
        max_body_bytes: 1024,
        ..Settings::default()
    };
    let h = start_proxy_with(&config_yaml(&mock.url(), &[&t]), settings).await;
    let big =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", &t.bearer())],
            big.clone(),
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    let r = h
        .post_json(
            "/v1/messages",
            &[
                ("x-api-key", t.expose()),
                ("anthropic-version", "2023-06-01"),
            ],
            big,
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["type"], "request_too_large");

    // Chunked: no Content-Length to refuse up front.
    let chunk = "y".repeat(700);
    let chunked = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        t.expose(),
        chunk.len(),
        chunk.len()
    );
    let reply = raw(h.addr(), chunked.as_bytes(), Duration::from_secs(2)).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    // A body under the limit, chunked, goes through.
    let small = "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    let chunked = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{small}\r\n0\r\n\r\n",
        t.expose(),
        small.len()
    );
    let reply = raw(h.addr(), chunked.as_bytes(), Duration::from_secs(2)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].body_len, small.len());
    assert_eq!(
        recorded[0].header("content-length"),
        Some(small.len().to_string().as_str())
    );
    assert!(recorded[0].header("transfer-encoding").is_none());
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn a_slow_loris_is_disconnected_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = mock().await;
    let t = TestToken::new("t", &["openai"], "");
    let settings = Settings {
        header_read_timeout: Duration::from_millis(500),
        ..Settings::default()
    };
    let h = start_proxy_with(&config_yaml(&mock.url(), &[&t]), settings).await;
    let mut s = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: p\r\nX-Slow: ")
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Trickling bytes does not extend the deadline.
        if s.write_all(b"a").await.is_err() {
            break;
        }
    }
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the connection stayed open");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );

    // An idle keep-alive connection is closed by the same timer.
    let mut s = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    s.write_all(&request("/v1/models", &t, "").replace_close())
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the idle connection stayed open");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    assert!(started.elapsed() < Duration::from_millis(2500));
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

trait ReplaceClose {
    fn replace_close(self) -> Vec<u8>;
}

impl ReplaceClose for Vec<u8> {
    /// Keep the connection alive after the response.
    fn replace_close(self) -> Vec<u8> {
        String::from_utf8(self)
            .unwrap()
            .replace("Connection: close\r\n", "")
            .into_bytes()
    }
}
