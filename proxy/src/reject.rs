//! Why the proxy answered a request itself, and how that answer looks.
//!
//! Errors are shaped like the provider's own error JSON, in the request's
//! API style, so SDKs raise their usual exceptions
//! (`openai.AuthenticationError`, `anthropic.RateLimitError`, …). Messages
//! say what happened and what to do; they never repeat the credential.
//! Every proxy-made error also carries `x-strake-error: <reason>`, which
//! tells it apart from an upstream's error, and `x-should-retry` (see
//! [`Retry`]), which the Stainless SDKs (openai, anthropic) and Claude Code
//! read before their own retry rules.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;
use strake_crds::provider::ApiStyle;
use strake_crds::token::TokenError;

use crate::federated::Refusal;
use crate::ratelimit::{LimitKind, RateLimited};
use crate::route::{RouteError, style_name};
use crate::target::UnsafeTarget;

/// The header naming the reason of a proxy-made error.
pub const REASON_HEADER: &str = "x-strake-error";

/// The header the providers send to tell their SDKs whether to retry.
pub const SHOULD_RETRY_HEADER: &str = "x-should-retry";

/// Whether the same request can succeed later: what a refusal tells the
/// client's retry loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Nothing the client can do by waiting: the token, the request or the
    /// platform's key must change first (`x-should-retry: false`, so
    /// Claude Code stops after one request instead of ten over minutes).
    Never,
    /// A limit that refills: `Retry-After` seconds, then it may pass.
    After(u64),
    /// A passing failure (the upstream, the network): retry with backoff.
    Transient,
}

impl Retry {
    /// The `x-should-retry` value.
    pub fn should_retry(self) -> &'static str {
        match self {
            Retry::Never => "false",
            Retry::After(_) | Retry::Transient => "true",
        }
    }
}

/// Which budget refused a request, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetRefusal {
    /// `None`: the token's own; `Some(route)`: the budget of the upstream
    /// with that route name, shared by every token using it.
    pub upstream: Option<String>,
    /// E.g. "monthly budget of $50".
    pub budget: String,
    /// RFC 3339.
    pub resets_at: String,
    pub retry_after_secs: u64,
}

