//! The I/O shell: two controllers per watched scope, the orphan sweep, and
//! what they share.
//!
//! Per scope (all namespaces, or each `--watch-namespaces` entry):
//!
//! - **StrakeToken** controller. Triggers: StrakeTokens (filtered by a
//!   generation+finalizers predicate so its own status writes do not wake it),
//!   the plaintext Secrets it owns, UpstreamKeys (mapped to the tokens naming
//!   them) and the proxy-namespace token Secrets (mapped back by their source
//!   labels). Deleting or editing either Secret by hand brings a reconcile that
//!   restores it.
//! - **UpstreamKey** controller. Triggers: UpstreamKeys (same predicate), the
//!   metadata of Secrets labelled for UpstreamKeys (mapped to the UpstreamKeys
//!   whose `secretRef` names them, so rotating the real key and adding or
//!   removing the label propagate), the proxy-namespace upstream
//!   Secrets, and a nudge from the token controller when a token's upstream
//!   list may have changed (for `status.tokens`).
//!
//! Every object is also reconciled again after `--resync`.

pub mod orphans;
pub mod revoker;
pub mod strake_token;
pub mod upstream_key;
pub mod usage;

#[cfg(test)]
mod fake_api;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use strake_crds::contract::Role;
use strake_crds::{StrakeToken, UPSTREAM_KEY_SECRET_SELECTOR, UpstreamKey};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::admin::Health;
use crate::cli::{Scope, Settings};
use crate::core::echo::Echoes;
use crate::core::objects::{self, FIELD_MANAGER};
use crate::core::token::Notice;
use crate::core::{budget, retry, upstream};
use crate::error::{Error, Result, is_not_found};
use crate::metrics::Metrics;

/// The reporter name on every event.
pub const REPORTER: &str = "strake-operator";

/// What a reconcile needs, shared by both controllers of one scope.
pub struct Context {
    pub client: Client,
    pub settings: Arc<Settings>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The StrakeToken cache (fed by the token controller's watch).
    pub tokens: Store<StrakeToken>,
    /// The UpstreamKey cache (fed by the UpstreamKey controller's watch).
    pub upstreams: Store<UpstreamKey>,
    /// The UpstreamKeys as the token controller's own watch saw them: that
    /// watch updates it before it triggers the tokens naming a key, so a
    /// reconcile it causes reads the change.
    pub token_upstreams: Store<UpstreamKey>,
    /// Asks the UpstreamKey controller to recount the tokens naming a key.
    recount: mpsc::UnboundedSender<ObjectRef<UpstreamKey>>,
    /// Consecutive failures per object, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The token controller's own Secret writes, so their watch events do
    /// not wake it again.
    pub echoes: Echoes,
    /// Uids of deleted StrakeTokens whose record the revoker withdrew; the
    /// cleanup that follows reports the revocation.
    revoked_ahead: Mutex<HashSet<String>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Arc<Settings>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        tokens: Store<StrakeToken>,
        upstreams: Store<UpstreamKey>,
        recount: mpsc::UnboundedSender<ObjectRef<UpstreamKey>>,
    ) -> Self {
        Context {
            client,
            settings,
            recorder,
            metrics,
            tokens,
            upstreams,
            // Closed until `with_token_upstreams`: a reconcile without it fails.
            token_upstreams: reflector::store().0,
            recount,
            failures: Mutex::default(),
            echoes: Echoes::default(),
            revoked_ahead: Mutex::default(),
        }
    }

    /// The cache the token controller reads UpstreamKeys from.
    pub fn with_token_upstreams(mut self, store: Store<UpstreamKey>) -> Self {
        self.token_upstreams = store;
        self
    }

    /// The revoker withdrew the record of the token `uid`.
    pub fn revoked_ahead(&self, uid: &str) {
        self.revoked_ahead
            .lock()
            .expect("revoked_ahead lock")
            .insert(uid.to_string());
    }

    /// Whether the revoker withdrew the record of the token `uid` (asked
    /// once, by its cleanup).
    pub fn take_revoked_ahead(&self, uid: &str) -> bool {
        self.revoked_ahead
            .lock()
            .expect("revoked_ahead lock")
            .remove(uid)
    }

