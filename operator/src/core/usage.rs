//! Usage: folding the proxy replicas' cumulative counters into a resource's
//! status, and pacing the status writes.
//!
//! Each replica reports, per resource, counters since it started under a
//! random instance id (and a series number that changes when a resource's
//! counters start over within the process). The status keeps, next to the
//! totals, the counters already folded per instance (`usage.collected`), and
//! both are written in one resourceVersion-guarded update. So a fold is
//! idempotent: folding the same report twice, or after an operator restart
//! or failover, adds nothing; a report that a write lost is folded again.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use strake_crds::pricing::Picodollars;
use strake_crds::usage::{Counters, Entry};
use strake_crds::{TokenUsage, UsageCursor, UsageTotals};

/// One replica's entry for the resource being folded.
#[derive(Clone, Copy, Debug)]
pub struct Seen<'a> {
    pub instance: &'a str,
    pub entry: &'a Entry,
}

/// The new usage status of one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Folded {
    pub usage: TokenUsage,
    pub last_used_at: Option<Time>,
    /// What this fold added to the totals.
    pub added: Counters,
}

/// The month a use at `now` counts in (UTC), e.g. `2026-12`.
pub fn period(now: Timestamp) -> String {
    now.strftime("%Y-%m").to_string()
}

/// Folds `seen` into `current`. `live` are the instances that answered this
/// round: a cursor of any other instance not advanced for `retention` is
/// dropped (its replica is gone, and its last counters were folded long
/// ago). `None` when nothing would change, so nothing is written.
pub fn fold(
    current: Option<&TokenUsage>,
    last_used_at: Option<&Time>,
    seen: &[Seen<'_>],
    live: &BTreeSet<String>,
    now: Timestamp,
    retention: Duration,
) -> Option<Folded> {
    let mut usage = current.cloned().unwrap_or_default();
    let mut added = Counters::default();
    let mut cursors_changed = false;
    let mut newest = last_used_at.map(|t| t.0);
    let seen_at = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    for s in seen {
        let entry = s.entry;
        let delta = match usage.collected.get(s.instance) {
            // Within one series every counter only grows.
            Some(c) if c.series == entry.series => entry.counters.since(&c.counters),
            // New to this resource, or its counters started over: all of
            // them are new (the old series' last reading was final).
            _ => entry.counters,
        };
        let is_new_cursor = usage
            .collected
            .get(s.instance)
            .is_none_or(|c| c.series != entry.series);
        if !delta.is_zero() || is_new_cursor {
            added.add(&delta);
            usage.collected.insert(
                s.instance.to_string(),
                UsageCursor {
                    series: entry.series,
                    seen_at: seen_at.clone(),
                    counters: max_each(entry.counters, usage.collected.get(s.instance), entry),
                },
            );
            cursors_changed = true;
        }
        if let Some(at) = Timestamp::from_second(entry.last_used_at)
            .ok()
            .filter(|_| entry.last_used_at > 0)
            && newest.is_none_or(|n| at > n)
        {
            newest = Some(at);
        }
    }
    let before = usage.collected.len();
    let keep_after = now.as_second().saturating_sub(retention_secs(retention));
    usage
        .collected
        .retain(|instance, c| live.contains(instance) || c.seen_at.0.as_second() > keep_after);
    cursors_changed |= usage.collected.len() != before;

    if !added.is_zero() {
        let this_month = period(now);
        let month = match usage.month.take() {
            Some(m) if m.period.as_deref() == Some(this_month.as_str()) => m,
            _ => UsageTotals {
                period: Some(this_month),
                ..zero()
            },
        };
        usage.month = Some(plus(month, &added));
        usage.lifetime = Some(plus(usage.lifetime.take().unwrap_or_else(zero), &added));
    }
    let changed = !added.is_zero() || cursors_changed || newest != last_used_at.map(|t| t.0);
    changed.then_some(Folded {
        usage,
        last_used_at: newest.map(Time),
        added,
    })
}

fn retention_secs(retention: Duration) -> i64 {
    i64::try_from(retention.as_secs()).unwrap_or(i64::MAX / 2)
}

/// The counters to remember for an instance: the reading, except that within
/// one series no field goes back (a reading never shrinks; if one seemed
/// to, keeping the larger value keeps it from being counted twice).
fn max_each(reading: Counters, previous: Option<&UsageCursor>, entry: &Entry) -> Counters {
    match previous.filter(|c| c.series == entry.series) {
        Some(c) => reading.max_each(&c.counters),
        None => reading,
    }
}

fn zero() -> UsageTotals {
    UsageTotals {
        spend_usd: Picodollars::ZERO.to_decimal_string(),
        ..UsageTotals::default()
    }
}

/// `totals + delta`. A spend that does not parse (edited by hand) restarts
/// from zero rather than blocking every later fold.
pub fn plus(totals: UsageTotals, delta: &Counters) -> UsageTotals {
    let spend: Picodollars = totals.spend_usd.parse().unwrap_or(Picodollars::ZERO);
    let mut sum = Counters {
        requests: totals.requests,
        input_tokens: totals.input_tokens,
        output_tokens: totals.output_tokens,
        cached_input_tokens: totals.cached_input_tokens,
        cache_write_tokens: totals.cache_write_tokens,
        spend_picodollars: spend.0,
        unpriced_requests: totals.unpriced_requests,
    };
    sum.add(delta);
    UsageTotals {
        period: totals.period,
        requests: sum.requests,
        input_tokens: sum.input_tokens,
        output_tokens: sum.output_tokens,
        cached_input_tokens: sum.cached_input_tokens,
        cache_write_tokens: sum.cache_write_tokens,
        spend_usd: Picodollars(sum.spend_picodollars).to_decimal_string(),
        unpriced_requests: sum.unpriced_requests,
    }
}

/// The admin URL of every endpoint in the proxy admin Service's
/// EndpointSlices, ready or not: a replica that is draining still holds
/// counters to collect. The port is the one named `admin`, else the first.
pub fn admin_urls(slices: &[EndpointSlice]) -> Vec<String> {
    let mut urls = Vec::new();
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let Some(port) = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("admin"))
            .or_else(|| ports.first())
            .and_then(|p| p.port)
        else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            for address in &endpoint.addresses {
                if slice.address_type == "IPv6" {
                    urls.push(format!("http://[{address}]:{port}"));
                } else {
                    urls.push(format!("http://{address}:{port}"));
                }
            }
        }
    }
    urls.sort();
    urls.dedup();
    urls
}

