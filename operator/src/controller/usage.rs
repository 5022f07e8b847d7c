//! Usage collection, run by the leader only: every `--usage-interval`, read
//! each proxy replica's cumulative counters from its admin port, fold the
//! differences into the StrakeTokens' and UpstreamKeys' status (see
//! [`crate::core::usage`]), and write at most `--usage-writes-per-second`.
//!
//! Nothing needed for correctness lives in memory: the cursors are in the
//! status, written with the totals they produced in one update guarded by
//! the resourceVersion the fold read. What is kept here (the `since`
//! watermark per replica, the last write per resource) only saves work.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use serde_json::{Value, json};
use strake_crds::usage::{COLLECT_PATH, Entry, Report, SINCE_PARAM};
use strake_crds::{Budget, BudgetStatus, StrakeToken, TokenUsage, UpstreamKey};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cli::Settings;
use crate::core::budget;
use crate::core::usage::{self, Candidate, Folded, Pacer, Seen};
use crate::metrics::Metrics;

/// The field manager of usage writes, apart from the reconcilers' own.
pub const FIELD_MANAGER: &str = "strake-operator-usage";
/// The largest report accepted from one replica (100,000 used tokens take
/// about 25 MB).
const MAX_REPORT_BYTES: usize = 128 * 1024 * 1024;
/// Status writes in flight at once.
const WRITE_CONCURRENCY: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    StrakeToken,
    UpstreamKey,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::StrakeToken => "StrakeToken",
            Kind::UpstreamKey => "UpstreamKey",
        }
    }
}

type Key = (Kind, String, String);

/// What a fold needs from a resource, read from the cache.
struct Current {
    usage: Option<TokenUsage>,
    last_used_at: Option<Time>,
    /// `spec.budget` and the period bucket in `status.budget`.
    budget: Option<Budget>,
    bucket: Option<BudgetStatus>,
    resource_version: String,
    /// Deleted, its finalizer waiting for this last usage.
    terminating: bool,
}

/// The caches of every watched scope.
pub struct Caches {
    pub tokens: Vec<Store<StrakeToken>>,
    pub upstreams: Vec<Store<UpstreamKey>>,
}

impl Caches {
    fn current(&self, key: &Key) -> Option<Current> {
        let (kind, namespace, name) = key;
        match kind {
            Kind::StrakeToken => {
                let r = ObjectRef::new(name).within(namespace);
                let t = self.tokens.iter().find_map(|s| s.get(&r))?;
                Some(Current {
                    usage: t.status.as_ref().and_then(|s| s.usage.clone()),
                    last_used_at: t.status.as_ref().and_then(|s| s.last_used_at.clone()),
                    budget: t.spec.budget.clone(),
                    bucket: t.status.as_ref().and_then(|s| s.budget.clone()),
                    resource_version: t.meta().resource_version.clone()?,
                    terminating: t.meta().deletion_timestamp.is_some(),
                })
            }
            Kind::UpstreamKey => {
                let r = ObjectRef::new(name).within(namespace);
                let u = self.upstreams.iter().find_map(|s| s.get(&r))?;
                Some(Current {
                    usage: u.status.as_ref().and_then(|s| s.usage.clone()),
                    last_used_at: u.status.as_ref().and_then(|s| s.last_used_at.clone()),
                    budget: u.spec.budget.clone(),
                    bucket: u.status.as_ref().and_then(|s| s.budget.clone()),
                    resource_version: u.meta().resource_version.clone()?,
                    terminating: u.meta().deletion_timestamp.is_some(),
                })
            }
        }
    }
}

struct Collector {
    kube: Client,
    http: HttpClient<HttpConnector, Empty<Bytes>>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    caches: Caches,
    /// Per admin URL: the instance last seen there and the report time up to
    /// which all its entries are in status (the next `since`).
    watermarks: HashMap<String, (String, i64)>,
    /// When each resource's usage was last written, to share the budget.
    written: HashMap<Key, Duration>,
    pacer: Pacer,
    epoch: Instant,
}

