//! The operator → proxy contract.
//!
//! The operator publishes one Secret per StrakeToken and per UpstreamKey into
//! the proxy's namespace; the proxy watches them by [`SELECTOR`]. Each Secret
//! carries a JSON record under [`RECORD_KEY`] (upstream Secrets also carry the
//! real key under [`API_KEY_KEY`]). The records have the same shape as the
//! proxy's file-mode config entries, so both config sources feed one index.
//!
//! Secret names are derived from a hash of `namespace/name` (resource names may
//! be 253 characters, longer than a prefixed Secret name allows); the labels
//! and the record carry the readable namespace and name.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::provider::Provider;
use crate::resources::{BudgetPeriod, EndpointAllowance, TokenLimits};
use crate::token::TokenHash;

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "strake-operator";
/// `token` or `upstream`: what a proxy-namespace Secret holds (see [`Role`]).
pub const ROLE_LABEL: &str = "strake.sh/role";
pub const ROLE_TOKEN: &str = "token";
pub const ROLE_UPSTREAM: &str = "upstream";
/// The source resource's namespace and name, when they fit in a label value.
pub const SOURCE_NAMESPACE_LABEL: &str = "strake.sh/source-namespace";
pub const SOURCE_NAME_LABEL: &str = "strake.sh/source-name";
/// The label selector the proxy watches with.
pub const SELECTOR: &str = "strake.sh/role in (token,upstream)";
/// The proxy-namespace Secrets the operator publishes (and sweeps when orphaned).
pub const PUBLISHED_SELECTOR: &str =
    "app.kubernetes.io/managed-by=strake-operator,strake.sh/role in (token,upstream)";

/// What a proxy-namespace Secret holds, as its [`ROLE_LABEL`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Token,
    Upstream,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Token, Role::Upstream];

    /// The value of [`ROLE_LABEL`].
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Token => ROLE_TOKEN,
            Role::Upstream => ROLE_UPSTREAM,
        }
    }

    /// The label selector of the Secrets with this role.
    pub fn selector(self) -> String {
        format!("{ROLE_LABEL}={}", self.as_str())
    }

    /// The role an object's labels give it; `None` without a known one.
    pub fn of(labels: Option<&BTreeMap<String, String>>) -> Option<Role> {
        let value = labels?.get(ROLE_LABEL)?;
        Role::ALL.into_iter().find(|r| r.as_str() == value)
    }
}

/// Secret types, so `kubectl get secrets` tells the two apart from user Secrets.
pub const TOKEN_SECRET_TYPE: &str = "strake.sh/token";
pub const UPSTREAM_SECRET_TYPE: &str = "strake.sh/upstream";

/// Data key of the JSON record ([`TokenRecord`] or [`UpstreamRecord`]).
pub const RECORD_KEY: &str = "record.json";
/// Data key of the real provider key in an upstream Secret.
pub const API_KEY_KEY: &str = "api-key";
/// Data key of the [`BudgetRecord`] of a budgeted token or upstream. A
/// separate key, not a record field, so a proxy that predates budgets
/// (whose records refuse unknown fields) still reads the record; a Secret
/// without it has no budget.
pub const BUDGET_KEY: &str = "budget.json";
/// Data key of the token's federated subjects (a JSON list of
/// [`crate::federated::FederatedSubject`]). A separate key for the same
/// reason as [`BUDGET_KEY`]: an older proxy ignores it and serves the
/// minted token alone; a Secret without it accepts no OIDC token.
pub const FEDERATED_KEY: &str = "federated.json";

/// Name of the proxy-namespace Secret for the StrakeToken `namespace/name`.
pub fn token_secret_name(namespace: &str, name: &str) -> String {
    format!("strake-token-{}", short_hash(namespace, name))
}

/// Name of the proxy-namespace Secret for the UpstreamKey `namespace/name`.
pub fn upstream_secret_name(namespace: &str, name: &str) -> String {
    format!("strake-upstream-{}", short_hash(namespace, name))
}

