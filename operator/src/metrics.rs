//! Prometheus metrics, served on the admin port at `/metrics`.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `strake_operator_reconciles_total` | counter | `controller` |
//! | `strake_operator_reconcile_errors_total` | counter | `controller`, `reason` |
//! | `strake_operator_reconcile_duration_seconds` | histogram | `controller` |
//! | `strake_operator_tokens` | gauge | `phase` |
//! | `strake_operator_upstream_keys_ready` | gauge | |
//! | `strake_operator_orphans_deleted_total` | counter | `role` |
//! | `strake_operator_leader` | gauge | |

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use strake_crds::Phase;

/// The two controllers, as metric label values.
pub const STRAKE_TOKEN: &str = "straketoken";
pub const UPSTREAM_KEY: &str = "upstreamkey";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

/// `namespace/name` of a resource, the key of the per-object gauges.
pub type ObjectKey = (String, String);

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    tokens: Family<PhaseLabels, Gauge>,
    upstream_keys_ready: Gauge,
    orphans_deleted: Family<RoleLabels, Counter>,
    leader: Gauge,
    token_phases: Mutex<HashMap<ObjectKey, Phase>>,
    upstream_ready: Mutex<HashMap<ObjectKey, bool>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("strake_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 12))) as fn() -> Histogram,
        );
        let tokens = Family::<PhaseLabels, Gauge>::default();
        let upstream_keys_ready = Gauge::default();
        let orphans_deleted = Family::<RoleLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciliations run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by failure site",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            duration.clone(),
        );
        registry.register("tokens", "StrakeTokens by phase", tokens.clone());
        registry.register(
            "upstream_keys_ready",
            "UpstreamKeys that are Ready (published to the proxy)",
            upstream_keys_ready.clone(),
        );
        registry.register(
            "orphans_deleted",
            "Proxy-namespace Secrets deleted because their resource no longer exists",
            orphans_deleted.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica runs the controllers",
            leader.clone(),
        );
        for phase in Phase::ALL {
            tokens
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(0);
        }
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            tokens,
            upstream_keys_ready,
            orphans_deleted,
            leader,
            token_phases: Mutex::default(),
            upstream_ready: Mutex::default(),
        }
    }

    /// Counts a reconcile and times it until the returned guard drops.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            histogram: self
                .duration
                .get_or_create(&ControllerLabels { controller })
                .clone(),
            start: Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, controller: &'static str, reason: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { controller, reason })
            .inc();
    }

    /// Records a token's phase; `None` forgets the token (it was deleted).
    pub fn set_token_phase(&self, key: ObjectKey, phase: Option<Phase>) {
        let mut phases = self.token_phases.lock().expect("metrics lock");
        let old = match phase {
            Some(p) => phases.insert(key, p),
            None => phases.remove(&key),
        };
        if old == phase {
            return;
        }
        if let Some(old) = old {
            self.tokens
                .get_or_create(&PhaseLabels {
                    phase: old.as_str(),
                })
                .dec();
        }
        if let Some(new) = phase {
            self.tokens
                .get_or_create(&PhaseLabels {
                    phase: new.as_str(),
                })
                .inc();
        }
    }

    /// Records whether an UpstreamKey is Ready; `None` forgets it.
    pub fn set_upstream_ready(&self, key: ObjectKey, ready: Option<bool>) {
        let mut all = self.upstream_ready.lock().expect("metrics lock");
        match ready {
            Some(r) => all.insert(key, r),
            None => all.remove(&key),
        };
        let count = all.values().filter(|r| **r).count();
        self.upstream_keys_ready
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn orphan_deleted(&self, role: &'static str) {
        self.orphans_deleted
            .get_or_create(&RoleLabels { role })
            .inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Observes the reconcile's duration when dropped.
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_documented_names() {
        let m = Metrics::new();
        drop(m.reconcile(STRAKE_TOKEN));
        m.reconcile_failed(STRAKE_TOKEN, "apply_secret");
        m.set_token_phase(("a".into(), "x".into()), Some(Phase::Active));
        m.set_token_phase(("a".into(), "y".into()), Some(Phase::Active));
        m.set_token_phase(("a".into(), "y".into()), Some(Phase::Suspended));
        m.set_upstream_ready(("a".into(), "openai".into()), Some(true));
        m.orphan_deleted("token");
        m.set_leader(true);
        let text = m.encode();
        for line in [
            "strake_operator_reconciles_total{controller=\"straketoken\"} 1",
            "strake_operator_reconcile_errors_total{controller=\"straketoken\",reason=\"apply_secret\"} 1",
            "strake_operator_reconcile_duration_seconds_count{controller=\"straketoken\"} 1",
            "strake_operator_tokens{phase=\"Active\"} 1",
            "strake_operator_tokens{phase=\"Suspended\"} 1",
            "strake_operator_tokens{phase=\"Expired\"} 0",
            "strake_operator_upstream_keys_ready 1",
            "strake_operator_orphans_deleted_total{role=\"token\"} 1",
            "strake_operator_leader 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        m.set_token_phase(("a".into(), "x".into()), None);
        assert!(
            m.encode()
                .contains("strake_operator_tokens{phase=\"Active\"} 0")
        );
    }
}
