//! Usage in status, summed over both proxy replicas of the stack: known
//! traffic (streamed and not, OpenAI and Anthropic) through each replica
//! must show up exactly in the StrakeTokens' and UpstreamKeys'
//! `status.usage`, also across a proxy restart, an operator restart and a
//! replica crash (where only the documented window may be lost). These
//! tests stop processes every other test relies on, so run-e2e.sh runs this
//! binary alone, after the others, one test at a time.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use http::Method;
use serde_json::{Value, json};
use strake_crds::Provider;
use strake_crds::pricing::{Picodollars, PriceTable, TokenCounts};
use strake_e2e::{Issued, Stack, TestNs, eventually};
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Collection runs every 1 s on the dev stack; status must be fresh within
/// 30 s of use whatever the interval, so this is also the freshness bound
/// the test holds the operator to.
const FRESH: Duration = Duration::from_secs(30);

/// Not in the built-in price table: its requests count as unpriced.
const OPENAI_MODEL: &str = "gpt-4o-mini";
/// In the built-in price table.
const ANTHROPIC_MODEL: &str = "claude-sonnet-4-6";

/// What the replies said was used, summed: the expected status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    requests: u64,
    input: u64,
    output: u64,
    cached: u64,
    cache_write: u64,
    /// Picodollars, at the built-in price table's rates.
    spend: u64,
    /// Requests whose model has no price.
    unpriced: u64,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.requests += other.requests;
        self.input += other.input;
        self.output += other.output;
        self.cached += other.cached;
        self.cache_write += other.cache_write;
        self.spend += other.spend;
        self.unpriced += other.unpriced;
    }

    fn from_status(totals: &Value) -> Totals {
        let n = |k: &str| totals[k].as_u64().unwrap_or(0);
        Totals {
            requests: n("requests"),
            input: n("inputTokens"),
            output: n("outputTokens"),
            cached: n("cachedInputTokens"),
            cache_write: n("cacheWriteTokens"),
            spend: totals["spendUsd"]
                .as_str()
                .and_then(|s| s.parse::<Picodollars>().ok())
                .map_or(u64::MAX, |p| p.0),
            unpriced: n("unpricedRequests"),
        }
    }
}

/// The usage a provider reported in a reply, JSON or SSE, with input
/// tokens normalised to include cached and cache-write ones (as Strake
/// counts them), and its price for `model`.
fn reported(reply: &strake_e2e::Reply, provider: Provider, model: &str) -> Result<Totals> {
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let mut t = Totals {
        requests: 1,
        ..Totals::default()
    };
    let mut seen = false;
    let bodies: Vec<Value> = if reply.body.trim_start().starts_with('{') {
        vec![serde_json::from_str(&reply.body)?]
    } else {
        reply
            .body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    };
    for body in bodies {
        // Anthropic: message_start carries the input, message_delta the
        // cumulative output; a JSON reply carries both.
        let usage = if body["type"] == "message_start" {
            &body["message"]["usage"]
        } else {
            &body["usage"]
        };
        if !usage.is_object() {
            continue;
        }
        seen = true;
        if usage.get("prompt_tokens").is_some() {
            t.input = n(usage, "prompt_tokens");
            t.output = n(usage, "completion_tokens");
            t.cached = n(&usage["prompt_tokens_details"], "cached_tokens");
        } else {
            if usage.get("input_tokens").is_some() {
                let (read, write) = (
                    n(usage, "cache_read_input_tokens"),
                    n(usage, "cache_creation_input_tokens"),
                );
                t.input = n(usage, "input_tokens") + read + write;
                t.cached = read;
                t.cache_write = write;
            }
            if usage.get("output_tokens").is_some() {
                t.output = n(usage, "output_tokens");
            }
        }
    }
    ensure!(seen, "no usage in the reply: {}", reply.body);
    let counts = TokenCounts {
        input: t.input,
        output: t.output,
        cached_input: t.cached,
        cache_write: t.cache_write,
        cache_write_1h: 0,
    };
    match PriceTable::builtin().cost(provider, model, &counts) {
        Some(cost) => t.spend = cost.0,
        None => t.unpriced = 1,
    }
    Ok(t)
}

/// A prompt long enough for the providers' prompt cache (1,024 tokens).
fn long_prompt() -> String {
    "Count the words of this prompt, please. ".repeat(120)
}

/// Every other request is a prompt-cache hit: `x-mock-cache` tells the mock.
fn cache(hit: bool) -> (&'static str, &'static str) {
    ("x-mock-cache", if hit { "hit" } else { "miss" })
}

