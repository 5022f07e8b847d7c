//! Budgets: which calendar period a moment falls in (in the budget's time
//! zone), when that period ends, and what a period's spend means for the
//! token: fine, past an alert threshold, or spent. Pure: the operator folds
//! and decides with it, the proxy words its refusals with it.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

use crate::pricing::Picodollars;
use crate::resources::{Budget, BudgetPeriod};

/// One calendar period of a budget: `[start, end)`, and a key that names
/// it (`2026-12`, `2026-W49`, `2026-12-01`, with the zone unless UTC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    pub key: String,
    pub start: Timestamp,
    pub end: Timestamp,
}

/// The zone a budget's calendar is in; an error names a zone that does not
/// exist.
pub fn zone(budget: &Budget) -> Result<TimeZone, String> {
    match budget.time_zone.as_deref() {
        None | Some("UTC") => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name)
            .map_err(|_| format!("spec.budget.timeZone {name:?} is not an IANA time zone")),
    }
}

/// The period `now` falls in.
pub fn period(kind: BudgetPeriod, tz: &TimeZone, now: Timestamp) -> Period {
    let local = now.to_zoned(tz.clone());
    let today = local.date();
    let (first, next): (Date, Date) = match kind {
        BudgetPeriod::Day => (today, today.tomorrow().unwrap_or(today)),
        BudgetPeriod::Week => {
            let back = i64::from(today.weekday().to_monday_zero_offset());
            let monday = today.checked_sub(back.days()).unwrap_or(today);
            (monday, monday.checked_add(7.days()).unwrap_or(monday))
        }
        BudgetPeriod::Month => {
            let first = today.first_of_month();
            (first, first.checked_add(1.month()).unwrap_or(first))
        }
    };
    let at = |d: Date| -> Timestamp {
        // Midnight may not exist (a DST jump at 00:00): the zone's rules
        // pick the first instant of the day.
        d.to_zoned(tz.clone())
            .map(|z: Zoned| z.timestamp())
            .unwrap_or(now)
    };
    let name = match kind {
        BudgetPeriod::Day => first.strftime("%Y-%m-%d").to_string(),
        BudgetPeriod::Week => {
            let iso = first.iso_week_date();
            format!("{}-W{:02}", iso.year(), iso.week())
        }
        BudgetPeriod::Month => first.strftime("%Y-%m").to_string(),
    };
    let key = match tz.iana_name() {
        None | Some("UTC") => name,
        Some(zone) => format!("{name} {zone}"),
    };
    Period {
        key,
        start: at(first),
        end: at(next),
    }
}

/// A period's spend so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spent {
    pub picodollars: u64,
    /// Input plus output tokens.
    pub tokens: u64,
}

/// What a budget's spend means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    /// The larger of the USD and token shares used, in whole percent
    /// (rounded down; may exceed 100).
    pub percent: u64,
    /// A limit is reached: the token is refused until the period ends.
    pub exceeded: bool,
    /// What was reached, for messages, e.g. "$50 of $50" or "2000000 of
    /// 2000000 tokens".
    pub detail: String,
}

/// The USD limit of a budget, if it has one that parses.
pub fn usd_limit(budget: &Budget) -> Option<Picodollars> {
    budget.usd.as_deref().and_then(|s| s.parse().ok())
}

pub fn standing(budget: &Budget, spent: Spent) -> Standing {
    let mut percent = 0u64;
    let mut exceeded = false;
    let mut details = Vec::new();
    if let Some(limit) = usd_limit(budget) {
        let p = share(spent.picodollars, limit.0);
        percent = percent.max(p);
        exceeded |= spent.picodollars >= limit.0;
        details.push(format!(
            "${} of ${}",
            Picodollars(spent.picodollars).to_decimal_string(),
            limit.to_decimal_string()
        ));
    }
    if let Some(limit) = budget.tokens {
        let p = share(spent.tokens, limit);
        percent = percent.max(p);
        exceeded |= spent.tokens >= limit;
        details.push(format!("{} of {limit} tokens", spent.tokens));
    }
    Standing {
        percent,
        exceeded,
        detail: details.join(", "),
    }
}

fn share(used: u64, limit: u64) -> u64 {
    if limit == 0 {
        return u64::MAX;
    }
    u64::try_from(u128::from(used) * 100 / u128::from(limit)).unwrap_or(u64::MAX)
}

/// A budget in words, for messages: "monthly budget of $50 and 2000000
/// tokens".
pub fn describe(period: BudgetPeriod, usd: Option<Picodollars>, tokens: Option<u64>) -> String {
    let adjective = match period {
        BudgetPeriod::Day => "daily",
        BudgetPeriod::Week => "weekly",
        BudgetPeriod::Month => "monthly",
    };
    let limits: Vec<String> = usd
        .map(|p| format!("${}", p.to_decimal_string()))
        .into_iter()
        .chain(tokens.map(|t| format!("{t} tokens")))
        .collect();
    format!("{adjective} budget of {}", limits.join(" and "))
}

