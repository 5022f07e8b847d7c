//! What a token may reach and what the proxy will not relay: inference
//! endpoints only unless `endpoints` opens more; models a restricted token
//! cannot be sure of; the upstream refusing the platform's key; a protocol
//! switch; credentials and account selectors where the client put them.

mod common;

use std::time::Duration;

use common::*;
use http::Method;
use serde_json::json;

fn method(m: &str) -> Method {
    Method::from_bytes(m.as_bytes()).unwrap()
}

/// The five upstreams, with `endpoints` added to the one named `name`.
fn with_upstream_endpoints(config: String, name: &str, endpoints: &str) -> String {
    let entry = format!("  - name: {name}\n    provider: {name}\n");
    assert!(config.contains(&entry));
    config.replacen(&entry, &format!("{entry}    endpoints: {endpoints}\n"), 1)
}

#[tokio::test]
async fn a_token_reaches_only_inference_endpoints_by_default() {
    let mock = mock().await;
    let t = TestToken::new(
        "t",
        &["openai", "anthropic"],
        "    allowedModels: [\"gpt-4o*\", \"claude-*\"]\n",
    );
    let h = start_proxy(&config_yaml(&mock.url(), &[&t])).await;
    let auth = t.bearer();
    let refused = [
        ("DELETE", "/v1/files/file-abc123"),
        ("GET", "/v1/files/file-abc123/content"),
        ("GET", "/v1/organization/api_keys"),
        ("POST", "/v1/fine_tuning/jobs"),
        ("GET", "/v1/batches"),
        ("GET", "/v1/responses/resp_abc123"),
        ("GET", "/v1/chat/completions"),
        ("TRACE", "/v1/chat/completions"),
        ("FOO", "/v1/chat/completions"),
        ("POST", "/openai/v1/files"),
    ];
    for (m, path) in refused {
        let r = h
            .send(method(m), path, &[("authorization", &auth)], "")
            .await;
        assert_eq!(r.status, 403, "{m} {path}: {}", r.text());
        assert_eq!(r.headers["x-strake-error"], "endpoint_not_allowed");
        let e = r.json();
        assert_eq!(e["error"]["code"], "endpoint_not_allowed", "{m} {path}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains("spec.endpoints"), "{message}");
    }
    // In the client's provider shape.
    let r = h
        .send(
            Method::POST,
            "/anthropic/v1/messages/batches",
            &[
                ("authorization", &auth),
                ("anthropic-version", "2023-06-01"),
            ],
            "{}",
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["type"], "permission_error");
    assert!(
        mock.requests().is_empty(),
        "nothing reached the upstream: {:?}",
        mock.requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );

    // Inference, and the model list SDKs and editors read at start-up.
    let ok = [("authorization", auth.as_str())];
    let r = h
        .post_json("/v1/chat/completions", &ok, chat_body("gpt-4o"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.send(Method::GET, "/v1/models", &ok, "").await.status, 200);
    let r = h
        .post_json(
            "/v1/messages",
            &[("authorization", &auth), ("anthropic-version", "2023-06-01")],
            json!({"model": "claude-3-5-haiku", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.requests().len(), 3);
    assert_eq!(
        h.metric("strake_auth_failures_total{reason=\"endpoint_not_allowed\"}")
            .await,
        (refused.len() + 1) as f64
    );
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn endpoints_on_the_token_or_the_upstream_open_more() {
    let mock = mock().await;
    let files = TestToken::new(
        "files",
        &["openai"],
        "    endpoints: [{methods: [GET], path: /v1/files}]\n",
    );
    let plain = TestToken::new("plain", &["openai"], "");
    let broad = TestToken::new(
        "broad",
        &["openai"],
        "    endpoints: [{methods: [GET, POST, DELETE], path: \"/v1/**\"}]\n",
    );
    let admin = TestToken::new(
        "admin",
        &["openai"],
        "    endpoints: [{methods: [GET], path: \"/v1/organization/**\"}]\n",
    );
    let local = TestToken::new("local", &["openai-compatible"], "");
    let config = with_upstream_endpoints(
        config_yaml(&mock.url(), &[&files, &plain, &broad, &admin, &local]),
        "openai-compatible",
        "[{methods: [POST], path: /v1/rerank}]",
    );
    let h = start_proxy(&config).await;
    let get = |t: &TestToken, path: &str| {
        let auth = t.bearer();
        let path = path.to_owned();
        let h = &h;
        async move {
            h.send(Method::GET, &path, &[("authorization", &auth)], "")
                .await
        }
    };

    let r = get(&files, "/v1/files").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "list");
    assert_eq!(get(&plain, "/v1/files").await.status, 403);
    // Only the method and path named.
    let r = h
        .send(
            Method::DELETE,
            "/v1/files/file-abc",
            &[("authorization", &files.bearer())],
            "",
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(get(&broad, "/v1/files").await.status, 200);

    // Admin APIs: a wildcard does not reach them, naming them does.
    let r = get(&broad, "/v1/organization/api_keys").await;
    assert_eq!(r.status, 403);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("organisation and admin APIs"),
        "{}",
        r.text()
    );
    let r = get(&admin, "/v1/organization/api_keys").await;
    assert!(
        !r.headers.contains_key("x-strake-error"),
        "named admin path refused: {}",
        r.text()
    );

    // An UpstreamKey's allowance applies to every token using it.
    let r = h
        .post_json(
            "/v1/rerank",
            &[("authorization", &local.bearer())],
            json!({"model": "bge", "query": "q", "documents": []}),
        )
        .await;
    assert!(!r.headers.contains_key("x-strake-error"), "{}", r.text());
    let r = h
        .post_json(
            "/v1/rerank",
            &[("authorization", &plain.bearer())],
            json!({}),
        )
        .await;
    assert_eq!(r.status, 403);

    let reached: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        reached,
        [
            "GET /v1/files",
            "GET /v1/files",
            "GET /v1/organization/api_keys",
            "POST /v1/rerank"
        ]
    );
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

/// `data` as a gzip member (one stored deflate block).
fn gzip(data: &[u8]) -> Vec<u8> {
    let crc = data.iter().fold(!0u32, |mut c, &b| {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
        c
    }) ^ !0;
    let len = data.len() as u16;
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&u32::from(len).to_le_bytes());
    out
}

#[tokio::test]
async fn a_restricted_token_is_refused_a_model_the_proxy_cannot_read() {
    let mock = mock().await;
    let t = TestToken::new(
        "t",
        &["openai", "azure-openai", "gemini"],
        "    allowedModels: [\"gpt-4o*\", \"gemini-*-flash\"]\n",
    );
    // Open the model paths widely, so the model check is what decides.
    let config = with_upstream_endpoints(
        with_upstream_endpoints(
            config_yaml(&mock.url(), &[&t]),
            "gemini",
            "[{methods: [POST], path: \"/v1beta/**\"}]",
        ),
        "azure-openai",
        "[{methods: [POST], path: \"/openai/deployments/**\"}]",
    );
    let h = start_proxy(&config).await;
    let auth = t.bearer();
    let json = br#"{"model":"o1-pro","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(&json);
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(json.iter().flat_map(|&b| [b, 0]));
    let cases = [
        (
            "JSON sent as a form",
            "/v1/chat/completions",
            vec![("content-type", "multipart/form-data; boundary=x")],
            json.clone(),
        ),
        (
            "a byte-order mark",
            "/v1/chat/completions",
            vec![("content-type", "application/json")],
            bom,
        ),
        (
            "UTF-16",
            "/v1/chat/completions",
            vec![("content-type", "application/json; charset=utf-16")],
            utf16,
        ),
        (
            "gzip",
            "/v1/chat/completions",
            vec![
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            gzip(&json),
        ),
        (
            "an identity encoding over a form",
            "/v1/chat/completions",
            vec![
                ("content-type", "multipart/form-data"),
                ("content-encoding", "identity"),
            ],
            json.clone(),
        ),
        (
            "an empty Gemini model segment",
            "/v1beta/models//gemini-1.5-pro:generateContent",
            vec![("content-type", "application/json")],
            b"{}".to_vec(),
        ),
        (
            "an empty Azure deployment segment",
            "/openai/deployments//gpt-35-turbo/chat/completions?api-version=2024-10-21",
            vec![("content-type", "application/json")],
            b"{\"messages\":[]}".to_vec(),
        ),
    ];
    for (what, path, headers, body) in cases {
        let mut all = vec![("authorization", auth.as_str())];
        all.extend(headers);
        let r = h.send_bytes(Method::POST, path, &all, body).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.headers["x-strake-error"], "model_unreadable", "{what}");
    }
    assert!(mock.requests().is_empty(), "{:?}", mock.requests());
    // Readable and allowed still works.
    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", &auth)],
            chat_body("gpt-4o"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = h
        .post_json(
            "/v1beta/models/gemini-2.0-flash:generateContent",
            &[("authorization", &auth)],
            json!({"contents": [{"parts": [{"text": "hi"}]}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn an_upstream_refusing_the_platform_key_is_the_proxys_own_error() {
    let mock = mock().await;
    let t = TestToken::new("t", &["openai", "anthropic"], "");
    const WRONG: &str = "sk-proj-rotatedAwayLongAgo00000000Zq9x";
    let config = config_yaml(&mock.url(), &[&t]).replacen(
        &format!(
            "provider: openai\n    baseUrl: {}\n    apiKey: {KEY}\n",
            mock.url()
        ),
        &format!(
            "provider: openai\n    baseUrl: {}\n    apiKey: {WRONG}\n",
            mock.url()
        ),
        1,
    );
    let h = start_proxy(&config).await;
    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", &t.bearer())],
            chat_body("gpt-4o"),
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.headers["x-strake-error"], "upstream_key_rejected");
    let e = r.json();
    assert_eq!(e["error"]["code"], "upstream_key_rejected");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rejected the platform's key"),
        "{e}"
    );
    // The mock quotes the key masked, as OpenAI does; none of it comes back.
    let seen = r.everything();
    assert!(
        !seen.contains("sk-proj-") && !seen.contains("Zq9x"),
        "part of the key reached the client: {seen}"
    );
    assert_eq!(mock.requests().len(), 1, "the upstream was asked once");

    // A 403 is the platform key's permissions, not the holder's: the same.
    let r = h
        .post_json(
            "/v1/messages",
            &[
                ("authorization", &t.bearer()),
                ("anthropic-version", "2023-06-01"),
                ("x-mock-status", "403"),
            ],
            json!({"model": "claude-3-5-haiku", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "api_error");
    assert_eq!(
        h.metric("strake_upstream_key_rejections_total{upstream=\"openai\",status=\"401\"}")
            .await,
        1.0
    );
    assert_eq!(
        h.metric("strake_upstream_key_rejections_total{upstream=\"anthropic\",status=\"403\"}")
            .await,
        1.0
    );
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn an_upstream_switching_protocols_is_not_relayed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let t = TestToken::new("t", &["openai"], "");
    let h = start_proxy(&config_yaml(&format!("http://{addr}"), &[&t])).await;
    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", &t.bearer())],
            chat_body("gpt-4o"),
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.headers["x-strake-error"], "upstream_switched_protocols");
    upstream.abort();
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn odd_credential_spellings_and_account_selectors_never_reach_the_upstream() {
    let mock = mock().await;
    let t = TestToken::new("t", &["gemini", "openai"], "");
    let h = start_proxy(&config_yaml(&mock.url(), &[&t])).await;
    let generate = "/gemini/v1beta/models/gemini-2.0-flash:generateContent";
    let body = json!({"contents": [{"parts": [{"text": "hi"}]}]});
    // An encoded `key` is the credential, as Google reads it.
    let r = h
        .post_json(
            &format!("{generate}?%6Bey={}", t.expose()),
            &[],
            body.clone(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // And it is stripped whichever credential authenticated.
    let r = h
        .post_json(
            &format!("{generate}?alt=json&%6Bey={}", t.expose()),
            &[("x-goog-api-key", t.expose())],
            body,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The project the shared key bills is the platform's to pick.
    let r = h
        .post_json(
            "/openai/v1/chat/completions",
            &[
                ("authorization", &t.bearer()),
                ("openai-organization", "org-someone-else"),
                ("openai-project", "proj-someone-else"),
            ],
            chat_body("gpt-4o"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = mock.requests();
    assert_eq!(seen.len(), 3);
    for r in &seen {
        assert!(
            !r.contains(t.expose()),
            "the token reached the upstream: {}",
            r.path
        );
        assert!(r.header("openai-organization").is_none());
        assert!(r.header("openai-project").is_none());
    }
    assert_eq!(
        seen[1].path,
        "/v1beta/models/gemini-2.0-flash:generateContent?alt=json"
    );
    h.proxy.shutdown().await;
    mock.shutdown().await;
}
