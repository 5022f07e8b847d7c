//! Budgets (`spec.budget` on StrakeToken and UpstreamKey), as pure steps:
//!
//! - [`fold_bucket`]: the usage collector adds a fold's delta to the
//!   current period's bucket (`status.budget`), starting a new bucket when
//!   the period has rolled over. A delta folded after the reset instant
//!   counts in the new period, even if some of it was served just before:
//!   the edge is one collection interval wide.
//! - [`plan`]: the reconcilers decide, from the spec and that bucket, the
//!   `BudgetExceeded` condition, the alert and exhaustion Events (once per
//!   threshold per period, remembered in `status.budgetAlerts`), the
//!   [`BudgetRecord`] the proxy enforces locally, and when to look again
//!   (the reset instant: a spent budget comes back without polling).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use strake_crds::budget::{self, Period, Spent};
use strake_crds::contract::{BudgetCursor, BudgetRecord, BudgetSpend};
use strake_crds::pricing::Picodollars;
use strake_crds::resources::AlertPercent;
use strake_crds::usage::Counters;
use strake_crds::{Budget, BudgetAlerts, BudgetStatus, UsageCursor};

use crate::core::token::Notice;

/// The condition saying whether the budget is spent.
pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";

pub mod reason {
    /// Condition True, and the phase's reason.
    pub const EXCEEDED: &str = "BudgetExceeded";
    pub const WITHIN: &str = "WithinBudget";
    /// `timeZone` names no zone: the budget is kept in UTC meanwhile.
    pub const UNKNOWN_TIME_ZONE: &str = "UnknownTimeZone";
    /// Event reason of an `alertAt` threshold.
    pub const ALERT: &str = "BudgetAlert";
}

/// The zone's calendar, or UTC with the problem when the zone is unknown
/// (the cap still holds; only the period's bounds move by the offset).
fn calendar(budget: &Budget, now: Timestamp) -> (Period, Option<String>) {
    let (tz, problem) = match budget::zone(budget) {
        Ok(tz) => (tz, None),
        Err(problem) => (k8s_openapi::jiff::tz::TimeZone::UTC, Some(problem)),
    };
    (budget::period(budget.period, &tz, now), problem)
}

fn zero_bucket(p: &Period) -> BudgetStatus {
    BudgetStatus {
        period: p.key.clone(),
        starts_at: Time(p.start),
        resets_at: Time(p.end),
        spent_usd: Picodollars::ZERO.to_decimal_string(),
        tokens: 0,
        percent: 0,
        overshoot_usd: None,
        overshoot_tokens: None,
    }
}

/// The period's spend in a bucket; a bucket of another period spent nothing
/// in this one.
fn spent_in(bucket: Option<&BudgetStatus>, p: &Period) -> Spent {
    match bucket.filter(|b| b.period == p.key) {
        Some(b) => Spent {
            picodollars: b.spent_usd.parse::<Picodollars>().map_or(0, |p| p.0),
            tokens: b.tokens,
        },
        None => Spent::default(),
    }
}

/// The bucket after adding `added` at `now`.
pub fn fold_bucket(
    budget: &Budget,
    previous: Option<&BudgetStatus>,
    added: &Counters,
    now: Timestamp,
) -> BudgetStatus {
    let (p, _) = calendar(budget, now);
    let before = spent_in(previous, &p);
    let spent = Spent {
        picodollars: before.picodollars.saturating_add(added.spend_picodollars),
        tokens: before
            .tokens
            .saturating_add(added.input_tokens.saturating_add(added.output_tokens)),
    };
    bucket(budget, &p, spent)
}

fn bucket(budget: &Budget, p: &Period, spent: Spent) -> BudgetStatus {
    let standing = budget::standing(budget, spent);
    let usd = budget::usd_limit(budget);
    let over_usd = usd
        .filter(|l| spent.picodollars > l.0)
        .map(|l| Picodollars(spent.picodollars - l.0).to_decimal_string());
    let over_tokens = budget
        .tokens
        .filter(|&l| spent.tokens > l)
        .map(|l| spent.tokens - l);
    BudgetStatus {
        spent_usd: Picodollars(spent.picodollars).to_decimal_string(),
        tokens: spent.tokens,
        percent: standing.percent,
        overshoot_usd: over_usd,
        overshoot_tokens: over_tokens,
        ..zero_bucket(p)
    }
}

