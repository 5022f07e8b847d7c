//! Budgets on the request path: whether a budgeted token (or upstream) may
//! be forwarded, decided locally from the published [`BudgetRecord`] and
//! this replica's own counters, with no round trip.
//!
//! The record says what every replica together had spent in the period as
//! of the operator's last fold, and which of each replica's cumulative
//! counters that fold included. What this replica served since is its
//! counters minus its cursor. So:
//!
//! - **spent**: the operator says so, or the fold's spend plus this
//!   replica's unreported spend reaches a limit. Refused with the
//!   provider's quota error until the period ends (`x-should-retry: false`).
//! - **held back**: with N live replicas, this replica's unreported spend
//!   has reached its share, (limit - fold's spend) / N, of what is left.
//!   The budget may not be spent, so the refusal is retryable, after the
//!   next collection.
//! - at the period's end the published spend belongs to a past period: it
//!   counts as zero until the operator publishes the new period (this
//!   replica's unreported spend still counts, which errs on the safe side).

use strake_crds::budget;
use strake_crds::contract::{BudgetRecord, BudgetSpend};
use strake_crds::pricing::Picodollars;
use strake_crds::usage::Counters;

/// This replica's counters for the budgeted resource.
#[derive(Clone, Copy, Debug)]
pub struct Own<'a> {
    pub instance: &'a str,
    pub series: u64,
    pub counters: Counters,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Open,
    Spent,
    /// Retry after this many seconds.
    HeldBack(u64),
}

/// The period's spend as this replica knows it: the fold's plus its own
/// unreported, and whether the period has ended since the fold.
pub fn known_spend(record: &BudgetRecord, own: &Own<'_>, now: i64) -> (BudgetSpend, BudgetSpend) {
    let mine = BudgetSpend {
        picodollars: own.counters.spend_picodollars,
        tokens: own
            .counters
            .input_tokens
            .saturating_add(own.counters.output_tokens),
    };
    let unreported = match record.cursors.get(own.instance) {
        Some(c) if c.series == own.series => BudgetSpend {
            picodollars: mine.picodollars.saturating_sub(c.spend.picodollars),
            tokens: mine.tokens.saturating_sub(c.spend.tokens),
        },
        // Never folded (a new replica, or counters that started over).
        _ => mine,
    };
    let folded = if now >= record.resets_at {
        BudgetSpend::default()
    } else {
        record.spent
    };
    (folded, unreported)
}

pub fn decide(record: &BudgetRecord, own: &Own<'_>, now: i64, replicas: u32) -> Verdict {
    let rolled = now >= record.resets_at;
    if record.exhausted && !rolled {
        return Verdict::Spent;
    }
    let (folded, unreported) = known_spend(record, own, now);
    let replicas = u64::from(replicas.max(1));
    let mut held = false;
    for (limit, folded, unreported) in [
        (
            record.usd_picodollars,
            folded.picodollars,
            unreported.picodollars,
        ),
        (record.tokens, folded.tokens, unreported.tokens),
    ] {
        let Some(limit) = limit else { continue };
        if folded.saturating_add(unreported) >= limit {
            return Verdict::Spent;
        }
        held |= unreported >= (limit - folded) / replicas;
    }
    if held {
        // The next fold, then its publication (about a second).
        Verdict::HeldBack(record.collect_every_secs.max(1) + 1)
    } else {
        Verdict::Open
    }
}

/// The budget in words, for refusals and `/strake/v1/me`.
pub fn describe(record: &BudgetRecord) -> String {
    budget::describe(
        record.period,
        record.usd_picodollars.map(Picodollars),
        record.tokens,
    )
}

