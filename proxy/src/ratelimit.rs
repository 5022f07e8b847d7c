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
//! A limit holds across the proxy's replicas: each applies its share of it
//! ([`fleet::share`]: the limit divided by the live replica count), so the
//! buckets hold and refill fractions. What is left is reported for the
//! whole fleet ([`Window`]).
//!
//! Time is passed in (`now`, any monotonic origin), so tests drive the
//! clock.

use std::time::Duration;

use strake_crds::TokenLimits;

use crate::fleet;

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
    /// The token's limit (all replicas together).
    pub per_minute: u32,
    /// Whole seconds, at least 1 (the `Retry-After` header's unit).
    pub retry_after_secs: u64,
}

/// One limit's state, as the providers' rate-limit headers describe theirs.
///
/// `limit` is the token's, for all replicas together; `remaining` is what
/// the fleet has left if the others are where this replica is (this
/// replica's remaining times the replica count, at most the limit): exact
/// behind a balancer that spreads requests evenly, and N times what a
/// client pinned to this replica can still get (`replica_remaining`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// Per minute, the token's.
    pub limit: u32,
    /// Whole units left now across the fleet (never negative: a bucket in
    /// debt shows 0).
    pub remaining: u64,
    /// Until this replica's bucket is full again.
    pub reset: Duration,
    /// The replicas sharing the limit.
    pub replicas: u32,
    /// Whole units this replica still admits now.
    pub replica_remaining: u64,
}

/// What is left of a token's limits; `None` where it has none.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Left {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// In the token's units, as if for the whole fleet: a request this
    /// replica admits costs one per replica, since under even balancing
    /// each of the others admits one too. A change of the replica count
    /// so rescales this replica's share at once.
    level: f64,
    at: Duration,
}

/// One limit on this replica: the bucket's size and refill, and what one
/// admission costs.
#[derive(Clone, Copy, Debug)]
struct Share {
    limit: f64,
    capacity: f64,
    cost: f64,
}

impl Share {
    /// `least`: what one admission needs locally (one request; any positive
    /// amount of tokens). The bucket holds at least one admission's cost,
    /// else a limit below the replica count would admit nothing; it still
    /// refills at the limit, so the rate holds (see [`fleet::share`]).
    fn of(limit: u32, replicas: u32, least: f64) -> Share {
        // This replica's bucket is `fleet::share` in local units; kept
        // here in the fleet's, times the replica count.
        let n = f64::from(replicas.max(1));
        let limit_f = f64::from(limit);
        Share {
            limit: limit_f,
            capacity: if fleet::share(limit, replicas) < least {
                least * n
            } else {
                limit_f
            },
            cost: least * n,
        }
    }
}

impl Bucket {
    fn full(share: Share, now: Duration) -> Bucket {
        Bucket {
            level: share.capacity,
            at: now,
        }
    }

    fn refill(&mut self, share: Share, now: Duration) {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.level = (self.level + elapsed * share.limit / 60.0).min(share.capacity);
        self.at = self.at.max(now);
    }

    /// Seconds until the level reaches `target`, rounded up, at least 1.
    fn wait_secs(&self, share: Share, target: f64) -> u64 {
        let per_sec = share.limit / 60.0;
        let secs = ((target - self.level) / per_sec).ceil();
        if secs.is_finite() && secs >= 1.0 {
            secs as u64
        } else {
            1
        }
    }
}

