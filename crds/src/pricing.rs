//! What a request cost: the price table and exact spend arithmetic.
//!
//! The built-in table lives in one data file, `crds/data/prices.yaml`
//! (USD per million tokens, each row with its source and the date it was
//! read). Platform teams extend or override it with rows of the same shape
//! ([`PriceTable::with_overrides`]): a row replaces the built-in row with the
//! same provider and model, or adds a new one.
//!
//! Money is counted in [`Picodollars`] (10⁻¹² USD), integers only: a price
//! of $0.075 per million tokens is 75,000 picodollars per token, so every
//! published price is exact and costs add up without rounding.
//!
//! Model names are matched exactly, then without a dated snapshot suffix
//! (see [`PriceTable::lookup`]). A model with no row is *unpriced*:
//! [`PriceTable::cost`] returns `None`, never zero.
//!
//! Pure: no I/O. Reading an overrides file is the caller's.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::provider::Provider;

/// The built-in table's text.
pub const BUILTIN_YAML: &str = include_str!("../data/prices.yaml");

/// Token counts of one request (or a sum of requests), as billed.
///
/// `input` counts **all** input tokens; `cached_input` (read from the
/// provider's prompt cache) and `cache_write` (written to it) are parts of
/// `input`, and `cache_write_1h` is the part of `cache_write` written with
/// Anthropic's one-hour lifetime. `output` includes reasoning tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TokenCounts {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub cache_write_1h: u64,
}

impl TokenCounts {
    /// Field-wise saturating sum.
    pub fn saturating_add(self, other: TokenCounts) -> TokenCounts {
        TokenCounts {
            input: self.input.saturating_add(other.input),
            output: self.output.saturating_add(other.output),
            cached_input: self.cached_input.saturating_add(other.cached_input),
            cache_write: self.cache_write.saturating_add(other.cache_write),
            cache_write_1h: self.cache_write_1h.saturating_add(other.cache_write_1h),
        }
    }
}

/// An amount of US dollars in units of 10⁻¹² USD. Saturates at
/// `u64::MAX` (about $18.4 million) instead of overflowing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Picodollars(pub u64);

const PICO_PER_USD: u64 = 1_000_000_000_000;

impl Picodollars {
    pub const ZERO: Picodollars = Picodollars(0);

    pub fn saturating_add(self, other: Picodollars) -> Picodollars {
        Picodollars(self.0.saturating_add(other.0))
    }

    /// The amount in USD as a float, for Prometheus counters. Exact
    /// amounts stay in `Picodollars`.
    pub fn as_usd_f64(self) -> f64 {
        (self.0 / PICO_PER_USD) as f64 + (self.0 % PICO_PER_USD) as f64 / PICO_PER_USD as f64
    }

    /// A decimal USD string: `"0.001234"`, `"12.5"`, `"0"`; trailing zeros
    /// trimmed, never an exponent.
    pub fn to_decimal_string(self) -> String {
        decimal_string(self.0, 12)
    }
}

impl fmt::Display for Picodollars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal_string())
    }
}

impl std::iter::Sum for Picodollars {
    fn sum<I: Iterator<Item = Picodollars>>(iter: I) -> Picodollars {
        iter.fold(Picodollars::ZERO, Picodollars::saturating_add)
    }
}

/// A decimal amount could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not {expected}")]
pub struct DecimalError {
    input: String,
    expected: &'static str,
}

impl FromStr for Picodollars {
    type Err = DecimalError;

    /// Reads a plain decimal USD amount (`"25"`, `"0.50"`, `"0.000001"`):
    /// digits, at most one point, at most 12 digits after it.
    fn from_str(s: &str) -> Result<Picodollars, DecimalError> {
        parse_decimal(s, 12)
            .map(Picodollars)
            .ok_or_else(|| DecimalError {
                input: s.to_owned(),
                expected: "a USD amount like 12.50 (digits, at most 12 decimals, no sign)",
            })
    }
}

/// A price in USD per million tokens, held as picodollars per token (the
/// same number as micro-USD per million tokens): six decimals, exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UsdPerMillion(pub u64);

