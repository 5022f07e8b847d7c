//! `GET /strake/v1/me`: what the presented token may do, for its holder.
//!
//! Answered by the proxy itself, after authentication, from the same
//! snapshot a request would be decided on: identity, expiry, state, the
//! upstreams it reaches (by route name and provider), allowed models,
//! endpoints opened beyond inference, limits and what is left of them
//! (for the whole fleet if the other replicas are where this one is, and
//! what this replica alone still admits; see [`Window`]), the token's
//! budget with the period's spend and what is left (an UpstreamKey's
//! budget, a whole team's spend, is not shown), and in kube mode its usage
//! and spend this month and in all as its StrakeToken's status has them
//! ([`crate::status_usage`]). Nothing about other
//! tokens, and nothing of the upstreams
//! but what a client configures anyway: no base URL, static header, key,
//! or Secret name.

use http::Method;
use serde_json::{Value, json};
use strake_crds::{Provider, TokenUsage, UsageTotals};

use crate::endpoint::Allowance;
use crate::index::TokenPolicy;
use crate::ratelimit::{Left, Window};

/// The path, on the traffic port. It takes precedence over an upstream
/// named `strake` (which would have no `/v1/me` endpoint anyway).
pub const PATH: &str = "/strake/v1/me";

/// Whether a request is for this endpoint.
pub fn requested(method: &Method, path: &str) -> bool {
    path == PATH && (method == Method::GET || method == Method::HEAD)
}

/// One of the token's upstreams as the holder sees it.
pub struct SeenUpstream<'a> {
    /// The `/<name>/…` prefix that selects it.
    pub route: &'a str,
    /// `None`: the proxy does not have it right now.
    pub provider: Option<Provider>,
    /// Endpoints its UpstreamKey opens for every token.
    pub endpoints: &'a [Allowance],
}

