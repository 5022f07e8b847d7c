//! Kube mode: the operator's Secrets in the proxy's namespace, watched by
//! label selector ([`contract::SELECTOR`]).
//!
//! The initial list is buffered and applied at once (`Init` … `InitDone` →
//! [`TokenIndex::reset`]); the proxy is ready only after it. Later events
//! apply or delete one Secret's record. If the API server goes away, the
//! index keeps serving what it has and the watcher retries with backoff; a
//! relist after a long outage resets the index to what the API server then
//! holds, so deletions missed meanwhile are caught.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use strake_crds::contract::{
    self, API_KEY_KEY, BUDGET_KEY, BudgetRecord, FEDERATED_KEY, RECORD_KEY, Role, TokenRecord,
    UpstreamRecord,
};
use strake_crds::federated::FederatedSubject;

use crate::config::redact;
use crate::index::{ApiKey, Record, Removed, TokenIndex};
use crate::server::Proxy;

/// Why a Secret's record cannot be used. Never includes key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("data key {0:?} is missing")]
    Missing(&'static str),
    #[error("data key {key:?} is not a valid {what} record: {reason}")]
    Record {
        key: &'static str,
        what: &'static str,
        reason: String,
    },
    #[error("data key {0:?} is not UTF-8")]
    KeyNotUtf8(&'static str),
}

/// The record a Secret carries: `Ok(None)` for a Secret without a Strake
/// role (the selector should keep those away).
pub fn decode(secret: &Secret) -> Result<Option<(&'static str, Record)>, DecodeError> {
    let data = |key: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
            .ok_or(DecodeError::Missing(key))
    };
    match Role::of(secret.metadata.labels.as_ref()) {
        Some(Role::Token) => {
            let mut record: TokenRecord =
                serde_json::from_slice(data(RECORD_KEY)?).map_err(|e| DecodeError::Record {
                    key: RECORD_KEY,
                    what: "token",
                    reason: redact(&e.to_string()),
                })?;
            record.budget = budget(secret)?.map(Box::new);
            record.federated = federated(secret)?;
            Ok(Some((Role::Token.as_str(), Record::Token(record))))
        }
        Some(Role::Upstream) => {
            let mut record: UpstreamRecord =
                serde_json::from_slice(data(RECORD_KEY)?).map_err(|e| DecodeError::Record {
                    key: RECORD_KEY,
                    what: "upstream",
                    reason: redact(&e.to_string()),
                })?;
            record.budget = budget(secret)?.map(Box::new);
            let key = std::str::from_utf8(data(API_KEY_KEY)?)
                .map_err(|_| DecodeError::KeyNotUtf8(API_KEY_KEY))?;
            Ok(Some((
                Role::Upstream.as_str(),
                Record::Upstream {
                    record,
                    api_key: ApiKey::new(key),
                },
            )))
        }
        None => Ok(None),
    }
}

/// The budget a Secret carries beside its record: none without the key. A
/// broken one refuses the whole Secret, so the last good version (with its
/// budget) keeps serving.
fn budget(secret: &Secret) -> Result<Option<BudgetRecord>, DecodeError> {
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(BUDGET_KEY)) else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes.0)
        .map(Some)
        .map_err(|e| DecodeError::Record {
            key: BUDGET_KEY,
            what: "budget",
            reason: redact(&e.to_string()),
        })
}

/// The federated subjects a token Secret carries beside its record: none
/// without the key. A broken list refuses the whole Secret (fail closed).
fn federated(secret: &Secret) -> Result<Vec<FederatedSubject>, DecodeError> {
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(FEDERATED_KEY)) else {
        return Ok(Vec::new());
    };
    serde_json::from_slice(&bytes.0).map_err(|e| DecodeError::Record {
        key: FEDERATED_KEY,
        what: "federated subjects",
        reason: redact(&e.to_string()),
    })
}

/// The role label of a Secret, for counting rejected records.
fn role_of(secret: &Secret) -> &'static str {
    Role::of(secret.metadata.labels.as_ref())
        .unwrap_or(Role::Token)
        .as_str()
}

/// The proxy's side of the Secret watch: the index, and the records of a
/// (re)list in progress (the index keeps serving until it completes).
#[derive(Default)]
pub struct WatchState {
    pub index: TokenIndex,
    initial: Option<Vec<(String, Record)>>,
}

