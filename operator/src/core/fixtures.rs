//! Test fixtures the core's and the controllers' tests share: one spelling
//! of "a plain StrakeToken" and "an UpstreamKey", so a new spec field is
//! added in one place.

use std::collections::BTreeMap;

use strake_crds::provider::Provider;
use strake_crds::resources::{SecretKeyRef, UpstreamName};
use strake_crds::{StrakeTokenSpec, UpstreamKey, UpstreamKeySpec};

/// alice@example.com on `upstreams`, nothing else set.
pub fn token_spec(upstreams: &[&str]) -> StrakeTokenSpec {
    StrakeTokenSpec {
        identity: "alice@example.com".into(),
        upstreams: upstreams
            .iter()
            .map(|u| UpstreamName(u.to_string()))
            .collect(),
        expires_at: None,
        suspended: false,
        allowed_models: vec![],
        limits: None,
        endpoints: vec![],
        budget: None,
        secret_name: None,
        rotation: 0,
        rotation_grace_period: None,
        federated: Vec::new(),
        service_account: None,
        service_account_audience: None,
        mint_token: None,
    }
}

/// The UpstreamKey `name` in team-a (generation 1, no status), its key in
/// the Secret `<name>-upstream`.
pub fn upstream_key(name: &str, provider: Provider, base_url: Option<&str>) -> UpstreamKey {
    let mut uk = UpstreamKey::new(
        name,
        UpstreamKeySpec {
            provider,
            base_url: base_url.map(String::from),
            secret_ref: SecretKeyRef {
                name: format!("{name}-upstream"),
                key: "api-key".into(),
            },
            headers: BTreeMap::new(),
            endpoints: vec![],
            budget: None,
        },
    );
    uk.metadata.namespace = Some("team-a".into());
    uk.metadata.generation = Some(1);
    uk
}
