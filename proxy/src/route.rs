//! Which upstream a request goes to, and which model it asks for.
//!
//! 1. `/<upstream-name>/…`: a path prefix naming one of the token's
//!    upstreams selects it explicitly and is stripped.
//! 2. Otherwise a token with one upstream sends everything there.
//! 3. Otherwise the request's API style picks the upstream whose provider
//!    speaks it, so one base URL serves Claude Code and Cursor alike.
//!
//! Exception to 1: `/openai/deployments/…` is Azure's own path shape and is
//! never read as a prefix, since `openai` is a likely upstream name.

use std::borrow::Cow;

use http::HeaderMap;
use serde::Deserialize;
use strake_crds::provider::{ApiStyle, Provider};

use crate::json;

/// The API style a request is written in, from its path and headers.
///
/// Paths are the stronger signal (`/v1/messages` is Anthropic whatever the
/// headers say); then provider-specific headers; everything else is
/// OpenAI-style, the lingua franca of "OpenAI-compatible" tools.
pub fn detect_style(path: &str, headers: &HeaderMap, query: Option<&str>) -> ApiStyle {
    if path.starts_with("/openai/deployments/") || path == "/openai/deployments" {
        return ApiStyle::Azure;
    }
    if path.starts_with("/v1beta/") || path.starts_with("/v1alpha/") {
        return ApiStyle::Gemini;
    }
    if path == "/v1/messages" || path.starts_with("/v1/messages/") {
        return ApiStyle::Anthropic;
    }
    if headers.contains_key("anthropic-version") {
        return ApiStyle::Anthropic;
    }
    if headers.contains_key("api-key") {
        return ApiStyle::Azure;
    }
    if headers.contains_key("x-goog-api-key")
        || query.is_some_and(|q| q.split('&').any(crate::credential::is_key_param))
    {
        return ApiStyle::Gemini;
    }
    ApiStyle::OpenAi
}

/// Human name of a style, for error messages.
pub fn style_name(style: ApiStyle) -> &'static str {
    match style {
        ApiStyle::OpenAi => "OpenAI-style",
        ApiStyle::Anthropic => "Anthropic",
        ApiStyle::Azure => "Azure OpenAI",
        ApiStyle::Gemini => "Gemini",
    }
}

/// One of the token's upstreams, as routing sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The name a client uses as a path prefix ([`strake_crds::contract::route_name`]).
    pub route: &'a str,
    /// `None`: the token names an upstream the proxy does not know (yet).
    pub provider: Option<Provider>,
}

/// The routing decision: which candidate, and the path to forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Routed<'p> {
    pub index: usize,
    pub path: &'p str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// None of the token's upstreams speaks this style.
    NoneForStyle {
        style: ApiStyle,
        available: Vec<String>,
    },
    /// Several do; the client must pick one with a prefix.
    Ambiguous { style: ApiStyle, names: Vec<String> },
    /// The chosen upstream is not in the proxy's table (an UpstreamKey not
    /// published yet, or a file config naming one that failed).
    NotConfigured { name: String },
}

/// Routes a request for a token whose upstreams are `candidates`.
pub fn route<'p>(
    path: &'p str,
    style: ApiStyle,
    candidates: &[Candidate<'_>],
) -> Result<Routed<'p>, RouteError> {
    if let Some((first, rest)) = split_prefix(path)
        && !(first == "openai" && (rest == "/deployments" || rest.starts_with("/deployments/")))
        && let Some(index) = candidates.iter().position(|c| c.route == first)
    {
        return checked(candidates, Routed { index, path: rest });
    }
    if candidates.len() == 1 {
        return checked(candidates, Routed { index: 0, path });
    }
    let matching: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].provider.is_some_and(|p| p.style() == style))
        .collect();
    match matching[..] {
        [index] => Ok(Routed { index, path }),
        [] => match candidates.iter().find(|c| c.provider.is_none()) {
            Some(missing) => Err(RouteError::NotConfigured {
                name: missing.route.to_owned(),
            }),
            None => Err(RouteError::NoneForStyle {
                style,
                available: candidates.iter().map(|c| c.route.to_owned()).collect(),
            }),
        },
        _ => Err(RouteError::Ambiguous {
            style,
            names: matching
                .iter()
                .map(|&i| candidates[i].route.to_owned())
                .collect(),
        }),
    }
}

