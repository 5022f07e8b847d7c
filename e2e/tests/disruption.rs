//! Restarts and outages of the shared stack: the operator, the proxy and the
//! kube-apiserver go away and come back, and nothing is lost. These tests
//! stop processes every other test relies on, so run-e2e.sh runs this binary
//! alone, after the others, one test at a time (and a lock enforces it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use strake_e2e::stack::RECONCILE;
use strake_e2e::{Stack, eventually};
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

const OPENAI: &str = "upstreams: [openai]";
/// Longer than the operator's Lease renewal deadline (10 s).
const OUTAGE: Duration = Duration::from_secs(15);

/// Each test starts from a whole stack, whatever the one before left behind.
async fn whole_stack(stack: &Stack) -> Result<()> {
    stack.apiserver("start").await?;
    for name in ["mock", "proxy", "proxy2", "operator"] {
        stack.service("start", name).await?;
    }
    Ok(())
}

#[tokio::test]
async fn operator_restart_loses_nothing() -> Result<()> {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = Stack::connect().await?;
    whole_stack(&stack).await?;
    let ns = stack.namespace("operator-restart").await?;
    ns.default_upstreams().await?;
    let keep = ns
        .issue("keep", &format!("identity: keep@example.com\n{OPENAI}"))
        .await?;
    let gone = ns
        .issue("gone", &format!("identity: gone@example.com\n{OPENAI}"))
        .await?;
    let marker = ns.marker("restart");
    stack.chat_until(&keep, &marker, 200).await?;

    stack.service("stop", "operator").await?;
    // While it is down: a revocation and a new token wait for it.
    let while_down = async {
        ns.delete_token("gone").await?;
        ns.token("late", &format!("identity: late@example.com\n{OPENAI}"))
            .await?;
        stack.chat_until(&keep, &marker, 200).await
    }
    .await;
    stack.service("start", "operator").await?;
    while_down?;

    let started = Instant::now();
    stack.chat_until(&gone, &marker, 401).await?;
    println!(
        "operator restart: revocation made while it was down took effect {} ms after it was ready",
        started.elapsed().as_millis()
    );
    ns.wait_ready("late").await?;
    let late = ns.issued("late").await?;
    stack.chat_until(&late, &marker, 200).await?;
    // The surviving token was neither lost nor re-minted.
    ensure!(
        ns.issued("keep").await?.token == keep.token,
        "keep was re-minted"
    );
    let reply = stack.chat(&keep, &marker).await?;
    ensure!(reply.status == 200, "keep after the restart: {reply:?}");
    Ok(())
}

#[tokio::test]
async fn proxy_restart_loses_nothing() -> Result<()> {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = Stack::connect().await?;
    whole_stack(&stack).await?;
    let ns = stack.namespace("proxy-restart").await?;
    ns.default_upstreams().await?;
    let keep = ns
        .issue("keep", &format!("identity: keep@example.com\n{OPENAI}"))
        .await?;
    let gone = ns
        .issue("gone", &format!("identity: gone@example.com\n{OPENAI}"))
        .await?;
    let marker = ns.marker("restart");
    stack.chat_until(&keep, &marker, 200).await?;
    stack.chat_until(&gone, &marker, 200).await?;

    // A plain restart: ready means it knows every token again.
    stack.service("restart", "proxy").await?;
    let reply = stack.chat(&keep, &marker).await?;
    ensure!(
        reply.status == 200,
        "first request after the restart: {reply:?}"
    );

    // Changes made while it is down are there when it comes back.
    stack.service("stop", "proxy").await?;
    let while_down = async {
        ns.delete_token("gone").await?;
        eventually("gone's hashed Secret is deleted", RECONCILE, || async {
            ensure!(
                stack
                    .proxy_secrets()
                    .get_opt(&ns.hashed_secret("gone"))
                    .await?
                    .is_none()
            );
            Ok(())
        })
        .await?;
        ns.issue("late", &format!("identity: late@example.com\n{OPENAI}"))
            .await
    }
    .await;
    stack.service("start", "proxy").await?;
    let late = while_down?;
    for (who, status) in [(&keep, 200), (&late, 200), (&gone, 401)] {
        let reply = stack.chat(who, &marker).await?;
        ensure!(
            reply.status == status,
            "{} right after the proxy is ready: {reply:?}",
            who.name
        );
    }
    Ok(())
}

