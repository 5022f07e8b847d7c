//! What a response's usage was: token counts read from the bytes as they
//! pass through, without holding any of them back.
//!
//! Every provider reports usage in the body, in one of a few places:
//!
//! | API | JSON body | SSE stream |
//! | --- | --- | --- |
//! | OpenAI chat / completions / embeddings | `usage.prompt_tokens`, `usage.completion_tokens` | the final chunk's `usage` (with `stream_options.include_usage`) |
//! | OpenAI Responses | `usage.input_tokens`, `usage.output_tokens` | `response.completed` → `response.usage` |
//! | Anthropic | `usage.input_tokens`, `usage.output_tokens` | `message_start` → `message.usage`, then `message_delta` → `usage.output_tokens` (cumulative) |
//! | Gemini | `usageMetadata.promptTokenCount`, `candidatesTokenCount` (+ `thoughtsTokenCount`) | `usageMetadata` in every chunk; the last is the total |
//!
//! So one rule covers them all: every count seen replaces the previous one
//! of its kind, and the last one wins. A stream cut short reports what it
//! carried so far.

use bytes::Bytes;

use crate::json;

/// Token counts as the provider reported them. `None`: not reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

impl Usage {
    /// Input plus output, counting missing numbers as zero.
    pub fn total(&self) -> u64 {
        self.input_tokens
            .unwrap_or(0)
            .saturating_add(self.output_tokens.unwrap_or(0))
    }

    fn merge(&mut self, seen: Usage) {
        if seen.input_tokens.is_some() {
            self.input_tokens = seen.input_tokens;
        }
        if seen.output_tokens.is_some() {
            self.output_tokens = seen.output_tokens;
        }
    }
}

/// The most a JSON body or a single SSE event may buffer before the parser
/// gives up on it. Usage sits in small bodies and small events; a huge one
/// (an embedding batch, say) is passed through uncounted rather than held.
pub const MAX_BUFFER: usize = 1024 * 1024;

/// Which parser a response needs, from its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    EventStream,
    Other,
}

impl BodyKind {
    pub fn from_content_type(content_type: Option<&[u8]>) -> BodyKind {
        let Some(ct) = content_type else {
            return BodyKind::Other;
        };
        let essence = ct.split(|&b| b == b';').next().unwrap_or_default();
        let essence = essence.trim_ascii();
        if essence.eq_ignore_ascii_case(b"text/event-stream") {
            BodyKind::EventStream
        } else if essence.eq_ignore_ascii_case(b"application/json")
            || (essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json"))
        {
            BodyKind::Json
        } else {
            BodyKind::Other
        }
    }
}

/// A usage parser fed with the body's chunks in order.
#[derive(Debug)]
pub enum UsageParser {
    Json(JsonUsage),
    Sse(SseUsage),
    None,
}

impl UsageParser {
    pub fn new(kind: BodyKind) -> UsageParser {
        match kind {
            BodyKind::Json => UsageParser::Json(JsonUsage::default()),
            BodyKind::EventStream => UsageParser::Sse(SseUsage::default()),
            BodyKind::Other => UsageParser::None,
        }
    }

    pub fn feed(&mut self, chunk: &Bytes) {
        match self {
            UsageParser::Json(p) => p.feed(chunk.clone()),
            UsageParser::Sse(p) => p.feed(chunk),
            UsageParser::None => {}
        }
    }