/// What a reconcile reads about a resource's budget.
pub struct Observed<'a> {
    /// `spec.budget`.
    pub budget: &'a Budget,
    /// `status.budget`, as the collector last wrote it.
    pub bucket: Option<&'a BudgetStatus>,
    pub alerts: Option<&'a BudgetAlerts>,
    /// `status.usage.collected`: the counters the bucket includes.
    pub collected: &'a BTreeMap<String, UsageCursor>,
    pub conditions: &'a [Condition],
    pub generation: Option<i64>,
    pub now: Timestamp,
    /// `--usage-interval`.
    pub collect_every: Duration,
    /// "StrakeToken team-a/alice" or "UpstreamKey team-a/openai".
    pub what: &'a str,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BudgetPlan {
    /// The record the proxy enforces from.
    pub record: BudgetRecord,
    /// The `BudgetExceeded` condition.
    pub condition: Condition,
    /// The message when spent: the phase and the Ready condition say so.
    pub exceeded: Option<String>,
    /// `status.budgetAlerts` to write.
    pub alerts: BudgetAlerts,
    pub notices: Vec<Notice>,
    /// Until the period ends.
    pub requeue: Duration,
}

pub fn plan(o: &Observed<'_>) -> BudgetPlan {
    let (p, problem) = calendar(o.budget, o.now);
    let spent = spent_in(o.bucket, &p);
    let standing = budget::standing(o.budget, spent);
    let describe = budget::describe(
        o.budget.period,
        budget::usd_limit(o.budget),
        o.budget.tokens,
    );
    let resets = p.end;
    let exceeded = standing.exceeded.then(|| {
        format!(
            "the {describe} of {} is spent ({}); requests are refused until it resets at {resets}",
            o.what, standing.detail
        )
    });
    let (status, why, message) = match (&exceeded, &problem) {
        (Some(m), _) => ("True", reason::EXCEEDED, m.clone()),
        (None, Some(problem)) => (
            "False",
            reason::UNKNOWN_TIME_ZONE,
            format!("{problem}: the budget's periods are kept in UTC until it is fixed"),
        ),
        (None, None) => (
            "False",
            reason::WITHIN,
            format!(
                "{}% of the {describe} used ({}); resets at {resets}",
                standing.percent, standing.detail
            ),
        ),
    };
    let previous = o.conditions.iter().find(|c| c.type_ == BUDGET_EXCEEDED);
    let last_transition_time = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(Timestamp::from_second(o.now.as_second()).unwrap_or(o.now)),
    };
    let condition = Condition {
        type_: BUDGET_EXCEEDED.into(),
        status: status.into(),
        reason: why.into(),
        message,
        observed_generation: o.generation,
        last_transition_time,
    };

    // Alerts: once per threshold per period; 100 stands for exhaustion.
    let mut sent: Vec<u8> = o
        .alerts
        .filter(|a| a.period == p.key)
        .map(|a| a.sent.iter().map(|p| p.0).collect())
        .unwrap_or_default();
    let mut notices = Vec::new();
    let mut due: Vec<u8> = o
        .budget
        .alert_at
        .iter()
        .map(|a| a.0)
        .filter(|&a| a < 100 && u64::from(a) <= standing.percent && !sent.contains(&a))
        .collect();
    due.sort_unstable();
    due.dedup();
    for a in due {
        sent.push(a);
        notices.push(Notice {
            warning: true,
            reason: reason::ALERT,
            note: format!(
                "{a}% of the {describe} of {} used ({}); resets at {resets}",
                o.what, standing.detail
            ),
        });
    }
    if let Some(message) = &exceeded
        && !sent.contains(&100)
    {
        sent.push(100);
        notices.push(Notice {
            warning: true,
            reason: reason::EXCEEDED,
            note: message.clone(),
        });
    }
    sent.sort_unstable();

    let cursors = o
        .collected
        .iter()
        .map(|(instance, c)| {
            (
                instance.clone(),
                BudgetCursor {
                    series: c.series,
                    spend: BudgetSpend {
                        picodollars: c.counters.spend_picodollars,
                        tokens: c
                            .counters
                            .input_tokens
                            .saturating_add(c.counters.output_tokens),
                    },
                },
            )
        })
        .collect();
    let record = BudgetRecord {
        period: o.budget.period,
        usd_picodollars: budget::usd_limit(o.budget).map(|l| l.0),
        tokens: o.budget.tokens,
        resets_at: resets.as_second(),
        spent: BudgetSpend {
            picodollars: spent.picodollars,
            tokens: spent.tokens,
        },
        exhausted: standing.exceeded,
        cursors,
        collect_every_secs: o.collect_every.as_secs().max(1),
    };
    let until_reset = resets
        .as_millisecond()
        .saturating_sub(o.now.as_millisecond());
    BudgetPlan {
        record,
        condition,
        exceeded,
        alerts: BudgetAlerts {
            period: p.key,
            sent: sent.into_iter().map(AlertPercent).collect(),
        },
        notices,
        // Rounded up, so the look is not early.
        requeue: Duration::from_millis(u64::try_from(until_reset).unwrap_or(0) + 1),
    }
}