impl BudgetRefusal {
    fn whose(&self) -> String {
        match &self.upstream {
            None => format!("The {} of this Strake token", self.budget),
            Some(route) => format!(
                "The {} of the upstream '{route}', shared by every token that uses it,",
                self.budget
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Reject {
    // authenticate
    MissingCredential,
    MalformedToken(TokenError),
    UnknownToken,
    /// A JWT that does not authenticate ([`crate::federated`]).
    Federated(Refusal),
    // authorize
    Expired {
        at: String,
    },
    Suspended,
    ModelNotAllowed {
        model: String,
        allowed: Vec<String>,
    },
    ModelUnreadable,
    /// Not an inference endpoint, and no allowance opens it.
    EndpointNotAllowed {
        method: String,
        path: String,
        /// An organisation or admin API, which opens only when named.
        admin: bool,
    },
    RateLimited(RateLimited),
    /// A budget is spent for its period ([`crate::budget`]).
    BudgetSpent(BudgetRefusal),
    /// This replica has served its share of what is left of a budget
    /// since the last collection; retry after it.
    BudgetHeldBack(BudgetRefusal),
    // the request itself
    UnsafeTarget(UnsafeTarget),
    BodyTooLarge {
        limit: usize,
    },
    BodyTimeout,
    BodyAborted,
    /// A stream request whose `stream` and `stream_options` cannot be read
    /// as the upstream would read them.
    BodyUnreadable,
    // route
    Route(RouteError),
    // forward
    UpstreamConnect,
    UpstreamTimeout {
        secs: u64,
    },
    UpstreamFailed,
    // respond
    /// The upstream answered 401 or 403: it refused the platform's key.
    /// Its body is dropped, since some providers quote part of the key.
    UpstreamKeyRejected {
        status: u16,
    },
    /// The upstream answered 101 to a request that asked for no upgrade.
    UpstreamSwitchedProtocols,
}

impl Reject {
    pub fn status(&self) -> StatusCode {
        match self {
            Reject::MissingCredential
            | Reject::MalformedToken(_)
            | Reject::UnknownToken
            | Reject::Expired { .. } => StatusCode::UNAUTHORIZED,
            Reject::Federated(r) if r.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            Reject::Federated(_) => StatusCode::UNAUTHORIZED,
            Reject::Suspended
            | Reject::ModelNotAllowed { .. }
            | Reject::EndpointNotAllowed { .. } => StatusCode::FORBIDDEN,
            Reject::ModelUnreadable
            | Reject::UnsafeTarget(_)
            | Reject::BodyAborted
            | Reject::BodyUnreadable => StatusCode::BAD_REQUEST,
            Reject::RateLimited(_) | Reject::BudgetSpent(_) | Reject::BudgetHeldBack(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Reject::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reject::Route(RouteError::NoneForStyle { .. }) => StatusCode::NOT_FOUND,
            Reject::Route(RouteError::Ambiguous { .. }) => StatusCode::BAD_REQUEST,
            Reject::Route(RouteError::NotConfigured { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Reject::UpstreamConnect
            | Reject::UpstreamFailed
            | Reject::UpstreamKeyRejected { .. }
            | Reject::UpstreamSwitchedProtocols => StatusCode::BAD_GATEWAY,
            Reject::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A stable, low-cardinality name: the `reason` metric label, the
    /// access log's `reject` field and the `x-strake-error` header.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::MissingCredential => "missing_credential",
            Reject::MalformedToken(_) => "malformed_token",
            Reject::UnknownToken => "unknown_token",
            Reject::Federated(r) => r.reason(),
            Reject::Expired { .. } => "expired",
            Reject::Suspended => "suspended",
            Reject::ModelNotAllowed { .. } => "model_not_allowed",
            Reject::ModelUnreadable => "model_unreadable",
            Reject::EndpointNotAllowed { .. } => "endpoint_not_allowed",
            Reject::RateLimited(r) => match r.kind {
                LimitKind::Requests => "rate_limited_requests",
                LimitKind::Tokens => "rate_limited_tokens",
            },
            Reject::BudgetSpent(_) => "budget_exceeded",
            Reject::BudgetHeldBack(_) => "budget_held_back",
            Reject::UnsafeTarget(_) => "unsafe_target",
            Reject::BodyTooLarge { .. } => "body_too_large",
            Reject::BodyTimeout => "body_timeout",
            Reject::BodyAborted => "body_aborted",
            Reject::BodyUnreadable => "body_unreadable",
            Reject::Route(RouteError::NoneForStyle { .. }) => "no_upstream_for_style",
            Reject::Route(RouteError::Ambiguous { .. }) => "ambiguous_upstream",
            Reject::Route(RouteError::NotConfigured { .. }) => "upstream_not_configured",
            Reject::UpstreamConnect => "upstream_connect",
            Reject::UpstreamTimeout { .. } => "upstream_timeout",
            Reject::UpstreamFailed => "upstream_failed",
            Reject::UpstreamKeyRejected { .. } => "upstream_key_rejected",
            Reject::UpstreamSwitchedProtocols => "upstream_switched_protocols",
        }
    }

    /// Whether a retry can fix this refusal.
    pub fn retry(&self) -> Retry {
        match self {
            Reject::RateLimited(r) => Retry::After(r.retry_after_secs),
            Reject::BudgetHeldBack(b) => Retry::After(b.retry_after_secs),
            // The body or the connection broke on the way; the next attempt
            // may arrive whole.
            Reject::BodyTimeout
            | Reject::BodyAborted
            | Reject::Route(RouteError::NotConfigured { .. })
            | Reject::UpstreamConnect
            | Reject::UpstreamTimeout { .. }
            | Reject::UpstreamFailed => Retry::Transient,
            Reject::Federated(r) if r.is_transient() => Retry::Transient,
            // A new token, not the same one again, is what can pass.
            Reject::Federated(_) => Retry::Never,
            Reject::MissingCredential
            | Reject::MalformedToken(_)
            | Reject::UnknownToken
            | Reject::Expired { .. }
            | Reject::Suspended
            | Reject::ModelNotAllowed { .. }
            | Reject::ModelUnreadable
            | Reject::EndpointNotAllowed { .. }
            // Spent until the period ends: retrying only burns requests.
            | Reject::BudgetSpent(_)
            | Reject::UnsafeTarget(_)
            | Reject::BodyTooLarge { .. }
            | Reject::BodyUnreadable
            | Reject::Route(RouteError::NoneForStyle { .. } | RouteError::Ambiguous { .. })
            // The platform team must replace the key; retrying only adds
            // load on a key the provider already refuses.
            | Reject::UpstreamKeyRejected { .. }
            | Reject::UpstreamSwitchedProtocols => Retry::Never,
        }
    }

    /// Whether this is an authentication or authorization failure
    /// (`strake_auth_failures_total`).
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            Reject::MissingCredential
                | Reject::MalformedToken(_)
                | Reject::UnknownToken
                | Reject::Federated(_)
                | Reject::Expired { .. }
                | Reject::Suspended
                | Reject::ModelNotAllowed { .. }
                | Reject::ModelUnreadable
                | Reject::EndpointNotAllowed { .. }
                | Reject::RateLimited(_)
                | Reject::BudgetSpent(_)
                | Reject::BudgetHeldBack(_)
        )
    }

    pub fn message(&self) -> String {
        match self {
            Reject::MissingCredential => "No API key was provided. Send your Strake token (sk-strk-…) as `Authorization: Bearer <token>` or in the x-api-key, api-key or x-goog-api-key header.".into(),
            Reject::MalformedToken(TokenError::Prefix) => "The API key is not a Strake token. This endpoint accepts only Strake tokens (sk-strk-…); ask your platform team for one.".into(),
            Reject::MalformedToken(e) => format!("The Strake token is malformed: {}.", e.to_string().trim_start_matches("malformed Strake token: ")),
            Reject::UnknownToken => "This Strake token has been revoked or does not exist. Ask your platform team for a new one.".into(),
            Reject::Federated(r) => r.message(),
            Reject::Expired { at } => format!("This Strake token expired at {at}. Ask your platform team to extend or reissue it."),
            Reject::Suspended => "This Strake token is suspended. Ask your platform team to reinstate it.".into(),
            Reject::ModelNotAllowed { model, allowed } => {
                let model: String = model.chars().take(200).collect();
                format!("This Strake token may not use the model '{model}'. Allowed models: {}. Ask your platform team if you need another.", allowed.join(", "))
            }
            Reject::ModelUnreadable => "This Strake token is limited to some models, and the proxy could not read the request's model with certainty. Send an uncompressed UTF-8 JSON body with a single string \"model\" field (or a multipart form with one model part), to a path without empty segments.".into(),
            Reject::EndpointNotAllowed { method, path, admin } => {
                let path: String = path.chars().take(200).collect();
                if *admin {
                    format!("This Strake token may not call {method} {path}: organisation and admin APIs open only when the platform team names them in the StrakeToken's or UpstreamKey's spec.endpoints.")
                } else {
                    format!("This Strake token may not call {method} {path}: only the provider's inference endpoints are open by default. Ask your platform team to allow it in the StrakeToken's or UpstreamKey's spec.endpoints.")
                }
            }
            Reject::RateLimited(r) => format!(
                "Rate limit reached for this Strake token: {} {} per minute. Try again in {} s.",
                r.per_minute,
                r.kind.as_str(),
                r.retry_after_secs
            ),
            Reject::BudgetSpent(b) => format!(
                "{} is spent. It resets at {}; ask your platform team if you need more before then.",
                b.whose(),
                b.resets_at
            ),
            Reject::BudgetHeldBack(b) => format!(
                "{} is nearly spent, and this proxy replica has served its share of what is left until usage is next collected. Try again in {} s.",
                b.whose(),
                b.retry_after_secs
            ),
            Reject::UnsafeTarget(u) => u.message().into(),
            Reject::BodyTooLarge { limit } => format!("The request body is larger than this proxy accepts ({limit} bytes)."),
            Reject::BodyTimeout => "The request body did not arrive in time.".into(),
            Reject::BodyAborted => "The request body could not be read completely.".into(),
            Reject::BodyUnreadable => "The request body is not valid JSON, or names `stream`, `stream_options` or `include_usage` more than once. Send one JSON object with each field at most once.".into(),
            Reject::Route(RouteError::NoneForStyle { style, available }) => format!(
                "This Strake token has no {} upstream. Its upstreams are: {}. To choose one explicitly, start the path with its name (/<name>/…).",
                style_name(*style),
                available.join(", ")
            ),
            Reject::Route(RouteError::Ambiguous { style, names }) => format!(
                "This Strake token can reach several {} upstreams ({}). Choose one by starting the path with its name, e.g. /{}/….",
                style_name(*style),
                names.join(", "),
                names.first().map(String::as_str).unwrap_or("name")
            ),
            Reject::Route(RouteError::NotConfigured { name }) => format!(
                "The upstream '{name}' is not available on this proxy right now. Ask your platform team to check its UpstreamKey."
            ),
            Reject::UpstreamConnect => "The proxy could not connect to the upstream provider. Try again; if it persists, ask your platform team.".into(),
            Reject::UpstreamTimeout { secs } => format!("The upstream provider did not answer within {secs} s."),
            Reject::UpstreamFailed => "The connection to the upstream provider failed before it answered. Try again.".into(),
            Reject::UpstreamKeyRejected { status } => format!("The upstream provider rejected the platform's key (HTTP {status}). Your Strake token is fine; tell your platform team, who manage the UpstreamKey."),
            Reject::UpstreamSwitchedProtocols => "The upstream provider answered with a protocol switch this proxy does not relay.".into(),
        }
    }

    /// The error body in the provider's shape.
    pub fn body(&self, style: ApiStyle) -> serde_json::Value {
        let status = self.status();
        let message = self.message();
        match style {
            ApiStyle::OpenAi | ApiStyle::Azure => {
                let (kind, code) = self.openai_type_and_code();
                json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            }
            ApiStyle::Anthropic => {
                let kind = match status.as_u16() {
                    400 | 408 => "invalid_request_error",
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    413 => "request_too_large",
                    429 => "rate_limit_error",
                    504 => "timeout_error",
                    _ => "api_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
            ApiStyle::Gemini => {
                let grpc = match status.as_u16() {
                    401 => "UNAUTHENTICATED",
                    403 => "PERMISSION_DENIED",
                    404 => "NOT_FOUND",
                    429 => "RESOURCE_EXHAUSTED",
                    408 | 504 => "DEADLINE_EXCEEDED",
                    502 | 503 => "UNAVAILABLE",
                    _ => "INVALID_ARGUMENT",
                };
                json!({"error": {"code": status.as_u16(), "message": message, "status": grpc}})
            }
        }
    }

    /// OpenAI's `type` and `code`, as its API uses them: 401s are
    /// `invalid_request_error`/`invalid_api_key`; rate limits name the
    /// limit (`requests`/`tokens`) with code `rate_limit_exceeded`.
    fn openai_type_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            Reject::MissingCredential => ("invalid_request_error", Some("missing_api_key")),
            Reject::MalformedToken(_) | Reject::UnknownToken => {
                ("invalid_request_error", Some("invalid_api_key"))
            }
            Reject::Expired { .. } => ("invalid_request_error", Some("invalid_api_key")),
            Reject::Federated(r) if r.is_transient() => ("server_error", None),
            Reject::Federated(_) => ("invalid_request_error", Some("invalid_api_key")),
            Reject::Suspended => ("invalid_request_error", Some("permission_denied")),
            Reject::ModelNotAllowed { .. } => ("invalid_request_error", Some("model_not_allowed")),
            Reject::ModelUnreadable => ("invalid_request_error", Some("invalid_model")),
            Reject::EndpointNotAllowed { .. } => {
                ("invalid_request_error", Some("endpoint_not_allowed"))
            }
            Reject::RateLimited(r) => (r.kind.as_str(), Some("rate_limit_exceeded")),
            // OpenAI's own answer when an account's quota or budget is used up.
            Reject::BudgetSpent(_) => ("insufficient_quota", Some("insufficient_quota")),
            Reject::BudgetHeldBack(_) => ("tokens", Some("rate_limit_exceeded")),
            Reject::UnsafeTarget(_) => ("invalid_request_error", Some("invalid_path")),
            Reject::BodyTooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            Reject::BodyTimeout | Reject::BodyAborted | Reject::BodyUnreadable => {
                ("invalid_request_error", None)
            }
            Reject::Route(RouteError::NoneForStyle { .. }) => {
                ("invalid_request_error", Some("unknown_upstream"))
            }
            Reject::Route(RouteError::Ambiguous { .. }) => {
                ("invalid_request_error", Some("ambiguous_upstream"))
            }
            Reject::Route(RouteError::NotConfigured { .. }) => {
                ("server_error", Some("upstream_unavailable"))
            }
            Reject::UpstreamConnect | Reject::UpstreamFailed => ("server_error", None),
            Reject::UpstreamTimeout { .. } => ("server_error", Some("timeout")),
            Reject::UpstreamKeyRejected { .. } => ("server_error", Some("upstream_key_rejected")),
            Reject::UpstreamSwitchedProtocols => ("server_error", None),
        }
    }

    /// The whole response: status, JSON body in `style`, `x-should-retry`,
    /// and `Retry-After` where waiting helps (every 429).
    pub fn response(&self, style: ApiStyle) -> Response<Bytes> {
        let body = serde_json::to_vec(&self.body(style)).expect("JSON values serialize");
        let mut resp = Response::new(Bytes::from(body));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(REASON_HEADER, HeaderValue::from_static(self.reason()));
        let retry = self.retry();
        h.insert(
            SHOULD_RETRY_HEADER,
            HeaderValue::from_static(retry.should_retry()),
        );
        if let Retry::After(secs) = retry {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // Every 429 says when it may pass: a spent budget at its reset.
        // `x-should-retry: false` keeps SDKs from sleeping until then.
        if let Reject::BudgetSpent(b) = self {
            h.insert(header::RETRY_AFTER, HeaderValue::from(b.retry_after_secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn all() -> Vec<Reject> {
        vec![
            Reject::MissingCredential,
            Reject::MalformedToken(TokenError::Checksum),
            Reject::MalformedToken(TokenError::Prefix),
            Reject::UnknownToken,
            Reject::Expired {
                at: "2020-01-01T00:00:00Z".into(),
            },
            Reject::Suspended,
            Reject::ModelNotAllowed {
                model: "o1-pro".into(),
                allowed: vec!["gpt-4o*".into()],
            },
            Reject::ModelUnreadable,
            Reject::EndpointNotAllowed {
                method: "DELETE".into(),
                path: "/v1/files/file-abc".into(),
                admin: false,
            },
            Reject::EndpointNotAllowed {
                method: "GET".into(),
                path: "/v1/organization/api_keys".into(),
                admin: true,
            },
            Reject::RateLimited(RateLimited {
                kind: LimitKind::Requests,
                per_minute: 60,
                retry_after_secs: 7,
            }),
            Reject::BudgetSpent(spent(None)),
            Reject::BudgetSpent(spent(Some("openai"))),
            Reject::BudgetHeldBack(BudgetRefusal {
                retry_after_secs: 11,
                ..spent(None)
            }),
            Reject::UnsafeTarget(UnsafeTarget::DotSegment),
            Reject::BodyTooLarge { limit: 10 },
            Reject::BodyTimeout,
            Reject::BodyAborted,
            Reject::BodyUnreadable,
            Reject::Route(RouteError::NoneForStyle {
                style: ApiStyle::Anthropic,
                available: vec!["openai".into()],
            }),
            Reject::Route(RouteError::Ambiguous {
                style: ApiStyle::OpenAi,
                names: vec!["a".into(), "b".into()],
            }),
            Reject::Route(RouteError::NotConfigured { name: "x".into() }),
            Reject::UpstreamConnect,
            Reject::UpstreamTimeout { secs: 600 },
            Reject::UpstreamFailed,
            Reject::UpstreamKeyRejected { status: 401 },
            Reject::UpstreamSwitchedProtocols,
        ]
    }

    fn spent(upstream: Option<&str>) -> BudgetRefusal {
        BudgetRefusal {
            upstream: upstream.map(str::to_string),
            budget: "monthly budget of $50".into(),
            resets_at: "2027-01-01T00:00:00Z".into(),
            retry_after_secs: 2_592_000,
        }
    }

    #[test]
    fn a_spent_budget_is_the_providers_quota_error_and_ends_retries() {
        let r = Reject::BudgetSpent(spent(None)).response(ApiStyle::OpenAi);
        assert_eq!(r.status(), 429);
        let v = parse(&r);
        assert_eq!(v["error"]["type"], "insufficient_quota");
        assert_eq!(v["error"]["code"], "insufficient_quota");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(
            m.contains("monthly budget of $50 of this Strake token is spent"),
            "{m}"
        );
        assert!(m.contains("resets at 2027-01-01T00:00:00Z"), "{m}");
        assert_eq!(r.headers()[SHOULD_RETRY_HEADER], "false");
        assert_eq!(r.headers()["retry-after"], "2592000");
        let r = Reject::BudgetSpent(spent(Some("openai"))).response(ApiStyle::Anthropic);
        let v = parse(&r);
        assert_eq!(
            (r.status().as_u16(), v["type"].as_str()),
            (429, Some("error"))
        );
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("upstream 'openai', shared by every token")
        );
        let held = Reject::BudgetHeldBack(BudgetRefusal {
            retry_after_secs: 11,
            ..spent(None)
        });
        let r = held.response(ApiStyle::OpenAi);
        assert_eq!(r.headers()[SHOULD_RETRY_HEADER], "true");
        assert_eq!(r.headers()["retry-after"], "11");
        assert_eq!(parse(&r)["error"]["code"], "rate_limit_exceeded");
    }

    fn parse(r: &Response<Bytes>) -> Value {
        serde_json::from_slice(r.body()).unwrap()
    }

    #[test]
    fn openai_shape() {
        let r = Reject::UnknownToken.response(ApiStyle::OpenAi);
        assert_eq!(r.status(), 401);
        let v = parse(&r);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert_eq!(v["error"]["param"], Value::Null);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("revoked or does not exist")
        );
        let r = Reject::RateLimited(RateLimited {
            kind: LimitKind::Tokens,
            per_minute: 1000,
            retry_after_secs: 3,
        })
        .response(ApiStyle::OpenAi);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        assert_eq!(parse(&r)["error"]["type"], "tokens");
        assert_eq!(parse(&r)["error"]["code"], "rate_limit_exceeded");
        assert_eq!(r.headers()[REASON_HEADER], "rate_limited_tokens");
    }

    #[test]
    fn anthropic_shape() {
        let cases = [
            (Reject::UnknownToken, 401, "authentication_error"),
            (Reject::Suspended, 403, "permission_error"),
            (Reject::BodyTooLarge { limit: 1 }, 413, "request_too_large"),
            (Reject::UpstreamConnect, 502, "api_error"),
            (Reject::UpstreamTimeout { secs: 1 }, 504, "timeout_error"),
            (
                Reject::Route(RouteError::NoneForStyle {
                    style: ApiStyle::Anthropic,
                    available: vec![],
                }),
                404,
                "not_found_error",
            ),
        ];
        for (rej, status, kind) in cases {
            let r = rej.response(ApiStyle::Anthropic);
            assert_eq!(r.status(), status);
            let v = parse(&r);
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], kind);
            assert!(v["error"]["message"].is_string());
        }
    }

    #[test]
    fn gemini_shape() {
        let v = parse(&Reject::Suspended.response(ApiStyle::Gemini));
        assert_eq!(v["error"]["code"], 403);
        assert_eq!(v["error"]["status"], "PERMISSION_DENIED");
        let v = parse(&Reject::UnknownToken.response(ApiStyle::Gemini));
        assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
    }

    #[test]
    fn every_rejection_renders_in_every_style_with_a_json_content_type() {
        for rej in all() {
            for style in [
                ApiStyle::OpenAi,
                ApiStyle::Anthropic,
                ApiStyle::Azure,
                ApiStyle::Gemini,
            ] {
                let r = rej.response(style);
                assert_eq!(r.status(), rej.status());
                assert_eq!(r.headers()["content-type"], "application/json");
                assert_eq!(r.headers()[REASON_HEADER], rej.reason());
                let v = parse(&r);
                assert!(
                    v["error"]["message"].as_str().is_some_and(|m| m.len() > 10),
                    "{rej:?} {style:?}"
                );
            }
        }
    }

    #[test]
    fn refusals_a_retry_cannot_fix_say_so_and_every_429_says_when() {
        for rej in all() {
            let r = rej.response(ApiStyle::Anthropic);
            let should = r.headers()[SHOULD_RETRY_HEADER].to_str().unwrap();
            let status = r.status().as_u16();
            match rej.retry() {
                Retry::Never => {
                    assert_eq!(should, "false", "{rej:?}");
                    // Only a spent budget, which resets at a known instant.
                    assert_eq!(
                        r.headers().contains_key("retry-after"),
                        matches!(rej, Reject::BudgetSpent(_)),
                        "{rej:?}"
                    );
                }
                Retry::After(secs) => {
                    assert_eq!(should, "true", "{rej:?}");
                    assert_eq!(r.headers()["retry-after"], secs.to_string().as_str());
                }
                Retry::Transient => assert_eq!(should, "true", "{rej:?}"),
            }
            if status == 429 {
                assert!(r.headers().contains_key("retry-after"), "{rej:?}");
            }
            // Rate limits and failures on the way can pass; the rest cannot.
            let transient = (status == 429 && !matches!(rej, Reject::BudgetSpent(_)))
                || status == 408
                || (status >= 500
                    && !matches!(
                        rej,
                        Reject::UpstreamKeyRejected { .. } | Reject::UpstreamSwitchedProtocols
                    ));
            assert_eq!(
                should == "true",
                transient || matches!(rej, Reject::BodyAborted),
                "{rej:?}"
            );
        }
        let never = [
            Reject::UnknownToken,
            Reject::Expired { at: "x".into() },
            Reject::Suspended,
            Reject::MalformedToken(TokenError::Checksum),
            Reject::ModelNotAllowed {
                model: "m".into(),
                allowed: vec![],
            },
            Reject::EndpointNotAllowed {
                method: "GET".into(),
                path: "/".into(),
                admin: false,
            },
        ];
        for rej in never {
            assert_eq!(rej.retry(), Retry::Never, "{rej:?}");
        }
    }

    #[test]
    fn messages_never_echo_a_credential() {
        for rej in all() {
            let m = rej.message();
            assert!(!m.contains("sk-strk-") || m.contains("sk-strk-…"), "{m}");
        }
    }
}
