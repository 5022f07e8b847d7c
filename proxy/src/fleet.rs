//! How many proxy replicas share each token's per-minute limits, and each
//! replica's share of them.
//!
//! A replica admits `limit / live_replicas()` per minute, so N replicas
//! behind a balancer admit the limit between them, without talking to
//! each other on the request path. The count comes from one of:
//!
//! - `--replica-service NAME` (kube mode; the chart sets it to the proxy's
//!   admin Service): the serving endpoints of that Service's EndpointSlices,
//!   watched like the token Secrets, so a change arrives within one watch
//!   event. A replica counts while it is ready, and while it terminates but
//!   still serves (it drains with the share it had).
//! - `--replicas N`: a fixed count (file mode, or hosts outside a cluster).
//! - neither: 1, every replica applies the whole limit.
//!
//! A stale count errs in both directions until the next event: a replica
//! gone leaves the others admitting (N-1)/N of the limit; a replica added
//! admits its share while the others still hold theirs (overshoot of at
//! most one share per added replica, plus the new replica's full bucket).
//! If the watch fails, the last count stays in force and
//! `strake_replica_watch_errors_total` counts the failures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::metrics::Metrics;

/// The live replica count, shared by every request. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Fleet {
    replicas: Arc<AtomicU32>,
}

impl Fleet {
    /// A fleet of `replicas` (0 counts as 1).
    pub fn fixed(replicas: u32) -> Fleet {
        Fleet {
            replicas: Arc::new(AtomicU32::new(replicas.max(1))),
        }
    }

    /// How many replicas share each limit now; always at least 1.
    pub fn live_replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed).max(1)
    }

    pub(crate) fn set(&self, replicas: u32) {
        self.replicas.store(replicas.max(1), Ordering::Relaxed);
    }
}

/// One replica's part of a per-minute `limit` shared by `replicas`.
///
/// Not rounded: the buckets hold fractions, so the shares of all replicas
/// add up to the limit exactly, whatever N. A limit smaller than N gives
/// each replica less than one request a minute; the limiter then lets a
/// bucket hold one whole request (else none would ever pass) while it
/// still refills at the share, so the rate across replicas stays the
/// limit and only a first burst may reach N requests instead of `limit`.
pub fn share(limit: u32, replicas: u32) -> f64 {
    f64::from(limit) / f64::from(replicas.max(1))
}

/// How many distinct replicas the slices list as serving. An endpoint is
/// one replica however many slices name it (a dual-stack pod is in an
/// IPv4 and an IPv6 slice; a relist briefly holds a slice twice): it is
/// known by its target's uid, else its first address.
pub fn count_serving<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> u32 {
    let mut seen = BTreeSet::new();
    for slice in slices {
        for endpoint in slice.endpoints.iter().flatten() {
            let c = endpoint.conditions.as_ref();
            // Unset conditions mean ready (the API's own reading); a
            // terminating endpoint counts while it still serves.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            if !(ready || serving) {
                continue;
            }
            let key = match endpoint.target_ref.as_ref().and_then(|r| r.uid.clone()) {
                Some(uid) => uid,
                None => match endpoint.addresses.first() {
                    Some(a) => a.clone(),
                    None => continue,
                },
            };
            seen.insert(key);
        }
    }
    u32::try_from(seen.len()).unwrap_or(u32::MAX)
}

/// The slices seen so far, and the relist being gathered.
#[derive(Debug, Default)]
pub struct SliceState {
    slices: BTreeMap<String, EndpointSlice>,
    relist: Option<BTreeMap<String, EndpointSlice>>,
}

fn name_of(slice: &EndpointSlice) -> String {
    slice.metadata.name.clone().unwrap_or_default()
}

/// The pure step of the watch: applies one event, and returns the replica
/// count when it is known anew (not while a relist is still arriving).
pub fn apply_event(state: &mut SliceState, event: Event<EndpointSlice>) -> Option<u32> {
    match event {
        Event::Init => {
            state.relist = Some(BTreeMap::new());
            None
        }
        Event::InitApply(slice) => {
            state
                .relist
                .get_or_insert_with(BTreeMap::new)
                .insert(name_of(&slice), slice);
            None
        }
        Event::InitDone => {
            state.slices = state.relist.take().unwrap_or_default();
            Some(count_serving(state.slices.values()))
        }
        Event::Apply(slice) => {
            state.slices.insert(name_of(&slice), slice);
            Some(count_serving(state.slices.values()))
        }
        Event::Delete(slice) => {
            state.slices.remove(&name_of(&slice));
            Some(count_serving(state.slices.values()))
        }
    }
}