    /// Records one more failure of `key` and returns how long to wait.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("failures lock");
        let n = failures.entry(key.to_string()).or_default();
        *n = n.saturating_add(1);
        retry::backoff(*n)
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failures lock").remove(key);
    }

    /// Asks for the `status.tokens` of every UpstreamKey in `namespace` to be
    /// recounted: a token naming some of them appeared, changed or went away.
    pub fn recount_upstreams(&self, namespace: &str) {
        for uk in self.upstreams.state() {
            if uk.metadata.namespace.as_deref() == Some(namespace) {
                // A closed channel means the controllers are shutting down.
                let _ = self
                    .recount
                    .unbounded_send(ObjectRef::from_obj(uk.as_ref()));
            }
        }
    }

    /// Publishes an event; a failure is logged, never fatal.
    pub async fn notify(&self, regarding: &ObjectReference, action: &str, notice: &Notice) {
        let event = Event {
            type_: if notice.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: notice.reason.to_string(),
            note: Some(notice.note.clone()),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            warn!(%error, reason = notice.reason, "could not publish event");
        }
    }
}

/// Waits until `store` holds its initial list.
///
/// kube-runtime 5's `Store::wait_until_ready` keeps one oneshot receiver, and
/// so one waker: of several concurrent waiters only the last to poll is woken.
/// The controller itself always waits too, so a second waiter could sleep
/// forever. Re-polling on a short timeout sidesteps that.
pub async fn cache_ready<K>(store: &Store<K>, kind: &'static str) -> Result<()>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => return Err(Error::StoreClosed(kind)),
            Err(_elapsed) => {}
        }
    }
}

/// The finalizer helper's outcome, with two benign races resolved:
///
/// - adding the finalizer to a stale cached copy fails its JSON-patch `test`
///   (422, or 409): the change that made it stale is on its way as a watch
///   event, so look again shortly instead of backing off as for an error;
/// - removing it from an object whose cleanup already finished finds
///   nothing (404): it is gone, which is what the finalizer was for.
pub fn settle_finalizer(
    outcome: std::result::Result<controller::Action, finalizer::Error<Error>>,
) -> std::result::Result<controller::Action, finalizer::Error<Error>> {
    match outcome {
        Err(finalizer::Error::AddFinalizer(e)) if is_stale(&e) => {
            Ok(controller::Action::requeue(Duration::from_secs(1)))
        }
        Err(finalizer::Error::RemoveFinalizer(e)) if is_not_found(&e) => {
            Ok(controller::Action::await_change())
        }
        other => other,
    }
}

fn is_stale(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409 || status.code == 422)
}

/// `Kind/namespace/name`, the key of the failure counter.
/// The error policy both controllers share: count the failure under the
/// controller's metric label and requeue the object with its own backoff.
pub fn requeue_after_failure<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    obj: &K,
    error: &Error,
    ctx: &Context,
) -> controller::Action {
    ctx.metrics
        .reconcile_failed(controller, error.metric_label());
    let retry_in = ctx.failed(&object_key(obj));
    tracing::warn!(
        namespace = obj.meta().namespace.as_deref(),
        name = obj.meta().name.as_deref().unwrap_or_default(),
        %error,
        ?retry_in,
        "{} reconcile failed",
        K::kind(&())
    );
    controller::Action::requeue(retry_in)
}

pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Server-side applies `secret` under the operator's field manager, taking
/// over fields someone else changed by hand. Returns the resourceVersion it
/// left the Secret at.
pub async fn apply_secret(api: &Api<Secret>, secret: &Secret) -> Result<Option<String>> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let written = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(secret),
        )
        .await
        .map_err(|source| Error::ApplySecret {
            namespace: secret.metadata.namespace.clone().unwrap_or_default(),
            name,
            source: Box::new(source),
        })?;
    Ok(written.metadata.resource_version)
}

/// Deletes a Secret; one that is already gone is success (cleanup must be
/// idempotent, or a finalizer could block deletion forever). Returns whether
/// it existed.
pub async fn delete_secret(api: &Api<Secret>, namespace: &str, name: &str) -> Result<bool> {
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(source) => Err(Error::DeleteSecret {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: Box::new(source),
        }),
    }
}