/// The reset instant as RFC 3339.
pub fn resets_at(record: &BudgetRecord) -> String {
    k8s_openapi::jiff::Timestamp::from_second(record.resets_at)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The token's budget as its holder sees it on `/strake/v1/me`: the limits,
/// the period's spend as this replica knows it (the last fold plus what it
/// served since), what is left and when it resets. `replicas` is the live
/// replica count ([`crate::fleet::Fleet::live_replicas`]).
pub fn view(record: &BudgetRecord, own: &Own<'_>, now: i64, replicas: u32) -> serde_json::Value {
    let (folded, unreported) = known_spend(record, own, now);
    let spent_usd = folded.picodollars.saturating_add(unreported.picodollars);
    let spent_tokens = folded.tokens.saturating_add(unreported.tokens);
    let usd = |p: u64| Picodollars(p).to_decimal_string();
    let state = match decide(record, own, now, replicas) {
        Verdict::Open => "open",
        Verdict::Spent => "spent",
        Verdict::HeldBack(_) => "heldBack",
    };
    serde_json::json!({
        "description": describe(record),
        "period": record.period,
        "limitUsd": record.usd_picodollars.map(usd),
        "limitTokens": record.tokens,
        "spentUsd": usd(spent_usd),
        "spentTokens": spent_tokens,
        "remainingUsd": record.usd_picodollars.map(|l| usd(l.saturating_sub(spent_usd))),
        "remainingTokens": record.tokens.map(|l| l.saturating_sub(spent_tokens)),
        "resetsAt": resets_at(record),
        "state": state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use strake_crds::BudgetPeriod;
    use strake_crds::contract::BudgetCursor;

    const DOLLAR: u64 = 1_000_000_000_000;
    const RESET: i64 = 2_000_000_000;

    fn record(spent: u64, exhausted: bool) -> BudgetRecord {
        BudgetRecord {
            period: BudgetPeriod::Month,
            usd_picodollars: Some(10 * DOLLAR),
            tokens: None,
            resets_at: RESET,
            spent: BudgetSpend {
                picodollars: spent * DOLLAR,
                tokens: 0,
            },
            exhausted,
            cursors: BTreeMap::from([(
                "me".to_string(),
                BudgetCursor {
                    series: 7,
                    spend: BudgetSpend {
                        picodollars: 2 * DOLLAR,
                        tokens: 0,
                    },
                },
            )]),
            collect_every_secs: 10,
        }
    }

    fn own(series: u64, dollars: u64) -> Own<'static> {
        Own {
            instance: "me",
            series,
            counters: Counters {
                spend_picodollars: dollars * DOLLAR,
                ..Counters::default()
            },
        }
    }

    #[test]
    fn the_operator_or_this_replicas_own_spend_since_the_fold_spends_the_budget() {
        let now = RESET - 60;
        // Folded $6, of which $2 from here; $3 more served here since.
        assert_eq!(decide(&record(6, false), &own(7, 5), now, 1), Verdict::Open);
        // $4 since the fold: 6 + 4 reaches the $10.
        assert_eq!(
            decide(&record(6, false), &own(7, 6), now, 1),
            Verdict::Spent
        );
        // The operator says so, whatever this replica knows.
        assert_eq!(decide(&record(1, true), &own(7, 2), now, 1), Verdict::Spent);
        // Counters that started over were never folded: all of them count.
        assert_eq!(
            decide(&record(6, false), &own(8, 4), now, 1),
            Verdict::Spent
        );
        let stranger = Own {
            instance: "new",
            ..own(7, 3)
        };
        assert_eq!(decide(&record(6, false), &stranger, now, 1), Verdict::Open);
    }

    #[test]
    fn the_period_end_lifts_the_block_without_the_operator() {
        assert_eq!(
            decide(&record(12, true), &own(7, 2), RESET, 1),
            Verdict::Open
        );
        // Spend unreported at the end still counts in the new period.
        assert_eq!(
            decide(&record(12, true), &own(7, 12), RESET, 1),
            Verdict::Spent
        );
    }

    #[test]
    fn with_more_replicas_each_holds_back_at_its_share_of_what_is_left() {
        let now = RESET - 60;
        // $4 left over 2 replicas: $2 each. $1 unreported here: open.
        assert_eq!(decide(&record(6, false), &own(7, 3), now, 2), Verdict::Open);
        // $2 unreported: held back, retryable after the next collection.
        assert_eq!(
            decide(&record(6, false), &own(7, 4), now, 2),
            Verdict::HeldBack(11)
        );
        // The holder's view says so too.
        assert_eq!(
            view(&record(6, false), &own(7, 4), now, 2)["state"],
            "heldBack"
        );
        assert_eq!(view(&record(6, false), &own(7, 4), now, 1)["state"], "open");
    }

    #[test]
    fn a_token_budget_counts_input_and_output() {
        let r = BudgetRecord {
            usd_picodollars: None,
            tokens: Some(100),
            cursors: BTreeMap::new(),
            ..record(0, false)
        };
        let mut o = own(1, 0);
        o.counters.input_tokens = 60;
        o.counters.output_tokens = 39;
        assert_eq!(decide(&r, &o, 0, 1), Verdict::Open);
        o.counters.output_tokens = 40;
        assert_eq!(decide(&r, &o, 0, 1), Verdict::Spent);
        assert_eq!(describe(&r), "monthly budget of 100 tokens");
        let v = view(&r, &o, 0, 1);
        assert_eq!(v["spentTokens"], 100);
        assert_eq!(v["remainingTokens"], 0);
        assert_eq!(v["limitUsd"], serde_json::Value::Null);
        assert_eq!(v["state"], "spent");
        let v = view(&record(6, false), &own(7, 3), RESET - 1, 1);
        assert_eq!(
            (v["spentUsd"].as_str(), v["remainingUsd"].as_str()),
            (Some("7"), Some("3"))
        );
        assert_eq!(v["period"], "month");
        assert_eq!(resets_at(&r), "2033-05-18T03:33:20Z");
    }
}
