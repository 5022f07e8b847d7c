//! Spend: what each forwarded request cost, at the price table's rates.
//!
//! When a response ends, [`record`] prices the usage read off its body
//! (one table lookup per request at most) and adds the cost to
//! `strake_spend_usd_total` on `/metrics`; the caller adds the same
//! [`Outcome`] to the token's exact counters ([`crate::index::UsageCell`],
//! in picodollars: the one home `/usage`, the collector and budgets read). A request whose cost is
//! unknown is counted in `strake_unpriced_requests_total`, never as $0:
//! `no_price` when the model has no row in the table, `no_usage` when a
//! 2xx answer for a named model carried no token counts (an OpenAI stream
//! without `stream_options.include_usage`, say).
//!
//! The table can change at runtime (a file-mode reload): [`Prices`] holds
//! it with a generation number, and each of a token's model slots keeps
//! the rates it resolved and the generation they came from, so the lookup
//! is repeated only after a change.
//!
//! Label cardinality: a token gets at most [`MAX_MODELS_PER_TOKEN`] values
//! of the `model` label; requests for further models are priced all the
//! same and counted under `model="other"`. Model series are created only
//! once the upstream answered (with usage, or 2xx), so a client naming
//! made-up models creates none.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use strake_crds::pricing::{Picodollars, PriceRates, PriceTable, TokenCounts};

use crate::index::{TokenPolicy, Upstream};
use crate::metrics::{Metrics, UsdCounter};
use crate::usage::Usage;

/// The most `model` label values one token's series may carry.
pub const MAX_MODELS_PER_TOKEN: usize = 16;
/// The `model` label of requests beyond [`MAX_MODELS_PER_TOKEN`].
pub const OTHER_MODEL: &str = "other";
/// The `model` label of requests whose model could not be read.
pub const UNKNOWN_MODEL: &str = "unknown";
/// The `reason` label values of `strake_unpriced_requests_total`.
pub const UNPRICED_REASONS: [&str; 2] = [NO_PRICE, NO_USAGE];
const NO_PRICE: &str = "no_price";
const NO_USAGE: &str = "no_usage";

/// The price table requests are priced with, swappable at runtime.
pub struct Prices {
    table: ArcSwap<PriceTable>,
    generation: AtomicU64,
}

impl Prices {
    pub fn new(table: PriceTable) -> Prices {
        Prices {
            table: ArcSwap::from_pointee(table),
            generation: AtomicU64::new(0),
        }
    }

    /// Replaces the table; every token's slots re-resolve on their next use.
    pub fn replace(&self, table: PriceTable) {
        self.table.store(Arc::new(table));
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn table(&self) -> Arc<PriceTable> {
        self.table.load_full()
    }

    fn rates(&self, upstream: &Upstream, model: &str) -> Option<PriceRates> {
        self.table
            .load()
            .lookup(upstream.provider, model)
            .map(|p| p.rates)
    }
}

/// The token counts a request is billed for, from what the upstream
/// reported. Anthropic's one-hour cache writes are not told apart from
/// five-minute ones yet, so all writes are priced at the five-minute rate.
pub fn counts(usage: &Usage) -> TokenCounts {
    TokenCounts {
        input: usage.input_tokens.unwrap_or(0),
        output: usage.output_tokens.unwrap_or(0),
        cached_input: usage.cached_input_tokens.unwrap_or(0),
        cache_write: usage.cache_write_tokens.unwrap_or(0),
        cache_write_1h: 0,
    }
}

/// What a forwarded request means for spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Priced(Picodollars),
    /// Tokens were used, but the model has no price.
    NoPrice,
    /// A 2xx answer for a named model without token counts.
    NoUsage,
    /// Nothing to count: an error answer without usage, or no model at all
    /// (`GET /v1/models`, a file upload).
    Nothing,
}