/// Collects until `shutdown`. Does nothing when no replica can be found.
pub async fn run(
    kube: Client,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    caches: Caches,
    shutdown: CancellationToken,
) {
    let config = &settings.usage;
    if !config.enabled() {
        info!("usage collection off: neither --proxy-admin-urls nor --proxy-admin-service is set");
        return;
    }
    let writes = config.writes_per_second;
    // One round's worth of writes may go at once.
    let burst = writes.saturating_mul(u32::try_from(config.interval.as_secs()).unwrap_or(1).max(1));
    let mut collector = Collector {
        kube,
        http: HttpClient::builder(TokioExecutor::new()).build_http(),
        settings: settings.clone(),
        metrics,
        caches,
        watermarks: HashMap::new(),
        written: HashMap::new(),
        pacer: Pacer::new(writes, burst),
        epoch: Instant::now(),
    };
    info!(
        interval = ?config.interval,
        writes_per_second = writes,
        urls = ?config.admin_urls,
        service = ?config.admin_service,
        "collecting usage"
    );
    // A resource missing from a cache that is still filling would pass for
    // deleted, and its usage would be skipped past.
    let filled = async {
        for store in &collector.caches.tokens {
            super::cache_ready(store, "StrakeToken").await?;
        }
        for store in &collector.caches.upstreams {
            super::cache_ready(store, "UpstreamKey").await?;
        }
        Ok::<(), crate::error::Error>(())
    };
    tokio::select! {
        () = shutdown.cancelled() => return,
        filled = filled => if filled.is_err() { return },
    }
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        collector.round().await;
    }
}

impl Collector {
    async fn round(&mut self) {
        let targets = self.targets().await;
        let scrapes = targets.iter().map(|url| self.scrape(url));
        let reports: Vec<(String, Report)> = futures::future::join_all(scrapes)
            .await
            .into_iter()
            .zip(targets.iter())
            .filter_map(|(r, url)| r.map(|r| (url.clone(), r)))
            .collect();
        self.watermarks.retain(|url, _| targets.contains(url));
        let live: BTreeSet<String> = reports.iter().map(|(_, r)| r.instance.clone()).collect();

        // Per resource: which replicas reported it.
        let mut groups: BTreeMap<Key, Vec<(usize, &Entry)>> = BTreeMap::new();
        for (i, (_, report)) in reports.iter().enumerate() {
            for (kind, entries) in [
                (Kind::StrakeToken, &report.tokens),
                (Kind::UpstreamKey, &report.upstreams),
            ] {
                // File-mode entries name no resource.
                for e in entries.iter().filter(|e| !e.namespace.is_empty()) {
                    groups
                        .entry((kind, e.namespace.clone(), e.name.clone()))
                        .or_default()
                        .push((i, e));
                }
            }
        }

        let now = Timestamp::now();
        // Budget periods follow the operator's clock (shifted only in tests).
        let budget_now = self.settings.clock.now();
        let retention = self.settings.usage.cursor_retention;
        let mut folds: HashMap<Key, (Folded, Current)> = HashMap::new();
        for (key, seen) in &groups {
            // Gone (its final usage is recorded at deletion) or not watched.
            let Some(current) = self.caches.current(key) else {
                continue;
            };
            let seen: Vec<Seen<'_>> = seen
                .iter()
                .map(|(i, entry)| Seen {
                    instance: &reports[*i].1.instance,
                    entry,
                })
                .collect();
            if let Some(folded) = usage::fold(
                current.usage.as_ref(),
                current.last_used_at.as_ref(),
                &seen,
                &live,
                now,
                retention,
            ) {
                let bucket = current.budget.as_ref().map(|b| {
                    budget::fold_bucket(b, current.bucket.as_ref(), &folded.added, budget_now)
                });
                folds.insert(key.clone(), (folded, Current { bucket, ..current }));
            }
        }

        let elapsed = self.epoch.elapsed();
        let urgent = folds.values().filter(|(_, c)| c.terminating).count();
        let paced = self.pacer.allow(elapsed, folds.len() - urgent);
        let candidates = folds
            .iter()
            .map(|(k, (_, c))| Candidate {
                key: k.clone(),
                terminating: c.terminating,
                written: self.written.get(k).copied(),
            })
            .collect();
        let picked = usage::pick(candidates, paced);
        let picked: Vec<(Key, Folded, Current)> = picked
            .into_iter()
            .filter_map(|key| folds.remove(&key).map(|(f, c)| (key, f, c)))
            .collect();
        let this = &*self;
        let writes = picked.into_iter().map(|(key, folded, current)| async move {
            let ok = this.write(&key, &folded, &current).await;
            (key, ok)
        });
        let outcomes: Vec<(Key, bool)> = futures::stream::iter(writes)
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;

        // A report's entries are all in status unless one of its resources
        // is still to be written: only then may the next `since` move on.
        let mut pending: HashSet<usize> = HashSet::new();
        let unwritten = folds
            .keys()
            .chain(outcomes.iter().filter(|(_, ok)| !ok).map(|(key, _)| key));
        for key in unwritten {
            pending.extend(groups[key].iter().map(|(i, _)| *i));
        }
        for (key, ok) in &outcomes {
            if *ok {
                self.written.insert(key.clone(), elapsed);
            }
        }
        for (i, (url, report)) in reports.iter().enumerate() {
            if !pending.contains(&i) {
                self.watermarks
                    .insert(url.clone(), (report.instance.clone(), report.now));
            }
        }
        let waiting = folds.len() + outcomes.iter().filter(|(_, ok)| !ok).count();
        self.metrics.usage_round(reports.len(), waiting);
        debug!(
            replicas = reports.len(),
            of = targets.len(),
            written = outcomes.iter().filter(|(_, ok)| *ok).count(),
            waiting,
            "usage collected"
        );
    }