fn checked<'p>(candidates: &[Candidate<'_>], r: Routed<'p>) -> Result<Routed<'p>, RouteError> {
    match candidates[r.index].provider {
        Some(_) => Ok(r),
        None => Err(RouteError::NotConfigured {
            name: candidates[r.index].route.to_owned(),
        }),
    }
}

/// `/name/rest…` → (`name`, `/rest…`); `/name` → (`name`, `/`).
fn split_prefix(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix('/')?;
    match after.find('/') {
        Some(i) => Some((&after[..i], &after[i..])),
        None if !after.is_empty() => Some((after, "/")),
        None => None,
    }
}

/// The model named in the path: Azure's deployment, Gemini's model.
/// Percent-decoded, as the upstream will read it.
pub fn path_model(style: ApiStyle, path: &str) -> Option<Cow<'_, str>> {
    let raw = match style {
        ApiStyle::Azure => path
            .strip_prefix("/openai/deployments/")?
            .split('/')
            .next()?,
        ApiStyle::Gemini => {
            // /v1beta/models/{model}:{action}, /v1/tunedModels/{model}:…
            let mut segments = path.split('/').skip(1);
            segments.next()?;
            match segments.next()? {
                "models" | "tunedModels" => {}
                _ => return None,
            }
            let seg = segments.next()?;
            seg.split(':').next()?
        }
        ApiStyle::OpenAi | ApiStyle::Anthropic => return None,
    };
    if raw.is_empty() {
        None
    } else if raw.contains('%') {
        Some(Cow::Owned(crate::target::decode_once(raw)))
    } else {
        Some(Cow::Borrowed(raw))
    }
}

/// What a request body says about the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyModel<'a> {
    Named(Cow<'a, str>),
    /// The body names no model (a file upload, `GET /v1/models`, …).
    Absent,
    /// The body looks like it names one but cannot be read unambiguously
    /// (broken JSON, `model` twice, not a string): a token restricted to
    /// some models must not get through on a parsing disagreement.
    Unreadable,
}

/// The model a request body names, read for a decision (a token limited
/// to some models): the `model` field of a JSON object, or the one `model`
/// part of a multipart form (audio transcription uploads). Whatever the
/// proxy cannot read as the upstream will is [`BodyModel::Unreadable`]: a
/// body under a `Content-Encoding` (the proxy decodes none), a body that
/// is not a UTF-8 JSON object (a byte-order mark, UTF-16), a form that
/// does not parse with its declared boundary (JSON sent as multipart).
pub fn body_model<'a>(
    content_type: Option<&[u8]>,
    content_encoding: Option<&[u8]>,
    body: &'a [u8],
) -> BodyModel<'a> {
    #[derive(Deserialize)]
    struct Model<'a> {
        #[serde(borrow, default)]
        model: Option<Cow<'a, str>>,
    }
    if body.is_empty() {
        return BodyModel::Absent;
    }
    if content_encoding.is_some_and(|e| !e.trim_ascii().eq_ignore_ascii_case(b"identity")) {
        return BodyModel::Unreadable;
    }
    if let Some(ct) = content_type.filter(|ct| is_multipart(Some(ct))) {
        return match boundary(ct) {
            Some(b) => strict_multipart_model(b, body),
            None => BodyModel::Unreadable,
        };
    }
    if body.trim_ascii_start().first() != Some(&b'{') {
        return BodyModel::Unreadable;
    }
    match serde_json::from_slice::<Model<'_>>(body) {
        Ok(Model { model: Some(m) }) => BodyModel::Named(m),
        Ok(Model { model: None }) => BodyModel::Absent,
        // Broken JSON, and duplicate `model` keys: serde rejects them.
        Err(_) => BodyModel::Unreadable,
    }
}