/// Sends one of each kind of request with `issued`'s token through the
/// replica at `proxy_url`: OpenAI chat, streamed and not, and (if the
/// token has it) Anthropic messages, streamed and not. Returns what the
/// replies reported, per upstream name.
async fn traffic(
    stack: &Stack,
    issued: &Issued,
    proxy_url: &str,
    anthropic: bool,
) -> Result<Vec<(&'static str, Totals)>> {
    let on_replica = |base: &str| base.replacen(&stack.env.proxy_url, proxy_url, 1);
    let mut used = Vec::new();
    let openai = on_replica(issued.env("OPENAI_BASE_URL")?);
    let auth = format!("Bearer {}", issued.env("OPENAI_API_KEY")?);
    for stream in [false, true] {
        let mut body = json!({
            "model": OPENAI_MODEL,
            "messages": [{"role": "user", "content": long_prompt()}],
        });
        if stream {
            body["stream"] = true.into();
            body["stream_options"] = json!({"include_usage": true});
        }
        let reply = stack
            .http
            .send(
                Method::POST,
                &format!("{openai}/chat/completions"),
                &[("authorization", &auth), cache(stream)],
                Some(&body),
            )
            .await?;
        ensure!(reply.status == 200, "openai via {proxy_url}: {reply:?}");
        used.push(("openai", reported(&reply, Provider::OpenAi, OPENAI_MODEL)?));
    }
    if anthropic {
        let base = on_replica(issued.env("ANTHROPIC_BASE_URL")?);
        let auth = format!("Bearer {}", issued.env("ANTHROPIC_AUTH_TOKEN")?);
        for stream in [false, true] {
            let body = json!({
                "model": ANTHROPIC_MODEL,
                "max_tokens": 64,
                "stream": stream,
                "messages": [{"role": "user", "content": long_prompt()}],
            });
            let reply = stack
                .http
                .send(
                    Method::POST,
                    &format!("{base}/v1/messages"),
                    &[
                        ("authorization", auth.as_str()),
                        ("anthropic-version", "2023-06-01"),
                        cache(!stream),
                    ],
                    Some(&body),
                )
                .await?;
            ensure!(reply.status == 200, "anthropic via {proxy_url}: {reply:?}");
            used.push((
                "anthropic",
                reported(&reply, Provider::Anthropic, ANTHROPIC_MODEL)?,
            ));
        }
    }
    Ok(used)
}

/// The expected totals per token and per upstream.
#[derive(Default)]
struct Expected {
    alice: Totals,
    ci: Totals,
    openai: Totals,
    anthropic: Totals,
}

impl Expected {
    fn record(&mut self, token: &str, used: &[(&'static str, Totals)]) {
        for (upstream, t) in used {
            match token {
                "alice" => self.alice.add(*t),
                _ => self.ci.add(*t),
            }
            match *upstream {
                "openai" => self.openai.add(*t),
                _ => self.anthropic.add(*t),
            }
        }
    }
}

/// `status` of a resource, as kubectl shows it.
async fn status(ns: &TestNs<'_>, resource: &str) -> Result<Value> {
    let out = ns.kubectl(&["get", resource, "-o", "json"]).await?;
    let v: Value = serde_json::from_str(&out)?;
    Ok(v["status"].clone())
}

/// Waits until every resource's lifetime and month usage equal `expected`.
async fn converges(ns: &TestNs<'_>, expected: &Expected) -> Result<()> {
    let wanted = [
        ("straketoken/alice", expected.alice),
        ("straketoken/ci", expected.ci),
        ("upstreamkey/openai", expected.openai),
        ("upstreamkey/anthropic", expected.anthropic),
    ];
    eventually("status.usage equals the traffic sent", FRESH, || async {
        for (resource, want) in wanted {
            let s = status(ns, resource).await?;
            let lifetime = Totals::from_status(&s["usage"]["lifetime"]);
            let month = Totals::from_status(&s["usage"]["month"]);
            ensure!(
                lifetime == want && month == want,
                "{resource}: lifetime {lifetime:?}, month {month:?}, want {want:?}"
            );
            ensure!(
                s["lastUsedAt"].is_string(),
                "{resource}: no lastUsedAt: {s}"
            );
        }
        Ok(())
    })
    .await
}

/// The note of `name`'s Revoked event, once there is one.
async fn revoked_note(ns: &TestNs<'_>, name: &str) -> Result<String> {
    let selector = format!("reason=Revoked,involvedObject.name={name}");
    eventually("the Revoked event names the final usage", FRESH, || async {
        let out = ns
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                &selector,
                "-o",
                "jsonpath={.items[*].message}{.items[*].note}",
            ])
            .await?;
        ensure!(!out.is_empty(), "no Revoked event yet");
        Ok(out)
    })
    .await
}

