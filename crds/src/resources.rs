//! The custom resources. `crdgen` turns these types into `crds/*.yaml`; the
//! schema attributes here are what `kubectl apply` validates against.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::federated::FederatedSubject;
use crate::provider::Provider;
use crate::usage::Counters;

/// One real provider credential, stored once. Tokens in the same namespace
/// name it in `spec.upstreams`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "strake.sh",
    version = "v1alpha1",
    kind = "UpstreamKey",
    namespaced,
    status = "UpstreamKeyStatus",
    shortname = "uk",
    category = "strake",
    doc = "A real LLM provider credential, stored once in a Secret, that StrakeTokens in the same namespace can use.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(
        name = "Base URL",
        type_ = "string",
        json_path = ".spec.baseUrl",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Tokens", type_ = "integer", json_path = ".status.tokens"),
    printcolumn(name = "Last Used", type_ = "date", json_path = ".status.lastUsedAt"),
    printcolumn(
        name = "Spend",
        type_ = "string",
        json_path = ".status.usage.month.spendUsd"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamKeySpec {
    /// The provider API: openai, anthropic, azure-openai, gemini or openai-compatible.
    pub provider: Provider,
    /// Where requests go, scheme and host (and an optional path prefix), e.g.
    /// https://api.openai.com. Defaults to the provider's public endpoint;
    /// required for azure-openai and openai-compatible. Its host must be one
    /// the platform team allows (by default the providers' public https hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^https?://[^/?#\s]+(/[^?#\s]*)?$"),
        length(max = 2048)
    )]
    pub base_url: Option<String>,
    /// The Secret, in this namespace, that holds the real key. It must carry
    /// the label strake.sh/upstream-key: "true".
    pub secret_ref: SecretKeyRef,
    /// Static headers added to every upstream request, such as OpenAI-Organization.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Endpoints every token using this key may call beyond the provider's
    /// inference endpoints (chat, completions, responses, messages,
    /// embeddings, model lists, ...), which are always open. Example:
    /// {methods: [GET], path: /v1/files}.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub endpoints: Vec<EndpointAllowance>,
    /// A cap on everything spent through this key, by every token, per
    /// calendar period: a team's cap. Once spent, every token using this
    /// key is refused on it until the period ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

/// A key in a Secret of the resource's own namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The data key holding the API key.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamKeyStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many StrakeTokens in this namespace use this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Time>,
    /// Usage through this key by every token, summed over the proxy replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    /// The spend of `spec.budget`'s current period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStatus>,
    /// The budget alerts already published this period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_alerts: Option<BudgetAlerts>,
}