/// The highest price a row may carry, $100,000 per million tokens: far
/// above any published price, low enough to catch a misplaced decimal point.
pub const MAX_PRICE: UsdPerMillion = UsdPerMillion(100_000 * 1_000_000);

impl UsdPerMillion {
    /// Picodollars per token.
    pub fn per_token(self) -> u64 {
        self.0
    }
}

impl fmt::Display for UsdPerMillion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&decimal_string(self.0, 6))
    }
}

impl FromStr for UsdPerMillion {
    type Err = DecimalError;

    fn from_str(s: &str) -> Result<UsdPerMillion, DecimalError> {
        parse_decimal(s, 6)
            .map(UsdPerMillion)
            .ok_or_else(|| DecimalError {
                input: s.to_owned(),
                expected: "a price in USD per million tokens like 2.50 (digits, at most 6 decimals, no sign)",
            })
    }
}

impl Serialize for UsdPerMillion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A number, as written in the data file; `{}` of an f64 is the
        // shortest text that reads back to it, so 6 decimals survive.
        s.serialize_f64(self.0 as f64 / 1e6)
    }
}

impl<'de> Deserialize<'de> for UsdPerMillion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UsdPerMillion, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = UsdPerMillion;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a price in USD per million tokens, like 2.50")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<UsdPerMillion, E> {
                v.checked_mul(1_000_000)
                    .map(UsdPerMillion)
                    .ok_or_else(|| E::custom(format!("{v} is too large a price")))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<UsdPerMillion, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v}: a price cannot be negative")))
                    .and_then(|v| self.visit_u64(v))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<UsdPerMillion, E> {
                if !v.is_finite() || v < 0.0 {
                    return Err(E::custom(format!(
                        "{v}: a price must be a non-negative number"
                    )));
                }
                // The shortest decimal that reads back to `v` is what was
                // written (0.075, not 0.07499999…), so it parses exactly.
                self.visit_str(&format!("{v}"))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UsdPerMillion, E> {
                v.trim().parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `digits[.digits]` with at most `scale` decimals, as an integer scaled
/// by 10^scale; `None` for anything else or on overflow.
fn parse_decimal(s: &str, scale: u32) -> Option<u64> {
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty()
        || !digits(whole)
        || !digits(frac)
        || (s.contains('.') && frac.is_empty())
        || frac.len() > scale as usize
    {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac_value: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()? * 10u64.pow(scale - frac.len() as u32)
    };
    whole.checked_mul(10u64.pow(scale))?.checked_add(frac_value)
}

/// `value / 10^scale` in decimal, trailing zeros trimmed.
fn decimal_string(value: u64, scale: u32) -> String {
    let unit = 10u64.pow(scale);
    let (whole, frac) = (value / unit, value % unit);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = scale as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// One row of the price table, as written in the data file, an overrides
/// file, Helm values or the file-mode config (camelCase keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriceRow {
    pub provider: Provider,
    /// The exact model name, without a snapshot date.
    pub model: String,
    /// Uncached input tokens.
    pub input: UsdPerMillion,
    pub output: UsdPerMillion,
    /// Input tokens read from the prompt cache. Absent: billed as input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<UsdPerMillion>,
    /// Input tokens written to the prompt cache (Anthropic: the
    /// five-minute lifetime). Absent: billed as input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<UsdPerMillion>,
    /// Cache writes with Anthropic's one-hour lifetime. Absent: billed as
    /// `cacheWrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<UsdPerMillion>,
    /// Higher prices for every token of a request whose input exceeds a
    /// threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContextRow>,
    /// Where the prices were read. Required in the built-in table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When they were read (`YYYY-MM-DD`). Required in the built-in table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// A long-context tier: when a request's input (all of it, cached and
/// cache writes included) is above `aboveInputTokens`, the whole request is
/// billed at these prices. The cache prices are required where the row
/// has them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LongContextRow {
    pub above_input_tokens: u64,
    pub input: UsdPerMillion,
    pub output: UsdPerMillion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<UsdPerMillion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<UsdPerMillion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<UsdPerMillion>,
}

/// The four prices of one tier, absent ones resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rates {
    pub input: UsdPerMillion,
    pub output: UsdPerMillion,
    pub cached_input: UsdPerMillion,
    pub cache_write: UsdPerMillion,
    pub cache_write_1h: UsdPerMillion,
}

impl Rates {
    fn resolve(
        input: UsdPerMillion,
        output: UsdPerMillion,
        cached_input: Option<UsdPerMillion>,
        cache_write: Option<UsdPerMillion>,
        cache_write_1h: Option<UsdPerMillion>,
    ) -> Rates {
        let cache_write = cache_write.unwrap_or(input);
        Rates {
            input,
            output,
            cached_input: cached_input.unwrap_or(input),
            cache_write,
            cache_write_1h: cache_write_1h.unwrap_or(cache_write),
        }
    }

    /// Exact cost of `counts` at these rates, saturating.
    pub fn cost(&self, counts: &TokenCounts) -> Picodollars {
        let write_1h = counts.cache_write_1h.min(counts.cache_write);
        let write_5m = counts.cache_write - write_1h;
        // A provider that reports more cached than total input is billed
        // for what it reported; the uncached part cannot go below zero.
        let uncached = counts
            .input
            .saturating_sub(counts.cached_input.saturating_add(counts.cache_write));
        let term = |tokens: u64, rate: UsdPerMillion| u128::from(tokens) * u128::from(rate.0);
        let total = [
            term(uncached, self.input),
            term(counts.cached_input, self.cached_input),
            term(write_5m, self.cache_write),
            term(write_1h, self.cache_write_1h),
            term(counts.output, self.output),
        ]
        .into_iter()
        .fold(0u128, u128::saturating_add);
        Picodollars(u64::try_from(total).unwrap_or(u64::MAX))
    }
}

/// A model's rates: below and (if it has one) above its long-context
/// threshold. Small and `Copy`, so callers can keep it by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PriceRates {
    pub base: Rates,
    /// `(threshold, rates)`: above `threshold` input tokens, `rates` apply.
    pub long_context: Option<(u64, Rates)>,
}