/// A chat request with `issued`'s token through the first replica.
async fn chat(stack: &Stack, issued: &Issued) -> Result<strake_e2e::Reply> {
    stack
        .http
        .send(
            Method::POST,
            &format!("{}/chat/completions", issued.env("OPENAI_BASE_URL")?),
            &[(
                "authorization",
                &format!("Bearer {}", issued.env("OPENAI_API_KEY")?),
            )],
            Some(&json!({"model": OPENAI_MODEL, "messages": []})),
        )
        .await
}

async fn whole_stack(stack: &Stack) -> Result<()> {
    stack.apiserver("start").await?;
    for name in ["mock", "proxy", "proxy2", "operator"] {
        stack.service("start", name).await?;
    }
    Ok(())
}

async fn setup(ns: &TestNs<'_>) -> Result<(Issued, Issued)> {
    ns.default_upstreams().await?;
    let alice = ns
        .issue(
            "alice",
            "identity: alice@example.com\nupstreams: [openai, anthropic]",
        )
        .await?;
    let ci = ns
        .issue("ci", "identity: ci/payments\nupstreams: [openai]")
        .await?;
    Ok((alice, ci))
}

#[tokio::test]
async fn usage_sums_both_replicas_through_restarts() -> Result<()> {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = Stack::connect().await?;
    whole_stack(&stack).await?;
    let ns = stack.namespace("usage").await?;
    let (alice, ci) = setup(&ns).await?;
    let replicas = [stack.env.proxy_url.clone(), stack.env.proxy2_url.clone()];
    let mut expected = Expected::default();
    let round = |expected: &mut Expected, used: Vec<(&'static str, Totals)>, who| {
        expected.record(who, &used);
    };

    // Both replicas, both tokens.
    for url in &replicas {
        round(
            &mut expected,
            traffic(&stack, &alice, url, true).await?,
            "alice",
        );
        round(&mut expected, traffic(&stack, &ci, url, false).await?, "ci");
    }
    converges(&ns, &expected).await?;
    println!(
        "usage: alice {:?}, ci {:?} after both replicas",
        expected.alice, expected.ci
    );
    // The holder sees the same totals in /strake/v1/me, on either replica:
    // their own, never ci's.
    let auth = format!("Bearer {}", alice.env("OPENAI_API_KEY")?);
    for url in &replicas {
        let want = expected.alice;
        eventually("/strake/v1/me shows the collected usage", FRESH, || async {
            let reply = stack
                .http
                .send(
                    Method::GET,
                    &format!("{url}/strake/v1/me"),
                    &[("authorization", &auth)],
                    None,
                )
                .await?;
            ensure!(reply.status == 200, "{}: {}", reply.status, reply.body);
            let usage = &reply.json()["usage"];
            let (month, lifetime) = (
                Totals::from_status(&usage["month"]),
                Totals::from_status(&usage["lifetime"]),
            );
            ensure!(
                month == want && lifetime == want,
                "{url}: month {month:?}, lifetime {lifetime:?}, want {want:?}: {usage}"
            );
            Ok(())
        })
        .await?;
    }

    // A proxy replica restarts (a new instance whose counters start at 0);
    // traffic on both sides of it.
    round(
        &mut expected,
        traffic(&stack, &alice, &replicas[1], true).await?,
        "alice",
    );
    converges(&ns, &expected).await?;
    stack.service("restart", "proxy2").await?;
    for url in &replicas {
        round(
            &mut expected,
            traffic(&stack, &alice, url, true).await?,
            "alice",
        );
        round(&mut expected, traffic(&stack, &ci, url, false).await?, "ci");
    }
    converges(&ns, &expected).await?;

    // The operator restarts mid-way: traffic before it goes, while it is
    // down, and after; its successor folds nothing twice.
    round(
        &mut expected,
        traffic(&stack, &alice, &replicas[0], true).await?,
        "alice",
    );
    stack.service("stop", "operator").await?;
    for url in &replicas {
        round(&mut expected, traffic(&stack, &ci, url, false).await?, "ci");
    }
    stack.service("start", "operator").await?;
    round(
        &mut expected,
        traffic(&stack, &alice, &replicas[1], true).await?,
        "alice",
    );
    converges(&ns, &expected).await?;

    // A quiet period writes nothing: the status stays at its resourceVersion.
    let version = || {
        ns.kubectl(&[
            "get",
            "straketoken/alice",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
    };
    let before = version().await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = version().await?;
    ensure!(
        before == after,
        "status rewritten without use: {before} -> {after}"
    );

    let columns = ns.kubectl(&["get", "straketokens"]).await?;
    println!("{columns}");
    let header = columns.lines().next().unwrap_or_default();
    ensure!(
        header.contains("LAST USED") && header.contains("SPEND"),
        "printer columns: {header}"
    );

    // Chargeback survives revocation: the event and a metric keep the total.
    let spend = Picodollars(expected.alice.spend).to_decimal_string();
    ns.delete_token("alice").await?;
    let note = revoked_note(&ns, "alice").await?;
    ensure!(
        note.contains(&format!("{} requests", expected.alice.requests))
            && note.contains(&format!("${spend}")),
        "Revoked event: {note}"
    );
    let metrics = stack.operator_metrics().await?;
    let series = format!(
        "strake_operator_token_final_spend_usd{{namespace=\"{}\",name=\"alice\",identity=\"alice@example.com\"}} ",
        ns.name
    );
    let value: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {series} in the operator's metrics"))?;
    ensure!(
        (value - Picodollars(expected.alice.spend).as_usd_f64()).abs() < 1e-9,
        "final spend {value}, want {spend}"
    );
    Ok(())
}

#[tokio::test]
async fn a_crashed_replica_loses_at_most_what_it_served_since_the_last_collection() -> Result<()> {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = Stack::connect().await?;
    whole_stack(&stack).await?;
    let ns = stack.namespace("usage-crash").await?;
    let (alice, ci) = setup(&ns).await?;
    let mut expected = Expected::default();
    for url in [&stack.env.proxy_url, &stack.env.proxy2_url] {
        expected.record("alice", &traffic(&stack, &alice, url, true).await?);
        expected.record("ci", &traffic(&stack, &ci, url, false).await?);
    }
    converges(&ns, &expected).await?;

    // Requests the crashing replica serves right before it dies: these, and
    // only these, may be lost.
    let window = traffic(&stack, &ci, &stack.env.proxy2_url, false).await?;
    stack.service("crash", "proxy2").await?;
    let survivors = traffic(&stack, &ci, &stack.env.proxy_url, false).await?;
    expected.record("ci", &survivors);
    stack.service("start", "proxy2").await?;
    let mut at_most = expected.ci;
    for (_, t) in &window {
        at_most.add(*t);
    }
    let settled = eventually(
        "ci's usage includes everything but the crash window",
        FRESH,
        || async {
            let s = status(&ns, "straketoken/ci").await?;
            let got = Totals::from_status(&s["usage"]["lifetime"]);
            ensure!(
                got.requests >= expected.ci.requests,
                "{got:?} < {:?}",
                expected.ci
            );
            Ok(got)
        },
    )
    .await?;
    // Let a few more rounds pass: nothing else may arrive or vanish.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let s = status(&ns, "straketoken/ci").await?;
    let got = Totals::from_status(&s["usage"]["lifetime"]);
    if got.requests > at_most.requests || got.input > at_most.input {
        bail!("counted more than was sent: {got:?} > {at_most:?}");
    }
    ensure!(
        got.requests >= settled.requests && got.input >= expected.ci.input,
        "usage went back: {got:?}"
    );
    println!(
        "crash: {} of the {} requests in the window were lost (collected {:?}, sent {:?})",
        at_most.requests - got.requests,
        window.len(),
        got,
        at_most
    );
    Ok(())
}

#[tokio::test]
async fn a_token_deleted_right_after_use_reports_its_whole_lifetime_usage() -> Result<()> {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = Stack::connect().await?;
    whole_stack(&stack).await?;
    let ns = stack.namespace("usage-final").await?;
    let (alice, _ci) = setup(&ns).await?;
    let mut expected = Expected::default();
    // Used on both replicas and deleted at once, before any collection
    // round can have read the last requests.
    for url in [&stack.env.proxy_url, &stack.env.proxy2_url] {
        expected.record("alice", &traffic(&stack, &alice, url, true).await?);
    }
    ns.delete_token("alice").await?;
    let note = revoked_note(&ns, "alice").await?;
    let spend = Picodollars(expected.alice.spend).to_decimal_string();
    ensure!(
        note.contains(&format!("{} requests", expected.alice.requests))
            && note.contains(&format!("{} input tokens", expected.alice.input))
            && note.contains(&format!("${spend}")),
        "Revoked event {note:?}, sent {:?}",
        expected.alice
    );
    eventually("the revoked token is refused", FRESH, || async {
        let r = chat(&stack, &alice).await?;
        ensure!(r.status == 401, "{r:?}");
        Ok(())
    })
    .await?;
    Ok(())
}
