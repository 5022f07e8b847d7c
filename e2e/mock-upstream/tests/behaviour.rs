//! Knobs, recording, key management, HTTP/2 and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{Call, KEY, chat_body, get, mock, mock_with, post};
use http::{Method, StatusCode};
use serde_json::json;
use strake_mock_upstream::{Behavior, Keys, MockConfig};

fn stream_body() -> String {
    chat_body("gpt-4o", "hi", json!({"stream": true}))
}

#[tokio::test]
async fn chunks_are_paced_by_the_interval() {
    let mock = mock().await;
    let s = post(&mock, "/v1/chat/completions", &stream_body())
        .bearer(KEY)
        .header("x-mock-chunks", "4")
        .header("x-mock-interval-ms", "100")
        .stream()
        .await;
    let content: Vec<Duration> = s
        .frames
        .iter()
        .filter(|f| {
            std::str::from_utf8(&f.data)
                .unwrap()
                .contains("\"content\":\"")
        })
        .map(|f| f.at)
        .collect();
    // The role chunk carries `"content":""` too; four real ones follow it.
    assert_eq!(
        content.len(),
        5,
        "role + 4 content frames arrive separately"
    );
    let content = &content[1..];
    assert!(
        content[0] < Duration::from_millis(80),
        "first chunk at once: {content:?}"
    );
    for pair in content.windows(2) {
        let gap = pair[1] - pair[0];
        // Loose bounds: CI machines stall, but chunks must not arrive together.
        assert!(
            gap >= Duration::from_millis(70),
            "gap {gap:?} in {content:?}"
        );
    }
    assert!(content[3] >= Duration::from_millis(290));
}

#[tokio::test]
async fn defaults_apply_without_headers() {
    let mock = mock_with(MockConfig {
        keys: Keys::all(KEY),
        defaults: Behavior {
            stream_chunks: 2,
            stream_interval: Duration::from_millis(60),
            delay: Duration::from_millis(100),
            ..Behavior::default()
        },
        ..MockConfig::default()
    })
    .await;
    let started = Instant::now();
    let s = post(&mock, "/v1/chat/completions", &stream_body())
        .bearer(KEY)
        .stream()
        .await;
    assert!(started.elapsed() >= Duration::from_millis(160));
    assert_eq!(s.data().len(), 1 + 2 + 1);
}

#[tokio::test]
async fn delay_holds_the_response_head() {
    let mock = mock().await;
    let started = Instant::now();
    let r = get(&mock, "/v1/models")
        .bearer(KEY)
        .header("x-mock-delay-ms", "150")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn answers_carry_the_rate_limit_and_retry_headers_the_real_apis_send() {
    let mock = mock().await;
    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat_body("gpt-4o", "hi", json!({})),
    )
    .bearer(KEY)
    .send()
    .await;
    assert_eq!(r.status, StatusCode::OK);
    for name in [
        "x-request-id",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ] {
        assert!(r.headers.contains_key(name), "{name}");
    }
    assert!(!r.headers.contains_key("x-should-retry"));

    let body = json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let r = post(&mock, "/v1/messages", &body)
        .anthropic(KEY)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.contains_key("request-id"));
    for kind in ["requests", "tokens", "input-tokens", "output-tokens"] {
        let limit: u64 = r.headers[format!("anthropic-ratelimit-{kind}-limit").as_str()]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let remaining: u64 = r.headers[format!("anthropic-ratelimit-{kind}-remaining").as_str()]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(remaining < limit, "{kind}");
        let reset = r.headers[format!("anthropic-ratelimit-{kind}-reset").as_str()]
            .to_str()
            .unwrap();
        assert!(reset.parse::<jiff::Timestamp>().is_ok(), "{reset}");
    }

    // Errors say whether a retry can help, as the providers' do.
    for (status, retry) in [
        ("400", "false"),
        ("404", "false"),
        ("429", "true"),
        ("500", "true"),
        ("529", "true"),
    ] {
        let r = post(&mock, "/v1/messages", &body)
            .anthropic(KEY)
            .header("x-mock-status", status)
            .send()
            .await;
        assert_eq!(r.headers["x-should-retry"], retry, "{status}");
    }
    let r = post(&mock, "/v1/messages", &body)
        .anthropic("sk-wrong")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["x-should-retry"], "false");
}