impl PriceRates {
    /// The cost of one request. `counts` must be one request's: the tier
    /// is chosen by its input.
    pub fn cost(&self, counts: &TokenCounts) -> Picodollars {
        match &self.long_context {
            Some((threshold, rates)) if counts.input > *threshold => rates.cost(counts),
            _ => self.base.cost(counts),
        }
    }
}

/// A validated row: a model's rates and where they come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Price {
    pub provider: Provider,
    pub model: Box<str>,
    pub rates: PriceRates,
    pub source: Option<Box<str>>,
    pub date: Option<Box<str>>,
}

impl Price {
    /// The cost of one request (see [`PriceRates::cost`]).
    pub fn cost(&self, counts: &TokenCounts) -> Picodollars {
        self.rates.cost(counts)
    }
}

/// Why a price row cannot be used. Messages name the row.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("prices: {0}")]
    Parse(String),
    #[error("prices[{index}] ({provider} {model:?}): {problem}")]
    Row {
        index: usize,
        provider: Provider,
        model: String,
        problem: String,
    },
}

/// Prices by provider and model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriceTable {
    /// One map per provider (indexed like [`Provider::ALL`]), so a lookup
    /// borrows the model name instead of building a key.
    by_provider: [HashMap<Box<str>, Price>; 5],
}

static BUILTIN: LazyLock<PriceTable> = LazyLock::new(|| {
    let rows = parse_rows(BUILTIN_YAML).expect("the built-in price table parses");
    let mut table = PriceTable::default();
    table
        .insert_all(rows, true)
        .expect("the built-in price table is valid");
    table
});

fn provider_slot(p: Provider) -> usize {
    Provider::ALL
        .iter()
        .position(|&q| q == p)
        .expect("ALL lists every provider")
}

impl PriceTable {
    /// The table shipped in `crds/data/prices.yaml`.
    pub fn builtin() -> PriceTable {
        BUILTIN.clone()
    }

    /// A table with no prices: every model is unpriced.
    pub fn empty() -> PriceTable {
        PriceTable::default()
    }

