//! Spend through the proxy: real requests to the mock providers, priced
//! from the usage the client also sees, exported per identity and model,
//! exact on /usage; unpriced models counted, never $0; prices from the
//! config file, reloaded, and refused with the row named.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// USD per million tokens as picodollars per token: the same number × 10⁶.
const PICO: u64 = 1_000_000;

fn config(mock_url: &str, tokens: &[&TestToken], prices: &str) -> String {
    format!("{}{prices}", config_yaml(mock_url, tokens))
}

/// A prompt long enough for the providers' prompt caches (1,024 tokens).
fn long_text() -> String {
    "cache me ".repeat(600)
}

fn u(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// `picodollars` as the decimal USD string /usage reports.
fn usd(picodollars: u64) -> String {
    strake_crds::pricing::Picodollars(picodollars).to_decimal_string()
}

async fn usage_of(h: &Harness, name: &str) -> Value {
    let all = h.admin("/usage").await.json();
    all["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in {all}"))
}

fn series(identity: &str, upstream: &str, model: &str) -> String {
    format!(
        r#"strake_spend_usd_total{{identity="{identity}@example.com",token="{identity}",upstream="{upstream}",model="{model}"}}"#
    )
}

fn close(metric: f64, picodollars: u64) -> bool {
    let want = picodollars as f64 / 1e12;
    (metric - want).abs() <= want * 1e-9
}

