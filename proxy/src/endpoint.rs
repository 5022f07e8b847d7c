//! The endpoint policy: which method and path a token may call upstream.
//!
//! A token reaches its provider's inference endpoints (chat, completions,
//! responses, messages, count_tokens, embeddings, moderations, audio,
//! images, model lists) and nothing else, unless its StrakeToken or the
//! UpstreamKey opens more with `endpoints` (method + path glob). Files,
//! batches, fine-tunes, stored responses and vector stores are account-wide
//! on a shared key: one holder could read or delete another's, so they stay
//! closed until the platform team opens them.
//!
//! Organisation and admin APIs (OpenAI's `/v1/organization/…`, Anthropic's
//! `/v1/organizations/…`, `/v1/admin…`) open only to an allowance that
//! spells their segment out: a broad `/v1/**` does not reach them.
//!
//! Path globs: `*` matches within one non-empty segment, a `**` segment
//! matches any number of segments (none included). Paths are compared percent-decoded
//! once, as the upstream reads them; the `check_target` stage has already
//! refused encoded slashes and dot segments.

use std::borrow::Cow;

use http::Method;
use strake_crds::provider::ApiStyle;
use strake_crds::{EndpointAllowance, HttpMethod};

use crate::glob;

/// An allowance, checked and ready to match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowance {
    /// One bit per [`HttpMethod`], in [`HttpMethod::ALL`]'s order.
    methods: u8,
    path: Box<str>,
}

impl Allowance {
    /// Checks an allowance as the CRD schema does, for file mode and for
    /// records that did not pass through the API server.
    pub fn new(allowance: &EndpointAllowance) -> Result<Allowance, String> {
        let path = allowance.path.as_str();
        if !path.starts_with('/') {
            return Err(format!(
                "endpoints: path {path:?} must start with '/' (e.g. /v1/files)"
            ));
        }
        if path.contains(['?', '#']) || path.contains(char::is_whitespace) {
            return Err(format!(
                "endpoints: path {path:?} must be a path only: no query, fragment or spaces"
            ));
        }
        if allowance.methods.is_empty() {
            return Err(format!(
                "endpoints: path {path:?} lists no methods (e.g. methods: [GET])"
            ));
        }
        Ok(Allowance {
            methods: allowance
                .methods
                .iter()
                .fold(0, |bits, m| bits | method_bit(*m)),
            path: path.into(),
        })
    }

    /// The methods it allows, as the spec names them.
    pub fn method_names(&self) -> Vec<&'static str> {
        HttpMethod::ALL
            .iter()
            .filter(|m| self.methods & method_bit(**m) != 0)
            .map(|m| m.as_str())
            .collect()
    }

    /// The path glob.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn allows(&self, method: HttpMethod, path: &str) -> bool {
        self.methods & method_bit(method) != 0 && path_matches(&self.path, path)
    }

    /// Whether the glob names `root` itself rather than reaching it
    /// through a wildcard.
    fn names(&self, root: &str) -> bool {
        let literal = self.path.split('*').next().unwrap_or_default();
        literal
            .strip_prefix(root)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

fn method_bit(m: HttpMethod) -> u8 {
    let i = HttpMethod::ALL
        .iter()
        .position(|x| *x == m)
        .expect("ALL lists every method");
    1 << i
}

fn http_method(m: &Method) -> Option<HttpMethod> {
    HttpMethod::ALL
        .into_iter()
        .find(|x| x.as_str() == m.as_str())
}

/// Why a request's endpoint is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Neither an inference endpoint nor allowed by `endpoints`.
    NotAllowed,
    /// An organisation or admin API that no allowance names.
    Admin,
}

/// Roots of organisation and admin APIs.
const ADMIN_ROOTS: [&str; 3] = ["/v1/organization", "/v1/organizations", "/v1/admin"];

use HttpMethod::{Get, Post};

const OPENAI: &[(HttpMethod, &str)] = &[
    (Post, "/v1/chat/completions"),
    (Post, "/v1/responses"),
    (Post, "/v1/completions"),
    (Post, "/v1/embeddings"),
    (Post, "/v1/responses/input_tokens"),
    (Post, "/v1/moderations"),
    (Post, "/v1/audio/transcriptions"),
    (Post, "/v1/audio/translations"),
    (Post, "/v1/audio/speech"),
    (Post, "/v1/images/generations"),
    (Post, "/v1/images/edits"),
    (Post, "/v1/images/variations"),
    (Get, "/v1/models"),
    (Get, "/v1/models/*"),
];