/// Whether a path has an empty segment (`//`), which servers collapse:
/// `/v1beta/models//gemini-pro:generateContent` names `gemini-pro` to the
/// upstream but no model to [`path_model`].
pub fn has_empty_segment(path: &str) -> bool {
    path.contains("//")
}

/// The `boundary` parameter of a multipart content type.
fn boundary(content_type: &[u8]) -> Option<&[u8]> {
    let ct = std::str::from_utf8(content_type).ok()?;
    let value = ct.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then_some(value.trim())
    })?;
    let value = match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => value,
    };
    // RFC 2046: 1 to 70 characters.
    (1..=70).contains(&value.len()).then_some(value.as_bytes())
}

/// The `model` part of a form, parsed by its boundary: every part must
/// have a readable `name`, at most one may be `model`, and its value must
/// be plain text.
fn strict_multipart_model<'a>(boundary: &[u8], body: &'a [u8]) -> BodyModel<'a> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    // The first delimiter may open the body or follow a preamble line.
    let Some(first) = find(body, &delimiter).filter(|&at| at == 0 || body[..at].ends_with(b"\r\n"))
    else {
        return BodyModel::Unreadable;
    };
    let mut rest = &body[first + delimiter.len()..];
    let mut next_delimiter = b"\r\n".to_vec();
    next_delimiter.extend_from_slice(&delimiter);
    let mut model = None;
    loop {
        if rest.starts_with(b"--") {
            break; // the closing delimiter
        }
        let Some(part) = rest.strip_prefix(b"\r\n") else {
            return BodyModel::Unreadable;
        };
        let Some(end) = find(part, &next_delimiter) else {
            return BodyModel::Unreadable; // no closing delimiter
        };
        let (part, after) = (&part[..end], &part[end + next_delimiter.len()..]);
        rest = after;
        let Some(head_end) = find(part, b"\r\n\r\n") else {
            return BodyModel::Unreadable;
        };
        let (head, value) = (&part[..head_end], &part[head_end + 4..]);
        let Some(name) = part_name(head) else {
            return BodyModel::Unreadable;
        };
        if name != "model" {
            continue;
        }
        let plain = std::str::from_utf8(value)
            .ok()
            .filter(|v| v.trim() == *v && !v.is_empty());
        match (model, plain) {
            (None, Some(v)) => model = Some(v),
            _ => return BodyModel::Unreadable,
        }
    }
    model.map_or(BodyModel::Absent, |m| BodyModel::Named(Cow::Borrowed(m)))
}

/// The `name` of a form part, from its `Content-Disposition: form-data`
/// header; `None` when it cannot be read for certain (no such header, two
/// of them, an encoded `name*`, a `Content-Transfer-Encoding`).
fn part_name(head: &[u8]) -> Option<&str> {
    let head = std::str::from_utf8(head).ok()?;
    let mut name = None;
    for line in head.split("\r\n") {
        let (field, value) = line.split_once(':')?;
        let field = field.trim();
        if field.eq_ignore_ascii_case("content-transfer-encoding") {
            return None;
        }
        if !field.eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        if name.is_some() {
            return None;
        }
        let mut params = value.split(';');
        if !params.next()?.trim().eq_ignore_ascii_case("form-data") {
            return None;
        }
        for param in params {
            let (key, v) = param.split_once('=')?;
            match key.trim() {
                k if k.eq_ignore_ascii_case("name") => {
                    let v = v.trim();
                    let v = match v.strip_prefix('"') {
                        Some(q) => q.strip_suffix('"')?,
                        None => v,
                    };
                    if v.contains(['"', '\\', '%']) || name.is_some() {
                        return None;
                    }
                    name = Some(v);
                }
                k if k.ends_with('*') => return None,
                _ => {}
            }
        }
        name?;
    }
    name
}

