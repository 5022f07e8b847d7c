//! Budgets through both proxy replicas of the dev stack: spent under
//! concurrent load, every replica refuses within 2 s with the provider's
//! quota error and `x-should-retry: false`; the overshoot is in status and
//! within the documented bound; raising the budget lifts the block; a
//! shifted clock (the stack's test-only `--dev-clock-offset-file`) rolls
//! the period over and the token is served again; an UpstreamKey's budget
//! blocks every token using it and only those; a tenant cannot lift
//! another namespace's budget; invalid budgets are refused at admission.
//!
//! The clock is the whole stack's, so run-e2e.sh runs this binary alone,
//! after the others, one test at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use http::Method;
use serde_json::{Value, json};
use strake_crds::pricing::{Picodollars, PriceTable, TokenCounts};
use strake_crds::{Phase, Provider};
use strake_e2e::{Issued, Reply, Stack, TestNs, eventually};
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// The issue's promise: every replica refuses a spent budget within 2 s,
/// and a raised one is served again within 2 s (collection every 1 s on
/// the dev stack, then the record's publication).
const WITHIN: Duration = Duration::from_secs(2);
/// Concurrent clients per replica.
const CLIENTS: usize = 4;
const ANTHROPIC_MODEL: &str = "claude-sonnet-4-6";

/// Where a request goes: a replica's base URL in place of the first one's.
fn on(stack: &Stack, replica: usize, base: &str) -> String {
    if replica == 0 {
        base.to_string()
    } else {
        base.replacen(&stack.env.proxy_url, &stack.env.proxy2_url, 1)
    }
}

async fn message(stack: &Stack, issued: &Issued, replica: usize) -> Result<Reply> {
    let url = format!(
        "{}/v1/messages",
        on(stack, replica, issued.env("ANTHROPIC_BASE_URL")?)
    );
    let auth = format!("Bearer {}", issued.env("ANTHROPIC_AUTH_TOKEN")?);
    let body = json!({
        "model": ANTHROPIC_MODEL,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hello from the budget test"}],
    });
    let headers = [
        ("authorization", auth.as_str()),
        ("anthropic-version", "2023-06-01"),
    ];
    stack
        .http
        .send(Method::POST, &url, &headers, Some(&body))
        .await
}

async fn chat(stack: &Stack, issued: &Issued, replica: usize) -> Result<Reply> {
    let url = format!(
        "{}/chat/completions",
        on(stack, replica, issued.env("OPENAI_BASE_URL")?)
    );
    let auth = format!("Bearer {}", issued.env("OPENAI_API_KEY")?);
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hello from the budget test"}],
    });
    stack
        .http
        .send(Method::POST, &url, &[("authorization", &auth)], Some(&body))
        .await
}

/// What a served reply used: (picodollars at the built-in prices, input +
/// output tokens).
fn used(reply: &Reply, provider: Provider) -> Result<(u64, u64)> {
    let v = reply.json();
    let n = |k: &str| v["usage"][k].as_u64().unwrap_or(0);
    let (input, output) = match provider {
        Provider::Anthropic => (
            n("input_tokens") + n("cache_read_input_tokens") + n("cache_creation_input_tokens"),
            n("output_tokens"),
        ),
        _ => (n("prompt_tokens"), n("completion_tokens")),
    };
    ensure!(input + output > 0, "no usage in {}", reply.body);
    let counts = TokenCounts {
        input,
        output,
        cached_input: n("cache_read_input_tokens"),
        cache_write: n("cache_creation_input_tokens"),
        cache_write_1h: 0,
    };
    let model = v["model"].as_str().unwrap_or(ANTHROPIC_MODEL);
    let spend = PriceTable::builtin()
        .cost(provider, model, &counts)
        .map_or(0, |c| c.0);
    Ok((spend, input + output))
}

/// One request's outcome under load.
struct Outcome {
    replica: usize,
    at: Instant,
    reply: Reply,
}

