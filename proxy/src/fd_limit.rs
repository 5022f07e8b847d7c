//! The file descriptor limit: raised at start from the soft limit to the
//! hard one, and checked against what `--max-connections` needs.
//!
//! Container runtimes now commonly start a process with a soft limit of
//! 1024 under a much higher hard one, which the process may raise itself
//! (Go's runtime and nginx's `worker_rlimit_nofile` do the same). Left at
//! 1024, the default 4096 connections would run the proxy out of
//! descriptors at about 500 clients: every accept would fail, and so would
//! the upstream connects of the requests already accepted.

/// The soft limit's target when the hard limit is unlimited: Linux's
/// default `fs.nr_open`, above which setrlimit refuses a soft limit.
const UNLIMITED_TARGET: u64 = 1 << 20;

/// Descriptors the proxy holds besides its connections and workers: the
/// control runtime, the admin port and its scrapes, the API server
/// watches, issuer key fetches, stdio. An idle proxy with two workers
/// holds 23 in all.
const RESERVED: u64 = 32;

/// Descriptors each traffic worker holds besides its connections (its
/// listener, event queue and waker).
const PER_WORKER: u64 = 4;

/// A soft and a hard limit, `None` standing for unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// The soft limit to set, if raising it helps: the hard limit, or
/// [`UNLIMITED_TARGET`] under an unlimited hard one.
pub fn raised(limits: Limits) -> Option<u64> {
    let soft = limits.soft?;
    let target = limits.hard.unwrap_or(UNLIMITED_TARGET);
    (target > soft).then_some(target)
}

/// Descriptors that `max_connections` clients need at most: each may hold
/// an upstream connection as well, plus what the process holds anyway.
pub fn needed(max_connections: usize, workers: usize) -> u64 {
    let connections = u64::try_from(max_connections).unwrap_or(u64::MAX);
    let workers = u64::try_from(workers).unwrap_or(u64::MAX);
    connections
        .saturating_mul(2)
        .saturating_add(workers.saturating_mul(PER_WORKER))
        .saturating_add(RESERVED)
}

/// What [`raise`] found and did.
#[derive(Debug)]
pub struct Outcome {
    /// The soft limit at start (`None`: unlimited).
    pub before: Option<u64>,
    /// The soft limit in force now.
    pub now: Option<u64>,
    /// Why raising it failed, if it did (the limit then stays as it was).
    pub error: Option<std::io::Error>,
}

/// Raises this process's soft limit as far as the hard limit allows.
pub fn raise() -> Outcome {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    let unchanged = |error| Outcome {
        before,
        now: before,
        error,
    };
    let Some(target) = raised(Limits {
        soft: limit.current,
        hard: limit.maximum,
    }) else {
        return unchanged(None);
    };
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        },
    ) {
        Ok(()) => Outcome {
            before,
            now: Some(target),
            error: None,
        },
        Err(e) => unchanged(Some(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let at = |soft, hard| raised(Limits { soft, hard });
        // What containerd 2 gives a container.
        assert_eq!(at(Some(1024), Some(524_288)), Some(524_288));
        assert_eq!(at(Some(1024), None), Some(UNLIMITED_TARGET));
        // Nothing to gain: already at the hard limit, or unlimited.
        assert_eq!(at(Some(4096), Some(4096)), None);
        assert_eq!(at(None, None), None);
        // Never lowered, even above the unlimited target.
        assert_eq!(at(Some(UNLIMITED_TARGET + 1), None), None);
    }

    #[test]
    fn each_connection_counts_twice_plus_what_the_process_holds() {
        assert_eq!(needed(4096, 2), 8192 + 8 + 32);
        assert_eq!(needed(1, 1), 2 + 4 + 32);
        assert_eq!(needed(usize::MAX, 64), u64::MAX);
    }
}