#[tokio::test]
async fn spend_is_priced_per_identity_and_model_from_the_reported_usage() {
    let mock = mock().await;
    let alice = TestToken::new("alice", &["openai", "anthropic", "gemini"], "");
    let bob = TestToken::new("bob", &["openai"], "");
    let h = start_proxy(&config(&mock.url(), &[&alice, &bob], "")).await;

    // OpenAI, a prompt-cache hit: cached tokens are part of prompt_tokens.
    let r = h
        .post_json(
            "/openai/v1/chat/completions",
            &[
                ("authorization", &alice.bearer()),
                ("x-mock-cache", "hit"),
                ("x-mock-words", "40"),
            ],
            json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": long_text()}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let (prompt, cached, output) = (
        u(&b, "/usage/prompt_tokens"),
        u(&b, "/usage/prompt_tokens_details/cached_tokens"),
        u(&b, "/usage/completion_tokens"),
    );
    assert!(cached > 0 && cached < prompt && output == 40, "{b}");
    // gpt-5.5: $5 input, $0.50 cached input, $30 output.
    let openai = (prompt - cached) * 5 * PICO + cached * PICO / 2 + output * 30 * PICO;

    // Anthropic, a cache write: reported beside input_tokens.
    let r = h
        .post_json(
            "/anthropic/v1/messages",
            &[
                ("x-api-key", alice.expose()),
                ("anthropic-version", "2023-06-01"),
                ("x-mock-cache", "miss"),
            ],
            json!({
                "model": "claude-haiku-4-5-20251001",
                "max_tokens": 64,
                "system": [{"type": "text", "text": long_text(), "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": "hello"}],
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let (uncached, written, read, a_output) = (
        u(&b, "/usage/input_tokens"),
        u(&b, "/usage/cache_creation_input_tokens"),
        u(&b, "/usage/cache_read_input_tokens"),
        u(&b, "/usage/output_tokens"),
    );
    assert!(written > 0 && a_output > 0, "{b}");
    // claude-haiku-4-5: $1 input, $1.25 5-minute cache write, $0.10 read, $5 output.
    let anthropic =
        uncached * PICO + written * 5 * PICO / 4 + read * PICO / 10 + a_output * 5 * PICO;

    // Gemini, the model in the path.
    let r = h
        .post_json(
            "/gemini/v1beta/models/gemini-2.5-pro:generateContent",
            &[("x-goog-api-key", alice.expose())],
            json!({"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let (g_prompt, g_output) = (
        u(&b, "/usageMetadata/promptTokenCount"),
        u(&b, "/usageMetadata/candidatesTokenCount") + u(&b, "/usageMetadata/thoughtsTokenCount"),
    );
    // gemini-2.5-pro below 200k input: $1.25 input, $10 output.
    let gemini = g_prompt * 5 * PICO / 4 + g_output * 10 * PICO;

    // Bob, streamed, a dated snapshot of a priced model.
    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", &bob.bearer())],
            json!({
                "model": "gpt-5.4-mini-2026-03-17",
                "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hello there"}],
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let last = r
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["usage"].is_object())
        .expect("a usage chunk");
    let (b_prompt, b_output) = (
        u(&last, "/usage/prompt_tokens"),
        u(&last, "/usage/completion_tokens"),
    );
    // gpt-5.4-mini: $0.75 input, $4.50 output.
    let bob_spend = b_prompt * 3 * PICO / 4 + b_output * 9 * PICO / 2;

    let a = usage_of(&h, "alice").await;
    assert_eq!(a["spendPicodollars"], openai + anthropic + gemini, "{a}");
    assert_eq!(a["unpricedRequests"], 0, "{a}");
    let b = usage_of(&h, "bob").await;
    assert_eq!(b["spendPicodollars"], bob_spend, "{b}");

    for (line, want) in [
        (series("alice", "openai", "gpt-5.5"), openai),
        (
            series("alice", "anthropic", "claude-haiku-4-5-20251001"),
            anthropic,
        ),
        (series("alice", "gemini", "gemini-2.5-pro"), gemini),
        (
            series("bob", "openai", "gpt-5.4-mini-2026-03-17"),
            bob_spend,
        ),
    ] {
        let got = h.metric(&line).await;
        assert!(close(got, want), "{line} = {got}, want {}", usd(want));
    }
    let tokens = |name: &str, upstream: &str| {
        format!(r#"{name}{{identity="alice@example.com",token="alice",upstream="{upstream}"}}"#)
    };
    assert_eq!(
        h.metric(&tokens("strake_cached_input_tokens_total", "openai"))
            .await,
        cached as f64
    );
    assert_eq!(
        h.metric(&tokens("strake_cache_write_tokens_total", "anthropic"))
            .await,
        written as f64
    );
}

#[tokio::test]
async fn a_model_without_a_price_is_counted_as_unpriced_never_as_zero() {
    let mock = mock().await;
    let carol = TestToken::new(
        "carol",
        &["openai-compatible", "openai", "azure-openai"],
        "",
    );
    let h = start_proxy(&config(&mock.url(), &[&carol], "")).await;
    let chat = |model: &str, stream: bool| json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    let auth = [("authorization", carol.bearer())];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // A self-hosted model, and an Azure deployment (named by its owner).
    for path in [
        "/openai-compatible/v1/chat/completions",
        "/azure-openai/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
    ] {
        let r = h.post_json(path, &auth, chat("llama-3.1-8b", false)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(u(&r.json(), "/usage/prompt_tokens") > 0);
    }
    // A stream the upstream cuts before its usage: tokens were used, their
    // number is unknown.
    let cut = http::Request::post(h.url("/openai/v1/chat/completions"))
        .header("authorization", carol.bearer())
        .header("content-type", "application/json")
        .header("x-mock-chunks", "10")
        .header("x-mock-drop", "2")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            chat("gpt-5.5", true).to_string(),
        )))
        .unwrap();
    let resp = h.client.request(cut).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .is_err(),
        "the client sees the cut"
    );
    // An upstream error for a made-up model creates no series.
    let r = h
        .post_json(
            "/openai/v1/chat/completions",
            &auth,
            chat("made-up@status=404", false),
        )
        .await;
    assert_eq!(r.status, 404);

    h.eventually(Duration::from_secs(2), || async {
        usage_of(&h, "carol").await["unpricedRequests"] == 3
    })
    .await;
    let c = usage_of(&h, "carol").await;
    assert_eq!(c["spendPicodollars"], 0, "{c}");
    let unpriced = |upstream: &str, model: &str, reason: &str| {
        format!(
            r#"strake_unpriced_requests_total{{identity="carol@example.com",token="carol",upstream="{upstream}",model="{model}",reason="{reason}"}}"#
        )
    };
    assert_eq!(
        h.metric(&unpriced("openai-compatible", "llama-3.1-8b", "no_price"))
            .await,
        1.0
    );
    assert_eq!(
        h.metric(&unpriced("azure-openai", "gpt-4o", "no_price"))
            .await,
        1.0
    );
    assert_eq!(
        h.metric(&unpriced("openai", "gpt-5.5", "no_usage")).await,
        1.0
    );
    let text = h.admin("/metrics").await.text();
    assert!(!text.contains("made-up"), "{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("strake_spend_usd_total{") && l.contains("carol")),
        "no spend series for unpriced requests: {text}"
    );
}

#[tokio::test]
async fn config_prices_extend_the_table_reload_and_a_bad_row_keeps_the_last_good() {
    let mock = mock().await;
    let dan = TestToken::new("dan", &["openai-compatible"], "");
    let prices = |input: &str| {
        format!(
            "prices:\n  - provider: openai-compatible\n    model: llama-3.1-8b\n    input: {input}\n    output: 0.6\n"
        )
    };
    let h = start_proxy(&config(&mock.url(), &[&dan], &prices("0.2"))).await;
    let auth = dan.bearer();
    let send = || async {
        let r = h
            .post_json(
                "/v1/chat/completions",
                &[("authorization", &auth)],
                json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hello"}]}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let b = r.json();
        (
            u(&b, "/usage/prompt_tokens"),
            u(&b, "/usage/completion_tokens"),
        )
    };
    let h = &h;
    let spent = |picodollars: u64| async move {
        usage_of(h, "dan").await["spendPicodollars"] == picodollars
    };
    let (i, o) = send().await;
    let mut total = i * PICO / 5 + o * 3 * PICO / 5;
    assert!(spent(total).await);

    // A new price applies from the reload on.
    replace_file(&h.config, &config(&mock.url(), &[&dan], &prices("1")));
    let reloads = "strake_config_reloads_total";
    h.eventually(Duration::from_secs(10), || async {
        h.metric(reloads).await >= 1.0
    })
    .await;
    let (i, o) = send().await;
    total += i * PICO + o * 3 * PICO / 5;
    assert!(spent(total).await);

    // A broken row: the file is refused, the last good prices keep counting.
    replace_file(&h.config, &config(&mock.url(), &[&dan], &prices("-1")));
    h.eventually(Duration::from_secs(10), || async {
        h.metric("strake_config_reload_failures_total").await >= 1.0
    })
    .await;
    let (i, o) = send().await;
    total += i * PICO + o * 3 * PICO / 5;
    assert!(spent(total).await);
}

#[tokio::test]
async fn a_broken_price_row_at_startup_is_an_error_naming_the_row() {
    let mock = mock().await;
    let t = TestToken::new("t", &["openai"], "");
    let dir = TempDir::new();
    let path = dir.path("strake.yaml");
    let rows = "prices:\n  - {provider: openai, model: a, input: 1, output: 2}\n  - {provider: openai, model: b, input: 1, output: 2000000}\n";
    std::fs::write(&path, config(&mock.url(), &[&t], rows)).unwrap();
    let err = strake_proxy::start(strake_proxy::Options {
        source: strake_proxy::ConfigSource::File(path),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    })
    .await
    .err()
    .expect("a broken price row is refused")
    .to_string();
    assert!(
        err.contains("prices[1] (openai \"b\"): output is 2000000 USD per million tokens"),
        "{err}"
    );
    let line = 1 + config(&mock.url(), &[&t], "").lines().count() + 2;
    assert!(err.contains(&format!("line {line}")), "{err}");
}

/// Metric names in `text`: `strake_` followed by name characters.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("strake_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Not part of a longer word (a recording rule's `strake:` is not a metric).
        let before = rest[..i].chars().last();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The chart's dashboard and its strake-usage rules name only series the
/// proxy really exports once it has served traffic of every kind they chart.
#[tokio::test]
async fn the_dashboard_and_usage_rules_use_only_metrics_the_proxy_emits() {
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/strake");
    let dashboard = std::fs::read_to_string(chart.join("dashboards/strake.json")).unwrap();
    let json: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<String> = json["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let rules = std::fs::read_to_string(chart.join("templates/prometheusrule.yaml")).unwrap();
    let group = rules
        .split("\n    - name: ")
        .find(|g| g.starts_with("strake-usage"))
        .expect("the strake-usage group");

    // Traffic of every kind: priced, cache reads and writes, unpriced for
    // both reasons, refused, upstream errors.
    let mock = mock().await;
    let t = TestToken::new("t", &["openai", "anthropic", "openai-compatible"], "");
    let h = start_proxy(&config(&mock.url(), &[&t], "")).await;
    let bearer = t.bearer();
    let auth = [("authorization", bearer.as_str())];
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": long_text()}]});
    let r = h
        .post_json(
            "/openai/v1/chat/completions",
            &[auth[0], ("x-mock-cache", "hit")],
            chat("gpt-5.5"),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = h
        .post_json(
            "/anthropic/v1/messages",
            &[
                ("x-api-key", t.expose()),
                ("anthropic-version", "2023-06-01"),
                ("x-mock-cache", "miss"),
            ],
            json!({
                "model": "claude-haiku-4-5", "max_tokens": 16,
                "system": [{"type": "text", "text": long_text(), "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": "hi"}],
            }),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = h
        .post_json(
            "/openai-compatible/v1/chat/completions",
            &auth,
            chat("llama"),
        )
        .await;
    assert_eq!(r.status, 200);
    let cut = http::Request::post(h.url("/openai/v1/chat/completions"))
        .header("authorization", &bearer)
        .header("content-type", "application/json")
        .header("x-mock-drop", "1")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({"model": "gpt-5.5", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
        )))
        .unwrap();
    let resp = h.client.request(cut).await.unwrap();
    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    let r = h
        .post_json(
            "/openai/v1/chat/completions",
            &auth,
            chat("gpt-5.5@status=500"),
        )
        .await;
    assert_eq!(r.status, 500);
    let r = h
        .post_json(
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-strk-not-a-real-token")],
            chat("gpt-5.5"),
        )
        .await;
    assert_eq!(r.status, 401);
    h.eventually(Duration::from_secs(2), || async {
        h.admin("/metrics")
            .await
            .text()
            .contains("reason=\"no_usage\"")
    })
    .await;

    let exposition = h.admin("/metrics").await.text();
    let emitted: std::collections::BTreeSet<String> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let used: std::collections::BTreeSet<String> = exprs
        .iter()
        .map(String::as_str)
        .chain([group])
        .flat_map(metric_names)
        .collect();
    assert!(used.contains("strake_spend_usd_total"), "{used:?}");
    let unknown: Vec<&String> = used.difference(&emitted).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard or the rules use {unknown:?}, which the proxy does not emit:\n{exposition}"
    );
    // Recording rules the alerts use are defined in the group.
    for word in group.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if word.starts_with("strake:") {
            assert!(
                group.contains(&format!("record: {word}")),
                "{word} is used but not recorded"
            );
        }
    }
}