/// One identity's revocable access to one or more UpstreamKeys.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "strake.sh",
    version = "v1alpha1",
    kind = "StrakeToken",
    namespaced,
    status = "StrakeTokenStatus",
    shortname = "st",
    category = "strake",
    doc = "A revocable token for one identity (a person, CI runner or environment). Delete it to revoke.",
    printcolumn(name = "Identity", type_ = "string", json_path = ".spec.identity"),
    printcolumn(name = "Upstreams", type_ = "string", json_path = ".spec.upstreams"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Expires", type_ = "date", json_path = ".spec.expiresAt"),
    printcolumn(name = "Last Used", type_ = "date", json_path = ".status.lastUsedAt"),
    printcolumn(
        name = "Spend",
        type_ = "string",
        json_path = ".status.usage.month.spendUsd"
    ),
    printcolumn(
        name = "Prefix",
        type_ = "string",
        json_path = ".status.tokenPrefix",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.serviceAccountAudience) || has(self.serviceAccount)", "message": "serviceAccountAudience needs serviceAccount"},
    {"rule": "!has(self.mintToken) || self.mintToken || has(self.serviceAccount) || (has(self.federated) && size(self.federated) > 0)", "message": "mintToken: false needs federated or serviceAccount: nothing could use this token"}
]))]
pub struct StrakeTokenSpec {
    /// Who holds the token, e.g. alice@example.com or ci/payments. Shown in
    /// status, metrics and access logs.
    #[schemars(length(min = 1, max = 253))]
    pub identity: String,
    /// Names of UpstreamKeys in this namespace the token may use.
    #[schemars(length(min = 1, max = 16))]
    pub upstreams: Vec<UpstreamName>,
    /// When the token stops working (RFC 3339, e.g. 2027-03-01T00:00:00Z).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// true rejects the token without deleting it; false restores it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspended: bool,
    /// Model name globs (`*` and `?`) the token may call, e.g. "gpt-4o*".
    /// Empty allows every model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub allowed_models: Vec<ModelGlob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TokenLimits>,
    /// A spending cap per calendar period, e.g. {period: month, usd: "50",
    /// alertAt: [80]}. Once spent, the token is refused until the period
    /// ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Endpoints this token may call beyond the provider's inference
    /// endpoints (chat, completions, responses, messages, embeddings, model
    /// lists, ...), which are always open. Example: {methods: [GET, DELETE],
    /// path: "/v1/files/*"}.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub endpoints: Vec<EndpointAllowance>,
    /// The Secret, in this namespace, that receives the token and ready-to-use
    /// environment variables. Defaults to <name>-strake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub secret_name: Option<String>,
    /// Bump to mint a new token; the old one stops working at once, or
    /// after rotationGracePeriod.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0))]
    pub rotation: i64,
    /// How long the previous token keeps working after a rotation, so that
    /// its users can pick up the new one: a number and a unit (s, m, h or
    /// d), at most 7d. Unset or 0s: it stops at once. A second rotation
    /// within the period ends the oldest token at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 2, max = 8),
        regex(pattern = r"^[0-9]{1,6}[smhd]$"),
        extend("x-kubernetes-validations" = [{
            "rule": "!self.matches('^[0-9]{1,6}[smhd]$') || int(self.substring(0, size(self) - 1)) * (self.endsWith('d') ? 86400 : self.endsWith('h') ? 3600 : self.endsWith('m') ? 60 : 1) <= 604800",
            "message": "rotationGracePeriod is at most 7d (a leaked previous token lives this long)"
        }])
    )]
    pub rotation_grace_period: Option<String>,
    /// OIDC tokens that authenticate as this StrakeToken instead of, or
    /// beside, a minted token: a CI system's ID token or a workload's
    /// ServiceAccount token, verified offline against the issuer's keys.
    /// Example: {issuer: https://token.actions.githubusercontent.com,
    /// audience: strake, subject: "repo:acme/api:ref:refs/heads/main"}.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub federated: Vec<FederatedSubject>,
    /// Shorthand for a federated subject: this ServiceAccount, in the
    /// token's own namespace, with a token from the cluster's own issuer
    /// (a projected serviceAccountToken volume, or kubectl create token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub service_account: Option<String>,
    /// The audience serviceAccount tokens must carry. Defaults to strake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^\S+$"))]
    pub service_account_audience: Option<String>,
    /// Whether to mint a token into secretName. Defaults to true without
    /// federated subjects and false with them: a keyless StrakeToken has no
    /// plaintext Secret at all. Set true to accept both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mint_token: Option<bool>,
}

/// The longest `spec.rotationGracePeriod` (the CRD's CEL rule says the
/// same).
pub const MAX_ROTATION_GRACE: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

impl StrakeTokenSpec {
    /// Every federated subject the token accepts: `federated`, then the
    /// `serviceAccount` shorthand as the cluster issuer names it.
    pub fn federated_subjects(
        &self,
        namespace: &str,
        cluster_issuer: &str,
    ) -> Vec<FederatedSubject> {
        let mut all = self.federated.clone();
        if let Some(name) = &self.service_account {
            all.push(FederatedSubject::service_account(
                cluster_issuer,
                namespace,
                name,
                self.service_account_audience.as_deref(),
            ));
        }
        all
    }

    /// Whether a token is minted into the holder's Secret (see `mintToken`).
    pub fn mints_token(&self) -> bool {
        self.mint_token
            .unwrap_or(self.federated.is_empty() && self.service_account.is_none())
    }

