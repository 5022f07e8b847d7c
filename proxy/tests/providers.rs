//! Every provider, streamed and not, through the proxy to the mock:
//! the real key arrives in the provider's header, no Strake token or client
//! credential does, the client never sees the key, and usage is counted.

mod common;

use common::*;
use serde_json::{Value, json};

struct Case {
    provider: &'static str,
    path: &'static str,
    /// Header (or query, when `None`) carrying the Strake token.
    header: Option<&'static str>,
    extra_headers: &'static [(&'static str, &'static str)],
    body: Value,
    /// Header the upstream must receive the real key in, and its value prefix.
    key_header: &'static str,
    key_prefix: &'static str,
}

fn cases(stream: bool) -> Vec<Case> {
    let chat = |model: &str| {
        let mut b =
            json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]});
        if stream {
            b["stream"] = true.into();
            b["stream_options"] = json!({"include_usage": true});
        }
        b
    };
    let mut anthropic = json!({"model": "claude-3-5-sonnet-latest", "max_tokens": 64, "messages": [{"role": "user", "content": "hello there"}]});
    if stream {
        anthropic["stream"] = true.into();
    }
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]});
    vec![
        Case {
            provider: "openai",
            path: "/v1/chat/completions",
            header: Some("authorization"),
            extra_headers: &[],
            body: chat("gpt-4o"),
            key_header: "authorization",
            key_prefix: "Bearer ",
        },
        Case {
            provider: "openai-compatible",
            path: "/v1/chat/completions",
            header: Some("authorization"),
            extra_headers: &[],
            body: chat("llama-3.1-8b"),
            key_header: "authorization",
            key_prefix: "Bearer ",
        },
        Case {
            provider: "anthropic",
            path: "/v1/messages",
            header: Some("x-api-key"),
            extra_headers: &[("anthropic-version", "2023-06-01")],
            body: anthropic,
            key_header: "x-api-key",
            key_prefix: "",
        },
        Case {
            provider: "azure-openai",
            path: "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            header: Some("api-key"),
            extra_headers: &[],
            body: chat("gpt-4o"),
            key_header: "api-key",
            key_prefix: "",
        },
        Case {
            provider: "gemini",
            path: if stream {
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
            } else {
                "/v1beta/models/gemini-2.0-flash:generateContent"
            },
            // Streaming uses the query parameter, plain uses the header.
            header: if stream { None } else { Some("x-goog-api-key") },
            extra_headers: &[],
            body: gemini,
            key_header: "x-goog-api-key",
            key_prefix: "",
        },
    ]
}

/// Usage as the test reads it from a response, independently of the proxy's parser.
fn reported_usage(body: &str) -> (u64, u64) {
    fn walk(v: &Value, acc: &mut (u64, u64)) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if let Some(n) = v.as_u64() {
                        match k.as_str() {
                            "prompt_tokens" | "input_tokens" | "promptTokenCount" => {
                                acc.0 = acc.0.max(n)
                            }
                            "completion_tokens" | "output_tokens" | "candidatesTokenCount" => {
                                acc.1 = acc.1.max(n)
                            }
                            _ => {}
                        }
                    }
                    walk(v, acc);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, acc)),
            _ => {}
        }
    }
    let mut acc = (0, 0);
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        walk(&v, &mut acc);
    } else {
        for line in body.lines() {
            if let Some(data) = line.strip_prefix("data:")
                && let Ok(v) = serde_json::from_str::<Value>(data.trim())
            {
                walk(&v, &mut acc);
            }
        }
    }
    acc
}