/// Watches the EndpointSlices of `service` until `shutdown` fires: the
/// thin loop around [`apply_event`].
pub async fn watch(
    fleet: Fleet,
    metrics: &Metrics,
    client: kube::Client,
    namespace: String,
    service: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
    let config =
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
    let mut events = watcher::watcher(api, config)
        .backoff(strake_crds::watch::backoff())
        .boxed();
    let mut state = SliceState::default();
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = shutdown.changed() => return,
        };
        let Some(event) = event else {
            tracing::error!(%service, "the EndpointSlice watch ended; the replica count stays as it was");
            return;
        };
        match event {
            Ok(event) => {
                if let Some(count) = apply_event(&mut state, event) {
                    let before = fleet.live_replicas();
                    fleet.set(count);
                    metrics.live_replicas.set(i64::from(fleet.live_replicas()));
                    if before != fleet.live_replicas() {
                        tracing::info!(%service, serving = count, replicas = fleet.live_replicas(), "replica count changed; rate limits are shared by it");
                    }
                }
            }
            Err(e) => {
                metrics.replica_watch_errors.inc();
                tracing::warn!(error = %e, %service, replicas = fleet.live_replicas(), "watching EndpointSlices failed; keeping the last replica count and retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(name: &str, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": name},
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    #[test]
    fn shares_add_up_to_the_limit_for_any_replica_count() {
        for limit in [1u32, 2, 3, 7, 60, 1000, 200_000] {
            for n in 1u32..=12 {
                let total: f64 = (0..n).map(|_| share(limit, n)).sum();
                assert!(
                    (total - f64::from(limit)).abs() < 1e-6,
                    "{limit} over {n}: {total}"
                );
            }
        }
        assert_eq!(share(60, 0), 60.0, "no count is one replica");
        assert_eq!(share(3, 2), 1.5);
        assert_eq!(share(1, 4), 0.25);
    }

    #[test]
    fn a_fleet_is_never_empty() {
        let f = Fleet::fixed(0);
        assert_eq!(f.live_replicas(), 1);
        f.set(3);
        assert_eq!(f.clone().live_replicas(), 3);
        f.set(0);
        assert_eq!(f.live_replicas(), 1);
    }

    #[test]
    fn serving_endpoints_count_once_each() {
        let a = slice(
            "a",
            json!([
                {"addresses": ["10.0.0.1"], "targetRef": {"uid": "pod-1"}},
                {"addresses": ["10.0.0.2"], "targetRef": {"uid": "pod-2"}, "conditions": {"ready": true}},
                // Draining but still serving: counts.
                {"addresses": ["10.0.0.3"], "targetRef": {"uid": "pod-3"},
                 "conditions": {"ready": false, "serving": true, "terminating": true}},
                // Not ready (starting, or failing its probe): does not.
                {"addresses": ["10.0.0.4"], "targetRef": {"uid": "pod-4"}, "conditions": {"ready": false}},
                {"addresses": ["10.0.0.5"], "conditions": {"ready": false, "serving": false, "terminating": true}},
                // No uid: known by its address.
                {"addresses": ["10.0.0.6"]},
            ]),
        );
        // pod-1's IPv6 slice, and a copy of slice a during a relist.
        let b = slice(
            "b",
            json!([{"addresses": ["fd00::1"], "targetRef": {"uid": "pod-1"}}]),
        );
        assert_eq!(count_serving([&a]), 4);
        assert_eq!(count_serving([&a, &b, &a]), 4);
        assert_eq!(count_serving([]), 0);
    }

    #[test]
    fn the_watch_follows_a_list_changes_deletes_and_a_relist() {
        let mut s = SliceState::default();
        let two = slice(
            "x",
            json!([{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]),
        );
        let one_down = slice(
            "x",
            json!([{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"], "conditions": {"ready": false}}]),
        );
        let other = slice("y", json!([{"addresses": ["10.0.0.3"]}]));
        assert_eq!(apply_event(&mut s, Event::Init), None);
        assert_eq!(apply_event(&mut s, Event::InitApply(two.clone())), None);
        assert_eq!(apply_event(&mut s, Event::InitApply(other.clone())), None);
        assert_eq!(apply_event(&mut s, Event::InitDone), Some(3));
        assert_eq!(apply_event(&mut s, Event::Apply(one_down)), Some(2));
        assert_eq!(apply_event(&mut s, Event::Delete(other)), Some(1));
        // A relist replaces what was known; until it is done the old count stands.
        assert_eq!(apply_event(&mut s, Event::Init), None);
        assert_eq!(apply_event(&mut s, Event::InitApply(two)), None);
        assert_eq!(apply_event(&mut s, Event::InitDone), Some(2));
        assert_eq!(apply_event(&mut s, Event::Init), None);
        assert_eq!(apply_event(&mut s, Event::InitDone), Some(0));
    }
}
