//! Rate limits that hold across replicas: both proxy replicas of the stack
//! count each other through the EndpointSlices of the chart's proxy admin
//! Service (`--replica-service`, as in a cluster) and each admits its share
//! of a token's limit, so round-robin load at twice the limit is admitted
//! at the limit, not at twice it. The tests change the replica count the
//! proxies see, so run-e2e.sh runs this binary alone, one test at a time.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use http::Method;
use serde_json::{Value, json};
use strake_e2e::http::Http;
use strake_e2e::{Issued, Stack, TestNs, eventually};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// The token's limit: high enough that a 30 s window holds hundreds of
/// admissions (so a request or two at the window's edges is under 1 %),
/// low enough that twice it is an easy load on two shared cores.
const LIMIT: u32 = 600;
/// The measured window.
const WINDOW: Duration = Duration::from_secs(30);
/// The replicas of the stack.
const REPLICAS: u32 = 2;
/// A replica count change must reach every replica within this.
const COUNT_FOLLOWS: Duration = Duration::from_secs(2);

/// The two replicas' base URLs for `issued`'s OpenAI upstream.
fn bases(stack: &Stack, issued: &Issued) -> Result<[String; 2]> {
    let base = issued.env("OPENAI_BASE_URL")?;
    Ok([
        base.to_string(),
        base.replacen(&stack.env.proxy_url, &stack.env.proxy2_url, 1),
    ])
}

/// One chat completion to `base`: 200 or 429, anything else fails.
async fn chat(http: Http, base: String, auth: String) -> Result<u16> {
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "fleet"}],
    });
    let reply = http
        .send(
            Method::POST,
            &format!("{base}/chat/completions"),
            &[("authorization", &auth)],
            Some(&body),
        )
        .await?;
    ensure!(
        matches!(reply.status, 200 | 429),
        "got {}: {}",
        reply.status,
        reply.body
    );
    Ok(reply.status)
}

/// `/strake/v1/me` on the replica at `proxy_url`.
async fn me(stack: &Stack, proxy_url: &str, auth: &str) -> Result<Value> {
    let reply = stack
        .http
        .send(
            Method::GET,
            &format!("{proxy_url}/strake/v1/me"),
            &[("authorization", auth)],
            None,
        )
        .await?;
    ensure!(reply.status == 200, "{}: {}", reply.status, reply.body);
    Ok(reply.json())
}

/// A token of `ns` limited to `rpm` requests a minute, and its bearer header.
async fn limited(ns: &TestNs<'_>, name: &str, rpm: u32) -> Result<(Issued, String)> {
    ns.default_upstreams().await?;
    let spec = format!(
        "identity: {name}@example.com\nupstreams: [openai]\nlimits: {{requestsPerMinute: {rpm}}}\n"
    );
    let issued = ns.issue(name, &spec).await?;
    let auth = format!("Bearer {}", issued.env("OPENAI_API_KEY")?);
    Ok((issued, auth))
}

#[tokio::test]
async fn round_robin_at_twice_the_limit_is_admitted_at_the_limit() -> Result<()> {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = Stack::connect().await?;
    let ns = stack.namespace("fleet").await?;
    let (issued, auth) = limited(&ns, "paced", LIMIT).await?;
    let bases = bases(&stack, &issued)?;

    // Both replicas know there are two before the load starts.
    for url in [&stack.env.proxy_url, &stack.env.proxy2_url] {
        let view = me(&stack, url, &auth).await?;
        let requests = &view["limits"]["requests"];
        ensure!(
            requests["replicas"] == REPLICAS
                && requests["limit"] == LIMIT
                && requests["remaining"] == LIMIT,
            "{url}: {requests}"
        );
    }

    // Empty both buckets (a minute's burst) quickly, so the window measures
    // the rate, not the burst.
    let mut refused = [false; 2];
    let mut drained = 0u32;
    while !(refused[0] && refused[1]) {
        let mut batch = JoinSet::new();
        for i in 0..32 {
            let request = chat(stack.http.clone(), bases[i % 2].clone(), auth.clone());
            batch.spawn(async move { anyhow::Ok((i % 2, request.await?)) });
        }
        while let Some(done) = batch.join_next().await {
            let (replica, status) = done??;
            refused[replica] |= status == 429;
            drained += u32::from(status == 200);
        }
        ensure!(
            drained <= 2 * LIMIT,
            "{drained} admitted and not yet refused on both"
        );
    }

    // The window: 2 × LIMIT a minute, alternating between the replicas,
    // each request sent on time whatever the replies' latency.
    let offered_per_sec = 2.0 * f64::from(LIMIT) / 60.0;
    let interval = Duration::from_secs_f64(1.0 / offered_per_sec);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let began = Instant::now();
    let mut sent = JoinSet::new();
    let mut n = 0usize;
    while began.elapsed() < WINDOW {
        ticks.tick().await;
        let (replica, request) = (
            n % 2,
            chat(stack.http.clone(), bases[n % 2].clone(), auth.clone()),
        );
        sent.spawn(async move { anyhow::Ok((replica, request.await?)) });
        n += 1;
    }
    let elapsed = began.elapsed();
    let mut admitted = [0u32; 2];
    let mut limited = [0u32; 2];
    while let Some(done) = sent.join_next().await {
        let (replica, status) = done??;
        if status == 200 {
            admitted[replica] += 1;
        } else {
            limited[replica] += 1;
        }
    }
    let total = admitted[0] + admitted[1];
    let minutes = elapsed.as_secs_f64() / 60.0;
    let per_minute = f64::from(total) / minutes;
    let expected = f64::from(LIMIT) * minutes;
    // Each bucket may hold up to one request's fraction at the window's
    // start, and the edges (the gap after draining, the last replies'
    // latency) may add half a second at the limit's rate.
    let slack = f64::from(REPLICAS) + f64::from(LIMIT) / 60.0 * 0.5;
    println!(
        "fleet: {n} requests offered in {elapsed:.1?} ({:.0}/min, limit {LIMIT}/min, {REPLICAS} replicas); \
         admitted {total} ({per_minute:.1}/min, {:.1} % of the limit: replica 1 {}, replica 2 {}), \
         refused {} + {}; {drained} admitted while draining the burst",
        f64::from(n as u32) / minutes,
        100.0 * per_minute / f64::from(LIMIT),
        admitted[0],
        admitted[1],
        limited[0],
        limited[1],
    );
    ensure!(
        f64::from(total) <= expected + slack,
        "admitted {total} in {elapsed:?}: more than the limit's {expected:.0} (+{slack:.0} at the edges)"
    );
    ensure!(
        f64::from(total) >= 0.9 * expected,
        "admitted {total} in {elapsed:?}: under 90 % of the limit's {expected:.0}"
    );
    // Round robin: each replica admitted about its half.
    for (i, a) in admitted.iter().enumerate() {
        ensure!(
            f64::from(*a) >= 0.4 * expected,
            "replica {} admitted only {a} of {total}",
            i + 1
        );
    }
    Ok(())
}

