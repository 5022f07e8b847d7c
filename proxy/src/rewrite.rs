//! The `rewrite` stage's header rules, and their mirror for responses.
//!
//! Going up: every client credential header goes (whichever one carried
//! the token), with hop-by-hop headers, `Host`, cookies, framing and the
//! account selectors (`OpenAI-Organization`, `OpenAI-Project`: which
//! project the shared key bills is the platform's choice); the upstream's
//! key and static headers come in. The lists live in
//! [`strake_crds::headers`], shared with the operator. `Accept-Encoding` becomes
//! `identity` so usage can be read from the response (clients still get a
//! valid, uncompressed body).
//!
//! Coming back: hop-by-hop headers go; everything else passes unchanged.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use strake_crds::headers::{ACCOUNT_SELECTORS, CREDENTIAL_HEADERS, HOP_BY_HOP as HOPS};

use crate::index::Upstream;

/// [`strake_crds::headers::HOP_BY_HOP`] as `HeaderName`s: removing by name
/// then skips parsing the string on every request.
const HOP_BY_HOP: [HeaderName; 9] = [
    HeaderName::from_static(HOPS[0]),
    HeaderName::from_static(HOPS[1]),
    HeaderName::from_static(HOPS[2]),
    HeaderName::from_static(HOPS[3]),
    HeaderName::from_static(HOPS[4]),
    HeaderName::from_static(HOPS[5]),
    HeaderName::from_static(HOPS[6]),
    HeaderName::from_static(HOPS[7]),
    HeaderName::from_static(HOPS[8]),
];

/// Every header a client credential can arrive in.
const CREDENTIALS: [HeaderName; 4] = [
    HeaderName::from_static(CREDENTIAL_HEADERS[0]),
    HeaderName::from_static(CREDENTIAL_HEADERS[1]),
    HeaderName::from_static(CREDENTIAL_HEADERS[2]),
    HeaderName::from_static(CREDENTIAL_HEADERS[3]),
];

/// Client headers that would choose what the shared key bills.
const SELECTORS: [HeaderName; 3] = [
    HeaderName::from_static(ACCOUNT_SELECTORS[0]),
    HeaderName::from_static(ACCOUNT_SELECTORS[1]),
    HeaderName::from_static(ACCOUNT_SELECTORS[2]),
];

