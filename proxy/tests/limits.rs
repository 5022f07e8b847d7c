//! Limits a client can see: the token's own limits in the providers'
//! rate-limit headers (the tighter of the token's and the account's wins),
//! and `GET /strake/v1/me`, which shows a holder their own token only.

mod common;

use common::*;
use http::Method;
use serde_json::json;

fn header(r: &Reply, name: &str) -> String {
    r.headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn responses_carry_the_tokens_own_limits_where_they_are_tighter() {
    let mock = mock().await;
    let limited = TestToken::new(
        "limited",
        &["openai", "anthropic"],
        "    limits: {requestsPerMinute: 5, tokensPerMinute: 1000}\n",
    );
    let loose = TestToken::new(
        "loose",
        &["openai"],
        "    limits: {requestsPerMinute: 100000}\n",
    );
    let free = TestToken::new("free", &["openai"], "");
    let h = start_proxy(&config_yaml(&mock.url(), &[&limited, &loose, &free])).await;
    let chat = |t: &TestToken| {
        let auth = t.bearer();
        let h = &h;
        async move {
            h.post_json(
                "/openai/v1/chat/completions",
                &[("authorization", &auth)],
                chat_body("gpt-4o"),
            )
            .await
        }
    };
    let r = chat(&limited).await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "5");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "4");
    // One request of 5/min refills in 12 s, minus the time since admission.
    let reset: f64 = header(&r, "x-ratelimit-reset-requests")
        .strip_suffix('s')
        .unwrap()
        .parse()
        .unwrap();
    assert!((11.0..=12.0).contains(&reset), "{reset}");
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "1000");
    assert_eq!(header(&r, "x-ratelimit-remaining-tokens"), "1000");
    let used = r.json()["usage"]["total_tokens"].as_u64().unwrap();
    let r = chat(&limited).await;
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "3");
    let remaining: u64 = header(&r, "x-ratelimit-remaining-tokens").parse().unwrap();
    assert!(
        (1000 - used..1000).contains(&remaining),
        "{remaining} after {used}"
    );
    assert!(
        !header(&r, "x-request-id").is_empty(),
        "the upstream's other headers stay"
    );

    // Anthropic's names, with an RFC 3339 reset.
    let r = h
        .post_json(
            "/anthropic/v1/messages",
            &[("x-api-key", limited.expose()), ("anthropic-version", "2023-06-01")],
            json!({"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "anthropic-ratelimit-requests-limit"), "5");
    assert_eq!(header(&r, "anthropic-ratelimit-requests-remaining"), "2");
    let reset = header(&r, "anthropic-ratelimit-requests-reset");
    assert!(reset.parse::<jiff::Timestamp>().is_ok(), "{reset}");
    assert_eq!(header(&r, "anthropic-ratelimit-tokens-limit"), "1000");
    // The kinds the token does not limit keep the account's numbers.
    assert_eq!(
        header(&r, "anthropic-ratelimit-output-tokens-limit"),
        "400000"
    );

    // A looser limit than the account's: the account's numbers win.
    let r = chat(&loose).await;
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "10000");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "9999");
    // No limits: the upstream's headers pass unchanged.
    let r = chat(&free).await;
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "10000");
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "2000000");
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

async fn me(h: &Harness, headers: &[(&str, &str)]) -> Reply {
    h.send(Method::GET, "/strake/v1/me", headers, "").await
}

