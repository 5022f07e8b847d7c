//! Keyless identities: the OIDC subjects a StrakeToken accepts (a
//! workload's ServiceAccount token, a CI system's ID token), and the rules
//! the operator and the proxy both apply to them.
//!
//! A subject names an issuer, an audience, and a `subject` and/or `claims`
//! to match. Values match exactly, or by prefix when they end in `*` (the
//! only wildcard, and only as the last character): `repo:acme/api:*`
//! matches every ref of one repository. A value that is only `*` matches
//! everything and is refused, as is a subject with neither `subject` nor
//! `claims` (it would accept every token the issuer signs for the audience).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::token::TokenHash;

/// The cluster's own ServiceAccount issuer unless `--cluster-issuer` says
/// otherwise (the API server's `--service-account-issuer`).
pub const DEFAULT_CLUSTER_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The audience `spec.serviceAccount` expects unless
/// `spec.serviceAccountAudience` names another.
pub const DEFAULT_AUDIENCE: &str = "strake";
/// The subject prefix of the cluster issuer's ServiceAccount tokens.
pub const SERVICE_ACCOUNT_SUBJECT_PREFIX: &str = "system:serviceaccount:";
/// Claims the proxy verifies itself; a matcher may not name them.
pub const RESERVED_CLAIMS: [&str; 6] = ["iss", "aud", "exp", "nbf", "iat", "jti"];
/// The one wildcard: a value ending in it matches by prefix.
pub const WILDCARD: char = '*';

/// One OIDC subject a StrakeToken accepts. The same shape in the spec, in
/// the status and in the record the proxy reads. Unknown fields are refused:
/// a proxy that silently dropped a narrowing field it did not know would
/// accept more than the resource says.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.subject) || (has(self.claims) && size(self.claims) > 0)", "message": "a federated subject needs subject or claims: with neither it would accept every token the issuer signs for this audience"},
    {"rule": "!has(self.claims) || self.claims.all(k, !(k in ['iss', 'aud', 'exp', 'nbf', 'iat', 'jti']))", "message": "claims cannot match iss, aud, exp, nbf, iat or jti: the proxy verifies those itself (use issuer and audience)"}
]))]
pub struct FederatedSubject {
    /// The token issuer, exactly as its tokens' iss claim says, e.g.
    /// https://token.actions.githubusercontent.com. Must be https: its
    /// signing keys are fetched from <issuer>/.well-known/openid-configuration.
    #[schemars(
        length(min = 9, max = 512),
        regex(pattern = r"^https://[^/?#\s@]+(/[^?#\s]*)?$")
    )]
    pub issuer: String,
    /// The audience the token must be issued for (its aud claim), e.g. strake.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^\S+$"))]
    pub audience: String,
    /// The sub claim: exact, or a prefix when it ends in `*`, e.g.
    /// repo:acme/api:ref:refs/heads/main or repo:acme/api:*. `*` alone is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[^*]+\*?$"))]
    pub subject: Option<String>,
    /// Other string claims that must all match, each exact or a prefix
    /// ending in `*`, e.g. {repository_owner: acme, ref: refs/heads/main}.
    /// A claim holding a list matches when one element does.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16, "additionalProperties" = {
        "type": "string", "minLength": 1, "maxLength": 512, "pattern": "^[^*]+\\*?$"
    }))]
    pub claims: BTreeMap<String, String>,
}

impl FederatedSubject {
    /// The `spec.serviceAccount` shorthand: the ServiceAccount `name` of
    /// `namespace`, as the cluster issuer names it.
    pub fn service_account(
        cluster_issuer: &str,
        namespace: &str,
        name: &str,
        audience: Option<&str>,
    ) -> FederatedSubject {
        FederatedSubject {
            issuer: cluster_issuer.to_string(),
            audience: audience.unwrap_or(DEFAULT_AUDIENCE).to_string(),
            subject: Some(format!(
                "{SERVICE_ACCOUNT_SUBJECT_PREFIX}{namespace}:{name}"
            )),
            claims: BTreeMap::new(),
        }
    }

