//! What the plugin decides and prints, without a cluster: the StrakeToken
//! an `issue` creates, the patches of `suspend`/`resume`/`rotate`, whether
//! a token is ready, and the env, table and description it prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use serde_json::{Value, json};
use strake_crds::resources::{HOLDER_TOKEN_KEY, ModelGlob, UpstreamName};
use strake_crds::{Budget, BudgetPeriod, Phase, StrakeToken, StrakeTokenSpec, TokenLimits};

/// What `issue` asks for.
#[derive(Clone, Debug, Default)]
pub struct IssueRequest {
    pub name: String,
    pub identity: String,
    pub upstreams: Vec<String>,
    /// A duration from now (`30d`) or an RFC 3339 instant.
    pub expires: Option<String>,
    pub models: Vec<String>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub secret_name: Option<String>,
    /// `--budget`, e.g. `50usd/month` (see [`budget`]).
    pub budget: Option<String>,
}

/// The StrakeToken `issue` creates. The API server validates the rest
/// (names, globs, limits) against the CRD schema.
pub fn new_token(req: &IssueRequest, now: Timestamp) -> Result<StrakeToken> {
    if req.upstreams.is_empty() {
        bail!("name at least one UpstreamKey with --upstream");
    }
    let expires_at = req
        .expires
        .as_deref()
        .map(|e| expiry(e, now))
        .transpose()?
        .map(Time);
    let limits = (req.requests_per_minute.is_some() || req.tokens_per_minute.is_some()).then_some(
        TokenLimits {
            requests_per_minute: req.requests_per_minute,
            tokens_per_minute: req.tokens_per_minute,
        },
    );
    let spec = StrakeTokenSpec {
        identity: req.identity.clone(),
        upstreams: req.upstreams.iter().cloned().map(UpstreamName).collect(),
        expires_at,
        suspended: false,
        allowed_models: req.models.iter().cloned().map(ModelGlob).collect(),
        limits,
        endpoints: Vec::new(),
        budget: req.budget.as_deref().map(budget).transpose()?,
        secret_name: req.secret_name.clone(),
        rotation: 0,
        rotation_grace_period: None,
        federated: Vec::new(),
        service_account: None,
        service_account_audience: None,
        mint_token: None,
    };
    let mut token = StrakeToken::new(&req.name, spec);
    token.metadata = ObjectMeta {
        name: Some(req.name.clone()),
        ..ObjectMeta::default()
    };
    Ok(token)
}

/// `--budget`: limits joined by `+`, each a number and `usd` or `tokens`,
/// then `/` and the period: `50usd/month`, `2000000tokens/day`,
/// `12.5usd+1000000tokens/week`. The schema checks the rest at admission.
pub fn budget(text: &str) -> Result<Budget> {
    let shape = "write it as 50usd/month, 2000000tokens/day or 50usd+2000000tokens/week";
    let (limits, period) = text
        .split_once('/')
        .with_context(|| format!("--budget {text:?} names no period: {shape}"))?;
    let period = match period.trim() {
        "day" => BudgetPeriod::Day,
        "week" => BudgetPeriod::Week,
        "month" => BudgetPeriod::Month,
        other => bail!("--budget period {other:?} is not day, week or month"),
    };
    let (mut usd, mut tokens) = (None, None);
    for limit in limits.split('+').map(str::trim) {
        if let Some(n) = limit.strip_suffix("usd") {
            if n.parse::<strake_crds::pricing::Picodollars>().is_err()
                || !n.contains(|c: char| ('1'..='9').contains(&c))
            {
                bail!(
                    "--budget {limit:?}: the amount must be a positive decimal, e.g. 50usd or 12.5usd"
                );
            }
            usd = Some(n.to_string());
        } else if let Some(n) = limit.strip_suffix("tokens") {
            let n: u64 = n.parse().ok().filter(|&n| n > 0).with_context(|| {
                format!("--budget {limit:?}: the count must be a whole number above 0")
            })?;
            tokens = Some(n);
        } else {
            bail!("--budget {limit:?} is neither an amount in usd nor a count of tokens: {shape}");
        }
    }
    Ok(Budget {
        period,
        time_zone: None,
        usd,
        tokens,
        alert_at: Vec::new(),
    })
}

