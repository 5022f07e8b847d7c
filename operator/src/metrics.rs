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
//! | `strake_operator_revocations_total` | counter | `outcome` (`ok`, `error`): records withdrawn by the revoker, ahead of the reconcile queue |
//! | `strake_operator_leader` | gauge | |
//! | `strake_operator_usage_scrapes_total` | counter | `outcome` (`ok`, `error`) |
//! | `strake_operator_usage_replicas` | gauge | |
//! | `strake_operator_usage_status_writes_total` | counter | `kind`, `outcome` (`ok`, `conflict`, `error`) |
//! | `strake_operator_usage_pending_writes` | gauge | |
//! | `strake_operator_token_final_spend_usd` | gauge | `namespace`, `name`, `identity` |
//! | `strake_operator_token_final_requests` | gauge | `namespace`, `name`, `identity` |
//! | `strake_operator_token_final_input_tokens` | gauge | `namespace`, `name`, `identity` |
//! | `strake_operator_token_final_output_tokens` | gauge | `namespace`, `name`, `identity` |
//! | `strake_operator_leadership_lost_total` | counter | |
//!
//! The `token_final_*` series hold a deleted StrakeToken's lifetime usage
//! for [`FINAL_USAGE_RETENTION`] after its deletion, then disappear.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

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
struct TokenLabels {
    /// `namespace/name`, as the proxy's per-token series name it (a
    /// `namespace` label would clash with the scrape target's).
    token: String,
    identity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinalLabels {
    namespace: String,
    name: String,
    identity: String,
}

/// How long a deleted token's final usage stays on `/metrics`: long enough
/// for a Prometheus scraping every minute to take it 15 times over, and to
/// ride out a Prometheus restart; short enough that churn does not grow the
/// page without bound.
pub const FINAL_USAGE_RETENTION: Duration = Duration::from_secs(15 * 60);

/// A deleted token's lifetime usage, for chargeback.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FinalUsage {
    pub spend_usd: f64,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

type FloatGauge = Gauge<f64, AtomicU64>;

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
    revocations: Family<OutcomeLabels, Counter>,
    leader: Gauge,
    usage_scrapes: Family<OutcomeLabels, Counter>,
    usage_replicas: Gauge,
    usage_writes: Family<WriteLabels, Counter>,
    usage_pending: Gauge,
    final_spend: Family<FinalLabels, FloatGauge>,
    final_requests: Family<FinalLabels, Gauge>,
    final_input: Family<FinalLabels, Gauge>,
    final_output: Family<FinalLabels, Gauge>,
    /// When each final series was set, to drop it after the retention.
    finals: Mutex<HashMap<FinalLabels, Instant>>,
    leadership_lost: Counter,
    token_phases: Mutex<HashMap<ObjectKey, Phase>>,
    token_expiry: Family<TokenLabels, Gauge>,
    /// The labels each token's expiry series carries, to remove it.
    token_expiry_labels: Mutex<HashMap<ObjectKey, TokenLabels>>,
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
        let revocations = Family::<OutcomeLabels, Counter>::default();
        let leader = Gauge::default();
        let token_expiry = Family::<TokenLabels, Gauge>::default();
        registry.register(
            "token_expiry_timestamp_seconds",
            "When each StrakeToken with spec.expiresAt expires (Unix seconds); on the leader",
            token_expiry.clone(),
        );
        let leadership_lost = Counter::default();
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
            "revocations",
            "Deleted StrakeTokens' proxy records withdrawn by the revoker, ahead of the reconcile queue",
            revocations.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica runs the controllers",
            leader.clone(),
        );
        let usage_scrapes = Family::<OutcomeLabels, Counter>::default();
        let usage_replicas = Gauge::default();
        let usage_writes = Family::<WriteLabels, Counter>::default();
        let usage_pending = Gauge::default();
        let final_spend = Family::<FinalLabels, FloatGauge>::default();
        let final_requests = Family::<FinalLabels, Gauge>::default();
        let final_input = Family::<FinalLabels, Gauge>::default();
        let final_output = Family::<FinalLabels, Gauge>::default();
        registry.register(
            "usage_scrapes",
            "Usage reports requested from proxy replicas",
            usage_scrapes.clone(),
        );
        registry.register(
            "usage_replicas",
            "Proxy replicas that answered the last usage collection",
            usage_replicas.clone(),
        );
        registry.register(
            "usage_status_writes",
            "Usage status writes (conflict: the resource changed since it was read; retried next round)",
            usage_writes.clone(),
        );
        registry.register(
            "usage_pending_writes",
            "Resources whose new usage waits for the write budget after the last collection",
            usage_pending.clone(),
        );
        registry.register(
            "token_final_spend_usd",
            "Lifetime spend of a deleted StrakeToken, kept for a while after its deletion",
            final_spend.clone(),
        );
        registry.register(
            "token_final_requests",
            "Lifetime requests of a deleted StrakeToken, kept for a while after its deletion",
            final_requests.clone(),
        );
        registry.register(
            "token_final_input_tokens",
            "Lifetime input tokens of a deleted StrakeToken, kept for a while after its deletion",
            final_input.clone(),
        );
        registry.register(
            "token_final_output_tokens",
            "Lifetime output tokens of a deleted StrakeToken, kept for a while after its deletion",
            final_output.clone(),
        );
        registry.register(
            "leadership_lost",
            "Times this replica lost the Lease while leading and went back to campaigning",
            leadership_lost.clone(),
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
            revocations,
            leader,
            usage_scrapes,
            usage_replicas,
            usage_writes,
            usage_pending,
            final_spend,
            final_requests,
            final_input,
            final_output,
            finals: Mutex::default(),
            leadership_lost,
            token_phases: Mutex::default(),
            token_expiry,
            token_expiry_labels: Mutex::default(),
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

    /// Records when a token expires; `None` (no expiry, or deleted) drops
    /// its series.
    pub fn set_token_expiry(&self, key: ObjectKey, identity: &str, expires_at: Option<i64>) {
        let mut all = self.token_expiry_labels.lock().expect("metrics lock");
        let labels = TokenLabels {
            token: format!("{}/{}", key.0, key.1),
            identity: identity.to_string(),
        };
        if let Some(old) = all
            .get(&key)
            .filter(|old| expires_at.is_none() || **old != labels)
        {
            self.token_expiry.remove(old);
        }
        match expires_at {
            Some(at) => {
                self.token_expiry.get_or_create(&labels).set(at);
                all.insert(key, labels);
            }
            None => {
                all.remove(&key);
            }
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

    pub fn revoked_ahead(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.revocations
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn usage_scraped(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.usage_scrapes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn usage_round(&self, replicas: usize, pending: usize) {
        self.usage_replicas
            .set(i64::try_from(replicas).unwrap_or(i64::MAX));
        self.usage_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    pub fn usage_written(&self, kind: &'static str, outcome: &'static str) {
        self.usage_writes
            .get_or_create(&WriteLabels { kind, outcome })
            .inc();
    }

    /// Publishes a deleted token's lifetime usage until
    /// [`FINAL_USAGE_RETENTION`] has passed.
    pub fn set_final_usage(&self, key: &ObjectKey, identity: &str, usage: &FinalUsage) {
        let labels = FinalLabels {
            namespace: key.0.clone(),
            name: key.1.clone(),
            identity: identity.to_string(),
        };
        self.final_spend.get_or_create(&labels).set(usage.spend_usd);
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.final_requests
            .get_or_create(&labels)
            .set(int(usage.requests));
        self.final_input
            .get_or_create(&labels)
            .set(int(usage.input_tokens));
        self.final_output
            .get_or_create(&labels)
            .set(int(usage.output_tokens));
        self.finals
            .lock()
            .expect("metrics lock")
            .insert(labels, Instant::now());
        self.expire_final_usage(Instant::now());
    }

    /// Drops the final-usage series older than the retention.
    fn expire_final_usage(&self, now: Instant) {
        let mut finals = self.finals.lock().expect("metrics lock");
        finals.retain(|labels, set_at| {
            let keep = now.saturating_duration_since(*set_at) < FINAL_USAGE_RETENTION;
            if !keep {
                self.final_spend.remove(labels);
                self.final_requests.remove(labels);
                self.final_input.remove(labels);
                self.final_output.remove(labels);
            }
            keep
        });
    }

    pub fn leadership_lost(&self) {
        self.leadership_lost.inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        self.expire_final_usage(Instant::now());
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
        m.usage_scraped(true);
        m.usage_written("StrakeToken", "conflict");
        m.set_final_usage(
            &("a".into(), "alice".into()),
            "alice@example.com",
            &FinalUsage {
                spend_usd: 1.25,
                requests: 3,
                input_tokens: 30,
                output_tokens: 12,
            },
        );
        m.leadership_lost();
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
            "strake_operator_usage_scrapes_total{outcome=\"ok\"} 1",
            "strake_operator_usage_status_writes_total{kind=\"StrakeToken\",outcome=\"conflict\"} 1",
            "strake_operator_token_final_spend_usd{namespace=\"a\",name=\"alice\",identity=\"alice@example.com\"} 1.25",
            "strake_operator_token_final_requests{namespace=\"a\",name=\"alice\",identity=\"alice@example.com\"} 3",
            "strake_operator_leadership_lost_total 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Past the retention the final series are gone.
        m.expire_final_usage(Instant::now() + FINAL_USAGE_RETENTION);
        assert!(!m.encode().contains("token_final_spend_usd{"));
        m.set_token_phase(("a".into(), "x".into()), None);
        assert!(
            m.encode()
                .contains("strake_operator_tokens{phase=\"Active\"} 0")
        );
    }

    #[test]
    fn each_tokens_expiry_is_a_series_until_it_has_none() {
        let m = Metrics::new();
        let key = ("team-a".to_string(), "alice".to_string());
        m.set_token_expiry(key.clone(), "alice@example.com", Some(1_800_000_000));
        m.set_token_expiry(("team-a".into(), "bob".into()), "bob@example.com", None);
        let series = "strake_operator_token_expiry_timestamp_seconds{token=\"team-a/alice\",identity=\"alice@example.com\"} 1800000000";
        assert!(m.encode().contains(series), "{}", m.encode());
        assert!(!m.encode().contains("team-a/bob"));
        // A new identity moves the series; no expiry drops it.
        m.set_token_expiry(key.clone(), "alice@corp.example", Some(1_800_000_000));
        assert!(!m.encode().contains("alice@example.com"));
        assert!(
            m.encode()
                .contains("identity=\"alice@corp.example\"} 1800000000")
        );
        m.set_token_expiry(key, "alice@corp.example", None);
        assert!(!m.encode().contains("team-a/alice"));
    }

    #[test]
    fn the_charts_alert_rules_name_metrics_the_operator_exports() {
        let rules = include_str!("../../charts/strake/templates/prometheusrule.yaml");
        let m = Metrics::new();
        m.set_token_expiry(("a".into(), "x".into()), "x@example.com", Some(1));
        let text = m.encode();
        let used: Vec<&str> = rules
            .lines()
            .filter(|l| l.trim_start().starts_with("expr:"))
            .flat_map(|l| {
                l.match_indices("strake_operator_")
                    .map(move |(i, _)| &l[i..])
            })
            .map(|m| {
                &m[..m
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(m.len())]
            })
            .collect();
        assert!(!used.is_empty());
        for name in used {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "the chart's alerts use {name}, which the operator does not export"
            );
        }
    }
}