/// The buckets of one token on this replica. Kept across config reloads
/// (and token rotation), so editing a limit does not refill it.
#[derive(Debug, Default)]
pub struct Limiter {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// Enough tokens in the bucket for the next request to pass.
const ANY_TOKENS: f64 = f64::MIN_POSITIVE;
/// One request.
const ONE_REQUEST: f64 = 1.0;

impl Limiter {
    /// Admits one request, this replica being one of `replicas`, or says
    /// when to retry. A rejected request debits nothing.
    pub fn admit(
        &mut self,
        limits: &TokenLimits,
        replicas: u32,
        now: Duration,
    ) -> Result<(), RateLimited> {
        if let Some(cap) = limits.tokens_per_minute.filter(|&c| c > 0) {
            let share = Share::of(cap, replicas, ANY_TOKENS);
            let b = self.tokens.get_or_insert_with(|| Bucket::full(share, now));
            b.refill(share, now);
            if b.level <= 0.0 {
                return Err(RateLimited {
                    kind: LimitKind::Tokens,
                    per_minute: cap,
                    retry_after_secs: b.wait_secs(share, share.cost),
                });
            }
        } else {
            self.tokens = None;
        }
        if let Some(cap) = limits.requests_per_minute.filter(|&c| c > 0) {
            let share = Share::of(cap, replicas, ONE_REQUEST);
            let b = self
                .requests
                .get_or_insert_with(|| Bucket::full(share, now));
            b.refill(share, now);
            if b.level < share.cost {
                return Err(RateLimited {
                    kind: LimitKind::Requests,
                    per_minute: cap,
                    retry_after_secs: b.wait_secs(share, share.cost),
                });
            }
            b.level -= share.cost;
        } else {
            self.requests = None;
        }
        Ok(())
    }

    /// What is left of each limit now, without debiting anything.
    pub fn left(&mut self, limits: &TokenLimits, replicas: u32, now: Duration) -> Left {
        let replicas = replicas.max(1);
        let window = |bucket: &mut Option<Bucket>, cap: Option<u32>, least: f64| {
            let cap = cap.filter(|&c| c > 0)?;
            let share = Share::of(cap, replicas, least);
            let b = bucket.get_or_insert_with(|| Bucket::full(share, now));
            b.refill(share, now);
            let level = b.level.max(0.0);
            // Continuous refill: full again after the missing part's share of a minute.
            let missing = share.capacity - b.level;
            Some(Window {
                limit: cap,
                remaining: level.min(share.limit).floor() as u64,
                reset: Duration::from_secs_f64((missing / share.limit * 60.0).clamp(0.0, 3600.0)),
                replicas,
                replica_remaining: (level / f64::from(replicas)).floor() as u64,
            })
        };
        Left {
            requests: window(&mut self.requests, limits.requests_per_minute, ONE_REQUEST),
            tokens: window(&mut self.tokens, limits.tokens_per_minute, ANY_TOKENS),
        }
    }