/// `30d`, `12h` (from `now`) or an RFC 3339 instant; never in the past.
pub fn expiry(text: &str, now: Timestamp) -> Result<Timestamp> {
    let at = match strake_crds::duration::parse(text) {
        Ok(d) => {
            let span = jiff::SignedDuration::try_from(d).context("--expires is too far away")?;
            now.checked_add(span).context("--expires is too far away")?
        }
        Err(duration_error) => text.parse::<Timestamp>().map_err(|_| {
            anyhow::anyhow!(
                "--expires {text:?} is neither a duration nor an RFC 3339 time ({duration_error}; or e.g. 2027-03-01T00:00:00Z)"
            )
        })?,
    };
    if at <= now {
        bail!("--expires {text:?} is not in the future");
    }
    Ok(at)
}

/// The merge patch that suspends or resumes a token.
pub fn suspend_patch(suspended: bool) -> Value {
    json!({"spec": {"suspended": suspended}})
}

/// The merge patch that mints a new token: the next `spec.rotation`, and
/// with `grace` how long the current token keeps working (in seconds, a
/// form the field's admission rule reads; it refuses more than 7 days).
/// Without it the spec's `rotationGracePeriod` applies.
pub fn rotate_patch(token: &StrakeToken, grace: Option<Duration>) -> Value {
    let mut spec = json!({"rotation": token.spec.rotation + 1});
    if let Some(grace) = grace {
        spec["rotationGracePeriod"] = format!("{}s", grace.as_secs()).into();
    }
    json!({ "spec": spec })
}

/// Where a token stands for someone waiting on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not yet: why, as the operator says.
    Waiting(String),
    /// It will not become ready without a change.
    Failed(String),
}

pub fn readiness(token: &StrakeToken) -> Readiness {
    let status = token.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let said = |c: Option<&Condition>| {
        c.map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_else(|| "the operator has not reconciled it yet".into())
    };
    if status.observed_generation != token.metadata.generation {
        return Readiness::Waiting("the operator has not seen the latest change yet".into());
    }
    match (status.phase, ready) {
        (_, Some(c)) if c.status == "True" => Readiness::Ready,
        (Some(Phase::Failed), c) => Readiness::Failed(said(c)),
        (_, c) => Readiness::Waiting(said(c)),
    }
}

/// The env keys of a holder's Secret: everything but the bare token.
pub fn env_vars(data: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    data.iter()
        .filter(|(k, _)| k.as_str() != HOLDER_TOKEN_KEY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// How `env` prints the variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EnvFormat {
    /// `KEY=value` lines, for a `.env` file.
    Dotenv,
    /// `export KEY='value'` lines, for `eval "$(kubectl strake env …)"`.
    Shell,
    /// One JSON object.
    Json,
    /// `KEY=value` lines for `>> "$GITHUB_ENV"` on stdout, and
    /// `::add-mask::` commands for the secret values on stderr.
    Github,
}

/// What to print: on stdout, and on stderr (GitHub's masking commands,
/// kept out of a redirected env file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Printed {
    pub stdout: String,
    pub stderr: String,
}

/// The env in `format`; `secret` is the token, masked in GitHub's format.
pub fn render_env(vars: &BTreeMap<String, String>, secret: &str, format: EnvFormat) -> Printed {
    let mut out = Printed::default();
    match format {
        EnvFormat::Dotenv => {
            for (k, v) in vars {
                let _ = writeln!(out.stdout, "{k}={}", dotenv_value(v));
            }
        }
        EnvFormat::Shell => {
            for (k, v) in vars {
                let _ = writeln!(out.stdout, "export {k}={}", shell_quote(v));
            }
        }
        EnvFormat::Json => {
            out.stdout = serde_json::to_string_pretty(vars).expect("strings serialize");
            out.stdout.push('\n');
        }
        EnvFormat::Github => {
            if !secret.is_empty() {
                let _ = writeln!(out.stderr, "::add-mask::{secret}");
            }
            for (k, v) in vars {
                // A value with a newline would need GitHub's heredoc syntax;
                // the operator writes none.
                let _ = writeln!(out.stdout, "{k}={}", v.replace(['\r', '\n'], ""));
            }
        }
    }
    out
}

/// Plain when safe, else double-quoted with `\` escapes (dotenv's rules).
fn dotenv_value(v: &str) -> String {
    let plain = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+,=".contains(c));
    if plain && !v.is_empty() {
        return v.to_owned();
    }
    let escaped = v
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('$', "\\$");
    format!("\"{escaped}\"")
}

/// Single quotes, with `'` written as `'\''`.
fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

