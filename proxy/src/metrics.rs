//! Prometheus metrics, served on the admin port at `/metrics`.
//!
//! Per-token series are resolved once and cached in the index entry (see
//! [`TokenMetrics`]), so the request path increments atomics instead of
//! hashing label sets. Series of a deleted token are removed with it.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets, seconds: sub-millisecond (proxy overhead, errors) up to
/// ten minutes (long generations).
const LATENCY_BUCKETS: [f64; 19] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    identity: String,
    token: String,
    upstream: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    identity: String,
    token: String,
    upstream: String,
}

/// A token's series for one model. The model label's values per token are
/// capped (see [`crate::spend`]), so a client cannot mint series at will.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    identity: String,
    token: String,
    upstream: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnpricedLabels {
    identity: String,
    token: String,
    upstream: String,
    model: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamStatusLabels {
    upstream: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: u32,
}

type HistogramFamily = Family<UpstreamLabels, Histogram, fn() -> Histogram>;

/// A counter of US dollars.
pub type UsdCounter = Counter<f64, AtomicU64>;

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    input_tokens: Family<TokenLabels, Counter>,
    output_tokens: Family<TokenLabels, Counter>,
    cached_input_tokens: Family<TokenLabels, Counter>,
    cache_write_tokens: Family<TokenLabels, Counter>,
    spend: Family<ModelLabels, UsdCounter>,
    unpriced: Family<UnpricedLabels, Counter>,
    duration: HistogramFamily,
    ttfb: HistogramFamily,
    auth_failures: Family<ReasonLabels, Counter>,
    upstream_key_rejections: Family<UpstreamStatusLabels, Counter>,
    rejected_records: Family<KindLabels, Counter>,
    pub index_tokens: Gauge,
    pub index_upstreams: Gauge,
    pub config_reloads: Counter,
    pub config_reload_failures: Counter,
    /// 1 while the configuration in force is the latest one seen; 0 while
    /// a newer config file is refused (file mode).
    pub config_last_reload_successful: Gauge,
    pub config_last_reload_success_timestamp: Gauge,
    pub watch_errors: Counter,
    /// The replicas sharing each token's rate limits.
    pub live_replicas: Gauge,
    pub replica_watch_errors: Counter,
    /// Fetches of an issuer's signing keys (federated tokens), and those
    /// that failed (the last good set keeps serving meanwhile).
    pub federated_key_fetches: Counter,
    pub federated_key_fetch_failures: Counter,
    pub client_connections: Gauge,
    pub client_connections_timed_out: Counter,
    pub client_connection_limit_waits: Counter,
    pub accept_errors: Counter,
    pub accept_warnings_suppressed: Counter,
    pub file_descriptor_limit: Gauge,
    worker_connections: Family<WorkerLabels, Counter>,
}

/// The series of one (token, upstream) pair, cached in the token's index entry.
#[derive(Clone, Debug)]
pub struct TokenMetrics {
    requests: [Counter; 5],
    pub input_tokens: Counter,
    pub output_tokens: Counter,
    pub cached_input_tokens: Counter,
    pub cache_write_tokens: Counter,
}

impl TokenMetrics {
    pub fn request(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
    }
}

