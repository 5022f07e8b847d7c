//! Header and credential rules the operator and the proxy both apply: one
//! list each, so the operator's admission of an UpstreamKey's static
//! headers and the proxy's rewrite of every request cannot drift apart.
//! Names are lowercase, as `http::HeaderName` prints them.

/// Headers a client credential can arrive in. Every one of them is removed
/// before a request goes upstream, whichever one carried the token.
pub const CREDENTIAL_HEADERS: [&str; 4] =
    ["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// The query parameter that carries a credential (Gemini's `?key=`). Its
/// name is compared after percent-decoding, as the provider reads it.
pub const CREDENTIAL_QUERY_PARAM: &str = "key";

/// RFC 9110 §7.6.1 connection-specific headers, plus the legacy ones
/// proxies have always dropped.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Client headers that pick what the platform's key bills or reads
/// (OpenAI's organization and project, Google's quota project). They are
/// the platform's choice, made with an UpstreamKey's static headers, never
/// the token holder's.
pub const ACCOUNT_SELECTORS: [&str; 3] = [
    "openai-organization",
    "openai-project",
    "x-goog-user-project",
];

/// Headers the proxy sets itself, or whose meaning belongs to the request
/// at hand: an UpstreamKey's static `headers` may not name them.
/// (Account selectors are allowed there: that is where they belong.)
pub const RESERVED_FOR_PROXY: [&str; 7] = [
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "accept-encoding",
    "expect",
    "cookie",
];

/// Whether an UpstreamKey's static header `name` (any case) is refused:
/// a credential, hop-by-hop, or one the proxy sets.
pub fn is_reserved(name: &str) -> bool {
    let listed = |list: &[&str]| list.iter().any(|h| h.eq_ignore_ascii_case(name));
    listed(&CREDENTIAL_HEADERS) || listed(&HOP_BY_HOP) || listed(&RESERVED_FOR_PROXY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_cover_credentials_framing_and_hops_in_any_case() {
        for name in [
            "Authorization",
            "X-Api-Key",
            "api-key",
            "X-Goog-Api-Key",
            "Host",
            "Content-Length",
            "Transfer-Encoding",
            "Proxy-Connection",
            "Upgrade",
            "Accept-Encoding",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        for name in ["OpenAI-Organization", "OpenAI-Project", "anthropic-beta"] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    #[test]
    fn lists_are_lowercase() {
        for name in CREDENTIAL_HEADERS
            .iter()
            .chain(&HOP_BY_HOP)
            .chain(&ACCOUNT_SELECTORS)
            .chain(&RESERVED_FOR_PROXY)
        {
            assert_eq!(*name, name.to_ascii_lowercase());
        }
    }
}
