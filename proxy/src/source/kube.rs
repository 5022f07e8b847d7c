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
use strake_crds::contract::{self, API_KEY_KEY, RECORD_KEY, Role, TokenRecord, UpstreamRecord};

use crate::config::redact;
use crate::index::{ApiKey, Record, TokenIndex};
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
            let record: TokenRecord =
                serde_json::from_slice(data(RECORD_KEY)?).map_err(|e| DecodeError::Record {
                    key: RECORD_KEY,
                    what: "token",
                    reason: redact(&e.to_string()),
                })?;
            Ok(Some((Role::Token.as_str(), Record::Token(record))))
        }
        Some(Role::Upstream) => {
            let record: UpstreamRecord =
                serde_json::from_slice(data(RECORD_KEY)?).map_err(|e| DecodeError::Record {
                    key: RECORD_KEY,
                    what: "upstream",
                    reason: redact(&e.to_string()),
                })?;
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

/// The role label of a Secret, for counting rejected records.
fn role_of(secret: &Secret) -> &'static str {
    Role::of(secret.metadata.labels.as_ref())
        .unwrap_or(Role::Token)
        .as_str()
}

/// Watches the namespace's Strake Secrets until `shutdown` fires.
pub async fn run(
    proxy: Proxy,
    client: kube::Client,
    namespace: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(contract::SELECTOR);
    let mut events = watcher::watcher(api, config)
        .backoff(watch_backoff())
        .boxed();
    let mut index = TokenIndex::new();
    let mut initial: Option<Vec<(String, Record)>> = None;
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = shutdown.changed() => return,
        };
        let Some(event) = event else { return };
        match event {
            Ok(Event::Init) => initial = Some(Vec::new()),
            Ok(Event::InitApply(secret)) => {
                if let Some(record) = decode_logged(&proxy, &secret) {
                    initial.get_or_insert_with(Vec::new).push(record);
                }
            }
            Ok(Event::InitDone) => {
                let records = initial.take().unwrap_or_default();
                let (removed, errors) = index.reset(records);
                for (source, e) in errors {
                    proxy.metrics().rejected_record(kind_of(&e));
                    tracing::error!(secret = %source, error = %e, "record skipped");
                }
                proxy.publish(&index, removed);
                proxy.metrics().config_reloads.inc();
                let view = index.view();
                tracing::info!(
                    namespace = %namespace,
                    tokens = view.token_count(),
                    upstreams = view.upstream_count(),
                    "initial list applied; ready"
                );
            }
            Ok(Event::Apply(secret)) => {
                let Some(name) = secret.metadata.name.clone() else {
                    continue;
                };
                let removed = match decode_logged(&proxy, &secret) {
                    Some((source, record)) => match index.apply(&source, record) {
                        Ok(removed) => removed,
                        Err(e) => {
                            proxy.metrics().rejected_record(kind_of(&e));
                            tracing::error!(secret = %name, error = %e, "record skipped");
                            // Fail closed: whatever the Secret granted before goes.
                            index.delete(&name)
                        }
                    },
                    None => index.delete(&name),
                };
                proxy.publish(&index, removed);
                proxy.metrics().config_reloads.inc();
                tracing::debug!(secret = %name, "applied");
            }
            Ok(Event::Delete(secret)) => {
                let Some(name) = secret.metadata.name.as_deref() else {
                    continue;
                };
                let removed = index.delete(name);
                proxy.publish(&index, removed);
                proxy.metrics().config_reloads.inc();
                tracing::debug!(secret = %name, "deleted");
            }
            Err(e) => {
                // The backoff paces retries; the index keeps serving meanwhile.
                tracing::warn!(error = %e, "watching Secrets failed; serving the last known state and retrying");
            }
        }
    }
}

fn decode_logged(proxy: &Proxy, secret: &Secret) -> Option<(String, Record)> {
    let name = secret.metadata.name.clone()?;
    match decode(secret) {
        Ok(Some((_, record))) => Some((name, record)),
        Ok(None) => None,
        Err(e) => {
            proxy.metrics().rejected_record(role_of(secret));
            tracing::error!(secret = %name, error = %e, "record skipped");
            None
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

/// Retry pacing for the watch. kube's default grows to 30 s and resets only
/// after 120 s without errors, so the 403s and 410s of a restarting API server
/// held revocations back for tens of seconds. Capped at 2 s, the watch
/// resumes within a couple of seconds of the server's return.
fn watch_backoff() -> impl kube::runtime::utils::Backoff + 'static {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(200))
        .with_max_delay(std::time::Duration::from_secs(2))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    kube::runtime::utils::ResetTimerBackoff::new(
        watcher::ExponentialBackoff::from(exponential),
        std::time::Duration::from_secs(30),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn token_and_upstream_secrets_decode() {
        let rec = TokenRecord {
            name: "team-a/alice".into(),
            identity: "alice@example.com".into(),
            sha256: Token::mint().hash(),
            upstreams: vec!["team-a/openai".into()],
            expires_at: None,
            suspended: false,
            allowed_models: vec![],
            limits: None,
            source: None,
        };
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
            source: None,
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