#[tokio::test]
async fn status_knob_gives_provider_shaped_errors() {
    let mock = mock().await;
    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat_body("gpt-4o", "hi", json!({})),
    )
    .bearer(KEY)
    .header("x-mock-status", "429")
    .send()
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");

    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat_body("gpt-4o", "hi", json!({})),
    )
    .bearer(KEY)
    .header("x-mock-status", "500")
    .send()
    .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json()["error"]["type"], "server_error");

    let body = json!({"model": "claude-x", "max_tokens": 5, "messages": []}).to_string();
    let r = post(&mock, "/v1/messages", &body)
        .anthropic(KEY)
        .header("x-mock-status", "529")
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 529);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "overloaded_error");

    let r = post(
        &mock,
        "/v1beta/models/g:generateContent",
        r#"{"contents":[]}"#,
    )
    .header("x-goog-api-key", KEY)
    .header("x-mock-status", "503")
    .send()
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"]["status"], "UNAVAILABLE");
    assert_eq!(r.json()["error"]["code"], 503);
}

#[tokio::test]
async fn knobs_travel_in_the_model_name() {
    let mock = mock().await;
    let body = chat_body("gpt-4o@status=418", "hi", json!({}));
    let r = post(&mock, "/v1/chat/completions", &body)
        .bearer(KEY)
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 418);

    let body = chat_body("gpt-4o@words=3,chunks=1", "hi", json!({"stream": true}));
    let s = post(&mock, "/v1/chat/completions", &body)
        .bearer(KEY)
        .stream()
        .await;
    let data = s.data();
    assert_eq!(data.len(), 3);
    assert_eq!(data[1]["choices"][0]["delta"]["content"], "This is a");

    // A header beats the model suffix.
    let body = chat_body("gpt-4o@status=500", "hi", json!({}));
    let r = post(&mock, "/v1/chat/completions", &body)
        .bearer(KEY)
        .header("x-mock-status", "200")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat_body("m@nonsense=1", "hi", json!({})),
    )
    .bearer(KEY)
    .send()
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn drop_cuts_the_stream_after_k_chunks() {
    let mock = mock().await;
    for http2 in [false, true] {
        let mut call = post(&mock, "/v1/chat/completions", &stream_body())
            .bearer(KEY)
            .header("x-mock-drop", "2");
        if http2 {
            call = call.http2();
        }
        let s = call.stream().await;
        assert!(s.failed, "the stream ends in an error (http2: {http2})");
        let data = s.data();
        assert_eq!(
            data.len(),
            3,
            "role chunk + 2 content chunks (http2: {http2})"
        );
        assert!(!s.text().contains("[DONE]"));
    }

    // A plain JSON body is cut halfway after a full-length head.
    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat_body("m", "hi", json!({})),
    )
    .bearer(KEY)
    .header("x-mock-drop", "0")
    .stream()
    .await;
    assert!(r.failed);
    let sent: usize = r.frames.iter().map(|f| f.data.len()).sum();
    let announced: usize = r.headers["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sent, announced / 2);
}

#[tokio::test]
async fn words_make_huge_bodies() {
    let mock = mock().await;
    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat_body("m", "hi", json!({})),
    )
    .bearer(KEY)
    .header("x-mock-words", "200000")
    .send()
    .await;
    assert!(r.body.len() > 1_000_000);
    let v = r.json();
    assert_eq!(v["usage"]["completion_tokens"], 200_000);
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content.split_whitespace().count(), 200_000);
}