    /// The usage seen so far; for JSON, parses the buffered body.
    pub fn finish(&mut self) -> Usage {
        match self {
            UsageParser::Json(p) => p.finish(),
            UsageParser::Sse(p) => p.finish(),
            UsageParser::None => Usage::default(),
        }
    }
}

/// A non-streamed JSON body: kept (up to [`MAX_BUFFER`]) and parsed at its
/// end. The chunks are forwarded as they come; keeping them costs a
/// reference count each, not a copy.
#[derive(Debug, Default)]
pub struct JsonUsage {
    chunks: Vec<Bytes>,
    len: usize,
    overflow: bool,
}

impl JsonUsage {
    pub fn feed(&mut self, chunk: Bytes) {
        if self.overflow {
            return;
        }
        if self.len + chunk.len() > MAX_BUFFER {
            self.overflow = true;
            self.chunks = Vec::new();
            return;
        }
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    pub fn finish(&mut self) -> Usage {
        let chunks = std::mem::take(&mut self.chunks);
        if self.overflow {
            return Usage::default();
        }
        match &chunks[..] {
            [] => Usage::default(),
            [one] => json_usage(one),
            many => json_usage(&many.concat()),
        }
    }
}

/// Usage in one JSON document: an object, or (Gemini's
/// `streamGenerateContent` without `alt=sse`) an array of chunk objects, of
/// which the last report wins.
pub fn json_usage(body: &[u8]) -> Usage {
    let body = body.trim_ascii_start();
    match body.first() {
        Some(b'{') => object_usage(body),
        Some(b'[') => {
            let mut usage = Usage::default();
            for item in json::elements(body) {
                usage.merge(object_usage(item));
            }
            usage
        }
        _ => Usage::default(),
    }
}

/// Usage in one object: its `usage`, `message.usage` (Anthropic
/// `message_start`), `response.usage` (OpenAI Responses
/// `response.completed`) or `usageMetadata` (Gemini). Only those members
/// are parsed; the rest (the generated text, mostly) is stepped over.
fn object_usage(object: &[u8]) -> Usage {
    let (mut top, mut message, mut response, mut gemini) = (None, None, None, None);
    for (key, value) in json::members(object) {
        if key.is("usage") {
            top = Counts::read(value);
        } else if key.is("message") {
            message = nested_usage(value);
        } else if key.is("response") {
            response = nested_usage(value);
        } else if key.is("usageMetadata") {
            gemini = GeminiCounts::read(value);
        }
    }
    let mut usage = Usage::default();
    // The same precedence as ever: a top-level `usage` wins.
    for counts in [message, response, top].into_iter().flatten() {
        usage.merge(counts.usage());
    }
    if let Some(g) = gemini {
        usage.merge(g.usage());
    }
    usage
}

fn nested_usage(object: &[u8]) -> Option<Counts> {
    json::members(object)
        .filter(|(key, _)| key.is("usage"))
        .last()
        .and_then(|(_, value)| Counts::read(value))
}

/// An incremental `text/event-stream` parser (the WHATWG framing: lines end
/// in LF, CRLF or CR; an empty line ends an event; `data:` lines join with
/// LF). Chunk boundaries may fall anywhere, including inside a CRLF.
#[derive(Debug, Default)]
pub struct SseUsage {
    /// The current, unfinished line.
    line: Vec<u8>,
    /// The current event's data lines, joined.
    data: Vec<u8>,
    /// The current line or event outgrew [`MAX_BUFFER`]: skip it.
    line_overflow: bool,
    data_overflow: bool,
    /// The previous chunk ended in CR: an LF starting the next one belongs to it.
    after_cr: bool,
    usage: Usage,
}

impl SseUsage {
    pub fn feed(&mut self, mut chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push_line_part(&chunk[..end]);
            self.end_line();
            let crlf = chunk[end] == b'\r';
            chunk = &chunk[end + 1..];
            if crlf {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
        }
        self.push_line_part(chunk);
    }

    /// The usage of the events completed so far. An event without its
    /// closing blank line (the stream was cut) is not counted: its data may
    /// be a truncated JSON document anyway.
    pub fn finish(&mut self) -> Usage {
        self.usage
    }

