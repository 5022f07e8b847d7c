//! Keyless identities: OIDC tokens instead of minted ones, verified by the
//! proxy offline. The cluster's own ServiceAccount tokens come from the
//! real API server (`kubectl create token`); an external issuer (standing
//! in for GitHub Actions') runs on loopback inside the test
//! ([`strake_e2e::issuer`]), so its keys can rotate and it can go down.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use http::Method;
use serde_json::{Value, json};
use strake_crds::Phase;
use strake_e2e::issuer::{Issuer, SigningKey, claims};
use strake_e2e::stack::RECONCILE;
use strake_e2e::{Reply, Stack, TestNs, eventually, leaks};

const CLUSTER_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A chat completion with `credential` as its OpenAI API key.
async fn chat(stack: &Stack, credential: &str, marker: &str) -> Result<Reply> {
    let url = format!("{}/v1/chat/completions", stack.env.proxy_url);
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": format!("Hello from {marker}")}],
    });
    let auth = format!("Bearer {credential}");
    stack
        .http
        .send(Method::POST, &url, &[("authorization", &auth)], Some(&body))
        .await
}

async fn chat_until(stack: &Stack, credential: &str, marker: &str, status: u16) -> Result<Reply> {
    eventually(
        &format!("a request with the JWT gets {status}"),
        RECONCILE,
        || async {
            let reply = chat(stack, credential, marker).await?;
            ensure!(
                reply.status == status,
                "got {}: {}",
                reply.status,
                reply.body
            );
            Ok(reply)
        },
    )
    .await
}

/// A refusal: 401 in OpenAI's shape, the reason named, no retry, and the
/// credential nowhere in the answer.
fn refused(reply: &Reply, credential: &str, reason: &str, says: &str) -> Result<()> {
    ensure!(reply.status == 401, "got {}: {}", reply.status, reply.body);
    ensure!(
        reply.headers.get("x-strake-error").map(String::as_str) == Some(reason),
        "reason {:?}, not {reason}: {}",
        reply.headers.get("x-strake-error"),
        reply.body
    );
    ensure!(
        reply.headers.get("x-should-retry").map(String::as_str) == Some("false"),
        "x-should-retry {:?}",
        reply.headers.get("x-should-retry")
    );
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(
        message.contains(says),
        "{reason}: {message:?} does not say {says:?}"
    );
    ensure!(
        !reply.body.contains(credential),
        "the answer echoes the JWT"
    );
    Ok(())
}

/// A ServiceAccount token from the API server (TokenRequest).
async fn service_account_token(ns: &TestNs<'_>, account: &str, audience: &str) -> Result<String> {
    let jwt = ns
        .kubectl(&[
            "create",
            "token",
            account,
            "--audience",
            audience,
            "--duration",
            "10m",
        ])
        .await?
        .trim()
        .to_string();
    leaks::remember(&ns.stack.env, "jwt", &jwt)?;
    Ok(jwt)
}

/// The environment a pod or a CI job would give the SDKs: the proxy's base
/// URLs and the JWT as both API keys.
fn sdk_env(stack: &Stack, jwt: &str) -> BTreeMap<String, String> {
    let base = &stack.env.proxy_url;
    BTreeMap::from([
        ("OPENAI_BASE_URL".to_string(), format!("{base}/v1")),
        ("OPENAI_API_KEY".to_string(), jwt.to_string()),
        ("ANTHROPIC_BASE_URL".to_string(), base.clone()),
        ("ANTHROPIC_AUTH_TOKEN".to_string(), jwt.to_string()),
        ("token".to_string(), jwt.to_string()),
    ])
}