    /// The built-in table with `rows` applied: each replaces the built-in
    /// row of the same provider and model, or adds one. Two override rows
    /// for the same provider and model are an error.
    pub fn with_overrides(rows: Vec<PriceRow>) -> Result<PriceTable, PriceError> {
        PriceTable::builtin().overridden(rows)
    }

    /// This table with `rows` applied, as [`PriceTable::with_overrides`]
    /// does to the built-in one (a second layer of overrides, say).
    pub fn overridden(mut self, rows: Vec<PriceRow>) -> Result<PriceTable, PriceError> {
        self.insert_all(rows, false)?;
        Ok(self)
    }

    fn insert_all(&mut self, rows: Vec<PriceRow>, builtin: bool) -> Result<(), PriceError> {
        let mut seen = std::collections::HashSet::new();
        for (index, row) in rows.into_iter().enumerate() {
            let price = validate(index, row, builtin)?;
            if !seen.insert((price.provider, price.model.clone())) {
                return Err(PriceError::Row {
                    index,
                    provider: price.provider,
                    model: price.model.into(),
                    problem: "listed twice; keep one row per provider and model".into(),
                });
            }
            self.by_provider[provider_slot(price.provider)].insert(price.model.clone(), price);
        }
        Ok(())
    }

    /// The price of `model` at `provider`: the row named exactly, else the
    /// row named without a snapshot suffix:
    ///
    /// - a date: `gpt-4o-2024-08-06` → `gpt-4o`,
    ///   `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`;
    /// - Gemini's three-digit version: `gemini-2.0-flash-001` → `gemini-2.0-flash`.
    ///
    /// Anything else (fine-tuned models, Azure deployment names, aliases
    /// such as `-latest`) needs its own row.
    pub fn lookup(&self, provider: Provider, model: &str) -> Option<&Price> {
        let map = &self.by_provider[provider_slot(provider)];
        if let Some(p) = map.get(model) {
            return Some(p);
        }
        let base = strip_snapshot(model)?;
        map.get(base)
    }

    /// The cost of one request; `None` when the model is unpriced.
    pub fn cost(
        &self,
        provider: Provider,
        model: &str,
        counts: &TokenCounts,
    ) -> Option<Picodollars> {
        self.lookup(provider, model).map(|p| p.cost(counts))
    }

    /// Every price, by provider then model.
    pub fn prices(&self) -> Vec<&Price> {
        let mut all: Vec<&Price> = self.by_provider.iter().flat_map(|m| m.values()).collect();
        all.sort_by(|a, b| {
            (provider_slot(a.provider), &a.model).cmp(&(provider_slot(b.provider), &b.model))
        });
        all
    }