/// A token bucket for status writes: at most `per_second` in the long run
/// and `burst` at once, whatever the number of active resources.
#[derive(Clone, Debug)]
pub struct Pacer {
    per_second: f64,
    burst: f64,
    available: f64,
    /// Time of the last refill, from any fixed origin.
    at: Option<Duration>,
}

impl Pacer {
    pub fn new(per_second: u32, burst: u32) -> Pacer {
        Pacer {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            available: f64::from(burst.max(1)),
            at: None,
        }
    }

    /// How many of `wanted` writes may go at `now`; they are taken from
    /// the bucket.
    pub fn allow(&mut self, now: Duration, wanted: usize) -> usize {
        if let Some(at) = self.at {
            let elapsed = now.saturating_sub(at).as_secs_f64();
            self.available = (self.available + elapsed * self.per_second).min(self.burst);
        }
        self.at = Some(now);
        let granted = (self.available.floor() as usize).min(wanted);
        self.available -= granted as f64;
        granted
    }
}

/// One resource with usage to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<K> {
    pub key: K,
    /// Being deleted: its finalizer waits for this write, so it goes first
    /// and outside the pace (deletions are themselves API writes, so they
    /// bound how many of these there are).
    pub terminating: bool,
    /// When its usage was last written by this collector.
    pub written: Option<Duration>,
}

