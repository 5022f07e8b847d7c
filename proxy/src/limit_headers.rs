//! The rate-limit headers on proxied responses: the token's own limits,
//! in the headers the providers' SDKs and tools read, so a holder sees a
//! limit before hitting it.
//!
//! | style | headers |
//! | --- | --- |
//! | OpenAI, Azure | `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, reset as a duration (`1m30s`, `500ms`) |
//! | Anthropic | `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`, reset as an RFC 3339 instant |
//! | Gemini | none (Google sends none either) |
//!
//! The upstream sends the same headers for the shared key's account. Per
//! limit kind, the tighter one wins: the triple with fewer requests (or
//! tokens) remaining is the one the client sees, whole, so limit,
//! remaining and reset always describe one bucket. A client pacing itself
//! by the headers then follows whichever limit will refuse it first, and
//! a token without limits sees the upstream's headers unchanged. A token
//! whose limit is looser than the account's learns the account's
//! remaining count, as it would without the proxy.
//!
//! With several replicas the token's triple is the fleet's: the token's
//! limit, and what is left if the other replicas are where this one is
//! ([`Window`]), so a client behind an even balancer reads the limit it
//! was given and what it can still send.

use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use strake_crds::provider::ApiStyle;

use crate::ratelimit::{Left, Window};

/// The header names of one limit kind: (limit, remaining, reset).
type Names = [HeaderName; 3];

const OPENAI_REQUESTS: Names = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
const OPENAI_TOKENS: Names = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];
const ANTHROPIC_REQUESTS: Names = [
    HeaderName::from_static("anthropic-ratelimit-requests-limit"),
    HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
    HeaderName::from_static("anthropic-ratelimit-requests-reset"),
];
const ANTHROPIC_TOKENS: Names = [
    HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
    HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
    HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
];

/// Sets the token's limits on a response in `style`, where they are
/// tighter than the upstream's. `now_unix_ms` dates Anthropic's resets.
pub fn apply(style: ApiStyle, left: &Left, now_unix_ms: i64, headers: &mut HeaderMap) {
    let (requests, tokens, reset): (&Names, &Names, fn(Duration, i64) -> String) = match style {
        ApiStyle::OpenAi | ApiStyle::Azure => {
            (&OPENAI_REQUESTS, &OPENAI_TOKENS, |d, _| go_duration(d))
        }
        ApiStyle::Anthropic => (&ANTHROPIC_REQUESTS, &ANTHROPIC_TOKENS, rfc3339_after),
        ApiStyle::Gemini => return,
    };
    for (window, names) in [(left.requests, requests), (left.tokens, tokens)] {
        let Some(w) = window else { continue };
        let upstream_remaining = headers
            .get(&names[1])
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if upstream_remaining.is_some_and(|r| r < w.remaining) {
            continue;
        }
        set(headers, names, &w, &reset(w.reset, now_unix_ms));
    }
}

fn set(headers: &mut HeaderMap, names: &Names, w: &Window, reset: &str) {
    headers.insert(names[0].clone(), HeaderValue::from(w.limit));
    headers.insert(names[1].clone(), HeaderValue::from(w.remaining));
    if let Ok(v) = HeaderValue::from_str(reset) {
        headers.insert(names[2].clone(), v);
    }
}

/// `500ms`, `1s`, `1m30s`: OpenAI's reset format (Go's duration syntax,
/// to the millisecond).
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (m, rest) = (ms / 60_000, ms % 60_000);
    let secs = if rest % 1000 == 0 {
        format!("{}s", rest / 1000)
    } else {
        format!("{}s", (rest as f64 / 1000.0))
    };
    if m == 0 { secs } else { format!("{m}m{secs}") }
}

/// The instant `d` after `now_unix_ms`, rounded up to the second, in RFC
/// 3339 (Anthropic's reset format).
fn rfc3339_after(d: Duration, now_unix_ms: i64) -> String {
    let at_ms = now_unix_ms.saturating_add(d.as_millis() as i64);
    let secs = at_ms.div_euclid(1000) + i64::from(at_ms.rem_euclid(1000) != 0);
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(limit: u32, remaining: u64, reset_ms: u64) -> Option<Window> {
        Some(Window {
            limit,
            remaining,
            reset: Duration::from_millis(reset_ms),
            replicas: 1,
            replica_remaining: remaining,
        })
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name).map_or("", |v| v.to_str().unwrap())
    }

    const NOW: i64 = 1_796_126_400_000; // 2026-12-01T12:00:00Z

    #[test]
    fn the_tokens_limits_in_each_providers_headers() {
        let left = Left {
            requests: window(60, 59, 1000),
            tokens: window(1000, 400, 36_000),
        };
        let mut h = HeaderMap::new();
        apply(ApiStyle::OpenAi, &left, NOW, &mut h);
        assert_eq!(get(&h, "x-ratelimit-limit-requests"), "60");
        assert_eq!(get(&h, "x-ratelimit-remaining-requests"), "59");
        assert_eq!(get(&h, "x-ratelimit-reset-requests"), "1s");
        assert_eq!(get(&h, "x-ratelimit-limit-tokens"), "1000");
        assert_eq!(get(&h, "x-ratelimit-remaining-tokens"), "400");
        assert_eq!(get(&h, "x-ratelimit-reset-tokens"), "36s");

        let mut h = HeaderMap::new();
        apply(ApiStyle::Anthropic, &left, NOW + 200, &mut h);
        assert_eq!(get(&h, "anthropic-ratelimit-requests-limit"), "60");
        assert_eq!(get(&h, "anthropic-ratelimit-requests-remaining"), "59");
        assert_eq!(
            get(&h, "anthropic-ratelimit-requests-reset"),
            "2026-12-01T12:00:02Z"
        );
        assert_eq!(
            get(&h, "anthropic-ratelimit-tokens-reset"),
            "2026-12-01T12:00:37Z"
        );
        assert!(h.get("x-ratelimit-limit-requests").is_none());

        let mut h = HeaderMap::new();
        apply(ApiStyle::Gemini, &left, NOW, &mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn the_tighter_limit_wins_whole_per_kind() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("x-ratelimit-reset-requests", "6ms"),
            ("x-ratelimit-limit-tokens", "2000000"),
            ("x-ratelimit-remaining-tokens", "300"),
            ("x-ratelimit-reset-tokens", "3ms"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        let left = Left {
            requests: window(60, 59, 1000),
            tokens: window(1000, 400, 36_000),
        };
        apply(ApiStyle::OpenAi, &left, NOW, &mut h);
        // Requests: the token's 59 left is tighter than the account's.
        assert_eq!(get(&h, "x-ratelimit-limit-requests"), "60");
        assert_eq!(get(&h, "x-ratelimit-remaining-requests"), "59");
        assert_eq!(get(&h, "x-ratelimit-reset-requests"), "1s");
        // Tokens: the account's 300 left is tighter; its triple stays.
        assert_eq!(get(&h, "x-ratelimit-limit-tokens"), "2000000");
        assert_eq!(get(&h, "x-ratelimit-remaining-tokens"), "300");
        assert_eq!(get(&h, "x-ratelimit-reset-tokens"), "3ms");

        // A token without limits leaves the upstream's alone.
        let before = h.clone();
        apply(ApiStyle::OpenAi, &Left::default(), NOW, &mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn durations_as_openai_writes_them() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(ms(0)), "0ms");
        assert_eq!(go_duration(ms(20)), "20ms");
        assert_eq!(go_duration(ms(1000)), "1s");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(ms(90_000)), "1m30s");
        assert_eq!(go_duration(ms(360_000)), "6m0s");
    }
}