/// Removes every header `dropped` names, and those `Connection` lists, in
/// one pass over the names present: a request carries a handful of
/// headers, while removing each droppable name in turn hashed about twenty.
fn remove_headers(headers: &mut HeaderMap, dropped: impl Fn(&HeaderName) -> bool) {
    // Usually no `Connection` header: an empty list, no allocation.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| dropped(name) || listed.contains(name))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// What never goes upstream: hop-by-hop headers, every credential header
/// (whichever one carried the token), account selectors, the client's
/// cookies (they belong to the proxy's domain), `Host` (the client sets it
/// from the URI), and framing (the body is forwarded whole, with nothing
/// to wait for).
fn is_dropped_going_up(name: &HeaderName) -> bool {
    is_hop_by_hop(name)
        || CREDENTIALS.contains(name)
        || SELECTORS.contains(name)
        || [
            header::COOKIE,
            header::HOST,
            header::CONTENT_LENGTH,
            header::EXPECT,
        ]
        .contains(name)
}

/// Turns the client's headers into the upstream request's.
pub fn request_headers(headers: &mut HeaderMap, upstream: &Upstream) {
    remove_headers(headers, is_dropped_going_up);
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    headers.insert(upstream.key_header.clone(), upstream.key_value.clone());
    for (name, value) in upstream.headers.iter() {
        headers.insert(name.clone(), value.clone());
    }
}

/// Turns the upstream's response headers into the client's.
pub fn response_headers(headers: &mut HeaderMap) {
    remove_headers(headers, is_hop_by_hop);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use strake_crds::contract::UpstreamRecord;
    use strake_crds::provider::Provider;

    use crate::index::ApiKey;

    fn upstream(provider: Provider) -> Upstream {
        let record = UpstreamRecord {
            name: "u".into(),
            provider,
            base_url: "https://api.example.com".into(),
            headers: BTreeMap::from([("OpenAI-Organization".into(), "org-1".into())]),
            endpoints: vec![],
            source: None,
            budget: None,
        };
        Upstream::new(&record, &ApiKey::new("sk-real")).unwrap()
    }

    fn client_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer sk-strk-x"),
            ("x-api-key", "sk-strk-x"),
            ("api-key", "sk-strk-x"),
            ("x-goog-api-key", "sk-strk-x"),
            ("proxy-authorization", "Basic x"),
            ("cookie", "session=1"),
            ("host", "proxy.example"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("content-length", "12"),
            ("expect", "100-continue"),
            ("accept-encoding", "gzip, br"),
            ("openai-organization", "org-client"),
            ("openai-project", "proj-client"),
            ("x-goog-user-project", "billing-client"),
            ("proxy-connection", "keep-alive"),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
            ("user-agent", "OpenAI/Python 1.0"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn credentials_and_hop_by_hop_go_the_key_comes_in() {
        for (provider, key_header, key_value) in [
            (Provider::OpenAi, "authorization", "Bearer sk-real"),
            (
                Provider::OpenAiCompatible,
                "authorization",
                "Bearer sk-real",
            ),
            (Provider::Anthropic, "x-api-key", "sk-real"),
            (Provider::AzureOpenAi, "api-key", "sk-real"),
            (Provider::Gemini, "x-goog-api-key", "sk-real"),
        ] {
            let mut h = client_headers();
            request_headers(&mut h, &upstream(provider));
            assert_eq!(
                h.get_all(key_header).iter().collect::<Vec<_>>(),
                [key_value]
            );
            for (name, value) in &h {
                assert!(
                    !value.as_bytes().starts_with(b"sk-strk")
                        && !value.as_bytes().ends_with(b"sk-strk-x"),
                    "{name} leaked"
                );
            }
            for gone in [
                "openai-project",
                "x-goog-user-project",
                "proxy-connection",
                "proxy-authorization",
                "cookie",
                "host",
                "connection",
                "x-secret-hop",
                "keep-alive",
                "te",
                "transfer-encoding",
                "upgrade",
                "content-length",
                "expect",
            ] {
                assert!(!h.contains_key(gone), "{gone} forwarded for {provider}");
            }
            let other_credentials = crate::credential::CREDENTIAL_HEADERS
                .iter()
                .filter(|c| **c != key_header)
                .count();
            assert_eq!(
                crate::credential::CREDENTIAL_HEADERS
                    .iter()
                    .filter(|c| h.contains_key(**c))
                    .count(),
                1,
                "only the key header, {other_credentials} others stripped"
            );
            assert_eq!(h["accept-encoding"], "identity");
            // Static headers override what the client sent.
            assert_eq!(
                h.get_all("openai-organization").iter().collect::<Vec<_>>(),
                ["org-1"]
            );
            assert_eq!(h["anthropic-version"], "2023-06-01");
            assert_eq!(h["user-agent"], "OpenAI/Python 1.0");
        }
    }

    #[test]
    fn the_lists_are_the_shared_ones() {
        let names = |l: &[HeaderName]| l.iter().map(|h| h.as_str().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(&CREDENTIALS), CREDENTIAL_HEADERS);
        assert_eq!(names(&HOP_BY_HOP), HOPS);
        assert_eq!(names(&SELECTORS), ACCOUNT_SELECTORS);
    }

    #[test]
    fn a_client_cannot_pick_the_project_billed() {
        let mut no_static = upstream(Provider::OpenAi);
        no_static.headers = Box::new([]);
        let mut h = client_headers();
        request_headers(&mut h, &no_static);
        for selector in ACCOUNT_SELECTORS {
            assert!(!h.contains_key(selector), "{selector} forwarded");
        }
    }

    #[test]
    fn response_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-internal"));
        h.insert("x-internal", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert("x-request-id", HeaderValue::from_static("req_1"));
        response_headers(&mut h);
        assert_eq!(h.len(), 2);
        assert!(h.contains_key("content-type") && h.contains_key("x-request-id"));
    }
}