/// The body of the answer.
pub fn render(
    token: &TokenPolicy,
    upstreams: &[SeenUpstream<'_>],
    left: &Left,
    budget: Option<Value>,
    now_ms: i64,
) -> Value {
    let state = if token.is_expired(now_ms) {
        "expired"
    } else if token.suspended {
        "suspended"
    } else {
        "active"
    };
    let allowances = |a: &[Allowance]| -> Vec<Value> {
        a.iter()
            .map(|a| json!({"methods": a.method_names(), "path": a.path()}))
            .collect()
    };
    let window = |w: Option<Window>| {
        w.map(|w| {
            json!({
                "limit": w.limit,
                "remaining": w.remaining,
                "resetSeconds": w.reset.as_secs_f64(),
                "replicas": w.replicas,
                "thisReplica": {"remaining": w.replica_remaining},
            })
        })
    };
    json!({
        "object": "strake.token",
        "name": &*token.name,
        "identity": &*token.identity,
        "state": state,
        "expiresAt": token.expires_at_ms.map(|_| token.expires_at_string()),
        "upstreams": upstreams.iter().map(|u| json!({
            "name": u.route,
            "provider": u.provider.map(Provider::as_str),
            "available": u.provider.is_some(),
            "endpoints": allowances(u.endpoints),
        })).collect::<Vec<_>>(),
        "allowedModels": token.allowed_models.iter().map(|m| &**m).collect::<Vec<_>>(),
        "endpoints": allowances(&token.endpoints),
        "limits": token.limits.map(|l| json!({
            "requestsPerMinute": l.requests_per_minute,
            "tokensPerMinute": l.tokens_per_minute,
            "requests": window(left.requests),
            "tokens": window(left.tokens),
        })),
        "budget": budget,
        // Filled in by the caller, after the status read (see [`usage`]).
        "usage": null,
    })
}

/// What the holder is told about the token's usage and spend.
#[derive(Debug)]
pub enum UsageSeen<'a> {
    /// No usage collector sums the replicas (file mode): `null`.
    NotCollected,
    /// The StrakeToken's status as of the collector's last fold (`None`:
    /// nothing counted yet).
    Collected(Option<&'a TokenUsage>),
    /// The status could not be read just now.
    Unavailable,
}

/// The `usage` member of the answer: the month's and the lifetime's totals
/// as `kubectl get straketoken -o yaml` shows them, without the per-replica
/// cursors.
pub fn usage(seen: &UsageSeen<'_>) -> Value {
    let totals = |t: &Option<UsageTotals>| t.as_ref().map_or(Value::Null, |t| json!(t));
    match seen {
        UsageSeen::NotCollected => Value::Null,
        UsageSeen::Collected(usage) => {
            json!({
                "month": usage.map_or(Value::Null, |u| totals(&u.month)),
                "lifetime": usage.map_or(Value::Null, |u| totals(&u.lifetime)),
            })
        }
        UsageSeen::Unavailable => json!({
            "error": "the token's usage could not be read just now; ask again in a few seconds",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use strake_crds::token::Token;
    use strake_crds::{EndpointAllowance, HttpMethod, TokenLimits};

    use crate::index::tests::token_record;
    use crate::index::{Record, TokenIndex};

    #[test]
    fn only_get_and_head_of_the_path() {
        assert!(requested(&Method::GET, "/strake/v1/me"));
        assert!(requested(&Method::HEAD, "/strake/v1/me"));
        assert!(!requested(&Method::POST, "/strake/v1/me"));
        assert!(!requested(&Method::GET, "/strake/v1/me/"));
        assert!(!requested(&Method::GET, "/openai/strake/v1/me"));
    }

    #[test]
    fn a_restricted_token_sees_its_own_policy_and_nothing_else() {
        let t = Token::mint();
        let mut record = token_record("team-a/alice", t.hash(), &["team-a/openai", "team-a/gone"]);
        record.allowed_models = vec!["gpt-4o*".into()];
        record.limits = Some(TokenLimits {
            requests_per_minute: Some(60),
            tokens_per_minute: None,
        });
        record.expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2027-03-01T00:00:00Z".parse().unwrap(),
        ));
        record.endpoints = vec![EndpointAllowance {
            methods: vec![HttpMethod::Get, HttpMethod::Delete],
            path: "/v1/files/*".into(),
        }];
        let mut idx = TokenIndex::new();
        idx.apply("t", Record::Token(record)).unwrap();
        let token = idx.view().token(&t.hash()).unwrap().clone();
        let upstreams = [
            SeenUpstream {
                route: "openai",
                provider: Some(Provider::OpenAi),
                endpoints: &[],
            },
            SeenUpstream {
                route: "gone",
                provider: None,
                endpoints: &[],
            },
        ];
        let left = Left {
            requests: Some(Window {
                limit: 60,
                remaining: 58,
                reset: Duration::from_secs(2),
                replicas: 2,
                replica_remaining: 29,
            }),
            tokens: None,
        };
        let now = "2026-12-01T12:00:00Z"
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        let v = render(&token, &upstreams, &left, None, now);
        assert_eq!(
            v,
            json!({
                "object": "strake.token",
                "name": "team-a/alice",
                "identity": "team-a/alice@example.com",
                "state": "active",
                "expiresAt": "2027-03-01T00:00:00Z",
                "upstreams": [
                    {"name": "openai", "provider": "openai", "available": true, "endpoints": []},
                    {"name": "gone", "provider": null, "available": false, "endpoints": []},
                ],
                "allowedModels": ["gpt-4o*"],
                "endpoints": [{"methods": ["GET", "DELETE"], "path": "/v1/files/*"}],
                "limits": {
                    "requestsPerMinute": 60,
                    "tokensPerMinute": null,
                    "requests": {
                        "limit": 60,
                        "remaining": 58,
                        "resetSeconds": 2.0,
                        "replicas": 2,
                        "thisReplica": {"remaining": 29},
                    },
                    "tokens": null,
                },
                "budget": null,
                "usage": null,
            })
        );
        let later = "2027-03-01T00:00:00Z"
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        assert_eq!(
            render(&token, &upstreams, &left, None, later)["state"],
            "expired"
        );
        assert!(!v.to_string().contains(&t.hash().to_hex()));
    }

    #[test]
    fn usage_shows_the_folded_totals_without_the_replicas_cursors() {
        let month = UsageTotals {
            period: Some("2026-12".into()),
            requests: 3,
            input_tokens: 30,
            output_tokens: 12,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            spend_usd: "0.000195".into(),
            unpriced_requests: 0,
        };
        let usage = TokenUsage {
            month: Some(month.clone()),
            lifetime: Some(UsageTotals {
                period: None,
                ..month
            }),
            collected: [(
                "instance-a".to_string(),
                strake_crds::UsageCursor {
                    series: 1,
                    seen_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        "2026-12-01T12:00:00Z".parse().unwrap(),
                    ),
                    counters: Default::default(),
                },
            )]
            .into(),
        };
        let v = super::usage(&UsageSeen::Collected(Some(&usage)));
        assert_eq!(v["month"]["period"], "2026-12");
        assert_eq!(v["month"]["requests"], 3);
        assert_eq!(v["month"]["spendUsd"], "0.000195");
        assert_eq!(v["lifetime"]["outputTokens"], 12);
        assert!(v["lifetime"].get("period").is_none());
        assert!(!v.to_string().contains("instance-a"));

        assert_eq!(
            super::usage(&UsageSeen::Collected(None)),
            json!({"month": null, "lifetime": null})
        );
        assert_eq!(super::usage(&UsageSeen::NotCollected), Value::Null);
        assert!(
            super::usage(&UsageSeen::Unavailable)["error"]
                .as_str()
                .unwrap()
                .contains("could not be read")
        );
    }
}
