//! The admin port: health, readiness, metrics and per-token usage. Never
//! exposed with the traffic port: it names every token and identity.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use strake_crds::contract::SourceRef;
use strake_crds::usage::{Entry, Report, SINCE_PARAM};

use crate::index::{Snapshot, UsageCell};
use crate::server::Proxy;

/// This process as a usage collector sees it: a random id, so that a
/// restarted replica (whose counters start over) is a new instance.
#[derive(Clone, Debug)]
pub struct Instance {
    pub id: String,
    /// Unix seconds.
    pub started_at: i64,
}

impl Instance {
    pub fn new() -> Instance {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        Instance {
            id: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            started_at: unix_now(),
        }
    }
}

impl Default for Instance {
    fn default() -> Self {
        Instance::new()
    }
}

pub fn handle<B>(proxy: &Proxy, req: Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/healthz" if proxy.is_healthy() => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy: the config source stopped; changes and revocations no longer arrive\n",
        ),
        "/readyz" if proxy.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the configuration has not been loaded yet\n",
        ),
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(proxy.metrics().encode())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/usage" => {
            let since = match since(req.uri().query()) {
                Ok(since) => since,
                Err(message) => return text(StatusCode::BAD_REQUEST, message),
            };
            let report = usage_report(&proxy.snapshot(), proxy.instance(), since, unix_now());
            let body = serde_json::to_vec(&report).expect("a usage report serializes");
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz, /metrics or /usage\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `since=<unix seconds>` from the query, if present.
fn since(query: Option<&str>) -> Result<u64, &'static str> {
    let Some(query) = query else {
        return Ok(0);
    };
    for pair in query.split('&') {
        if let Some(value) = pair
            .strip_prefix(SINCE_PARAM)
            .and_then(|rest| rest.strip_prefix('='))
        {
            return value
                .parse()
                .map_err(|_| "since must be a whole number of unix seconds\n");
        }
    }
    Ok(0)
}

