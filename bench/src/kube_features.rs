//! The features that exist only in kube mode, as benchmark rows: a plain
//! minted StrakeToken (the kube-mode baseline), one with a budget and a
//! keyless one that a ServiceAccount's JWT authenticates as, issued through
//! the API server to a proxy in kube mode.
//!
//! `issue` creates them, waits until the proxy at `--proxy-url` accepts
//! each credential and writes it to `DIR/<target>.credential` for `load`
//! (`bench/run.sh` owns the proxy and the loads). `budget` reads back, after
//! the loads, what the budgeted token's status counted.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use strake_crds::StrakeToken;
use strake_crds::federated::DEFAULT_AUDIENCE;

use crate::Output;
use crate::control::{
    self, Probe, UPSTREAM, UpstreamArgs, apply, client_with_upstream, token_is_ready,
    wait_for_token,
};
use crate::results::{self, BudgetSpendResult, Meta, Record};

/// The load targets, each a StrakeToken of the same name minus `kube-`.
pub const MINTED: &str = "kube-minted";
pub const BUDGET: &str = "kube-budget";
pub const KEYLESS: &str = "kube-keyless";

/// The ServiceAccount whose JWT the keyless StrakeToken accepts.
const WORKLOAD: &str = "bench-workload";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    step: Step,
}

#[derive(clap::Subcommand, Debug)]
enum Step {
    /// Creates the three StrakeTokens (and the ServiceAccount), waits until
    /// the proxy accepts each credential, writes them to --credentials.
    Issue(IssueArgs),
    /// The budgeted token's status once its usage has been collected.
    Budget(BudgetArgs),
}

#[derive(clap::Args, Debug)]
struct IssueArgs {
    #[command(flatten)]
    upstream: UpstreamArgs,
    /// The kube-mode proxy's traffic URL.
    #[arg(long)]
    proxy_url: String,
    /// Directory for `<target>.credential` files (mode 0600).
    #[arg(long)]
    credentials: PathBuf,
    /// The budgeted token's monthly limit in USD: far above what the run
    /// spends, so that no request is refused.
    #[arg(long, default_value = "1000000")]
    budget_usd: String,
    /// Lifetime of the ServiceAccount's JWT, in seconds.
    #[arg(long, default_value_t = 3600)]
    jwt_seconds: i64,
    /// Seconds each token may take to be Ready and then accepted by the proxy.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

#[derive(clap::Args, Debug)]
struct BudgetArgs {
    #[command(flatten)]
    output: Output,
    /// Namespace of the bench's StrakeTokens.
    #[arg(long)]
    namespace: String,
    /// Seconds the collected request count must stay unchanged: the
    /// operator has folded everything the proxy served.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Seconds to wait for that at most.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.step {
        Step::Issue(args) => issue(args),
        Step::Budget(args) => budget(args),
    }
}