async fn every_provider(stream: bool) {
    let mock = mock().await;
    let tokens: Vec<TestToken> = cases(stream)
        .iter()
        .map(|c| TestToken::new(&format!("t-{}", c.provider), &[c.provider], ""))
        .collect();
    let h = start_proxy(&config_yaml(
        &mock.url(),
        &tokens.iter().collect::<Vec<_>>(),
    ))
    .await;
    let mut expected = Vec::new();
    for (case, token) in cases(stream).into_iter().zip(&tokens) {
        mock.clear();
        let bearer = token.bearer();
        let mut headers: Vec<(&str, &str)> = case.extra_headers.to_vec();
        let path;
        match case.header {
            Some("authorization") => headers.push(("authorization", &bearer)),
            Some(name) => headers.push((name, token.expose())),
            None => {}
        }
        let path = if case.header.is_none() {
            path = format!("{}&key={}", case.path, token.expose());
            path.as_str()
        } else {
            case.path
        };
        // A stray cookie and proxy credential must not travel either.
        headers.push(("cookie", "session=abc"));
        let reply = h.post_json(path, &headers, case.body.clone()).await;
        assert_eq!(reply.status, 200, "{}: {}", case.provider, reply.text());
        assert!(
            !reply.everything().contains(KEY),
            "{}: the client saw the key",
            case.provider
        );
        if stream {
            let ct = reply.headers["content-type"].to_str().unwrap();
            assert!(
                ct.starts_with("text/event-stream"),
                "{}: {ct}",
                case.provider
            );
        }

        let recorded = mock.requests();
        assert_eq!(recorded.len(), 1, "{}", case.provider);
        let r = &recorded[0];
        let values: Vec<&str> = r.headers_named(case.key_header).collect();
        assert_eq!(
            values,
            [format!("{}{KEY}", case.key_prefix)],
            "{}",
            case.provider
        );
        assert!(
            !r.contains("sk-strk-"),
            "{}: a Strake token reached the upstream: {r:?}",
            case.provider
        );
        for other in [
            "authorization",
            "x-api-key",
            "api-key",
            "x-goog-api-key",
            "cookie",
        ] {
            if other != case.key_header {
                assert!(
                    r.header(other).is_none(),
                    "{}: {other} was forwarded",
                    case.provider
                );
            }
        }
        assert!(!r.path.contains("key="), "{}: {}", case.provider, r.path);
        assert_eq!(r.header("host"), Some(mock.addr().to_string().as_str()));
        assert_eq!(
            r.body_json(),
            Some(case.body.clone()),
            "{}: body forwarded untouched",
            case.provider
        );

        let (input, output) = reported_usage(&reply.text());
        assert!(
            input > 0 && output > 0,
            "{}: the mock reports usage: {}",
            case.provider,
            reply.text()
        );
        expected.push((format!("t-{}", case.provider), case.provider, input, output));
    }

    let usage = h.admin("/usage").await.json();
    for (name, upstream, input, output) in expected {
        let entry = usage["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} missing from /usage: {usage}"));
        assert_eq!(entry["requests"], 1, "{name}");
        assert_eq!(entry["inputTokens"], input, "{name}");
        assert_eq!(entry["outputTokens"], output, "{name}");
        assert!(entry["lastUsedAt"].as_u64().unwrap() > 1_700_000_000);
        let labels =
            format!("{{identity=\"{name}@example.com\",token=\"{name}\",upstream=\"{upstream}\"");
        assert_eq!(
            h.metric(&format!("strake_input_tokens_total{labels}}}"))
                .await,
            input as f64
        );
        assert_eq!(
            h.metric(&format!("strake_output_tokens_total{labels}}}"))
                .await,
            output as f64
        );
        assert_eq!(
            h.metric(&format!(
                "strake_requests_total{labels},status_class=\"2xx\"}}"
            ))
            .await,
            1.0
        );
    }
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn every_provider_plain() {
    every_provider(false).await;
}

#[tokio::test]
async fn every_provider_streaming() {
    every_provider(true).await;
}