/// Sends requests with `jwt` every 10 ms while `revoke` runs; the time to
/// the first refusal.
async fn time_to_refusal(
    stack: &Stack,
    jwt: &str,
    marker: &str,
    revoke: impl std::future::Future<Output = Result<()>>,
) -> Result<Duration> {
    let start = Instant::now();
    let probe = async {
        loop {
            let reply = chat(stack, jwt, marker).await?;
            match reply.status {
                401 => return Ok(start.elapsed()),
                200 => {}
                other => bail!("while revoking: got {other}: {}", reply.body),
            }
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "the JWT still works 10 s after the delete"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (revoked, latency) = tokio::join!(revoke, probe);
    revoked?;
    latency
}

#[tokio::test]
async fn a_service_account_token_works_with_the_official_sdks_and_dies_with_its_strake_token()
-> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("fed-sa").await?;
    ns.default_upstreams().await?;
    for account in ["ci-runner", "other"] {
        ns.kubectl(&["create", "serviceaccount", account]).await?;
    }
    ns.token(
        "ci",
        "identity: ci/runner\nupstreams: [openai, anthropic]\nserviceAccount: ci-runner",
    )
    .await?;
    let t = ns.wait_ready("ci").await?;
    let status = t.status.unwrap_or_default();
    let subject = format!("system:serviceaccount:{}:ci-runner", ns.name);
    ensure!(
        status.federated_subjects.len() == 1
            && status.federated_subjects[0].subject.as_deref() == Some(subject.as_str())
            && status.federated_subjects[0].issuer == CLUSTER_ISSUER
            && status.federated_subjects[0].audience == "strake",
        "status lists {:?}",
        status.federated_subjects
    );
    ensure!(
        status.secret_name.is_none() && status.token_prefix.is_none(),
        "keyless, yet {status:?}"
    );
    let secrets = ns.secrets().list(&Default::default()).await?;
    ensure!(
        !secrets
            .items
            .iter()
            .any(|s| s.type_.as_deref() == Some("Opaque")
                && s.data.as_ref().is_some_and(|d| d.contains_key("token"))),
        "a keyless StrakeToken left a token Secret"
    );

    let jwt = service_account_token(&ns, "ci-runner", "strake").await?;
    chat_until(&stack, &jwt, &ns.marker("warm-up"), 200).await?;
    // The identity is the StrakeToken's, as for a minted token.
    let upstream = stack.upstream_requests(&ns.marker("warm-up")).await?;
    ensure!(!upstream.is_empty(), "the mock saw nothing");
    ensure!(
        !upstream.iter().any(|r| r.to_string().contains(&jwt)),
        "the JWT reached the upstream"
    );
    strake_e2e::sdk::run_suite(&stack, &sdk_env(&stack, &jwt), &ns.marker("sdk")).await?;

    // Another ServiceAccount of the namespace, and the right one for
    // another audience.
    let other = service_account_token(&ns, "other", "strake").await?;
    refused(
        &chat(&stack, &other, "x").await?,
        &other,
        "jwt_no_strake_token",
        "no StrakeToken accepts its subject",
    )?;
    let elsewhere = service_account_token(&ns, "ci-runner", "vault").await?;
    refused(
        &chat(&stack, &elsewhere, "x").await?,
        &elsewhere,
        "jwt_wrong_audience",
        "audience",
    )?;
    // The same claims, signed by a key of our own under the API server's kid.
    let forged = forge(&jwt)?;
    leaks::remember(&stack.env, "jwt", &forged)?;
    refused(
        &chat(&stack, &forged, "x").await?,
        &forged,
        "jwt_bad_signature",
        "signature",
    )?;

    // Suspension refuses it like a minted token; resuming brings it back.
    ns.patch_token("ci", r#"{"spec":{"suspended":true}}"#)
        .await?;
    eventually("the suspended token refuses the JWT", RECONCILE, || async {
        let reply = chat(&stack, &jwt, "x").await?;
        ensure!(reply.status == 403, "got {}: {}", reply.status, reply.body);
        Ok(())
    })
    .await?;
    ns.patch_token("ci", r#"{"spec":{"suspended":false}}"#)
        .await?;
    chat_until(&stack, &jwt, "x", 200).await?;

    let latency =
        time_to_refusal(&stack, &jwt, &ns.marker("revoke"), ns.delete_token("ci")).await?;
    println!("ServiceAccount JWT refused {latency:?} after kubectl delete straketoken");
    ensure!(
        latency <= Duration::from_secs(1),
        "refused only after {latency:?}"
    );
    // Other tests' StrakeTokens may name the cluster issuer too, so the
    // refusal says either that no token trusts the issuer or its subject.
    let after = chat(&stack, &jwt, "x").await?;
    let reason = after
        .headers
        .get("x-strake-error")
        .cloned()
        .unwrap_or_default();
    ensure!(
        reason == "jwt_unknown_issuer" || reason == "jwt_no_strake_token",
        "after the delete: {reason:?} {}",
        after.body
    );
    let says = if reason == "jwt_unknown_issuer" {
        "No StrakeToken accepts tokens"
    } else {
        "no StrakeToken accepts its subject"
    };
    refused(&after, &jwt, &reason, says)
}

/// `jwt`'s header and claims, signed by another P-256 key: what someone
/// without the API server's key can make.
fn forge(jwt: &str) -> Result<String> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let part = |i: usize| -> Result<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(jwt.split('.').nth(i).unwrap_or_default())?;
        Ok(serde_json::from_slice(&bytes)?)
    };
    let (header, claims) = (part(0)?, part(1)?);
    let kid = header["kid"].as_str().unwrap_or_default();
    let forged = SigningKey::generate(kid).sign(&claims);
    Ok(forged)
}

#[tokio::test]
async fn an_external_issuer_works_through_rotation_and_outage_and_bad_tokens_are_refused()
-> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("fed-ext").await?;
    ns.default_upstreams().await?;
    let first = SigningKey::generate("key-1");
    let issuer = Issuer::start(&stack.env, &[&first]).await?;
    let main = "repo:acme/api:ref:refs/heads/main";
    ns.token(
        "deploy",
        &format!(
            "identity: ci/acme-api-main\nupstreams: [openai]\nfederated:\n- {{issuer: \"{}\", audience: strake, subject: \"{main}\", claims: {{repository: acme/api}}}}",
            issuer.url
        ),
    )
    .await?;
    ns.wait_ready("deploy").await?;
    let sign = |key: &SigningKey, claims: &Value| -> Result<String> {
        let jwt = key.sign(claims);
        leaks::remember(&stack.env, "jwt", &jwt)?;
        Ok(jwt)
    };
    let jwt = sign(&first, &issuer.claims(main, "strake", 600))?;
    chat_until(&stack, &jwt, &ns.marker("first"), 200).await?;

    // Wrong in one way each.
    let dev = sign(
        &first,
        &issuer.claims("repo:acme/api:ref:refs/heads/dev", "strake", 600),
    )?;
    refused(
        &chat(&stack, &dev, "x").await?,
        &dev,
        "jwt_no_strake_token",
        "no StrakeToken accepts its subject",
    )?;
    let mut other_repo = issuer.claims(main, "strake", 600);
    other_repo["repository"] = "acme/other".into();
    let other_repo = sign(&first, &other_repo)?;
    refused(
        &chat(&stack, &other_repo, "x").await?,
        &other_repo,
        "jwt_no_strake_token",
        "subject",
    )?;
    let aud = sign(&first, &issuer.claims(main, "sts.amazonaws.com", 600))?;
    refused(
        &chat(&stack, &aud, "x").await?,
        &aud,
        "jwt_wrong_audience",
        "audience",
    )?;
    let expired = sign(&first, &issuer.claims(main, "strake", -300))?;
    refused(
        &chat(&stack, &expired, "x").await?,
        &expired,
        "jwt_expired",
        "expired at",
    )?;
    let impostor = sign(
        &SigningKey::generate("key-1"),
        &issuer.claims(main, "strake", 600),
    )?;
    refused(
        &chat(&stack, &impostor, "x").await?,
        &impostor,
        "jwt_bad_signature",
        "signature",
    )?;
    let none = {
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(json!({"alg": "none", "kid": "key-1"})),
            b64(issuer.claims(main, "strake", 600))
        )
    };
    refused(
        &chat(&stack, &none, "x").await?,
        &none,
        "jwt_algorithm",
        "not accepted",
    )?;

    // Rotation: the issuer publishes a new key; a token naming it is
    // accepted once the proxy refetches (at most every --jwks-min-refetch).
    let second = SigningKey::generate("key-2");
    issuer.publish(&[&first, &second]);
    let rotated = sign(&second, &issuer.claims(main, "strake", 600))?;
    chat_until(&stack, &rotated, &ns.marker("rotated"), 200).await?;

    // The issuer goes down: tokens signed by the keys held keep working.
    let url = issuer.url.clone();
    issuer.stop();
    let while_down = sign(&second, &claims(&url, main, "strake", 600))?;
    let reply = chat(&stack, &while_down, &ns.marker("down")).await?;
    ensure!(
        reply.status == 200,
        "with the issuer down: {} {}",
        reply.status,
        reply.body
    );
    // A key the proxy never saw cannot be fetched now: refused, not hung.
    let unknown = sign(
        &SigningKey::generate("key-3"),
        &claims(&url, main, "strake", 600),
    )?;
    let reply = chat(&stack, &unknown, "x").await?;
    ensure!(
        reply.status == 401,
        "an unknown key with the issuer down: {} {}",
        reply.status,
        reply.body
    );

    let latency = time_to_refusal(
        &stack,
        &while_down,
        &ns.marker("revoke"),
        ns.delete_token("deploy"),
    )
    .await?;
    println!("external JWT refused {latency:?} after kubectl delete straketoken");
    ensure!(
        latency <= Duration::from_secs(1),
        "refused only after {latency:?}"
    );
    Ok(())
}