#[tokio::test]
async fn requests_are_recorded_verbatim() {
    let mock = mock().await;
    let body = chat_body("gpt-4o", "hi", json!({}));
    post(&mock, "/v1/chat/completions?trace=1", &body)
        .bearer(KEY)
        .header("x-custom", "a")
        .header("x-custom", "b")
        .send()
        .await;
    post(&mock, "/v1/chat/completions", &body)
        .bearer("sk-strk-leaked")
        .send()
        .await;
    get(&mock, "/__mock/health").send().await; // control calls are not recorded

    let all = mock.requests();
    assert_eq!(all.len(), 2);
    let first = &all[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/chat/completions?trace=1");
    assert_eq!(first.version, "HTTP/1.1");
    assert_eq!(
        first.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(
        first.headers_named("x-custom").collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(first.body_json().unwrap()["model"], "gpt-4o");
    assert!(!first.contains("sk-strk-"));
    assert!(
        all[1].contains("sk-strk-"),
        "rejected requests are recorded too"
    );

    let over_http = get(&mock, "/__mock/requests").send().await.json();
    assert_eq!(over_http.as_array().unwrap().len(), 2);
    let headers = over_http[0]["headers"].as_array().unwrap();
    assert!(headers.contains(&json!(["authorization", format!("Bearer {KEY}")])));
    assert_eq!(over_http[0]["body"], body);

    let r = Call::new(Method::DELETE, &mock, "/__mock/requests")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(mock.requests().is_empty());
    post(&mock, "/v1/chat/completions", &body)
        .bearer(KEY)
        .send()
        .await;
    mock.clear();
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn recording_can_be_disabled() {
    let mock = mock_with(MockConfig {
        record: false,
        ..MockConfig::default()
    })
    .await;
    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat_body("m", "hi", json!({})),
    )
    .bearer("anything")
    .send()
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "no configured key: any key passes"
    );
    assert!(mock.requests().is_empty());
    assert_eq!(
        get(&mock, "/__mock/requests").send().await.json(),
        json!([])
    );

    // ... but a credential is still required.
    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat_body("m", "hi", json!({})),
    )
    .send()
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn keys_can_be_rotated() {
    let mock = mock().await;
    let body = chat_body("m", "hi", json!({}));
    let status = |key: &'static str| {
        let call = post(&mock, "/v1/chat/completions", &body).bearer(key);
        async move { call.send().await.status }
    };
    assert_eq!(status(KEY).await, StatusCode::OK);

    mock.set_keys(Keys {
        openai: vec!["sk-new".into()],
        ..Keys::default()
    });
    assert_eq!(status(KEY).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status("sk-new").await, StatusCode::OK);

    let r = Call::new(Method::PUT, &mock, "/__mock/keys")
        .body(r#"{"openai": ["sk-newer"]}"#)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(status("sk-new").await, StatusCode::UNAUTHORIZED);
    assert_eq!(status("sk-newer").await, StatusCode::OK);
    assert_eq!(mock.keys().openai, ["sk-newer"]);
}

#[tokio::test]
async fn serves_h2c() {
    let mock = mock().await;
    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat_body("m", "hi", json!({})),
    )
    .bearer(KEY)
    .http2()
    .send()
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(mock.requests()[0].version, "HTTP/2.0");
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let mock = mock().await;
    let addr = mock.addr();
    assert_eq!(
        get(&mock, "/__mock/health").send().await.status,
        StatusCode::OK
    );
    mock.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_lets_streams_finish() {
    let mock = mock().await;
    let call = post(&mock, "/v1/chat/completions", &stream_body())
        .bearer(KEY)
        .header("x-mock-interval-ms", "50");
    let stream = tokio::spawn(call.stream());
    tokio::time::sleep(Duration::from_millis(60)).await;
    mock.shutdown().await;
    let s = stream.await.unwrap();
    assert!(!s.failed);
    assert!(s.text().ends_with("data: [DONE]\n\n"));
}
