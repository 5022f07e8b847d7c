//! Latency histograms (HdrHistogram, nanoseconds, 3 significant digits) and
//! the summary a result file keeps of them.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest recordable latency; anything slower is clamped (and is a failed run anyway).
const MAX: Duration = Duration::from_secs(120);

pub struct Recorder(Histogram<u64>);

impl Default for Recorder {
    fn default() -> Self {
        Recorder(
            Histogram::new_with_bounds(1, MAX.as_nanos() as u64, 3)
                .expect("static bounds are valid"),
        )
    }
}

impl Recorder {
    pub fn record(&mut self, d: Duration) {
        self.0
            .saturating_record((d.as_nanos() as u64).clamp(1, MAX.as_nanos() as u64));
    }

    pub fn add(&mut self, other: &Recorder) {
        self.0.add(&other.0).expect("same bounds");
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        let q = |q: f64| us(self.0.value_at_quantile(q));
        // Percentile curve for the plots: 0, 50, 75, 87.5 … up to 99.999.
        let mut curve = Vec::new();
        if !self.0.is_empty() {
            let mut tail: f64 = 1.0;
            while tail >= 1e-5 {
                let pct = 100.0 * (1.0 - tail);
                curve.push((pct, q(pct / 100.0)));
                tail /= 2.0;
            }
            curve.push((100.0, us(self.0.max())));
        }
        Latency {
            count: self.0.len(),
            mean_us: if self.0.is_empty() {
                0.0
            } else {
                self.0.mean() / 1000.0
            },
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: us(self.0.max()),
            curve,
        }
    }
}

/// A latency distribution in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// (percentile, µs) pairs for a percentile plot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curve: Vec<(f64, f64)>,
}

/// Percentiles of a small sample (revocation trials), nearest-rank.
pub fn nearest_rank(sorted: &[f64], pct: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reports_microseconds() {
        let mut r = Recorder::default();
        for us in 1..=1000u64 {
            r.record(Duration::from_micros(us));
        }
        let s = r.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() < 1.0, "{}", s.p50_us);
        assert!((s.p99_us - 990.0).abs() < 1.0, "{}", s.p99_us);
        assert!((s.max_us - 1000.0).abs() < 1.0);
        assert_eq!(s.curve.last().unwrap().0, 100.0);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=30).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 50.0), 15.0);
        assert_eq!(nearest_rank(&v, 99.0), 30.0);
        assert_eq!(nearest_rank(&v, 0.0), 1.0);
        assert!(nearest_rank(&[], 50.0).is_nan());
    }
}