/// The pure decision: `rates` is the model's price, if it has one.
pub fn assess(
    rates: Option<PriceRates>,
    counts: &TokenCounts,
    status: u16,
    model_named: bool,
) -> Outcome {
    let used = counts.input > 0 || counts.output > 0;
    match (used, rates) {
        (true, Some(r)) => Outcome::Priced(r.cost(counts)),
        (true, None) => Outcome::NoPrice,
        (false, _) if model_named && (200..300).contains(&status) => Outcome::NoUsage,
        (false, _) => Outcome::Nothing,
    }
}

/// What `outcome` adds to a token's exact spend: `None` when tokens were
/// used at an unknown cost (so the request is counted as unpriced, never as
/// $0). `outcome` is `None` when pricing is off.
pub fn picodollars(outcome: Option<Outcome>, counts: &TokenCounts) -> Option<u64> {
    match outcome {
        Some(Outcome::Priced(cost)) => Some(cost.0),
        Some(Outcome::NoPrice | Outcome::NoUsage) => None,
        Some(Outcome::Nothing) => Some(0),
        None => (counts.input == 0 && counts.output == 0).then_some(0),
    }
}

/// A token's model slots (rates resolved per model, and their series).
/// Part of the token's state, so it survives reloads.
#[derive(Debug, Default)]
pub struct TokenSpend {
    slots: Mutex<Vec<ModelSlot>>,
}

/// One (upstream, model label) of a token: the resolved rates and the
/// series, each created on first use.
#[derive(Debug)]
struct ModelSlot {
    upstream: Arc<str>,
    model: Box<str>,
    /// The table generation `rates` was resolved from; `None` for the
    /// overflow slot, which serves many models and resolves every time.
    generation: Option<u64>,
    rates: Option<PriceRates>,
    spend: Option<UsdCounter>,
    unpriced: [Option<Counter>; 2],
}

