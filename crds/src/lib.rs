//! Strake's API, shared by the operator and the proxy.
//!
//! - [`resources`]: the `StrakeToken` and `UpstreamKey` custom resources
//!   (`strake.sh/v1alpha1`), whose generated CRD YAML lives in `crds/*.yaml`.
//! - [`token`]: the token format: minting, the offline checksum, SHA-256.
//! - [`provider`]: what differs between provider APIs (auth header, env keys).
//! - [`headers`]: the header and credential rules both binaries apply.
//! - [`budget`]: budget periods in a time zone, and what a period's spend
//!   means (alert thresholds, exhausted).
//! - [`pricing`]: the price table (`crds/data/prices.yaml`) and exact spend
//!   arithmetic, shared by the proxy and the operator.
//! - [`contract`]: what the operator writes into the proxy's namespace and the
//!   proxy reads back: Secret names, labels, data keys and the policy records.
//! - [`watch`]: how both binaries retry a failed Kubernetes watch.
//! - [`usage`]: the usage report each proxy replica serves and the operator
//!   folds into status.
//! - [`clock`]: "now", with the test-only offset both binaries can read.
//! - [`federated`]: the OIDC subjects a StrakeToken accepts and the rules
//!   both binaries apply to them.
//! - [`duration`]: the duration syntax of flags and arguments (`30s`, `1h30m`, `7d`).
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod budget;
pub mod clock;
pub mod contract;
pub mod duration;
pub mod federated;
pub mod headers;
pub mod pricing;
pub mod provider;
// `#[kube(printcolumn(name = …, type_ = …), …)]` repeats keys by design;
// clippy's duplicated_attributes reads each printcolumn as a duplicate.
#[allow(clippy::duplicated_attributes)]
pub mod resources;
pub mod token;
pub mod usage;
pub mod watch;

pub use provider::Provider;
pub use resources::{
    Budget, BudgetAlerts, BudgetPeriod, BudgetStatus, EndpointAllowance, HttpMethod, Phase,
    StrakeToken, StrakeTokenSpec, StrakeTokenStatus, TokenLimits, TokenUsage, UpstreamKey,
    UpstreamKeySpec, UpstreamKeyStatus, UsageCursor, UsageTotals,
};

/// The API group of both resources.
pub const GROUP: &str = "strake.sh";
/// The served and stored API version.
pub const VERSION: &str = "v1alpha1";

/// An UpstreamKey may name only a Secret labelled with this key and the value
/// [`UPSTREAM_KEY_SECRET_OPT_IN`]: whoever may write the Secret opts it in, so
/// that being allowed to create an UpstreamKey is not enough to have the
/// proxy send a Secret's value to some host.
pub const UPSTREAM_KEY_SECRET_LABEL: &str = "strake.sh/upstream-key";
pub const UPSTREAM_KEY_SECRET_OPT_IN: &str = "true";
/// The label selector (and `kubectl label` argument) of an opted-in Secret.
pub const UPSTREAM_KEY_SECRET_SELECTOR: &str = "strake.sh/upstream-key=true";

#[cfg(test)]
mod tests {
    #[test]
    fn the_opt_in_selector_is_the_label_and_its_value() {
        assert_eq!(
            super::UPSTREAM_KEY_SECRET_SELECTOR,
            format!(
                "{}={}",
                super::UPSTREAM_KEY_SECRET_LABEL,
                super::UPSTREAM_KEY_SECRET_OPT_IN
            )
        );
    }
}
