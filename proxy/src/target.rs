//! What a request may name: a path under the upstream's base URL, nothing
//! else. The scheme, host and port always come from the upstream record.
//!
//! Rejected: absolute-form (`GET http://host/…`) and authority-form
//! (`CONNECT host:443`) request targets, `OPTIONS *`, and paths that could
//! climb out of the upstream's base path once some server decodes them:
//! `.` / `..` segments (also percent-encoded, also double-encoded, also
//! `..;` as Java servers read it), encoded slashes and backslashes, raw
//! backslashes. A client never needs any of these to call an LLM API.

use http::{Method, Uri, Version};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsafeTarget {
    /// `GET http://host/path`: the client tried to pick the host.
    AbsoluteForm,
    /// `CONNECT host:port`: tunnelling is not a proxy feature here.
    Connect,
    /// The path does not start with `/` (`OPTIONS *`, or empty).
    NotOriginForm,
    /// A `.` or `..` segment, literal or encoded.
    DotSegment,
    /// `%2f`, `%5c` or `\`: a separator a server might decode later.
    EncodedSeparator,
    /// Percent-encoding nested deeper than [`DECODE_ROUNDS`]: no client
    /// writes that, and a server decoding once more might see a `..`.
    OverEncoded,
}

/// How many rounds of percent-decoding a path segment may need. Two would
/// do for any real client; past this the path is refused, not decoded on.
pub const DECODE_ROUNDS: usize = 4;

impl UnsafeTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            UnsafeTarget::AbsoluteForm => "absolute_form",
            UnsafeTarget::Connect => "connect",
            UnsafeTarget::NotOriginForm => "not_origin_form",
            UnsafeTarget::DotSegment => "dot_segment",
            UnsafeTarget::EncodedSeparator => "encoded_separator",
            UnsafeTarget::OverEncoded => "over_encoded",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            UnsafeTarget::AbsoluteForm => {
                "Request targets must be paths (origin-form); this proxy does not forward to hosts named by the client."
            }
            UnsafeTarget::Connect => {
                "CONNECT is not supported: this is an API proxy, not a tunnel."
            }
            UnsafeTarget::NotOriginForm => "The request path must start with '/'.",
            UnsafeTarget::DotSegment => "The request path must not contain '.' or '..' segments.",
            UnsafeTarget::EncodedSeparator => {
                "The request path must not contain backslashes or percent-encoded slashes."
            }
            UnsafeTarget::OverEncoded => "The request path is percent-encoded too many times over.",
        }
    }
}

/// Checks a request's method and target.
pub fn check(method: &Method, uri: &Uri, version: Version) -> Result<(), UnsafeTarget> {
    if method == Method::CONNECT {
        return Err(UnsafeTarget::Connect);
    }
    // HTTP/2 always carries :scheme and :authority, so the URI has them; the
    // proxy ignores them as it ignores Host. In HTTP/1 they only appear in
    // an absolute-form target.
    if version < Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some()) {
        return Err(UnsafeTarget::AbsoluteForm);
    }
    check_path(uri.path())
}

/// Checks a raw (still percent-encoded) path.
pub fn check_path(path: &str) -> Result<(), UnsafeTarget> {
    if !path.starts_with('/') {
        return Err(UnsafeTarget::NotOriginForm);
    }
    if path.contains('\\') {
        return Err(UnsafeTarget::EncodedSeparator);
    }
    for segment in path[1..].split('/') {
        if segment.contains('%') {
            let decoded = decode_fully(segment).ok_or(UnsafeTarget::OverEncoded)?;
            if decoded.contains('/') || decoded.contains('\\') {
                return Err(UnsafeTarget::EncodedSeparator);
            }
            if is_dots(&decoded) {
                return Err(UnsafeTarget::DotSegment);
            }
        } else if is_dots(segment) {
            return Err(UnsafeTarget::DotSegment);
        }
    }
    Ok(())
}

/// `.` or `..`, also with a `;params` tail (`..;/` reaches the parent in
/// servlet containers).
fn is_dots(segment: &str) -> bool {
    let name = segment.split(';').next().unwrap_or(segment);
    name == "." || name == ".."
}

