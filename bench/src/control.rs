//! Measurements on a live control plane (`make dev-up`): how long a deleted
//! StrakeToken keeps working at the proxy, and how long the operator takes
//! to bring many StrakeTokens to Ready.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use strake_crds::resources::{StrakeToken, UpstreamKey};

use crate::Output;
use crate::conn;
use crate::histogram::nearest_rank;
use crate::proc;
use crate::results::{self, ApiCalls, Meta, OperatorScaleResult, Record, RevocationResult};

const MANAGER: &str = "strake-bench";
pub(crate) const UPSTREAM: &str = "openai";
const UPSTREAM_SECRET: &str = "bench-upstream";
const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"ping"}]}"#;

/// Where the mock upstream is, so the bench namespace gets an UpstreamKey.
#[derive(clap::Args, Debug)]
pub(crate) struct UpstreamArgs {
    /// The mock upstream's base URL (MOCK_UPSTREAM_URL in target/dev/env).
    #[arg(long)]
    pub(crate) mock_url: String,
    /// The key the mock accepts (MOCK_OPENAI_KEY).
    #[arg(long)]
    pub(crate) mock_key: String,
    /// Namespace the bench's StrakeTokens live in (created if missing).
    #[arg(long)]
    pub(crate) namespace: String,
}

#[derive(clap::Args, Debug)]
pub struct RevocationArgs {
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    upstream: UpstreamArgs,
    /// The proxy's traffic URL (STRAKE_PROXY_URL).
    #[arg(long)]
    proxy_url: String,
    #[arg(long, default_value_t = 30)]
    trials: usize,
    /// Milliseconds between two probes of the proxy after the delete.
    #[arg(long, default_value_t = 5.0)]
    poll_ms: f64,
    /// Seconds a trial may take before it counts as failed.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

#[derive(clap::Args, Debug)]
pub struct OperatorScaleArgs {
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    upstream: UpstreamArgs,
    /// StrakeTokens to create.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The proxy's traffic URL (STRAKE_PROXY_URL): tokens issued before the
    /// storm are revoked during it and probed there until they get 401.
    #[arg(long)]
    proxy_url: Option<String>,
    /// Tokens revoked during the storm, at most (one every `--revocation-every`).
    #[arg(long, default_value_t = 30)]
    revocations: usize,
    /// Seconds between two revocations during the storm.
    #[arg(long, default_value_t = 1.0)]
    revocation_every: f64,
    /// Milliseconds between two probes of the proxy after a delete.
    #[arg(long, default_value_t = 5.0)]
    poll_ms: f64,
    /// The operator's pid (its pid file), for its memory.
    #[arg(long)]
    operator_pid_file: Option<PathBuf>,
    /// Seconds to wait for every token to be Ready (and for a cleanup, and
    /// for one revoked token's 401).
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Server-side applies `object` (with its apiVersion and kind) as `name`,
/// as the bench's field manager: a rerun changes nothing.
pub(crate) async fn apply<K>(api: &Api<K>, name: &str, object: serde_json::Value) -> kube::Result<K>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
}

/// Namespace, upstream Secret and UpstreamKey for the bench's tokens;
/// server-side applied. Waits until the UpstreamKey is Ready.
/// A client of the API server KUBECONFIG names, with the bench's namespace,
/// upstream key Secret and UpstreamKey in place.
pub(crate) async fn client_with_upstream(args: &UpstreamArgs) -> anyhow::Result<Client> {
    let client = Client::try_default()
        .await
        .context("kube client (KUBECONFIG)")?;
    ensure_upstream(&client, args).await?;
    Ok(client)
}

async fn ensure_upstream(client: &Client, args: &UpstreamArgs) -> anyhow::Result<()> {
    let ns = &args.namespace;
    ensure_namespace(client, ns).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": UPSTREAM_SECRET,
            "labels": {
                strake_crds::UPSTREAM_KEY_SECRET_LABEL: strake_crds::UPSTREAM_KEY_SECRET_OPT_IN,
            },
        },
        "stringData": {"api-key": args.mock_key},
    });
    apply(&secrets, UPSTREAM_SECRET, secret)
        .await
        .context("applying the upstream Secret")?;
    let keys: Api<UpstreamKey> = Api::namespaced(client.clone(), ns);
    let key = json!({
        "apiVersion": "strake.sh/v1alpha1", "kind": "UpstreamKey",
        "metadata": {"name": UPSTREAM},
        "spec": {
            "provider": "openai",
            "baseUrl": args.mock_url,
            "secretRef": {"name": UPSTREAM_SECRET, "key": "api-key"},
        },
    });
    apply(&keys, UPSTREAM, key)
        .await
        .context("applying the UpstreamKey")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let key = keys.get(UPSTREAM).await?;
        let ready = key
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(is_ready));
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("UpstreamKey {ns}/{UPSTREAM} not Ready after 60 s (is the operator running?)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Server-side applies the namespace `ns`.
pub async fn ensure_namespace(client: &Client, ns: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    apply(&namespaces, ns, namespace)
        .await
        .context("applying the bench namespace")?;
    Ok(())
}

fn is_ready(c: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> bool {
    c.type_ == "Ready" && c.status == "True"
}

pub(crate) fn token_is_ready(t: &StrakeToken) -> bool {
    t.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(is_ready))
}

pub fn strake_token(name: &str) -> anyhow::Result<StrakeToken> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "strake.sh/v1alpha1", "kind": "StrakeToken",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "strake-bench"}},
        "spec": {"identity": format!("{name}@bench.example.com"), "upstreams": [UPSTREAM]},
    }))?)
}

