//! Leader election on a `coordination.k8s.io/v1` Lease: the pure decision.
//!
//! Like client-go, expiry is judged by how long the lease record has gone
//! unchanged *as observed by this process* (a monotonic clock), never by
//! comparing another node's `renewTime` with our wall clock, so clock skew
//! between nodes cannot make two replicas lead at once.

use std::time::Duration;

/// How long a lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews, and a standby retries.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// A leader that could not renew for this long stops leading; it is shorter
/// than [`LEASE_DURATION`] so the old leader stops before a standby may start.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// We hold it: write a fresh `renewTime`.
    Renew,
    /// Nobody holds it, or the holder stopped renewing: take it over.
    Acquire,
    /// Someone else holds a live lease.
    Wait,
}

/// What to do with a lease whose record has not changed for `unchanged_for`.
pub fn decide(
    holder: Option<&str>,
    me: &str,
    lease_duration: Duration,
    unchanged_for: Duration,
) -> LeaseDecision {
    match holder {
        Some(h) if h == me => LeaseDecision::Renew,
        None | Some("") => LeaseDecision::Acquire,
        Some(_) if unchanged_for >= lease_duration => LeaseDecision::Acquire,
        Some(_) => LeaseDecision::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = LEASE_DURATION;

    #[test]
    fn our_own_lease_is_renewed_even_if_stale() {
        assert_eq!(
            decide(Some("me"), "me", D, Duration::ZERO),
            LeaseDecision::Renew
        );
        assert_eq!(decide(Some("me"), "me", D, D * 3), LeaseDecision::Renew);
    }

    #[test]
    fn a_free_lease_is_acquired() {
        assert_eq!(
            decide(None, "me", D, Duration::ZERO),
            LeaseDecision::Acquire
        );
        // A released lease has an empty holder.
        assert_eq!(
            decide(Some(""), "me", D, Duration::ZERO),
            LeaseDecision::Acquire
        );
    }

    #[test]
    fn another_holder_is_respected_until_its_lease_runs_out() {
        assert_eq!(
            decide(Some("other"), "me", D, Duration::ZERO),
            LeaseDecision::Wait
        );
        assert_eq!(
            decide(Some("other"), "me", D, D - Duration::from_millis(1)),
            LeaseDecision::Wait
        );
        assert_eq!(decide(Some("other"), "me", D, D), LeaseDecision::Acquire);
    }

    #[test]
    fn the_leader_gives_up_before_a_standby_may_take_over() {
        assert!(RENEW_DEADLINE + RETRY_PERIOD < LEASE_DURATION);
    }
}