/// Percent-decodes until nothing changes, so `%252e` is seen as `.` just
/// as a server decoding twice would; `None` if it still changes after
/// [`DECODE_ROUNDS`].
fn decode_fully(segment: &str) -> Option<String> {
    let mut s = segment.to_owned();
    for _ in 0..DECODE_ROUNDS {
        let next = decode_once(&s);
        if next == s {
            return Some(s);
        }
        s = next;
    }
    (decode_once(&s) == s).then_some(s)
}

/// Percent-decodes once (invalid escapes are kept as they are).
pub(crate) fn decode_once(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h1(method: Method, target: &str) -> Result<(), UnsafeTarget> {
        check(&method, &target.parse().unwrap(), Version::HTTP_11)
    }

    #[test]
    fn ordinary_api_paths_pass() {
        for p in [
            "/v1/chat/completions",
            "/openai/v1/chat/completions?x=1",
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            "/v1/messages",
            "/v1/files/file-abc.jsonl",
            "/v1/models/ft%3Agpt-4o%3Aacme",
            "/a/...b/..c/c..",
            "/",
        ] {
            assert_eq!(h1(Method::POST, p), Ok(()), "{p}");
        }
    }

    #[test]
    fn targets_naming_a_host_are_rejected() {
        assert_eq!(
            h1(Method::GET, "http://169.254.169.254/latest/meta-data"),
            Err(UnsafeTarget::AbsoluteForm)
        );
        assert_eq!(
            h1(Method::CONNECT, "evil.example:443"),
            Err(UnsafeTarget::Connect)
        );
        assert_eq!(h1(Method::OPTIONS, "*"), Err(UnsafeTarget::NotOriginForm));
        // HTTP/2 requests always carry scheme and authority; they are ignored.
        let h2: Uri = "https://proxy.example/v1/models".parse().unwrap();
        assert_eq!(check(&Method::GET, &h2, Version::HTTP_2), Ok(()));
        assert_eq!(
            check(&Method::CONNECT, &h2, Version::HTTP_2),
            Err(UnsafeTarget::Connect)
        );
    }

    #[test]
    fn dot_segments_in_every_spelling_are_rejected() {
        for p in [
            "/..",
            "/v1/../admin",
            "/v1/./models",
            "/v1/%2e%2e/admin",
            "/v1/%2E%2e/admin",
            "/v1/.%2e/admin",
            "/v1/%2e/admin",
            "/v1/%252e%252e/admin",
            "/v1/..;/admin",
            "/v1/..",
        ] {
            assert_eq!(check_path(p), Err(UnsafeTarget::DotSegment), "{p}");
        }
    }

    #[test]
    fn encoded_separators_and_backslashes_are_rejected() {
        for p in [
            "/v1%2f..%2fadmin",
            "/v1/%2F",
            "/v1/%5c..",
            "/v1\\..\\admin",
            "/v1/%255c",
        ] {
            assert_eq!(check_path(p), Err(UnsafeTarget::EncodedSeparator), "{p}");
        }
    }

    #[test]
    fn encoding_nested_past_the_rounds_is_refused() {
        // `.` encoded once, then `%` encoded over and over.
        let nested = |depth: usize| format!("/v1/%{}2e/admin", "25".repeat(depth));
        assert_eq!(
            check_path(&nested(DECODE_ROUNDS - 2)),
            Err(UnsafeTarget::DotSegment)
        );
        assert_eq!(
            check_path(&nested(DECODE_ROUNDS)),
            Err(UnsafeTarget::OverEncoded)
        );
        assert_eq!(check_path(&nested(12)), Err(UnsafeTarget::OverEncoded));
        assert_eq!(check_path("/v1/models/ft%253Agpt"), Ok(()));
    }

    proptest! {
        #[test]
        fn never_panics(p in "[/.%a-fA-F0-9;\\\\]{0,30}") {
            let _ = check_path(&p);
        }

        #[test]
        fn a_passing_path_has_no_dot_segment_after_decoding(p in "/[/.%2eEfF5cC;a]{0,20}") {
            if check_path(&p).is_ok() {
                let decoded = decode_fully(&p).expect("a passing path decodes fully");
                prop_assert!(!decoded.contains('\\'));
                for seg in decoded[1..].split('/') {
                    prop_assert!(!is_dots(seg), "{p} -> {decoded}");
                }
            }
        }
    }
}