const ANTHROPIC: &[(HttpMethod, &str)] = &[
    (Post, "/v1/messages"),
    (Post, "/v1/messages/count_tokens"),
    (Post, "/v1/complete"),
    (Get, "/v1/models"),
    (Get, "/v1/models/*"),
];

const AZURE: &[(HttpMethod, &str)] = &[
    (Post, "/openai/deployments/*/chat/completions"),
    (Post, "/openai/deployments/*/completions"),
    (Post, "/openai/deployments/*/embeddings"),
    (Post, "/openai/deployments/*/audio/transcriptions"),
    (Post, "/openai/deployments/*/audio/translations"),
    (Post, "/openai/deployments/*/audio/speech"),
    (Post, "/openai/deployments/*/images/generations"),
    (Post, "/openai/v1/chat/completions"),
    (Post, "/openai/v1/responses"),
    (Post, "/openai/v1/completions"),
    (Post, "/openai/v1/embeddings"),
    (Get, "/openai/v1/models"),
    (Get, "/openai/models"),
];

const GEMINI: &[(HttpMethod, &str)] = &[
    (Post, "/v1beta/models/*:generateContent"),
    (Post, "/v1beta/models/*:streamGenerateContent"),
    (Post, "/v1beta/models/*:countTokens"),
    (Post, "/v1beta/models/*:embedContent"),
    (Post, "/v1beta/models/*:batchEmbedContents"),
    (Post, "/v1beta/tunedModels/*:generateContent"),
    (Post, "/v1beta/tunedModels/*:streamGenerateContent"),
    (Post, "/v1/models/*:generateContent"),
    (Post, "/v1/models/*:streamGenerateContent"),
    (Post, "/v1/models/*:countTokens"),
    (Post, "/v1/models/*:embedContent"),
    (Post, "/v1/models/*:batchEmbedContents"),
    (Get, "/v1beta/models"),
    (Get, "/v1beta/models/*"),
    (Get, "/v1/models"),
    (Get, "/v1/models/*"),
];

/// The inference endpoints open to every token of an upstream in `style`.
pub fn inference(style: ApiStyle) -> &'static [(HttpMethod, &'static str)] {
    match style {
        ApiStyle::OpenAi => OPENAI,
        ApiStyle::Anthropic => ANTHROPIC,
        ApiStyle::Azure => AZURE,
        ApiStyle::Gemini => GEMINI,
    }
}

/// Decides whether `method path` (the routed path, still percent-encoded)
/// may go to an upstream in `style`, given the upstream's and the token's
/// allowances.
pub fn authorize(
    style: ApiStyle,
    method: &Method,
    path: &str,
    upstream: &[Allowance],
    token: &[Allowance],
) -> Result<(), Refusal> {
    // TRACE, CONNECT and invented methods are never allowed.
    let Some(method) = http_method(method) else {
        return Err(Refusal::NotAllowed);
    };
    let path: Cow<'_, str> = if path.contains('%') {
        Cow::Owned(crate::target::decode_once(path))
    } else {
        Cow::Borrowed(path)
    };
    let mut allowances = upstream.iter().chain(token);
    if let Some(root) = ADMIN_ROOTS.iter().find(|r| {
        path.strip_prefix(**r)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }) {
        return if allowances.any(|a| a.names(root) && a.allows(method, &path)) {
            Ok(())
        } else {
            Err(Refusal::Admin)
        };
    }
    let inference = inference(style)
        .iter()
        .any(|(m, p)| *m == method && path_matches(p, &path));
    if inference || allowances.any(|a| a.allows(method, &path)) {
        Ok(())
    } else {
        Err(Refusal::NotAllowed)
    }
}

