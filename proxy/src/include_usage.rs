//! OpenAI-style streams (chat and legacy completions) report usage only
//! when the request asks with `stream_options.include_usage`: without it a
//! stream would count no tokens, and `tokensPerMinute` would never bite. So
//! the `rewrite` stage asks on the client's behalf ([`ask`]), and the
//! response path hides the answer ([`UsageHider`]): the usage-only chunk is
//! dropped and the `"usage":null` the option adds to every other chunk is
//! cut, so the client reads, byte for byte, what the upstream sends
//! without the option.

use std::ops::Range;

use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use serde_json::Value;
use strake_crds::provider::Provider;

use crate::json;

/// The most of one unfinished event [`UsageHider`] holds back. Chunks are
/// a few hundred bytes; a longer event passes through as it comes (with
/// its `"usage":null`) rather than being held.
pub const MAX_HELD_EVENT: usize = 64 * 1024;

/// The first Azure OpenAI `api-version` (by date) that accepts
/// `stream_options`; older ones refuse the request with it.
const AZURE_FIRST_VERSION: &str = "2024-08-01";

/// Whether the request goes to an endpoint whose streams report usage only
/// when asked: `POST …/completions` (chat or legacy) on an OpenAI,
/// OpenAI-compatible or Azure OpenAI upstream.
pub fn applies(provider: Provider, method: &Method, path: &str, query: Option<&str>) -> bool {
    if method != Method::POST || !path.ends_with("/completions") {
        return false;
    }
    match provider {
        Provider::OpenAi | Provider::OpenAiCompatible => true,
        Provider::AzureOpenAi => azure_accepts_stream_options(query),
        Provider::Anthropic | Provider::Gemini => false,
    }
}

/// Azure's `api-version` is a date (`2024-10-21`, `2025-04-01-preview`) or,
/// on the `/openai/v1/` surface, absent or a word (`preview`): all but the
/// old dates accept `stream_options`.
fn azure_accepts_stream_options(query: Option<&str>) -> bool {
    let version = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|p| p.strip_prefix("api-version="));
    match version {
        Some(v) if v.len() >= 10 && v.as_bytes()[..4].iter().all(u8::is_ascii_digit) => {
            v[..10] >= *AZURE_FIRST_VERSION
        }
        _ => true,
    }
}

/// What the `rewrite` stage forwards.
#[derive(Debug, PartialEq, Eq)]
pub enum Ask {
    /// The body as it came: not a stream, or the client asked itself (or
    /// wrote `stream_options` in a way only the upstream may judge).
    AsIs,
    /// The body with `stream_options.include_usage: true`: usage must be
    /// hidden from the client.
    Added(Vec<u8>),
}

/// A body the proxy cannot read as the upstream would: broken JSON, or
/// `stream` / `stream_options` / `include_usage` twice. Refused, since the
/// proxy could not tell whether it streams.
#[derive(Debug, PartialEq, Eq)]
pub struct Unreadable;

/// Asks a streamed request for usage, unless it asks already. A decision
/// the upstream must read the same way: the strict parse (serde refuses
/// broken JSON and duplicate keys), then a minimal splice into the bytes as
/// they are, so nothing else in the body changes.
pub fn ask(body: &[u8]) -> Result<Ask, Unreadable> {
    #[derive(Deserialize)]
    struct Request {
        #[serde(default)]
        stream: Option<Value>,
        #[serde(default)]
        stream_options: Option<StreamOptions>,
    }
    #[derive(Deserialize)]
    struct StreamOptions {
        #[serde(default)]
        include_usage: Option<Value>,
    }
    if body.trim_ascii_start().first() != Some(&b'{') {
        // Not an object (serde would read an array positionally): the
        // upstream refuses it whatever it holds.
        return Ok(Ask::AsIs);
    }
    let request: Request = serde_json::from_slice(body).map_err(|_| Unreadable)?;
    // Anything but absent, null or false may read as true to a lenient
    // upstream: ask.
    if matches!(request.stream, None | Some(Value::Bool(false))) {
        return Ok(Ask::AsIs);
    }
    let include_usage = request.stream_options.and_then(|o| o.include_usage);
    if !matches!(include_usage, None | Some(Value::Null | Value::Bool(false))) {
        return Ok(Ask::AsIs);
    }
    let (at, cut, insert) = splice(body);
    let mut out = Vec::with_capacity(body.len() + insert.len());
    out.extend_from_slice(&body[..at]);
    out.extend_from_slice(insert.as_bytes());
    out.extend_from_slice(&body[at + cut..]);
    Ok(Ask::Added(out))
}

