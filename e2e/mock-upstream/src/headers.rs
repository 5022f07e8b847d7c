//! The response headers the real APIs send beside the body: rate-limit
//! state on every answer, and on errors whether a retry can help.
//!
//! OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets
//! as durations (`6m0s`, `20ms`). Anthropic:
//! `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`,
//! resets as RFC 3339 instants. Both send `x-should-retry` on errors
//! (`true` where their SDKs would retry anyway: 408, 409, 429, 5xx).
//! Gemini sends none of these.

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::router::Provider;

/// The mock's account: generous limits, one request and a few tokens spent.
pub(crate) const REQUESTS_PER_MINUTE: u64 = 10_000;
pub(crate) const TOKENS_PER_MINUTE: u64 = 2_000_000;

/// Adds the provider's rate-limit and retry headers to a response.
pub(crate) fn add(provider: Provider, status: StatusCode, headers: &mut HeaderMap) {
    let mut set = |name: &str, value: String| {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::from_str(&value)) {
            headers.insert(n, v);
        }
    };
    match provider {
        Provider::OpenAi | Provider::Azure => {
            set(
                "x-ratelimit-limit-requests",
                REQUESTS_PER_MINUTE.to_string(),
            );
            set("x-ratelimit-limit-tokens", TOKENS_PER_MINUTE.to_string());
            set(
                "x-ratelimit-remaining-requests",
                (REQUESTS_PER_MINUTE - 1).to_string(),
            );
            set(
                "x-ratelimit-remaining-tokens",
                (TOKENS_PER_MINUTE - 100).to_string(),
            );
            set("x-ratelimit-reset-requests", "6ms".into());
            set("x-ratelimit-reset-tokens", "3ms".into());
        }
        Provider::Anthropic => {
            let reset = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 1)
                .map(|t| t.to_string())
                .unwrap_or_default();
            for (kind, limit, used) in [
                ("requests", REQUESTS_PER_MINUTE, 1),
                ("tokens", TOKENS_PER_MINUTE, 100),
                ("input-tokens", TOKENS_PER_MINUTE, 90),
                ("output-tokens", TOKENS_PER_MINUTE / 5, 10),
            ] {
                let name = |field: &str| format!("anthropic-ratelimit-{kind}-{field}");
                set(&name("limit"), limit.to_string());
                set(&name("remaining"), (limit - used).to_string());
                set(&name("reset"), reset.clone());
            }
        }
        Provider::Gemini => return,
    }
    if status.is_client_error() || status.is_server_error() {
        let retry = matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error();
        set("x-should-retry", retry.to_string());
    }
}
