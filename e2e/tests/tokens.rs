//! A token's life, as its issuer and its holder see it: issue, use, revoke,
//! suspend, expire, rotate, and the operator repairing what someone broke.
//! Each test has its own namespace; they run concurrently.

use std::time::Duration;

use anyhow::{Result, ensure};
use strake_crds::{Phase, contract};
use strake_e2e::stack::{RECONCILE, assert_upstream_saw, header};
use strake_e2e::{Stack, eventually};

#[tokio::test]
async fn issued_token_works_and_upstream_sees_only_the_real_key() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("issue").await?;
    ns.default_upstreams().await?;
    let alice = ns
        .issue(
            "alice",
            "identity: alice@example.com\nupstreams: [openai, anthropic]",
        )
        .await?;

    // Status: what `kubectl get` and Argo CD show.
    let t = ns.tokens().get("alice").await?;
    let status = t.status.unwrap_or_default();
    ensure!(
        status.phase == Some(Phase::Active),
        "phase {:?}",
        status.phase
    );
    ensure!(status.observed_generation == t.metadata.generation);
    ensure!(status.secret_name.as_deref() == Some("alice-strake"));
    let prefix = status.token_prefix.unwrap_or_default();
    ensure!(
        prefix.len() == strake_crds::token::DISPLAY_PREFIX_LEN && alice.token.starts_with(&prefix),
        "tokenPrefix {prefix:?} is not the token's first {} characters",
        strake_crds::token::DISPLAY_PREFIX_LEN
    );
    let endpoint = status.endpoint.unwrap_or_default();
    ensure!(
        endpoint.starts_with(&stack.env.proxy_url),
        "endpoint {endpoint}"
    );
    let table = ns.kubectl(&["get", "straketokens"]).await?;
    ensure!(
        table.contains("alice@example.com") && table.contains("Active"),
        "kubectl get straketokens:\n{table}"
    );

    // The holder's Secret: the token and ready-to-use env keys, owned by the
    // StrakeToken so that garbage collection removes it with the token.
    let proxy = &stack.env.proxy_url;
    ensure!(alice.env("OPENAI_BASE_URL")? == format!("{proxy}/v1"));
    ensure!(alice.env("OPENAI_API_KEY")? == alice.token);
    ensure!(alice.env("ANTHROPIC_BASE_URL")? == proxy.as_str());
    ensure!(alice.env("ANTHROPIC_AUTH_TOKEN")? == alice.token);
    ensure!(alice.env("STRAKE_BASE_URL")?.starts_with(proxy.as_str()));
    let secret = ns.secrets().get("alice-strake").await?;
    let owner = secret
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.kind == "StrakeToken");
    ensure!(
        owner.is_some_and(|o| o.name == "alice" && Some(o.uid) == t.metadata.uid),
        "alice-strake is not owned by the StrakeToken alice"
    );

    // The proxy namespace has the hash and the policy, never the token.
    let hashed = stack
        .proxy_secrets()
        .get(&ns.hashed_secret("alice"))
        .await?;
    let labels = hashed.metadata.labels.clone().unwrap_or_default();
    ensure!(labels.get(contract::ROLE_LABEL).map(String::as_str) == Some(contract::ROLE_TOKEN));
    ensure!(labels.get(contract::SOURCE_NAMESPACE_LABEL) == Some(&ns.name));
    let record = hashed
        .data
        .unwrap_or_default()
        .get(contract::RECORD_KEY)
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .unwrap_or_default();
    let record: contract::TokenRecord = serde_json::from_str(&record)?;
    ensure!(record.sha256 == strake_crds::token::TokenHash::of(&alice.token));
    ensure!(record.identity == "alice@example.com");

    // OpenAI style, as the OpenAI SDK and curl send it.
    let marker = ns.marker("openai");
    let reply = stack.chat(&alice, &marker).await?;
    ensure!(reply.status == 200, "chat completion: {reply:?}");
    ensure!(reply.json()["choices"][0]["message"]["content"].is_string());
    let seen = stack.upstream_requests(&marker).await?;
    assert_upstream_saw(
        &seen,
        "authorization",
        &format!("Bearer {}", stack.env.mock_keys.openai),
        &alice.token,
    )?;

    // Anthropic style, as Claude Code sends it: same base URL, routed by API style.
    let marker = ns.marker("anthropic");
    let reply = stack.message(&alice, &marker).await?;
    ensure!(reply.status == 200, "message: {reply:?}");
    ensure!(reply.json()["content"][0]["text"].is_string());
    let seen = stack.upstream_requests(&marker).await?;
    assert_upstream_saw(
        &seen,
        "x-api-key",
        &stack.env.mock_keys.anthropic,
        &alice.token,
    )?;
    ensure!(
        seen.iter().all(|r| header(r, "authorization").is_none()),
        "the client's Authorization header reached Anthropic"
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_delete_revokes_within_a_second() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("revoke").await?;
    ns.default_upstreams().await?;
    let spec = |who: &str| format!("identity: {who}@example.com\nupstreams: [openai]");
    let alice = ns.issue("alice", &spec("alice")).await?;
    let bob = ns.issue("bob", &spec("bob")).await?;
    let marker = ns.marker("revoke");
    stack.chat_until(&alice, &marker, 200).await?;
    stack.chat_until(&bob, &marker, 200).await?;

    let latency = stack
        .time_to_401(&alice, &marker, RECONCILE, ns.delete_token("alice"))
        .await?;
    println!(
        "revocation: kubectl delete straketoken -> 401 at the proxy in {} ms",
        latency.as_millis()
    );
    ensure!(
        latency <= Duration::from_secs(1),
        "revocation took {} ms, more than 1 s",
        latency.as_millis()
    );
    let reply = stack.chat(&alice, &marker).await?;
    ensure!(reply.status == 401, "after revocation: {reply:?}");
    ensure!(
        reply.json()["error"]["message"].is_string(),
        "401 is not an OpenAI-shaped error: {}",
        reply.body
    );

    let hashed = ns.hashed_secret("alice");
    eventually("the hashed Secret is deleted", RECONCILE, || async {
        ensure!(stack.proxy_secrets().get_opt(&hashed).await?.is_none());
        Ok(())
    })
    .await?;
    eventually(
        "the garbage collector deletes alice-strake",
        RECONCILE,
        || async {
            ensure!(ns.secrets().get_opt("alice-strake").await?.is_none());
            Ok(())
        },
    )
    .await?;
    eventually("the StrakeToken is gone", RECONCILE, || async {
        ensure!(ns.tokens().get_opt("alice").await?.is_none());
        Ok(())
    })
    .await?;

    let reply = stack.chat(&bob, &marker).await?;
    ensure!(
        reply.status == 200,
        "bob after alice's revocation: {reply:?}"
    );
    ensure!(ns.secrets().get_opt("bob-strake").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn suspend_rejects_and_resume_restores() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("suspend").await?;
    ns.default_upstreams().await?;
    let carol = ns
        .issue("carol", "identity: carol@example.com\nupstreams: [openai]")
        .await?;
    let marker = ns.marker("suspend");
    stack.chat_until(&carol, &marker, 200).await?;

    ns.patch_token("carol", r#"{"spec":{"suspended":true}}"#)
        .await?;
    ns.wait_phase("carol", Phase::Suspended).await?;
    let reply = stack.chat_until(&carol, &marker, 403).await?;
    ensure!(
        reply.json()["error"]["message"].is_string(),
        "{}",
        reply.body
    );

    ns.patch_token("carol", r#"{"spec":{"suspended":false}}"#)
        .await?;
    ns.wait_phase("carol", Phase::Active).await?;
    stack.chat_until(&carol, &marker, 200).await?;
    // Suspension keeps the token: the holder changes nothing.
    ensure!(ns.issued("carol").await?.token == carol.token);
    Ok(())
}

#[tokio::test]
async fn token_expires_at_expires_at() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("expiry").await?;
    ns.default_upstreams().await?;
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(8);
    let expires = expires.round(jiff::Unit::Second)?;
    let dave = ns
        .issue(
            "dave",
            &format!("identity: dave@example.com\nupstreams: [openai]\nexpiresAt: \"{expires}\""),
        )
        .await?;
    let marker = ns.marker("expiry");
    let reply = stack.chat(&dave, &marker).await?;
    ensure!(
        jiff::Timestamp::now() >= expires || reply.status == 200,
        "before expiry: {reply:?}"
    );

    let reply = stack.chat_until(&dave, &marker, 401).await?;
    let late = jiff::Timestamp::now().duration_since(expires);
    println!("expiry: first 401 {} ms after expiresAt", late.as_millis());
    ensure!(
        late >= jiff::SignedDuration::ZERO,
        "401 came {} ms before expiresAt: {reply:?}",
        -late.as_millis()
    );
    let t = ns.wait_phase("dave", Phase::Expired).await?;
    let ready = t
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready");
    ensure!(
        ready.as_ref().is_some_and(|c| c.status == "False"),
        "an expired token is Ready: {ready:?}"
    );
    Ok(())
}

#[tokio::test]
async fn rotation_issues_a_new_token_and_kills_the_old_one() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("rotation").await?;
    ns.default_upstreams().await?;
    let old = ns
        .issue("erin", "identity: erin@example.com\nupstreams: [openai]")
        .await?;
    let marker = ns.marker("rotation");
    stack.chat_until(&old, &marker, 200).await?;

    ns.patch_token("erin", r#"{"spec":{"rotation":1}}"#).await?;
    let new = ns.reissued(&old).await?;
    ns.wait_phase("erin", Phase::Active).await?;
    stack.chat_until(&new, &marker, 200).await?;
    stack.chat_until(&old, &marker, 401).await?;
    let prefix = ns
        .tokens()
        .get("erin")
        .await?
        .status
        .unwrap_or_default()
        .token_prefix
        .unwrap_or_default();
    ensure!(
        new.token.starts_with(&prefix),
        "status.tokenPrefix is not the new token's"
    );
    Ok(())
}

#[tokio::test]
async fn upstream_key_rotation_reaches_the_proxy_without_new_tokens() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("upstream-rotation").await?;
    ns.default_upstreams().await?;
    let frank = ns
        .issue("frank", "identity: frank@example.com\nupstreams: [openai]")
        .await?;
    let marker = ns.marker("before");
    stack.chat_until(&frank, &marker, 200).await?;

    // The provider issues a new key; the team puts it in the same Secret.
    let rotated = format!("{}-rotated-{}", stack.env.mock_keys.openai, &ns.name);
    let mut keys = stack.default_upstream_keys();
    keys["openai"]
        .as_array_mut()
        .expect("a list")
        .push(rotated.clone().into());
    stack.set_upstream_keys(keys).await?;
    let result = async {
        ns.upstream_secret("openai", &rotated).await?;
        let marker = ns.marker("after");
        eventually(
            "the upstream receives the rotated key",
            RECONCILE,
            || async {
                let reply = stack.chat(&frank, &marker).await?;
                ensure!(reply.status == 200, "{reply:?}");
                let seen = stack.upstream_requests(&marker).await?;
                let last = seen.last().into_iter().collect::<Vec<_>>();
                ensure!(
                    last.iter()
                        .all(|r| header(r, "authorization") == Some(&format!("Bearer {rotated}"))),
                    "still the old key"
                );
                Ok(())
            },
        )
        .await?;
        ensure!(
            ns.issued("frank").await?.token == frank.token,
            "rotating the upstream key changed the token"
        );
        Ok(())
    }
    .await;
    stack
        .set_upstream_keys(stack.default_upstream_keys())
        .await?;
    result
}

#[tokio::test]
async fn token_waits_for_its_upstream_key() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("late-upstream").await?;
    ns.token("gina", "identity: gina@example.com\nupstreams: [openai]")
        .await?;
    let t = ns.wait_phase("gina", Phase::Pending).await?;
    let ready = t
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready");
    ensure!(
        ready
            .as_ref()
            .is_some_and(|c| c.status == "False" && c.reason == "UpstreamNotFound"),
        "Ready condition: {ready:?}"
    );

    let keys = &stack.env.mock_keys;
    ns.upstream("openai", "openai", &keys.openai).await?;
    ns.wait_ready("gina").await?;
    let gina = ns.issued("gina").await?;
    stack.chat_until(&gina, &ns.marker("late"), 200).await?;
    Ok(())
}