fn short_hash(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The id an upstream has in the proxy's table. Kube mode qualifies it by
/// namespace (two teams may both have an `openai`); file mode uses the bare name.
pub fn upstream_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The name a client uses in a `/<upstream>/…` path prefix: the id without
/// its namespace.
pub fn route_name(upstream_id: &str) -> &str {
    upstream_id.rsplit('/').next().unwrap_or(upstream_id)
}

/// Labels for a proxy-namespace Secret. A source name too long for a label
/// value is left out of the labels; the record still carries it.
pub fn labels(role: &str, source: &SourceRef) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (ROLE_LABEL.to_string(), role.to_string()),
        (SOURCE_NAMESPACE_LABEL.to_string(), source.namespace.clone()),
    ]);
    if source.name.len() <= 63 {
        labels.insert(SOURCE_NAME_LABEL.to_string(), source.name.clone());
    }
    labels
}

/// The resource a record was published for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceRef {
    pub namespace: String,
    pub name: String,
}

/// What the proxy knows about one token: its hash and its policy. Never the
/// token itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRecord {
    /// Shown in logs and metrics: `namespace/name` in kube mode.
    pub name: String,
    pub identity: String,
    pub sha256: TokenHash,
    /// Upstream ids (see [`upstream_id`]).
    pub upstreams: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TokenLimits>,
    /// Endpoints opened beyond the provider's inference endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointAllowance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
    /// Read from the Secret's [`BUDGET_KEY`], never from the record itself.
    #[serde(skip)]
    pub budget: Option<Box<BudgetRecord>>,
    /// The OIDC subjects that authenticate as this token. Read from the
    /// Secret's [`FEDERATED_KEY`], never from the record itself.
    #[serde(skip)]
    pub federated: Vec<crate::federated::FederatedSubject>,
    /// The token this one replaced in a rotation with a grace period: it
    /// is accepted, with this record's policy, until `validUntil`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousToken>,
}

/// A rotated-out token still in its grace period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreviousToken {
    pub sha256: TokenHash,
    /// The proxy refuses it from this instant on, whatever the operator
    /// does meanwhile.
    pub valid_until: Time,
}

/// One upstream, without its key (which travels beside it in the Secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamRecord {
    /// The upstream id (see [`upstream_id`]).
    pub name: String,
    pub provider: Provider,
    /// Resolved: the provider default when the UpstreamKey names none.
    pub base_url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Endpoints opened, for every token using this upstream, beyond the
    /// provider's inference endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointAllowance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
    /// Read from the Secret's [`BUDGET_KEY`], never from the record itself.
    #[serde(skip)]
    pub budget: Option<Box<BudgetRecord>>,
}

/// What a replica needs to enforce a budget without asking anyone: the
/// limits, the period's end, the cluster-wide spend as of the last fold and
/// the per-replica counters that fold included, so each replica can add
/// what it has served since.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetRecord {
    pub period: BudgetPeriod,
    /// The USD limit, in picodollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_picodollars: Option<u64>,
    /// The limit on input plus output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Unix seconds at which the period ends: from then on the spend below
    /// belongs to a past period.
    pub resets_at: i64,
    /// The period's spend over every replica, as of the last fold.
    pub spent: BudgetSpend,
    /// The operator found the budget spent.
    #[serde(default)]
    pub exhausted: bool,
    /// Per proxy instance id: its cumulative counters for this resource
    /// that the spend above includes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cursors: BTreeMap<String, BudgetCursor>,
    /// How often the operator collects (seconds): when the next fold is due.
    pub collect_every_secs: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSpend {
    pub picodollars: u64,
    /// Input plus output tokens.
    pub tokens: u64,
}