    fn push_line_part(&mut self, part: &[u8]) {
        if self.line_overflow || part.is_empty() {
            return;
        }
        if self.line.len() + part.len() > MAX_BUFFER {
            self.line_overflow = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn end_line(&mut self) {
        let overflow = std::mem::take(&mut self.line_overflow);
        if self.line.is_empty() && !overflow {
            self.dispatch();
            return;
        }
        if overflow {
            // A line too long to keep is most likely a data line.
            self.data_overflow = true;
        } else if let Some(value) = field_value(&self.line, b"data") {
            if self.data.len() + value.len() + 1 > MAX_BUFFER {
                self.data_overflow = true;
            } else if !self.data_overflow {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
            }
        }
        self.line.clear();
    }

    fn dispatch(&mut self) {
        if !self.data_overflow && contains(&self.data, b"sage") {
            // Only events that mention usage (`usage`, `usageMetadata`) are
            // read: most chunks are text deltas and are skipped cheaply.
            self.usage.merge(json_usage(&self.data));
        }
        self.data.clear();
        self.data_overflow = false;
    }
}

/// The value of a `name: value` SSE line whose field is `name`.
fn field_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?;
    match rest.first() {
        None => Some(rest),
        Some(b':') => {
            let v = &rest[1..];
            Some(v.strip_prefix(b" ").unwrap_or(v))
        }
        Some(_) => None,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// The counts `names` in the object `value`; `None` unless it is an object
/// (`null`, say). A count that is not a plain non-negative integer reads as
/// absent.
fn read_counts<const N: usize>(value: &[u8], names: [&str; N]) -> Option<[Option<u64>; N]> {
    if value.first() != Some(&b'{') {
        return None;
    }
    let mut counts = [None; N];
    for (key, v) in json::members(value) {
        if let Some(i) = names.iter().position(|name| key.is(name)) {
            counts[i] = json::as_u64(v);
        }
    }
    Some(counts)
}

/// A usage object's counts, OpenAI's names or Anthropic's.
#[derive(Default)]
struct Counts {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

/// Gemini's `usageMetadata`.
#[derive(Default)]
struct GeminiCounts {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    /// Thinking tokens are billed as output but reported apart.
    thoughts_token_count: Option<u64>,
}

impl Counts {
    fn read(value: &[u8]) -> Option<Counts> {
        let names = [
            "prompt_tokens",
            "completion_tokens",
            "input_tokens",
            "output_tokens",
        ];
        read_counts(value, names).map(|[p, c, i, o]| Counts {
            prompt_tokens: p,
            completion_tokens: c,
            input_tokens: i,
            output_tokens: o,
        })
    }

    fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens.or(self.prompt_tokens),
            output_tokens: self.output_tokens.or(self.completion_tokens),
        }
    }
}

impl GeminiCounts {
    fn read(value: &[u8]) -> Option<GeminiCounts> {
        let names = [
            "promptTokenCount",
            "candidatesTokenCount",
            "thoughtsTokenCount",
        ];
        read_counts(value, names).map(|[p, c, t]| GeminiCounts {
            prompt_token_count: p,
            candidates_token_count: c,
            thoughts_token_count: t,
        })
    }

    fn usage(&self) -> Usage {
        let output = match (self.candidates_token_count, self.thoughts_token_count) {
            (None, None) => None,
            (c, t) => Some(c.unwrap_or(0) + t.unwrap_or(0)),
        };
        Usage {
            input_tokens: self.prompt_token_count,
            output_tokens: output,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) const OPENAI_STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello usage\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46}}\n\n",
        "data: [DONE]\n\n",
    );

    pub(crate) const ANTHROPIC_STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-3-5-sonnet\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    pub(crate) const GEMINI_STREAM: &str = concat!(
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":9,\"totalTokenCount\":9}}\r\n\r\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":3,\"totalTokenCount\":12}}\r\n\r\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"!\"}],\"role\":\"model\"},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":7,\"totalTokenCount\":16}}\r\n\r\n",
    );

    pub(crate) const RESPONSES_STREAM: &str = concat!(
        "event: response.created\n",
        "data: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"usage\":null}}\n\n",
        "event: response.output_text.delta\n",
        "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
        "event: response.completed\n",
        "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":5,\"output_tokens\":6,\"total_tokens\":11}}}\n\n",
    );

    fn sse(stream: &[u8], cuts: &[usize]) -> Usage {
        let mut p = SseUsage::default();
        let mut start = 0;
        for &cut in cuts {
            p.feed(&stream[start..cut]);
            start = cut;
        }
        p.feed(&stream[start..]);
        p.finish()
    }

    fn usage(i: u64, o: u64) -> Usage {
        Usage {
            input_tokens: Some(i),
            output_tokens: Some(o),
        }
    }