#[tokio::test]
async fn operator_restores_a_deleted_hashed_secret() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("drift-hashed").await?;
    ns.default_upstreams().await?;
    let hank = ns
        .issue("hank", "identity: hank@example.com\nupstreams: [openai]")
        .await?;
    let marker = ns.marker("drift");
    stack.chat_until(&hank, &marker, 200).await?;

    let name = ns.hashed_secret("hank");
    let before = stack.proxy_secrets().get(&name).await?.metadata.uid;
    ns.delete_secret(&stack.proxy_secrets(), &name).await?;
    eventually("the hashed Secret is restored", RECONCILE, || async {
        let now = stack.proxy_secrets().get_opt(&name).await?;
        ensure!(now.is_some_and(|s| s.metadata.uid != before), "not yet");
        Ok(())
    })
    .await?;
    // The holder's token is the same and works again.
    stack.chat_until(&hank, &marker, 200).await?;
    ensure!(ns.issued("hank").await?.token == hank.token);
    Ok(())
}

#[tokio::test]
async fn deleting_the_plaintext_secret_issues_a_new_token() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("drift-plain").await?;
    ns.default_upstreams().await?;
    let old = ns
        .issue("ivan", "identity: ivan@example.com\nupstreams: [openai]")
        .await?;
    let marker = ns.marker("drift");
    stack.chat_until(&old, &marker, 200).await?;

    ns.delete_secret(&ns.secrets(), "ivan-strake").await?;
    let new = ns.reissued(&old).await?;
    stack.chat_until(&new, &marker, 200).await?;
    stack.chat_until(&old, &marker, 401).await?;
    Ok(())
}