#[tokio::test]
async fn apiserver_outage_fails_no_request_and_revocation_resumes() -> Result<()> {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = Stack::connect().await?;
    whole_stack(&stack).await?;
    let ns = stack.namespace("apiserver-outage").await?;
    ns.default_upstreams().await?;
    let steady = ns
        .issue("steady", &format!("identity: steady@example.com\n{OPENAI}"))
        .await?;
    let later = ns
        .issue("later", &format!("identity: later@example.com\n{OPENAI}"))
        .await?;
    let marker = ns.marker("outage");
    stack.chat_until(&steady, &marker, 200).await?;
    stack.chat_until(&later, &marker, 200).await?;
    let operator_pid = stack.operator_pid().await?;

    // Requests every 50 ms through a stop and start of the kube-apiserver,
    // down for longer than the operator's renewal deadline (10 s).
    let sent = AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    let done = tokio::sync::Notify::new();
    let traffic = async {
        loop {
            let outcome = stack.chat(&steady, &marker).await;
            sent.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Ok(reply) if reply.status == 200 => {}
                Ok(reply) => failed
                    .lock()
                    .unwrap()
                    .push(format!("{}: {}", reply.status, reply.body)),
                Err(e) => failed.lock().unwrap().push(format!("{e:#}")),
            }
            tokio::select! {
                _ = done.notified() => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    };
    let mut back = jiff::Timestamp::now();
    let outage = async {
        let result = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let down = Instant::now();
            stack.apiserver("stop").await?;
            tokio::time::sleep(OUTAGE).await;
            stack.apiserver("start").await?;
            back = jiff::Timestamp::now();
            println!(
                "apiserver outage: down for {} ms",
                down.elapsed().as_millis()
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            anyhow::Ok(())
        }
        .await;
        done.notify_one();
        result
    };
    let ((), outage) = tokio::join!(traffic, outage);
    outage?;
    let failed = failed.into_inner().unwrap();
    let sent = sent.into_inner();
    println!("apiserver outage: {sent} requests, {} failed", failed.len());
    ensure!(sent > 50, "only {sent} requests were sent");
    ensure!(
        failed.is_empty(),
        "requests failed during the outage:\n{}",
        failed.join("\n")
    );

    // The proxy rode it out.
    let proxy = stack.service_status("proxy").await?;
    ensure!(proxy == "ready", "the proxy after the outage: {proxy}");
    // The operator lost its Lease (it could not renew for longer than its
    // deadline) and stopped its controllers, but the process stayed: in a
    // pod an exit would be a restart, and repeated outages a CrashLoopBackOff.
    // It campaigns again and leads once the API server is back.
    ensure!(
        stack.service_status("operator").await? != "stopped"
            && stack.operator_pid().await? == operator_pid,
        "the operator process exited during the outage"
    );
    operator_leads_again(&stack, back).await?;

    // Revocation works again: the watches resumed (within RECONCILE, 30 s,
    // which also covers a restarted operator waiting out the old Lease).
    let revoked = stack
        .time_to_401(&later, &marker, RECONCILE, ns.delete_token("later"))
        .await;
    let latency = match revoked {
        Ok(latency) => latency,
        Err(e) => {
            let finalized = ns.tokens().get_opt("later").await?.is_none();
            let published = stack
                .proxy_secrets()
                .get_opt(&ns.hashed_secret("later"))
                .await?
                .is_some();
            let stuck = match (finalized, published) {
                (false, true) => "the operator has not processed the deletion",
                (_, false) => "the hashed Secret is gone but the proxy still accepts the token",
                (true, true) => "the StrakeToken is gone but its hashed Secret is not",
            };
            return Err(e.context(format!("after the outage, {stuck}")));
        }
    };
    println!(
        "apiserver outage: revocation after the restart took {} ms",
        latency.as_millis()
    );
    Ok(())
}

/// Waits until the operator, ready, has renewed its Lease after `back`.
async fn operator_leads_again(stack: &Stack, back: jiff::Timestamp) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(stack.client.clone(), &stack.env.namespace);
    eventually("the operator renews its Lease again", RECONCILE, || async {
        let status = stack.service_status("operator").await?;
        ensure!(status == "ready", "the operator is {status}");
        let lease = leases.get("strake-operator").await?;
        let renewed = lease.spec.and_then(|s| s.renew_time).map(|t| t.0);
        ensure!(
            renewed.is_some_and(|t| t > back),
            "last renewed {renewed:?}"
        );
        Ok(())
    })
    .await
}