/// Which resources to write this round: every terminating one, then the
/// `paced` written longest ago (never written counts as oldest), so under a
/// backlog every one of them is refreshed in turn.
pub fn pick<K: Clone + Ord>(mut candidates: Vec<Candidate<K>>, paced: usize) -> Vec<K> {
    candidates.sort_by(|a, b| {
        (!a.terminating, a.written, &a.key).cmp(&(!b.terminating, b.written, &b.key))
    });
    let urgent = candidates.iter().filter(|c| c.terminating).count();
    candidates
        .into_iter()
        .take(urgent + paced)
        .map(|c| c.key)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-06-15T12:00:00Z";
    const HOUR: Duration = Duration::from_secs(3600);

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn entry(series: u64, requests: u64, input: u64, spend: u64, last_used_at: i64) -> Entry {
        Entry {
            namespace: "team-a".into(),
            name: "alice".into(),
            series,
            last_used_at,
            counters: Counters {
                requests,
                input_tokens: input,
                output_tokens: requests * 2,
                cached_input_tokens: input / 2,
                cache_write_tokens: 1,
                spend_picodollars: spend,
                unpriced_requests: 0,
            },
        }
    }

    fn live(instances: &[&str]) -> BTreeSet<String> {
        instances.iter().map(|s| s.to_string()).collect()
    }

    fn lifetime(f: &Folded) -> &UsageTotals {
        f.usage.lifetime.as_ref().unwrap()
    }

    #[test]
    fn two_replicas_sum_and_a_second_fold_adds_nothing() {
        let (a, b) = (
            entry(1, 3, 30, 1_500_000_000_000, 100),
            entry(7, 2, 20, 10, 200),
        );
        let seen = [
            Seen {
                instance: "a",
                entry: &a,
            },
            Seen {
                instance: "b",
                entry: &b,
            },
        ];
        let f = fold(None, None, &seen, &live(&["a", "b"]), ts(NOW), HOUR).unwrap();
        let l = lifetime(&f);
        assert_eq!((l.requests, l.input_tokens, l.output_tokens), (5, 50, 10));
        assert_eq!((l.cached_input_tokens, l.cache_write_tokens), (25, 2));
        assert_eq!(l.spend_usd, "1.50000000001");
        assert_eq!(l.period, None);
        let m = f.usage.month.as_ref().unwrap();
        assert_eq!(m.period.as_deref(), Some("2026-06"));
        assert_eq!(m.requests, 5);
        assert_eq!(f.last_used_at.as_ref().unwrap().0.as_second(), 200);
        assert_eq!(f.usage.collected["b"].counters, b.counters);

        // The same reports again (an operator restart, a failover, a write
        // that did land after all): nothing to add, nothing to write.
        let again = fold(
            Some(&f.usage),
            f.last_used_at.as_ref(),
            &seen,
            &live(&["a", "b"]),
            ts("2026-06-15T12:00:10Z"),
            HOUR,
        );
        assert_eq!(again, None);
    }

    /// Folds one live instance's entry into what `previous` produced.
    fn fold_one(previous: Option<&Folded>, entry: &Entry, now: &str) -> Option<Folded> {
        fold(
            previous.map(|f| &f.usage),
            previous.and_then(|f| f.last_used_at.as_ref()),
            &[Seen {
                instance: "a",
                entry,
            }],
            &live(&["a"]),
            ts(now),
            HOUR,
        )
    }

    #[test]
    fn growth_adds_the_difference_and_a_new_series_adds_everything() {
        let first = fold_one(None, &entry(1, 3, 30, 0, 100), NOW).unwrap();
        let grown = fold_one(Some(&first), &entry(1, 5, 70, 0, 110), NOW).unwrap();
        assert_eq!((grown.added.requests, grown.added.input_tokens), (2, 40));
        assert_eq!(lifetime(&grown).requests, 5);
        // The token left the replica's index and came back: counters from 1.
        let f = fold_one(Some(&grown), &entry(2, 1, 10, 0, 120), NOW).unwrap();
        assert_eq!(lifetime(&f).requests, 6);
        assert_eq!(lifetime(&f).input_tokens, 80);
        assert_eq!(f.usage.collected["a"].series, 2);
    }

    #[test]
    fn a_reading_taken_mid_request_is_completed_by_the_next() {
        // The reading saw the request counted but not yet its tokens.
        let f = fold_one(None, &entry(1, 4, 30, 0, 100), NOW).unwrap();
        let f = fold_one(Some(&f), &entry(1, 4, 45, 0, 100), NOW).unwrap();
        assert_eq!((lifetime(&f).requests, lifetime(&f).input_tokens), (4, 45));
    }

    #[test]
    fn a_gone_replica_keeps_its_cursor_for_the_retention_then_loses_it() {
        let old = entry(1, 3, 30, 0, 100);
        let f = fold(
            None,
            None,
            &[Seen {
                instance: "old",
                entry: &old,
            }],
            &live(&["old"]),
            ts(NOW),
            HOUR,
        )
        .unwrap();
        // The replica restarted: a new instance, counting from zero.
        let new = entry(1, 1, 5, 0, 300);
        let seen = [Seen {
            instance: "new",
            entry: &new,
        }];
        let f = fold(
            Some(&f.usage),
            f.last_used_at.as_ref(),
            &seen,
            &live(&["new"]),
            ts("2026-06-15T12:30:00Z"),
            HOUR,
        )
        .unwrap();
        assert_eq!(lifetime(&f).requests, 4);
        assert!(f.usage.collected.contains_key("old"));
        // Unreachable for longer than the retention: dropped, totals kept.
        let f = fold(
            Some(&f.usage),
            f.last_used_at.as_ref(),
            &seen,
            &live(&["new"]),
            ts("2026-06-15T13:00:01Z"),
            HOUR,
        )
        .unwrap();
        assert!(f.added.is_zero());
        assert_eq!(
            f.usage.collected.keys().collect::<Vec<_>>(),
            [&"new".to_string()]
        );
        assert_eq!(lifetime(&f).requests, 4);
        // A live instance's cursor stays however old it is.
        assert_eq!(
            fold(
                Some(&f.usage),
                f.last_used_at.as_ref(),
                &seen,
                &live(&["new"]),
                ts("2026-07-15T00:00:00Z"),
                HOUR,
            ),
            None
        );
    }

    #[test]
    fn the_month_starts_over_at_the_boundary_the_lifetime_does_not() {
        let june = fold_one(
            None,
            &entry(1, 3, 30, 2_000_000, 100),
            "2026-06-30T23:59:55Z",
        );
        let july = fold_one(
            june.as_ref(),
            &entry(1, 4, 40, 3_000_000, 100),
            "2026-07-01T00:00:05Z",
        )
        .unwrap();
        let m = july.usage.month.as_ref().unwrap();
        assert_eq!(m.period.as_deref(), Some("2026-07"));
        assert_eq!((m.requests, m.spend_usd.as_str()), (1, "0.000001"));
        assert_eq!(lifetime(&july).requests, 4);
        assert_eq!(lifetime(&july).spend_usd, "0.000003");
    }

    #[test]
    fn the_pacer_bounds_writes_per_second() {
        let mut p = Pacer::new(100, 1000);
        let s = Duration::from_secs;
        // A burst up to its size, then the rate.
        assert_eq!(p.allow(s(0), 10_000), 1000);
        assert_eq!(p.allow(s(0), 10_000), 0);
        assert_eq!(p.allow(s(10), 10_000), 1000);
        let mut written = 0;
        for round in 2..=61 {
            written += p.allow(s(10 * round), 10_000);
        }
        // 600 s at 100 writes/s.
        assert_eq!(written, 60_000);
        assert_eq!(p.allow(s(700), 3), 3);
    }

    #[test]
    fn every_endpoint_of_the_admin_service_is_a_replica() {
        let slices: Vec<EndpointSlice> = serde_json::from_value(serde_json::json!([
            {
                "addressType": "IPv4",
                "metadata": {"name": "a"},
                "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 9090}],
                "endpoints": [
                    {"addresses": ["10.0.0.2"], "conditions": {"ready": true}},
                    {"addresses": ["10.0.0.1"], "conditions": {"ready": false, "terminating": true}}
                ]
            },
            {
                "addressType": "IPv6",
                "metadata": {"name": "b"},
                "ports": [{"port": 9090}],
                "endpoints": [{"addresses": ["fd00::1"]}]
            },
            {"addressType": "IPv4", "metadata": {"name": "c"}, "endpoints": [{"addresses": ["10.0.0.9"]}]}
        ]))
        .unwrap();
        assert_eq!(
            admin_urls(&slices),
            [
                "http://10.0.0.1:9090",
                "http://10.0.0.2:9090",
                "http://[fd00::1]:9090"
            ]
        );
    }

    #[test]
    fn the_longest_unwritten_go_first() {
        let ms = Duration::from_millis;
        let c = |key, written, terminating| Candidate {
            key,
            terminating,
            written,
        };
        let picked = pick(
            vec![
                c("c", Some(ms(30)), false),
                c("a", Some(ms(10)), false),
                c("b", None, false),
                c("d", Some(ms(20)), false),
            ],
            3,
        );
        assert_eq!(picked, ["b", "a", "d"]);
        // A deleted token's last usage is written first, beyond the pace.
        let picked = pick(
            vec![
                c("a", None, false),
                c("z", Some(ms(50)), true),
                c("b", Some(ms(5)), false),
            ],
            1,
        );
        assert_eq!(picked, ["z", "a"]);
    }
}