#[tokio::test]
async fn endpoints_open_files_only_to_the_token_that_names_them() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("endpoints").await?;
    ns.default_upstreams().await?;
    let erin = ns
        .issue(
            "erin",
            "identity: erin@example.com\nupstreams: [openai]\nendpoints: [{methods: [GET], path: /v1/files}]",
        )
        .await?;
    let frank = ns
        .issue("frank", "identity: frank@example.com\nupstreams: [openai]")
        .await?;
    let marker = ns.marker("endpoints");
    stack.chat_until(&erin, &marker, 200).await?;
    stack.chat_until(&frank, &marker, 200).await?;
    let list_files = |issued: &strake_e2e::Issued| {
        let url = issued
            .env("OPENAI_BASE_URL")
            .map(|base| format!("{base}/files"));
        let auth = issued
            .env("OPENAI_API_KEY")
            .map(|key| format!("Bearer {key}"));
        let stack = &stack;
        async move {
            let (url, auth) = (url?, auth?);
            stack
                .http
                .send(http::Method::GET, &url, &[("authorization", &auth)], None)
                .await
        }
    };

    // Files are account-wide on a shared key: closed unless named.
    let reply = list_files(&erin).await?;
    ensure!(reply.status == 200, "erin lists files: {reply:?}");
    ensure!(reply.json()["object"] == "list", "{}", reply.body);
    let reply = list_files(&frank).await?;
    ensure!(reply.status == 403, "frank lists files: {reply:?}");
    ensure!(
        reply.json()["error"]["code"] == "endpoint_not_allowed",
        "{}",
        reply.body
    );

    // Opening it is a spec change; the token stays the same.
    ns.patch_token(
        "frank",
        r#"{"spec":{"endpoints":[{"methods":["GET"],"path":"/v1/files"}]}}"#,
    )
    .await?;
    eventually("frank may list files", RECONCILE, || async {
        let reply = list_files(&frank).await?;
        ensure!(reply.status == 200, "got {}: {}", reply.status, reply.body);
        Ok(())
    })
    .await?;
    ensure!(ns.issued("frank").await?.token == frank.token);
    Ok(())
}

