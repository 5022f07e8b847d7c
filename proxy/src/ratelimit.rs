//! Per-token rate limits: requests per minute and (provider-reported)
//! tokens per minute, each a token bucket that holds one minute's allowance
//! and refills continuously.
//!
//! Requests are debited on admission. Tokens are not known until the
//! response has been read, so admission only requires the token bucket to
//! be positive and [`Limiter::debit_tokens`] charges the actual usage
//! afterwards (the bucket may go negative: a large response delays the next
//! request, as with the providers' own limits).
//!
//! Time is passed in (`now`, any monotonic origin), so tests drive the
//! clock. Limits are per proxy replica.

use std::time::Duration;

use strake_crds::TokenLimits;

/// Which limit was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
        }
    }
}

/// A rejected admission: which limit, its per-minute value, and when to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited {
    pub kind: LimitKind,
    pub per_minute: u32,
    /// Whole seconds, at least 1 (the `Retry-After` header's unit).
    pub retry_after_secs: u64,
}

/// One limit's state, as the providers' rate-limit headers describe theirs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// Per minute.
    pub limit: u32,
    /// Whole units left now (never negative: a bucket in debt shows 0).
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// What is left of a token's limits; `None` where it has none.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Left {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    level: f64,
    at: Duration,
}

impl Bucket {
    fn full(capacity: u32, now: Duration) -> Bucket {
        Bucket {
            level: f64::from(capacity),
            at: now,
        }
    }

    fn refill(&mut self, capacity: u32, now: Duration) {
        let capacity = f64::from(capacity);
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.level = (self.level + elapsed * capacity / 60.0).min(capacity);
        self.at = self.at.max(now);
    }

    /// Seconds until the level reaches `target`, rounded up, at least 1.
    fn wait_secs(&self, capacity: u32, target: f64) -> u64 {
        let per_sec = f64::from(capacity) / 60.0;
        let secs = ((target - self.level) / per_sec).ceil();
        if secs.is_finite() && secs >= 1.0 {
            secs as u64
        } else {
            1
        }
    }
}

/// The buckets of one token. Kept across config reloads (and token
/// rotation), so editing a limit does not refill it.
#[derive(Debug, Default)]
pub struct Limiter {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

impl Limiter {
    /// Admits one request or says when to retry. A rejected request debits
    /// nothing.
    pub fn admit(&mut self, limits: &TokenLimits, now: Duration) -> Result<(), RateLimited> {
        if let Some(cap) = limits.tokens_per_minute.filter(|&c| c > 0) {
            let b = self.tokens.get_or_insert_with(|| Bucket::full(cap, now));
            b.refill(cap, now);
            if b.level <= 0.0 {
                return Err(RateLimited {
                    kind: LimitKind::Tokens,
                    per_minute: cap,
                    // Any positive allowance admits the next request.
                    retry_after_secs: b.wait_secs(cap, f64::MIN_POSITIVE),
                });
            }
        } else {
            self.tokens = None;
        }
        if let Some(cap) = limits.requests_per_minute.filter(|&c| c > 0) {
            let b = self.requests.get_or_insert_with(|| Bucket::full(cap, now));
            b.refill(cap, now);
            if b.level < 1.0 {
                return Err(RateLimited {
                    kind: LimitKind::Requests,
                    per_minute: cap,
                    retry_after_secs: b.wait_secs(cap, 1.0),
                });
            }
            b.level -= 1.0;
        } else {
            self.requests = None;
        }
        Ok(())
    }

    /// What is left of each limit now, without debiting anything.
    pub fn left(&mut self, limits: &TokenLimits, now: Duration) -> Left {
        let window = |bucket: &mut Option<Bucket>, cap: Option<u32>| {
            let cap = cap.filter(|&c| c > 0)?;
            let b = bucket.get_or_insert_with(|| Bucket::full(cap, now));
            b.refill(cap, now);
            let full = f64::from(cap);
            Some(Window {
                limit: cap,
                remaining: b.level.clamp(0.0, full).floor() as u64,
                // Continuous refill: full again after the missing part's share of a minute.
                reset: Duration::from_secs_f64(((full - b.level) / full * 60.0).clamp(0.0, 3600.0)),
            })
        };
        Left {
            requests: window(&mut self.requests, limits.requests_per_minute),
            tokens: window(&mut self.tokens, limits.tokens_per_minute),
        }
    }