/// `3m`, `5h`, `12d`: a span as `kubectl get` shows ages.
pub fn short_span(secs: i64) -> String {
    let s = secs.unsigned_abs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `in 29d`, `3h ago`, or `-` when absent.
fn relative(t: Option<&Time>, now: Timestamp) -> String {
    match t {
        None => "-".into(),
        Some(Time(t)) => {
            let secs = t.as_second() - now.as_second();
            if secs >= 0 {
                format!("in {}", short_span(secs))
            } else {
                format!("{} ago", short_span(secs))
            }
        }
    }
}

/// `$1.23` from an exact decimal string (`1.234567`).
fn usd(exact: &str) -> String {
    exact
        .parse::<f64>()
        .map_or_else(|_| exact.to_string(), |v| format!("${v:.2}"))
}

/// `1234`, `12.3k`, `4.5M`.
fn count(n: u64) -> String {
    match n {
        0..10_000 => n.to_string(),
        10_000..10_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// The `ls` table, one row per token.
pub fn table(tokens: &[StrakeToken], all_namespaces: bool, now: Timestamp) -> String {
    let mut rows = vec![{
        let mut h = vec![];
        if all_namespaces {
            h.push("NAMESPACE".to_string());
        }
        h.extend(
            [
                "NAME",
                "IDENTITY",
                "UPSTREAMS",
                "PHASE",
                "EXPIRES",
                "LAST USED",
                "REQUESTS",
                "TOKENS IN/OUT",
                "SPEND",
                "BUDGET",
            ]
            .map(String::from),
        );
        h
    }];
    for t in tokens {
        let status = t.status.clone().unwrap_or_default();
        let mut row = vec![];
        if all_namespaces {
            row.push(t.metadata.namespace.clone().unwrap_or_default());
        }
        // This month's, as status.usage reports them.
        let month = status.usage.as_ref().and_then(|u| u.month.clone());
        let usage = month.clone().unwrap_or_default();
        row.extend([
            t.metadata.name.clone().unwrap_or_default(),
            t.spec.identity.clone(),
            t.spec
                .upstreams
                .iter()
                .map(|u| u.0.as_str())
                .collect::<Vec<_>>()
                .join(","),
            status.phase.map_or("-", Phase::as_str).to_string(),
            relative(t.spec.expires_at.as_ref(), now),
            relative(status.last_used_at.as_ref(), now),
            count(usage.requests),
            format!(
                "{}/{}",
                count(usage.input_tokens),
                count(usage.output_tokens)
            ),
            month.map_or_else(|| "-".into(), |m| usd(&m.spend_usd)),
            budget_standing(t, &status, now),
        ]);
        rows.push(row);
    }
    columns(&rows)
}

/// The share of the budget used this period, e.g. `80% of month`; `-`
/// without a budget. A bucket of a past period has spent nothing of this
/// one.
fn budget_standing(
    t: &StrakeToken,
    status: &strake_crds::StrakeTokenStatus,
    now: Timestamp,
) -> String {
    let Some(budget) = &t.spec.budget else {
        return "-".into();
    };
    let period = match budget.period {
        BudgetPeriod::Day => "day",
        BudgetPeriod::Week => "week",
        BudgetPeriod::Month => "month",
    };
    let percent = status
        .budget
        .as_ref()
        .filter(|b| b.resets_at.0 > now)
        .map_or(0, |b| b.percent);
    format!("{percent}% of {period}")
}

/// Left-aligned columns three spaces apart, as kubectl prints them.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}   ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Tokens as `kubectl get -o yaml|json` prints a list, without
/// `managedFields` (noise for a reader).
pub fn list_document(tokens: &[StrakeToken]) -> Value {
    let items: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.metadata.managed_fields = None;
            serde_json::to_value(&t).expect("a StrakeToken serializes")
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// `describe`: what the token is, where it stands, its env keys (names
/// only: the values are the holder's) and its recent events.
pub fn describe(
    token: &StrakeToken,
    env_keys: &[String],
    events: &[Event],
    now: Timestamp,
) -> String {
    let spec = &token.spec;
    let status = token.status.clone().unwrap_or_default();
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{:<16}{v}", format!("{k}:"));
    };
    line("Name", token.metadata.name.clone().unwrap_or_default());
    line(
        "Namespace",
        token.metadata.namespace.clone().unwrap_or_default(),
    );
    line("Identity", spec.identity.clone());
    line(
        "Upstreams",
        spec.upstreams
            .iter()
            .map(|u| u.0.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    );
    line("Phase", status.phase.map_or("-", Phase::as_str).to_string());
    let at = |t: Option<&Time>| match t {
        Some(Time(ts)) => format!("{ts} ({})", relative(t, now)),
        None => "-".into(),
    };
    line("Expires", at(spec.expires_at.as_ref()));
    line("Issued", at(status.issued_at.as_ref()));
    line("Last used", at(status.last_used_at.as_ref()));
    line(
        "Token prefix",
        status.token_prefix.clone().unwrap_or_else(|| "-".into()),
    );
    line(
        "Endpoint",
        status.endpoint.clone().unwrap_or_else(|| "-".into()),
    );
    line("Secret", token.secret_name());
    line("Rotation", spec.rotation.to_string());
    if spec.suspended {
        line("Suspended", "yes".into());
    }
    if !spec.allowed_models.is_empty() {
        line(
            "Models",
            spec.allowed_models
                .iter()
                .map(|m| m.0.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if let Some(l) = &spec.limits {
        let per_min = |n: Option<u32>, what: &str| n.map(|n| format!("{n} {what}/min"));
        let parts: Vec<String> = [
            per_min(l.requests_per_minute, "requests"),
            per_min(l.tokens_per_minute, "tokens"),
        ]
        .into_iter()
        .flatten()
        .collect();
        line("Limits", parts.join(", "));
    }
    let totals = |t: &strake_crds::resources::UsageTotals| {
        format!(
            "{} requests, {} input and {} output tokens, {} ({} unpriced requests)",
            t.requests,
            t.input_tokens,
            t.output_tokens,
            usd(&t.spend_usd),
            t.unpriced_requests
        )
    };
    if let Some(u) = &status.usage {
        if let Some(m) = &u.month {
            let period = m.period.clone().unwrap_or_default();
            line(&format!("Usage {period}"), totals(m));
        }
        if let Some(l) = &u.lifetime {
            line("Usage total", totals(l));
        }
    }
    line("Env keys", env_keys.join(", "));
    let _ = writeln!(out, "Conditions:");
    for c in &status.conditions {
        let _ = writeln!(
            out,
            "  {} {} {}: {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    let _ = writeln!(out, "Events:");
    if events.is_empty() {
        let _ = writeln!(out, "  <none>");
    }
    for e in events {
        let _ = writeln!(
            out,
            "  {} {} {}",
            e.type_.as_deref().unwrap_or(""),
            e.reason.as_deref().unwrap_or(""),
            e.message.as_deref().unwrap_or("")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strake_crds::StrakeTokenStatus;

    fn now() -> Timestamp {
        "2026-12-01T12:00:00Z".parse().unwrap()
    }

    fn request() -> IssueRequest {
        IssueRequest {
            name: "alice".into(),
            identity: "alice@example.com".into(),
            upstreams: vec!["openai".into(), "anthropic".into()],
            ..IssueRequest::default()
        }
    }

    #[test]
    fn budgets_parse_from_the_short_form_and_bad_ones_say_how_to_write_them() {
        let b = budget("50usd/month").unwrap();
        assert_eq!(
            (b.period, b.usd.as_deref(), b.tokens),
            (BudgetPeriod::Month, Some("50"), None)
        );
        let b = budget("12.5usd+2000000tokens/week").unwrap();
        assert_eq!(
            (b.period, b.usd.as_deref(), b.tokens),
            (BudgetPeriod::Week, Some("12.5"), Some(2_000_000))
        );
        assert_eq!(budget("100tokens/day").unwrap().tokens, Some(100));
        for (bad, says) in [
            ("50usd", "names no period"),
            ("50usd/year", "not day, week or month"),
            ("0usd/day", "positive decimal"),
            ("-3usd/day", "positive decimal"),
            ("0tokens/day", "above 0"),
            ("50eur/month", "neither an amount"),
        ] {
            let e = budget(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let t = new_token(
            &IssueRequest {
                budget: Some("50usd/month".into()),
                ..request()
            },
            now(),
        )
        .unwrap();
        assert_eq!(t.spec.budget.unwrap().usd.as_deref(), Some("50"));
    }

    #[test]
    fn issue_builds_the_token_asked_for() {
        let t = new_token(
            &IssueRequest {
                expires: Some("30d".into()),
                models: vec!["gpt-4o*".into()],
                requests_per_minute: Some(60),
                ..request()
            },
            now(),
        )
        .unwrap();
        assert_eq!(t.metadata.name.as_deref(), Some("alice"));
        assert_eq!(t.spec.identity, "alice@example.com");
        assert_eq!(
            t.spec.upstreams,
            vec![
                UpstreamName("openai".into()),
                UpstreamName("anthropic".into())
            ]
        );
        assert_eq!(
            t.spec.expires_at.unwrap().0.to_string(),
            "2026-12-31T12:00:00Z"
        );
        assert_eq!(t.spec.allowed_models, vec![ModelGlob("gpt-4o*".into())]);
        assert_eq!(t.spec.limits.unwrap().requests_per_minute, Some(60));
        assert_eq!(t.spec.limits.unwrap().tokens_per_minute, None);
        let plain = new_token(&request(), now()).unwrap();
        assert_eq!(plain.spec.expires_at, None);
        assert_eq!(plain.spec.limits, None);
        let json = serde_json::to_value(&plain).unwrap();
        assert_eq!(json["apiVersion"], "strake.sh/v1alpha1");
        assert_eq!(json["kind"], "StrakeToken");
    }

    #[test]
    fn expiry_is_a_duration_or_an_instant_in_the_future() {
        assert_eq!(
            expiry("12h", now()).unwrap().to_string(),
            "2026-12-02T00:00:00Z"
        );
        assert_eq!(
            expiry("2027-03-01T00:00:00Z", now()).unwrap().to_string(),
            "2027-03-01T00:00:00Z"
        );
        let e = expiry("next tuesday", now()).unwrap_err().to_string();
        assert!(e.contains("RFC 3339") && e.contains("30s"), "{e}");
        let e = expiry("2020-01-01T00:00:00Z", now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not in the future"), "{e}");
        assert!(expiry("0s", now()).is_err());
        let none = IssueRequest {
            upstreams: vec![],
            ..request()
        };
        assert!(new_token(&none, now()).is_err());
    }

    #[test]
    fn patches() {
        let mut t = new_token(&request(), now()).unwrap();
        assert_eq!(rotate_patch(&t, None), json!({"spec": {"rotation": 1}}));
        assert_eq!(
            rotate_patch(&t, Some(Duration::from_secs(3600))),
            json!({"spec": {"rotation": 1, "rotationGracePeriod": "3600s"}})
        );
        t.spec.rotation = 4;
        assert_eq!(rotate_patch(&t, None), json!({"spec": {"rotation": 5}}));
        assert_eq!(suspend_patch(true), json!({"spec": {"suspended": true}}));
        assert_eq!(suspend_patch(false), json!({"spec": {"suspended": false}}));
    }

    fn with_status(phase: Phase, ready: &str, generation: i64, observed: i64) -> StrakeToken {
        let mut t = new_token(&request(), now()).unwrap();
        t.metadata.generation = Some(generation);
        t.status = Some(StrakeTokenStatus {
            phase: Some(phase),
            observed_generation: Some(observed),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ready.into(),
                reason: "UpstreamMissing".into(),
                message: "UpstreamKey openai does not exist".into(),
                last_transition_time: Time(now()),
                observed_generation: Some(observed),
            }],
            ..StrakeTokenStatus::default()
        });
        t
    }

    #[test]
    fn readiness_follows_the_ready_condition_of_the_current_generation() {
        assert_eq!(
            readiness(&with_status(Phase::Active, "True", 2, 2)),
            Readiness::Ready
        );
        assert!(matches!(
            readiness(&with_status(Phase::Active, "True", 3, 2)),
            Readiness::Waiting(_)
        ));
        assert_eq!(
            readiness(&with_status(Phase::Failed, "False", 1, 1)),
            Readiness::Failed("UpstreamMissing: UpstreamKey openai does not exist".into())
        );
        assert!(matches!(
            readiness(&with_status(Phase::Pending, "False", 1, 1)),
            Readiness::Waiting(m) if m.contains("UpstreamMissing")
        ));
        assert!(matches!(
            readiness(&new_token(&request(), now()).unwrap()),
            Readiness::Waiting(_)
        ));
    }

    fn vars() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("OPENAI_API_KEY".to_string(), "sk-strk-abc".to_string()),
            (
                "OPENAI_BASE_URL".to_string(),
                "https://llm.example.com/v1".to_string(),
            ),
            ("ODD".to_string(), "it's \"$x\"".to_string()),
        ])
    }

    #[test]
    fn env_in_every_format() {
        let data = BTreeMap::from([
            ("token".to_string(), "sk-strk-abc".to_string()),
            ("OPENAI_API_KEY".to_string(), "sk-strk-abc".to_string()),
        ]);
        assert_eq!(
            env_vars(&data).keys().collect::<Vec<_>>(),
            ["OPENAI_API_KEY"]
        );

        let p = render_env(&vars(), "sk-strk-abc", EnvFormat::Dotenv);
        assert_eq!(
            p.stdout,
            "ODD=\"it's \\\"\\$x\\\"\"\nOPENAI_API_KEY=sk-strk-abc\nOPENAI_BASE_URL=https://llm.example.com/v1\n"
        );
        assert!(p.stderr.is_empty());
        let p = render_env(&vars(), "sk-strk-abc", EnvFormat::Shell);
        assert!(
            p.stdout.contains("export ODD='it'\\''s \"$x\"'\n"),
            "{}",
            p.stdout
        );
        assert!(p.stdout.contains("export OPENAI_API_KEY='sk-strk-abc'\n"));
        let p = render_env(&vars(), "sk-strk-abc", EnvFormat::Json);
        let v: BTreeMap<String, String> = serde_json::from_str(&p.stdout).unwrap();
        assert_eq!(v, vars());
        let p = render_env(&vars(), "sk-strk-abc", EnvFormat::Github);
        assert_eq!(p.stderr, "::add-mask::sk-strk-abc\n");
        assert!(p.stdout.contains("OPENAI_API_KEY=sk-strk-abc\n"));
        assert!(!p.stdout.contains("add-mask"));
    }

    #[test]
    fn the_table_shows_each_token_with_its_state() {
        let mut a = with_status(Phase::Active, "True", 1, 1);
        a.metadata.namespace = Some("team-a".into());
        a.spec.expires_at = Some(Time("2026-12-31T12:00:00Z".parse().unwrap()));
        let status = a.status.as_mut().unwrap();
        status.last_used_at = Some(Time("2026-12-01T11:57:00Z".parse().unwrap()));
        status.usage = Some(strake_crds::TokenUsage {
            month: Some(strake_crds::resources::UsageTotals {
                period: Some("2026-12".into()),
                requests: 12,
                input_tokens: 12_345,
                output_tokens: 67,
                spend_usd: "1.234567".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        a.spec.budget = Some(budget("2usd/month").unwrap());
        a.status.as_mut().unwrap().budget = Some(strake_crds::BudgetStatus {
            period: "2026-12".into(),
            starts_at: Time("2026-12-01T00:00:00Z".parse().unwrap()),
            resets_at: Time("2027-01-01T00:00:00Z".parse().unwrap()),
            spent_usd: "1.6".into(),
            tokens: 0,
            percent: 80,
            overshoot_usd: None,
            overshoot_tokens: None,
        });
        let mut b = with_status(Phase::Suspended, "False", 1, 1);
        b.metadata.name = Some("bob".into());
        b.spec.identity = "bob@example.com".into();
        let text = table(&[a.clone(), b.clone()], false, now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME "), "{text}");
        let cells: Vec<&str> = lines[1]
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells,
            [
                "alice",
                "alice@example.com",
                "openai,anthropic",
                "Active",
                "in 30d",
                "3m ago",
                "12",
                "12.3k/67",
                "$1.23",
                "80% of month"
            ]
        );
        assert!(
            lines[2].contains("Suspended") && lines[2].contains(" - "),
            "{text}"
        );
        let all = table(&[a], true, now());
        assert!(
            all.starts_with("NAMESPACE ") && all.contains("team-a"),
            "{all}"
        );
    }

    #[test]
    fn lists_and_descriptions() {
        let mut t = with_status(Phase::Active, "True", 1, 1);
        t.metadata.managed_fields = Some(vec![Default::default()]);
        let doc = list_document(&[t.clone()]);
        assert_eq!(doc["kind"], "List");
        assert_eq!(doc["items"][0]["spec"]["identity"], "alice@example.com");
        assert!(doc["items"][0]["metadata"].get("managedFields").is_none());

        let text = describe(&t, &["OPENAI_API_KEY".into()], &[], now());
        assert!(text.contains("Identity:       alice@example.com"), "{text}");
        assert!(text.contains("Secret:         alice-strake"), "{text}");
        assert!(text.contains("Env keys:       OPENAI_API_KEY"), "{text}");
        assert!(text.contains("Ready True UpstreamMissing"), "{text}");
        assert!(text.contains("Events:\n  <none>"), "{text}");
    }

    #[test]
    fn spans() {
        assert_eq!(short_span(59), "59s");
        assert_eq!(short_span(-180), "3m");
        assert_eq!(short_span(3 * 3600), "3h");
        assert_eq!(short_span(30 * 86_400), "30d");
    }
}