/// `CLIENTS` clients per replica send `request` until every replica has
/// refused `settle` requests in a row (or `limit` passes).
async fn load<F, Fut>(request: F, limit: Duration) -> Result<Vec<Outcome>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Reply>> + Send,
{
    const SETTLE: usize = 5;
    let request = Arc::new(request);
    let refused_in_a_row = Arc::new([
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    ]);
    let start = Instant::now();
    let mut clients = Vec::new();
    for replica in 0..2 {
        for _ in 0..CLIENTS {
            let request = request.clone();
            let streak = refused_in_a_row.clone();
            clients.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                let settled = || {
                    streak
                        .iter()
                        .all(|s| s.load(std::sync::atomic::Ordering::SeqCst) >= SETTLE)
                };
                while !settled() {
                    ensure!(
                        start.elapsed() < limit,
                        "replicas still serve after {limit:?}"
                    );
                    let reply = request(replica).await?;
                    let s = &streak[replica];
                    match reason(&reply) {
                        Some("budget_exceeded") => {
                            s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        // Held back until the next collection: wait a little.
                        Some("budget_held_back") => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        _ => s.store(0, std::sync::atomic::Ordering::SeqCst),
                    }
                    seen.push(Outcome {
                        replica,
                        at: Instant::now(),
                        reply,
                    });
                }
                Ok::<_, anyhow::Error>(seen)
            }));
        }
    }
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await??);
    }
    all.sort_by_key(|o| o.at);
    Ok(all)
}

/// What a run of load showed about a budget of `limit` in `unit`s.
struct Exhaustion {
    /// Sum of what the served replies used.
    served: u64,
    /// Per replica: time from the instant the served total reached the
    /// limit to that replica's first refusal.
    to_refusal: [Duration; 2],
    refusals: Vec<Reply>,
    /// Retryable refusals while a replica had served its share.
    held: usize,
}

/// The proxy's reason for a refusal (`x-strake-error`).
fn reason(reply: &Reply) -> Option<&str> {
    reply.headers.get("x-strake-error").map(String::as_str)
}

fn exhaustion(
    outcomes: &[Outcome],
    limit: u64,
    cost: impl Fn(&Reply) -> Result<u64>,
) -> Result<Exhaustion> {
    let mut served = 0u64;
    let mut spent_at = None;
    let mut first_refusal: [Option<Instant>; 2] = [None, None];
    let mut refusals = Vec::new();
    let mut held = 0;
    for o in outcomes {
        match o.reply.status {
            200 => {
                served += cost(&o.reply)?;
                if served >= limit && spent_at.is_none() {
                    spent_at = Some(o.at);
                }
            }
            429 if reason(&o.reply) == Some("budget_exceeded") => {
                first_refusal[o.replica].get_or_insert(o.at);
                refusals.push(o.reply.clone());
            }
            429 if reason(&o.reply) == Some("budget_held_back") => {
                // Retryable: the budget may not be spent yet.
                let r = &o.reply;
                ensure!(
                    r.headers.get("x-should-retry").map(String::as_str) == Some("true"),
                    "{r:?}"
                );
                ensure!(r.headers.contains_key("retry-after"), "{r:?}");
                held += 1;
            }
            other => bail!("unexpected {other}: {}", o.reply.body),
        }
    }
    let spent_at = spent_at.context("the served total never reached the budget")?;
    let to = |i: usize| -> Result<Duration> {
        let at = first_refusal[i].with_context(|| format!("replica {i} never refused"))?;
        Ok(at.saturating_duration_since(spent_at))
    };
    Ok(Exhaustion {
        held,
        served,
        to_refusal: [to(0)?, to(1)?],
        refusals,
    })
}

/// Writes the stack's clock offset; puts it back to none when dropped.
struct ShiftedClock<'a>(&'a Stack);

impl ShiftedClock<'_> {
    fn set(&self, secs: i64) -> Result<()> {
        std::fs::write(self.0.env.dir.join("clock-offset"), secs.to_string())
            .context("writing the clock offset")
    }
}

impl Drop for ShiftedClock<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0.env.dir.join("clock-offset"));
    }
}

async fn budget_status(ns: &TestNs<'_>, name: &str) -> Result<Value> {
    let t = ns.tokens().get(name).await?;
    Ok(serde_json::to_value(t.status.unwrap_or_default())?)
}

