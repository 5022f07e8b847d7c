//! The credential a client presents, wherever its SDK puts it.
//!
//! | header | sent by |
//! | --- | --- |
//! | `Authorization: Bearer …` | OpenAI SDKs, Anthropic SDKs with `ANTHROPIC_AUTH_TOKEN`, Claude Code, curl |
//! | `x-api-key` | Anthropic SDKs with `ANTHROPIC_API_KEY` |
//! | `api-key` | Azure OpenAI SDKs |
//! | `x-goog-api-key` | Gemini SDKs |
//! | `?key=` query parameter | Gemini REST examples |
//!
//! Every one of them is removed before the request goes upstream (see
//! [`crate::rewrite`]), whether or not it was the one used. The query
//! parameter's name is read percent-decoded (`?%6Bey=`), as Google's
//! servers read it. The names live in [`strake_crds::headers`].
//!
//! A credential shaped like a JWT ([`crate::federated::looks_like_jwt`]) in
//! any of these places is a federated identity, verified by
//! [`crate::federated`]; a Strake token beside it still wins.

use http::HeaderMap;
use http::header::AUTHORIZATION;
use strake_crds::token::{self, PREFIX, TokenError};

pub use strake_crds::headers::CREDENTIAL_HEADERS;
use strake_crds::headers::CREDENTIAL_QUERY_PARAM;

/// Where the credential was found. Also a hint of the client's API style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Bearer,
    XApiKey,
    ApiKey,
    XGoogApiKey,
    QueryKey,
}

/// What kind of credential was presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A minted Strake token (`sk-strk-…`), checked offline.
    Minted,
    /// An OIDC token, still to be verified.
    Jwt,
}

/// Why no usable credential was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialError {
    /// No credential at all.
    Missing,
    /// Something was presented, but it is not a well-formed Strake token
    /// (wrong prefix, length, alphabet or checksum).
    Malformed(TokenError),
}

/// Finds the client's credential. Candidates are taken in the table's
/// order; the first that carries the Strake prefix wins, so a client that
/// sends its token in one header and something else in another still works.
/// The token is then checked offline ([`token::check`]) before any lookup.
/// Without one, the first JWT-shaped candidate is the credential.
pub fn find<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<(&'a str, Source, Kind), CredentialError> {
    let mut first: Option<&str> = None;
    let mut jwt: Option<(&str, Source)> = None;
    for (candidate, source) in candidates(headers, query) {
        if candidate.starts_with(PREFIX) {
            return token::check(candidate)
                .map(|()| (candidate, source, Kind::Minted))
                .map_err(CredentialError::Malformed);
        }
        if jwt.is_none() && crate::federated::looks_like_jwt(candidate) {
            jwt = Some((candidate, source));
        }
        first.get_or_insert(candidate);
    }
    if let Some((candidate, source)) = jwt {
        return Ok((candidate, source, Kind::Jwt));
    }
    match first {
        Some(other) => Err(CredentialError::Malformed(
            token::check(other).expect_err("a value without the prefix never checks"),
        )),
        None => Err(CredentialError::Missing),
    }
}

fn candidates<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> impl Iterator<Item = (&'a str, Source)> + 'a {
    let bearer = headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|v| bearer_token(v.to_str().ok()?))
        .map(|t| (t, Source::Bearer));
    let plain = [
        ("x-api-key", Source::XApiKey),
        ("api-key", Source::ApiKey),
        ("x-goog-api-key", Source::XGoogApiKey),
    ]
    .into_iter()
    .flat_map(move |(name, source)| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(move |v| (v, source))
    });
    let query = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|pair| is_key_param(pair))
        .filter_map(|pair| Some(pair.split_once('=')?.1))
        .filter(|v| !v.is_empty())
        .map(|v| (v, Source::QueryKey));
    bearer.chain(plain).chain(query)
}

/// The credential of an `Authorization: Bearer <credential>` value (the
/// scheme is case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let rest = rest.trim();
    (!rest.is_empty()).then_some(rest)
}

/// Whether a query pair (`name=value` or `name`) is the credential
/// parameter: its name, percent-decoded once as the provider decodes it,
/// is `key`. Any case, so no spelling of it is forwarded.
pub fn is_key_param(pair: &str) -> bool {
    let name = pair.split_once('=').map_or(pair, |(name, _)| name);
    if name.contains('%') {
        crate::target::decode_once(name).eq_ignore_ascii_case(CREDENTIAL_QUERY_PARAM)
    } else {
        name.eq_ignore_ascii_case(CREDENTIAL_QUERY_PARAM)
    }
}

