//! Usage that cannot be bypassed, seen through the proxy: OpenAI-style
//! streams that do not ask for usage are counted (and the client still gets
//! the stream it would get without the proxy), `tokensPerMinute` bites on
//! them, and responses of any size are counted.

mod common;

use common::*;
use serde_json::{Value, json};

struct StreamCase {
    upstream: &'static str,
    path: &'static str,
    /// How the real key reaches the mock when the test calls it directly.
    key_header: &'static str,
    key_prefix: &'static str,
    body: Value,
}

fn stream_cases() -> Vec<StreamCase> {
    let chat = |model: &str| json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hello there"}]});
    vec![
        StreamCase {
            upstream: "openai",
            path: "/v1/chat/completions",
            key_header: "authorization",
            key_prefix: "Bearer ",
            body: chat("gpt-4o"),
        },
        StreamCase {
            upstream: "openai",
            path: "/v1/completions",
            key_header: "authorization",
            key_prefix: "Bearer ",
            body: json!({"model": "gpt-3.5-turbo-instruct", "stream": true, "max_tokens": 8, "prompt": "hello there"}),
        },
        StreamCase {
            upstream: "openai-compatible",
            path: "/v1/chat/completions",
            key_header: "authorization",
            key_prefix: "Bearer ",
            // Written by hand: spaces, and `stream_options` without the flag.
            body: json!({"model": "llama-3.1-8b", "stream": true, "stream_options": {}, "messages": [{"role": "user", "content": "hello there"}]}),
        },
        StreamCase {
            upstream: "azure-openai",
            path: "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            key_header: "api-key",
            key_prefix: "",
            body: chat("gpt-4o"),
        },
    ]
}

/// A stream with its per-response ids and timestamps replaced, so two
/// responses to the same request compare byte for byte.
fn normalised(stream: &str) -> String {
    let mut out = stream.to_owned();
    for line in stream.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(id) = chunk["id"].as_str() {
            out = out.replace(id, "ID");
        }
        if let Some(created) = chunk["created"].as_u64() {
            out = out.replace(&format!("\"created\":{created}"), "\"created\":0");
        }
    }
    out
}

/// The usage the mock reports for `body` when asked for it directly.
async fn asked_usage(h: &Harness, mock_url: &str, case: &StreamCase) -> (u64, u64) {
    let mut body = case.body.clone();
    body["stream_options"] = json!({"include_usage": true});
    let stream = direct(h, mock_url, case, body).await;
    let last = stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .rfind(|c| c["usage"].is_object())
        .unwrap_or_else(|| panic!("{}: no usage chunk: {stream}", case.path));
    (
        last["usage"]["prompt_tokens"].as_u64().unwrap(),
        last["usage"]["completion_tokens"].as_u64().unwrap(),
    )
}