    fn every_split_point_gives(stream: &str, expected: Usage) {
        let b = stream.as_bytes();
        assert_eq!(sse(b, &[]), expected, "whole stream");
        for i in 0..=b.len() {
            assert_eq!(sse(b, &[i]), expected, "split at {i}");
        }
        // Byte by byte: every boundary at once.
        let all: Vec<usize> = (1..b.len()).collect();
        assert_eq!(sse(b, &all), expected, "byte by byte");
    }

    #[test]
    fn openai_final_usage_chunk_at_every_split_point() {
        every_split_point_gives(OPENAI_STREAM, usage(12, 34));
    }

    #[test]
    fn anthropic_message_start_and_delta_at_every_split_point() {
        every_split_point_gives(ANTHROPIC_STREAM, usage(25, 15));
    }

    #[test]
    fn gemini_last_usage_metadata_with_crlf_at_every_split_point() {
        every_split_point_gives(GEMINI_STREAM, usage(9, 7));
    }

    #[test]
    fn responses_api_completed_event_at_every_split_point() {
        every_split_point_gives(RESPONSES_STREAM, usage(5, 6));
    }

    #[test]
    fn cr_only_line_endings_and_multi_line_data() {
        let s = "data: {\"usage\":\rdata: {\"prompt_tokens\":1,\"completion_tokens\":2}}\r\r";
        every_split_point_gives(s, usage(1, 2));
    }

    #[test]
    fn a_stream_cut_short_counts_what_it_carried() {
        // Cut in the middle of Anthropic's message_delta: only message_start counted.
        let cut = ANTHROPIC_STREAM.find("event: message_delta").unwrap() + 30;
        let seen = sse(&ANTHROPIC_STREAM.as_bytes()[..cut], &[]);
        assert_eq!(
            seen,
            Usage {
                input_tokens: Some(25),
                output_tokens: Some(1)
            }
        );
        // OpenAI without include_usage reports nothing.
        let no_usage = OPENAI_STREAM.replace(
            "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46}",
            "\"usage\":null",
        );
        assert_eq!(sse(no_usage.as_bytes(), &[]), Usage::default());
    }

    #[test]
    fn comments_other_fields_and_garbage_are_ignored() {
        let s = ": keep-alive\nid: 7\nretry: 10\nevent: x\ndata: not json usage\n\ndatax: {\"usage\":{\"prompt_tokens\":9}}\n\ndata:{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n";
        every_split_point_gives(s, usage(3, 4));
    }

    #[test]
    fn oversized_events_are_skipped_not_buffered() {
        let big = format!(
            "data: {{\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":1}},\"pad\":\"{}\"}}\n\ndata: {{\"usage\":{{\"prompt_tokens\":2,\"completion_tokens\":3}}}}\n\n",
            "x".repeat(MAX_BUFFER + 10)
        );
        let mut p = SseUsage::default();
        for chunk in big.as_bytes().chunks(64 * 1024) {
            p.feed(chunk);
            assert!(p.line.len() <= MAX_BUFFER && p.data.len() <= MAX_BUFFER);
        }
        assert_eq!(p.finish(), usage(2, 3));
    }

