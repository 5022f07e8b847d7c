//! What a platform team does with kubectl alone: invalid resources are
//! refused with a message that names the field, and a directory of token
//! YAMLs applied with --prune is the source of truth (GitOps without a
//! GitOps controller: removing a file revokes the token).

use std::time::Duration;

use anyhow::{Result, ensure};
use strake_e2e::Stack;

#[tokio::test]
async fn invalid_resources_are_rejected_with_the_field_named() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("invalid").await?;
    let upstream = |spec: &str| {
        format!(
            "apiVersion: strake.sh/v1alpha1\nkind: UpstreamKey\nmetadata: {{name: bad}}\nspec:\n{spec}"
        )
    };
    let token = |spec: &str| {
        format!(
            "apiVersion: strake.sh/v1alpha1\nkind: StrakeToken\nmetadata: {{name: bad}}\nspec:\n  identity: someone@example.com\n{spec}"
        )
    };
    let cases = [
        (
            "an unknown provider",
            upstream("  provider: openia\n  secretRef: {name: k, key: api-key}\n"),
            "spec.provider",
            "openia",
        ),
        (
            "a secretRef that is no Secret name",
            upstream("  provider: openai\n  secretRef: {name: Not_A_Name, key: api-key}\n"),
            "spec.secretRef.name",
            "Not_A_Name",
        ),
        (
            "a secretRef without a key",
            upstream("  provider: openai\n  secretRef: {name: k}\n"),
            "spec.secretRef.key",
            "Required",
        ),
        (
            "a bad expiresAt",
            token("  upstreams: [openai]\n  expiresAt: next tuesday\n"),
            "spec.expiresAt",
            "date-time",
        ),
        (
            "no upstreams",
            token("  upstreams: []\n"),
            "spec.upstreams",
            "at least 1",
        ),
        (
            "an endpoint allowance with a method that is never forwarded",
            token("  upstreams: [openai]\n  endpoints: [{methods: [TRACE], path: /v1/files}]\n"),
            "spec.endpoints[0].methods[0]",
            "TRACE",
        ),
        (
            "an endpoint allowance whose path is not a path",
            token("  upstreams: [openai]\n  endpoints: [{methods: [GET], path: v1/files}]\n"),
            "spec.endpoints[0].path",
            "should match",
        ),
        (
            "an endpoint allowance without methods",
            upstream(
                "  provider: openai\n  secretRef: {name: k, key: api-key}\n  endpoints: [{methods: [], path: /v1/files}]\n",
            ),
            "spec.endpoints[0].methods",
            "at least 1",
        ),
        (
            "a zero rate limit",
            token("  upstreams: [openai]\n  limits: {requestsPerMinute: 0}\n"),
            "spec.limits.requestsPerMinute",
            "greater than or equal to 1",
        ),
    ];
    for (what, yaml, field, detail) in cases {
        let out = stack
            .kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(&yaml))
            .await?;
        ensure!(!out.ok, "kubectl apply accepted {what}");
        ensure!(
            out.stderr.contains(field) && out.stderr.contains(detail),
            "rejecting {what}, kubectl said:\n{}\nexpected it to name {field} and say {detail:?}",
            out.stderr
        );
        println!("{what}: {}", out.stderr.lines().last().unwrap_or_default());
    }
    let left = ns
        .kubectl(&["get", "straketokens,upstreamkeys", "-o", "name"])
        .await?;
    ensure!(left.trim().is_empty(), "rejected resources exist: {left}");
    Ok(())
}

#[tokio::test]
async fn gitops_prune_revokes_the_token_whose_file_was_removed() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("gitops").await?;
    ns.default_upstreams().await?;
    let label = format!("strake.sh/e2e-gitops={}", ns.name);
    let repo = stack.env.dir.join("e2e").join(&ns.name);
    std::fs::create_dir_all(&repo)?;
    let people = ["jane", "kim", "lee"];
    for who in people {
        std::fs::write(
            repo.join(format!("{who}.yaml")),
            format!(
                "apiVersion: strake.sh/v1alpha1\nkind: StrakeToken\nmetadata:\n  name: {who}\n  labels: {{strake.sh/e2e-gitops: {}}}\nspec:\n  identity: {who}@example.com\n  upstreams: [openai]\n",
                ns.name
            ),
        )?;
    }
    let dir = repo.display().to_string();
    let sync = || async {
        // What a pipeline (or `argocd app sync --prune`) runs on every commit.
        ns.kubectl(&[
            "apply",
            "--prune",
            "-l",
            &label,
            "--prune-allowlist=strake.sh/v1alpha1/StrakeToken",
            "-f",
            &dir,
        ])
        .await
    };
    sync().await?;
    let mut issued = Vec::new();
    for who in people {
        ns.wait_ready(who).await?;
        issued.push(ns.issued(who).await?);
    }
    let marker = ns.marker("gitops");
    for token in &issued {
        stack.chat_until(token, &marker, 200).await?;
    }

    std::fs::remove_file(repo.join("kim.yaml"))?;
    let out = sync().await?;
    ensure!(
        out.contains("straketoken.strake.sh/kim pruned"),
        "kubectl apply --prune did not prune kim:\n{out}"
    );
    let latency = stack
        .time_to_401(&issued[1], &marker, Duration::from_secs(30), async {
            Ok(())
        })
        .await?;
    println!(
        "gitops: kim's file removed -> 401 {} ms after the prune",
        latency.as_millis()
    );
    ensure!(
        latency <= Duration::from_secs(1),
        "revocation took {latency:?}"
    );
    for token in [&issued[0], &issued[2]] {
        let reply = stack.chat(token, &marker).await?;
        ensure!(
            reply.status == 200,
            "{} after the prune: {reply:?}",
            token.name
        );
    }
    std::fs::remove_dir_all(&repo)?;
    Ok(())
}