/// The mock's answer to `body`, straight from it, without the proxy.
async fn direct(h: &Harness, mock_url: &str, case: &StreamCase, body: Value) -> String {
    use http_body_util::{BodyExt, Full};
    let key = format!("{}{KEY}", case.key_prefix);
    let req = http::Request::post(format!("{mock_url}{}", case.path))
        .header("content-type", "application/json")
        .header(case.key_header, key)
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let resp = h.client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "{}", case.path);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn streams_that_do_not_ask_for_usage_are_counted_and_reach_the_client_unchanged() {
    let mock = mock().await;
    let cases = stream_cases();
    let tokens: Vec<TestToken> = (0..cases.len())
        .map(|i| TestToken::new(&format!("t{i}"), &[cases[i].upstream], ""))
        .collect();
    let h = start_proxy(&config_yaml(
        &mock.url(),
        &tokens.iter().collect::<Vec<_>>(),
    ))
    .await;
    for (i, (case, token)) in cases.iter().zip(&tokens).enumerate() {
        let bearer = token.bearer();
        let auth = [("authorization", bearer.as_str())];
        mock.clear();
        let via = h.post_json(case.path, &auth, case.body.clone()).await;
        assert_eq!(via.status, 200, "{}: {}", case.path, via.text());
        assert!(
            via.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );

        // The proxy asked for usage, changing nothing else...
        let recorded = mock.requests();
        let forwarded = recorded[0].body_json().unwrap();
        assert_eq!(
            forwarded["stream_options"]["include_usage"], true,
            "{}",
            case.path
        );
        let mut as_sent = forwarded.clone();
        as_sent["stream_options"]
            .as_object_mut()
            .unwrap()
            .remove("include_usage");
        let mut expected = case.body.clone();
        if expected.get("stream_options").is_none() {
            expected["stream_options"] = json!({});
        }
        assert_eq!(as_sent, expected, "{}", case.path);

        // ...and the client reads exactly what the upstream sends when not asked.
        let without_proxy = direct(&h, &mock.url(), case, case.body.clone()).await;
        assert!(!without_proxy.contains("usage"), "{without_proxy}");
        assert_eq!(
            normalised(&via.text()),
            normalised(&without_proxy),
            "{}",
            case.path
        );

        let (input, output) = asked_usage(&h, &mock.url(), case).await;
        let usage = h.admin("/usage").await.json();
        let entry = usage["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == format!("t{i}"))
            .unwrap_or_else(|| panic!("{}: not counted: {usage}", case.path))
            .clone();
        assert_eq!(entry["requests"], 1, "{}", case.path);
        assert_eq!(entry["inputTokens"], input, "{}", case.path);
        assert_eq!(entry["outputTokens"], output, "{}", case.path);
        assert!(input > 0 && output > 0);
    }
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn tokens_per_minute_bites_on_streams_that_do_not_ask_for_usage() {
    let mock = mock().await;
    let t = TestToken::new("tpm", &["openai"], "    limits: {tokensPerMinute: 20}\n");
    let h = start_proxy(&config_yaml(&mock.url(), &[&t])).await;
    let bearer = t.bearer();
    let headers = [("authorization", bearer.as_str()), ("x-mock-words", "30")];
    let body =
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let first = h
        .post_json("/v1/chat/completions", &headers, body.clone())
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(first.text().ends_with("data: [DONE]\n\n"));
    let second = h.post_json("/v1/chat/completions", &headers, body).await;
    assert_eq!(second.status, 429, "{}", second.text());
    assert_eq!(second.json()["error"]["type"], "tokens");
    assert_eq!(second.headers["x-strake-error"], "rate_limited_tokens");
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn a_stream_request_read_two_ways_is_refused_before_it_reaches_the_upstream() {
    let mock = mock().await;
    let t = TestToken::new("t", &["openai"], "");
    let h = start_proxy(&config_yaml(&mock.url(), &[&t])).await;
    let bearer = t.bearer();
    for body in [
        r#"{"model":"gpt-4o","stream":true,"messages":[],"stream":false}"#,
        r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true,"include_usage":false}}"#,
        r#"{"model":"gpt-4o","stream":true,"#,
    ] {
        let r = h
            .send(
                http::Method::POST,
                "/v1/chat/completions",
                &[
                    ("authorization", bearer.as_str()),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.headers["x-strake-error"], "body_unreadable");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("more than once")
        );
    }
    assert!(mock.requests().is_empty());
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

/// Bodies and events over a mebibyte, with usage at their end.
#[tokio::test]
async fn responses_over_a_mebibyte_are_counted() {
    let mock = mock().await;
    let names = ["embeddings", "chat", "responses-stream"];
    let tokens: Vec<TestToken> = names
        .iter()
        .map(|n| TestToken::new(n, &["openai"], ""))
        .collect();
    let h = start_proxy(&config_yaml(
        &mock.url(),
        &tokens.iter().collect::<Vec<_>>(),
    ))
    .await;
    let inputs: Vec<String> = (0..40).map(|i| format!("document number {i}")).collect();
    let requests = [
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-large", "input": inputs}),
            "0",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "write a lot"}]}),
            "250000",
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4o", "input": "write a lot", "stream": true}),
            "250000",
        ),
    ];
    for (((path, body, words), token), name) in requests.into_iter().zip(&tokens).zip(names) {
        let bearer = token.bearer();
        let mut headers = vec![("authorization", bearer.as_str())];
        if words != "0" {
            headers.push(("x-mock-words", words));
        }
        let r = h.post_json(path, &headers, body).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.body.len() > 1024 * 1024, "{path}: {} bytes", r.body.len());
        let (input, output) = usage_at_the_end(&r.text());
        let usage = h.admin("/usage").await.json();
        let entry = usage["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{path}: not counted: {usage}"))
            .clone();
        assert_eq!(entry["inputTokens"], input, "{path}");
        assert_eq!(entry["outputTokens"], output, "{path}");
        assert!(input > 0, "{path}");
    }
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

/// The last usage a body or stream reports, read with a full parse.
fn usage_at_the_end(text: &str) -> (u64, u64) {
    let docs: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(v) => vec![v],
        Err(_) => text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect(),
    };
    let usage = docs
        .iter()
        .rev()
        .find_map(|d| {
            [&d["usage"], &d["response"]["usage"]]
                .into_iter()
                .find(|u| u.is_object())
                .cloned()
        })
        .expect("the response reports usage");
    let n = |names: [&str; 2]| names.iter().find_map(|k| usage[*k].as_u64()).unwrap_or(0);
    (
        n(["prompt_tokens", "input_tokens"]),
        n(["completion_tokens", "output_tokens"]),
    )
}