async fn events(ns: &TestNs<'_>, reason: &str) -> Result<Vec<String>> {
    let out = ns.kubectl(&["get", "events", "-o", "json"]).await?;
    let v: Value = serde_json::from_str(&out)?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == reason)
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect())
}

/// The cost of one Anthropic message, measured through an unbudgeted token.
async fn one_message_cost(stack: &Stack, ns: &TestNs<'_>) -> Result<u64> {
    let probe = ns
        .issue(
            "probe",
            "identity: probe@example.com\nupstreams: [anthropic]",
        )
        .await?;
    let reply = message(stack, &probe, 0).await?;
    ensure!(reply.status == 200, "probe: {reply:?}");
    let (spend, _) = used(&reply, Provider::Anthropic)?;
    ensure!(spend > 0, "{ANTHROPIC_MODEL} has no price");
    Ok(spend)
}

#[tokio::test]
async fn a_monthly_usd_budget_spent_under_load_is_refused_everywhere_reported_and_lifted_when_raised()
-> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::connect().await?;
    let ns = stack.namespace("budget-usd").await?;
    ns.default_upstreams().await?;
    let cost = one_message_cost(&stack, &ns).await?;
    // About 40 messages' worth.
    let limit = cost * 40;
    let usd = Picodollars(limit).to_decimal_string();
    let issued = ns
        .issue(
            "alice",
            &format!("identity: alice@example.com\nupstreams: [anthropic]\nbudget: {{period: month, usd: \"{usd}\", alertAt: [50]}}"),
        )
        .await?;

    let me = stack
        .http
        .send(
            Method::GET,
            &format!("{}/strake/v1/me", stack.env.proxy_url),
            &[("authorization", &format!("Bearer {}", issued.token))],
            None,
        )
        .await?;
    let b = &me.json()["budget"];
    ensure!(
        b["limitUsd"] == usd.as_str() && b["state"] == "open",
        "{me:?}"
    );
    ensure!(b["remainingUsd"] == usd.as_str(), "nothing spent yet: {b}");

    let s = Arc::new(Stack::connect().await?);
    let holder = Arc::new(issued);
    let (s2, h2) = (s.clone(), holder.clone());
    let outcomes = load(
        move |replica| {
            let (s, h) = (s2.clone(), h2.clone());
            async move { message(&s, &h, replica).await }
        },
        Duration::from_secs(120),
    )
    .await?;
    let ex = exhaustion(&outcomes, limit, |r| Ok(used(r, Provider::Anthropic)?.0))?;
    println!(
        "usd budget {usd}: served ${} ({} requests), first refusal per replica {:?} after the budget was spent",
        Picodollars(ex.served).to_decimal_string(),
        outcomes.iter().filter(|o| o.reply.status == 200).count(),
        ex.to_refusal
    );
    for (i, t) in ex.to_refusal.iter().enumerate() {
        ensure!(
            *t <= WITHIN,
            "replica {i} refused {t:?} after the budget was spent"
        );
    }
    for r in &ex.refusals {
        let v = r.json();
        ensure!(
            v["type"] == "error" && v["error"]["type"] == "rate_limit_error",
            "{r:?}"
        );
        ensure!(
            r.headers.get("x-should-retry").map(String::as_str) == Some("false"),
            "{r:?}"
        );
        ensure!(
            r.headers.get("x-strake-error").map(String::as_str) == Some("budget_exceeded"),
            "{r:?}"
        );
        ensure!(r.headers.contains_key("retry-after"), "{r:?}");
        let m = v["error"]["message"].as_str().unwrap_or_default();
        ensure!(
            m.contains(&format!("monthly budget of ${usd}")) && m.contains("resets at"),
            "{m}"
        );
    }

    // Status: the period's spend is what was served, exactly; the
    // overshoot is reported and within the documented bound: each replica
    // holds back at its share of what is left (of 2 live replicas), so
    // what overshoots is the requests in flight (one per client) and one
    // request per replica past its share.
    let status = eventually(
        "status.budget has every served request",
        Duration::from_secs(30),
        || async {
            let st = budget_status(&ns, "alice").await?;
            let spent: Picodollars = st["budget"]["spentUsd"]
                .as_str()
                .unwrap_or("x")
                .parse()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            ensure!(
                spent.0 == ex.served,
                "status {} vs served {}",
                spent.to_decimal_string(),
                ex.served
            );
            Ok(st)
        },
    )
    .await?;
    let overshoot: Picodollars = status["budget"]["overshootUsd"]
        .as_str()
        .context("overshootUsd")?
        .parse()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    ensure!(overshoot.0 == ex.served - limit, "{status}");
    let served = outcomes.iter().filter(|o| o.reply.status == 200).count();
    let span = outcomes.last().unwrap().at.duration_since(outcomes[0].at);
    let rate = served as f64 / span.as_secs_f64();
    let bound = cost * 2 * (CLIENTS as u64 + 1);
    println!(
        "overshoot ${} ({:.1} % of the budget) at {rate:.0} requests/s on 2 replicas ({} held back); bound ${}",
        overshoot.to_decimal_string(),
        overshoot.0 as f64 * 100.0 / limit as f64,
        ex.held,
        Picodollars(bound).to_decimal_string()
    );
    ensure!(overshoot.0 <= bound, "overshoot beyond the bound");
    // The reconciler wakes on the collector's write.
    ns.wait_phase("alice", Phase::BudgetExceeded).await?;
    let status = budget_status(&ns, "alice").await?;
    let cond = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "BudgetExceeded")
        .cloned()
        .unwrap_or_default();
    ensure!(
        cond["status"] == "True" && cond["message"].as_str().unwrap_or("").contains("resets at"),
        "{cond}"
    );
    eventually(
        "an Event at the threshold and at exhaustion",
        Duration::from_secs(30),
        || async {
            let alerts = events(&ns, "BudgetAlert").await?;
            let spent = events(&ns, "BudgetExceeded").await?;
            ensure!(
                alerts
                    .iter()
                    .any(|m| m.starts_with("50% of the monthly budget")),
                "{alerts:?}"
            );
            ensure!(spent.len() == 1, "{spent:?}");
            Ok(())
        },
    )
    .await?;

    // Raising the budget lifts the block on both replicas within 2 s.
    let raised = Picodollars(limit * 10).to_decimal_string();
    let start = Instant::now();
    ns.patch_token(
        "alice",
        &format!(r#"{{"spec":{{"budget":{{"usd":"{raised}"}}}}}}"#),
    )
    .await?;
    for replica in 0..2 {
        eventually(
            "the raised budget is served",
            Duration::from_secs(10),
            || async {
                let r = message(&stack, &holder, replica).await?;
                ensure!(r.status == 200, "{r:?}");
                Ok(())
            },
        )
        .await?;
    }
    let lifted = start.elapsed();
    println!("raised budget served on both replicas after {lifted:?}");
    ensure!(lifted <= WITHIN, "lifted only after {lifted:?}");
    ns.wait_phase("alice", Phase::Active).await?;
    Ok(())
}