/// The alert thresholds crossed going from `before` to `after` percent.
pub fn alerts_crossed(budget: &Budget, before: u64, after: u64) -> Vec<u8> {
    let mut crossed: Vec<u8> = budget
        .alert_at
        .iter()
        .map(|a| a.0)
        .filter(|&a| before < u64::from(a) && u64::from(a) <= after)
        .collect();
    crossed.sort_unstable();
    crossed.dedup();
    crossed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::AlertPercent;

    fn budget(period: BudgetPeriod, tz: Option<&str>) -> Budget {
        Budget {
            period,
            time_zone: tz.map(str::to_string),
            usd: Some("50".into()),
            tokens: Some(2_000_000),
            alert_at: vec![AlertPercent(80), AlertPercent(50)],
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn periods_in_utc() {
        let now = ts("2026-12-02T15:30:00Z");
        let month = period(BudgetPeriod::Month, &TimeZone::UTC, now);
        assert_eq!(month.key, "2026-12");
        assert_eq!(month.start, ts("2026-12-01T00:00:00Z"));
        assert_eq!(month.end, ts("2027-01-01T00:00:00Z"));
        let day = period(BudgetPeriod::Day, &TimeZone::UTC, now);
        assert_eq!(day.key, "2026-12-02");
        assert_eq!(day.end, ts("2026-12-03T00:00:00Z"));
        // 2026-12-02 is a Wednesday: the week began on Monday the 30th.
        let week = period(BudgetPeriod::Week, &TimeZone::UTC, now);
        assert_eq!(week.start, ts("2026-11-30T00:00:00Z"));
        assert_eq!(week.end, ts("2026-12-07T00:00:00Z"));
        assert_eq!(week.key, "2026-W49");
        // The last instant of a period is in it; its end is in the next.
        let last = period(
            BudgetPeriod::Month,
            &TimeZone::UTC,
            ts("2026-12-31T23:59:59Z"),
        );
        assert_eq!(last.key, "2026-12");
        let next = period(BudgetPeriod::Month, &TimeZone::UTC, month.end);
        assert_eq!(next.key, "2027-01");
    }

    #[test]
    fn periods_follow_the_zone_and_its_daylight_saving_changes() {
        let paris = zone(&budget(BudgetPeriod::Day, Some("Europe/Paris"))).unwrap();
        // 23:30 UTC on 31 Dec is already 1 Jan in Paris.
        let p = period(BudgetPeriod::Month, &paris, ts("2026-12-31T23:30:00Z"));
        assert_eq!(p.key, "2027-01 Europe/Paris");
        assert_eq!(p.start, ts("2026-12-31T23:00:00Z"));
        // The day clocks go forward is 23 hours long.
        let d = period(BudgetPeriod::Day, &paris, ts("2027-03-28T12:00:00Z"));
        assert_eq!(d.end.as_second() - d.start.as_second(), 23 * 3600);
        assert!(zone(&budget(BudgetPeriod::Day, Some("Mars/Olympus"))).is_err());
        assert_eq!(
            zone(&budget(BudgetPeriod::Day, None)).unwrap(),
            TimeZone::UTC
        );
    }

    #[test]
    fn the_schema_refuses_a_budget_with_no_limit_and_an_unknown_period_is_refused() {
        let schema = serde_json::to_value(schemars::schema_for!(Budget)).unwrap();
        let rules = &schema["x-kubernetes-validations"];
        assert_eq!(rules[0]["rule"], "has(self.usd) || has(self.tokens)");
        let props = &schema["properties"];
        for field in ["period", "timeZone", "usd", "tokens", "alertAt"] {
            assert!(props.get(field).is_some(), "{field} in {schema}");
        }
        let b: Budget =
            serde_json::from_value(serde_json::json!({"period": "week", "usd": "5"})).unwrap();
        assert_eq!(b.period, BudgetPeriod::Week);
        assert!(serde_json::from_value::<Budget>(serde_json::json!({"period": "year"})).is_err());
    }

    #[test]
    fn standing_takes_the_larger_share_and_alerts_cross_once() {
        let b = budget(BudgetPeriod::Month, None);
        let s = standing(
            &b,
            Spent {
                picodollars: 40_000_000_000_000,
                tokens: 100,
            },
        );
        assert_eq!((s.percent, s.exceeded), (80, false));
        assert_eq!(s.detail, "$40 of $50, 100 of 2000000 tokens");
        let s = standing(
            &b,
            Spent {
                picodollars: 0,
                tokens: 2_000_000,
            },
        );
        assert!(s.exceeded);
        assert_eq!(alerts_crossed(&b, 10, 85), [50, 80]);
        assert_eq!(alerts_crossed(&b, 50, 79), Vec::<u8>::new());
        assert_eq!(alerts_crossed(&b, 79, 80), [80]);
        assert_eq!(
            describe(BudgetPeriod::Month, usd_limit(&b), b.tokens),
            "monthly budget of $50 and 2000000 tokens"
        );
        assert_eq!(
            describe(BudgetPeriod::Day, None, Some(5)),
            "daily budget of 5 tokens"
        );
    }
}
