//! The Secrets the operator owns, as they should be, and how to read the ones
//! that exist.
//!
//! - the holder's **plaintext** Secret in the StrakeToken's namespace, owned by
//!   the StrakeToken (garbage-collected with it);
//! - one **token** Secret and one **upstream** Secret per resource in the
//!   proxy's namespace, named and labelled by [`strake_crds::contract`].
//!
//! Every one is written with server-side apply under [`FIELD_MANAGER`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;
use serde::de::DeserializeOwned;
use strake_crds::StrakeToken;
use strake_crds::contract::{self, BudgetRecord, Role, SourceRef, TokenRecord, UpstreamRecord};
use strake_crds::federated::FederatedSubject;
use strake_crds::token::Token;

use crate::core::upstream::ApiKey;

/// The one field manager for every server-side apply.
pub const FIELD_MANAGER: &str = "strake-operator";
/// Both resources carry it until their proxy-namespace Secret is gone.
pub const FINALIZER: &str = "strake.sh/cleanup";
/// On a plaintext Secret: the StrakeToken it belongs to.
pub const TOKEN_LABEL: &str = "strake.sh/token";
/// On a plaintext Secret: the `spec.rotation` its token was minted for.
pub const ROTATION_ANNOTATION: &str = "strake.sh/rotation";
/// On a plaintext Secret: when its token was minted (RFC 3339). Kept here
/// rather than only in status so that it survives a status rewrite.
pub const ISSUED_AT_ANNOTATION: &str = "strake.sh/issued-at";
/// The plaintext token's key in the holder's Secret.
pub const TOKEN_KEY: &str = strake_crds::resources::HOLDER_TOKEN_KEY;
/// The plaintext Secrets this operator writes (and watches for drift).
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=strake-operator";

/// Kubernetes label values are at most 63 characters.
const LABEL_VALUE_MAX: usize = 63;