/// The query string without any `key=` parameter, or `None` when nothing
/// is left. Applied to every forwarded request: a `key` in the query is a
/// credential (Gemini's), never something the upstream should see from a
/// client.
pub fn strip_query_key(query: &str) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    let is_key = is_key_param;
    if !query.split('&').any(is_key) {
        return (!query.is_empty()).then_some(Cow::Borrowed(query));
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !is_key(p))
        .collect();
    (!kept.is_empty()).then(|| Cow::Owned(kept.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use strake_crds::token::Token;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn every_supported_place() {
        let t = Token::mint();
        let tok = t.expose();
        let bearer = format!("Bearer {tok}");
        let cases = [
            (headers(&[("authorization", &bearer)]), None, Source::Bearer),
            (
                headers(&[("authorization", &format!("bearer   {tok} "))]),
                None,
                Source::Bearer,
            ),
            (headers(&[("x-api-key", tok)]), None, Source::XApiKey),
            (headers(&[("api-key", tok)]), None, Source::ApiKey),
            (
                headers(&[("x-goog-api-key", tok)]),
                None,
                Source::XGoogApiKey,
            ),
        ];
        for (h, q, source) in cases {
            assert_eq!(find(&h, q), Ok((tok, source, Kind::Minted)));
        }
        let q = format!("alt=sse&key={tok}");
        assert_eq!(
            find(&HeaderMap::new(), Some(&q)),
            Ok((tok, Source::QueryKey, Kind::Minted))
        );
    }

    #[test]
    fn the_strake_token_wins_over_other_credentials() {
        let t = Token::mint();
        // An SDK that also sends some other key (say a stale OPENAI_API_KEY).
        let h = headers(&[
            ("authorization", "Bearer sk-proj-something"),
            ("x-api-key", t.expose()),
        ]);
        assert_eq!(
            find(&h, None),
            Ok((t.expose(), Source::XApiKey, Kind::Minted))
        );
    }

    #[test]
    fn a_jwt_in_any_place_is_a_federated_credential_and_a_strake_token_still_wins() {
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL2kifQ.c2ln";
        let bearer = format!("Bearer {jwt}");
        for (name, value, source) in [
            ("authorization", bearer.as_str(), Source::Bearer),
            ("x-api-key", jwt, Source::XApiKey),
            ("api-key", jwt, Source::ApiKey),
            ("x-goog-api-key", jwt, Source::XGoogApiKey),
        ] {
            assert_eq!(
                find(&headers(&[(name, value)]), None),
                Ok((jwt, source, Kind::Jwt))
            );
        }
        let t = Token::mint();
        let both = headers(&[("authorization", &bearer), ("x-api-key", t.expose())]);
        assert_eq!(
            find(&both, None),
            Ok((t.expose(), Source::XApiKey, Kind::Minted))
        );
        // Two dots are not enough: a provider key is not read as a JWT.
        assert_eq!(
            find(&headers(&[("x-api-key", "sk-proj-a.b.c")]), None),
            Err(CredentialError::Malformed(TokenError::Prefix))
        );
    }

    #[test]
    fn missing_and_malformed() {
        assert_eq!(find(&HeaderMap::new(), None), Err(CredentialError::Missing));
        assert_eq!(
            find(&headers(&[("authorization", "Basic abc")]), None),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            find(
                &headers(&[("authorization", "Bearer sk-proj-real-key")]),
                None
            ),
            Err(CredentialError::Malformed(TokenError::Prefix))
        );
        let t = Token::mint();
        let last = if t.expose().ends_with('x') { 'y' } else { 'x' };
        let typo = format!("{}{last}", &t.expose()[..t.expose().len() - 1]);
        assert!(matches!(
            find(&headers(&[("x-api-key", &typo)]), None),
            Err(CredentialError::Malformed(
                TokenError::Checksum | TokenError::Alphabet
            ))
        ));
        assert_eq!(
            find(&headers(&[("x-api-key", "sk-strk-short")]), None),
            Err(CredentialError::Malformed(TokenError::Length))
        );
    }

    #[test]
    fn query_key_is_always_stripped() {
        assert_eq!(
            strip_query_key("alt=sse&key=abc").as_deref(),
            Some("alt=sse")
        );
        assert_eq!(strip_query_key("key=abc").as_deref(), None);
        assert_eq!(strip_query_key("key").as_deref(), None);
        assert_eq!(
            strip_query_key("a=1&key=x&b=2&key=y").as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(
            strip_query_key("monkey=1&keys=2").as_deref(),
            Some("monkey=1&keys=2")
        );
        assert_eq!(
            strip_query_key("api-version=2024-02-01").as_deref(),
            Some("api-version=2024-02-01")
        );
        assert_eq!(strip_query_key("").as_deref(), None);
        // Encoded or upper-case, the name is still `key` to the provider.
        assert_eq!(
            strip_query_key("%6Bey=abc&alt=sse&KEY=d&k%65y").as_deref(),
            Some("alt=sse")
        );
        assert_eq!(strip_query_key("%6Beys=1").as_deref(), Some("%6Beys=1"));
    }

    #[test]
    fn an_encoded_key_parameter_is_a_credential() {
        let t = Token::mint();
        let q = format!("alt=sse&%6Bey={}", t.expose());
        assert_eq!(
            find(&HeaderMap::new(), Some(&q)),
            Ok((t.expose(), Source::QueryKey, Kind::Minted))
        );
    }
}
