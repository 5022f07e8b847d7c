//! The `Ready` condition both resources carry, so that `kubectl wait
//! --for=condition=Ready` and Argo CD health checks work without custom code.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

pub const READY: &str = "Ready";

/// The `Ready` condition. `lastTransitionTime` moves only when the status
/// (True/False) changes, as the API conventions ask.
pub fn ready(
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = match find(previous, READY) {
        Some(prev) if prev.status == status => prev.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: READY.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the `Ready` condition is True and describes the current
/// generation (a condition from before the last spec change says nothing).
pub fn is_ready(conditions: &[Condition], generation: Option<i64>) -> bool {
    find(conditions, READY).is_some_and(|c| {
        c.status == "True"
            && match (c.observed_generation, generation) {
                (Some(observed), Some(current)) => observed == current,
                _ => true,
            }
    })
}

/// The `Ready` condition's reason, if any.
pub fn ready_reason(conditions: &[Condition]) -> Option<&str> {
    find(conditions, READY).map(|c| c.reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn transition_time_is_kept_while_the_status_holds() {
        let t0 = at("2026-01-01T00:00:00Z");
        let t1 = at("2026-01-02T00:00:00Z");
        let first = ready(true, "Active", "ok".into(), Some(1), &[], t0);
        assert_eq!(first.last_transition_time, Time(t0));
        let again = ready(
            true,
            "Active",
            "still ok".into(),
            Some(2),
            std::slice::from_ref(&first),
            t1,
        );
        assert_eq!(again.last_transition_time, Time(t0));
        assert_eq!(again.observed_generation, Some(2));
        let flipped = ready(false, "Suspended", "no".into(), Some(2), &[again], t1);
        assert_eq!(flipped.last_transition_time, Time(t1));
        assert_eq!(flipped.status, "False");
    }

    #[test]
    fn readiness_requires_the_current_generation() {
        let t = at("2026-01-01T00:00:00Z");
        let c = ready(true, "Published", String::new(), Some(3), &[], t);
        assert!(is_ready(std::slice::from_ref(&c), Some(3)));
        assert!(!is_ready(std::slice::from_ref(&c), Some(4)));
        let f = ready(false, "KeyMissing", String::new(), Some(3), &[], t);
        assert!(!is_ready(&[f], Some(3)));
        assert!(!is_ready(&[], Some(3)));
    }
}