#[tokio::test]
async fn a_daily_token_budget_spent_under_load_comes_back_when_the_day_rolls_over() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::connect().await?;
    let clock = ShiftedClock(&stack);
    let ns = stack.namespace("budget-day").await?;
    ns.default_upstreams().await?;
    let issued = ns
        .issue(
            "bob",
            "identity: bob@example.com\nupstreams: [openai]\nbudget: {period: day, tokens: 1500}",
        )
        .await?;
    let s = Arc::new(Stack::connect().await?);
    let holder = Arc::new(issued);
    let (s2, h2) = (s.clone(), holder.clone());
    let outcomes = load(
        move |replica| {
            let (s, h) = (s2.clone(), h2.clone());
            async move { chat(&s, &h, replica).await }
        },
        Duration::from_secs(120),
    )
    .await?;
    let ex = exhaustion(&outcomes, 1500, |r| Ok(used(r, Provider::OpenAi)?.1))?;
    println!(
        "token budget 1500: served {} tokens, first refusal per replica {:?}",
        ex.served, ex.to_refusal
    );
    for (i, t) in ex.to_refusal.iter().enumerate() {
        ensure!(
            *t <= WITHIN,
            "replica {i} refused {t:?} after the budget was spent"
        );
    }
    for r in &ex.refusals {
        let v = r.json();
        ensure!(
            v["error"]["type"] == "insufficient_quota"
                && v["error"]["code"] == "insufficient_quota",
            "{r:?}"
        );
        ensure!(
            r.headers.get("x-should-retry").map(String::as_str) == Some("false"),
            "{r:?}"
        );
        ensure!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("daily budget of 1500 tokens"),
            "{r:?}"
        );
    }
    ns.wait_phase("bob", Phase::BudgetExceeded).await?;

    // Tomorrow, as the operator and both proxies see it.
    let now = jiff::Timestamp::now().as_second();
    let tomorrow = (now / 86_400 + 1) * 86_400;
    clock.set(tomorrow - now + 5)?;
    for replica in 0..2 {
        eventually(
            "the new day serves the token",
            Duration::from_secs(10),
            || async {
                let r = chat(&stack, &holder, replica).await?;
                ensure!(r.status == 200, "{r:?}");
                Ok(())
            },
        )
        .await?;
    }
    let status = eventually(
        "the new day's bucket and phase",
        Duration::from_secs(30),
        || async {
            let st = budget_status(&ns, "bob").await?;
            ensure!(st["phase"] == "Active", "{st}");
            let today = jiff::Timestamp::from_second(tomorrow)?
                .strftime("%Y-%m-%d")
                .to_string();
            ensure!(st["budget"]["period"] == today.as_str(), "{st}");
            Ok(st)
        },
    )
    .await?;
    ensure!(
        status["budget"]["tokens"].as_u64().unwrap_or(u64::MAX) < 1500,
        "{status}"
    );
    Ok(())
}

