//! Revocation ahead of the reconcile queue: which deleted StrakeTokens to
//! withdraw from the proxies now.
//!
//! The StrakeToken controller works through its queue in no particular
//! order, so under a storm of creations a deletion would wait behind
//! thousands of them. The revoker watches StrakeTokens' metadata on its own
//! and withdraws the proxy's record as soon as a token is marked for
//! deletion; the controller's cleanup (final usage, the Revoked event, the
//! finalizer) follows in its own time. This is the pure step of that watch.

use std::collections::HashSet;

use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;
use strake_crds::StrakeToken;

use crate::core::objects::FINALIZER;

/// A StrakeToken whose record must leave the proxies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdrawal {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The tokens already withdrawn, so each deletion is acted on once however
/// many updates (status writes during the final collection) follow it.
#[derive(Debug, Default)]
pub struct Revoker {
    withdrawn: HashSet<String>,
    /// The deleted tokens seen in a (re)list in progress.
    relisted: Option<HashSet<String>>,
}

impl Revoker {
    /// One watch event in; the withdrawal it calls for, if any.
    pub fn observe(&mut self, event: Event<PartialObjectMeta<StrakeToken>>) -> Option<Withdrawal> {
        match event {
            Event::Init => {
                self.relisted = Some(HashSet::new());
                None
            }
            Event::InitApply(meta) => {
                let due = self.due(&meta);
                if let (Some(seen), Some(uid)) = (self.relisted.as_mut(), deleting_uid(&meta)) {
                    seen.insert(uid.to_string());
                }
                due
            }
            Event::InitDone => {
                // A token that went away while the watch was down sent no
                // Delete: forget whatever the relist no longer shows.
                if let Some(seen) = self.relisted.take() {
                    self.withdrawn.retain(|uid| seen.contains(uid));
                }
                None
            }
            Event::Apply(meta) => self.due(&meta),
            Event::Delete(meta) => {
                if let Some(uid) = meta.metadata.uid.as_deref() {
                    self.withdrawn.remove(uid);
                }
                None
            }
        }
    }

    fn due(&mut self, meta: &PartialObjectMeta<StrakeToken>) -> Option<Withdrawal> {
        let uid = deleting_uid(meta)?;
        if !self.withdrawn.insert(uid.to_string()) {
            return None;
        }
        Some(Withdrawal {
            namespace: meta.metadata.namespace.clone().unwrap_or_default(),
            name: meta.metadata.name.clone().unwrap_or_default(),
            uid: uid.to_string(),
        })
    }

    /// Tokens remembered as withdrawn (bounded by the tokens being deleted).
    pub fn remembered(&self) -> usize {
        self.withdrawn.len()
    }
}

/// The uid of a token marked for deletion whose cleanup is still ours (it
/// carries the finalizer: without it there is nothing left to withdraw).
fn deleting_uid(meta: &PartialObjectMeta<StrakeToken>) -> Option<&str> {
    let m = &meta.metadata;
    if m.deletion_timestamp.is_none() || !m.finalizers.iter().flatten().any(|f| f == FINALIZER) {
        return None;
    }
    m.uid.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    fn token(name: &str, deleting: bool, finalizer: bool) -> PartialObjectMeta<StrakeToken> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team-a".into()),
                uid: Some(format!("uid-{name}")),
                deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
                finalizers: finalizer.then(|| vec![FINALIZER.to_string()]),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    fn withdrawal(name: &str) -> Option<Withdrawal> {
        Some(Withdrawal {
            namespace: "team-a".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        })
    }

    #[test]
    fn a_deletion_is_withdrawn_once_however_many_updates_follow() {
        let mut r = Revoker::default();
        assert_eq!(r.observe(Event::Apply(token("alice", false, true))), None);
        assert_eq!(
            r.observe(Event::Apply(token("alice", true, true))),
            withdrawal("alice")
        );
        // Status writes during the final collection: nothing more to do.
        assert_eq!(r.observe(Event::Apply(token("alice", true, true))), None);
        assert_eq!(r.observe(Event::Delete(token("alice", true, false))), None);
        assert_eq!(r.remembered(), 0, "a token that is gone is forgotten");
    }

    #[test]
    fn a_token_without_the_finalizer_is_not_ours_to_withdraw() {
        let mut r = Revoker::default();
        assert_eq!(r.observe(Event::Apply(token("bob", true, false))), None);
        assert_eq!(r.observe(Event::Apply(token("bob", false, true))), None);
    }

    #[test]
    fn a_relist_withdraws_deletions_it_finds_and_forgets_tokens_gone_meanwhile() {
        let mut r = Revoker::default();
        assert_eq!(
            r.observe(Event::Apply(token("alice", true, true))),
            withdrawal("alice")
        );
        assert_eq!(
            r.observe(Event::Apply(token("carol", true, true))),
            withdrawal("carol")
        );
        // The watch restarts: alice went away unseen, carol is still held,
        // dave was deleted while the watch was down.
        assert_eq!(r.observe(Event::Init), None);
        assert_eq!(
            r.observe(Event::InitApply(token("carol", true, true))),
            None
        );
        assert_eq!(
            r.observe(Event::InitApply(token("dave", true, true))),
            withdrawal("dave")
        );
        assert_eq!(
            r.observe(Event::InitApply(token("erin", false, true))),
            None
        );
        assert_eq!(r.observe(Event::InitDone), None);
        assert_eq!(r.remembered(), 2, "carol and dave, not alice");
    }
}