/// The StrakeToken behind each target, as applied: a row differs from the
/// minted baseline only by its feature.
fn token_specs(budget_usd: &str) -> [(&'static str, Value); 3] {
    let spec = |identity: &str| json!({"identity": identity, "upstreams": [UPSTREAM]});
    let minted = spec("minted@bench.example.com");
    let mut budget = spec("budget@bench.example.com");
    budget["budget"] = json!({"period": "month", "usd": budget_usd});
    let mut keyless = spec("bench/workload");
    keyless["serviceAccount"] = json!(WORKLOAD);
    [(MINTED, minted), (BUDGET, budget), (KEYLESS, keyless)]
}

/// `kube-budget` -> `budget`.
fn token_name(target: &str) -> &str {
    target.strip_prefix("kube-").unwrap_or(target)
}

fn token_object(target: &str, spec: &Value) -> Value {
    json!({
        "apiVersion": "strake.sh/v1alpha1", "kind": "StrakeToken",
        "metadata": {
            "name": token_name(target),
            "labels": {"app.kubernetes.io/part-of": "strake-bench"},
        },
        "spec": spec,
    })
}

fn issue(args: IssueArgs) -> anyhow::Result<()> {
    control::runtime()?.block_on(async {
        let client = client_with_upstream(&args.upstream).await?;
        let ns = &args.upstream.namespace;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        let account = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": WORKLOAD},
        });
        apply(&accounts, WORKLOAD, account)
            .await
            .context("applying the workload's ServiceAccount")?;
        let tokens: Api<StrakeToken> = Api::namespaced(client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let limit = Duration::from_secs_f64(args.timeout);
        std::fs::create_dir_all(&args.credentials)?;
        for (target, spec) in token_specs(&args.budget_usd) {
            let name = token_name(target);
            let started = Instant::now();
            apply(&tokens, name, token_object(target, &spec))
                .await
                .with_context(|| format!("applying StrakeToken {ns}/{name}"))?;
            wait_ready(&tokens, name, limit).await?;
            let credential = if target == KEYLESS {
                service_account_jwt(&accounts, args.jwt_seconds).await?
            } else {
                wait_for_token(&secrets, &format!("{name}-strake"), limit)
                    .await
                    .with_context(|| format!("{name}: no token Secret after {limit:?}"))?
            };
            let mut probe = Probe::new(&args.proxy_url, &credential)?;
            if probe
                .until(200, Duration::from_millis(20), limit)
                .await
                .is_none()
            {
                bail!("{ns}/{name}: the proxy never accepted its credential within {limit:?}");
            }
            write_secret_file(&args.credentials.join(format!("{target}.credential")), &credential)?;
            eprintln!(
                "kube-features: {target} (StrakeToken {ns}/{name}) accepted by the proxy {:.0} ms after the apply",
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        Ok(())
    })
}

async fn wait_ready(tokens: &Api<StrakeToken>, name: &str, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if tokens.get(name).await.is_ok_and(|t| token_is_ready(&t)) {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("StrakeToken {name} not Ready after {limit:?} (is the operator running?)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A JWT for the workload's ServiceAccount with Strake's audience, from
/// the API server's TokenRequest (what `kubectl create token` asks for).
async fn service_account_jwt(
    accounts: &Api<ServiceAccount>,
    seconds: i64,
) -> anyhow::Result<String> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![DEFAULT_AUDIENCE.to_owned()]),
            expiration_seconds: Some(seconds),
            ..Default::default()
        }),
        ..Default::default()
    };
    let answer = accounts
        .create_token_request(WORKLOAD, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {WORKLOAD}"))?;
    answer
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .context("the TokenRequest came back without a token")
}

/// Writes a credential readable by its owner only.
fn write_secret_file(path: &Path, credential: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{credential}")?;
    Ok(())
}

/// Whether two reads of the collected request count, `settle` apart, show
/// the operator done folding: something collected, nothing new since.
fn settled(
    previous: Option<(u64, Instant)>,
    requests: u64,
    now: Instant,
    settle: Duration,
) -> bool {
    previous.is_some_and(|(n, since)| n == requests && requests > 0 && now - since >= settle)
}

fn budget(args: BudgetArgs) -> anyhow::Result<()> {
    control::runtime()?.block_on(async {
        let client = Client::try_default()
            .await
            .context("kube client (KUBECONFIG)")?;
        let tokens: Api<StrakeToken> = Api::namespaced(client, &args.namespace);
        let name = token_name(BUDGET);
        let settle = Duration::from_secs_f64(args.settle);
        let limit = Duration::from_secs_f64(args.timeout);
        let start = Instant::now();
        let mut previous: Option<(u64, Instant)> = None;
        let token = loop {
            let token = tokens
                .get(name)
                .await
                .with_context(|| format!("reading StrakeToken {}/{name}", args.namespace))?;
            let requests = collected_requests(&token);
            let now = Instant::now();
            if settled(previous, requests, now, settle) {
                break token;
            }
            if start.elapsed() > limit {
                bail!(
                    "StrakeToken {}/{name}: collected requests still changing (or none) after {limit:?}",
                    args.namespace
                );
            }
            if previous.is_none_or(|(n, _)| n != requests) {
                previous = Some((requests, now));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let record = budget_record(&args.output, &token)?;
        if let Record::BudgetSpend(b) = &record {
            eprintln!(
                "kube-features: the budget counted {} requests, ${} of ${} a {} ({}), phase {}",
                b.requests, b.spent_usd, b.limit_usd, b.period, b.status_period, b.phase
            );
        }
        results::write(&args.output.out, &record)
    })
}

fn collected_requests(token: &StrakeToken) -> u64 {
    token
        .status
        .as_ref()
        .and_then(|s| s.usage.as_ref())
        .and_then(|u| u.lifetime.as_ref())
        .map_or(0, |l| l.requests)
}

fn budget_record(output: &Output, token: &StrakeToken) -> anyhow::Result<Record> {
    let spec = token
        .spec
        .budget
        .as_ref()
        .context("the budgeted StrakeToken has no spec.budget")?;
    let status = token.status.as_ref();
    let spent = status
        .and_then(|s| s.budget.as_ref())
        .context("the budgeted StrakeToken has no status.budget yet")?;
    Ok(Record::BudgetSpend(BudgetSpendResult {
        meta: Meta {
            target: output.target.clone(),
            experiment: output.experiment.clone(),
        },
        period: serde_json::to_value(spec.period)?
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        limit_usd: spec.usd.clone().unwrap_or_default(),
        status_period: spent.period.clone(),
        spent_usd: spent.spent_usd.clone(),
        requests: collected_requests(token),
        phase: status
            .and_then(|s| s.phase)
            .map_or("unknown", |p| p.as_str())
            .to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(target: &str, spec: &Value) -> StrakeToken {
        serde_json::from_value(token_object(target, spec)).expect("a StrakeToken")
    }

    #[test]
    fn each_row_differs_from_the_minted_baseline_only_by_its_feature() {
        let [(m, minted), (b, budget), (k, keyless)] = token_specs("1000000");
        assert_eq!((m, b, k), (MINTED, BUDGET, KEYLESS));
        let minted = parse(m, &minted).spec;
        let budget = parse(b, &budget);
        let keyless = parse(k, &keyless);
        assert_eq!(budget.metadata.name.as_deref(), Some("budget"));
        assert!(minted.budget.is_none() && minted.service_account.is_none());
        assert!(minted.mint_token.is_none(), "minted by default");

        let limit = budget.spec.budget.as_ref().expect("a budget");
        assert_eq!(limit.usd.as_deref(), Some("1000000"));
        assert_eq!(limit.tokens, None, "USD only: every request is priced");
        assert!(budget.spec.service_account.is_none());

        assert_eq!(keyless.spec.service_account.as_deref(), Some(WORKLOAD));
        assert!(keyless.spec.mint_token.is_none(), "keyless by default");
        assert!(keyless.spec.budget.is_none());
        for spec in [&budget.spec, &keyless.spec] {
            assert_eq!(spec.upstreams, minted.upstreams);
            assert_eq!(spec.limits, minted.limits);
            assert_eq!(spec.allowed_models, minted.allowed_models);
        }
    }

    #[test]
    fn the_budget_settles_once_collected_requests_stop_changing() {
        let t0 = Instant::now();
        let s = Duration::from_secs(3);
        assert!(!settled(None, 10, t0, s), "one read proves nothing");
        assert!(
            !settled(Some((0, t0)), 0, t0 + s, s),
            "nothing collected yet"
        );
        assert!(
            !settled(Some((10, t0)), 10, t0 + s / 2, s),
            "not long enough"
        );
        assert!(!settled(Some((10, t0)), 12, t0 + s, s), "still counting");
        assert!(settled(Some((10, t0)), 10, t0 + s, s));
    }
}