    /// How long a rotated-out token stays valid: zero when unset or
    /// unreadable (admission rejects those; a stored one errs short), never
    /// more than [`MAX_ROTATION_GRACE`].
    pub fn rotation_grace(&self) -> std::time::Duration {
        self.rotation_grace_period
            .as_deref()
            .and_then(|g| crate::duration::parse(g).ok())
            .unwrap_or_default()
            .min(MAX_ROTATION_GRACE)
    }
}

/// The name of an UpstreamKey in the token's namespace.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct UpstreamName(
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub String,
);

/// A model-name glob: `*` matches any run of characters, `?` one character.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ModelGlob(#[schemars(length(min = 1, max = 256))] pub String);

/// An endpoint opened beyond the provider's inference endpoints: a request
/// is allowed when its method is listed and its path matches `path`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointAllowance {
    /// The HTTP methods allowed, e.g. [GET, DELETE].
    #[schemars(length(min = 1, max = 7))]
    pub methods: Vec<HttpMethod>,
    /// A path glob, as the provider's API reference writes paths (after the
    /// optional /<upstream>/ prefix): `*` matches within one segment, `**`
    /// across segments, e.g. /v1/files, /v1/files/*, /v1/batches/**.
    /// Organisation and admin APIs (/v1/organization/..., Anthropic's
    /// /v1/organizations/...) open only to a path that spells their
    /// segment out, never to a wildcard like /v1/**.
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^/[^?#\s]*$"))]
    pub path: String,
}

/// An HTTP method an endpoint allowance can name. TRACE and CONNECT are
/// never forwarded, so they cannot be allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl HttpMethod {
    pub const ALL: [HttpMethod; 7] = [
        HttpMethod::Get,
        HttpMethod::Head,
        HttpMethod::Post,
        HttpMethod::Put,
        HttpMethod::Patch,
        HttpMethod::Delete,
        HttpMethod::Options,
    ];

    /// The method as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Options => "OPTIONS",
        }
    }
}

/// Per-token rate limits, for all proxy replicas together (each admits
/// its share: the limit divided by the live replica count).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483647), extend("format" = "int32"))]
    pub requests_per_minute: Option<u32>,
    /// Input plus output tokens per minute, as the provider reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483647), extend("format" = "int64"))]
    pub tokens_per_minute: Option<u32>,
}

/// A spending cap per calendar period (`spec.budget` on StrakeToken and
/// UpstreamKey).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.usd) || has(self.tokens)", "message": "a budget needs usd, tokens or both"},
    {"rule": "!has(self.usd) || self.usd.matches('[1-9]')", "message": "budget.usd must be more than 0"}
]))]
pub struct Budget {
    /// The calendar period the budget covers and resets after: day, week
    /// (from Monday) or month.
    pub period: BudgetPeriod,
    /// The IANA time zone the period's calendar is in, e.g. Europe/Paris;
    /// UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^(UTC|[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2})$")
    )]
    pub time_zone: Option<String>,
    /// Most USD per period, as a decimal string, e.g. "50" or "12.5".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^[0-9]{1,12}(\.[0-9]{1,12})?$"))]
    pub usd: Option<String>,
    /// Most input plus output tokens per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("format" = "int64"))]
    pub tokens: Option<u64>,
    /// Percentages of the budget at which a warning Event is published,
    /// e.g. [50, 80].
    /// Each percentage at most once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), extend("x-kubernetes-list-type" = "set"))]
    pub alert_at: Vec<AlertPercent>,
}

/// A percentage of a budget, 1 to 100.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct AlertPercent(#[schemars(range(min = 1, max = 100), extend("format" = "int32"))] pub u8);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Day,
    Week,
    Month,
}

