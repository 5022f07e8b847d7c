//! The operator's own writes, recognised when the watch sends them back.
//!
//! Every Secret the StrakeToken controller applies comes back as a watch
//! event that would wake the controller for a reconcile that finds nothing
//! to do: three extra reads per token, and a place in the queue taken from
//! real work. An event carrying exactly the resourceVersion our write
//! returned is that echo; anything else (an edit or a delete by hand, a
//! write by someone else) still wakes the controller.

use std::collections::HashMap;
use std::sync::Mutex;

/// `(namespace, name)` → the resourceVersion of our last write to it.
#[derive(Debug, Default)]
pub struct Echoes {
    written: Mutex<HashMap<(String, String), String>>,
}

impl Echoes {
    /// Our write to `namespace/name` left it at `version`.
    pub fn wrote(&self, namespace: &str, name: &str, version: &str) {
        self.lock()
            .insert((namespace.into(), name.into()), version.into());
    }

    /// Whether an event showing `namespace/name` at `version` is the echo
    /// of our last write. The next event for an object we wrote consumes
    /// the record either way, so what is kept stays bounded by the writes
    /// whose echo is still on its way.
    pub fn is_echo(&self, namespace: &str, name: &str, version: Option<&str>) -> bool {
        let ours = self
            .lock()
            .remove(&(namespace.to_string(), name.to_string()));
        ours.is_some_and(|ours| version == Some(ours.as_str()))
    }

    /// The object is gone: nothing of it to recognise any more.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock()
            .remove(&(namespace.to_string(), name.to_string()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        self.written.lock().expect("echoes lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_write_comes_back_once_as_an_echo() {
        let e = Echoes::default();
        e.wrote("team-a", "alice-strake", "41");
        assert!(e.is_echo("team-a", "alice-strake", Some("41")));
        // Seen: a second event at the same version (a relist) is not ours
        // to swallow again, and nothing is kept.
        assert!(!e.is_echo("team-a", "alice-strake", Some("41")));
        assert_eq!(e.len(), 0);
    }

    #[test]
    fn another_version_or_another_object_is_not_an_echo() {
        let e = Echoes::default();
        e.wrote("team-a", "alice-strake", "41");
        assert!(!e.is_echo("team-b", "alice-strake", Some("41")));
        assert!(!e.is_echo("team-a", "bob-strake", Some("41")));
        // Edited by hand after our write (or our write's echo came before
        // its response): it wakes the controller.
        assert!(!e.is_echo("team-a", "alice-strake", Some("42")));
        assert_eq!(e.len(), 0, "the edit consumed the record");
        e.wrote("team-a", "alice-strake", "43");
        assert!(!e.is_echo("team-a", "alice-strake", None));
    }

    #[test]
    fn a_later_write_replaces_the_earlier_and_a_delete_forgets() {
        let e = Echoes::default();
        e.wrote("team-a", "alice-strake", "41");
        e.wrote("team-a", "alice-strake", "45");
        assert!(e.is_echo("team-a", "alice-strake", Some("45")));
        e.wrote("team-a", "alice-strake", "46");
        e.forget("team-a", "alice-strake");
        assert!(!e.is_echo("team-a", "alice-strake", Some("46")));
        assert_eq!(e.len(), 0);
    }
}