    /// Charges a finished response's tokens (input plus output).
    pub fn debit_tokens(&mut self, limits: &TokenLimits, used: u64, now: Duration) {
        let Some(cap) = limits.tokens_per_minute.filter(|&c| c > 0) else {
            return;
        };
        let b = self.tokens.get_or_insert_with(|| Bucket::full(cap, now));
        b.refill(cap, now);
        b.level -= used as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: Option<u32>, tpm: Option<u32>) -> TokenLimits {
        TokenLimits {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn no_limits_admit_everything() {
        let mut l = Limiter::default();
        for i in 0..10_000 {
            assert!(
                l.admit(&limits(None, None), secs(i as f64 / 1000.0))
                    .is_ok()
            );
        }
    }

    #[test]
    fn left_shows_each_limit_without_debiting() {
        let mut l = Limiter::default();
        let lim = limits(Some(60), Some(1000));
        let t0 = secs(10.0);
        let full = l.left(&lim, t0);
        assert_eq!(
            full.requests,
            Some(Window {
                limit: 60,
                remaining: 60,
                reset: Duration::ZERO
            })
        );
        assert_eq!(full.tokens.unwrap().remaining, 1000);
        l.admit(&lim, t0).unwrap();
        l.debit_tokens(&lim, 1500, t0);
        let after = l.left(&lim, t0);
        let r = after.requests.unwrap();
        assert_eq!((r.remaining, r.reset), (59, secs(1.0)));
        // In debt: nothing left, full again in 90 s (1500 of 1000/min).
        let t = after.tokens.unwrap();
        assert_eq!((t.remaining, t.reset), (0, secs(90.0)));
        assert_eq!(l.left(&lim, t0), after, "reading debits nothing");
        let later = l.left(&lim, t0 + secs(30.0));
        assert_eq!(later.tokens.unwrap().remaining, 0);
        assert_eq!(later.requests.unwrap().remaining, 60);
        assert_eq!(l.left(&limits(None, None), t0), Left::default());
    }

    #[test]
    fn requests_per_minute_allows_a_burst_then_refills() {
        let mut l = Limiter::default();
        let lim = limits(Some(3), None);
        let t0 = secs(100.0);
        for _ in 0..3 {
            assert!(l.admit(&lim, t0).is_ok());
        }
        let err = l.admit(&lim, t0).unwrap_err();
        assert_eq!(err.kind, LimitKind::Requests);
        assert_eq!(err.per_minute, 3);
        // One request refills every 20 s.
        assert_eq!(err.retry_after_secs, 20);
        assert_eq!(
            l.admit(&lim, t0 + secs(5.0)).unwrap_err().retry_after_secs,
            15
        );
        assert!(l.admit(&lim, t0 + secs(20.0)).is_ok());
        assert!(l.admit(&lim, t0 + secs(20.5)).is_err());
        // A long pause refills to the burst size, never beyond.
        let later = t0 + secs(3600.0);
        for _ in 0..3 {
            assert!(l.admit(&lim, later).is_ok());
        }
        assert!(l.admit(&lim, later).is_err());
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let mut l = Limiter::default();
        let lim = limits(Some(6000), None);
        for _ in 0..6000 {
            l.admit(&lim, secs(0.0)).unwrap();
        }
        assert_eq!(l.admit(&lim, secs(0.0)).unwrap_err().retry_after_secs, 1);
    }

    #[test]
    fn tokens_per_minute_debits_actual_usage_afterwards() {
        let mut l = Limiter::default();
        let lim = limits(None, Some(600));
        assert!(l.admit(&lim, secs(0.0)).is_ok());
        // The response used more than the whole allowance.
        l.debit_tokens(&lim, 900, secs(1.0));
        let err = l.admit(&lim, secs(1.0)).unwrap_err();
        assert_eq!(err.kind, LimitKind::Tokens);
        // A full bucket (600, refill capped) - 900 = -300: 30 s at 10 tokens/s.
        assert_eq!(err.retry_after_secs, 30);
        assert!(l.admit(&lim, secs(30.5)).is_err());
        assert!(l.admit(&lim, secs(31.5)).is_ok());
    }

    #[test]
    fn a_rejection_debits_nothing() {
        let mut l = Limiter::default();
        let lim = limits(Some(1), Some(10));
        l.admit(&lim, secs(0.0)).unwrap();
        l.debit_tokens(&lim, 100, secs(0.0));
        // Token limit rejects; the request bucket is not touched by it.
        assert_eq!(
            l.admit(&lim, secs(0.0)).unwrap_err().kind,
            LimitKind::Tokens
        );
        let only_rpm = limits(Some(1), None);
        assert_eq!(l.admit(&only_rpm, secs(60.0)).map_err(|e| e.kind), Ok(()));
    }

    #[test]
    fn changed_limits_apply_without_refilling() {
        let mut l = Limiter::default();
        l.admit(&limits(Some(10), None), secs(0.0)).unwrap();
        // Lowering the limit clamps the bucket to the new size at the next refill.
        let lower = limits(Some(2), None);
        assert!(l.admit(&lower, secs(0.0)).is_ok());
        assert!(l.admit(&lower, secs(0.0)).is_ok());
        assert!(l.admit(&lower, secs(0.0)).is_err());
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let mut l = Limiter::default();
        let lim = limits(Some(1), None);
        l.admit(&lim, secs(10.0)).unwrap();
        assert!(l.admit(&lim, secs(5.0)).is_err());
        assert!(l.admit(&lim, secs(70.0)).is_ok());
    }
}