    /// Whether this subject may be trusted by a StrakeToken of `namespace`
    /// (`None` in file mode, whose author trusts whom they like). Admission
    /// checks the shape too; this also guards records that bypassed it.
    /// The cluster issuer vouches for every namespace's ServiceAccounts, so
    /// a token may name only its own namespace's.
    pub fn check(&self, namespace: Option<&str>, cluster_issuer: &str) -> Result<(), String> {
        let issuer = &self.issuer;
        let rest = issuer
            .strip_prefix("https://")
            .ok_or_else(|| format!("issuer {issuer:?} must be an https:// URL"))?;
        if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', '@', ' ']) {
            return Err(format!(
                "issuer {issuer:?} must be an https:// URL with a host and no query, fragment or user info"
            ));
        }
        if self.audience.trim().is_empty() {
            return Err(format!("issuer {issuer:?}: the audience is empty"));
        }
        if self.subject.is_none() && self.claims.is_empty() {
            return Err(format!(
                "issuer {issuer:?}: a federated subject needs subject or claims (with neither it would accept every token the issuer signs)"
            ));
        }
        for (claim, pattern) in self
            .subject
            .iter()
            .map(|s| ("sub", s))
            .chain(self.claims.iter().map(|(k, v)| (k.as_str(), v)))
        {
            if claim.is_empty() {
                return Err(format!("issuer {issuer:?}: a claim name is empty"));
            }
            if claim != "sub" && RESERVED_CLAIMS.contains(&claim) {
                return Err(format!(
                    "issuer {issuer:?}: claims cannot match {claim} (the proxy verifies it itself)"
                ));
            }
            check_pattern(pattern).map_err(|why| format!("issuer {issuer:?}, {claim}: {why}"))?;
        }
        if let Some(namespace) = namespace
            && issuer == cluster_issuer
        {
            let own = format!("{SERVICE_ACCOUNT_SUBJECT_PREFIX}{namespace}:");
            let subject = self.subject.as_deref().unwrap_or_default();
            if !subject.starts_with(&own) || subject.len() == own.len() {
                return Err(format!(
                    "the cluster issuer {issuer:?} signs every namespace's ServiceAccount tokens: a StrakeToken in {namespace} may only accept subjects starting with {own:?} followed by a name (use serviceAccount: NAME)"
                ));
            }
        }
        Ok(())
    }

    /// Whether a verified token's claims satisfy this subject's matchers
    /// (issuer and audience are the caller's to have checked).
    pub fn matches<'c>(&self, claim: impl Fn(&str) -> Claim<'c>) -> bool {
        self.subject
            .iter()
            .map(|s| ("sub", s))
            .chain(self.claims.iter().map(|(k, v)| (k.as_str(), v)))
            .all(|(name, pattern)| match claim(name) {
                Claim::Absent => false,
                Claim::One(v) => pattern_matches(pattern, v),
                Claim::Many(vs) => vs.iter().any(|v| pattern_matches(pattern, v)),
            })
    }
}

/// A claim's string value(s) in a verified token.
#[derive(Clone, Copy, Debug)]
pub enum Claim<'a> {
    Absent,
    One(&'a str),
    Many(&'a [Box<str>]),
}

/// A matcher value: literal characters, then at most one `*`, last.
pub fn check_pattern(pattern: &str) -> Result<(), &'static str> {
    let literal = pattern.strip_suffix(WILDCARD).unwrap_or(pattern);
    if literal.is_empty() {
        return Err("a value that is empty or only * would match everything");
    }
    if literal.contains(WILDCARD) {
        return Err("* is a wildcard only as the last character");
    }
    Ok(())
}

/// Exact, or by prefix for a value ending in `*`.
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix(WILDCARD) {
        Some(prefix) => value.starts_with(prefix),
        None => value == pattern,
    }
}