/// Server-side applies a status subresource. The body names apiVersion and
/// kind: without them the API server rejects an apply patch.
pub async fn apply_status<K>(api: &Api<K>, obj: &K, status: &impl serde::Serialize) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map_err(|source| Error::PatchStatus {
        kind: K::kind(&()).into_owned(),
        namespace: obj.meta().namespace.clone().unwrap_or_default(),
        name,
        source: Box::new(source),
    })?;
    Ok(())
}

fn scoped<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Scope::All => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// Runs every controller until `shutdown`, then lets in-flight reconciles
/// finish. Marks `health` ready once every cache has its initial list.
pub async fn run(
    client: Client,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let reporter = Reporter {
        controller: REPORTER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let mut running = Vec::new();
    let mut caches = Vec::new();
    let mut usage_caches = usage::Caches {
        tokens: Vec::new(),
        upstreams: Vec::new(),
    };
    for scope in &settings.scopes {
        let (tokens, token_writer) = reflector::store::<StrakeToken>();
        let (upstreams, upstream_writer) = reflector::store::<UpstreamKey>();
        let (token_upstreams, token_upstream_writer) = reflector::store::<UpstreamKey>();
        let (recount_tx, recount_rx) = mpsc::unbounded();
        let ctx = Arc::new(
            Context::new(
                client.clone(),
                settings.clone(),
                recorder.clone(),
                metrics.clone(),
                tokens.clone(),
                upstreams.clone(),
                recount_tx,
            )
            .with_token_upstreams(token_upstreams),
        );
        usage_caches.tokens.push(tokens.clone());
        usage_caches.upstreams.push(upstreams.clone());
        running.push(revoker::run(scope, &client, ctx.clone(), shutdown.clone()).boxed());
        running.push(
            token_controller(
                scope,
                &client,
                ctx.clone(),
                (token_writer, token_upstream_writer),
                shutdown.clone(),
            )
            .boxed(),
        );
        running.push(
            upstream_controller(
                scope,
                &client,
                ctx,
                upstream_writer,
                recount_rx,
                shutdown.clone(),
            )
            .boxed(),
        );
        caches.push(async move {
            cache_ready(&tokens, "StrakeToken").await?;
            cache_ready(&upstreams, "UpstreamKey").await
        });
    }
    tokio::spawn(async move {
        if futures::future::try_join_all(caches).await.is_ok() {
            info!("caches synced");
            health.set_running();
        }
    });
    running.push(
        usage::run(
            client.clone(),
            settings.clone(),
            metrics.clone(),
            usage_caches,
            shutdown.clone(),
        )
        .boxed(),
    );
    running.push(orphans::run(client, settings, metrics, shutdown).boxed());
    futures::future::join_all(running).await;
}

/// The graceful-shutdown trigger a controller wants: a `Sync` future.
fn on_shutdown(shutdown: CancellationToken) -> impl Future<Output = ()> + Send + Sync + 'static {
    shutdown.cancelled_owned().shared()
}

