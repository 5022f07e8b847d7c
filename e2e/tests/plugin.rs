//! `kubectl strake`, driven as a platform engineer and a token holder use
//! it: `issue` prints an env the official Python SDKs work with, `ls`
//! matches the resources, `suspend`/`resume`, `rotate` and `revoke` reach
//! the proxy, `env` prints every format, and mistakes get a clear error.
//! The plugin's output holds tokens, so it is never printed here.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use http::Method;
use jiff::Timestamp;
use serde_json::{Value, json};
use strake_crds::Phase;
use strake_e2e::env::{python, repo_root, workspace_bin};
use strake_e2e::stack::{Output, RECONCILE};
use strake_e2e::{Issued, Stack, TestNs, eventually};

/// `kubectl strake -n NS ARGS…` through kubectl's plugin lookup.
async fn plugin(ns: &TestNs<'_>, args: &[&str]) -> Result<Output> {
    let bin = workspace_bin("kubectl-strake")?;
    let dir = bin.parent().expect("a file in a directory").to_path_buf();
    let path = format!(
        "{}:{}:{}",
        dir.display(),
        ns.stack.env.cluster_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::process::Command::new(ns.stack.env.cluster_bin.join("kubectl"))
        .arg("strake")
        .args(["-n", &ns.name])
        .args(args)
        .env("KUBECONFIG", &ns.stack.env.kubeconfig)
        .env("PATH", path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running kubectl strake")?;
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The plugin, which must succeed; its stdout. Failures show stderr only
/// (stdout may hold a token).
async fn plugin_ok(ns: &TestNs<'_>, args: &[&str]) -> Result<String> {
    let out = plugin(ns, args).await?;
    ensure!(
        out.ok,
        "kubectl strake {} failed: {}",
        args.join(" "),
        out.stderr.trim()
    );
    Ok(out.stdout)
}

/// `KEY=value` lines.
fn dotenv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A chat and a message through the official SDKs with nothing but `env`.
async fn sdks_work(env: &BTreeMap<String, String>) -> Result<()> {
    let script = r#"
import anthropic, openai
chat = openai.OpenAI().chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi from the plugin"}])
assert chat.choices[0].message.content, chat
msg = anthropic.Anthropic().messages.create(
    model="claude-sonnet-4-6", max_tokens=32, messages=[{"role": "user", "content": "hi"}])
assert msg.content[0].text, msg
print("ok", chat.usage.total_tokens, msg.usage.output_tokens)
"#;
    let out = tokio::process::Command::new(python()?)
        .args(["-c", script])
        .current_dir(repo_root())
        .env_clear()
        .envs(env)
        .env("HOME", std::env::temp_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running python")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.starts_with("ok "),
        "the SDKs failed with the printed env: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn issue_prints_an_env_the_sdks_work_with_and_ls_matches() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("plugin").await?;
    ns.default_upstreams().await?;
    let out = plugin(
        &ns,
        &[
            "issue",
            "alice",
            "--identity",
            "alice@example.com",
            "--upstream",
            "openai,anthropic",
            "--expires",
            "30d",
            "--models",
            "gpt-4o*,claude-*",
            "--rpm",
            "600",
        ],
    )
    .await?;
    ensure!(out.ok, "issue failed: {}", out.stderr);
    ensure!(out.stderr.contains("is Ready"), "{}", out.stderr);
    let env = dotenv(&out.stdout);
    let issued = Issued::from_env(&stack.env, "alice", env.clone())?;
    // What was printed is what the Secret holds (less the bare token).
    let secret = ns.issued("alice").await?;
    let mut from_secret = secret.vars().clone();
    from_secret.remove("token");
    ensure!(
        env == from_secret,
        "the printed env differs from the Secret's"
    );
    ensure!(env["OPENAI_BASE_URL"].ends_with("/v1"));
    sdks_work(&env).await?;

    // The resource is what was asked for.
    let t = ns.tokens().get("alice").await?;
    ensure!(t.spec.identity == "alice@example.com");
    ensure!(t.spec.upstreams.len() == 2);
    ensure!(t.spec.allowed_models.len() == 2);
    ensure!(t.spec.limits.and_then(|l| l.requests_per_minute) == Some(600));
    let expires = t.spec.expires_at.clone().context("no expiresAt")?.0;
    let days = (expires.as_second() - jiff::Timestamp::now().as_second()) / 86_400;
    ensure!(days == 29 || days == 30, "expires in {days} days");

    // ls: one row per token, as the API server has them.
    ns.issue("bob", "identity: bob@example.com\nupstreams: [openai]")
        .await?;
    let table = plugin_ok(&ns, &["ls"]).await?;
    let rows: Vec<&str> = table.lines().collect();
    ensure!(rows.len() == 3, "{table}");
    ensure!(
        rows[0].starts_with("NAME") && rows[0].contains("LAST USED"),
        "{table}"
    );
    ensure!(
        rows[1].starts_with("alice ")
            && rows[1].contains("alice@example.com")
            && rows[1].contains("openai,anthropic")
            && rows[1].contains("Active")
            && rows[1].contains("in 29d"),
        "{table}"
    );
    ensure!(
        rows[2].starts_with("bob ") && rows[2].contains("bob@example.com"),
        "{table}"
    );
    let listed: Value = serde_json::from_str(&plugin_ok(&ns, &["ls", "-o", "json"]).await?)?;
    let kubectl: Value =
        serde_json::from_str(&ns.kubectl(&["get", "straketokens", "-o", "json"]).await?)?;
    let names = |v: &Value| -> Vec<(String, String)> {
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                (
                    i["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    i["spec"]["identity"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    ensure!(names(&listed) == names(&kubectl), "{:?}", names(&listed));
    let yaml = plugin_ok(&ns, &["ls", "-o", "yaml"]).await?;
    ensure!(yaml.contains("identity: alice@example.com"), "{yaml}");
    let all = plugin_ok(&ns, &["ls", "-A"]).await?;
    ensure!(
        all.starts_with("NAMESPACE") && all.contains(&ns.name),
        "{all}"
    );

    // env in every format holds the same values.
    let shell = plugin_ok(&ns, &["env", "alice", "--format", "shell"]).await?;
    ensure!(shell.lines().all(|l| l.starts_with("export ")));
    ensure!(shell.contains(&format!("OPENAI_API_KEY='{}'", issued.token)));
    let json: BTreeMap<String, String> =
        serde_json::from_str(&plugin_ok(&ns, &["env", "alice", "--format", "json"]).await?)?;
    ensure!(json == env);
    let github = plugin(&ns, &["env", "alice", "--format", "github"]).await?;
    ensure!(github.ok && dotenv(&github.stdout) == env);
    ensure!(github.stderr.contains("::add-mask::sk-strk-"));
    ensure!(!github.stdout.contains("::add-mask::"));

    let described = plugin_ok(&ns, &["describe", "alice"]).await?;
    ensure!(
        described.contains("alice@example.com")
            && described.contains("Env keys:")
            && described.contains("OPENAI_API_KEY")
            && !described.contains(&issued.token),
        "{described}"
    );
    Ok(())
}

#[tokio::test]
async fn suspend_resume_rotate_and_revoke_reach_the_proxy() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("plugin-life").await?;
    ns.default_upstreams().await?;
    let out = plugin_ok(
        &ns,
        &[
            "issue",
            "carol",
            "--identity",
            "carol@example.com",
            "--upstream",
            "openai",
        ],
    )
    .await?;
    let first = Issued::from_env(&stack.env, "carol", dotenv(&out))?;
    let marker = ns.marker("life");
    stack.chat_until(&first, &marker, 200).await?;

    plugin_ok(&ns, &["suspend", "carol"]).await?;
    ns.wait_phase("carol", Phase::Suspended).await?;
    let refused = stack.chat_until(&first, &marker, 403).await?;
    ensure!(refused.headers.get("x-should-retry").map(String::as_str) == Some("false"));
    plugin_ok(&ns, &["resume", "carol"]).await?;
    stack.chat_until(&first, &marker, 200).await?;

    plugin_ok(&ns, &["rotate", "carol"]).await?;
    let second = Issued::from_env(
        &stack.env,
        "carol",
        dotenv(&plugin_ok(&ns, &["env", "carol"]).await?),
    )?;
    ensure!(second.token != first.token, "rotate printed the old token");
    stack.chat_until(&first, &marker, 401).await?;
    stack.chat_until(&second, &marker, 200).await?;

    plugin_ok(&ns, &["revoke", "carol"]).await?;
    ensure!(ns.tokens().get_opt("carol").await?.is_none());
    let revoked = stack.chat_until(&second, &marker, 401).await?;
    ensure!(revoked.headers.get("x-should-retry").map(String::as_str) == Some("false"));
    Ok(())
}

/// How long a rotated-out token may still be accepted after its deadline,
/// or after a rotation or a revocation ends it (the watch event's way to
/// both replicas, on two shared cores).
const ENDS_WITHIN: Duration = Duration::from_secs(1);

/// `issued`'s chat completion status on the replica at `proxy_url`.
async fn status_on(stack: &Stack, issued: &Issued, proxy_url: &str) -> Result<u16> {
    let base = issued
        .env("OPENAI_BASE_URL")?
        .replacen(&stack.env.proxy_url, proxy_url, 1);
    let reply = stack
        .http
        .send(
            Method::POST,
            &format!("{base}/chat/completions"),
            &[("authorization", &format!("Bearer {}", issued.token))],
            Some(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "grace"}]})),
        )
        .await?;
    Ok(reply.status)
}

/// The status on both replicas, which must agree.
async fn status_everywhere(stack: &Stack, issued: &Issued) -> Result<u16> {
    let one = status_on(stack, issued, &stack.env.proxy_url).await?;
    let two = status_on(stack, issued, &stack.env.proxy2_url).await?;
    ensure!(
        one == two,
        "{}: replica 1 says {one}, replica 2 {two}",
        issued.name
    );
    Ok(one)
}

/// Polls until `issued` gets 401 on both replicas; how long that took.
async fn refused_after(
    stack: &Stack,
    issued: &Issued,
    from: Instant,
    limit: Duration,
) -> Result<Duration> {
    loop {
        let one = status_on(stack, issued, &stack.env.proxy_url).await?;
        let two = status_on(stack, issued, &stack.env.proxy2_url).await?;
        if one == 401 && two == 401 {
            return Ok(from.elapsed());
        }
        ensure!(from.elapsed() < limit, "still {one}/{two} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The current token after a `rotate`, and until when the one it replaced works.
async fn rotate(ns: &TestNs<'_>, name: &str, args: &[&str]) -> Result<(Issued, Option<Timestamp>)> {
    let mut argv = vec!["rotate", name];
    argv.extend_from_slice(args);
    let out = plugin(ns, &argv).await?;
    ensure!(out.ok, "rotate failed: {}", out.stderr.trim());
    let status = ns.tokens().get(name).await?.status.unwrap_or_default();
    let until = status.previous_token_valid_until.map(|t| t.0);
    let said = match until {
        Some(t) => format!("the previous token works until {t}"),
        None => "the previous token no longer works".into(),
    };
    ensure!(
        out.stderr.contains(&said),
        "rotate said {:?}, status {until:?}",
        out.stderr
    );
    let env = dotenv(&plugin_ok(ns, &["env", name]).await?);
    Ok((Issued::from_env(&ns.stack.env, name, env)?, until))
}

#[tokio::test]
async fn a_rotation_grace_keeps_the_old_token_until_the_instant_and_no_longer() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("plugin-grace").await?;
    ns.default_upstreams().await?;
    let out = plugin_ok(
        &ns,
        &[
            "issue",
            "dana",
            "--identity",
            "dana@example.com",
            "--upstream",
            "openai",
        ],
    )
    .await?;
    let t0 = Issued::from_env(&stack.env, "dana", dotenv(&out))?;
    stack.chat_until(&t0, &ns.marker("grace"), 200).await?;

    // A long grace: the old and the new token both work, on both replicas.
    let (t1, until) = rotate(&ns, "dana", &["--grace", "1h"]).await?;
    let until = until.context("a grace period gives a deadline")?;
    let left = until.duration_since(Timestamp::now());
    ensure!(
        left > jiff::SignedDuration::from_secs(3590)
            && left <= jiff::SignedDuration::from_secs(3600),
        "deadline {until}, {left:?} from now"
    );
    let events = ns
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "reason=Rotated",
            "-o",
            "json",
        ])
        .await?;
    ensure!(
        events.contains(&format!("keeps working until {until}")),
        "no Rotated event says until when: {events}"
    );
    stack.chat_until(&t1, &ns.marker("grace"), 200).await?;
    ensure!(
        status_everywhere(&stack, &t0).await? == 200,
        "the old token is refused in its grace"
    );
    ensure!(status_everywhere(&stack, &t1).await? == 200);

    // A second rotation inside the grace, now of 3 s: t0 ends at once, t1
    // works until its own deadline, then stops by itself.
    let rotated = Instant::now();
    let (t2, until) = rotate(&ns, "dana", &["--grace", "3s"]).await?;
    let until = until.context("a deadline")?;
    let oldest_gone = refused_after(&stack, &t0, rotated, RECONCILE).await?;
    stack.chat_until(&t2, &ns.marker("grace"), 200).await?;
    let before_deadline = until.duration_since(Timestamp::now());
    let t1_status = status_everywhere(&stack, &t1).await?;
    if before_deadline > jiff::SignedDuration::from_millis(200) {
        ensure!(
            t1_status == 200,
            "t1 refused {before_deadline:?} before its deadline"
        );
    }
    let wait = Instant::now();
    let after = refused_after(&stack, &t1, wait, Duration::from_secs(10)).await?;
    let late = Timestamp::now().duration_since(until);
    ensure!(
        late >= -jiff::SignedDuration::from_millis(50)
            && late <= jiff::SignedDuration::try_from(ENDS_WITHIN)?,
        "t1 refused {late:?} after its deadline {until}"
    );
    ensure!(
        status_everywhere(&stack, &t2).await? == 200,
        "the new token works after the grace"
    );
    println!(
        "grace: second rotation ended the oldest token on both replicas within {oldest_gone:?} of the rotate command; \
         the previous one worked until its deadline and was refused {late:?} after it (waited {after:?})"
    );

    // Revoked inside a grace: both tokens stop.
    let (t3, until) = rotate(&ns, "dana", &["--grace", "1h"]).await?;
    ensure!(until.is_some());
    stack.chat_until(&t3, &ns.marker("grace"), 200).await?;
    ensure!(status_everywhere(&stack, &t2).await? == 200);
    let revoked = Instant::now();
    ns.tokens()
        .delete("dana", &kube::api::DeleteParams::default())
        .await?;
    let both = async {
        let a = refused_after(&stack, &t2, revoked, Duration::from_secs(5)).await?;
        let b = refused_after(&stack, &t3, revoked, Duration::from_secs(5)).await?;
        anyhow::Ok(a.max(b))
    }
    .await?;
    ensure!(
        both <= ENDS_WITHIN,
        "revoked tokens still worked {both:?} after the revoke"
    );
    println!("grace: revoke ended both tokens on both replicas within {both:?}");
    Ok(())
}

#[tokio::test]
async fn mistakes_get_a_clear_error() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("plugin-errors").await?;
    ns.default_upstreams().await?;
    ns.issue("dave", "identity: dave@example.com\nupstreams: [openai]")
        .await?;
    let issue = |name: &'static str, extra: &'static [&'static str]| {
        let ns = &ns;
        async move {
            let mut args = vec!["issue", name, "--identity", "x@example.com"];
            args.extend_from_slice(extra);
            plugin(ns, &args).await
        }
    };
    let cases = [
        (
            issue("dave", &["--upstream", "openai"]).await?,
            "already exists",
        ),
        (
            issue(
                "eve",
                &["--upstream", "openai", "--expires", "next tuesday"],
            )
            .await?,
            "RFC 3339",
        ),
        (
            issue("Bad_Name", &["--upstream", "openai"]).await?,
            "refused",
        ),
        (
            issue("frank", &["--upstream", "openai", "--rpm", "0"]).await?,
            "requestsPerMinute",
        ),
        (
            plugin(&ns, &["env", "nobody"]).await?,
            "no StrakeToken \"nobody\"",
        ),
        (plugin(&ns, &["revoke", "nobody"]).await?, "no StrakeToken"),
    ];
    for (out, said) in cases {
        ensure!(!out.ok, "succeeded: {}", out.stderr);
        ensure!(out.stdout.is_empty(), "printed something on failure");
        ensure!(out.stderr.contains(said), "{said:?} not in: {}", out.stderr);
    }
    // A token the operator cannot make Ready: the wait ends with its reason.
    let out = issue("gina", &["--upstream", "missing", "--timeout", "5s"]).await?;
    ensure!(!out.ok && out.stdout.is_empty());
    ensure!(
        out.stderr.contains("not Ready") || out.stderr.contains("failed"),
        "{}",
        out.stderr
    );
    ensure!(out.stderr.contains("missing"), "{}", out.stderr);
    eventually("the untouched token still works", RECONCILE, || async {
        let dave = ns.issued("dave").await?;
        let r = stack.chat(&dave, &ns.marker("dave")).await?;
        ensure!(r.status == 200, "{}", r.status);
        Ok(())
    })
    .await
}