/// The model a body names, read quickly and leniently (the [`json`]
/// walker): for the access log only, never for a decision, which needs
/// [`body_model`].
pub fn logged_body_model<'a>(content_type: Option<&[u8]>, body: &'a [u8]) -> BodyModel<'a> {
    if is_multipart(content_type) {
        return multipart_model(body);
    }
    // The first `model` will do for a log line, and SDKs write it first:
    // the walk stops there instead of stepping over a long prompt.
    let Some((_, value)) = json::members(body).find(|(k, _)| k.is("model")) else {
        return BodyModel::Absent;
    };
    match serde_json::from_slice::<&str>(value) {
        Ok(m) => BodyModel::Named(Cow::Borrowed(m)),
        // Escapes in the name: decode them.
        Err(_) => match serde_json::from_slice::<String>(value) {
            Ok(m) => BodyModel::Named(Cow::Owned(m)),
            Err(_) => BodyModel::Unreadable,
        },
    }
}

fn is_multipart(content_type: Option<&[u8]>) -> bool {
    content_type
        .is_some_and(|ct| ct.len() >= 19 && ct[..19].eq_ignore_ascii_case(b"multipart/form-data"))
}

/// The value of the `name="model"` part of a multipart body.
fn multipart_model(body: &[u8]) -> BodyModel<'_> {
    const NEEDLE: &[u8] = b"name=\"model\"";
    let Some(at) = find(body, NEEDLE) else {
        return BodyModel::Absent;
    };
    if find(&body[at + NEEDLE.len()..], NEEDLE).is_some() {
        return BodyModel::Unreadable;
    }
    let after = &body[at + NEEDLE.len()..];
    let Some(start) = find(after, b"\r\n\r\n") else {
        return BodyModel::Unreadable;
    };
    let value = &after[start + 4..];
    let Some(end) = find(value, b"\r\n") else {
        return BodyModel::Unreadable;
    };
    match std::str::from_utf8(&value[..end]) {
        Ok(m) => BodyModel::Named(Cow::Borrowed(m.trim())),
        Err(_) => BodyModel::Unreadable,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[&'static str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for k in pairs {
            m.insert(*k, HeaderValue::from_static("x"));
        }
        m
    }

    #[test]
    fn style_from_paths_then_headers() {
        let none = HeaderMap::new();
        assert_eq!(
            detect_style("/v1/chat/completions", &none, None),
            ApiStyle::OpenAi
        );
        assert_eq!(
            detect_style("/v1/messages", &none, None),
            ApiStyle::Anthropic
        );
        assert_eq!(
            detect_style("/v1/messages/count_tokens", &none, None),
            ApiStyle::Anthropic
        );
        assert_eq!(
            detect_style("/v1/models", &h(&["anthropic-version"]), None),
            ApiStyle::Anthropic
        );
        assert_eq!(
            detect_style("/openai/deployments/gpt/chat/completions", &none, None),
            ApiStyle::Azure
        );
        assert_eq!(
            detect_style("/anything", &h(&["api-key"]), None),
            ApiStyle::Azure
        );
        assert_eq!(
            detect_style("/v1beta/models/gemini-pro:generateContent", &none, None),
            ApiStyle::Gemini
        );
        assert_eq!(
            detect_style("/v1/models", &h(&["x-goog-api-key"]), None),
            ApiStyle::Gemini
        );
        assert_eq!(
            detect_style("/v1/models", &none, Some("key=abc")),
            ApiStyle::Gemini
        );
        assert_eq!(
            detect_style("/v1/models", &h(&["authorization"]), None),
            ApiStyle::OpenAi
        );
        // The path beats a header.
        assert_eq!(
            detect_style("/v1/messages", &h(&["x-goog-api-key"]), None),
            ApiStyle::Anthropic
        );
    }

    fn c(route: &str, provider: Provider) -> Candidate<'_> {
        Candidate {
            route,
            provider: Some(provider),
        }
    }

    #[test]
    fn a_prefix_selects_and_is_stripped() {
        let cands = [
            c("openai", Provider::OpenAi),
            c("claude", Provider::Anthropic),
        ];
        assert_eq!(
            route("/claude/v1/messages", ApiStyle::Anthropic, &cands),
            Ok(Routed {
                index: 1,
                path: "/v1/messages"
            })
        );
        // The prefix wins over the style.
        assert_eq!(
            route("/openai/v1/messages", ApiStyle::Anthropic, &cands),
            Ok(Routed {
                index: 0,
                path: "/v1/messages"
            })
        );
        assert_eq!(
            route("/claude", ApiStyle::OpenAi, &cands),
            Ok(Routed {
                index: 1,
                path: "/"
            })
        );
        // A prefix that is not one of the token's upstreams is just a path.
        assert_eq!(
            route("/groq/v1/chat/completions", ApiStyle::OpenAi, &cands),
            Ok(Routed {
                index: 0,
                path: "/groq/v1/chat/completions"
            })
        );
    }

    #[test]
    fn a_single_upstream_takes_everything() {
        let cands = [c("openai", Provider::OpenAi)];
        assert_eq!(
            route("/v1/messages", ApiStyle::Anthropic, &cands),
            Ok(Routed {
                index: 0,
                path: "/v1/messages"
            })
        );
        assert_eq!(
            route("/openai/v1/models", ApiStyle::OpenAi, &cands),
            Ok(Routed {
                index: 0,
                path: "/v1/models"
            })
        );
    }

    #[test]
    fn several_upstreams_are_chosen_by_style() {
        let cands = [
            c("openai", Provider::OpenAi),
            c("anthropic", Provider::Anthropic),
            c("azure", Provider::AzureOpenAi),
            c("gemini", Provider::Gemini),
        ];
        let pick = |path, style| route(path, style, &cands).map(|r| r.index);
        assert_eq!(pick("/v1/chat/completions", ApiStyle::OpenAi), Ok(0));
        assert_eq!(pick("/v1/messages", ApiStyle::Anthropic), Ok(1));
        assert_eq!(
            pick("/openai/deployments/d/chat/completions", ApiStyle::Azure),
            Ok(2)
        );
        assert_eq!(
            pick("/v1beta/models/g:generateContent", ApiStyle::Gemini),
            Ok(3)
        );
    }

    #[test]
    fn azure_paths_are_never_a_prefix() {
        let cands = [
            c("openai", Provider::OpenAi),
            c("azure", Provider::AzureOpenAi),
        ];
        assert_eq!(
            route(
                "/openai/deployments/gpt-4o/chat/completions",
                ApiStyle::Azure,
                &cands
            ),
            Ok(Routed {
                index: 1,
                path: "/openai/deployments/gpt-4o/chat/completions"
            })
        );
        // An Azure upstream named `openai` keeps Azure's own path too.
        let cands = [
            c("openai", Provider::AzureOpenAi),
            c("claude", Provider::Anthropic),
        ];
        assert_eq!(
            route(
                "/openai/deployments/gpt-4o/chat/completions",
                ApiStyle::Azure,
                &cands
            ),
            Ok(Routed {
                index: 0,
                path: "/openai/deployments/gpt-4o/chat/completions"
            })
        );
        assert_eq!(
            route("/openai/openai/deployments/x", ApiStyle::Azure, &cands),
            Ok(Routed {
                index: 0,
                path: "/openai/deployments/x"
            })
        );
    }

    #[test]
    fn ambiguity_and_absence_are_errors() {
        let cands = [
            c("openai", Provider::OpenAi),
            c("groq", Provider::OpenAiCompatible),
        ];
        assert_eq!(
            route("/v1/chat/completions", ApiStyle::OpenAi, &cands),
            Err(RouteError::Ambiguous {
                style: ApiStyle::OpenAi,
                names: vec!["openai".into(), "groq".into()]
            })
        );
        assert_eq!(
            route("/v1/messages", ApiStyle::Anthropic, &cands),
            Err(RouteError::NoneForStyle {
                style: ApiStyle::Anthropic,
                available: vec!["openai".into(), "groq".into()]
            })
        );
        let missing = [
            c("openai", Provider::OpenAi),
            Candidate {
                route: "claude",
                provider: None,
            },
        ];
        assert_eq!(
            route("/v1/messages", ApiStyle::Anthropic, &missing),
            Err(RouteError::NotConfigured {
                name: "claude".into()
            })
        );
        assert_eq!(
            route("/claude/v1/messages", ApiStyle::Anthropic, &missing),
            Err(RouteError::NotConfigured {
                name: "claude".into()
            })
        );
    }

    #[test]
    fn models_in_paths_and_bodies() {
        assert_eq!(
            path_model(
                ApiStyle::Azure,
                "/openai/deployments/gpt-4o/chat/completions"
            )
            .as_deref(),
            Some("gpt-4o")
        );
        assert_eq!(
            path_model(
                ApiStyle::Gemini,
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
            )
            .as_deref(),
            Some("gemini-2.0-flash")
        );
        assert_eq!(
            path_model(
                ApiStyle::Gemini,
                "/v1/tunedModels/my%2Dmodel:generateContent"
            )
            .as_deref(),
            Some("my-model")
        );
        assert_eq!(
            path_model(ApiStyle::Gemini, "/v1beta/models").as_deref(),
            None
        );
        assert_eq!(
            path_model(ApiStyle::OpenAi, "/v1/models/gpt-4o").as_deref(),
            None
        );
        let json = |b: &'static [u8]| body_model(Some(b"application/json"), None, b);
        let named = |m: &'static str| BodyModel::Named(Cow::Borrowed(m));
        assert_eq!(
            json(br#"{"model":"gpt-4o","messages":[]}"#),
            named("gpt-4o")
        );
        assert_eq!(
            json(br#" {"messages":[{"content":"a \"model\""}],"model":"claude-3\u002d5"}"#),
            BodyModel::Named(Cow::Owned("claude-3-5".into()))
        );
        assert_eq!(json(br#"{"messages":[]}"#), BodyModel::Absent);
        assert_eq!(json(b""), BodyModel::Absent);
        // What a restricted token must not slip through.
        assert_eq!(json(b"not json"), BodyModel::Unreadable);
        assert_eq!(
            json(br#"{"model":"gpt-4o","model":"o1-pro"}"#),
            BodyModel::Unreadable
        );
        assert_eq!(json(br#"{"model": 5}"#), BodyModel::Unreadable);
        assert_eq!(
            json(br#"{"model": "gpt-4o", "messages": [}"#),
            BodyModel::Unreadable
        );
        assert_eq!(
            json(br#"{"\u006dodel": "o1-pro", "model": "gpt-4o"}"#),
            BodyModel::Unreadable
        );
        let form = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b--\r\n";
        assert_eq!(
            body_model(Some(b"multipart/form-data; boundary=b"), None, form),
            named("whisper-1")
        );
        assert_eq!(
            body_model(Some(b"multipart/form-data; boundary=b"), None, b"--b--"),
            BodyModel::Absent
        );
        assert_eq!(
            logged_body_model(Some(b"multipart/form-data; boundary=b"), form),
            named("whisper-1")
        );
    }

    #[test]
    fn bodies_the_proxy_cannot_read_for_certain_are_unreadable() {
        let chat = br#"{"model":"o1-pro","messages":[]}"#;
        let unreadable = |ct: &[u8], ce: Option<&[u8]>, body: &[u8]| {
            assert_eq!(
                body_model(Some(ct), ce, body),
                BodyModel::Unreadable,
                "{} {:?}",
                String::from_utf8_lossy(ct),
                String::from_utf8_lossy(body)
            );
        };
        // JSON under a multipart content type.
        unreadable(b"multipart/form-data; boundary=x", None, chat);
        unreadable(b"multipart/form-data", None, chat);
        // A byte-order mark, UTF-16.
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(chat);
        unreadable(b"application/json", None, &bom);
        let utf16: Vec<u8> = std::iter::once([0xFF, 0xFE])
            .chain(chat.iter().map(|&b| [b, 0]))
            .flatten()
            .collect();
        unreadable(b"application/json", None, &utf16);
        // An encoding the proxy does not decode.
        unreadable(b"application/json", Some(b"gzip"), b"\x1f\x8b\x08\x00");
        unreadable(b"application/json", Some(b"br"), chat);
        assert_eq!(
            body_model(Some(b"application/json"), Some(b"identity"), chat),
            BodyModel::Named(Cow::Borrowed("o1-pro"))
        );
        // Forms: two model parts, an encoded name, a transfer encoding, no end.
        let part = |head: &str, value: &str| {
            format!("--b\r\nContent-Disposition: form-data; {head}\r\n\r\n{value}\r\n")
        };
        let form = |parts: &[String]| format!("{}--b--\r\n", parts.concat()).into_bytes();
        let ct = b"multipart/form-data; boundary=\"b\"";
        unreadable(
            ct,
            None,
            &form(&[part("name=\"model\"", "a"), part("name=model", "b")]),
        );
        unreadable(ct, None, &form(&[part("name*=utf-8''model", "o1-pro")]));
        unreadable(
            ct,
            None,
            &form(&[part(
                "name=\"model\"\r\nContent-Transfer-Encoding: base64",
                "bzEtcHJv",
            )]),
        );
        unreadable(ct, None, &form(&[part("name=\"model\"", " o1-pro")]));
        unreadable(ct, None, part("name=\"model\"", "o1-pro").as_bytes());
        assert_eq!(
            body_model(
                Some(ct),
                None,
                &form(&[
                    part("name=\"file\"; filename=\"a.wav\"", "RIFF"),
                    part("name=model", "whisper-1")
                ])
            ),
            BodyModel::Named(Cow::Borrowed("whisper-1"))
        );
        assert!(has_empty_segment(
            "/v1beta/models//gemini-pro:generateContent"
        ));
        assert!(!has_empty_segment(
            "/v1beta/models/gemini-pro:generateContent"
        ));
    }

    #[test]
    fn the_logged_model_is_read_leniently_but_correctly() {
        let log = |b: &'static [u8]| logged_body_model(Some(b"application/json"), b);
        let named = |m: &'static str| BodyModel::Named(Cow::Borrowed(m));
        assert_eq!(
            log(br#"{"messages":[{"model":"no"}],"model":"gpt-4o"}"#),
            named("gpt-4o")
        );
        assert_eq!(
            log(br#"{"model":"claude-3\u002d5"}"#),
            BodyModel::Named(Cow::Owned("claude-3-5".into()))
        );
        assert_eq!(log(br#"{"messages":[]}"#), BodyModel::Absent);
        assert_eq!(log(b"not json"), BodyModel::Absent);
        assert_eq!(log(br#"{"model":5}"#), BodyModel::Unreadable);
        // Lenient where only a log line depends on it: the first one wins,
        // and a body broken after the model still names it.
        assert_eq!(log(br#"{"model":"a","model":"b"}"#), named("a"));
        assert_eq!(log(br#"{"model":"gpt-4o","messages":[}"#), named("gpt-4o"));
    }
}
