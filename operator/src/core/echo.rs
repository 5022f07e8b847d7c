//! The operator's own writes, recognised when the watch sends them back.
//!
//! Every Secret the StrakeToken controller applies comes back as a watch
//! event that would wake the controller for a reconcile that finds nothing
//! to do: two extra reads per token, and a place in the queue taken from
//! real work. An event carrying exactly the resourceVersion our write
//! returned is that echo; anything else (an edit or a delete by hand, a
//! write by someone else) still wakes the controller.
//!
//! The echo can outrun the write's response. An event for an object while
//! our write to it is in flight is held back, and the write's outcome
//! decides: the version it returned means it was ours; another version
//! means the writer must look again.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug)]
enum Mark {
    /// Our write is in flight; the last version an event showed meanwhile.
    Writing { seen: Option<String> },
    /// Our write left the object at this version.
    Wrote(String),
}

/// `(namespace, name)` → what we know of our last write to it.
#[derive(Debug, Default)]
pub struct Echoes {
    marks: Mutex<HashMap<(String, String), Mark>>,
}

impl Echoes {
    /// Our write to `namespace/name` is about to start.
    pub fn writing(&self, namespace: &str, name: &str) {
        self.lock()
            .insert(key(namespace, name), Mark::Writing { seen: None });
    }

    /// Our write left `namespace/name` at `version`. True when an event for
    /// another version was held back meanwhile: someone else changed it, so
    /// the writer must look again.
    pub fn wrote(&self, namespace: &str, name: &str, version: &str) -> bool {
        let mut marks = self.lock();
        let key = key(namespace, name);
        match marks.remove(&key) {
            Some(Mark::Writing { seen: Some(seen) }) => seen != version,
            _ => {
                marks.insert(key, Mark::Wrote(version.to_string()));
                false
            }
        }
    }

    /// Our write failed: its events are anyone's (the retry looks again).
    pub fn failed(&self, namespace: &str, name: &str) {
        self.forget(namespace, name);
    }

    /// Whether an event showing `namespace/name` at `version` wakes nobody:
    /// the echo of our finished write, or an event during our write (held
    /// back for [`Echoes::wrote`] to judge). The next event after a finished
    /// write consumes its mark either way, so what is kept stays bounded by
    /// the writes whose echo is still on its way.
    pub fn is_echo(&self, namespace: &str, name: &str, version: Option<&str>) -> bool {
        let mut marks = self.lock();
        let key = key(namespace, name);
        match marks.get_mut(&key) {
            Some(Mark::Writing { seen }) => {
                *seen = version.map(str::to_string);
                true
            }
            Some(Mark::Wrote(ours)) => {
                let echo = version == Some(ours.as_str());
                marks.remove(&key);
                echo
            }
            None => false,
        }
    }

    /// The object is gone: nothing of it to recognise any more.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().remove(&key(namespace, name));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Mark>> {
        self.marks.lock().expect("echoes lock")
    }
}

fn key(namespace: &str, name: &str) -> (String, String) {
    (namespace.to_string(), name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that returned `version`, its echo not yet seen.
    fn written(e: &Echoes, name: &str, version: &str) {
        e.writing("team-a", name);
        assert!(!e.wrote("team-a", name, version));
    }

    #[test]
    fn our_write_comes_back_once_as_an_echo() {
        let e = Echoes::default();
        written(&e, "alice-strake", "41");
        assert!(e.is_echo("team-a", "alice-strake", Some("41")));
        // Seen: a second event at the same version (a relist) is not ours
        // to swallow again, and nothing is kept.
        assert!(!e.is_echo("team-a", "alice-strake", Some("41")));
        assert_eq!(e.len(), 0);
    }

    #[test]
    fn another_version_or_another_object_is_not_an_echo() {
        let e = Echoes::default();
        written(&e, "alice-strake", "41");
        assert!(!e.is_echo("team-b", "alice-strake", Some("41")));
        assert!(!e.is_echo("team-a", "bob-strake", Some("41")));
        // Edited by hand after our write: it wakes the controller.
        assert!(!e.is_echo("team-a", "alice-strake", Some("42")));
        assert_eq!(e.len(), 0, "the edit consumed the mark");
        written(&e, "alice-strake", "43");
        assert!(!e.is_echo("team-a", "alice-strake", None));
    }

    #[test]
    fn an_echo_that_outruns_the_response_is_held_and_judged_by_the_write() {
        let e = Echoes::default();
        e.writing("team-a", "alice-strake");
        assert!(e.is_echo("team-a", "alice-strake", Some("41")), "held back");
        assert!(!e.wrote("team-a", "alice-strake", "41"), "it was ours");
        assert_eq!(e.len(), 0);

        // Someone else's change arrived during our write: look again.
        e.writing("team-a", "alice-strake");
        assert!(e.is_echo("team-a", "alice-strake", Some("50")));
        assert!(e.wrote("team-a", "alice-strake", "49"));
        assert_eq!(e.len(), 0);
    }

    #[test]
    fn a_failed_write_and_a_delete_forget() {
        let e = Echoes::default();
        e.writing("team-a", "alice-strake");
        e.failed("team-a", "alice-strake");
        assert!(!e.is_echo("team-a", "alice-strake", Some("41")));
        written(&e, "alice-strake", "46");
        e.forget("team-a", "alice-strake");
        assert!(!e.is_echo("team-a", "alice-strake", Some("46")));
        assert_eq!(e.len(), 0);
    }
}