#[tokio::test]
async fn an_upstream_key_budget_blocks_every_token_using_it_and_only_those() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::connect().await?;
    let ns = stack.namespace("budget-key").await?;
    let keys = &stack.env.mock_keys;
    ns.upstream("team", "openai", &keys.openai).await?;
    ns.upstream("other", "openai", &keys.openai).await?;
    ns.kubectl(&[
        "patch",
        "upstreamkey",
        "team",
        "--type=merge",
        "-p",
        r#"{"spec":{"budget":{"period":"month","tokens":600}}}"#,
    ])
    .await?;
    let alice = ns
        .issue("alice", "identity: alice@example.com\nupstreams: [team]")
        .await?;
    let bob = ns
        .issue("bob", "identity: bob@example.com\nupstreams: [team]")
        .await?;
    let carol = ns
        .issue("carol", "identity: carol@example.com\nupstreams: [other]")
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        ensure!(Instant::now() < deadline, "the key's budget is never spent");
        let r = chat(&stack, &alice, 0).await?;
        match reason(&r) {
            Some("budget_exceeded") => break,
            Some("budget_held_back") => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => ensure!(r.status == 200, "{r:?}"),
        }
    }
    // Replica 0 served it all and refuses at once; replica 1 learns it
    // from the published record.
    let start = Instant::now();
    for (who, replica) in [(&alice, 0), (&bob, 0), (&bob, 1), (&alice, 1)] {
        eventually(
            "the key's budget refuses its tokens",
            Duration::from_secs(10),
            || async {
                let r = chat(&stack, who, replica).await?;
                ensure!(r.status == 429, "{} via {replica}: {r:?}", who.name);
                let m = r.json()["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                ensure!(m.contains("upstream 'team', shared by every token"), "{m}");
                ensure!(r.json()["error"]["code"] == "insufficient_quota", "{r:?}");
                Ok(())
            },
        )
        .await?;
    }
    let everywhere = start.elapsed();
    println!("the key's budget refused on the other replica after {everywhere:?}");
    ensure!(
        everywhere <= WITHIN,
        "refused everywhere only after {everywhere:?}"
    );
    for replica in 0..2 {
        let r = chat(&stack, &carol, replica).await?;
        ensure!(r.status == 200, "another key's token is not blocked: {r:?}");
    }
    eventually("the key says so", Duration::from_secs(30), || async {
        let out = ns
            .kubectl(&["get", "upstreamkey", "team", "-o", "json"])
            .await?;
        let v: Value = serde_json::from_str(&out)?;
        let c = v["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "BudgetExceeded")
            .cloned()
            .unwrap_or_default();
        ensure!(c["status"] == "True", "{v}");
        ensure!(v["status"]["budget"]["tokens"].as_u64() >= Some(600), "{v}");
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_tenant_cannot_lift_the_budget_of_another_namespaces_upstream_key() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::connect().await?;
    let theirs = stack.namespace("budget-theirs").await?;
    let mine = stack.namespace("budget-mine").await?;
    let keys = &stack.env.mock_keys;
    theirs.upstream("team", "openai", &keys.openai).await?;
    mine.upstream("team", "openai", &keys.openai).await?;
    // A tenant who may manage Strake resources in their own namespace only.
    mine.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: tenant}\n---\n\
apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: strake-tenant}\n\
rules: [{apiGroups: [strake.sh], resources: [straketokens, upstreamkeys], verbs: [get, list, create, update, patch, delete]}]\n---\n\
apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: strake-tenant}\n\
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: strake-tenant}\n\
subjects: [{kind: ServiceAccount, name: tenant}]\n",
    )
    .await?;
    let tenant = format!("--as=system:serviceaccount:{}:tenant", mine.name);
    let patch = r#"{"spec":{"budget":{"period":"month","usd":"1000000"}}}"#;
    let own = stack
        .kubectl(
            &[
                &tenant,
                "-n",
                &mine.name,
                "patch",
                "upstreamkey",
                "team",
                "--type=merge",
                "-p",
                patch,
            ],
            None,
        )
        .await?;
    ensure!(own.ok, "the tenant manages their own key: {}", own.stderr);
    let other = stack
        .kubectl(
            &[
                &tenant,
                "-n",
                &theirs.name,
                "patch",
                "upstreamkey",
                "team",
                "--type=merge",
                "-p",
                patch,
            ],
            None,
        )
        .await?;
    ensure!(!other.ok && other.stderr.contains("forbidden"), "{other:?}");
    let out = theirs
        .kubectl(&["get", "upstreamkey", "team", "-o", "json"])
        .await?;
    ensure!(
        serde_json::from_str::<Value>(&out)?["spec"]
            .get("budget")
            .is_none(),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn invalid_budgets_are_refused_at_admission_and_an_unknown_zone_is_reported() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::connect().await?;
    let ns = stack.namespace("budget-invalid").await?;
    ns.default_upstreams().await?;
    let cases = [
        ("{period: year, usd: \"5\"}", "Unsupported value: \"year\""),
        (
            "{period: month, usd: \"0\"}",
            "budget.usd must be more than 0",
        ),
        ("{period: month, usd: \"five\"}", "should match"),
        (
            "{period: month, tokens: 0}",
            "should be greater than or equal to 1",
        ),
        ("{period: month}", "a budget needs usd, tokens or both"),
        (
            "{period: month, usd: \"5\", alertAt: [80, 80]}",
            "Duplicate value: 80",
        ),
        (
            "{period: month, usd: \"5\", alertAt: [150]}",
            "should be less than or equal to 100",
        ),
    ];
    for (budget, says) in cases {
        let yaml = format!(
            "apiVersion: strake.sh/v1alpha1\nkind: StrakeToken\nmetadata: {{name: bad}}\nspec:\n  identity: x@example.com\n  upstreams: [openai]\n  budget: {budget}\n"
        );
        let out = stack
            .kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(&yaml))
            .await?;
        ensure!(
            !out.ok && out.stderr.contains(says),
            "{budget}: {}",
            out.stderr
        );
    }
    ns.token("zoned", "identity: z@example.com\nupstreams: [openai]\nbudget: {period: day, timeZone: Mars/Olympus, tokens: 10}")
        .await?;
    eventually(
        "the unknown zone is reported",
        Duration::from_secs(30),
        || async {
            let st = budget_status(&ns, "zoned").await?;
            let c = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "BudgetExceeded")
                .cloned()
                .unwrap_or_default();
            ensure!(c["reason"] == "UnknownTimeZone", "{st}");
            ensure!(
                c["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("\"Mars/Olympus\" is not an IANA time zone"),
                "{c}"
            );
            Ok(())
        },
    )
    .await?;
    Ok(())
}