/// A keep-alive client that asks the proxy one chat completion at a time.
pub(crate) struct Probe {
    template: conn::Template,
    conn: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Probe {
    pub(crate) fn new(proxy_url: &str, token: &str) -> anyhow::Result<Probe> {
        let url = format!("{}/v1/chat/completions", proxy_url.trim_end_matches('/'));
        Ok(Probe {
            template: conn::Template::new(
                &url,
                &[],
                Some(Bytes::from_static(CHAT.as_bytes())),
                &[token.to_owned()],
            )?,
            conn: None,
        })
    }

    /// The proxy's answer, or 0 if the request failed.
    async fn status(&mut self) -> u16 {
        let attempt = async {
            if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
                self.conn = Some(conn::connect(self.template.addr).await.ok()?);
            }
            let c = self.conn.as_mut()?;
            c.ready().await.ok()?;
            let resp = c.send_request(self.template.request(0)).await.ok()?;
            let status = resp.status().as_u16();
            resp.into_body().collect().await.ok()?;
            Some(status)
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Some(s)) => s,
            _ => {
                self.conn = None;
                0
            }
        }
    }

    /// Probes every `every` until the answer is `want`; the time it took.
    pub(crate) async fn until(
        &mut self,
        want: u16,
        every: Duration,
        limit: Duration,
    ) -> Option<Duration> {
        let start = Instant::now();
        let mut next = start;
        loop {
            if self.status().await == want {
                return Some(start.elapsed());
            }
            if start.elapsed() > limit {
                return None;
            }
            next += every;
            tokio::time::sleep_until(next.max(Instant::now()).into()).await;
        }
    }
}

pub fn revocation(args: RevocationArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = client_with_upstream(&args.upstream).await?;
        let ns = &args.upstream.namespace;
        let tokens: Api<StrakeToken> = Api::namespaced(client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let limit = Duration::from_secs_f64(args.timeout);
        let every = Duration::from_secs_f64(args.poll_ms / 1000.0);
        let run = jiff::Timestamp::now().as_second();
        let mut trials_ms = Vec::new();
        let mut issue_ms = Vec::new();
        let mut failures = 0;
        let mut failed_in_a_row = 0;
        for i in 0..args.trials {
            if failed_in_a_row >= 2 {
                eprintln!("revocation: two trials in a row could not issue a token; giving up");
                failures += (args.trials - i) as u64;
                break;
            }
            let name = format!("rev-{run}-{i}");
            let created = Instant::now();
            tokens
                .create(&PostParams::default(), &strake_token(&name)?)
                .await
                .with_context(|| format!("creating StrakeToken {ns}/{name}"))?;
            let token = match wait_for_token(&secrets, &format!("{name}-strake"), limit).await {
                Some(t) => t,
                None => {
                    eprintln!("revocation: {name}: no token Secret after {limit:?}");
                    failures += 1;
                    failed_in_a_row += 1;
                    let _ = tokens.delete(&name, &DeleteParams::default()).await;
                    continue;
                }
            };
            let mut probe = Probe::new(&args.proxy_url, &token)?;
            if probe.until(200, every, limit).await.is_none() {
                eprintln!("revocation: {name}: the proxy never accepted the new token");
                failures += 1;
                failed_in_a_row += 1;
                let _ = tokens.delete(&name, &DeleteParams::default()).await;
                continue;
            }
            failed_in_a_row = 0;
            issue_ms.push(created.elapsed().as_secs_f64() * 1000.0);
            let deleted = Instant::now();
            tokens
                .delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting StrakeToken {ns}/{name}"))?;
            match probe.until(401, every, limit).await {
                Some(_) => trials_ms.push(deleted.elapsed().as_secs_f64() * 1000.0),
                None => {
                    eprintln!("revocation: {name}: still accepted {limit:?} after the delete");
                    failures += 1;
                }
            }
        }
        let mut sorted = trials_ms.clone();
        sorted.sort_by(f64::total_cmp);
        eprintln!(
            "revocation: {} trials, {failures} failed; delete -> 401 p50 {:.0} ms p99 {:.0} ms max {:.0} ms",
            trials_ms.len(),
            nearest_rank(&sorted, 50.0),
            nearest_rank(&sorted, 99.0),
            sorted.last().copied().unwrap_or(f64::NAN),
        );
        let record = Record::Revocation(RevocationResult {
            meta: Meta {
                target: args.output.target.clone(),
                experiment: args.output.experiment.clone(),
            },
            trials_ms,
            issue_ms,
            poll_interval_ms: args.poll_ms,
            failures,
        });
        results::write(&args.output.out, &record)
    })
}

