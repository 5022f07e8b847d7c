//! The operator's usage status writes against the API server with many
//! active tokens: N StrakeTokens, each of which a simulated proxy replica
//! reports as used every time the collector asks, so every token wants a
//! status write every collection round. The operator's pacer must hold the
//! writes to `--usage-writes-per-second`; this counts the writes that reach
//! the API server (watch events whose `status.usage` changed), per second.
//!
//! `bench/run.sh` runs a dedicated operator for this (the dev stack's is
//! stopped meanwhile) whose `--proxy-admin-urls` is this process's report.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use strake_crds::StrakeToken;
use strake_crds::usage::{Counters, Entry, Report};

use crate::Output;
use crate::results::{self, Meta, Record, UsageWritesResult};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    output: Output,
    /// Namespace of the bench's StrakeTokens (created if missing).
    #[arg(long)]
    namespace: String,
    /// Active StrakeTokens.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Where the simulated replica serves `/usage`.
    #[arg(long)]
    listen: SocketAddr,
    /// Seconds of writes counted.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Seconds after the first write before counting starts (the pacer
    /// lets one round's writes go at once).
    #[arg(long, default_value_t = 10.0)]
    warmup: f64,
    /// The operator's `--usage-writes-per-second`, for the report.
    #[arg(long, default_value_t = 100)]
    bound: u32,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Every token used once more at each report: all of them have new usage
/// for every round.
fn report(namespace: &str, names: &[String], round: u64, started_at: i64) -> Report {
    let now = unix_now();
    Report {
        instance: "bench-replica".into(),
        started_at,
        now,
        tokens: names
            .iter()
            .map(|name| Entry {
                namespace: namespace.to_string(),
                name: name.clone(),
                series: 1,
                last_used_at: now,
                counters: Counters {
                    requests: round,
                    input_tokens: round * 100,
                    output_tokens: round * 10,
                    ..Counters::default()
                },
            })
            .collect(),
        upstreams: Vec::new(),
    }
}

async fn serve(
    listen: SocketAddr,
    namespace: String,
    names: Arc<Vec<String>>,
    rounds: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let started_at = unix_now();
    loop {
        let (stream, _) = listener.accept().await?;
        let (namespace, names, rounds) = (namespace.clone(), names.clone(), rounds.clone());
        tokio::spawn(async move {
            let service = service_fn(move |_req| {
                let round = rounds.fetch_add(1, Ordering::Relaxed) + 1;
                let body = serde_json::to_vec(&report(&namespace, &names, round, started_at))
                    .expect("a report serializes");
                async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body)))) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(measure(args))
}

async fn measure(args: Args) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("kube client (KUBECONFIG)")?;
    let ns = args.namespace.clone();
    crate::control::ensure_namespace(&client, &ns).await?;
    let tokens: Api<StrakeToken> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = (0..args.count).map(|i| format!("usage-{i:05}")).collect();
    let existing: std::collections::HashSet<String> = tokens
        .list_metadata(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|t| t.metadata.name)
        .collect();
    let start = Instant::now();
    futures::stream::iter(names.iter().filter(|n| !existing.contains(*n)).map(|name| {
        let tokens = tokens.clone();
        async move {
            tokens
                .create(&PostParams::default(), &crate::control::strake_token(name)?)
                .await
                .with_context(|| format!("creating StrakeToken {name}"))
        }
    }))
    .buffer_unordered(args.concurrency)
    .try_collect::<Vec<_>>()
    .await?;
    eprintln!(
        "usage-writes: {} StrakeTokens in place after {:.1} s",
        args.count,
        start.elapsed().as_secs_f64()
    );

    let rounds = Arc::new(AtomicU64::new(0));
    let names = Arc::new(names);
    let server = tokio::spawn(serve(
        args.listen,
        ns.clone(),
        names.clone(),
        rounds.clone(),
    ));

    // Count writes that changed status.usage, as the API server sees them,
    // from `warmup` after the first one (past the pacer's initial burst).
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut events =
        std::pin::pin!(watcher(tokens.clone(), watcher::Config::default()).default_backoff());
    let window = Duration::from_secs_f64(args.duration);
    let warmup = Duration::from_secs_f64(args.warmup);
    let give_up = Instant::now() + Duration::from_secs(600);
    let mut listed = false;
    let mut first: Option<Instant> = None;
    let mut writes = 0u64;
    let mut refreshed = std::collections::HashSet::new();
    loop {
        let deadline = first.map_or(give_up, |f| f + warmup + window);
        let next = tokio::time::timeout_at(deadline.into(), events.next()).await;
        let Ok(Some(event)) = next else { break };
        let t = match event.context("watching StrakeTokens")? {
            watcher::Event::Init => continue,
            watcher::Event::InitDone => {
                listed = true;
                continue;
            }
            watcher::Event::InitApply(t) | watcher::Event::Apply(t) => t,
            watcher::Event::Delete(_) => continue,
        };
        let name = t.metadata.name.clone().unwrap_or_default();
        let requests = t
            .status
            .as_ref()
            .and_then(|s| s.usage.as_ref())
            .and_then(|u| u.lifetime.as_ref())
            .map_or(0, |l| l.requests);
        let before = seen.insert(name.clone(), requests).unwrap_or(0);
        // The initial list shows what earlier runs wrote: not a write now.
        if !listed || requests <= before {
            continue;
        }
        let f = *first.get_or_insert_with(Instant::now);
        let since = f.elapsed();
        if since >= warmup && since < warmup + window {
            writes += 1;
            refreshed.insert(name);
        }
    }
    server.abort();
    let measured = first.map_or(0.0, |f| {
        f.elapsed().saturating_sub(warmup).min(window).as_secs_f64()
    });
    let per_second = if measured > 0.0 {
        writes as f64 / measured
    } else {
        f64::NAN
    };
    eprintln!(
        "usage-writes: {writes} usage writes in {measured:.1} s = {per_second:.1}/s for {} active tokens ({} distinct refreshed; {} reports served)",
        args.count,
        refreshed.len(),
        rounds.load(Ordering::Relaxed)
    );
    results::write(
        &args.output.out,
        &Record::UsageWrites(UsageWritesResult {
            meta: Meta {
                target: args.output.target.clone(),
                experiment: args.output.experiment.clone(),
            },
            tokens: args.count,
            duration_s: measured,
            writes,
            writes_per_s: per_second,
            bound_per_s: f64::from(args.bound),
            tokens_refreshed: refreshed.len(),
        }),
    )
}