    #[test]
    fn json_bodies_of_every_provider() {
        let openai = br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}"#;
        assert_eq!(json_usage(openai), usage(10, 20));
        let embeddings =
            br#"{"object":"list","data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        assert_eq!(
            json_usage(embeddings),
            Usage {
                input_tokens: Some(8),
                output_tokens: None
            }
        );
        let responses = br#"{"id":"resp_1","object":"response","usage":{"input_tokens":4,"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0}}}"#;
        assert_eq!(json_usage(responses), usage(4, 2));
        let anthropic = br#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":11,"output_tokens":22,"cache_read_input_tokens":0}}"#;
        assert_eq!(json_usage(anthropic), usage(11, 22));
        let gemini = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":6,"thoughtsTokenCount":4,"totalTokenCount":15}}"#;
        assert_eq!(json_usage(gemini), usage(5, 10));
        let gemini_array = br#"[{"usageMetadata":{"promptTokenCount":5}},{"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":9}}]"#;
        assert_eq!(json_usage(gemini_array), usage(5, 9));
        assert_eq!(json_usage(b"  \n{\"usage\":null}"), Usage::default());
        assert_eq!(json_usage(b"<html>"), Usage::default());
        assert_eq!(
            json_usage(b"{\"usage\":{\"prompt_tokens\":-1}}"),
            Usage::default()
        );
    }

    #[test]
    fn json_parser_buffers_across_chunks_and_gives_up_when_too_big() {
        let body = br#"{"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        let mut p = UsageParser::new(BodyKind::Json);
        for c in body.chunks(5) {
            p.feed(&Bytes::copy_from_slice(c));
        }
        assert_eq!(p.finish(), usage(1, 2));
        let mut p = UsageParser::new(BodyKind::Json);
        p.feed(&Bytes::from_static(body));
        assert_eq!(p.finish(), usage(1, 2));
        let mut p = JsonUsage::default();
        p.feed(Bytes::from(vec![b' '; MAX_BUFFER]));
        p.feed(Bytes::from_static(body));
        assert_eq!(p.finish(), Usage::default());
    }

    #[test]
    fn content_types() {
        let kind = |s: &str| BodyKind::from_content_type(Some(s.as_bytes()));
        assert_eq!(
            kind("text/event-stream; charset=utf-8"),
            BodyKind::EventStream
        );
        assert_eq!(kind("Application/JSON"), BodyKind::Json);
        assert_eq!(kind("application/problem+json"), BodyKind::Json);
        assert_eq!(kind("text/plain"), BodyKind::Other);
        assert_eq!(BodyKind::from_content_type(None), BodyKind::Other);
    }

    fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
        let known = prop::sample::select(vec![
            OPENAI_STREAM,
            ANTHROPIC_STREAM,
            GEMINI_STREAM,
            RESPONSES_STREAM,
        ])
        .prop_map(|s| s.as_bytes().to_vec());
        let fragments = prop::collection::vec(
            prop::sample::select(vec![
                &b"data: "[..],
                b"data:",
                b"event: x",
                b"\n",
                b"\r",
                b"\r\n",
                b"{\"usage\":{\"prompt_tokens\":",
                b"{\"usageMetadata\":{\"candidatesTokenCount\":",
                b"7",
                b"}}",
                b"}",
                b": comment",
                b"\xff\xfe",
            ]),
            0..40,
        )
        .prop_map(|v| v.concat());
        prop_oneof![known, fragments, prop::collection::vec(any::<u8>(), 0..300)]
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_usage_and_never_panics(
            stream in stream_strategy(),
            mut cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let whole = sse(&stream, &[]);
            let mut cuts: Vec<usize> = cuts.drain(..).map(|i| i.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(sse(&stream, &cuts), whole);
        }

        #[test]
        fn json_usage_never_panics(body in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = json_usage(&body);
        }

        /// The walker reads exactly what a full serde parse of the whole
        /// document reads, whatever surrounds the usage members.
        #[test]
        fn json_usage_agrees_with_a_full_parse(
            doc in usage_document(),
            as_array in any::<bool>(),
        ) {
            let doc = if as_array {
                Value::Array(vec![doc.clone(), Value::Object(Default::default()), doc])
            } else {
                doc
            };
            for text in [serde_json::to_string(&doc).unwrap(), serde_json::to_string_pretty(&doc).unwrap()] {
                prop_assert_eq!(json_usage(text.as_bytes()), reference::json_usage(text.as_bytes()));
            }
        }
    }

    use serde_json::Value;

    fn counts() -> impl Strategy<Value = Value> {
        let n = prop::option::of(0u64..1_000_000);
        (
            n.clone(),
            n.clone(),
            n.clone(),
            n,
            crate::json::tests::any_json(),
        )
            .prop_map(|(p, c, i, o, extra)| {
                let mut m = serde_json::Map::new();
                for (k, v) in [
                    ("prompt_tokens", p),
                    ("completion_tokens", c),
                    ("input_tokens", i),
                    ("output_tokens", o),
                    ("promptTokenCount", p),
                    ("candidatesTokenCount", c),
                    ("thoughtsTokenCount", o),
                ] {
                    if let Some(v) = v {
                        m.insert(k.into(), v.into());
                    }
                }
                m.insert("details".into(), extra);
                Value::Object(m)
            })
    }

    /// An object with any of the usage members (well typed, as providers
    /// send them) among arbitrary others.
    fn usage_document() -> impl Strategy<Value = Value> {
        let maybe = |s: BoxedStrategy<Value>| prop::option::of(prop_oneof![Just(Value::Null), s]);
        let nested = || {
            (counts(), crate::json::tests::any_json())
                .prop_map(|(usage, text)| {
                    serde_json::json!({"id": "x", "content": [{"text": text}], "usage": usage})
                })
                .boxed()
        };
        (
            maybe(counts().boxed()),
            maybe(nested()),
            maybe(nested()),
            maybe(counts().boxed()),
            prop::collection::btree_map("[a-z\"{}]{1,8}", crate::json::tests::any_json(), 0..6),
        )
            .prop_map(|(usage, message, response, gemini, others)| {
                let mut m: serde_json::Map<String, Value> = others.into_iter().collect();
                for (k, v) in [
                    ("usage", usage),
                    ("message", message),
                    ("response", response),
                    ("usageMetadata", gemini),
                ] {
                    match v {
                        Some(v) => m.insert(k.into(), v),
                        None => m.remove(k),
                    };
                }
                Value::Object(m)
            })
    }

    /// The previous implementation, a serde walk of the whole document:
    /// the behaviour the walker must keep.
    mod reference {
        use super::super::Usage;
        use serde::Deserialize;

        #[derive(Deserialize)]
        struct Counts {
            #[serde(default)]
            prompt_tokens: Option<u64>,
            #[serde(default)]
            completion_tokens: Option<u64>,
            #[serde(default)]
            input_tokens: Option<u64>,
            #[serde(default)]
            output_tokens: Option<u64>,
        }

        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct GeminiCounts {
            #[serde(default)]
            prompt_token_count: Option<u64>,
            #[serde(default)]
            candidates_token_count: Option<u64>,
            #[serde(default)]
            thoughts_token_count: Option<u64>,
        }

        fn counts(c: &Counts) -> Usage {
            super::super::Counts {
                prompt_tokens: c.prompt_tokens,
                completion_tokens: c.completion_tokens,
                input_tokens: c.input_tokens,
                output_tokens: c.output_tokens,
            }
            .usage()
        }

        fn gemini(g: &GeminiCounts) -> Usage {
            super::super::GeminiCounts {
                prompt_token_count: g.prompt_token_count,
                candidates_token_count: g.candidates_token_count,
                thoughts_token_count: g.thoughts_token_count,
            }
            .usage()
        }

        #[derive(Deserialize)]
        struct Envelope {
            #[serde(default)]
            usage: Option<Counts>,
            #[serde(default)]
            message: Option<Nested>,
            #[serde(default)]
            response: Option<Nested>,
            #[serde(default, rename = "usageMetadata")]
            usage_metadata: Option<GeminiCounts>,
        }

        #[derive(Deserialize)]
        struct Nested {
            #[serde(default)]
            usage: Option<Counts>,
        }

        impl Envelope {
            fn usage(&self) -> Usage {
                let mut usage = Usage::default();
                for c in [
                    self.message.as_ref().and_then(|m| m.usage.as_ref()),
                    self.response.as_ref().and_then(|r| r.usage.as_ref()),
                    self.usage.as_ref(),
                ]
                .into_iter()
                .flatten()
                {
                    usage.merge(counts(c));
                }
                if let Some(g) = &self.usage_metadata {
                    usage.merge(gemini(g));
                }
                usage
            }
        }

        pub fn json_usage(body: &[u8]) -> Usage {
            let body = body.trim_ascii_start();
            match body.first() {
                Some(b'{') => serde_json::from_slice::<Envelope>(body)
                    .map(|e| e.usage())
                    .unwrap_or_default(),
                Some(b'[') => {
                    let mut usage = Usage::default();
                    if let Ok(items) = serde_json::from_slice::<Vec<Envelope>>(body) {
                        for e in items {
                            usage.merge(e.usage());
                        }
                    }
                    usage
                }
                _ => Usage::default(),
            }
        }
    }
}
