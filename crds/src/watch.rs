//! How both binaries pace retries of a failed Kubernetes watch.
//!
//! kube's default backoff grows to 30 s and resets only after 120 s without
//! errors, so the burst of 403s and 410s an API server gives while it
//! restarts held revocations back for minutes. This one starts at
//! [`FIRST_RETRY`], doubles up to [`MAX_RETRY`] (plus up to as much again of
//! jitter, so that replicas do not retry in step), never gives up, and
//! starts over after [`RESET_AFTER`] without errors: a watch resumes within
//! a few seconds of the server's return.

use std::time::Duration;

use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::watcher::ExponentialBackoff;

/// The first retry's delay, before jitter.
pub const FIRST_RETRY: Duration = Duration::from_millis(200);
/// The longest delay between retries, before jitter.
pub const MAX_RETRY: Duration = Duration::from_secs(2);
/// A watch this long without errors starts its next backoff from the first
/// delay again.
pub const RESET_AFTER: Duration = Duration::from_secs(30);

/// The backoff for every watch the operator and the proxy run.
pub fn backoff() -> impl Backoff + 'static {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(FIRST_RETRY)
        .with_max_delay(MAX_RETRY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(ExponentialBackoff::from(exponential), RESET_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_start_small_stay_bounded_and_never_stop() {
        let mut b = backoff();
        let delays: Vec<Duration> = (0..50).map(|_| b.next().expect("never gives up")).collect();
        assert!(
            delays[0] >= FIRST_RETRY && delays[0] < 2 * FIRST_RETRY,
            "{delays:?}"
        );
        assert!(delays.iter().all(|d| *d <= 2 * MAX_RETRY), "{delays:?}");
        assert!(delays[10..].iter().all(|d| *d >= MAX_RETRY), "{delays:?}");
        b.reset();
        assert!(b.next().unwrap() < 2 * FIRST_RETRY);
    }
}