/// What one watch event did.
#[derive(Debug, Default)]
pub struct Change {
    /// The index changed: publish it. The tokens it names are gone for good.
    pub publish: Option<Removed>,
    /// A (re)list was applied (the first one makes the proxy ready).
    pub listed: bool,
    /// Secrets whose record could not be used; whatever they granted before
    /// is gone (fail closed).
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub secret: String,
    /// `token` or `upstream`.
    pub kind: &'static str,
    pub error: String,
}

/// One step of the watch: applies `event` to `state`. Pure, so the
/// sequence that carries revocation (list, changes, deletes, relists) is
/// tested by feeding it events.
pub fn apply_event(state: &mut WatchState, event: Event<Secret>) -> Change {
    let mut change = Change::default();
    match event {
        Event::Init => state.initial = Some(Vec::new()),
        Event::InitApply(secret) => {
            if let Some(record) = decoded(&secret, &mut change.rejected) {
                state.initial.get_or_insert_with(Vec::new).push(record);
            }
        }
        Event::InitDone => {
            let records = state.initial.take().unwrap_or_default();
            let (removed, errors) = state.index.reset(records);
            change
                .rejected
                .extend(errors.into_iter().map(|(secret, e)| Rejected {
                    secret,
                    kind: kind_of(&e),
                    error: e.to_string(),
                }));
            change.publish = Some(removed);
            change.listed = true;
        }
        Event::Apply(secret) => {
            let Some(name) = secret.metadata.name.clone() else {
                return change;
            };
            let removed = match decoded(&secret, &mut change.rejected) {
                Some((source, record)) => match state.index.apply(&source, record) {
                    Ok(removed) => removed,
                    Err(e) => {
                        change.rejected.push(Rejected {
                            secret: name.clone(),
                            kind: kind_of(&e),
                            error: e.to_string(),
                        });
                        state.index.delete(&name)
                    }
                },
                None => state.index.delete(&name),
            };
            change.publish = Some(removed);
        }
        Event::Delete(secret) => {
            if let Some(name) = secret.metadata.name.as_deref() {
                change.publish = Some(state.index.delete(name));
            }
        }
    }
    change
}

/// The Secret's record with its source (the Secret's name), or `None` for
/// a Secret without a name or a Strake role, or with a bad record (noted
/// in `rejected`).
fn decoded(secret: &Secret, rejected: &mut Vec<Rejected>) -> Option<(String, Record)> {
    let name = secret.metadata.name.clone()?;
    match decode(secret) {
        Ok(Some((_, record))) => Some((name, record)),
        Ok(None) => None,
        Err(e) => {
            rejected.push(Rejected {
                secret: name,
                kind: role_of(secret),
                error: e.to_string(),
            });
            None
        }
    }
}

/// Watches the namespace's Strake Secrets until `shutdown` fires: the thin
/// loop around [`apply_event`].
pub async fn run(
    proxy: Proxy,
    client: kube::Client,
    namespace: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(contract::SELECTOR);
    let mut events = watcher::watcher(api, config)
        .backoff(strake_crds::watch::backoff())
        .boxed();
    let mut state = WatchState {
        index: TokenIndex::with_cluster_issuer(proxy.cluster_issuer()),
        ..WatchState::default()
    };
    let metrics = proxy.metrics();
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = shutdown.changed() => return,
        };
        let Some(event) = event else {
            tracing::error!("the Secret watch ended; changes no longer reach this proxy");
            return;
        };
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                // The backoff paces retries; the index keeps serving meanwhile.
                metrics.watch_errors.inc();
                tracing::warn!(error = %e, "watching Secrets failed; serving the last known state and retrying");
                continue;
            }
        };
        let change = apply_event(&mut state, event);
        for r in &change.rejected {
            metrics.rejected_record(r.kind);
            tracing::error!(secret = %r.secret, error = %r.error, "record skipped");
        }
        if let Some(removed) = change.publish {
            proxy.publish(&state.index, removed);
            metrics.reload_succeeded();
        }
        if change.listed {
            let view = state.index.view();
            tracing::info!(
                namespace = %namespace,
                tokens = view.token_count(),
                upstreams = view.upstream_count(),
                "initial list applied; ready"
            );
        }
    }
}