#[tokio::test]
async fn admission_refuses_subjects_that_would_match_everyone_and_the_operator_another_namespaces_account()
-> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("fed-admit").await?;
    ns.default_upstreams().await?;
    let cases = [
        (
            "federated: [{issuer: \"http://issuer.example\", audience: strake, subject: x}]",
            "spec.federated[0].issuer",
        ),
        (
            "federated: [{issuer: \"https://issuer.example\", audience: \"\", subject: x}]",
            "spec.federated[0].audience",
        ),
        (
            "federated: [{issuer: \"https://issuer.example\", audience: strake, subject: \"*\"}]",
            "spec.federated[0].subject",
        ),
        (
            "federated: [{issuer: \"https://issuer.example\", audience: strake}]",
            "needs subject or claims",
        ),
        (
            "federated: [{issuer: \"https://issuer.example\", audience: strake, claims: {exp: \"1\"}}]",
            "claims cannot match",
        ),
        (
            "mintToken: false",
            "mintToken: false needs federated or serviceAccount",
        ),
        (
            "serviceAccountAudience: vault",
            "serviceAccountAudience needs serviceAccount",
        ),
    ];
    for (spec, says) in cases {
        let yaml = format!(
            "apiVersion: strake.sh/v1alpha1\nkind: StrakeToken\nmetadata: {{name: bad}}\nspec:\n  identity: x\n  upstreams: [openai]\n  {spec}\n"
        );
        let out = stack
            .kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(&yaml))
            .await?;
        ensure!(!out.ok, "admitted: {spec}");
        ensure!(
            out.stderr.contains(says),
            "{spec}: {:?} does not say {says:?}",
            out.stderr
        );
    }
    // Valid to the schema, but the cluster issuer vouches for another
    // namespace's account: the operator refuses to publish it.
    ns.token(
        "sly",
        &format!("identity: x\nupstreams: [openai]\nfederated: [{{issuer: \"{CLUSTER_ISSUER}\", audience: strake, subject: \"system:serviceaccount:kube-system:default\"}}]"),
    )
    .await?;
    let t = ns.wait_phase("sly", Phase::Failed).await?;
    let ready = t.status.unwrap_or_default().conditions;
    ensure!(
        ready
            .iter()
            .any(|c| c.reason == "InvalidFederatedSubject" && c.message.contains(&ns.name)),
        "{ready:?}"
    );
    let published = stack
        .proxy_secrets()
        .get_opt(&ns.hashed_secret("sly"))
        .await?;
    ensure!(published.is_none(), "a refused token was published");
    Ok(())
}

