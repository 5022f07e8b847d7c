//! Usage, from the proxy replicas to the status: the collection report each
//! replica serves on its admin port and the counters in it. Amounts are
//! [`crate::pricing::Picodollars`].
//!
//! A replica's counters are cumulative since its process started and carry
//! the process's random instance id, so a collector that remembers the last
//! value it folded per (instance, series) can take differences: a restart
//! shows up as a new instance, a token whose counters started over (it left
//! the replica's index and came back) as a new series.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The collection endpoint on the proxy's admin port.
pub const COLLECT_PATH: &str = "/usage";
/// Query parameter: only entries used at or after this unix second (the
/// report's own `now` from the previous collection, so clocks need not agree).
pub const SINCE_PARAM: &str = "since";

/// Cumulative counters. Every field only grows within one (instance, series).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub requests: u64,
    /// Includes the cached and cache-write tokens below.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub input_tokens: u64,
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub output_tokens: u64,
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub cached_input_tokens: u64,
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub cache_write_tokens: u64,
    /// USD × 10¹², so sums stay exact.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub spend_picodollars: u64,
    /// Requests with usage but no price for their model.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub unpriced_requests: u64,
}

impl Counters {
    /// `self - earlier`, field by field, never below zero.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            requests: self.requests.saturating_sub(earlier.requests),
            input_tokens: self.input_tokens.saturating_sub(earlier.input_tokens),
            output_tokens: self.output_tokens.saturating_sub(earlier.output_tokens),
            cached_input_tokens: self
                .cached_input_tokens
                .saturating_sub(earlier.cached_input_tokens),
            cache_write_tokens: self
                .cache_write_tokens
                .saturating_sub(earlier.cache_write_tokens),
            spend_picodollars: self
                .spend_picodollars
                .saturating_sub(earlier.spend_picodollars),
            unpriced_requests: self
                .unpriced_requests
                .saturating_sub(earlier.unpriced_requests),
        }
    }

    pub fn add(&mut self, other: &Counters) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(other.cached_input_tokens);
        self.cache_write_tokens = self
            .cache_write_tokens
            .saturating_add(other.cache_write_tokens);
        self.spend_picodollars = self
            .spend_picodollars
            .saturating_add(other.spend_picodollars);
        self.unpriced_requests = self
            .unpriced_requests
            .saturating_add(other.unpriced_requests);
    }

    /// The larger of the two, field by field.
    pub fn max_each(&self, other: &Counters) -> Counters {
        let mut m = *other;
        m.add(&self.since(other));
        m
    }

    pub fn is_zero(&self) -> bool {
        *self == Counters::default()
    }
}

/// What one replica serves at [`COLLECT_PATH`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Random per process: a restart is a new instance.
    pub instance: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds on the replica's clock, to pass back as `since`.
    pub now: i64,
    /// Per StrakeToken with any use.
    #[serde(default)]
    pub tokens: Vec<Entry>,
    /// Per UpstreamKey with any use.
    #[serde(default)]
    pub upstreams: Vec<Entry>,
}

/// One resource's cumulative counters on one replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub namespace: String,
    pub name: String,
    /// Starts anew (with a new number) when the counters start over within
    /// one process.
    pub series: u64,
    /// Unix seconds of the last request; 0 for never.
    #[serde(default)]
    pub last_used_at: i64,
    #[serde(flatten)]
    pub counters: Counters,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_subtract_without_going_negative() {
        let a = Counters {
            requests: 5,
            input_tokens: 100,
            spend_picodollars: 9,
            ..Counters::default()
        };
        let b = Counters {
            requests: 2,
            input_tokens: 150,
            ..Counters::default()
        };
        let d = a.since(&b);
        assert_eq!((d.requests, d.input_tokens, d.spend_picodollars), (3, 0, 9));
        let mut sum = b;
        sum.add(&d);
        assert_eq!(sum.requests, 5);
        assert!(Counters::default().is_zero() && !sum.is_zero());
        let m = a.max_each(&b);
        assert_eq!(
            (m.requests, m.input_tokens, m.spend_picodollars),
            (5, 150, 9)
        );
    }

    #[test]
    fn report_wire_format() {
        let report = Report {
            instance: "abc".into(),
            started_at: 1,
            now: 2,
            tokens: vec![Entry {
                namespace: "team-a".into(),
                name: "alice".into(),
                series: 3,
                last_used_at: 2,
                counters: Counters {
                    requests: 1,
                    ..Counters::default()
                },
            }],
            upstreams: vec![],
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["startedAt"], 1);
        assert_eq!(json["tokens"][0]["requests"], 1);
        assert_eq!(json["tokens"][0]["cachedInputTokens"], 0);
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }
}