/// Whether `path` matches the glob `pattern`, segment by segment: the
/// classic wildcard algorithm with `**` segments as the stars (resuming
/// after the most recent one), and [`glob::matches`] within a segment.
fn path_matches(pattern: &str, path: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == path;
    }
    let mut p = pattern.split('/');
    let mut t = path.split('/');
    // After the latest `**`: the pattern that follows it, and the text
    // from where it stops absorbing segments.
    let mut star = None;
    loop {
        let mut t_next = t.clone();
        let Some(segment) = t_next.next() else {
            break;
        };
        let mut p_next = p.clone();
        match p_next.next() {
            Some("**") => {
                star = Some((p_next.clone(), t.clone()));
                p = p_next;
                continue;
            }
            // A wildcard never matches an empty segment (`//`).
            Some(glob_segment)
                if segment.is_empty() == glob_segment.is_empty()
                    && glob::matches(glob_segment, segment) =>
            {
                p = p_next;
                t = t_next;
                continue;
            }
            _ => {}
        }
        let Some((after_star, absorbed)) = &mut star else {
            return false;
        };
        absorbed.next();
        p = after_star.clone();
        t = absorbed.clone();
    }
    p.all(|s| s == "**")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(methods: &[HttpMethod], path: &str) -> Allowance {
        Allowance::new(&EndpointAllowance {
            methods: methods.to_vec(),
            path: path.into(),
        })
        .unwrap()
    }

    fn check(
        style: ApiStyle,
        method: &str,
        path: &str,
        token: &[Allowance],
    ) -> Result<(), Refusal> {
        authorize(style, &method.parse().unwrap(), path, &[], token)
    }

    #[test]
    fn inference_endpoints_are_open_by_default() {
        for (style, method, path) in [
            (ApiStyle::OpenAi, "POST", "/v1/chat/completions"),
            (ApiStyle::OpenAi, "POST", "/v1/responses"),
            (ApiStyle::OpenAi, "POST", "/v1/embeddings"),
            (ApiStyle::OpenAi, "POST", "/v1/audio/transcriptions"),
            (ApiStyle::OpenAi, "GET", "/v1/models"),
            (ApiStyle::OpenAi, "GET", "/v1/models/gpt-4o"),
            (ApiStyle::OpenAi, "GET", "/v1/models/ft%3Agpt-4o%3Aacme"),
            (ApiStyle::Anthropic, "POST", "/v1/messages"),
            (ApiStyle::Anthropic, "POST", "/v1/messages/count_tokens"),
            (ApiStyle::Anthropic, "GET", "/v1/models"),
            (
                ApiStyle::Azure,
                "POST",
                "/openai/deployments/gpt-4o/chat/completions",
            ),
            (ApiStyle::Azure, "POST", "/openai/v1/chat/completions"),
            (
                ApiStyle::Gemini,
                "POST",
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            ),
            (
                ApiStyle::Gemini,
                "POST",
                "/v1/models/text-embedding-004:embedContent",
            ),
            (ApiStyle::Gemini, "GET", "/v1beta/models"),
        ] {
            assert_eq!(check(style, method, path, &[]), Ok(()), "{method} {path}");
        }
    }

    #[test]
    fn account_wide_endpoints_and_other_methods_are_closed_by_default() {
        for (style, method, path) in [
            (ApiStyle::OpenAi, "GET", "/v1/files"),
            (ApiStyle::OpenAi, "DELETE", "/v1/files/file-abc"),
            (ApiStyle::OpenAi, "GET", "/v1/files/file-abc/content"),
            (ApiStyle::OpenAi, "POST", "/v1/fine_tuning/jobs"),
            (ApiStyle::OpenAi, "GET", "/v1/batches"),
            (ApiStyle::OpenAi, "GET", "/v1/responses/resp_123"),
            (ApiStyle::OpenAi, "GET", "/v1/chat/completions"),
            (ApiStyle::OpenAi, "DELETE", "/v1/models/ft:gpt-4o:acme"),
            (ApiStyle::OpenAi, "TRACE", "/v1/chat/completions"),
            (ApiStyle::OpenAi, "FOO", "/v1/chat/completions"),
            (ApiStyle::OpenAi, "POST", "/v1/chat/completions/"),
            (ApiStyle::OpenAi, "POST", "/v1//chat/completions"),
            (ApiStyle::OpenAi, "POST", "/v1/messages"),
            (ApiStyle::Anthropic, "POST", "/v1/messages/batches"),
            (ApiStyle::Gemini, "GET", "/v1beta/files"),
            (
                ApiStyle::Gemini,
                "POST",
                "/v1beta/models//gemini-pro:generateContent",
            ),
            (
                ApiStyle::Azure,
                "POST",
                "/openai/deployments//gpt-4o/chat/completions",
            ),
        ] {
            assert_eq!(
                check(style, method, path, &[]),
                Err(Refusal::NotAllowed),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn admin_apis_open_only_when_named() {
        let broad = [allow(&HttpMethod::ALL, "/v1/**"), allow(&[Get], "/**")];
        for path in [
            "/v1/organization/api_keys",
            "/v1/organization/admin_api_keys",
            "/v1/organizations/users",
            "/v1/organization",
            "/v1/admin",
            "/v1/%6Frganization/api_keys",
        ] {
            assert_eq!(
                check(ApiStyle::OpenAi, "GET", path, &broad),
                Err(Refusal::Admin),
                "{path}"
            );
        }
        let named = [allow(&[Get], "/v1/organization/**")];
        assert_eq!(
            check(ApiStyle::OpenAi, "GET", "/v1/organization/api_keys", &named),
            Ok(())
        );
        assert_eq!(
            check(
                ApiStyle::OpenAi,
                "DELETE",
                "/v1/organization/api_keys/k",
                &named
            ),
            Err(Refusal::Admin)
        );
        // Naming one admin root does not open its longer sibling.
        let named = [allow(&[Get], "/v1/organization*")];
        assert_eq!(
            check(
                ApiStyle::Anthropic,
                "GET",
                "/v1/organizations/users",
                &named
            ),
            Err(Refusal::Admin)
        );
        // The broad allowance still opens everything else.
        assert_eq!(check(ApiStyle::OpenAi, "GET", "/v1/files", &broad), Ok(()));
    }

    #[test]
    fn allowances_widen_by_method_and_glob_from_token_or_upstream() {
        let files = allow(&[Get, HttpMethod::Delete], "/v1/files/*");
        let list = allow(&[Get], "/v1/files");
        let m = |s: &str| s.parse::<Method>().unwrap();
        let open = |method: &str, path: &str, upstream: &[Allowance], token: &[Allowance]| {
            authorize(ApiStyle::OpenAi, &m(method), path, upstream, token).is_ok()
        };
        assert!(open(
            "DELETE",
            "/v1/files/file-abc",
            &[],
            std::slice::from_ref(&files)
        ));
        assert!(open(
            "DELETE",
            "/v1/files/file-abc",
            std::slice::from_ref(&files),
            &[]
        ));
        assert!(!open(
            "POST",
            "/v1/files/file-abc",
            std::slice::from_ref(&files),
            &[]
        ));
        assert!(!open("GET", "/v1/files", std::slice::from_ref(&files), &[]));
        assert!(!open(
            "GET",
            "/v1/files/file-abc/content",
            std::slice::from_ref(&files),
            &[]
        ));
        assert!(open(
            "GET",
            "/v1/files",
            std::slice::from_ref(&files),
            &[list]
        ));
        // Percent-encoding changes nothing: the upstream decodes it too.
        assert!(open("GET", "/v1/fil%65s/file-abc", &[files], &[]));
    }

    #[test]
    fn path_globs() {
        assert!(path_matches("/v1/files", "/v1/files"));
        assert!(!path_matches("/v1/files", "/v1/files/x"));
        assert!(path_matches("/v1/files/*", "/v1/files/x"));
        assert!(!path_matches("/v1/files/*", "/v1/files/x/content"));
        assert!(path_matches("/v1/files/*/content", "/v1/files/x/content"));
        assert!(path_matches("/v1/batches/**", "/v1/batches"));
        assert!(path_matches("/v1/batches/**", "/v1/batches/b/cancel"));
        assert!(!path_matches("/v1/batches/**", "/v1/batchesX"));
        assert!(path_matches("/**/content", "/v1/files/x/content"));
        assert!(!path_matches("/**/content", "/v1/files/x/contents"));
        assert!(path_matches("/v1/**/a/**/b", "/v1/x/a/y/z/b"));
        assert!(!path_matches("/v1/**/a/**/b", "/v1/x/a/y/z/c"));
        assert!(path_matches(
            "/v1beta/models/*:countTokens",
            "/v1beta/models/g:countTokens"
        ));
        assert!(path_matches("/v1/files*", "/v1/files-x"));
        assert!(!path_matches("/v1/files/*", "/v1/files/"));
        assert!(!path_matches(
            "/openai/deployments/*/embeddings",
            "/openai/deployments//embeddings"
        ));
    }

    #[test]
    fn invalid_allowances_are_explained() {
        let bad = |methods: Vec<HttpMethod>, path: &str| {
            Allowance::new(&EndpointAllowance {
                methods,
                path: path.into(),
            })
            .unwrap_err()
        };
        assert!(bad(vec![Get], "v1/files").contains("must start with '/'"));
        assert!(bad(vec![Get], "/v1/files?purpose=x").contains("no query"));
        assert!(bad(vec![], "/v1/files").contains("no methods"));
    }
}