#[tokio::test]
async fn me_shows_a_holder_their_own_token_and_nothing_else() {
    let mock = mock().await;
    let alice = TestToken::new(
        "alice",
        &["openai", "anthropic"],
        "    expiresAt: \"2999-01-01T00:00:00Z\"\n    allowedModels: [\"gpt-4o*\"]\n    limits: {requestsPerMinute: 10}\n    endpoints: [{methods: [GET], path: /v1/files}]\n",
    );
    let bob = TestToken::new("bob", &["openai"], "    suspended: true\n");
    let h = start_proxy(&config_yaml(&mock.url(), &[&alice, &bob])).await;

    let r = me(&h, &[("authorization", &alice.bearer())]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&r, "content-type"), "application/json");
    assert_eq!(header(&r, "cache-control"), "no-store");
    let v = r.json();
    assert_eq!(v["identity"], "alice@example.com");
    assert_eq!(v["state"], "active");
    assert_eq!(v["expiresAt"], "2999-01-01T00:00:00Z");
    assert_eq!(v["allowedModels"], json!(["gpt-4o*"]));
    assert_eq!(
        v["endpoints"],
        json!([{"methods": ["GET"], "path": "/v1/files"}])
    );
    assert_eq!(v["upstreams"][0]["name"], "openai");
    assert_eq!(v["upstreams"][1]["provider"], "anthropic");
    assert_eq!(v["limits"]["requestsPerMinute"], 10);
    assert_eq!(v["limits"]["requests"]["remaining"], 10);
    // A request spends one; `me` itself spends nothing.
    h.post_json(
        "/openai/v1/chat/completions",
        &[("authorization", &alice.bearer())],
        chat_body("gpt-4o"),
    )
    .await;
    let v = me(&h, &[("x-api-key", alice.expose())]).await.json();
    assert_eq!(v["limits"]["requests"]["remaining"], 9);
    let v = me(&h, &[("x-api-key", alice.expose())]).await.json();
    assert_eq!(v["limits"]["requests"]["remaining"], 9);
    let text = me(&h, &[("authorization", &alice.bearer())])
        .await
        .everything();
    for hidden in [
        "bob",
        KEY,
        &mock.url(),
        alice.expose(),
        &alice.token.hash().to_hex(),
    ] {
        assert!(!text.contains(hidden), "{hidden} in {text}");
    }

    // A suspended token is shown, with why it is refused.
    let v = me(&h, &[("authorization", &bob.bearer())]).await.json();
    assert_eq!(
        (v["identity"].as_str(), v["state"].as_str()),
        (Some("bob@example.com"), Some("suspended"))
    );
    assert!(!v.to_string().contains("alice"));

    // Unknown, missing: the provider's error, and no retry.
    let unknown = TestToken::new("unknown", &["openai"], "");
    for (headers, reason) in [
        (vec![("authorization", unknown.bearer())], "unknown_token"),
        (vec![], "missing_credential"),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = me(&h, &headers).await;
        assert_eq!(r.status, 401);
        assert_eq!(header(&r, "x-strake-error"), reason);
        assert_eq!(header(&r, "x-should-retry"), "false");
        assert_eq!(
            r.json()["error"]["code"],
            if reason == "unknown_token" {
                "invalid_api_key"
            } else {
                "missing_api_key"
            }
        );
    }
    // Only GET and HEAD; never forwarded upstream.
    let r = h
        .send(
            Method::POST,
            "/strake/v1/me",
            &[("authorization", &alice.bearer())],
            "{}",
        )
        .await;
    assert_ne!(r.status, 200);
    assert_eq!(
        mock.requests().len(),
        1,
        "only the chat reached the upstream"
    );
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn one_of_two_replicas_admits_half_and_shows_the_tokens_limit() {
    let mock = mock().await;
    let paced = TestToken::new("paced", &["openai"], "    limits: {requestsPerMinute: 4}\n");
    let h = start_replica(
        &config_yaml(&mock.url(), &[&paced]),
        strake_proxy::Settings::default(),
        Replicas::Fixed(2),
    )
    .await;
    let auth = paced.bearer();
    let headers = [("authorization", auth.as_str())];
    let chat = || h.post_json("/openai/v1/chat/completions", &headers, chat_body("gpt-4o"));
    let r = chat().await;
    assert_eq!(r.status, 200);
    // The token's limit; what is left if the other replica is alike.
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "4");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "2");
    let v = me(&h, &[("authorization", &auth)]).await.json();
    assert_eq!(v["limits"]["requests"]["replicas"], 2, "{}", v["limits"]);
    assert_eq!(v["limits"]["requests"]["thisReplica"]["remaining"], 1);
    assert_eq!(chat().await.status, 200);
    // This replica's half is spent; the refusal names the token's limit.
    let r = chat().await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("4 requests per minute"), "{}", r.text());
    // One request of this replica's 2 a minute refills in 30 s.
    assert_eq!(header(&r, "retry-after"), "30");
    let metrics = h.admin("/metrics").await.text();
    assert!(metrics.contains("strake_live_replicas 2"), "{metrics}");
    h.proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn a_replica_service_needs_kube_mode() {
    let dir = TempDir::new();
    let config = dir.path("strake.yaml");
    std::fs::write(&config, config_yaml("http://127.0.0.1:9", &[])).unwrap();
    let err = strake_proxy::start(strake_proxy::Options {
        source: strake_proxy::ConfigSource::File(config),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        replicas: Replicas::Service("strake-proxy-admin".into()),
        ..strake_proxy::Options::default()
    })
    .await
    .err()
    .expect("a config file with --replica-service is refused");
    assert!(err.to_string().contains("needs kube mode"), "{err}");
}
