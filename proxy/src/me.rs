//! `GET /strake/v1/me`: what the presented token may do, for its holder.
//!
//! Answered by the proxy itself, after authentication, from the same
//! snapshot a request would be decided on: identity, expiry, state, the
//! upstreams it reaches (by route name and provider), allowed models,
//! endpoints opened beyond inference, limits and what is left of them
//! (for the whole fleet if the other replicas are where this one is, and
//! what this replica alone still admits; see [`Window`]), the token's
//! budget with the period's spend and what is left (an UpstreamKey's
//! budget, a whole team's spend, is not shown). Nothing about other
//! tokens, and nothing of the upstreams
//! but what a client configures anyway: no base URL, static header, key,
//! or Secret name.

use http::Method;
use serde_json::{Value, json};
use strake_crds::Provider;

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
    })
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
}