/// Where a token is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Waiting for something (an UpstreamKey, the first reconcile).
    Pending,
    /// Accepted by the proxy.
    Active,
    /// `spec.suspended` is true: rejected, not deleted.
    Suspended,
    /// `spec.expiresAt` has passed.
    Expired,
    /// The operator could not publish the token; see the Ready condition.
    Failed,
    /// `spec.budget` (or the budget of an UpstreamKey it uses) is spent for
    /// this period: refused until the period ends.
    BudgetExceeded,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Pending,
        Phase::Active,
        Phase::Suspended,
        Phase::Expired,
        Phase::Failed,
        Phase::BudgetExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Active => "Active",
            Phase::Suspended => "Suspended",
            Phase::Expired => "Expired",
            Phase::Failed => "Failed",
            Phase::BudgetExceeded => "BudgetExceeded",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrakeTokenStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The base URL to give clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The Secret holding the plaintext token and environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The token's first characters: enough to recognise it, never to use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    /// After a rotation with spec.rotationGracePeriod: until when the
    /// previous token still works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_token_valid_until: Option<Time>,
    /// The spend of `spec.budget`'s current period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStatus>,
    /// The budget alerts already published this period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_alerts: Option<BudgetAlerts>,
    /// The OIDC subjects the proxy accepts for this token (spec.federated
    /// and spec.serviceAccount, resolved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 17))]
    pub federated_subjects: Vec<FederatedSubject>,
}

/// A budget's current period, summed over every proxy replica by the usage
/// collector (in the same write as `usage`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatus {
    /// The period's name, e.g. 2026-12, 2026-W49, 2026-12-01 (with the
    /// time zone unless UTC).
    pub period: String,
    pub starts_at: Time,
    /// When the period ends and the budget starts over.
    pub resets_at: Time,
    /// USD spent this period, a decimal string.
    pub spent_usd: String,
    /// Input plus output tokens this period.
    #[schemars(extend("format" = "int64"))]
    pub tokens: u64,
    /// The larger of the USD and token shares of the budget used, in whole
    /// percent (may exceed 100).
    #[schemars(extend("format" = "int64"))]
    pub percent: u64,
    /// Spend beyond the limit (requests in flight, and spend other
    /// replicas had not yet reported), when the budget is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overshoot_usd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub overshoot_tokens: Option<u64>,
}

/// The alert thresholds already announced by an Event in one period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetAlerts {
    pub period: String,
    /// Percentages of `spec.budget.alertAt`, and 100 once exhausted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<AlertPercent>,
}

/// Usage the proxy replicas have counted, summed over all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    /// The calendar month (UTC) of the latest use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<UsageTotals>,
    /// Since the resource was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<UsageTotals>,
    /// Per proxy instance id: the cumulative counters already included in
    /// the totals, written in the same update so no count is folded twice.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub collected: BTreeMap<String, UsageCursor>,
}

/// Sums over a period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    /// The month these totals cover, e.g. 2026-12; absent for the lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[schemars(extend("format" = "int64"))]
    pub requests: u64,
    /// Every input token, cached and cache-write ones included.
    #[schemars(extend("format" = "int64"))]
    pub input_tokens: u64,
    #[schemars(extend("format" = "int64"))]
    pub output_tokens: u64,
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub cached_input_tokens: u64,
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub cache_write_tokens: u64,
    /// USD, a decimal string such as "1.23" (exact to 10⁻¹²).
    #[serde(default = "zero_usd")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]{1,12})?$"))]
    pub spend_usd: String,
    /// Requests whose model had no price: their spend is not in spendUsd.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub unpriced_requests: u64,
}

/// How far one proxy instance's counters have been folded in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageCursor {
    /// The instance's counter series for this resource.
    #[schemars(extend("format" = "int64"))]
    pub series: u64,
    /// When these counters were last folded; a cursor of an instance that
    /// is gone is dropped some time after this.
    pub seen_at: Time,
    pub counters: Counters,
}

/// The plaintext token's key in the holder's Secret (beside the env keys).
pub const HOLDER_TOKEN_KEY: &str = "token";

impl StrakeToken {
    /// The Secret that receives the plaintext token.
    pub fn secret_name(&self) -> String {
        match &self.spec.secret_name {
            Some(name) => name.clone(),
            None => format!(
                "{}-strake",
                self.metadata.name.as_deref().unwrap_or_default()
            ),
        }
    }
}