/// The plaintext token from the holder's Secret, once the operator wrote it.
pub(crate) async fn wait_for_token(
    secrets: &Api<Secret>,
    name: &str,
    limit: Duration,
) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(secret)) = secrets.get_opt(name).await
            && let Some(token) = secret.data.as_ref().and_then(|d| d.get("token"))
        {
            return String::from_utf8(token.0.clone()).ok();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

pub fn operator_scale(args: OperatorScaleArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = client_with_upstream(&args.upstream).await?;
        let ns = args.upstream.namespace.clone();
        let tokens: Api<StrakeToken> = Api::namespaced(client.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let selector = ListParams::default().labels("app.kubernetes.io/part-of=strake-bench");
        let limit = Duration::from_secs_f64(args.timeout);
        cleanup(&tokens, &selector, limit).await?;
        let operator_pid = match &args.operator_pid_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?
                    .trim()
                    .parse::<u32>()?,
            ),
            None => None,
        };

        // The tokens revoked during the storm, issued and accepted first.
        let probes = match &args.proxy_url {
            Some(url) => issue_probes(&tokens, &secrets, url, args.revocations, limit).await?,
            None => Vec::new(),
        };
        eprintln!(
            "operator-scale: {} probe tokens accepted by the proxy",
            probes.len()
        );

        let rss_before = operator_pid.map(proc::rss_kib);
        let mut rss_peak = rss_before;
        let calls_before = api_request_counts(&client).await?;
        let storm_over = Arc::new(AtomicBool::new(false));
        let mut ready_watch = watcher(
            tokens.clone(),
            watcher::Config::default().labels(STORM_SELECTOR),
        )
        .default_backoff()
        .boxed();

        let start = Instant::now();
        let names: Vec<String> = (0..args.count).map(|i| format!("scale-{i:05}")).collect();
        let creates = tokio::spawn({
            let tokens = tokens.clone();
            let concurrency = args.concurrency;
            async move {
                futures::stream::iter(names.into_iter().map(|name| {
                    let tokens = tokens.clone();
                    async move {
                        tokens
                            .create(&PostParams::default(), &storm_token(&name)?)
                            .await
                            .with_context(|| format!("creating StrakeToken {name}"))
                    }
                }))
                .buffer_unordered(concurrency)
                .try_collect::<Vec<_>>()
                .await
                .map(|_| start.elapsed().as_secs_f64())
            }
        });
        let revocations = tokio::spawn(revoke_during(
            tokens.clone(),
            probes,
            Duration::from_secs_f64(args.revocation_every),
            Duration::from_secs_f64(args.poll_ms / 1000.0),
            limit,
            storm_over.clone(),
        ));

        let mut ready = std::collections::HashSet::new();
        let mut sample = tokio::time::interval(Duration::from_millis(200));
        let all_ready = loop {
            tokio::select! {
                event = ready_watch.next() => match event {
                    Some(Ok(watcher::Event::Apply(t) | watcher::Event::InitApply(t))) => {
                        if token_is_ready(&t) {
                            ready.insert(t.name_any());
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => eprintln!("operator-scale: watching StrakeTokens: {e}"),
                    None => bail!("the StrakeToken watch ended"),
                },
                _ = sample.tick() => {
                    if let Some(pid) = operator_pid {
                        rss_peak = rss_peak.max(Some(proc::rss_kib(pid)));
                    }
                }
            }
            if ready.len() >= args.count {
                break Some(start.elapsed());
            }
            if start.elapsed() > limit {
                break None;
            }
        };
        storm_over.store(true, Ordering::Relaxed);
        let load_average = proc::load_average();
        let create_s = creates.await??;
        let revocation_ms = revocations.await??;
        let calls = per_token(
            &api_request_counts(&client).await?,
            &calls_before,
            args.count,
        );
        let all_ready_s = all_ready.map_or(f64::NAN, |d| d.as_secs_f64());
        let mut sorted = revocation_ms.clone();
        sorted.sort_by(f64::total_cmp);
        eprintln!(
            "operator-scale: {} created in {create_s:.1} s; {}/{} Ready after {:.1} s ({:.0}/s); \
             operator RSS {} -> peak {} MiB; {} revocations during it: p50 {:.0} ms p99 {:.0} ms; \
             {:.1} API requests per token ({:.1} writes); load average {:.1}",
            args.count,
            ready.len(),
            args.count,
            start.elapsed().as_secs_f64(),
            ready.len() as f64 / start.elapsed().as_secs_f64(),
            rss_before.unwrap_or(0) / 1024,
            rss_peak.unwrap_or(0) / 1024,
            revocation_ms.len(),
            nearest_rank(&sorted, 50.0),
            nearest_rank(&sorted, 99.0),
            calls.iter().map(|c| c.per_token).sum::<f64>(),
            calls
                .iter()
                .filter(|c| c.is_write())
                .map(|c| c.per_token)
                .sum::<f64>(),
            load_average.unwrap_or(f64::NAN),
        );
        for c in &calls {
            eprintln!(
                "operator-scale:   {:6.2} {} {}",
                c.per_token, c.verb, c.resource
            );
        }
        let record = Record::OperatorScale(OperatorScaleResult {
            meta: Meta {
                target: args.output.target.clone(),
                experiment: args.output.experiment.clone(),
            },
            tokens: args.count,
            concurrency: args.concurrency,
            all_ready_s,
            create_s,
            ready: ready.len(),
            operator_rss_kib: rss_peak,
            operator_rss_before_kib: rss_before,
            revocation_ms,
            api_calls: calls,
            load_average,
        });
        results::write(&args.output.out, &record)?;
        cleanup(&tokens, &selector, limit).await
    })
}

