//! What each refusal tells the client's retry loop: `x-should-retry: false`
//! where waiting cannot help (so Claude Code and the Stainless SDKs stop
//! after one request), `true` with `Retry-After` on the proxy's 429s, and
//! the upstream's own headers passed through on its answers.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use strake_proxy::Settings;

const ANTHROPIC_VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

fn messages_body(model: &str) -> serde_json::Value {
    json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
}

/// Status, `x-strake-error` and `x-should-retry` of a reply.
fn verdict(r: &Reply) -> (u16, String, String) {
    let h = |name| {
        r.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (r.status.as_u16(), h("x-strake-error"), h("x-should-retry"))
}

#[tokio::test]
async fn refusals_a_retry_cannot_fix_say_should_retry_false() {
    let mock = mock().await;
    let expired = TestToken::new(
        "expired",
        &["openai"],
        "    expiresAt: \"2020-01-01T00:00:00Z\"\n",
    );
    let suspended = TestToken::new("suspended", &["anthropic"], "    suspended: true\n");
    let models = TestToken::new(
        "models",
        &["openai", "anthropic"],
        "    allowedModels: [\"gpt-4o*\"]\n",
    );
    let h = start_proxy(&config_yaml(&mock.url(), &[&expired, &suspended, &models])).await;
    let unknown = TestToken::new("unknown", &["openai"], "");

    let chat = |auth: String, model: &str| {
        let h = &h;
        let body = chat_body(model);
        async move {
            h.post_json("/v1/chat/completions", &[("authorization", &auth)], body)
                .await
        }
    };
    let cases = [
        (chat(unknown.bearer(), "gpt-4o").await, 401, "unknown_token"),
        (chat(expired.bearer(), "gpt-4o").await, 401, "expired"),
        (
            chat("Bearer sk-strk-notarealtoken".into(), "gpt-4o").await,
            401,
            "malformed_token",
        ),
        (
            h.post_json("/v1/chat/completions", &[], chat_body("gpt-4o"))
                .await,
            401,
            "missing_credential",
        ),
        (
            h.post_json(
                "/v1/messages",
                &[("x-api-key", suspended.expose()), ANTHROPIC_VERSION],
                messages_body("claude-sonnet-4-6"),
            )
            .await,
            403,
            "suspended",
        ),
        (
            chat(models.bearer(), "o1-pro").await,
            403,
            "model_not_allowed",
        ),
        (
            h.send(
                http::Method::DELETE,
                "/v1/files/file-abc",
                &[("authorization", &models.bearer())],
                "",
            )
            .await,
            403,
            "endpoint_not_allowed",
        ),
        (
            h.send(
                http::Method::POST,
                "/v1/chat/completions",
                &[
                    ("authorization", &models.bearer()),
                    ("content-type", "application/json"),
                ],
                r#"{"model":"gpt-4o","model":"o1-pro"}"#,
            )
            .await,
            400,
            "model_unreadable",
        ),
    ];
    for (r, status, reason) in cases {
        assert_eq!(
            verdict(&r),
            (status, reason.to_owned(), "false".to_owned()),
            "{}",
            r.text()
        );
        assert!(!r.headers.contains_key("retry-after"), "{reason}");
    }
    assert!(
        mock.requests().is_empty(),
        "no refusal reached the upstream"
    );
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn rate_limits_say_retry_and_when_in_every_style() {
    let mock = mock().await;
    let t = TestToken::new(
        "t",
        &["openai", "anthropic"],
        "    limits: {requestsPerMinute: 1}\n",
    );
    let h = start_proxy(&config_yaml(&mock.url(), &[&t])).await;
    let ok = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", &t.bearer())],
            chat_body("gpt-4o"),
        )
        .await;
    assert_eq!(ok.status, 200);
    for r in [
        h.post_json(
            "/v1/chat/completions",
            &[("authorization", &t.bearer())],
            chat_body("gpt-4o"),
        )
        .await,
        h.post_json(
            "/v1/messages",
            &[("x-api-key", t.expose()), ANTHROPIC_VERSION],
            messages_body("claude-sonnet-4-6"),
        )
        .await,
    ] {
        assert_eq!(
            verdict(&r),
            (429, "rate_limited_requests".into(), "true".into())
        );
        let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs), "{secs}");
    }
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn upstream_failures_may_be_retried_and_upstream_headers_pass_through() {
    let mock = mock().await;
    let t = TestToken::new("t", &["openai", "anthropic"], "");
    // openai: nobody listens; anthropic: the mock.
    let config = config_yaml_openai_unreachable(&mock.url(), &[&t]);
    let h = start_proxy_with(
        &config,
        Settings {
            upstream_timeout: Duration::from_secs(5),
            ..Settings::default()
        },
    )
    .await;
    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", &t.bearer())],
            chat_body("gpt-4o"),
        )
        .await;
    assert_eq!(verdict(&r), (502, "upstream_connect".into(), "true".into()));

    // The provider's own answers, errors and successes, keep its headers.
    let anthropic = |status: Option<&'static str>| {
        let h = &h;
        let t = &t;
        async move {
            let mut headers = vec![("x-api-key", t.expose()), ANTHROPIC_VERSION];
            if let Some(s) = status {
                headers.push(("x-mock-status", s));
            }
            h.post_json("/v1/messages", &headers, messages_body("claude-sonnet-4-6"))
                .await
        }
    };
    for (status, should) in [("529", "true"), ("500", "true"), ("400", "false")] {
        let r = anthropic(Some(status)).await;
        assert_eq!(
            verdict(&r),
            (status.parse().unwrap(), String::new(), should.into())
        );
        assert!(r.headers.contains_key("request-id"));
    }
    let r = anthropic(Some("429")).await;
    assert_eq!(r.headers["retry-after"], "1");
    let r = anthropic(None).await;
    assert_eq!(r.status, 200);
    assert!(!r.headers.contains_key("x-should-retry"));
    for name in [
        "request-id",
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-tokens-reset",
    ] {
        assert!(r.headers.contains_key(name), "{name}");
    }
    h.proxy.shutdown().await;
    mock.shutdown().await;
}