#[tokio::test]
async fn a_token_warns_days_before_it_expires() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("expiry-warning").await?;
    ns.default_upstreams().await?;
    let in_days = |days: i64| {
        jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + days * 86_400)
            .map(|t| t.to_string())
    };
    // The stack's operator warns 7 days ahead (the default).
    let soon = in_days(3)?;
    let later = in_days(30)?;
    let issued = ns
        .issue(
            "soon",
            &format!("identity: soon@example.com\nupstreams: [openai]\nexpiresAt: \"{soon}\""),
        )
        .await?;
    ns.issue(
        "later",
        &format!("identity: later@example.com\nupstreams: [openai]\nexpiresAt: \"{later}\""),
    )
    .await?;
    ns.issue("never", "identity: never@example.com\nupstreams: [openai]")
        .await?;
    let condition = |name: &'static str| {
        let ns = &ns;
        async move {
            let t = ns.tokens().get(name).await?;
            anyhow::Ok(
                t.status
                    .unwrap_or_default()
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "ExpiringSoon"),
            )
        }
    };
    let c = condition("soon").await?.expect("an ExpiringSoon condition");
    ensure!(c.status == "True" && c.reason == "ExpiresSoon", "{c:?}");
    ensure!(
        c.message.contains(&soon)
            && (c.message.contains("in 2 days") || c.message.contains("in 3 days")),
        "{}",
        c.message
    );
    let c = condition("later")
        .await?
        .expect("an ExpiringSoon condition");
    ensure!(c.status == "False" && c.reason == "ExpiresLater", "{c:?}");
    ensure!(condition("never").await?.is_none());
    // Still Ready and working: a warning, not a refusal.
    stack.chat_until(&issued, &ns.marker("soon"), 200).await?;

    // One warning Event on the token.
    eventually("an ExpiringSoon event", RECONCILE, || async {
        let events = ns
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=soon,reason=ExpiringSoon",
                "-o",
                "jsonpath={range .items[*]}{.type} {.message}{\"\\n\"}{end}",
            ])
            .await?;
        ensure!(
            events.lines().count() == 1 && events.starts_with("Warning ") && events.contains(&soon),
            "{events:?}"
        );
        Ok(())
    })
    .await?;

    // The expiry metric, for the chart's alert.
    let metrics = stack.operator_metrics().await?;
    let expires = soon.parse::<jiff::Timestamp>()?.as_second();
    let series = format!(
        "strake_operator_token_expiry_timestamp_seconds{{token=\"{}/soon\",identity=\"soon@example.com\"}} {expires}",
        ns.name
    );
    ensure!(
        metrics.contains(&series),
        "{series} not in the operator's metrics"
    );
    ensure!(!metrics.contains(&format!("{}/never", ns.name)));
    // Extending the expiry ends the warning.
    ns.patch_token(
        "soon",
        &format!("{{\"spec\":{{\"expiresAt\":\"{later}\"}}}}"),
    )
    .await?;
    eventually("the warning ends", RECONCILE, || async {
        let c = condition("soon").await?.expect("an ExpiringSoon condition");
        ensure!(c.status == "False", "{c:?}");
        Ok(())
    })
    .await
}