    /// Charges a finished response's tokens (input plus output).
    pub fn debit_tokens(&mut self, limits: &TokenLimits, replicas: u32, used: u64, now: Duration) {
        let Some(cap) = limits.tokens_per_minute.filter(|&c| c > 0) else {
            return;
        };
        let share = Share::of(cap, replicas, ANY_TOKENS);
        let b = self.tokens.get_or_insert_with(|| Bucket::full(share, now));
        b.refill(share, now);
        b.level -= used as f64 * f64::from(replicas.max(1));
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
                l.admit(&limits(None, None), 1, secs(i as f64 / 1000.0))
                    .is_ok()
            );
        }
    }

    #[test]
    fn left_shows_each_limit_without_debiting() {
        let mut l = Limiter::default();
        let lim = limits(Some(60), Some(1000));
        let t0 = secs(10.0);
        let full = l.left(&lim, 1, t0);
        assert_eq!(
            full.requests,
            Some(Window {
                limit: 60,
                remaining: 60,
                reset: Duration::ZERO,
                replicas: 1,
                replica_remaining: 60,
            })
        );
        assert_eq!(full.tokens.unwrap().remaining, 1000);
        l.admit(&lim, 1, t0).unwrap();
        l.debit_tokens(&lim, 1, 1500, t0);
        let after = l.left(&lim, 1, t0);
        let r = after.requests.unwrap();
        assert_eq!((r.remaining, r.reset), (59, secs(1.0)));
        // In debt: nothing left, full again in 90 s (1500 of 1000/min).
        let t = after.tokens.unwrap();
        assert_eq!((t.remaining, t.reset), (0, secs(90.0)));
        assert_eq!(l.left(&lim, 1, t0), after, "reading debits nothing");
        let later = l.left(&lim, 1, t0 + secs(30.0));
        assert_eq!(later.tokens.unwrap().remaining, 0);
        assert_eq!(later.requests.unwrap().remaining, 60);
        assert_eq!(l.left(&limits(None, None), 1, t0), Left::default());
    }

    #[test]
    fn requests_per_minute_allows_a_burst_then_refills() {
        let mut l = Limiter::default();
        let lim = limits(Some(3), None);
        let t0 = secs(100.0);
        for _ in 0..3 {
            assert!(l.admit(&lim, 1, t0).is_ok());
        }
        let err = l.admit(&lim, 1, t0).unwrap_err();
        assert_eq!(err.kind, LimitKind::Requests);
        assert_eq!(err.per_minute, 3);
        // One request refills every 20 s.
        assert_eq!(err.retry_after_secs, 20);
        assert_eq!(
            l.admit(&lim, 1, t0 + secs(5.0))
                .unwrap_err()
                .retry_after_secs,
            15
        );
        assert!(l.admit(&lim, 1, t0 + secs(20.0)).is_ok());
        assert!(l.admit(&lim, 1, t0 + secs(20.5)).is_err());
        // A long pause refills to the burst size, never beyond.
        let later = t0 + secs(3600.0);
        for _ in 0..3 {
            assert!(l.admit(&lim, 1, later).is_ok());
        }
        assert!(l.admit(&lim, 1, later).is_err());
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let mut l = Limiter::default();
        let lim = limits(Some(6000), None);
        for _ in 0..6000 {
            l.admit(&lim, 1, secs(0.0)).unwrap();
        }
        assert_eq!(l.admit(&lim, 1, secs(0.0)).unwrap_err().retry_after_secs, 1);
    }

    #[test]
    fn tokens_per_minute_debits_actual_usage_afterwards() {
        let mut l = Limiter::default();
        let lim = limits(None, Some(600));
        assert!(l.admit(&lim, 1, secs(0.0)).is_ok());
        // The response used more than the whole allowance.
        l.debit_tokens(&lim, 1, 900, secs(1.0));
        let err = l.admit(&lim, 1, secs(1.0)).unwrap_err();
        assert_eq!(err.kind, LimitKind::Tokens);
        // A full bucket (600, refill capped) - 900 = -300: 30 s at 10 tokens/s.
        assert_eq!(err.retry_after_secs, 30);
        assert!(l.admit(&lim, 1, secs(30.5)).is_err());
        assert!(l.admit(&lim, 1, secs(31.5)).is_ok());
    }

    #[test]
    fn a_rejection_debits_nothing() {
        let mut l = Limiter::default();
        let lim = limits(Some(1), Some(10));
        l.admit(&lim, 1, secs(0.0)).unwrap();
        l.debit_tokens(&lim, 1, 100, secs(0.0));
        // Token limit rejects; the request bucket is not touched by it.
        assert_eq!(
            l.admit(&lim, 1, secs(0.0)).unwrap_err().kind,
            LimitKind::Tokens
        );
        let only_rpm = limits(Some(1), None);
        assert_eq!(
            l.admit(&only_rpm, 1, secs(60.0)).map_err(|e| e.kind),
            Ok(())
        );
    }

    #[test]
    fn changed_limits_apply_without_refilling() {
        let mut l = Limiter::default();
        l.admit(&limits(Some(10), None), 1, secs(0.0)).unwrap();
        // Lowering the limit clamps the bucket to the new size at the next refill.
        let lower = limits(Some(2), None);
        assert!(l.admit(&lower, 1, secs(0.0)).is_ok());
        assert!(l.admit(&lower, 1, secs(0.0)).is_ok());
        assert!(l.admit(&lower, 1, secs(0.0)).is_err());
    }

    /// Replicas `0..n` behind a round-robin balancer, offered `offered`
    /// requests a minute for `minutes`: how many each admits.
    fn round_robin(limit: u32, n: u32, offered: u32, minutes: u32) -> Vec<u32> {
        let lim = limits(Some(limit), None);
        let mut replicas: Vec<Limiter> = (0..n).map(|_| Limiter::default()).collect();
        let mut admitted = vec![0; n as usize];
        for i in 0..offered * minutes {
            let now = secs(f64::from(i) * 60.0 / f64::from(offered));
            let r = (i % n) as usize;
            if replicas[r].admit(&lim, n, now).is_ok() {
                admitted[r] += 1;
            }
        }
        admitted
    }

    #[test]
    fn replicas_admit_the_limit_between_them() {
        // Ten minutes at twice the limit: one minute's burst, then the rate.
        for (limit, n) in [(60, 1), (60, 2), (60, 3), (100, 7), (600, 10)] {
            let total: u32 = round_robin(limit, n, 2 * limit, 10).iter().sum();
            assert!(
                (10 * limit..=11 * limit).contains(&total),
                "{limit}/min over {n} replicas admitted {total} in 10 min"
            );
        }
        // Without shares two replicas would admit twice the limit.
        let lim = limits(Some(60), None);
        let mut alone = Limiter::default();
        let solo = (0..1200)
            .filter(|&i| alone.admit(&lim, 1, secs(f64::from(i) * 0.5)).is_ok())
            .count();
        assert_eq!(solo, 60 + 600 - 1, "one replica admits its whole limit");
    }

    #[test]
    fn a_limit_below_the_replica_count_still_admits_at_its_rate() {
        // 2 a minute over 4 replicas: each may hold one request, refilled
        // every 2 minutes, so the first burst is 4 and then 2 a minute.
        let admitted: u32 = round_robin(2, 4, 60, 10).iter().sum();
        assert!(
            (20..=4 + 2 * 10).contains(&admitted),
            "{admitted} in 10 min"
        );
        let mut l = Limiter::default();
        let lim = limits(Some(2), None);
        l.admit(&lim, 4, secs(0.0)).unwrap();
        assert_eq!(
            l.admit(&lim, 4, secs(0.0)).unwrap_err().retry_after_secs,
            120
        );
        assert_eq!(l.admit(&lim, 4, secs(0.0)).unwrap_err().per_minute, 2);
    }

    #[test]
    fn what_is_left_is_the_fleets_if_the_others_are_alike() {
        let lim = limits(Some(60), Some(1000));
        let mut l = Limiter::default();
        let t0 = secs(0.0);
        let full = l.left(&lim, 2, t0);
        let r = full.requests.unwrap();
        assert_eq!(
            (r.limit, r.remaining, r.replica_remaining, r.replicas),
            (60, 60, 30, 2)
        );
        l.admit(&lim, 2, t0).unwrap();
        l.debit_tokens(&lim, 2, 100, t0);
        let after = l.left(&lim, 2, t0);
        let r = after.requests.unwrap();
        // 29 of this replica's 30 left; one refills in 2 s at 30 a minute.
        assert_eq!(
            (r.remaining, r.replica_remaining, r.reset),
            (58, 29, secs(2.0))
        );
        let t = after.tokens.unwrap();
        assert_eq!(
            (t.limit, t.remaining, t.replica_remaining),
            (1000, 800, 400)
        );
        // A count that changes rescales this replica's share at once.
        let r = l.left(&lim, 4, t0).requests.unwrap();
        assert_eq!((r.remaining, r.replica_remaining), (58, 14));
        let r = l.left(&lim, 1, t0).requests.unwrap();
        assert_eq!((r.remaining, r.replica_remaining), (58, 58));
        for _ in 0..58 {
            l.admit(&lim, 1, t0).unwrap();
        }
        assert!(l.admit(&lim, 1, t0).is_err());
    }

    #[test]
    fn tokens_per_minute_are_shared_too() {
        let lim = limits(None, Some(1000));
        let mut l = Limiter::default();
        l.admit(&lim, 2, secs(0.0)).unwrap();
        l.debit_tokens(&lim, 2, 600, secs(0.0));
        let err = l.admit(&lim, 2, secs(0.0)).unwrap_err();
        // 500 - 600 = -100 at 500 a minute: 12 s.
        assert_eq!(
            (err.kind, err.per_minute, err.retry_after_secs),
            (LimitKind::Tokens, 1000, 12)
        );
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let mut l = Limiter::default();
        let lim = limits(Some(1), None);
        l.admit(&lim, 1, secs(10.0)).unwrap();
        assert!(l.admit(&lim, 1, secs(5.0)).is_err());
        assert!(l.admit(&lim, 1, secs(70.0)).is_ok());
    }
}