    pub fn len(&self) -> usize {
        self.by_provider.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `model` without its snapshot suffix, if it has one.
fn strip_snapshot(model: &str) -> Option<&str> {
    let b = model.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let n = b.len();
    // -YYYY-MM-DD
    if n > 11 && b[n - 11] == b'-' && b[n - 6] == b'-' && b[n - 3] == b'-' {
        let (y, m, d) = (&b[n - 10..n - 6], &b[n - 5..n - 3], &b[n - 2..]);
        if digits(y) && digits(m) && digits(d) {
            return Some(&model[..n - 11]);
        }
    }
    // -YYYYMMDD
    if n > 9 && b[n - 9] == b'-' && digits(&b[n - 8..]) && b[n - 8] == b'2' {
        return Some(&model[..n - 9]);
    }
    // -NNN (Gemini)
    if n > 4 && b[n - 4] == b'-' && digits(&b[n - 3..]) && model.starts_with("gemini-") {
        return Some(&model[..n - 4]);
    }
    None
}

fn validate(index: usize, row: PriceRow, builtin: bool) -> Result<Price, PriceError> {
    let problem = |p: String| PriceError::Row {
        index,
        provider: row.provider,
        model: row.model.clone(),
        problem: p,
    };
    let model = row.model.trim();
    if model.is_empty() {
        return Err(problem("model is empty".into()));
    }
    if model.len() != row.model.len() || model.chars().any(char::is_whitespace) {
        return Err(problem("model must not contain spaces".into()));
    }
    if builtin {
        if row
            .source
            .as_deref()
            .is_none_or(|s| !s.starts_with("https://"))
        {
            return Err(problem("a built-in row needs its source URL".into()));
        }
        if row.date.as_deref().is_none_or(|d| !is_date(d)) {
            return Err(problem(
                "a built-in row needs the date it was read (YYYY-MM-DD)".into(),
            ));
        }
    } else if let Some(d) = &row.date
        && !is_date(d)
    {
        return Err(problem(format!("date {d:?} is not a date like 2026-12-01")));
    }
    let named = [
        ("input", Some(row.input)),
        ("output", Some(row.output)),
        ("cachedInput", row.cached_input),
        ("cacheWrite", row.cache_write),
        ("cacheWrite1h", row.cache_write_1h),
    ];
    let tier_named = row.long_context.as_ref().map(|t| {
        [
            ("longContext.input", Some(t.input)),
            ("longContext.output", Some(t.output)),
            ("longContext.cachedInput", t.cached_input),
            ("longContext.cacheWrite", t.cache_write),
            ("longContext.cacheWrite1h", t.cache_write_1h),
        ]
    });
    for (name, price) in named.iter().chain(tier_named.iter().flatten()) {
        if let Some(p) = price
            && *p > MAX_PRICE
        {
            return Err(problem(format!(
                "{name} is {p} USD per million tokens, above the {MAX_PRICE} limit: is a decimal point missing?"
            )));
        }
    }
    let base = Rates::resolve(
        row.input,
        row.output,
        row.cached_input,
        row.cache_write,
        row.cache_write_1h,
    );
    let long_context = match &row.long_context {
        None => None,
        Some(t) => {
            if t.above_input_tokens == 0 {
                return Err(problem(
                    "longContext.aboveInputTokens must be above 0".into(),
                ));
            }
            for (name, in_row, in_tier) in [
                ("cachedInput", row.cached_input, t.cached_input),
                ("cacheWrite", row.cache_write, t.cache_write),
                ("cacheWrite1h", row.cache_write_1h, t.cache_write_1h),
            ] {
                if in_row.is_some() && in_tier.is_none() {
                    return Err(problem(format!(
                        "longContext needs {name} too, since the row has one"
                    )));
                }
            }
            Some((
                t.above_input_tokens,
                Rates::resolve(
                    t.input,
                    t.output,
                    t.cached_input,
                    t.cache_write,
                    t.cache_write_1h,
                ),
            ))
        }
    };
    Ok(Price {
        provider: row.provider,
        model: model.into(),
        rates: PriceRates { base, long_context },
        source: row.source.map(String::into_boxed_str),
        date: row.date.map(String::into_boxed_str),
    })
}

fn is_date(d: &str) -> bool {
    jiff::civil::Date::strptime("%Y-%m-%d", d).is_ok()
}

/// Reads a list of price rows (an overrides file, or the built-in table).
/// Errors carry the line and column.
pub fn parse_rows(yaml: &str) -> Result<Vec<PriceRow>, PriceError> {
    if yaml
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(Vec::new());
    }
    serde_saphyr::from_str(yaml).map_err(|e| PriceError::Parse(e.to_string()))
}

/// Parses `yaml` as price rows and applies them over the built-in table.
pub fn table_with_overrides(yaml: &str) -> Result<PriceTable, PriceError> {
    PriceTable::with_overrides(parse_rows(yaml)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd(s: &str) -> UsdPerMillion {
        s.parse().unwrap()
    }

    fn row(provider: Provider, model: &str, input: &str, output: &str) -> PriceRow {
        PriceRow {
            provider,
            model: model.into(),
            input: usd(input),
            output: usd(output),
            cached_input: None,
            cache_write: None,
            cache_write_1h: None,
            long_context: None,
            source: None,
            date: None,
        }
    }

    #[test]
    fn picodollars_print_as_trimmed_decimal_usd() {
        assert_eq!(Picodollars(1_234_000_000).to_decimal_string(), "0.001234");
        assert_eq!(Picodollars(0).to_string(), "0");
        assert_eq!(Picodollars(3 * PICO_PER_USD).to_string(), "3");
        assert_eq!(Picodollars(12_500_000_000_000).to_string(), "12.5");
        assert_eq!(Picodollars(1).to_string(), "0.000000000001");
        assert_eq!(Picodollars(u64::MAX).to_string(), "18446744.073709551615");
    }

    #[test]
    fn picodollars_parse_decimal_usd() {
        assert_eq!("0.001234".parse(), Ok(Picodollars(1_234_000_000)));
        assert_eq!("25".parse(), Ok(Picodollars(25 * PICO_PER_USD)));
        assert_eq!(".5".parse(), Ok(Picodollars(PICO_PER_USD / 2)));
        for bad in [
            "",
            ".",
            "1.",
            "-1",
            "+1",
            "1e3",
            "1.0000000000001",
            "1,5",
            " 1",
            "99999999",
        ] {
            let err = bad.parse::<Picodollars>().unwrap_err();
            assert!(err.to_string().contains("USD amount"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_price_reads_from_yaml_numbers_and_strings_exactly() {
        let rows = parse_rows(
            "- {provider: openai, model: m, input: 0.075, output: '2.50', cachedInput: 3}\n",
        )
        .unwrap();
        assert_eq!(rows[0].input, UsdPerMillion(75_000));
        assert_eq!(rows[0].output, UsdPerMillion(2_500_000));
        assert_eq!(rows[0].cached_input, Some(UsdPerMillion(3_000_000)));
        for bad in ["-1", "0.0000001", "'abc'"] {
            let text = format!("- {{provider: openai, model: m, input: {bad}, output: 1}}\n");
            let err = parse_rows(&text).unwrap_err().to_string();
            assert!(err.contains("price"), "{bad}: {err}");
        }
    }

    #[test]
    fn builtin_table_is_valid_sourced_and_dated() {
        let table = PriceTable::builtin();
        for (provider, model) in [
            (Provider::OpenAi, "gpt-5.5"),
            (Provider::Anthropic, "claude-haiku-4-5-20251001"),
            (Provider::Gemini, "gemini-2.5-pro"),
        ] {
            assert!(table.lookup(provider, model).is_some(), "{model}");
        }
        for p in table.prices() {
            assert!(p.source.as_deref().unwrap().starts_with("https://"));
            assert!(p.date.is_some());
        }
        for provider in [Provider::OpenAi, Provider::Anthropic, Provider::Gemini] {
            assert!(table.prices().iter().any(|p| p.provider == provider));
        }
        // Customer-named deployments: no built-in price.
        assert!(table.prices().iter().all(|p| !matches!(
            p.provider,
            Provider::AzureOpenAi | Provider::OpenAiCompatible
        )));
    }

    #[test]
    fn snapshots_match_their_model_and_nothing_else_does() {
        let mut t = PriceTable::empty();
        t.insert_all(
            vec![
                row(Provider::OpenAi, "gpt-4o", "2.5", "10"),
                row(Provider::Anthropic, "claude-sonnet-4-5", "3", "15"),
                row(Provider::Gemini, "gemini-2.0-flash", "0.1", "0.4"),
            ],
            false,
        )
        .unwrap();
        let found = |p, m| t.lookup(p, m).map(|p| &*p.model);
        assert_eq!(found(Provider::OpenAi, "gpt-4o"), Some("gpt-4o"));
        assert_eq!(found(Provider::OpenAi, "gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(
            found(Provider::Anthropic, "claude-sonnet-4-5-20250929"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(
            found(Provider::Gemini, "gemini-2.0-flash-001"),
            Some("gemini-2.0-flash")
        );
        for (p, m) in [
            (Provider::OpenAi, "gpt-4o-mini"),
            (Provider::OpenAi, "gpt-4o-latest"),
            (Provider::OpenAi, "ft:gpt-4o-2024-08-06:acme::abc"),
            (Provider::OpenAi, "gpt-4o-2024-8-06"),
            (Provider::OpenAi, "GPT-4o"),
            (Provider::OpenAi, "gpt-4o-001"),
            // The provider is part of the key.
            (Provider::AzureOpenAi, "gpt-4o"),
            (Provider::OpenAiCompatible, "gpt-4o"),
            (Provider::Anthropic, "gpt-4o"),
        ] {
            assert_eq!(found(p, m), None, "{p} {m}");
        }
    }

    #[test]
    fn cost_bills_each_part_of_the_input_at_its_rate() {
        let mut r = row(Provider::Anthropic, "m", "3", "15");
        r.cached_input = Some(usd("0.30"));
        r.cache_write = Some(usd("3.75"));
        r.cache_write_1h = Some(usd("6"));
        let p = validate(0, r, false).unwrap();
        let counts = TokenCounts {
            input: 1_000_000,
            output: 100_000,
            cached_input: 500_000,
            cache_write: 200_000,
            cache_write_1h: 50_000,
        };
        // 300k uncached × $3 + 500k × $0.30 + 150k × $3.75 + 50k × $6 + 100k × $15
        // = 0.9 + 0.15 + 0.5625 + 0.3 + 1.5
        assert_eq!(p.cost(&counts).to_decimal_string(), "3.4125");
    }

    #[test]
    fn absent_cache_prices_bill_as_input() {
        let p = validate(0, row(Provider::OpenAi, "m", "2", "8"), false).unwrap();
        let all_input = TokenCounts {
            input: 1000,
            ..Default::default()
        };
        let cached = TokenCounts {
            cached_input: 400,
            cache_write: 100,
            cache_write_1h: 100,
            ..all_input
        };
        assert_eq!(p.cost(&all_input), p.cost(&cached));
    }

    #[test]
    fn long_context_prices_the_whole_request_above_the_threshold() {
        let mut r = row(Provider::Gemini, "gemini-2.5-pro", "1.25", "10");
        r.long_context = Some(LongContextRow {
            above_input_tokens: 200_000,
            input: usd("2.5"),
            output: usd("15"),
            cached_input: None,
            cache_write: None,
            cache_write_1h: None,
        });
        let p = validate(0, r, false).unwrap();
        let at = |input| {
            p.cost(&TokenCounts {
                input,
                output: 1000,
                ..Default::default()
            })
            .to_decimal_string()
        };
        assert_eq!(at(200_000), "0.26"); // 0.25 + 0.01
        assert_eq!(at(200_001), "0.5150025"); // 200,001 × 2.5e-6 + 0.015
    }

    #[test]
    fn overrides_replace_add_and_explain_themselves() {
        let builtin = PriceTable::builtin();
        let some = builtin.prices()[0].clone();
        let t = PriceTable::with_overrides(vec![
            row(some.provider, &some.model, "1", "2"),
            row(Provider::AzureOpenAi, "my-gpt4o-deployment", "2.5", "10"),
        ])
        .unwrap();
        assert_eq!(t.len(), builtin.len() + 1);
        assert_eq!(
            t.lookup(some.provider, &some.model)
                .unwrap()
                .rates
                .base
                .input,
            usd("1")
        );
        assert!(
            t.lookup(Provider::AzureOpenAi, "my-gpt4o-deployment")
                .is_some()
        );

        let err = |rows| PriceTable::with_overrides(rows).unwrap_err().to_string();
        let twice = vec![
            row(Provider::OpenAi, "x", "1", "2"),
            row(Provider::OpenAi, "x", "1", "3"),
        ];
        assert_eq!(
            err(twice),
            "prices[1] (openai \"x\"): listed twice; keep one row per provider and model"
        );
        assert!(err(vec![row(Provider::OpenAi, " ", "1", "2")]).contains("model is empty"));
        assert!(
            err(vec![row(Provider::OpenAi, "x", "250000", "2")])
                .contains("input is 250000 USD per million tokens, above the 100000 limit")
        );
        let mut dated = row(Provider::OpenAi, "x", "1", "2");
        dated.date = Some("yesterday".into());
        assert!(err(vec![dated]).contains("not a date"));
        let mut tier = row(Provider::Anthropic, "x", "3", "15");
        tier.cache_write = Some(usd("3.75"));
        tier.long_context = Some(LongContextRow {
            above_input_tokens: 200_000,
            input: usd("6"),
            output: usd("22.5"),
            cached_input: None,
            cache_write: None,
            cache_write_1h: None,
        });
        assert!(err(vec![tier]).contains("longContext needs cacheWrite too"));
    }

    #[test]
    fn an_overrides_file_names_the_bad_line() {
        let e = table_with_overrides("- provider: openai\n  model: x\n  input: 1\n  ouput: 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ouput") && e.contains("line 4"), "{e}");
        let e = table_with_overrides("- {provider: openia, model: x, input: 1, output: 2}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("openia"), "{e}");
        assert_eq!(
            table_with_overrides("# nothing yet\n").unwrap(),
            PriceTable::builtin()
        );
    }

    #[test]
    fn a_row_round_trips_through_yaml() {
        let rows = parse_rows(BUILTIN_YAML).unwrap();
        let text = serde_saphyr::to_string(&rows).unwrap();
        assert_eq!(parse_rows(&text).unwrap(), rows);
    }

    fn any_rates() -> impl Strategy<Value = Rates> {
        let rate = || (0u64..=MAX_PRICE.0).prop_map(UsdPerMillion);
        (rate(), rate(), rate(), rate(), rate()).prop_map(|(i, o, c, w, h)| Rates {
            input: i,
            output: o,
            cached_input: c,
            cache_write: w,
            cache_write_1h: h,
        })
    }

    /// Counts built from disjoint parts, so each part can grow alone.
    fn counts(parts: [u64; 5]) -> TokenCounts {
        let [uncached, cached, write_5m, write_1h, output] = parts;
        TokenCounts {
            input: uncached + cached + write_5m + write_1h,
            output,
            cached_input: cached,
            cache_write: write_5m + write_1h,
            cache_write_1h: write_1h,
        }
    }

    proptest! {
        #[test]
        fn cost_never_falls_when_any_part_grows(
            rates in any_rates(),
            parts in prop::array::uniform5(0u64..1u64 << 40),
            which in 0usize..5,
            more in 0u64..1u64 << 40,
        ) {
            let mut grown = parts;
            grown[which] += more;
            prop_assert!(rates.cost(&counts(grown)) >= rates.cost(&counts(parts)));
            // Growing the total input alone moves nothing out of the cache parts.
            let mut c = counts(parts);
            let before = rates.cost(&c);
            c.input += more;
            prop_assert!(rates.cost(&c) >= before);
        }

        #[test]
        fn cost_adds_up_across_requests(
            rates in any_rates(),
            // Small enough that no sum saturates.
            a in prop::array::uniform5(0u64..1u64 << 22),
            b in prop::array::uniform5(0u64..1u64 << 22),
        ) {
            let sum: [u64; 5] = std::array::from_fn(|i| a[i] + b[i]);
            prop_assert_eq!(
                rates.cost(&counts(a)).saturating_add(rates.cost(&counts(b))),
                rates.cost(&counts(sum))
            );
            prop_assert_eq!(counts(a).saturating_add(counts(b)), counts(sum));
        }

        #[test]
        fn cost_never_panics(
            rates in any_rates(),
            input in any::<u64>(), output in any::<u64>(),
            cached in any::<u64>(), write in any::<u64>(), write_1h in any::<u64>(),
            threshold in any::<u64>(),
        ) {
            let c = TokenCounts { input, output, cached_input: cached, cache_write: write, cache_write_1h: write_1h };
            let p = PriceRates { base: rates, long_context: Some((threshold, rates)) };
            let _ = p.cost(&c);
        }

        #[test]
        fn decimals_round_trip(v in any::<u64>()) {
            let p = Picodollars(v);
            prop_assert_eq!(p.to_decimal_string().parse::<Picodollars>(), Ok(p));
            let r = UsdPerMillion(v);
            prop_assert_eq!(r.to_string().parse::<UsdPerMillion>(), Ok(r));
        }

        #[test]
        fn any_price_survives_yaml(v in 0u64..=MAX_PRICE.0) {
            let text = format!("- {{provider: openai, model: m, input: {}, output: 1}}\n", UsdPerMillion(v));
            prop_assert_eq!(parse_rows(&text).unwrap()[0].input, UsdPerMillion(v));
        }
    }
}