/// The series of one upstream, cached in its table entry.
#[derive(Clone, Debug)]
pub struct UpstreamMetrics {
    pub duration: Histogram,
    pub ttfb: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("strake");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests forwarded (or refused after routing), by token and upstream",
            requests.clone(),
        );
        let input_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "input_tokens",
            "Input (prompt) tokens reported by the upstream",
            input_tokens.clone(),
        );
        let output_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "output_tokens",
            "Output (completion) tokens reported by the upstream",
            output_tokens.clone(),
        );
        let cached_input_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "cached_input_tokens",
            "Input tokens read from the provider's prompt cache (part of input_tokens)",
            cached_input_tokens.clone(),
        );
        let cache_write_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "cache_write_tokens",
            "Input tokens written to the provider's prompt cache (part of input_tokens)",
            cache_write_tokens.clone(),
        );
        let spend = Family::<ModelLabels, UsdCounter>::default();
        registry.register(
            "spend_usd",
            "Spend in US dollars at the price table's rates, by token and model",
            spend.clone(),
        );
        let unpriced = Family::<UnpricedLabels, Counter>::default();
        registry.register(
            "unpriced_requests",
            "Forwarded requests whose cost is unknown: no_price (the model has no row in the price table) or no_usage (a 2xx answer without token counts)",
            unpriced.clone(),
        );
        let new_histogram: fn() -> Histogram = || Histogram::new(LATENCY_BUCKETS);
        let duration = HistogramFamily::new_with_constructor(new_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the response body",
            duration.clone(),
        );
        let ttfb = HistogramFamily::new_with_constructor(new_histogram);
        registry.register(
            "upstream_ttfb_seconds",
            "Time from request to the upstream's response head",
            ttfb.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused by authentication or authorization, by reason",
            auth_failures.clone(),
        );
        let upstream_key_rejections = Family::<UpstreamStatusLabels, Counter>::default();
        registry.register(
            "upstream_key_rejections",
            "Upstream 401/403 answers: the provider refused the platform's key (the client gets a 502)",
            upstream_key_rejections.clone(),
        );
        let rejected_records = Family::<KindLabels, Counter>::default();
        registry.register(
            "records_rejected",
            "Token or upstream records (kube mode Secrets) that could not be used",
            rejected_records.clone(),
        );
        let index_tokens = Gauge::default();
        registry.register("index_tokens", "Tokens in the index", index_tokens.clone());
        let index_upstreams = Gauge::default();
        registry.register(
            "index_upstreams",
            "Upstreams in the index",
            index_upstreams.clone(),
        );
        let config_reloads = Counter::default();
        registry.register(
            "config_reloads",
            "Configuration changes applied (file reloads, Secret events)",
            config_reloads.clone(),
        );
        let config_reload_failures = Counter::<u64, AtomicU64>::default();
        registry.register(
            "config_reload_failures",
            "Configuration changes refused; the last good configuration keeps serving",
            config_reload_failures.clone(),
        );
        let config_last_reload_successful = Gauge::default();
        registry.register(
            "config_last_reload_successful",
            "1 if the configuration in force is the latest one; 0 while the config file on disk is refused and an older one serves (file mode)",
            config_last_reload_successful.clone(),
        );
        let config_last_reload_success_timestamp = Gauge::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time the configuration was last loaded or changed successfully",
            config_last_reload_success_timestamp.clone(),
        );
        let watch_errors = Counter::default();
        registry.register(
            "watch_errors",
            "Kube mode: failures of the Secret watch (retried with backoff; the last known state keeps serving)",
            watch_errors.clone(),
        );
        let live_replicas = Gauge::default();
        live_replicas.set(1);
        registry.register(
            "live_replicas",
            "Proxy replicas sharing each token's rate limits (--replicas, or the serving endpoints of --replica-service); each replica admits limit / this",
            live_replicas.clone(),
        );
        let federated_key_fetches = Counter::default();
        registry.register(
            "federated_key_fetches",
            "Fetches of an OIDC issuer's signing keys (discovery and JWKS)",
            federated_key_fetches.clone(),
        );
        let federated_key_fetch_failures = Counter::default();
        registry.register(
            "federated_key_fetch_failures",
            "Failed fetches of an OIDC issuer's signing keys: the last good set keeps serving until it is stale",
            federated_key_fetch_failures.clone(),
        );
        let replica_watch_errors = Counter::default();
        registry.register(
            "replica_watch_errors",
            "Kube mode: failures of the --replica-service EndpointSlice watch (retried with backoff; the last replica count stays in force)",
            replica_watch_errors.clone(),
        );
        let client_connections = Gauge::default();
        registry.register(
            "client_connections",
            "Client connections open on the traffic port",
            client_connections.clone(),
        );
        let client_connections_timed_out = Counter::default();
        registry.register(
            "client_connections_timed_out",
            "Client connections closed because no complete request head arrived within --header-read-timeout of the accept",
            client_connections_timed_out.clone(),
        );
        let client_connection_limit_waits = Counter::default();
        registry.register(
            "client_connection_limit_waits",
            "Times accepting paused because --max-connections client connections were open",
            client_connection_limit_waits.clone(),
        );
        let accept_errors = Counter::default();
        registry.register(
            "accept_errors",
            "Failed accepts on the traffic port (most likely out of file descriptors)",
            accept_errors.clone(),
        );
        let accept_warnings_suppressed = Counter::default();
        registry.register(
            "accept_warnings_suppressed",
            format!(
                "Failed accepts not logged because one was logged in the last {} s",
                crate::server::ACCEPT_WARNING_INTERVAL.as_secs()
            ),
            accept_warnings_suppressed.clone(),
        );
        let file_descriptor_limit = Gauge::default();
        registry.register(
            "file_descriptor_limit",
            "The process's soft limit on open file descriptors, after start raised it to the hard limit; --max-connections should stay below half of it",
            file_descriptor_limit.clone(),
        );
        let worker_connections = Family::<WorkerLabels, Counter>::default();
        registry.register(
            "worker_connections",
            "Client connections accepted by each traffic worker (--workers); the kernel spreads new connections over the workers' listeners",
            worker_connections.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stderr stalled (nobody reading it)",
            crate::logging::dropped_lines().clone(),
        );
        Metrics {
            registry,
            requests,
            input_tokens,
            output_tokens,
            cached_input_tokens,
            cache_write_tokens,
            spend,
            unpriced,
            duration,
            ttfb,
            auth_failures,
            upstream_key_rejections,
            rejected_records,
            index_tokens,
            index_upstreams,
            config_reloads,
            config_reload_failures,
            config_last_reload_successful,
            config_last_reload_success_timestamp,
            watch_errors,
            live_replicas,
            replica_watch_errors,
            federated_key_fetches,
            federated_key_fetch_failures,
            client_connections,
            client_connections_timed_out,
            client_connection_limit_waits,
            accept_errors,
            accept_warnings_suppressed,
            file_descriptor_limit,
            worker_connections,
        }
    }

    /// Traffic worker `worker`'s accept counter, resolved once per worker
    /// so that an accept increments an atomic.
    pub fn worker_connections(&self, worker: usize) -> Counter {
        let worker = u32::try_from(worker).unwrap_or(u32::MAX);
        self.worker_connections
            .get_or_create(&WorkerLabels { worker })
            .clone()
    }

    /// A configuration change was applied (or the first one loaded).
    pub fn reload_succeeded(&self) {
        self.config_reloads.inc();
        self.mark_config_current();
    }

    /// The configuration in force is the latest one, unchanged or not.
    pub fn mark_config_current(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.config_last_reload_success_timestamp
            .set(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
        self.config_last_reload_successful.set(1);
    }

    /// A configuration change was refused; the last good one keeps serving.
    pub fn reload_failed(&self) {
        self.config_reload_failures.inc();
        self.config_last_reload_successful.set(0);
    }

    pub fn token(&self, identity: &str, token: &str, upstream: &str) -> TokenMetrics {
        let labels = |status_class| RequestLabels {
            identity: identity.to_owned(),
            token: token.to_owned(),
            upstream: upstream.to_owned(),
            status_class,
        };
        let t = TokenLabels {
            identity: identity.to_owned(),
            token: token.to_owned(),
            upstream: upstream.to_owned(),
        };
        TokenMetrics {
            requests: STATUS_CLASSES.map(|c| self.requests.get_or_create_owned(&labels(c))),
            input_tokens: self.input_tokens.get_or_create_owned(&t),
            output_tokens: self.output_tokens.get_or_create_owned(&t),
            cached_input_tokens: self.cached_input_tokens.get_or_create_owned(&t),
            cache_write_tokens: self.cache_write_tokens.get_or_create_owned(&t),
        }
    }

    /// The spend series of a token's model on one upstream.
    pub fn spend(&self, identity: &str, token: &str, upstream: &str, model: &str) -> UsdCounter {
        self.spend.get_or_create_owned(&ModelLabels {
            identity: identity.to_owned(),
            token: token.to_owned(),
            upstream: upstream.to_owned(),
            model: model.to_owned(),
        })
    }

    /// The unpriced-requests series of a token's model on one upstream.
    pub fn unpriced(
        &self,
        identity: &str,
        token: &str,
        upstream: &str,
        model: &str,
        reason: &'static str,
    ) -> Counter {
        self.unpriced.get_or_create_owned(&UnpricedLabels {
            identity: identity.to_owned(),
            token: token.to_owned(),
            upstream: upstream.to_owned(),
            model: model.to_owned(),
            reason,
        })
    }

    /// Drops the per-model series of a token that left the index.
    pub fn forget_models<'a>(
        &self,
        identity: &str,
        token: &str,
        series: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        for (upstream, model) in series {
            let labels = ModelLabels {
                identity: identity.to_owned(),
                token: token.to_owned(),
                upstream: upstream.to_owned(),
                model: model.to_owned(),
            };
            self.spend.remove(&labels);
            for reason in crate::spend::UNPRICED_REASONS {
                self.unpriced.remove(&UnpricedLabels {
                    identity: labels.identity.clone(),
                    token: labels.token.clone(),
                    upstream: labels.upstream.clone(),
                    model: labels.model.clone(),
                    reason,
                });
            }
        }
    }

    /// Drops the series of a token that left the index.
    pub fn forget_token(&self, identity: &str, token: &str, upstream: &str) {
        for status_class in STATUS_CLASSES {
            self.requests.remove(&RequestLabels {
                identity: identity.to_owned(),
                token: token.to_owned(),
                upstream: upstream.to_owned(),
                status_class,
            });
        }
        let t = TokenLabels {
            identity: identity.to_owned(),
            token: token.to_owned(),
            upstream: upstream.to_owned(),
        };
        self.input_tokens.remove(&t);
        self.output_tokens.remove(&t);
        self.cached_input_tokens.remove(&t);
        self.cache_write_tokens.remove(&t);
    }

    pub fn upstream(&self, upstream: &str) -> UpstreamMetrics {
        let l = UpstreamLabels {
            upstream: upstream.to_owned(),
        };
        UpstreamMetrics {
            duration: self.duration.get_or_create_owned(&l),
            ttfb: self.ttfb.get_or_create_owned(&l),
        }
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The upstream answered `status` (401 or 403) to its own key.
    pub fn upstream_key_rejected(&self, upstream: &str, status: u16) {
        self.upstream_key_rejections
            .get_or_create(&UpstreamStatusLabels {
                upstream: upstream.to_owned(),
                status,
            })
            .inc();
    }

    /// A Secret whose record could not be used. `kind`: `token` or `upstream`.
    pub fn rejected_record(&self, kind: &'static str) {
        self.rejected_records
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_handles_feed_the_exported_series_and_forget_removes_them() {
        let m = Metrics::new();
        let h = m.token("alice@example.com", "alice", "openai");
        h.request(200);
        h.request(201);
        h.request(429);
        h.input_tokens.inc_by(12);
        // A second resolution shares the same series.
        m.token("alice@example.com", "alice", "openai")
            .output_tokens
            .inc_by(3);
        m.auth_failure("unknown_token");
        m.index_tokens.set(7);
        let text = m.encode();
        assert!(text.contains(r#"strake_requests_total{identity="alice@example.com",token="alice",upstream="openai",status_class="2xx"} 2"#), "{text}");
        assert!(text.contains(r#"status_class="4xx"} 1"#));
        assert!(text.contains(r#"strake_input_tokens_total{identity="alice@example.com",token="alice",upstream="openai"} 12"#));
        assert!(text.contains(r#"strake_output_tokens_total{identity="alice@example.com",token="alice",upstream="openai"} 3"#));
        assert!(text.contains(r#"strake_auth_failures_total{reason="unknown_token"} 1"#));
        assert!(text.contains("strake_index_tokens 7"));
        assert!(text.contains("strake_config_reload_failures_total 0"));
        assert!(text.contains("strake_log_lines_dropped_total "));
        m.forget_token("alice@example.com", "alice", "openai");
        assert!(!m.encode().contains("token=\"alice\""));
    }

    #[test]
    fn the_charts_alert_rules_name_metrics_the_proxy_exports() {
        let rules = include_str!("../../charts/strake/templates/prometheusrule.yaml");
        let m = Metrics::new();
        // A labelled family is exported once it has a series.
        m.rejected_record("token");
        m.spend("i", "t", "u", "m").inc_by(1.0);
        m.unpriced("i", "t", "u", "m", "no_price").inc();
        let text = m.encode();
        let exported: std::collections::HashSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
            .collect();
        let used: Vec<&str> = rules
            .lines()
            .filter(|l| l.trim_start().starts_with("expr:"))
            .flat_map(|l| l.match_indices("strake_").map(move |(i, _)| &l[i..]))
            .map(|m| {
                let end = m
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(m.len());
                &m[..end]
            })
            // The operator's own, checked by its tests.
            .filter(|name| !name.starts_with("strake_operator_"))
            .collect();
        assert!(used.len() >= 3, "{used:?}");
        for name in used {
            let family = name.strip_suffix("_total").unwrap_or(name);
            assert!(
                exported.contains(family),
                "the chart's alerts use {name}, which the proxy does not export"
            );
        }
    }

    #[test]
    fn histograms_per_upstream() {
        let m = Metrics::new();
        let u = m.upstream("openai");
        u.duration.observe(0.2);
        u.ttfb.observe(0.1);
        let text = m.encode();
        assert!(
            text.contains(r#"strake_request_duration_seconds_count{upstream="openai"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"strake_upstream_ttfb_seconds_bucket{le="0.1",upstream="openai"} 1"#)
                || text.contains(
                    r#"strake_upstream_ttfb_seconds_bucket{upstream="openai",le="0.1"} 1"#
                ),
            "{text}"
        );
    }
}