/// The hash a StrakeToken that mints no token is indexed under: the
/// SHA-256 of a value that is not a Strake token (no prefix, no checksum),
/// so no presented credential is ever looked up as it. Stable per resource,
/// so resyncs rewrite nothing; the uid keeps two resources apart.
pub fn unminted_hash(uid: &str) -> TokenHash {
    TokenHash::of(&format!("strake-unminted:{uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = DEFAULT_CLUSTER_ISSUER;

    fn subject(issuer: &str, sub: Option<&str>, claims: &[(&str, &str)]) -> FederatedSubject {
        FederatedSubject {
            issuer: issuer.into(),
            audience: "strake".into(),
            subject: sub.map(Into::into),
            claims: claims
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn wildcards_are_a_trailing_star_after_some_literal() {
        assert!(check_pattern("repo:acme/api:*").is_ok());
        assert!(check_pattern("exact").is_ok());
        assert!(check_pattern("*").is_err());
        assert!(check_pattern("").is_err());
        assert!(check_pattern("**").is_err());
        assert!(check_pattern("a*b").is_err());
        assert!(pattern_matches("repo:acme/*", "repo:acme/api:ref:main"));
        assert!(!pattern_matches("repo:acme/*", "repo:acme2/api"));
        assert!(pattern_matches("main", "main"));
        assert!(!pattern_matches("main", "main2"));
    }

    #[test]
    fn a_subject_needs_a_matcher_https_and_an_audience() {
        let gh = "https://token.actions.githubusercontent.com";
        assert!(
            subject(gh, Some("repo:a/b:*"), &[])
                .check(None, CLUSTER)
                .is_ok()
        );
        assert!(
            subject(gh, None, &[("repository", "a/b")])
                .check(None, CLUSTER)
                .is_ok()
        );
        let none = subject(gh, None, &[]).check(None, CLUSTER).unwrap_err();
        assert!(none.contains("needs subject or claims"), "{none}");
        let http = subject("http://issuer.example", Some("x"), &[]);
        assert!(http.check(None, CLUSTER).unwrap_err().contains("https://"));
        let mut quiet = subject(gh, Some("x"), &[]);
        quiet.audience = " ".into();
        assert!(quiet.check(None, CLUSTER).unwrap_err().contains("audience"));
        let star = subject(gh, Some("*"), &[])
            .check(None, CLUSTER)
            .unwrap_err();
        assert!(star.contains("match everything"), "{star}");
        let exp = subject(gh, None, &[("exp", "1")]).check(None, CLUSTER);
        assert!(exp.unwrap_err().contains("cannot match exp"));
    }

    #[test]
    fn the_cluster_issuer_vouches_only_for_the_tokens_own_namespace() {
        let own = FederatedSubject::service_account(CLUSTER, "team-a", "ci-runner", None);
        assert_eq!(
            own.subject.as_deref(),
            Some("system:serviceaccount:team-a:ci-runner")
        );
        assert_eq!(own.audience, "strake");
        assert!(own.check(Some("team-a"), CLUSTER).is_ok());
        let theirs = subject(CLUSTER, Some("system:serviceaccount:team-b:ci"), &[]);
        let why = theirs.check(Some("team-a"), CLUSTER).unwrap_err();
        assert!(why.contains("team-a"), "{why}");
        // A prefix that reaches past the namespace (team-a* covers team-ab).
        let sly = subject(CLUSTER, Some("system:serviceaccount:team-a*"), &[]);
        assert!(sly.check(Some("team-a"), CLUSTER).is_err());
        let every = subject(CLUSTER, Some("system:serviceaccount:team-a:*"), &[]);
        assert!(every.check(Some("team-a"), CLUSTER).is_ok());
        let claims_only = subject(CLUSTER, None, &[("kubernetes.io", "x")]);
        assert!(claims_only.check(Some("team-a"), CLUSTER).is_err());
        // Another issuer's subjects are the tenant's own business.
        let other = subject(
            "https://issuer.example",
            Some("system:serviceaccount:team-b:ci"),
            &[],
        );
        assert!(other.check(Some("team-a"), CLUSTER).is_ok());
    }

    #[test]
    fn every_matcher_must_match() {
        let s = subject(
            "https://i.example",
            Some("repo:acme/api:*"),
            &[("ref", "refs/heads/main")],
        );
        let groups: [Box<str>; 2] = ["x".into(), "refs/heads/main".into()];
        let claims = |sub: &'static str, r: Claim<'static>| {
            move |name: &str| match name {
                "sub" => Claim::One(sub),
                "ref" => r,
                _ => Claim::Absent,
            }
        };
        assert!(s.matches(claims("repo:acme/api:pull", Claim::One("refs/heads/main"))));
        assert!(!s.matches(claims("repo:acme/api:pull", Claim::One("refs/heads/dev"))));
        assert!(!s.matches(claims("repo:other/api", Claim::One("refs/heads/main"))));
        assert!(!s.matches(claims("repo:acme/api:x", Claim::Absent)));
        let many: &'static [Box<str>] = Box::leak(Box::new(groups));
        assert!(s.matches(claims("repo:acme/api:x", Claim::Many(many))));
    }

    #[test]
    fn unminted_hashes_are_stable_and_distinct() {
        assert_eq!(unminted_hash("a"), unminted_hash("a"));
        assert_ne!(unminted_hash("a"), unminted_hash("b"));
        let preimage = "strake-unminted:a";
        assert!(crate::token::check(preimage).is_err());
    }
}