/// The holder's Secret: the token, its env keys, and the bookkeeping
/// annotations that let a restarted operator keep the same token.
pub fn plaintext_secret(
    owner: &StrakeToken,
    token: &Token,
    issued_at: &Time,
    env: BTreeMap<String, String>,
) -> Secret {
    let name = owner.metadata.name.clone().unwrap_or_default();
    let mut labels = BTreeMap::from([(
        contract::MANAGED_BY_LABEL.to_string(),
        contract::MANAGED_BY.to_string(),
    )]);
    if name.len() <= LABEL_VALUE_MAX {
        labels.insert(TOKEN_LABEL.to_string(), name);
    }
    let mut data: BTreeMap<String, ByteString> = env
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect();
    data.insert(
        TOKEN_KEY.to_string(),
        ByteString(token.expose().as_bytes().to_vec()),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(owner.secret_name()),
            namespace: owner.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([
                (
                    ROTATION_ANNOTATION.to_string(),
                    owner.spec.rotation.to_string(),
                ),
                (ISSUED_AT_ANNOTATION.to_string(), issued_at.0.to_string()),
            ])),
            owner_references: Some(vec![owner_reference(owner)]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Controller reference to a StrakeToken: Kubernetes deletes the plaintext
/// Secret after the StrakeToken, and `kubectl delete --cascade=foreground`
/// waits for it.
pub fn owner_reference(owner: &StrakeToken) -> OwnerReference {
    OwnerReference {
        api_version: StrakeToken::api_version(&()).into_owned(),
        kind: StrakeToken::kind(&()).into_owned(),
        name: owner.metadata.name.clone().unwrap_or_default(),
        uid: owner.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// True when `meta` names the object with `uid` as its controller.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// The hashed token Secret in the proxy namespace.
pub fn token_secret(
    proxy_namespace: &str,
    source: &SourceRef,
    record: &TokenRecord,
    budget: Option<&BudgetRecord>,
    federated: &[FederatedSubject],
) -> Secret {
    let mut data = BTreeMap::from([(contract::RECORD_KEY.to_string(), json_bytes(record))]);
    if let Some(budget) = budget {
        data.insert(contract::BUDGET_KEY.to_string(), json_bytes(budget));
    }
    if !federated.is_empty() {
        data.insert(contract::FEDERATED_KEY.to_string(), json_bytes(&federated));
    }
    published_secret(
        contract::token_secret_name(&source.namespace, &source.name),
        proxy_namespace,
        Role::Token,
        contract::TOKEN_SECRET_TYPE,
        source,
        data,
    )
}

/// The upstream Secret in the proxy namespace: the record and the real key.
pub fn upstream_secret(
    proxy_namespace: &str,
    source: &SourceRef,
    record: &UpstreamRecord,
    key: &ApiKey,
    budget: Option<&BudgetRecord>,
) -> Secret {
    let mut data = BTreeMap::from([
        (contract::RECORD_KEY.to_string(), json_bytes(record)),
        (
            contract::API_KEY_KEY.to_string(),
            ByteString(key.expose().to_vec()),
        ),
    ]);
    if let Some(budget) = budget {
        data.insert(contract::BUDGET_KEY.to_string(), json_bytes(budget));
    }
    published_secret(
        contract::upstream_secret_name(&source.namespace, &source.name),
        proxy_namespace,
        Role::Upstream,
        contract::UPSTREAM_SECRET_TYPE,
        source,
        data,
    )
}

fn published_secret(
    name: String,
    namespace: &str,
    role: Role,
    type_: &str,
    source: &SourceRef,
    data: BTreeMap<String, ByteString>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_string()),
            labels: Some(contract::labels(role.as_str(), source)),
            ..ObjectMeta::default()
        },
        type_: Some(type_.to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

fn json_bytes<T: serde::Serialize>(value: &T) -> ByteString {
    ByteString(serde_json::to_vec(value).expect("records serialize to JSON"))
}

/// The record a published Secret carries, if it parses.
pub fn read_record<T: DeserializeOwned>(secret: &Secret) -> Option<T> {
    let bytes = secret.data.as_ref()?.get(contract::RECORD_KEY)?;
    serde_json::from_slice(&bytes.0).ok()
}

/// True when `existing` already says everything `desired` says: same type
/// and data, and every desired label, annotation and owner reference present.
/// Lets a resync skip writes that would change nothing.
pub fn already_applied(existing: &Secret, desired: &Secret) -> bool {
    fn contains<K: Ord, V: PartialEq>(
        have: &Option<BTreeMap<K, V>>,
        want: &Option<BTreeMap<K, V>>,
    ) -> bool {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    }
    let (have, want) = (&existing.metadata, &desired.metadata);
    contains(&have.labels, &want.labels)
        && contains(&have.annotations, &want.annotations)
        && want
            .owner_references
            .iter()
            .flatten()
            .all(|o| have.owner_references.iter().flatten().any(|h| h == o))
        && existing.type_ == desired.type_
        && existing.data == desired.data
}

/// Which resource a proxy-namespace Secret was published for, from its labels.
/// `None` when the source name was too long to fit in a label: then only the
/// record (see [`read_record`]) names it.
pub fn labelled_source(meta: &ObjectMeta) -> Option<(Role, SourceRef)> {
    let labels = meta.labels.as_ref()?;
    let role = Role::of(Some(labels))?;
    Some((
        role,
        SourceRef {
            namespace: labels.get(contract::SOURCE_NAMESPACE_LABEL)?.clone(),
            name: labels.get(contract::SOURCE_NAME_LABEL)?.clone(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> StrakeToken {
        let mut spec = crate::core::fixtures::token_spec(&["openai"]);
        spec.rotation = 2;
        let mut t = StrakeToken::new("alice", spec);
        t.metadata.namespace = Some("team-a".into());
        t.metadata.uid = Some("uid-1".into());
        t
    }

    #[test]
    fn plaintext_secret_is_owned_labelled_and_annotated() {
        let owner = alice();
        let token = Token::mint();
        let issued = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let env = BTreeMap::from([("OPENAI_API_KEY".to_string(), token.expose().to_string())]);
        let s = plaintext_secret(&owner, &token, &issued, env);
        assert_eq!(s.metadata.name.as_deref(), Some("alice-strake"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("team-a"));
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[TOKEN_LABEL], "alice");
        assert_eq!(labels[contract::MANAGED_BY_LABEL], "strake-operator");
        let ann = s.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[ROTATION_ANNOTATION], "2");
        assert_eq!(ann[ISSUED_AT_ANNOTATION], "2026-01-01T00:00:00Z");
        let data = s.data.as_ref().unwrap();
        assert_eq!(data[TOKEN_KEY].0, token.expose().as_bytes());
        assert!(controlled_by(&s.metadata, "uid-1"));
        assert!(!controlled_by(&s.metadata, "uid-2"));
        let owner_ref = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner_ref.api_version, "strake.sh/v1alpha1");
        assert_eq!(owner_ref.kind, "StrakeToken");
        assert_eq!(owner_ref.block_owner_deletion, Some(true));
    }

    #[test]
    fn long_names_are_left_out_of_labels() {
        let mut owner = alice();
        owner.metadata.name = Some("a".repeat(100));
        let s = plaintext_secret(
            &owner,
            &Token::mint(),
            &Time("2026-01-01T00:00:00Z".parse().unwrap()),
            BTreeMap::new(),
        );
        assert!(!s.metadata.labels.unwrap().contains_key(TOKEN_LABEL));
    }

    #[test]
    fn published_secrets_follow_the_contract_and_read_back() {
        let src = SourceRef {
            namespace: "team-a".into(),
            name: "alice".into(),
        };
        let record = TokenRecord {
            name: "team-a/alice".into(),
            identity: "alice@example.com".into(),
            sha256: Token::mint().hash(),
            upstreams: vec!["team-a/openai".into()],
            expires_at: None,
            suspended: false,
            allowed_models: vec![],
            limits: None,
            endpoints: vec![],
            source: Some(src.clone()),
            budget: None,
            federated: Vec::new(),
            previous: None,
        };
        let s = token_secret("strake-system", &src, &record, None, &[]);
        assert_eq!(
            s.metadata.name.as_deref(),
            Some(contract::token_secret_name("team-a", "alice").as_str())
        );
        assert_eq!(s.type_.as_deref(), Some(contract::TOKEN_SECRET_TYPE));
        assert_eq!(read_record::<TokenRecord>(&s), Some(record));
        assert_eq!(labelled_source(&s.metadata), Some((Role::Token, src)));
        assert!(already_applied(&s, &s.clone()));
        let mut edited = s.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("extra".into(), ByteString(b"x".to_vec()));
        assert!(!already_applied(&edited, &s));
        let mut relabelled = s.clone();
        relabelled.metadata.labels = None;
        assert!(!already_applied(&relabelled, &s));
    }
}