/// Every token and upstream used at or after `since` (unix seconds), with
/// its cumulative counters. Unused ones are left out: a collector treats a
/// missing entry as unchanged.
pub fn usage_report(snapshot: &Snapshot, instance: &Instance, since: u64, now: i64) -> Report {
    let entry = |source: Option<&SourceRef>, name: &str, cell: &UsageCell| -> Option<Entry> {
        let last_used = cell.last_used();
        let counters = cell.counters();
        if counters.requests == 0 || last_used < since {
            return None;
        }
        // File mode has no resources: the entry carries the configured name.
        let (namespace, name) = match source {
            Some(s) => (s.namespace.clone(), s.name.clone()),
            None => (String::new(), name.to_string()),
        };
        Some(Entry {
            namespace,
            name,
            series: cell.series,
            last_used_at: i64::try_from(last_used).unwrap_or(i64::MAX),
            counters,
        })
    };
    let mut tokens: Vec<Entry> = snapshot
        .tokens()
        .chain(snapshot.departed().map(|d| &d.policy))
        .filter_map(|p| entry(p.source.as_ref(), &p.name, &p.state.usage))
        .collect();
    let mut upstreams: Vec<Entry> = snapshot
        .upstreams()
        .filter_map(|u| entry(u.source.as_ref(), &u.id, &u.usage))
        .collect();
    let order = |a: &Entry, b: &Entry| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name));
    tokens.sort_by(order);
    upstreams.sort_by(order);
    Report {
        instance: instance.id.clone(),
        started_at: instance.started_at,
        now,
        tokens,
        upstreams,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Record, TokenIndex, Used};
    use strake_crds::contract::TokenRecord;
    use strake_crds::token::Token;

    fn record(name: &str, hash: strake_crds::token::TokenHash) -> Record {
        Record::Token(TokenRecord {
            name: format!("team-a/{name}"),
            identity: format!("{name}@example.com"),
            sha256: hash,
            upstreams: vec!["team-a/openai".into()],
            expires_at: None,
            suspended: false,
            allowed_models: vec![],
            limits: None,
            endpoints: vec![],
            source: Some(SourceRef {
                namespace: "team-a".into(),
                name: name.into(),
            }),
            budget: None,
            federated: Vec::new(),
            previous: None,
        })
    }

    #[test]
    fn the_report_keeps_counting_across_a_rotation_and_after_a_revocation() {
        let mut idx = TokenIndex::new();
        let (a, b, rotated) = (Token::mint(), Token::mint(), Token::mint());
        idx.apply("sa", record("alice", a.hash())).unwrap();
        idx.apply("sb", record("bob", b.hash())).unwrap();
        let used = Used {
            input: 10,
            output: 5,
            cached_input: 4,
            cache_write: 1,
            spend: Some(7),
        };
        let alice = idx.view().token(&a.hash()).unwrap().state.clone();
        alice.usage.record(&used, 100);
        alice.usage.record(
            &Used {
                spend: None,
                ..used
            },
            120,
        );
        // Rotation: a new hash under the same Secret keeps the counters.
        idx.apply("sa", record("alice", rotated.hash())).unwrap();
        let instance = Instance::new();
        let report = usage_report(idx.view(), &instance, 0, 130);
        assert_eq!(report.instance, instance.id);
        assert_eq!(report.now, 130);
        assert_eq!(report.tokens.len(), 1, "bob is unused: {report:?}");
        let e = &report.tokens[0];
        assert_eq!((e.namespace.as_str(), e.name.as_str()), ("team-a", "alice"));
        assert_eq!(e.series, alice.usage.series);
        assert_eq!(e.last_used_at, 120);
        let c = e.counters;
        assert_eq!((c.requests, c.input_tokens, c.output_tokens), (2, 20, 10));
        assert_eq!((c.cached_input_tokens, c.cache_write_tokens), (8, 2));
        assert_eq!((c.spend_picodollars, c.unpriced_requests), (7, 1));
        // `since` leaves out what was not used since.
        assert_eq!(
            usage_report(idx.view(), &instance, 120, 130).tokens.len(),
            1
        );
        assert!(
            usage_report(idx.view(), &instance, 121, 130)
                .tokens
                .is_empty()
        );
        // Revoked: no longer in the index, but its counters stay in the
        // report (a request in flight still adds to them) until collected.
        idx.delete("sa");
        assert!(idx.view().token(&rotated.hash()).is_none());
        alice.usage.record(&used, 140);
        let report = usage_report(idx.view(), &instance, 130, 150);
        assert_eq!(report.tokens.len(), 1, "{report:?}");
        assert_eq!(report.tokens[0].series, alice.usage.series);
        assert_eq!(report.tokens[0].counters.requests, 3);
        assert_eq!(report.tokens[0].name, "alice");
        // Forgotten once the retention has passed.
        let mut later = TokenIndex::new();
        later.apply("sa", record("alice", a.hash())).unwrap();
        later
            .view()
            .token(&a.hash())
            .unwrap()
            .state
            .usage
            .record(&used, 1);
        later.delete("sa");
        assert_eq!(usage_report(later.view(), &instance, 0, 1).tokens.len(), 1);
        later.prune_departed(unix_now() as u64 + crate::index::DEPARTED_RETENTION_SECS + 1);
        assert!(
            usage_report(later.view(), &instance, 0, 1)
                .tokens
                .is_empty()
        );

        // Gone and back: counters start over, under a new series, and only
        // the new series is reported.
        idx.apply("sa", record("alice", rotated.hash())).unwrap();
        let fresh = idx.view().token(&rotated.hash()).unwrap();
        assert_ne!(fresh.state.usage.series, alice.usage.series);
        assert_eq!(fresh.state.usage.counters().requests, 0);
        fresh.state.usage.record(&used, 160);
        let report = usage_report(idx.view(), &instance, 0, 170);
        assert_eq!(report.tokens.len(), 1, "{report:?}");
        assert_eq!(report.tokens[0].series, fresh.state.usage.series);
    }

    #[test]
    fn since_must_be_a_number() {
        assert_eq!(since(None), Ok(0));
        assert_eq!(since(Some("since=42")), Ok(42));
        assert_eq!(since(Some("x=1&since=7")), Ok(7));
        assert!(since(Some("since=-1")).is_err());
        assert!(since(Some("since=abc")).is_err());
    }
}