/// The storm's tokens, apart from the probes the bench revokes during it.
const STORM_SELECTOR: &str = "strake-bench/set=storm";

fn storm_token(name: &str) -> anyhow::Result<StrakeToken> {
    let mut token = strake_token(name)?;
    token
        .labels_mut()
        .insert("strake-bench/set".into(), "storm".into());
    Ok(token)
}

/// `count` tokens, each accepted by the proxy at `proxy_url`.
async fn issue_probes(
    tokens: &Api<StrakeToken>,
    secrets: &Api<Secret>,
    proxy_url: &str,
    count: usize,
    limit: Duration,
) -> anyhow::Result<Vec<(String, Probe)>> {
    futures::stream::iter((0..count).map(|i| async move {
        let name = format!("probe-{i:03}");
        tokens
            .create(&PostParams::default(), &strake_token(&name)?)
            .await
            .with_context(|| format!("creating StrakeToken {name}"))?;
        let token = wait_for_token(secrets, &format!("{name}-strake"), limit)
            .await
            .with_context(|| format!("{name}: no token Secret after {limit:?}"))?;
        let mut probe = Probe::new(proxy_url, &token)?;
        if probe
            .until(200, Duration::from_millis(20), limit)
            .await
            .is_none()
        {
            bail!("{name}: the proxy never accepted the token");
        }
        Ok((name, probe))
    }))
    .buffer_unordered(8)
    .try_collect()
    .await
}

