//! Authentication and authorization outcomes, in each provider's error
//! shape: unknown, expired, suspended, disallowed model, rate limits; and
//! upstream failures (502, 504).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use strake_proxy::Settings;

#[tokio::test]
async fn unknown_missing_malformed_expired_and_suspended() {
    let mock = mock().await;
    let expired = TestToken::new(
        "expired",
        &["openai", "anthropic", "gemini"],
        "    expiresAt: \"2020-01-01T00:00:00Z\"\n",
    );
    let suspended = TestToken::new(
        "suspended",
        &["openai", "anthropic"],
        "    suspended: true\n",
    );
    let future = TestToken::new(
        "future",
        &["openai"],
        "    expiresAt: \"2999-01-01T00:00:00Z\"\n",
    );
    let h = start_proxy(&config_yaml(&mock.url(), &[&expired, &suspended, &future])).await;
    let unknown = TestToken::new("unknown", &["openai"], "");

    // Unknown token, in each client's style.
    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", &unknown.bearer())],
            chat_body("gpt-4o"),
        )
        .await;
    assert_eq!(r.status, 401);
    let e = r.json();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(e["error"]["code"], "invalid_api_key");
    assert!(e["error"]["param"].is_null());
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Ask your platform team for a new one")
    );
    assert!(!r.text().contains(unknown.expose()));
    let r = h
        .post_json(
            "/v1/messages",
            &[
                ("x-api-key", unknown.expose()),
                ("anthropic-version", "2023-06-01"),
            ],
            json!({}),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"type": "error", "error": {"type": "authentication_error", "message": r.json()["error"]["message"]}})
    );
    let r = h
        .post_json(
            "/v1beta/models/gemini-2.0-flash:generateContent",
            &[("x-goog-api-key", unknown.expose())],
            json!({}),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(r.json()["error"]["code"], 401);

    // Nothing, or something that is not a Strake token (a raw provider key).
    let r = h
        .post_json("/v1/chat/completions", &[], chat_body("gpt-4o"))
        .await;
    assert_eq!(
        (
            r.status.as_u16(),
            r.headers["x-strake-error"].to_str().unwrap()
        ),
        (401, "missing_credential")
    );
    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-proj-abc123")],
            chat_body("gpt-4o"),
        )
        .await;
    assert_eq!(
        (
            r.status.as_u16(),
            r.headers["x-strake-error"].to_str().unwrap()
        ),
        (401, "malformed_token")
    );
    assert!(!r.text().contains("sk-proj-abc123"));

    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", &expired.bearer())],
            chat_body("gpt-4o"),
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired at 2020-01-01T00:00:00Z")
    );
    let r = h
        .post_json(
            "/v1/messages",
            &[
                ("authorization", &suspended.bearer()),
                ("anthropic-version", "2023-06-01"),
            ],
            json!({}),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["type"], "permission_error");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("suspended")
    );
    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", &future.bearer())],
            chat_body("gpt-4o"),
        )
        .await;
    assert_eq!(r.status, 200);

    assert!(
        mock.requests().len() == 1,
        "only the valid token got through"
    );
    for (reason, n) in [
        ("unknown_token", 3.0),
        ("missing_credential", 1.0),
        ("malformed_token", 1.0),
        ("expired", 1.0),
        ("suspended", 1.0),
    ] {
        assert_eq!(
            h.metric(&format!(
                "strake_auth_failures_total{{reason=\"{reason}\"}}"
            ))
            .await,
            n,
            "{reason}"
        );
    }
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn allowed_models_in_bodies_and_paths() {
    let mock = mock().await;
    let t = TestToken::new(
        "t",
        &["openai", "azure-openai", "gemini"],
        "    allowedModels: [\"gpt-4o*\", \"gemini-*-flash\"]\n",
    );
    let h = start_proxy(&config_yaml(&mock.url(), &[&t])).await;
    let auth = [("authorization", t.bearer())];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        h.post_json("/v1/chat/completions", &auth, chat_body("gpt-4o-mini"))
            .await
            .status,
        200
    );
    let r = h
        .post_json("/v1/chat/completions", &auth, chat_body("o1-pro"))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "model_not_allowed");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'o1-pro'")
    );
    // A duplicated key is not a way around the check.
    let r = h
        .send(
            http::Method::POST,
            "/v1/chat/completions",
            &[auth[0], ("content-type", "application/json")],
            r#"{"model":"gpt-4o","model":"o1-pro","messages":[]}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.headers["x-strake-error"], "model_unreadable");
    // Azure: the deployment in the path.
    let r = h
        .post_json(
            "/openai/deployments/gpt-35-turbo/chat/completions?api-version=2024-10-21",
            &[("api-key", t.expose())],
            json!({"messages": []}),
        )
        .await;
    assert_eq!(r.status, 403);
    // Gemini: the model in the path.
    let r = h
        .post_json(
            "/v1beta/models/gemini-1.5-pro:generateContent",
            &[("x-goog-api-key", t.expose())],
            json!({}),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["status"], "PERMISSION_DENIED");
    let r = h
        .post_json(
            "/v1beta/models/gemini-2.0-flash:generateContent",
            &[("x-goog-api-key", t.expose())],
            json!({"contents": [{"parts": [{"text": "hi"}]}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Listing models names none: allowed.
    assert_eq!(
        h.send(http::Method::GET, "/openai/v1/models", &auth, "")
            .await
            .status,
        200
    );
    assert_eq!(mock.requests().len(), 3);
    assert_eq!(
        h.metric("strake_auth_failures_total{reason=\"model_not_allowed\"}")
            .await,
        3.0
    );
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let mock = mock().await;
    let rpm = TestToken::new("rpm", &["openai"], "    limits: {requestsPerMinute: 2}\n");
    let tpm = TestToken::new("tpm", &["anthropic"], "    limits: {tokensPerMinute: 5}\n");
    let h = start_proxy(&config_yaml(&mock.url(), &[&rpm, &tpm])).await;
    let auth = [("authorization", rpm.bearer())];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for _ in 0..2 {
        assert_eq!(
            h.post_json("/v1/chat/completions", &auth, chat_body("gpt-4o"))
                .await
                .status,
            200
        );
    }
    let r = h
        .post_json("/v1/chat/completions", &auth, chat_body("gpt-4o"))
        .await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(r.json()["error"]["type"], "requests");
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");

    // Tokens per minute: the first response uses more than the allowance.
    let headers = [
        ("x-api-key", tpm.expose()),
        ("anthropic-version", "2023-06-01"),
    ];
    let body = json!({"model": "claude-3-5-haiku", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        h.post_json("/v1/messages", &headers, body.clone())
            .await
            .status,
        200
    );
    let r = h.post_json("/v1/messages", &headers, body).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(mock.requests().len(), 3);
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn upstream_failures_are_502_and_504() {
    let mock = mock().await;
    let t = TestToken::new("t", &["openai", "anthropic"], "");
    // An upstream nobody listens on.
    let config = config_yaml_openai_unreachable(&mock.url(), &[&t]);
    let settings = Settings {
        upstream_timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    let h = start_proxy_with(&config, settings).await;
    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", &t.bearer())],
            chat_body("gpt-4o"),
        )
        .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["type"], "server_error");
    assert_eq!(
        h.metric("strake_requests_total{identity=\"t@example.com\",token=\"t\",upstream=\"openai\",status_class=\"5xx\"}").await,
        1.0
    );
    let r = h
        .post_json(
            "/v1/messages",
            &[("x-api-key", t.expose()), ("anthropic-version", "2023-06-01"), ("x-mock-delay-ms", "2000")],
            json!({"model": "claude-3-5-haiku", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let mock = mock().await;
    let t = TestToken::new("t", &["openai"], "");
    let h = start_proxy(&config_yaml(&mock.url(), &[&t])).await;
    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", &t.bearer()), ("x-mock-status", "429")],
            chat_body("gpt-4o"),
        )
        .await;
    assert_eq!(r.status, 429);
    assert!(
        !r.headers.contains_key("x-strake-error"),
        "the provider's own 429"
    );
    assert_eq!(r.headers["retry-after"], "1");
    h.proxy.shutdown().await;
    mock.shutdown().await;
}