/// Hashes what, in a collector-written `status.budget`, should wake the
/// reconciler: any change of the bucket (its period, spend or standing), so
/// the published spend is never staler than one collection.
pub fn trigger_hash(bucket: Option<&BudgetStatus>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Some(b) = bucket {
        (&b.period, &b.spent_usd, b.tokens).hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strake_crds::{BudgetPeriod, usage::Counters};

    const MINUTE: Duration = Duration::from_secs(60);

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn monthly(usd: &str) -> Budget {
        Budget {
            period: BudgetPeriod::Month,
            time_zone: None,
            usd: Some(usd.into()),
            tokens: None,
            alert_at: vec![AlertPercent(80), AlertPercent(50)],
        }
    }

    fn spend(dollars: u64, tokens: u64) -> Counters {
        Counters {
            spend_picodollars: dollars * 1_000_000_000_000,
            input_tokens: tokens,
            output_tokens: tokens,
            ..Counters::default()
        }
    }

    fn observed<'a>(
        budget: &'a Budget,
        bucket: Option<&'a BudgetStatus>,
        alerts: Option<&'a BudgetAlerts>,
        collected: &'a BTreeMap<String, UsageCursor>,
        now: &str,
    ) -> Observed<'a> {
        Observed {
            budget,
            bucket,
            alerts,
            collected,
            conditions: &[],
            generation: Some(1),
            now: ts(now),
            collect_every: Duration::from_secs(10),
            what: "StrakeToken team-a/alice",
        }
    }

    #[test]
    fn the_bucket_adds_within_a_period_and_starts_over_after_the_reset() {
        let b = monthly("50");
        let first = fold_bucket(&b, None, &spend(30, 5), ts("2026-12-31T23:59:50Z"));
        assert_eq!(first.period, "2026-12");
        assert_eq!(first.resets_at.0, ts("2027-01-01T00:00:00Z"));
        assert_eq!((first.spent_usd.as_str(), first.tokens), ("30", 10));
        let second = fold_bucket(&b, Some(&first), &spend(25, 0), ts("2026-12-31T23:59:59Z"));
        assert_eq!((second.spent_usd.as_str(), second.percent), ("55", 110));
        assert_eq!(second.overshoot_usd.as_deref(), Some("5"));
        // Folded after the reset instant: the new period's, all of it.
        let third = fold_bucket(&b, Some(&second), &spend(1, 0), ts("2027-01-01T00:00:01Z"));
        assert_eq!(
            (third.period.as_str(), third.spent_usd.as_str()),
            ("2027-01", "1")
        );
        assert_eq!(third.overshoot_usd, None);
        // A token budget counts input plus output.
        let tokens = Budget {
            usd: None,
            tokens: Some(15),
            period: BudgetPeriod::Day,
            ..b
        };
        let t = fold_bucket(&tokens, None, &spend(0, 8), ts("2026-12-02T10:00:00Z"));
        assert_eq!(
            (t.tokens, t.percent, t.overshoot_tokens),
            (16, 106, Some(1))
        );
        assert_eq!(t.period, "2026-12-02");
    }

    #[test]
    fn alerts_fire_once_per_threshold_per_period_and_exhaustion_once() {
        let b = monthly("50");
        let none = BTreeMap::new();
        let at = "2026-12-10T00:00:00Z";
        let bucket = fold_bucket(&b, None, &spend(41, 0), ts(at));
        let p = plan(&observed(&b, Some(&bucket), None, &none, at));
        let reasons: Vec<_> = p.notices.iter().map(|n| n.note.clone()).collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].starts_with(
            "50% of the monthly budget of $50 of StrakeToken team-a/alice used ($41 of $50)"
        ));
        assert!(reasons[1].starts_with("80% "));
        assert_eq!(p.alerts.sent, [AlertPercent(50), AlertPercent(80)]);
        assert_eq!(p.condition.status, "False");
        assert!(p.exceeded.is_none() && !p.record.exhausted);
        // The same standing again: nothing new.
        let again = plan(&observed(&b, Some(&bucket), Some(&p.alerts), &none, at));
        assert!(again.notices.is_empty());
        // Spent: the condition, one exhaustion event, the record says so.
        let spent = fold_bucket(&b, Some(&bucket), &spend(10, 0), ts(at));
        let p = plan(&observed(&b, Some(&spent), Some(&again.alerts), &none, at));
        assert_eq!(p.notices.len(), 1);
        assert_eq!(p.notices[0].reason, reason::EXCEEDED);
        let message = p.exceeded.clone().unwrap();
        assert!(
            message.contains("monthly budget of $50") && message.contains("2027-01-01T00:00:00Z"),
            "{message}"
        );
        assert_eq!(
            (p.condition.status.as_str(), p.condition.reason.as_str()),
            ("True", "BudgetExceeded")
        );
        assert!(p.record.exhausted);
        assert_eq!(p.record.resets_at, ts("2027-01-01T00:00:00Z").as_second());
        let quiet = plan(&observed(&b, Some(&spent), Some(&p.alerts), &none, at));
        assert!(quiet.notices.is_empty());
        // The next month: the stored bucket is of the past, so nothing is
        // spent and the alerts may fire again.
        let next = plan(&observed(
            &b,
            Some(&spent),
            Some(&p.alerts),
            &none,
            "2027-01-01T00:00:00Z",
        ));
        assert!(next.exceeded.is_none() && !next.record.exhausted);
        assert_eq!(next.record.spent, BudgetSpend::default());
        assert_eq!(next.alerts.period, "2027-01");
        assert!(next.alerts.sent.is_empty());
    }

    #[test]
    fn the_record_carries_the_folded_cursors_and_the_look_is_at_the_reset() {
        let b = monthly("50");
        let collected = BTreeMap::from([(
            "replica-a".to_string(),
            UsageCursor {
                series: 3,
                seen_at: Time(ts("2026-12-31T23:58:00Z")),
                counters: spend(2, 7),
            },
        )]);
        let p = plan(&observed(
            &b,
            None,
            None,
            &collected,
            "2026-12-31T23:59:00Z",
        ));
        let c = p.record.cursors["replica-a"];
        assert_eq!((c.series, c.spend.tokens), (3, 14));
        assert_eq!(c.spend.picodollars, 2_000_000_000_000);
        assert_eq!(p.requeue, MINUTE + Duration::from_millis(1));
        assert_eq!(p.record.collect_every_secs, 10);
        assert_eq!(p.record.usd_picodollars, Some(50_000_000_000_000));
    }

    #[test]
    fn an_unknown_zone_is_reported_and_the_budget_kept_in_utc() {
        let b = Budget {
            time_zone: Some("Mars/Olympus".into()),
            ..monthly("50")
        };
        let none = BTreeMap::new();
        let p = plan(&observed(&b, None, None, &none, "2026-12-10T00:00:00Z"));
        assert_eq!(p.condition.reason, reason::UNKNOWN_TIME_ZONE);
        assert!(
            p.condition
                .message
                .contains("\"Mars/Olympus\" is not an IANA time zone")
        );
        assert_eq!(p.record.resets_at, ts("2027-01-01T00:00:00Z").as_second());
    }

    #[test]
    fn the_trigger_moves_with_the_spend_only() {
        let b = monthly("50");
        let a = fold_bucket(&b, None, &spend(1, 0), ts("2026-12-10T00:00:00Z"));
        let same = a.clone();
        let more = fold_bucket(&b, Some(&a), &spend(1, 0), ts("2026-12-10T00:00:00Z"));
        assert_eq!(trigger_hash(Some(&a)), trigger_hash(Some(&same)));
        assert_ne!(trigger_hash(Some(&a)), trigger_hash(Some(&more)));
        assert_ne!(trigger_hash(None), trigger_hash(Some(&a)));
    }
}