/// One instance's counters (see [`crate::usage::Entry`]) as folded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetCursor {
    pub series: u64,
    pub spend: BudgetSpend,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Token;

    #[test]
    fn secret_names_are_stable_short_and_distinct() {
        let a = token_secret_name("team-a", "alice");
        assert_eq!(a, token_secret_name("team-a", "alice"));
        assert_eq!(a.len(), "strake-token-".len() + 16);
        assert_ne!(a, token_secret_name("team-b", "alice"));
        // `a/b` + `c` must not collide with `a` + `b/c`: names cannot hold `/`,
        // but the separator still keeps the hash input unambiguous.
        assert_ne!(
            token_secret_name("team-a", "alice"),
            upstream_secret_name("team-a", "alice")
        );
        let long = "x".repeat(253);
        assert!(token_secret_name(&long, &long).len() <= 63);
    }

    #[test]
    fn roles_and_selectors_agree() {
        for role in Role::ALL {
            let labels = BTreeMap::from([(ROLE_LABEL.to_string(), role.as_str().to_string())]);
            assert_eq!(Role::of(Some(&labels)), Some(role));
        }
        let other = BTreeMap::from([(ROLE_LABEL.to_string(), "other".to_string())]);
        assert_eq!(Role::of(Some(&other)), None);
        assert_eq!(Role::of(None), None);
        let roles: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
        let selector = format!("{ROLE_LABEL} in ({})", roles.join(","));
        assert_eq!(SELECTOR, selector);
        assert_eq!(
            PUBLISHED_SELECTOR,
            format!("{MANAGED_BY_LABEL}={MANAGED_BY},{selector}")
        );
    }

    #[test]
    fn route_name_strips_the_namespace() {
        assert_eq!(route_name(&upstream_id("team-a", "openai")), "openai");
        assert_eq!(route_name("openai"), "openai");
    }

    #[test]
    fn labels_omit_names_that_do_not_fit() {
        let src = SourceRef {
            namespace: "team-a".into(),
            name: "y".repeat(100),
        };
        let labels = labels(ROLE_TOKEN, &src);
        assert_eq!(labels[ROLE_LABEL], "token");
        assert!(!labels.contains_key(SOURCE_NAME_LABEL));
    }

    #[test]
    fn token_record_round_trips_and_rejects_unknown_fields() {
        let rec = TokenRecord {
            name: "team-a/alice".into(),
            identity: "alice@example.com".into(),
            sha256: Token::mint().hash(),
            upstreams: vec![upstream_id("team-a", "openai")],
            expires_at: Some(Time("2027-03-01T00:00:00Z".parse().unwrap())),
            suspended: false,
            allowed_models: vec!["gpt-4o*".into()],
            limits: Some(TokenLimits {
                requests_per_minute: Some(60),
                tokens_per_minute: None,
            }),
            endpoints: vec![EndpointAllowance {
                methods: vec![crate::HttpMethod::Get],
                path: "/v1/files".into(),
            }],
            source: Some(SourceRef {
                namespace: "team-a".into(),
                name: "alice".into(),
            }),
            budget: None,
            federated: Vec::new(),
            previous: None,
        };
        let json = serde_json::to_string(&rec).unwrap();
        assert!(json.contains("\"expiresAt\":\"2027-03-01T00:00:00Z\""));
        assert_eq!(serde_json::from_str::<TokenRecord>(&json).unwrap(), rec);
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["typo"] = true.into();
        assert!(serde_json::from_value::<TokenRecord>(v).is_err());
    }

    #[test]
    fn file_mode_yaml_shape_parses() {
        let yaml = "name: alice\nidentity: alice@example.com\nsha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\nupstreams: [openai]\nexpiresAt: \"2027-03-01T00:00:00Z\"\nlimits: {requestsPerMinute: 5}\nendpoints: [{methods: [GET, DELETE], path: /v1/files/*}]\n";
        let rec: TokenRecord = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(rec.upstreams, vec!["openai"]);
        assert_eq!(
            rec.endpoints[0].methods,
            [crate::HttpMethod::Get, crate::HttpMethod::Delete]
        );
        assert_eq!(rec.limits.unwrap().requests_per_minute, Some(5));
    }
}