    /// The static URLs and every endpoint of the admin Service.
    async fn targets(&self) -> Vec<String> {
        let config = &self.settings.usage;
        let mut urls: BTreeSet<String> = config.admin_urls.iter().cloned().collect();
        if let Some(service) = &config.admin_service {
            let api: Api<EndpointSlice> =
                Api::namespaced(self.kube.clone(), &self.settings.proxy_namespace);
            let params =
                ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
            match api.list(&params).await {
                Ok(list) => urls.extend(usage::admin_urls(&list.items)),
                Err(error) => {
                    warn!(%error, %service, "cannot list the proxy admin Service's EndpointSlices")
                }
            }
        }
        urls.into_iter().collect()
    }

    /// One replica's report: only what changed since the watermark, unless
    /// the replica is a new instance (then everything).
    async fn scrape(&self, url: &str) -> Option<Report> {
        let known = self.watermarks.get(url);
        let since = known.map(|(_, at)| *at).unwrap_or(0);
        let mut report = self.fetch(url, since).await?;
        if since > 0 && known.is_some_and(|(instance, _)| *instance != report.instance) {
            // Restarted: the watermark was the old process's.
            report = self.fetch(url, 0).await?;
        }
        Some(report)
    }

    async fn fetch(&self, url: &str, since: i64) -> Option<Report> {
        let timeout = self.settings.usage.scrape_timeout();
        let result = tokio::time::timeout(timeout, async {
            let uri = format!("{url}{COLLECT_PATH}?{SINCE_PARAM}={since}");
            let request = http::Request::get(uri)
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_REPORT_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            serde_json::from_slice::<Report>(&body).map_err(|e| format!("not a usage report: {e}"))
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
        self.metrics.usage_scraped(result.is_ok());
        match result {
            Ok(report) => Some(report),
            Err(error) => {
                // Its counters stay on the replica: the next round that
                // reaches it folds them.
                warn!(%url, %error, "cannot collect usage from a proxy replica");
                None
            }
        }
    }

    /// Writes one resource's usage, only if it still has the
    /// resourceVersion the fold read: a concurrent write (another operator
    /// that still thinks it leads, the reconciler) makes it fail, and the
    /// next round folds again from what is then stored.
    async fn write(&self, key: &Key, folded: &Folded, current: &Current) -> bool {
        let (kind, namespace, name) = key;
        let body = patch_body(folded, current);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let result = match kind {
            Kind::StrakeToken => Api::<StrakeToken>::namespaced(self.kube.clone(), namespace)
                .patch_status(name, &params, &Patch::Merge(&body))
                .await
                .map(drop),
            Kind::UpstreamKey => Api::<UpstreamKey>::namespaced(self.kube.clone(), namespace)
                .patch_status(name, &params, &Patch::Merge(&body))
                .await
                .map(drop),
        };
        let outcome = match &result {
            Ok(()) => "ok",
            Err(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Err(_) => "error",
        };
        self.metrics.usage_written(kind.as_str(), outcome);
        match result {
            Ok(()) => true,
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => false,
            Err(error) => {
                warn!(kind = kind.as_str(), %namespace, %name, %error, "cannot write usage");
                false
            }
        }
    }
}

/// A JSON merge patch of the usage status, conditional on the
/// resourceVersion. Cursors the fold dropped are deleted with `null`.
fn patch_body(folded: &Folded, current: &Current) -> Value {
    let mut usage = serde_json::to_value(&folded.usage).expect("usage serializes");
    if let Some(old) = &current.usage {
        let collected = usage
            .as_object_mut()
            .expect("usage is an object")
            .entry("collected")
            .or_insert_with(|| json!({}));
        for instance in old.collected.keys() {
            if !folded.usage.collected.contains_key(instance) {
                collected[instance.as_str()] = Value::Null;
            }
        }
    }
    // The bucket the fold produced (`current.bucket` was replaced by it),
    // or none: a budget removed from the spec leaves no bucket behind.
    let mut status = json!({
        "usage": usage,
        "budget": current.bucket.as_ref().map(|b| serde_json::to_value(b).expect("a bucket serializes")),
    });
    if let Some(at) = &folded.last_used_at {
        status["lastUsedAt"] = serde_json::to_value(at).expect("a time serializes");
    }
    json!({
        "metadata": { "resourceVersion": current.resource_version },
        "status": status,
    })
}