fn zero_usd() -> String {
    "0".into()
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The CRD files `crdgen` writes: (file name, YAML).
pub fn generated_crds() -> Vec<(&'static str, String)> {
    use kube::CustomResourceExt;
    const HEADER: &str = "# Generated by `cargo run -p strake-crds --bin crdgen` from crds/src/resources.rs. Do not edit.\n";
    let yaml = |crd| {
        format!(
            "{HEADER}{}",
            serde_saphyr::to_string(&crd).expect("a CRD serializes to YAML")
        )
    };
    vec![
        ("strake.sh_straketokens.yaml", yaml(StrakeToken::crd())),
        ("strake.sh_upstreamkeys.yaml", yaml(UpstreamKey::crd())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn design_example_parses() {
        let yaml = r#"
apiVersion: strake.sh/v1alpha1
kind: StrakeToken
metadata: {name: alice, namespace: team-a}
spec:
  identity: alice@example.com
  upstreams: [openai, anthropic]
  expiresAt: "2027-03-01T00:00:00Z"
  suspended: false
  allowedModels: ["gpt-4o*", "claude-*"]
  limits: {requestsPerMinute: 60, tokensPerMinute: 200000}
  rotation: 0
"#;
        let t: StrakeToken = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(t.spec.upstreams.len(), 2);
        assert_eq!(t.spec.limits.unwrap().requests_per_minute, Some(60));
        assert_eq!(t.secret_name(), "alice-strake");
        assert_eq!(
            t.spec.expires_at.unwrap().0.to_string(),
            "2027-03-01T00:00:00Z"
        );
    }

    #[test]
    fn schema_carries_the_admission_rules() {
        let crd = serde_json::to_value(StrakeToken::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["upstreams"]["minItems"], 1);
        assert_eq!(spec["properties"]["expiresAt"]["format"], "date-time");
        assert_eq!(
            spec["properties"]["limits"]["properties"]["requestsPerMinute"]["minimum"].as_f64(),
            Some(1.0)
        );
        let required = spec["required"].as_array().unwrap();
        assert!(required.contains(&"identity".into()) && required.contains(&"upstreams".into()));
        let rule = &spec["properties"]["endpoints"]["items"];
        assert_eq!(rule["properties"]["path"]["pattern"], r"^/[^?#\s]*$");
        assert_eq!(rule["properties"]["methods"]["minItems"], 1);
        let methods = rule["properties"]["methods"]["items"]["enum"]
            .as_array()
            .unwrap();
        assert_eq!(methods.len(), HttpMethod::ALL.len());
        assert!(!methods.contains(&"TRACE".into()));
        let budget = &spec["properties"]["budget"];
        assert_eq!(
            budget["properties"]["period"]["enum"],
            serde_json::json!(["day", "week", "month"])
        );
        assert_eq!(
            budget["properties"]["alertAt"]["x-kubernetes-list-type"],
            "set"
        );
        assert_eq!(
            budget["properties"]["alertAt"]["items"]["maximum"].as_f64(),
            Some(100.0)
        );
        let rules: Vec<_> = budget["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap())
            .collect();
        assert_eq!(
            rules,
            [
                "has(self.usd) || has(self.tokens)",
                "!has(self.usd) || self.usd.matches('[1-9]')"
            ]
        );

        let crd = serde_json::to_value(UpstreamKey::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let providers: Vec<_> = spec["properties"]["provider"]["enum"]
            .as_array()
            .unwrap()
            .to_vec();
        assert_eq!(providers.len(), Provider::ALL.len());
        assert_eq!(
            spec["properties"]["secretRef"]["properties"]["name"]["minLength"],
            1
        );
        assert_eq!(
            spec["properties"]["endpoints"]["items"]["required"],
            serde_json::json!(["methods", "path"])
        );
        assert!(spec["properties"]["budget"]["properties"]["usd"].is_object());
    }
}