/// Where to write `include_usage: true` into a body serde has read: the
/// offset, how many bytes to replace there, and the text.
fn splice(body: &[u8]) -> (usize, usize, &'static str) {
    let options = json::members(body).find(|(k, _)| k.is("stream_options"));
    let Some((_, options)) = options else {
        // Absent: first member of the request.
        let open = json::offset(body, body.trim_ascii_start());
        return (open + 1, 0, r#""stream_options":{"include_usage":true},"#);
    };
    let at = json::offset(body, options);
    if options == b"null" {
        return (at, options.len(), r#"{"include_usage":true}"#);
    }
    if let Some((_, value)) = json::members(options).find(|(k, _)| k.is("include_usage")) {
        let v = json::offset(body, value);
        return (v, value.len(), "true");
    }
    if json::members(options).next().is_none() {
        return (at, options.len(), r#"{"include_usage":true}"#);
    }
    (at + 1, 0, r#""include_usage":true,"#)
}

/// The response side of [`Ask::Added`]: passes the stream on event by
/// event, dropping the usage-only chunk (`"choices":[]` and a `usage`) and
/// cutting the `usage` member of every other chunk. An event is held only
/// until its closing blank line, which no SSE client reads past anyway;
/// what is left when the stream ends goes out as it came.
#[derive(Debug, Default)]
pub struct UsageHider {
    /// The stream's bytes not passed on yet: the current event's.
    held: Vec<u8>,
    /// How far `held` has been searched for the event's end.
    scanned: usize,
    /// The byte before `scanned` was a CR (an LF after it is the same line end).
    after_cr: bool,
    /// No byte since the last line end: a line end now ends the event.
    line_empty: bool,
    /// The current event outgrew [`MAX_HELD_EVENT`]: the rest of it passes
    /// unchanged.
    passing: bool,
}

impl UsageHider {
    pub fn new() -> UsageHider {
        UsageHider {
            line_empty: true,
            ..UsageHider::default()
        }
    }

    /// What the client gets of `chunk` now (possibly nothing).
    pub fn pass(&mut self, chunk: &[u8]) -> Bytes {
        self.held.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(end) = self.next_event_end() {
            let event = &self.held[start..end];
            if std::mem::take(&mut self.passing) {
                out.extend_from_slice(event);
            } else {
                hide_usage(event, &mut out);
            }
            start = end;
        }
        self.held.drain(..start);
        self.scanned -= start;
        if self.held.len() > MAX_HELD_EVENT {
            self.passing = true;
        }
        if self.passing {
            out.append(&mut self.held);
            self.scanned = 0;
        }
        Bytes::from(out)
    }

    /// At the end of the stream: an unfinished event, as it came.
    pub fn flush(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        (!self.held.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.held)))
    }

    /// Whether bytes are held back.
    pub fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    /// The end (past its blank line) of the next complete event in `held`.
    fn next_event_end(&mut self) -> Option<usize> {
        while self.scanned < self.held.len() {
            let rest = &self.held[self.scanned..];
            if std::mem::take(&mut self.after_cr) && rest[0] == b'\n' {
                self.scanned += 1;
                continue;
            }
            let Some(at) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.scanned = self.held.len();
                self.line_empty = false;
                return None;
            };
            if at > 0 {
                self.line_empty = false;
            }
            self.after_cr = rest[at] == b'\r';
            self.scanned += at + 1;
            if std::mem::replace(&mut self.line_empty, true) {
                // The CR of a CRLF: take its LF with the event if it is here.
                if self.after_cr && self.held.get(self.scanned) == Some(&b'\n') {
                    self.after_cr = false;
                    self.scanned += 1;
                }
                return Some(self.scanned);
            }
        }
        None
    }
}

/// Writes `event` to `out` as the client would get it without
/// `include_usage`.
fn hide_usage(event: &[u8], out: &mut Vec<u8>) {
    let Some(data) = single_data(event) else {
        out.extend_from_slice(event);
        return;
    };
    let mut usage = None;
    let mut choices_empty = false;
    let mut previous_end = None;
    let mut members = json::members(&event[data.clone()]).peekable();
    while let Some((key, value)) = members.next() {
        let value_end = json::offset(event, value) + value.len();
        if key.is("usage") {
            let start = match previous_end {
                // After the previous member: from its end, comma included.
                Some(end) => end,
                None => json::offset(event, key.raw()) - 1,
            };
            let end = match (previous_end, members.peek()) {
                // The first of several: up to the next name, comma included.
                (None, Some((next, _))) => json::offset(event, next.raw()) - 1,
                _ => value_end,
            };
            usage = Some((start..end, value != b"null"));
        } else if key.is("choices") {
            choices_empty = value.strip_prefix(b"[").is_some_and(|v| {
                v.strip_suffix(b"]")
                    .is_some_and(|inner| inner.trim_ascii().is_empty())
            });
        }
        previous_end = Some(value_end);
    }
    match usage {
        Some((_, true)) if choices_empty => {}
        Some((cut, _)) => {
            out.extend_from_slice(&event[..cut.start]);
            out.extend_from_slice(&event[cut.end..]);
        }
        None => out.extend_from_slice(event),
    }
}

/// The range of an event's only `data:` line's value (an OpenAI chunk is
/// one), or `None`.
fn single_data(event: &[u8]) -> Option<Range<usize>> {
    let mut found = None;
    let mut start = 0;
    while start < event.len() {
        let len = memchr::memchr2(b'\n', b'\r', &event[start..]).unwrap_or(event.len() - start);
        let line = &event[start..start + len];
        if let Some(value) = line.strip_prefix(b"data:") {
            if found.is_some() {
                return None;
            }
            let skip = usize::from(value.first() == Some(&b' '));
            found = Some(start + 5 + skip..start + len);
        }
        start += len + 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn added(body: &str) -> String {
        match ask(body.as_bytes()) {
            Ok(Ask::Added(b)) => String::from_utf8(b).unwrap(),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn streams_without_include_usage_get_it_with_nothing_else_changed() {
        let cases = [
            (
                r#"{"model":"m","stream":true}"#,
                r#"{"stream_options":{"include_usage":true},"model":"m","stream":true}"#,
            ),
            (
                r#" { "stream" : true, "stream_options" : null }"#,
                r#" { "stream" : true, "stream_options" : {"include_usage":true} }"#,
            ),
            (
                r#"{"stream":true,"stream_options":{}}"#,
                r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
            ),
            (
                r#"{"stream":true,"stream_options":{"include_usage":false}}"#,
                r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
            ),
            (
                r#"{"stream":true,"stream_options":{"include_obfuscation":false}}"#,
                r#"{"stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false}}"#,
            ),
            (
                r#"{"stream":true,"stream_options":{"include_usage":null,"x":1}}"#,
                r#"{"stream":true,"stream_options":{"include_usage":true,"x":1}}"#,
            ),
            // Escaped names are the same names to the upstream.
            (
                r#"{"str\u0065am":true,"stream_\u006fptions":{"include_\u0075sage":false}}"#,
                r#"{"str\u0065am":true,"stream_\u006fptions":{"include_\u0075sage":true}}"#,
            ),
            // A lenient upstream may read "true" as true.
            (
                r#"{"stream":"true"}"#,
                r#"{"stream_options":{"include_usage":true},"stream":"true"}"#,
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(added(body), expected, "{body}");
            let v: Value = serde_json::from_str(expected).unwrap();
            assert_eq!(v["stream_options"]["include_usage"], true);
        }
    }

    #[test]
    fn requests_that_ask_already_or_do_not_stream_are_left_alone() {
        for body in [
            r#"{"model":"m"}"#,
            r#"{"stream":false}"#,
            r#"{"stream":null,"stream_options":null}"#,
            r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
            r#"{"stream":true,"stream_options":{"include_usage":"yes"}}"#,
            r#"[{"stream":true}]"#,
            "",
        ] {
            assert_eq!(ask(body.as_bytes()), Ok(Ask::AsIs), "{body}");
        }
    }

    #[test]
    fn bodies_read_two_ways_are_unreadable() {
        for body in [
            r#"{"stream":true,"stream":false}"#,
            r#"{"stream":true,"stream_options":{"include_usage":true},"stream_options":{}}"#,
            r#"{"stream":true,"stream_options":{"include_usage":true,"include_usage":false}}"#,
            r#"{"stream":true,"stream_options":"all"}"#,
            r#"{"stream":true"#,
            r#"{"stream":true} trailing"#,
        ] {
            assert_eq!(ask(body.as_bytes()), Err(Unreadable), "{body}");
        }
    }

    #[test]
    fn which_endpoints() {
        let post = Method::POST;
        assert!(applies(
            Provider::OpenAi,
            &post,
            "/v1/chat/completions",
            None
        ));
        assert!(applies(Provider::OpenAi, &post, "/v1/completions", None));
        assert!(applies(
            Provider::OpenAiCompatible,
            &post,
            "/api/v1/chat/completions",
            None
        ));
        assert!(!applies(
            Provider::OpenAi,
            &Method::GET,
            "/v1/chat/completions",
            None
        ));
        assert!(!applies(Provider::OpenAi, &post, "/v1/responses", None));
        assert!(!applies(Provider::OpenAi, &post, "/v1/embeddings", None));
        assert!(!applies(Provider::Anthropic, &post, "/v1/messages", None));
        let azure = |q: &str| {
            applies(
                Provider::AzureOpenAi,
                &post,
                "/openai/deployments/d/chat/completions",
                Some(q),
            )
        };
        assert!(azure("api-version=2024-10-21"));
        assert!(azure("api-version=2025-04-01-preview"));
        assert!(azure("x=1&api-version=preview"));
        assert!(!azure("api-version=2024-06-01"));
        assert!(!azure("api-version=2024-05-01-preview"));
        assert!(applies(
            Provider::AzureOpenAi,
            &post,
            "/openai/v1/chat/completions",
            None
        ));
    }

    const WITH_USAGE: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n",
        "data: [DONE]\n\n",
    );
    const WITHOUT_USAGE: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    );

    fn hidden(stream: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut h = UsageHider::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain([&stream.len()]) {
            out.extend_from_slice(&h.pass(&stream[start..cut]));
            start = cut;
        }
        if let Some(rest) = h.flush() {
            out.extend_from_slice(&rest);
        }
        out
    }

    #[test]
    fn the_client_gets_the_stream_it_would_without_the_option() {
        let s = WITH_USAGE.as_bytes();
        assert_eq!(hidden(s, &[]), WITHOUT_USAGE.as_bytes());
        for i in 0..=s.len() {
            assert_eq!(hidden(s, &[i]), WITHOUT_USAGE.as_bytes(), "split at {i}");
        }
    }

    #[test]
    fn complete_events_pass_at_once_and_only_the_unfinished_one_waits() {
        let mut h = UsageHider::new();
        let first = WITH_USAGE.find("\n\n").unwrap() + 2;
        let out = h.pass(&WITH_USAGE.as_bytes()[..first + 10]);
        assert_eq!(
            &out[..],
            &WITHOUT_USAGE.as_bytes()[..WITHOUT_USAGE.find("\n\n").unwrap() + 2]
        );
        assert!(h.holds());
    }

    #[test]
    fn usage_first_alone_or_spaced_and_other_line_endings() {
        let cases = [
            (
                "data: {\"usage\":null,\"id\":1}\n\n",
                "data: {\"id\":1}\n\n",
            ),
            ("data: {\"usage\":null}\n\n", "data: {}\n\n"),
            (
                "data:{ \"id\" : 1 , \"usage\" : null }\r\n\r\n",
                "data:{ \"id\" : 1 }\r\n\r\n",
            ),
            (
                "data: {\"id\":1,\"usage\":null}\r\r",
                "data: {\"id\":1}\r\r",
            ),
            // Azure's prompt-filter chunk has no choices and no usage to hide.
            (
                "data: {\"choices\":[],\"prompt_filter_results\":[],\"usage\":null}\n\n",
                "data: {\"choices\":[],\"prompt_filter_results\":[]}\n\n",
            ),
            // Usage on a content chunk (some OpenAI-compatible servers).
            (
                "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1}}\n\n",
                "data: {\"choices\":[{\"delta\":{}}]}\n\n",
            ),
            (": keep-alive\n\n", ": keep-alive\n\n"),
            (
                "event: x\ndata: {\"usage\":null}\nid: 1\n\n",
                "event: x\ndata: {}\nid: 1\n\n",
            ),
            (
                "data: {\"usage\":null}\ndata: {}\n\n",
                "data: {\"usage\":null}\ndata: {}\n\n",
            ),
            (
                "data: {\"choices\":[ ],\"usage\":{}}\n\ndata: [DONE]\n\n",
                "data: [DONE]\n\n",
            ),
        ];
        for (stream, expected) in cases {
            let s = stream.as_bytes();
            for i in 0..=s.len() {
                assert_eq!(
                    String::from_utf8(hidden(s, &[i])).unwrap(),
                    expected,
                    "{stream:?} split at {i}"
                );
            }
        }
    }

    #[test]
    fn an_unfinished_event_goes_out_as_it_came_and_a_huge_one_is_not_held() {
        let cut = "data: {\"id\":1,\"usage\":null}\n\ndata: {\"id\":2,\"us";
        assert_eq!(
            String::from_utf8(hidden(cut.as_bytes(), &[])).unwrap(),
            "data: {\"id\":1}\n\ndata: {\"id\":2,\"us"
        );
        let big = format!(
            "data: {{\"text\":\"{}\",\"usage\":null}}\n\ndata: {{\"usage\":null}}\n\n",
            "x".repeat(MAX_HELD_EVENT * 2)
        );
        let mut h = UsageHider::new();
        let mut out = Vec::new();
        for chunk in big.as_bytes().chunks(4096) {
            out.extend_from_slice(&h.pass(chunk));
            assert!(h.held.len() <= MAX_HELD_EVENT + 4096);
        }
        out.extend(h.flush().unwrap_or_default());
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.ends_with("\"usage\":null}\n\ndata: {}\n\n"),
            "{}",
            &out[out.len() - 60..]
        );
        assert_eq!(out.len(), big.len() - "\"usage\":null".len());
    }

    proptest! {
        /// Whatever the bytes and however they are cut, nothing is lost but
        /// hidden usage, and the result does not depend on the cuts.
        #[test]
        fn any_chunking_gives_the_same_stream(
            stream in prop::collection::vec(
                prop::sample::select(vec![
                    &b"data: "[..], b"data:", b"{\"usage\":null", b",\"usage\":null", b"{\"choices\":[]",
                    b",\"usage\":{\"prompt_tokens\":1}", b"}", b"\n", b"\r", b"\r\n", b"x", b": c",
                ]),
                0..30,
            ).prop_map(|v| v.concat()),
            mut cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let whole = hidden(&stream, &[]);
            let mut cuts: Vec<usize> = cuts.drain(..).map(|i| i.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(hidden(&stream, &cuts), whole.clone());
            prop_assert!(whole.len() <= stream.len());
        }

        /// Whatever a streamed request holds, the body asked for usage is
        /// the same document with `include_usage: true` in it.
        #[test]
        fn the_spliced_body_is_the_same_document_asking_for_usage(
            others in prop::collection::btree_map("[a-z_]{1,8}", crate::json::tests::any_json(), 0..5),
            options in prop::option::of(prop_oneof![
                Just(Value::Null),
                Just(serde_json::json!({})),
                Just(serde_json::json!({"include_usage": false})),
                Just(serde_json::json!({"include_obfuscation": true})),
                Just(serde_json::json!({"include_usage": null, "include_obfuscation": false})),
            ]),
            pretty in any::<bool>(),
        ) {
            let mut doc: serde_json::Map<String, Value> = others.into_iter().collect();
            doc.insert("stream".into(), Value::Bool(true));
            doc.remove("stream_options");
            if let Some(o) = options {
                doc.insert("stream_options".into(), o);
            }
            let doc = Value::Object(doc);
            let text = if pretty { serde_json::to_string_pretty(&doc) } else { serde_json::to_string(&doc) }.unwrap();
            let Ok(Ask::Added(body)) = ask(text.as_bytes()) else {
                return Err(TestCaseError::fail(format!("not asked: {text}")));
            };
            let mut got: Value = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(&got["stream_options"]["include_usage"], &Value::Bool(true));
            // Parsed back from the same text, so floats round the same way.
            let mut expected: Value = serde_json::from_str(&text).unwrap();
            let options = expected["stream_options"].take();
            let mut options = match options {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            };
            options.insert("include_usage".into(), Value::Bool(true));
            expected["stream_options"] = Value::Object(options);
            prop_assert_eq!(got.take(), expected);
        }
    }
}