#[tokio::test]
async fn one_token_many_upstreams_routes_by_style_and_prefix() {
    let mock = mock().await;
    let t = TestToken::new(
        "multi",
        &["openai", "anthropic", "azure-openai", "gemini"],
        "",
    );
    let h = start_proxy(&config_yaml(&mock.url(), &[&t])).await;
    let bearer = t.bearer();
    let auth = [("authorization", bearer.as_str())];

    // Claude Code style: bearer token + anthropic-version on /v1/messages.
    let r = h
        .post_json(
            "/v1/messages",
            &[auth[0], ("anthropic-version", "2023-06-01")],
            json!({"model": "claude-3-5-haiku", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        mock.requests().last().unwrap().header("x-api-key"),
        Some(KEY)
    );

    // Cursor style: OpenAI chat on the same base URL.
    let r = h
        .post_json(
            "/v1/chat/completions",
            &auth,
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        mock.requests().last().unwrap().header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );

    // Explicit prefix, stripped before forwarding.
    let r = h
        .send(http::Method::GET, "/openai/v1/models", &auth, "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.requests().last().unwrap().path, "/v1/models");

    // Azure's own path shape is not mistaken for the `openai` prefix.
    let r = h
        .post_json(
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            &[("api-key", t.expose())],
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let last = mock.requests().last().unwrap().clone();
    assert_eq!(
        last.path,
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(last.header("api-key"), Some(KEY));
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn routing_errors_are_clear_and_in_the_clients_style() {
    let mock = mock().await;
    let t = TestToken::new("two", &["openai", "openai-compatible"], "");
    let h = start_proxy(&config_yaml(&mock.url(), &[&t])).await;
    let bearer = t.bearer();
    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", &bearer)],
            json!({"model": "gpt-4o"}),
        )
        .await;
    assert_eq!(r.status, 400);
    let m = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        m.contains("openai, openai-compatible") && m.contains("/openai/"),
        "{m}"
    );
    let r = h
        .post_json(
            "/v1/messages",
            &[
                ("x-api-key", t.expose()),
                ("anthropic-version", "2023-06-01"),
            ],
            json!({"model": "claude"}),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    assert!(mock.requests().is_empty());
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn streams_cut_short_are_still_accounted() {
    use http_body_util::{BodyExt, Full};
    let mock = mock().await;
    let t = TestToken::new("t", &["anthropic"], "");
    let h = start_proxy(&config_yaml(&mock.url(), &[&t])).await;
    let usage_of = |h: &Harness| {
        let admin = h.proxy.admin_addr();
        async move {
            let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            let r = client
                .request(
                    http::Request::get(format!("http://{admin}/usage"))
                        .body(Full::default())
                        .unwrap(),
                )
                .await
                .unwrap();
            let v: Value =
                serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
            v["tokens"][0].clone()
        }
    };
    let stream_request = |extra: (&'static str, &'static str)| {
        http::Request::post(h.url("/v1/messages"))
            .header("x-api-key", t.expose())
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .header("x-mock-chunks", "50")
            .header("x-mock-interval-ms", "50")
            .header(extra.0, extra.1)
            .body(Full::new(bytes::Bytes::from(
                json!({"model": "claude-3-5-haiku", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "hello there"}]})
                    .to_string(),
            )))
            .unwrap()
    };

    // The client leaves after the first event (message_start: input tokens).
    let resp = h
        .client
        .request(stream_request(("x-test", "leave")))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    drop(body);
    h.eventually(std::time::Duration::from_secs(2), || async {
        let u = usage_of(&h).await;
        u["requests"] == 1 && u["inputTokens"].as_u64() > Some(0)
    })
    .await;

    // The upstream drops the connection mid-stream.
    let resp = h
        .client
        .request(stream_request(("x-mock-drop", "3")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await;
    assert!(collected.is_err(), "the client sees the cut");
    h.eventually(std::time::Duration::from_secs(2), || async {
        usage_of(&h).await["requests"] == 2
    })
    .await;
    let u = usage_of(&h).await;
    assert!(u["outputTokens"].as_u64().unwrap() >= 1, "{u}");
    h.proxy.shutdown().await;
    mock.shutdown().await;
}
