//! What an UpstreamKey may use, as its author and the platform team see it:
//! only a Secret that opted in with the `strake.sh/upstream-key` label, and
//! only a host the operator allows. Anything else is not Ready, with a reason
//! that says what to do, and nothing reaches the proxy.

use anyhow::{Result, ensure};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use strake_crds::{Phase, UpstreamKey, contract};
use strake_e2e::stack::{RECONCILE, TestNs, assert_upstream_saw};
use strake_e2e::{Stack, eventually};

/// Waits until the operator has seen the UpstreamKey's current generation and
/// its Ready condition has `reason`; returns that condition.
async fn wait_reason(ns: &TestNs<'_>, name: &str, reason: &str) -> Result<Condition> {
    let keys: Api<UpstreamKey> = Api::namespaced(ns.stack.client.clone(), &ns.name);
    eventually(
        &format!("upstreamkey {name} has reason {reason}"),
        RECONCILE,
        || async {
            let uk = keys.get(name).await?;
            let status = uk.status.clone().unwrap_or_default();
            ensure!(
                status.observed_generation == uk.metadata.generation,
                "observedGeneration {:?}, generation {:?}",
                status.observed_generation,
                uk.metadata.generation
            );
            let ready = status.conditions.into_iter().find(|c| c.type_ == "Ready");
            match ready {
                Some(c) if c.reason == reason => Ok(c),
                other => anyhow::bail!("Ready condition: {other:?}"),
            }
        },
    )
    .await
}

/// Waits until the proxy namespace holds (or no longer holds) the upstream
/// Secret published for `name`.
async fn wait_published(ns: &TestNs<'_>, name: &str, published: bool) -> Result<()> {
    let secret = contract::upstream_secret_name(&ns.name, name);
    eventually(
        &format!("upstream {name} published: {published}"),
        RECONCILE,
        || async {
            let found = ns.stack.proxy_secrets().get_opt(&secret).await?.is_some();
            ensure!(found == published, "published: {found}");
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn an_upstream_key_uses_a_secret_only_once_it_is_labelled() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("opt-in").await?;
    let real_key = &stack.env.mock_keys.openai;
    // A Secret made for something else; the UpstreamKey's author names it.
    ns.key_secret("openai", real_key, false).await?;
    ns.upstream_key("openai", "openai", &stack.env.mock_url)
        .await?;

    let ready = wait_reason(&ns, "openai", "SecretNotOptedIn").await?;
    ensure!(ready.status == "False", "{ready:?}");
    let fix = format!(
        "kubectl -n {} label secret openai-upstream strake.sh/upstream-key=true",
        ns.name
    );
    ensure!(
        ready.message.contains(&fix),
        "the message does not say how to fix it: {}",
        ready.message
    );
    ensure!(!ready.message.contains(real_key.as_str()));
    let table = ns.kubectl(&["get", "upstreamkeys"]).await?;
    ensure!(table.contains("SecretNotOptedIn"), "kubectl get:\n{table}");
    wait_published(&ns, "openai", false).await?;

    // A token naming it is issued but cannot reach the provider.
    ns.token("alice", "identity: alice@example.com\nupstreams: [openai]")
        .await?;
    ns.wait_phase("alice", Phase::Pending).await?;
    let alice = eventually("alice's Secret is written", RECONCILE, || {
        ns.issued("alice")
    })
    .await?;
    let marker = ns.marker("unlabelled");
    let reply = stack.chat(&alice, &marker).await?;
    ensure!(reply.status == 503, "before the label: {reply:?}");
    ensure!(stack.upstream_requests(&marker).await?.is_empty());

    // Whoever manages the Secret labels it, as the message says.
    ns.kubectl(&[
        "label",
        "secret",
        "openai-upstream",
        "strake.sh/upstream-key=true",
    ])
    .await?;
    wait_reason(&ns, "openai", "Published").await?;
    ns.wait_ready("alice").await?;
    let marker = ns.marker("labelled");
    stack.chat_until(&alice, &marker, 200).await?;
    let seen = stack.upstream_requests(&marker).await?;
    assert_upstream_saw(
        &seen,
        "authorization",
        &format!("Bearer {real_key}"),
        &alice.token,
    )?;

    // Taking the label off withdraws the key from the proxy again.
    ns.kubectl(&[
        "label",
        "secret",
        "openai-upstream",
        "strake.sh/upstream-key-",
    ])
    .await?;
    wait_reason(&ns, "openai", "SecretNotOptedIn").await?;
    wait_published(&ns, "openai", false).await?;
    stack
        .chat_until(&alice, &ns.marker("unlabelled-again"), 503)
        .await?;
    Ok(())
}

#[tokio::test]
async fn an_upstream_key_to_a_host_not_allowed_is_refused_and_withdrawn() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("hosts").await?;
    let keys = &stack.env.mock_keys;
    ns.upstream_secret("metadata", &keys.openai).await?;
    // The cloud metadata address, from inside the proxy's namespace.
    ns.upstream_key("metadata", "openai-compatible", "http://169.254.169.254")
        .await?;
    let ready = wait_reason(&ns, "metadata", "HostNotAllowed").await?;
    ensure!(ready.status == "False", "{ready:?}");
    ensure!(
        ready.message.contains("http://169.254.169.254:80")
            && ready.message.contains("--allowed-upstream-hosts"),
        "{}",
        ready.message
    );
    wait_published(&ns, "metadata", false).await?;

    // A working key, repointed at an in-cluster service, is withdrawn.
    ns.upstream("openai", "openai", &keys.openai).await?;
    let bob = ns
        .issue("bob", "identity: bob@example.com\nupstreams: [openai]")
        .await?;
    stack.chat_until(&bob, &ns.marker("allowed"), 200).await?;
    ns.upstream_key("openai", "openai", "https://kubernetes.default.svc")
        .await?;
    wait_reason(&ns, "openai", "HostNotAllowed").await?;
    wait_published(&ns, "openai", false).await?;
    ns.wait_phase("bob", Phase::Pending).await?;
    stack.chat_until(&bob, &ns.marker("refused"), 503).await?;
    Ok(())
}