fn kind_of(e: &crate::index::IndexError) -> &'static str {
    match e {
        crate::index::IndexError::DuplicateHash { .. } | crate::index::IndexError::Token { .. } => {
            Role::Token.as_str()
        }
        _ => Role::Upstream.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::token_record;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;
    use strake_crds::provider::Provider;
    use strake_crds::token::Token;

    fn secret(role: &str, data: &[(&str, &[u8])]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("strake-token-0123".into());
        s.metadata.labels = Some(BTreeMap::from([(
            contract::ROLE_LABEL.to_string(),
            role.to_string(),
        )]));
        s.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                .collect(),
        );
        s
    }

    fn named(mut s: Secret, name: &str) -> Secret {
        s.metadata.name = Some(name.into());
        s
    }

    fn upstream_secret(name: &str) -> Secret {
        let up = UpstreamRecord {
            name: "team-a/openai".into(),
            provider: Provider::OpenAi,
            base_url: "https://api.openai.com".into(),
            headers: BTreeMap::new(),
            endpoints: vec![],
            source: None,
            budget: None,
        };
        let json = serde_json::to_vec(&up).unwrap();
        named(
            secret(
                "upstream",
                &[(RECORD_KEY, &json), (API_KEY_KEY, b"sk-real")],
            ),
            name,
        )
    }

    fn token_secret(name: &str, token: &Token, suspended: bool) -> Secret {
        let rec = TokenRecord {
            name: format!("team-a/{name}"),
            identity: format!("{name}@example.com"),
            sha256: token.hash(),
            upstreams: vec!["team-a/openai".into()],
            expires_at: None,
            suspended,
            allowed_models: vec![],
            endpoints: vec![],
            limits: None,
            source: None,
            budget: None,
            federated: Vec::new(),
            previous: None,
        };
        let json = serde_json::to_vec(&rec).unwrap();
        named(secret("token", &[(RECORD_KEY, &json)]), name)
    }

    fn removed_names(change: &Change) -> Vec<String> {
        let mut names: Vec<String> = change
            .publish
            .as_ref()
            .expect("published")
            .iter()
            .map(|p| p.name.to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_watch_applies_a_list_then_changes_deletes_and_a_relist() {
        let (alice, bob, carol) = (Token::mint(), Token::mint(), Token::mint());
        let mut state = WatchState::default();
        let has = |state: &WatchState, t: &Token| state.index.view().token(&t.hash()).is_some();

        // The initial list: nothing is published until it is complete.
        for event in [
            Event::Init,
            Event::InitApply(upstream_secret("u-openai")),
            Event::InitApply(token_secret("alice", &alice, false)),
            Event::InitApply(token_secret("bob", &bob, false)),
        ] {
            let change = apply_event(&mut state, event);
            assert!(change.publish.is_none() && !change.listed);
        }
        let change = apply_event(&mut state, Event::InitDone);
        assert!(change.listed && change.rejected.is_empty(), "{change:?}");
        assert!(removed_names(&change).is_empty());
        assert!(has(&state, &alice) && has(&state, &bob));

        // A change in place: suspended, not removed.
        let change = apply_event(
            &mut state,
            Event::Apply(token_secret("alice", &alice, true)),
        );
        assert!(removed_names(&change).is_empty());
        assert!(state.index.view().token(&alice.hash()).unwrap().suspended);

        // Revocation: the Secret's delete event.
        let change = apply_event(&mut state, Event::Delete(token_secret("bob", &bob, false)));
        assert_eq!(removed_names(&change), ["team-a/bob"]);
        assert!(!has(&state, &bob));

        // A record that cannot be used removes what its Secret granted.
        apply_event(
            &mut state,
            Event::Apply(token_secret("carol", &carol, false)),
        );
        assert!(has(&state, &carol));
        let broken = named(secret("token", &[(RECORD_KEY, b"{}")]), "carol");
        let change = apply_event(&mut state, Event::Apply(broken));
        assert_eq!(change.rejected.len(), 1, "{change:?}");
        assert_eq!(change.rejected[0].kind, "token");
        assert_eq!(removed_names(&change), ["team-a/carol"]);
        assert!(!has(&state, &carol));

        // A restart relists: the old index serves until the list is done,
        // then a deletion missed meanwhile (alice) is caught.
        apply_event(
            &mut state,
            Event::Apply(token_secret("carol", &carol, false)),
        );
        for event in [
            Event::Init,
            Event::InitApply(upstream_secret("u-openai")),
            Event::InitApply(token_secret("carol", &carol, false)),
        ] {
            assert!(apply_event(&mut state, event).publish.is_none());
            assert!(has(&state, &alice), "still serving the last known state");
        }
        let change = apply_event(&mut state, Event::InitDone);
        assert!(change.listed);
        assert_eq!(removed_names(&change), ["team-a/alice"]);
        assert!(!has(&state, &alice) && has(&state, &carol));
        assert_eq!(state.index.view().upstream_count(), 1);
    }

    #[test]
    fn a_relist_skips_bad_records_and_names_them() {
        let t = Token::mint();
        let mut state = WatchState::default();
        let mut rejected = Vec::new();
        for event in [
            Event::Init,
            Event::InitApply(upstream_secret("u-openai")),
            Event::InitApply(named(secret("upstream", &[(RECORD_KEY, b"{}")]), "u-bad")),
            Event::InitApply(token_secret("alice", &t, false)),
            Event::InitApply(token_secret("alice-copy", &t, false)),
            Event::InitDone,
        ] {
            let change = apply_event(&mut state, event);
            rejected.extend(change.rejected.into_iter().map(|r| (r.secret, r.kind)));
        }
        assert_eq!(
            rejected,
            [
                ("u-bad".to_string(), "upstream"),
                ("alice-copy".to_string(), "token")
            ]
        );
        assert_eq!(state.index.view().token_count(), 1);
    }

    #[test]
    fn token_and_upstream_secrets_decode() {
        let rec = token_record("team-a/alice", Token::mint().hash(), &["team-a/openai"]);
        let json = serde_json::to_vec(&rec).unwrap();
        let (role, decoded) = decode(&secret("token", &[(RECORD_KEY, &json)]))
            .unwrap()
            .unwrap();
        assert_eq!(role, "token");
        assert_eq!(decoded, Record::Token(rec));

        let up = UpstreamRecord {
            name: "team-a/openai".into(),
            provider: Provider::OpenAi,
            base_url: "https://api.openai.com".into(),
            headers: BTreeMap::new(),
            endpoints: vec![],
            source: None,
            budget: None,
        };
        let json = serde_json::to_vec(&up).unwrap();
        let s = secret(
            "upstream",
            &[(RECORD_KEY, &json), (API_KEY_KEY, b"sk-real\n")],
        );
        let (_, Record::Upstream { record, api_key }) = decode(&s).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(record, up);
        assert_eq!(api_key.expose(), "sk-real");
    }

    #[test]
    fn a_budget_travels_beside_the_record_and_a_broken_one_refuses_the_secret() {
        let rec = token_record("team-a/alice", Token::mint().hash(), &["team-a/openai"]);
        let json = serde_json::to_vec(&rec).unwrap();
        let budget = br#"{"period":"month","usdPicodollars":50000000000000,"resetsAt":1798761600,"spent":{"picodollars":1,"tokens":2},"exhausted":true,"collectEverySecs":10}"#;
        let (_, Record::Token(got)) = decode(&secret(
            "token",
            &[(RECORD_KEY, &json), (BUDGET_KEY, budget)],
        ))
        .unwrap()
        .unwrap() else {
            panic!()
        };
        let b = got.budget.unwrap();
        assert!(b.exhausted);
        assert_eq!(b.usd_picodollars, Some(50_000_000_000_000));
        // The record itself never carries it (a proxy without budgets
        // would refuse the unknown field).
        assert!(!String::from_utf8(json.clone()).unwrap().contains("budget"));
        let err = decode(&secret("token", &[(RECORD_KEY, &json), (BUDGET_KEY, b"{")])).unwrap_err();
        assert!(
            err.to_string().contains("not a valid budget record"),
            "{err}"
        );
    }

    /// A keyless token's Secret, as the operator publishes it.
    fn keyless_secret(name: &str, namespace: &str, subject: &str) -> Secret {
        let mut rec = crate::index::tests::token_record(
            &format!("{namespace}/{name}"),
            strake_crds::federated::unminted_hash(name),
            &["team-a/openai"],
        );
        rec.source = Some(contract::SourceRef {
            namespace: namespace.into(),
            name: name.into(),
        });
        let subjects = serde_json::json!([{
            "issuer": strake_crds::federated::DEFAULT_CLUSTER_ISSUER,
            "audience": "strake",
            "subject": subject,
        }]);
        named(
            secret(
                "token",
                &[
                    (RECORD_KEY, &serde_json::to_vec(&rec).unwrap()),
                    (FEDERATED_KEY, subjects.to_string().as_bytes()),
                ],
            ),
            name,
        )
    }

    #[test]
    fn federated_subjects_travel_beside_the_record_and_leave_with_the_secret() {
        let mut state = WatchState {
            index: TokenIndex::with_cluster_issuer(strake_crds::federated::DEFAULT_CLUSTER_ISSUER),
            ..WatchState::default()
        };
        apply_event(&mut state, Event::Init);
        apply_event(
            &mut state,
            Event::InitApply(keyless_secret(
                "ci",
                "team-a",
                "system:serviceaccount:team-a:ci",
            )),
        );
        apply_event(&mut state, Event::InitDone);
        let issuer = strake_crds::federated::DEFAULT_CLUSTER_ISSUER;
        assert!(state.index.view().federated().knows_issuer(issuer));

        // Another namespace's ServiceAccount, in a hand-made Secret: refused
        // whole, so nothing it names is accepted.
        let change = apply_event(
            &mut state,
            Event::Apply(keyless_secret(
                "sly",
                "team-a",
                "system:serviceaccount:team-b:deployer",
            )),
        );
        assert_eq!(change.rejected.len(), 1);
        assert!(
            change.rejected[0].error.contains("team-a"),
            "{:?}",
            change.rejected
        );

        let change = apply_event(
            &mut state,
            Event::Delete(keyless_secret(
                "ci",
                "team-a",
                "system:serviceaccount:team-a:ci",
            )),
        );
        assert!(change.publish.is_some());
        assert!(!state.index.view().federated().knows_issuer(issuer));

        // A list that does not parse, or names a field this proxy does not
        // know (one that might narrow the match), refuses the Secret.
        let mut broken = keyless_secret("ci", "team-a", "system:serviceaccount:team-a:ci");
        let data = broken.data.as_mut().unwrap();
        data.insert(
            FEDERATED_KEY.into(),
            ByteString(br#"[{"issuer":"https://i.example","audience":"a","subject":"s","unlessClaims":{}}]"#.to_vec()),
        );
        let err = decode(&broken).unwrap_err();
        assert!(err.to_string().contains("federated.json"), "{err}");
    }

    #[test]
    fn bad_records_are_errors_that_leak_nothing() {
        assert_eq!(
            decode(&secret("token", &[])).unwrap_err(),
            DecodeError::Missing(RECORD_KEY)
        );
        let err = decode(&secret("token", &[(RECORD_KEY, b"{\"name\":\"x\"}")])).unwrap_err();
        assert!(
            err.to_string().contains("not a valid token record"),
            "{err}"
        );
        let up = br#"{"name":"u","provider":"openai","baseUrl":"https://h"}"#;
        assert_eq!(
            decode(&secret("upstream", &[(RECORD_KEY, up)])).unwrap_err(),
            DecodeError::Missing(API_KEY_KEY)
        );
        let err = decode(&secret(
            "upstream",
            &[(RECORD_KEY, up), (API_KEY_KEY, b"\xff\xfe")],
        ))
        .unwrap_err();
        assert_eq!(err, DecodeError::KeyNotUtf8(API_KEY_KEY));
        let leaky =
            br#"{"name":"u","provider":"sk-proj-abcdefghijklmnopqrstu","baseUrl":"https://h"}"#;
        let err = decode(&secret(
            "upstream",
            &[(RECORD_KEY, leaky), (API_KEY_KEY, b"k")],
        ))
        .unwrap_err();
        assert!(!err.to_string().contains("abcdefghijkl"), "{err}");
        assert_eq!(decode(&secret("other", &[])).unwrap(), None);
    }
}