/// Marks proxy2's endpoint of the stack's EndpointSlice ready or not, as
/// its pod failing or passing its readiness probe would.
async fn set_proxy2_ready(stack: &Stack, ready: bool) -> Result<()> {
    let slice = format!("{}-proxy-admin-processes", stack.env.release);
    let patch = json!([
        {"op": "test", "path": "/endpoints/1/addresses/0", "value": "proxy2.localhost"},
        {"op": "replace", "path": "/endpoints/1/conditions", "value": {"ready": ready, "serving": ready}},
    ]);
    stack
        .kubectl_ok(
            &[
                "patch",
                "endpointslice",
                &slice,
                "-n",
                &stack.env.namespace,
                "--type=json",
                "-p",
                &patch.to_string(),
            ],
            None,
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn the_share_follows_the_replicas_the_endpoint_slice_lists() -> Result<()> {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = Stack::connect().await?;
    let ns = stack.namespace("fleet-count").await?;
    let (issued, auth) = limited(&ns, "counted", 60).await?;
    let proxy = stack.env.proxy_url.clone();
    let sees = |replicas: u32, share: u32| {
        let (stack, proxy, auth) = (&stack, &proxy, &auth);
        async move {
            let view = me(stack, proxy, auth).await?;
            let r = &view["limits"]["requests"];
            ensure!(
                r["replicas"] == replicas
                    && r["thisReplica"]["remaining"] == share
                    && r["limit"] == 60,
                "{r}"
            );
            Ok(())
        }
    };
    sees(2, 30).await?;

    // proxy2 drops out: proxy1 admits the whole limit alone.
    set_proxy2_ready(&stack, false).await?;
    let changed = Instant::now();
    let result = async {
        eventually("proxy1 counts one replica", COUNT_FOLLOWS, || sees(1, 60)).await?;
        println!(
            "fleet: a replica leaving reached the other in {:?}",
            changed.elapsed()
        );
        // The 61st request in a burst is refused; 60 pass on this replica alone.
        let base = bases(&stack, &issued)?[0].clone();
        let mut statuses = Vec::new();
        for _ in 0..61 {
            statuses.push(chat(stack.http.clone(), base.clone(), auth.clone()).await?);
        }
        ensure!(
            statuses[..60].iter().all(|s| *s == 200) && statuses[60] == 429,
            "{statuses:?}"
        );
        Ok(())
    }
    .await;
    // Back to two, whatever happened above: later tests expect both.
    set_proxy2_ready(&stack, true).await?;
    result?;
    let back = Instant::now();
    eventually(
        "proxy1 counts two replicas again",
        COUNT_FOLLOWS,
        || async {
            let view = me(&stack, &proxy, &auth).await?;
            ensure!(view["limits"]["requests"]["replicas"] == 2, "{view}");
            Ok(())
        },
    )
    .await?;
    println!(
        "fleet: a replica returning reached the other in {:?}",
        back.elapsed()
    );
    Ok(())
}