#[tokio::test]
async fn the_pod_recipe_applies_and_the_api_key_helper_prints_a_token_that_works() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("fed-recipe").await?;
    ns.default_upstreams().await?;
    let recipe = std::fs::read_to_string(
        strake_e2e::env::repo_root().join("docs/recipes/keyless-pod.yaml"),
    )?;
    // No node here: the Pod is admitted (projected token volume and all),
    // the ServiceAccount and the StrakeToken are live.
    ns.apply(&recipe).await?;
    ns.wait_ready("summarizer").await?;

    // The apiKeyHelper as Claude Code runs it, outside a pod.
    let helper = "docs/recipes/strake-token-helper.sh";
    let missing = format!(
        "STRAKE_TOKEN_FILE={}",
        stack.env.dir.join("no-such-token").display()
    );
    let account = format!("STRAKE_NAMESPACE={}", ns.name);
    let out = stack
        .run(
            std::path::Path::new("env"),
            &[
                &missing,
                "STRAKE_SERVICE_ACCOUNT=summarizer",
                &account,
                helper,
            ],
            None,
        )
        .await?;
    ensure!(out.ok, "the helper failed: {}", out.stderr);
    let jwt = out.stdout.trim().to_string();
    leaks::remember(&stack.env, "jwt", &jwt)?;
    chat_until(&stack, &jwt, &ns.marker("helper"), 200).await?;
    // Inside a pod it prints the projected token file.
    let file = stack.env.dir.join(format!("{}-token", ns.name));
    std::fs::write(&file, &jwt)?;
    let mounted = format!("STRAKE_TOKEN_FILE={}", file.display());
    let out = stack
        .run(std::path::Path::new("env"), &[&mounted, helper], None)
        .await?;
    std::fs::remove_file(&file)?;
    ensure!(
        out.ok && out.stdout == jwt,
        "the helper did not print the file: {}",
        out.stderr
    );
    Ok(())
}