fn token_controller(
    scope: &Scope,
    client: &Client,
    ctx: Arc<Context>,
    (writer, upstream_writer): (
        reflector::store::Writer<StrakeToken>,
        reflector::store::Writer<UpstreamKey>,
    ),
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let settings = ctx.settings.clone();
    let tokens = ctx.tokens.clone();
    let trigger = watcher(
        scoped::<StrakeToken>(client, scope),
        watcher::Config::default(),
    )
    .backoff(strake_crds::watch::backoff())
    .modify(|t| t.managed_fields_mut().clear())
    .reflect(writer)
    .applied_objects()
    .predicate_filter(
        predicates::generation
            .combine(predicates::finalizers)
            .combine(|t: &StrakeToken| {
                Some(budget::trigger_hash(
                    t.status.as_ref().and_then(|s| s.budget.as_ref()),
                ))
            }),
        Default::default(),
    );
    let upstream_changes = relevant_upstream_changes(
        watcher(
            scoped::<UpstreamKey>(client, scope),
            watcher::Config::default(),
        )
        .backoff(strake_crds::watch::backoff())
        .modify(|uk| uk.managed_fields_mut().clear())
        .reflect(upstream_writer),
    );
    let published_tokens = without_echoes(
        watcher(
            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &settings.proxy_namespace),
            watcher::Config::default().labels(&Role::Token.selector()),
        )
        .backoff(strake_crds::watch::backoff()),
        ctx.clone(),
    );
    let held_secrets = without_echoes(
        watcher(
            scoped::<PartialObjectMeta<Secret>>(client, scope),
            watcher::Config::default().labels(objects::MANAGED_SELECTOR),
        )
        .backoff(strake_crds::watch::backoff()),
        ctx.clone(),
    );
    let concurrency = settings.token_concurrency;
    Controller::for_stream(trigger, ctx.tokens.clone())
        .owns_stream(held_secrets)
        .watches_stream(upstream_changes, move |uk| {
            let namespace = uk.metadata.namespace.unwrap_or_default();
            let name = uk.metadata.name.unwrap_or_default();
            tokens
                .state()
                .into_iter()
                .filter(|t| {
                    t.metadata.namespace.as_deref() == Some(namespace.as_str())
                        && t.spec.upstreams.iter().any(|u| u.0 == name)
                })
                .map(|t| ObjectRef::from_obj(t.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(published_tokens, move |secret| {
            published_source(&secret.metadata, Role::Token, &settings)
        })
        .trigger_backoff(strake_crds::watch::backoff())
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(strake_token::reconcile, strake_token::error_policy, ctx)
        .for_each(|result| async move { log_outcome("StrakeToken", result) })
}

fn upstream_controller(
    scope: &Scope,
    client: &Client,
    ctx: Arc<Context>,
    writer: reflector::store::Writer<UpstreamKey>,
    recount: mpsc::UnboundedReceiver<ObjectRef<UpstreamKey>>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let settings = ctx.settings.clone();
    let upstreams = ctx.upstreams.clone();
    let trigger = watcher(
        scoped::<UpstreamKey>(client, scope),
        watcher::Config::default(),
    )
    .backoff(strake_crds::watch::backoff())
    .modify(|uk| uk.managed_fields_mut().clear())
    .reflect(writer)
    .applied_objects()
    .predicate_filter(
        predicates::generation
            .combine(predicates::finalizers)
            .combine(|uk: &UpstreamKey| {
                Some(budget::trigger_hash(
                    uk.status.as_ref().and_then(|s| s.budget.as_ref()),
                ))
            }),
        Default::default(),
    );
    // Metadata only, and only the Secrets that opted in: the operator never
    // caches Secrets' contents, nor hears of every Secret in the cluster. The
    // API server reports a Secret that gains the label as added and one that
    // loses it as deleted, so both reach the UpstreamKeys naming it.
    let key_secrets = watcher(
        scoped::<PartialObjectMeta<Secret>>(client, scope),
        watcher::Config::default().labels(UPSTREAM_KEY_SECRET_SELECTOR),
    )
    .backoff(strake_crds::watch::backoff())
    .touched_objects();
    let published_upstreams = watcher(
        Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &settings.proxy_namespace),
        watcher::Config::default().labels(&Role::Upstream.selector()),
    )
    .backoff(strake_crds::watch::backoff())
    .touched_objects();
    Controller::for_stream(trigger, ctx.upstreams.clone())
        .watches_stream(key_secrets, move |secret| {
            let namespace = secret.metadata.namespace.unwrap_or_default();
            let name = secret.metadata.name.unwrap_or_default();
            upstreams
                .state()
                .into_iter()
                .filter(|uk| {
                    uk.metadata.namespace.as_deref() == Some(namespace.as_str())
                        && uk.spec.secret_ref.name == name
                })
                .map(|uk| ObjectRef::from_obj(uk.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(published_upstreams, move |secret| {
            published_source(&secret.metadata, Role::Upstream, &settings)
        })
        .reconcile_on(recount)
        .trigger_backoff(strake_crds::watch::backoff())
        .with_config(controller::Config::default().concurrency(4))
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(upstream_key::reconcile, upstream_key::error_policy, ctx)
        .for_each(|result| async move { log_outcome("UpstreamKey", result) })
}

/// Watch events of Secrets the token controller writes, as triggers, less
/// the echoes of its own writes ([`Echoes`]).
fn without_echoes(
    events: impl Stream<Item = Result<watcher::Event<PartialObjectMeta<Secret>>, watcher::Error>>
    + Send
    + 'static,
    ctx: Arc<Context>,
) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    events.filter_map(move |event| {
        let at = |m: &PartialObjectMeta<Secret>| {
            (
                m.metadata.namespace.clone().unwrap_or_default(),
                m.metadata.name.clone().unwrap_or_default(),
            )
        };
        let trigger = match event {
            Err(error) => Some(Err(error)),
            Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) => {
                let (namespace, name) = at(&m);
                let echo =
                    ctx.echoes
                        .is_echo(&namespace, &name, m.metadata.resource_version.as_deref());
                (!echo).then_some(Ok(m))
            }
            Ok(watcher::Event::Delete(m)) => {
                let (namespace, name) = at(&m);
                ctx.echoes.forget(&namespace, &name);
                Some(Ok(m))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
        };
        futures::future::ready(trigger)
    })
}

/// What a token's phase can depend on in an UpstreamKey: which object it
/// is, its spec, whether it is Ready, whether it is going away. Not
/// `status.tokens`, which changes with every token naming the key: reacting to
/// it would reconcile every such token on every token creation.
fn upstream_trigger_hash(uk: &UpstreamKey) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(
        &(
            &uk.metadata.uid,
            uk.metadata.generation,
            upstream::is_ready(uk),
            uk.metadata.deletion_timestamp.is_some(),
        ),
        &mut h,
    );
    std::hash::Hasher::finish(&h)
}

/// UpstreamKey watch events, reduced to the objects whose
/// [`upstream_trigger_hash`] changed; deletions always pass.
fn relevant_upstream_changes(
    events: impl Stream<Item = Result<watcher::Event<UpstreamKey>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<UpstreamKey, watcher::Error>> + Send + 'static {
    let mut seen: HashMap<ObjectRef<UpstreamKey>, u64> = HashMap::new();
    events.filter_map(move |event| {
        let relevant = match event {
            Err(error) => Some(Err(error)),
            Ok(watcher::Event::Apply(uk) | watcher::Event::InitApply(uk)) => {
                let hash = upstream_trigger_hash(&uk);
                (seen.insert(ObjectRef::from_obj(&uk), hash) != Some(hash)).then_some(Ok(uk))
            }
            Ok(watcher::Event::Delete(uk)) => {
                seen.remove(&ObjectRef::from_obj(&uk));
                Some(Ok(uk))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
        };
        futures::future::ready(relevant)
    })
}

/// The resource a proxy-namespace Secret of `role` was published for, when it
/// is in a watched namespace.
fn published_source<K>(
    meta: &kube::api::ObjectMeta,
    role: Role,
    settings: &Settings,
) -> Option<ObjectRef<K>>
where
    K: Resource<DynamicType = ()>,
{
    let (found, source) = objects::labelled_source(meta)?;
    (found == role && settings.covers(&source.namespace))
        .then(|| ObjectRef::new(&source.name).within(&source.namespace))
}

fn log_outcome<K: Resource, E: std::fmt::Display, Q: std::fmt::Display>(
    kind: &str,
    result: Result<(ObjectRef<K>, controller::Action), controller::Error<E, Q>>,
) where
    K::DynamicType: std::fmt::Debug,
{
    match result {
        Ok((obj, _)) => {
            debug!(kind, namespace = obj.namespace.as_deref(), name = %obj.name, "reconciled")
        }
        // Already logged (and counted) by the error policy.
        Err(controller::Error::ReconcilerFailed(..)) => {}
        // A trigger for an object that has just been deleted: nothing to do.
        Err(controller::Error::ObjectNotFound(obj)) => {
            debug!(kind, object = %obj, "trigger for an object not in the cache")
        }
        Err(error) => warn!(kind, %error, "controller"),
    }
}

/// An `ObjectReference` for events about `obj`.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

/// `(namespace, name)` of `obj`, the key of the per-object gauges.
pub fn gauge_key<K: ResourceExt>(obj: &K) -> (String, String) {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}