/// Deletes one probe token every `every` until `over` (or the probes run
/// out), timing each delete -> 401 at the proxy.
async fn revoke_during(
    tokens: Api<StrakeToken>,
    probes: Vec<(String, Probe)>,
    every: Duration,
    poll: Duration,
    limit: Duration,
    over: Arc<AtomicBool>,
) -> anyhow::Result<Vec<f64>> {
    let mut trials = Vec::new();
    let mut next = Instant::now() + every;
    for (name, mut probe) in probes {
        tokio::time::sleep_until(next.into()).await;
        next += every;
        if over.load(Ordering::Relaxed) {
            break;
        }
        let deleted = Instant::now();
        tokens
            .delete(&name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting StrakeToken {name}"))?;
        let answered = deleted.elapsed();
        match probe.until(401, poll, limit).await {
            Some(_) => {
                let ms = deleted.elapsed().as_secs_f64() * 1000.0;
                eprintln!(
                    "operator-scale: {name} revoked in {ms:.0} ms (the delete itself took {:.0} ms)",
                    answered.as_secs_f64() * 1000.0
                );
                trials.push(ms);
            }
            None => bail!("{name}: still accepted {limit:?} after the delete"),
        }
    }
    Ok(trials)
}

/// `apiserver_request_total` summed by verb and resource, long-running
/// WATCH requests left out (they are counted when they start, not per item).
async fn api_request_counts(client: &Client) -> anyhow::Result<BTreeMap<(String, String), f64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client
        .request_text(request)
        .await
        .context("reading the API server's /metrics (an admin KUBECONFIG is needed)")?;
    Ok(request_counts(&text))
}

fn request_counts(metrics: &str) -> BTreeMap<(String, String), f64> {
    let mut counts = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_string())
            })
        };
        let (Some(verb), Some(resource)) = (label("verb"), label("resource")) else {
            continue;
        };
        if verb == "WATCH" || verb == "CONNECT" {
            continue;
        }
        let resource = match label("subresource").filter(|s| !s.is_empty()) {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        };
        *counts.entry((verb, resource)).or_default() += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    counts
}

/// The requests made between `before` and `after`, per token, most first.
fn per_token(
    after: &BTreeMap<(String, String), f64>,
    before: &BTreeMap<(String, String), f64>,
    tokens: usize,
) -> Vec<ApiCalls> {
    let mut calls: Vec<ApiCalls> = after
        .iter()
        .filter_map(|(key, n)| {
            let made = n - before.get(key).copied().unwrap_or(0.0);
            (made > 0.0).then(|| ApiCalls {
                verb: key.0.clone(),
                resource: key.1.clone(),
                per_token: made / tokens.max(1) as f64,
            })
        })
        .collect();
    calls.sort_by(|a, b| b.per_token.total_cmp(&a.per_token));
    calls
}

/// Deletes the bench's StrakeTokens and waits until the operator's
/// finalizers let them go, so the next measurement starts clean.
async fn cleanup(
    tokens: &Api<StrakeToken>,
    selector: &ListParams,
    limit: Duration,
) -> anyhow::Result<()> {
    let names: Vec<String> = tokens
        .list(selector)
        .await?
        .items
        .into_iter()
        .filter_map(|t| t.metadata.name)
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let start = Instant::now();
    futures::stream::iter(names.iter().map(|name| async move {
        match tokens.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting StrakeToken {name}")),
        }
    }))
    .buffer_unordered(32)
    .try_collect::<Vec<_>>()
    .await?;
    loop {
        let left = tokens.list(selector).await?.items.len();
        if left == 0 {
            eprintln!(
                "operator-scale: {} StrakeTokens deleted in {:.1} s",
                names.len(),
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("{left} bench StrakeTokens still present {limit:?} after the delete");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counts_sum_by_verb_and_resource_without_watches() {
        let metrics = r#"# HELP apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="GET",version="v1"} 3
apiserver_request_total{code="404",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="GET",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="strake.sh",resource="straketokens",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="secrets",scope="namespace",subresource="",verb="WATCH",version="v1"} 9
apiserver_request_duration_seconds_bucket{verb="GET",resource="secrets",le="1"} 100
"#;
        let counts = request_counts(metrics);
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert_eq!(counts[&("GET".into(), "secrets".into())], 5.0);
        assert_eq!(counts[&("APPLY".into(), "straketokens/status".into())], 7.0);
    }

    #[test]
    fn per_token_divides_what_was_made_in_between_most_first() {
        let key = |v: &str, r: &str| (v.to_string(), r.to_string());
        let before = BTreeMap::from([(key("GET", "secrets"), 10.0)]);
        let after = BTreeMap::from([
            (key("GET", "secrets"), 30.0),
            (key("POST", "straketokens"), 10.0),
            (key("LIST", "namespaces"), 0.0),
        ]);
        let calls = per_token(&after, &before, 10);
        let got: Vec<_> = calls
            .iter()
            .map(|c| (c.verb.as_str(), c.resource.as_str(), c.per_token))
            .collect();
        assert_eq!(
            got,
            vec![("GET", "secrets", 2.0), ("POST", "straketokens", 1.0)]
        );
        assert!(calls[1].is_write() && !calls[0].is_write());
    }
}