impl TokenSpend {
    /// The (upstream, model label) pairs with series, for removing them.
    pub fn series(&self) -> Vec<(Arc<str>, Box<str>)> {
        self.lock()
            .iter()
            .map(|s| (s.upstream.clone(), s.model.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ModelSlot>> {
        // Slots hold plain values and counter handles; a panic mid-update
        // leaves nothing half-done that matters.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Prices one forwarded request and counts it. `model`: what the request
/// named (body or path).
pub fn record(
    prices: &Prices,
    metrics: &Metrics,
    token: &TokenPolicy,
    upstream: &Upstream,
    model: Option<&str>,
    counts: &TokenCounts,
    status: u16,
) -> Outcome {
    let used = counts.input > 0 || counts.output > 0;
    if !used && (model.is_none() || !(200..300).contains(&status)) {
        return Outcome::Nothing;
    }
    let spend = &token.state.spend;
    let generation = prices.generation.load(Ordering::Acquire);
    let mut slots = spend.lock();
    let slot = slot(&mut slots, &upstream.id, model.unwrap_or(UNKNOWN_MODEL));
    let rates = match (model, slot.generation) {
        (None, _) => None,
        (Some(_), Some(g)) if g == generation => slot.rates,
        (Some(m), Some(_)) => {
            slot.rates = prices.rates(upstream, m);
            slot.generation = Some(generation);
            slot.rates
        }
        (Some(m), None) => prices.rates(upstream, m),
    };
    let outcome = assess(rates, counts, status, model.is_some());
    let new_unpriced = |reason| {
        metrics.unpriced(
            &token.identity,
            &token.name,
            &upstream.id,
            &slot.model,
            reason,
        )
    };
    match outcome {
        Outcome::Priced(cost) => {
            slot.spend
                .get_or_insert_with(|| {
                    metrics.spend(&token.identity, &token.name, &upstream.id, &slot.model)
                })
                .inc_by(cost.as_usd_f64());
        }
        Outcome::NoPrice | Outcome::NoUsage => {
            let i = usize::from(outcome == Outcome::NoUsage);
            let reason = UNPRICED_REASONS[i];
            slot.unpriced[i]
                .get_or_insert_with(|| new_unpriced(reason))
                .inc();
        }
        Outcome::Nothing => {}
    }
    outcome
}

/// The slot for (`upstream`, `model`): an existing one, a new one while the
/// token has room, else the upstream's overflow slot.
fn slot<'s>(slots: &'s mut Vec<ModelSlot>, upstream: &Arc<str>, model: &str) -> &'s mut ModelSlot {
    let same_upstream =
        |s: &ModelSlot| Arc::ptr_eq(&s.upstream, upstream) || s.upstream == *upstream;
    let index = match slots
        .iter()
        .position(|s| same_upstream(s) && *s.model == *model && s.generation.is_some())
    {
        Some(i) => i,
        None => {
            let named = slots.iter().filter(|s| s.generation.is_some()).count();
            let overflow = named >= MAX_MODELS_PER_TOKEN;
            match overflow
                .then(|| {
                    slots
                        .iter()
                        .position(|s| same_upstream(s) && s.generation.is_none())
                })
                .flatten()
            {
                Some(i) => i,
                None => {
                    slots.push(ModelSlot {
                        upstream: upstream.clone(),
                        model: if overflow { OTHER_MODEL } else { model }.into(),
                        // Unresolved: no generation matches u64::MAX in practice.
                        generation: (!overflow).then_some(u64::MAX),
                        rates: None,
                        spend: None,
                        unpriced: [None, None],
                    });
                    slots.len() - 1
                }
            }
        }
    };
    &mut slots[index]
}

#[cfg(test)]
mod tests {
    use super::*;
    use strake_crds::pricing::{PriceRow, UsdPerMillion};
    use strake_crds::provider::Provider;

    fn table(rows: &[(&str, u64, u64)]) -> PriceTable {
        PriceTable::empty()
            .overridden(
                rows.iter()
                    .map(|(model, input, output)| PriceRow {
                        provider: Provider::OpenAi,
                        model: (*model).into(),
                        input: UsdPerMillion(input * 1_000_000),
                        output: UsdPerMillion(output * 1_000_000),
                        cached_input: None,
                        cache_write: None,
                        cache_write_1h: None,
                        long_context: None,
                        source: None,
                        date: None,
                    })
                    .collect(),
            )
            .unwrap()
    }

    fn used(input: u64, output: u64) -> TokenCounts {
        TokenCounts {
            input,
            output,
            ..TokenCounts::default()
        }
    }

    #[test]
    fn assess_never_turns_unknown_into_zero() {
        let rates = table(&[("m", 2, 8)])
            .lookup(Provider::OpenAi, "m")
            .unwrap()
            .rates;
        assert_eq!(
            assess(Some(rates), &used(1_000_000, 500_000), 200, true),
            Outcome::Priced(Picodollars(6_000_000_000_000))
        );
        assert_eq!(assess(None, &used(10, 0), 200, true), Outcome::NoPrice);
        assert_eq!(assess(None, &used(0, 0), 200, true), Outcome::NoUsage);
        assert_eq!(
            assess(Some(rates), &used(0, 0), 200, true),
            Outcome::NoUsage
        );
        assert_eq!(assess(None, &used(0, 0), 404, true), Outcome::Nothing);
        assert_eq!(assess(None, &used(0, 0), 200, false), Outcome::Nothing);
    }

    fn policy_and_upstream() -> (Arc<TokenPolicy>, Arc<Upstream>) {
        crate::index::tests::policy_and_upstream("alice", "openai", Provider::OpenAi)
    }

    #[test]
    fn record_prices_counts_and_caps_model_labels() {
        let prices = Prices::new(table(&[("gpt-x", 2, 8)]));
        let metrics = Metrics::new();
        let (token, upstream) = policy_and_upstream();
        // What the caller adds to the token's counters.
        let (spent, unpriced) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        let rec = |model: Option<&str>, c: TokenCounts| {
            let outcome = record(&prices, &metrics, &token, &upstream, model, &c, 200);
            match picodollars(Some(outcome), &c) {
                Some(p) => spent.set(spent.get() + p),
                None => unpriced.set(unpriced.get() + 1),
            }
            outcome
        };
        assert!(matches!(
            rec(Some("gpt-x"), used(1_000_000, 0)),
            Outcome::Priced(_)
        ));
        assert!(matches!(
            rec(Some("gpt-x-2026-01-01"), used(0, 1_000_000)),
            Outcome::Priced(_)
        ));
        assert_eq!(rec(Some("mystery"), used(5, 5)), Outcome::NoPrice);
        assert_eq!(rec(None, used(5, 5)), Outcome::NoPrice);
        assert_eq!(rec(Some("gpt-x"), used(0, 0)), Outcome::NoUsage);
        assert_eq!(Picodollars(spent.get()).to_string(), "10");
        assert_eq!(unpriced.get(), 3);
        let text = metrics.encode();
        let series = r#"identity="alice@example.com",token="alice",upstream="openai""#;
        for line in [
            format!(r#"strake_spend_usd_total{{{series},model="gpt-x"}} 2.0"#),
            format!(r#"strake_spend_usd_total{{{series},model="gpt-x-2026-01-01"}} 8.0"#),
            format!(
                r#"strake_unpriced_requests_total{{{series},model="mystery",reason="no_price"}} 1"#
            ),
            format!(
                r#"strake_unpriced_requests_total{{{series},model="unknown",reason="no_price"}} 1"#
            ),
            format!(
                r#"strake_unpriced_requests_total{{{series},model="gpt-x",reason="no_usage"}} 1"#
            ),
        ] {
            assert!(text.contains(&line), "{line} in\n{text}");
        }

        // A client cycling through model names gets the cap, then "other";
        // each request is still priced by its real model.
        for i in 0..40 {
            rec(Some(&format!("made-up-{i}")), used(1, 1));
        }
        assert!(matches!(
            rec(Some("gpt-x-2026-02-02"), used(1_000_000, 0)),
            Outcome::Priced(_)
        ));
        assert_eq!(Picodollars(spent.get()).to_string(), "12");
        let labels = token.state.spend.series();
        assert_eq!(labels.len(), MAX_MODELS_PER_TOKEN + 1);
        assert!(labels.iter().any(|(_, m)| &**m == OTHER_MODEL));
        assert!(metrics.encode().contains(&format!(
            r#"strake_spend_usd_total{{{series},model="other"}} 2.0"#
        )));
    }

    #[test]
    fn a_new_table_reprices_from_the_next_request() {
        let prices = Prices::new(table(&[]));
        let metrics = Metrics::new();
        let (token, upstream) = policy_and_upstream();
        let c = used(1_000_000, 0);
        let rec = || record(&prices, &metrics, &token, &upstream, Some("gpt-x"), &c, 200);
        assert_eq!(rec(), Outcome::NoPrice);
        prices.replace(table(&[("gpt-x", 3, 3)]));
        assert_eq!(rec(), Outcome::Priced(Picodollars(3_000_000_000_000)));
        prices.replace(table(&[]));
        assert_eq!(rec(), Outcome::NoPrice);
    }

    #[test]
    fn errors_and_modelless_requests_leave_no_series() {
        let prices = Prices::new(table(&[]));
        let metrics = Metrics::new();
        let (token, upstream) = policy_and_upstream();
        for (model, status) in [(Some("made-up"), 404), (None, 200), (Some("x"), 500)] {
            let o = record(
                &prices,
                &metrics,
                &token,
                &upstream,
                model,
                &used(0, 0),
                status,
            );
            assert_eq!(o, Outcome::Nothing);
        }
        assert!(token.state.spend.series().is_empty());
        assert!(!metrics.encode().contains("made-up"));
    }
}
