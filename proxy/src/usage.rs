//! What a response's usage was: token counts read from the bytes as they
//! pass through, without holding any of them back.
//!
//! Every provider reports usage in the body, in one of a few places:
//!
//! | API | JSON body | SSE stream | cache reads / writes |
//! | --- | --- | --- | --- |
//! | OpenAI chat / completions / embeddings | `usage.prompt_tokens`, `usage.completion_tokens` | the final chunk's `usage` (with `stream_options.include_usage`, which the proxy asks for) | `prompt_tokens_details.cached_tokens` |
//! | OpenAI Responses | `usage.input_tokens`, `usage.output_tokens` | `response.completed` → `response.usage` | `input_tokens_details.cached_tokens` |
//! | Anthropic | `usage.input_tokens`, `usage.output_tokens` | `message_start` → `message.usage`, then `message_delta` → `usage` (cumulative) | `cache_read_input_tokens`, `cache_creation_input_tokens`, beside `input_tokens` |
//! | Gemini | `usageMetadata.promptTokenCount`, `candidatesTokenCount` (+ `thoughtsTokenCount`) | `usageMetadata` in every chunk; the last is the total | `cachedContentTokenCount` |
//!
//! So one rule covers them all: every count seen replaces the previous one
//! of its kind, and the last one wins. A stream cut short reports what it
//! carried so far. Bodies and events of any size are read as they pass, in
//! bounded memory, in one pass: the scanner ([`json::Scanner`]) walks into
//! the usage objects and reports each count as it goes by, so no usage
//! object is kept to be walked a second time.

use bytes::Bytes;

use crate::json::{self, Found, Member, Want};

/// Token counts, the same meaning whatever the provider. `None`: not
/// reported.
///
/// `input_tokens` is every input token, cached and cache-written ones
/// included (OpenAI's `prompt_tokens` and Gemini's `promptTokenCount`
/// already are; Anthropic reports its cache reads and writes beside
/// `input_tokens`, so they are added to it). `cached_input_tokens` and
/// `cache_write_tokens` are subsets of `input_tokens`, priced apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Input tokens read from the provider's prompt cache.
    pub cached_input_tokens: Option<u64>,
    /// Input tokens written to the provider's prompt cache (Anthropic).
    pub cache_write_tokens: Option<u64>,
}

impl Usage {
    /// Input plus output, counting missing numbers as zero.
    pub fn total(&self) -> u64 {
        self.input_tokens
            .unwrap_or(0)
            .saturating_add(self.output_tokens.unwrap_or(0))
    }
}

/// The counts as the provider wrote them, before normalising: a stream
/// reports them piecemeal (Anthropic's `message_start`, then
/// `message_delta`), and each later report replaces an earlier one field
/// by field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Reported {
    /// `prompt_tokens`, `input_tokens` or `promptTokenCount`.
    input: Option<u64>,
    output: Option<u64>,
    /// Cache reads counted within `input` (OpenAI, Gemini).
    cached_within: Option<u64>,
    /// Cache reads and writes counted beside `input` (Anthropic).
    cache_read_beside: Option<u64>,
    cache_write_beside: Option<u64>,
}

impl Reported {
    fn merge(&mut self, seen: Reported) {
        let later = |field: &mut Option<u64>, seen: Option<u64>| {
            if seen.is_some() {
                *field = seen;
            }
        };
        later(&mut self.input, seen.input);
        later(&mut self.output, seen.output);
        later(&mut self.cached_within, seen.cached_within);
        later(&mut self.cache_read_beside, seen.cache_read_beside);
        later(&mut self.cache_write_beside, seen.cache_write_beside);
    }

    fn usage(&self) -> Usage {
        let parts = [self.input, self.cache_read_beside, self.cache_write_beside];
        let input = parts.iter().flatten().copied().reduce(u64::saturating_add);
        Usage {
            input_tokens: input,
            output_tokens: self.output,
            cached_input_tokens: self.cache_read_beside.or(self.cached_within),
            cache_write_tokens: self.cache_write_beside,
        }
    }
}

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
            UsageParser::Json(p) => p.feed(chunk),
            UsageParser::Sse(p) => p.feed(chunk),
            UsageParser::None => {}
        }
    }

    /// The usage seen so far.
    pub fn finish(&mut self) -> Usage {
        match self {
            UsageParser::Json(p) => p.finish(),
            UsageParser::Sse(p) => p.finish(),
            UsageParser::None => Usage::default(),
        }
    }

    /// Whether an event stream's final event has gone by ([`SseUsage::ended`]).
    pub fn stream_ended(&self) -> bool {
        matches!(self, UsageParser::Sse(p) if p.ended())
    }
}

/// What the scan reports: the usage objects, their counts, and the
/// event's `type`, which names the last event of an Anthropic or
/// Responses stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// `usage`.
    Top,
    /// `usageMetadata`.
    Gemini,
    /// `message.usage`.
    Message,
    /// `response.usage`.
    Response,
    PromptDetails,
    InputDetails,
    // The counts of the usage object being read.
    PromptTokens,
    CompletionTokens,
    PromptCached,
    InputTokens,
    OutputTokens,
    InputCached,
    CacheRead,
    CacheCreation,
    PromptTokenCount,
    CandidatesTokenCount,
    ThoughtsTokenCount,
    CachedContentTokenCount,
    Type,
}

const fn member(name: &'static str, want: Want<Field>) -> Member<Field> {
    Member { name, want }
}

/// A usage object's counts, OpenAI's names or Anthropic's.
const COUNTS: &[Member<Field>] = &[
    member("prompt_tokens", Want::Value(Field::PromptTokens)),
    member("completion_tokens", Want::Value(Field::CompletionTokens)),
    member(
        "prompt_tokens_details",
        Want::Object(Field::PromptDetails, PROMPT_DETAILS),
    ),
    member("input_tokens", Want::Value(Field::InputTokens)),
    member("output_tokens", Want::Value(Field::OutputTokens)),
    member(
        "input_tokens_details",
        Want::Object(Field::InputDetails, INPUT_DETAILS),
    ),
    member("cache_read_input_tokens", Want::Value(Field::CacheRead)),
    member(
        "cache_creation_input_tokens",
        Want::Value(Field::CacheCreation),
    ),
];
const PROMPT_DETAILS: &[Member<Field>] =
    &[member("cached_tokens", Want::Value(Field::PromptCached))];
const INPUT_DETAILS: &[Member<Field>] = &[member("cached_tokens", Want::Value(Field::InputCached))];

/// Gemini's `usageMetadata`.
const GEMINI_COUNTS: &[Member<Field>] = &[
    member("promptTokenCount", Want::Value(Field::PromptTokenCount)),
    member(
        "candidatesTokenCount",
        Want::Value(Field::CandidatesTokenCount),
    ),
    member("thoughtsTokenCount", Want::Value(Field::ThoughtsTokenCount)),
    member(
        "cachedContentTokenCount",
        Want::Value(Field::CachedContentTokenCount),
    ),
];

/// Where usage sits in a JSON document or SSE event, from its root
/// object (see the table above).
const USAGE: &[Member<Field>] = &[
    member("usage", Want::Object(Field::Top, COUNTS)),
    member("usageMetadata", Want::Object(Field::Gemini, GEMINI_COUNTS)),
    member("message", Want::Within(MESSAGE_USAGE)),
    member("response", Want::Within(RESPONSE_USAGE)),
    member("type", Want::Value(Field::Type)),
];
const MESSAGE_USAGE: &[Member<Field>] = &[member("usage", Want::Object(Field::Message, COUNTS))];
const RESPONSE_USAGE: &[Member<Field>] = &[member("usage", Want::Object(Field::Response, COUNTS))];

/// The `type`s of the events that end a stream as its protocol says:
/// Anthropic's `message_stop`, and the Responses API's terminal events
/// (`response.completed`, or the request's own end as `incomplete` or
/// `failed`). OpenAI chat streams end with `data: [DONE]` instead
/// ([`DONE`]). Gemini streams have no closing event.
const FINAL_EVENT_TYPES: [&[u8]; 4] = [
    b"\"message_stop\"",
    b"\"response.completed\"",
    b"\"response.incomplete\"",
    b"\"response.failed\"",
];

/// The data of an OpenAI-style stream's last event.
const DONE: &[u8] = b"[DONE]";

/// The usage members of one root object, as they are found.
#[derive(Debug, Default)]
struct RootCounts {
    top: Option<Counts>,
    gemini: Option<GeminiCounts>,
    message: Option<Counts>,
    response: Option<Counts>,
    /// The object is a stream's final event.
    final_event: bool,
    /// The usage object being read, until it ends.
    reading: Counts,
    reading_gemini: GeminiCounts,
}

impl RootCounts {
    /// A later member of the same name replaces an earlier one, even with
    /// `null`; a usage object counts once it has ended.
    fn found(&mut self, found: Found<'_, Field>) {
        match found {
            Found::Open(Field::Top | Field::Message | Field::Response) => {
                self.reading = Counts::default();
            }
            Found::Open(Field::Gemini) => self.reading_gemini = GeminiCounts::default(),
            Found::Open(Field::PromptDetails) => self.reading.prompt_cached_tokens = None,
            Found::Open(Field::InputDetails) => self.reading.input_cached_tokens = None,
            Found::Value {
                id: Field::Type,
                value,
            } => self.final_event = value.is_some_and(|v| FINAL_EVENT_TYPES.contains(&v)),
            Found::Value { id, value } => self.count(id, value.and_then(json::as_u64)),
            Found::End { id, read } => self.end(id, read),
            Found::Open(_) | Found::Root | Found::RootEnd => {}
        }
    }

    /// A count of the usage object being read; one that is not a plain
    /// non-negative integer reads as absent.
    fn count(&mut self, id: Field, n: Option<u64>) {
        let (c, g) = (&mut self.reading, &mut self.reading_gemini);
        let field = match id {
            Field::PromptTokens => &mut c.prompt_tokens,
            Field::CompletionTokens => &mut c.completion_tokens,
            Field::PromptCached => &mut c.prompt_cached_tokens,
            Field::InputTokens => &mut c.input_tokens,
            Field::OutputTokens => &mut c.output_tokens,
            Field::InputCached => &mut c.input_cached_tokens,
            Field::CacheRead => &mut c.cache_read_input_tokens,
            Field::CacheCreation => &mut c.cache_creation_input_tokens,
            Field::PromptTokenCount => &mut g.prompt_token_count,
            Field::CandidatesTokenCount => &mut g.candidates_token_count,
            Field::ThoughtsTokenCount => &mut g.thoughts_token_count,
            Field::CachedContentTokenCount => &mut g.cached_content_token_count,
            _ => return,
        };
        *field = n;
    }

    /// A usage object's value ended: `read` if it was an object (else
    /// `null`, say, and the usage reads as absent).
    fn end(&mut self, id: Field, read: bool) {
        let counts = |reading: &mut Counts| read.then(|| std::mem::take(reading));
        match id {
            Field::Top => self.top = counts(&mut self.reading),
            Field::Message => self.message = counts(&mut self.reading),
            Field::Response => self.response = counts(&mut self.reading),
            Field::Gemini => {
                self.gemini = read.then(|| std::mem::take(&mut self.reading_gemini));
            }
            Field::PromptDetails if !read => self.reading.prompt_cached_tokens = None,
            Field::InputDetails if !read => self.reading.input_cached_tokens = None,
            _ => {}
        }
    }

    fn reported(&self) -> Reported {
        let mut usage = Reported::default();
        // A top-level `usage` wins over a nested one.
        for counts in [&self.message, &self.response, &self.top]
            .into_iter()
            .flatten()
        {
            usage.merge(counts.reported());
        }
        if let Some(g) = &self.gemini {
            usage.merge(g.reported());
        }
        usage
    }
}

/// Usage in a JSON document fed chunk by chunk: an object, or (Gemini's
/// `streamGenerateContent` without `alt=sse`) an array of chunk objects, of
/// which the last report wins. Nothing is kept but the counts, so a body of any size is read in bounded memory (see
/// [`json::Scanner`]), whether `usage` comes first or after megabytes of
/// embeddings.
#[derive(Debug)]
pub struct JsonUsage {
    scanner: json::Scanner<Field>,
    root: RootCounts,
    usage: Reported,
    /// A root object that closed was a stream's final event.
    final_event: bool,
}

impl Default for JsonUsage {
    fn default() -> JsonUsage {
        JsonUsage {
            scanner: json::Scanner::new(USAGE),
            root: RootCounts::default(),
            usage: Reported::default(),
            final_event: false,
        }
    }
}

impl JsonUsage {
    pub fn feed(&mut self, chunk: &[u8]) {
        let (root, usage, final_event) = (&mut self.root, &mut self.usage, &mut self.final_event);
        self.scanner.feed(chunk, &mut |found| match found {
            Found::Root => *root = RootCounts::default(),
            Found::RootEnd => {
                let closed = std::mem::take(root);
                *final_event |= closed.final_event;
                usage.merge(closed.reported());
            }
            found => root.found(found),
        });
    }

    pub fn finish(&mut self) -> Usage {
        self.reported().usage()
    }

    /// What the document reported; a root object it was cut inside counts
    /// with the members it completed.
    fn reported(&mut self) -> Reported {
        if self.scanner.in_root() {
            let open = std::mem::take(&mut self.root).reported();
            self.usage.merge(open);
            self.scanner.reset();
        }
        self.usage
    }

    /// Ready for the next document.
    fn reset(&mut self) {
        self.scanner.reset();
        self.root = RootCounts::default();
        self.usage = Reported::default();
        self.final_event = false;
    }
}

/// Usage in one complete JSON document.
pub fn json_usage(body: &[u8]) -> Usage {
    let mut p = JsonUsage::default();
    p.feed(body);
    p.finish()
}

/// An incremental `text/event-stream` parser (the WHATWG framing: lines end
/// in LF, CRLF or CR; an empty line ends an event; `data:` lines join with
/// LF). Chunk boundaries may fall anywhere, including inside a CRLF. An
/// event's data is scanned as it arrives, never kept: an event of any size
/// is read in bounded memory.
#[derive(Debug, Default)]
pub struct SseUsage {
    /// The start of the current line, until it shows whether it is a
    /// `data` line.
    head: [u8; DATA_FIELD.len()],
    head_len: usize,
    line: Line,
    /// The current event has a data line already: the next joins with LF.
    has_data: bool,
    /// The current event's data.
    event: JsonUsage,
    /// The previous chunk ended in CR: an LF starting the next one belongs to it.
    after_cr: bool,
    usage: Reported,
    /// The current event's data, while it may still be [`DONE`].
    data_head: [u8; DONE.len()],
    /// Bytes of data in the current event (counted up to past [`DONE`]'s length).
    data_len: usize,
    /// The stream's final event went by ([`SseUsage::ended`]).
    ended: bool,
}

const DATA_FIELD: &[u8; 5] = b"data:";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Line {
    /// Its first bytes, not yet telling.
    #[default]
    Head,
    /// A `data:` line's value, with its optional leading space still to skip.
    Data { space: bool },
    /// Any other field, or a comment.
    Skip,
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
        while let Some(end) = memchr::memchr2(b'\n', b'\r', chunk) {
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
        self.usage.usage()
    }

    /// Whether the event that ends the stream as its protocol says has
    /// gone by whole (`[DONE]`, `message_stop`, `response.completed`, …):
    /// nothing the client needs comes after it, so a client that leaves
    /// now has had a complete answer.
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn push_line_part(&mut self, mut part: &[u8]) {
        if part.is_empty() {
            return;
        }
        if self.line == Line::Head {
            let take = part.len().min(DATA_FIELD.len() - self.head_len);
            self.head[self.head_len..self.head_len + take].copy_from_slice(&part[..take]);
            self.head_len += take;
            part = &part[take..];
            if !DATA_FIELD.starts_with(&self.head[..self.head_len]) {
                self.line = Line::Skip;
            } else if self.head_len == DATA_FIELD.len() {
                self.start_data_line();
                self.line = Line::Data { space: true };
            }
        }
        if let Line::Data { space } = self.line {
            if space && !part.is_empty() {
                part = part.strip_prefix(b" ").unwrap_or(part);
                self.line = Line::Data { space: false };
            }
            if self.data_len <= DONE.len() {
                let take = part.len().min(DONE.len() + 1 - self.data_len);
                for (i, b) in part[..take].iter().enumerate() {
                    if let Some(slot) = self.data_head.get_mut(self.data_len + i) {
                        *slot = *b;
                    }
                }
                self.data_len += take;
            }
            self.event.feed(part);
        }
    }

    /// A data line joins the event's data after an LF, which JSON reads as
    /// whitespace.
    fn start_data_line(&mut self) {
        if self.has_data {
            self.event.feed(b"\n");
            // A second data line: the data is no longer `[DONE]`.
            self.data_len = DONE.len() + 1;
        }
        self.has_data = true;
    }

    fn end_line(&mut self) {
        if self.line == Line::Head {
            match &self.head[..self.head_len] {
                [] => self.dispatch(),
                // `data` alone: a data line with an empty value.
                b"data" => self.start_data_line(),
                _ => {}
            }
        }
        self.line = Line::Head;
        self.head_len = 0;
    }

    fn dispatch(&mut self) {
        if std::mem::take(&mut self.has_data) {
            let seen = self.event.reported();
            self.usage.merge(seen);
            let done = self.data_len == DONE.len() && self.data_head == *DONE;
            self.ended |= self.event.final_event || done;
            self.event.reset();
        }
        self.data_len = 0;
    }
}

/// A usage object's counts, OpenAI's names or Anthropic's.
#[derive(Debug, Default)]
struct Counts {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    /// `prompt_tokens_details.cached_tokens` (Chat Completions).
    prompt_cached_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    /// `input_tokens_details.cached_tokens` (Responses).
    input_cached_tokens: Option<u64>,
    /// Anthropic's, beside `input_tokens`.
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

/// Gemini's `usageMetadata`.
#[derive(Debug, Default)]
struct GeminiCounts {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    /// Thinking tokens are billed as output but reported apart.
    thoughts_token_count: Option<u64>,
    /// Within `promptTokenCount`.
    cached_content_token_count: Option<u64>,
}

impl Counts {
    fn reported(&self) -> Reported {
        Reported {
            input: self.input_tokens.or(self.prompt_tokens),
            output: self.output_tokens.or(self.completion_tokens),
            cached_within: self.input_cached_tokens.or(self.prompt_cached_tokens),
            cache_read_beside: self.cache_read_input_tokens,
            cache_write_beside: self.cache_creation_input_tokens,
        }
    }
}

impl GeminiCounts {
    fn reported(&self) -> Reported {
        let output = match (self.candidates_token_count, self.thoughts_token_count) {
            (None, None) => None,
            (c, t) => Some(c.unwrap_or(0).saturating_add(t.unwrap_or(0))),
        };
        Reported {
            input: self.prompt_token_count,
            output,
            cached_within: self.cached_content_token_count,
            ..Reported::default()
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
            ..Usage::default()
        }
    }

    fn cached(i: u64, o: u64, read: u64, write: Option<u64>) -> Usage {
        Usage {
            cached_input_tokens: Some(read),
            cache_write_tokens: write,
            ..usage(i, o)
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

    /// Whether `stream`, fed in two parts split at `cut`, had ended.
    fn ended_after(stream: &[u8], cut: usize) -> bool {
        let mut p = SseUsage::default();
        p.feed(&stream[..cut]);
        p.feed(&stream[cut..]);
        p.ended()
    }

    #[test]
    fn the_final_event_of_each_protocol_ends_the_stream_at_every_split_point() {
        for stream in [OPENAI_STREAM, ANTHROPIC_STREAM, RESPONSES_STREAM] {
            let b = stream.as_bytes();
            // The last event's closing blank line is what completes it.
            let last_start = b[..b.len() - 2]
                .windows(2)
                .rposition(|w| w == b"\n\n")
                .unwrap()
                + 2;
            for cut in 0..=b.len() {
                assert!(ended_after(b, cut), "{stream} split at {cut}");
                let mut p = SseUsage::default();
                p.feed(&b[..cut]);
                assert_eq!(p.ended(), cut == b.len(), "{stream} cut at {cut}");
                if cut < last_start {
                    assert!(!p.ended());
                }
            }
        }
        // Gemini has no closing event.
        assert!(!ended_after(GEMINI_STREAM.as_bytes(), 10));
    }

    #[test]
    fn only_a_whole_final_event_ends_the_stream() {
        for stream in [
            "data: [DONE]x\n\n",
            "data: [DON\n\n",
            "data: [DONE]\ndata: more\n\n",
            "data: {\"type\":\"message_delta\"}\n\n",
            "data: {\"type\":\"response.output_text.done\"}\n\n",
            "data: {\"delta\":{\"type\":\"message_stop\"}}\n\n",
            "event: message_stop\ndata: {\"type\":\"ping\"}\n\n",
            ": [DONE]\n\n",
        ] {
            assert!(!ended_after(stream.as_bytes(), 3), "{stream}");
        }
        for stream in [
            "data:[DONE]\r\n\r\n",
            "data: {\"index\":0,\"type\":\"message_stop\"}\n\n",
            "data: {\"type\":\"response.failed\",\"response\":{}}\n\n",
            "data: {\"type\":\"response.incomplete\"}\n\n",
        ] {
            assert!(ended_after(stream.as_bytes(), 4), "{stream}");
        }
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
                output_tokens: Some(1),
                ..Usage::default()
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
    fn events_of_any_size_are_counted_without_buffering() {
        // Usage after a megabyte of text, in an event and in a body.
        let pad = "x".repeat(3 * 1024 * 1024);
        let event = format!(
            "data: {{\"usage\":{{\"prompt_tokens\":2,\"completion_tokens\":3}}}}\n\ndata: {{\"choices\":[{{\"text\":\"{pad}\"}}],\"usage\":{{\"prompt_tokens\":7,\"completion_tokens\":8}}}}\n\n"
        );
        // The scanner keeps nothing on the heap: its own size is its memory.
        assert!(std::mem::size_of::<json::Scanner<Field>>() <= 1024);
        let mut p = SseUsage::default();
        for chunk in event.as_bytes().chunks(64 * 1024) {
            p.feed(chunk);
        }
        assert_eq!(p.finish(), usage(7, 8));
        let body = format!(
            "{{\"data\":[\"{pad}\"],\"usage\":{{\"prompt_tokens\":9,\"total_tokens\":9}}}}"
        );
        let mut p = JsonUsage::default();
        for chunk in body.as_bytes().chunks(64 * 1024) {
            p.feed(chunk);
        }
        assert_eq!(
            p.finish(),
            Usage {
                input_tokens: Some(9),
                ..Usage::default()
            }
        );
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
                ..Usage::default()
            }
        );
        let responses = br#"{"id":"resp_1","object":"response","usage":{"input_tokens":4,"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0}}}"#;
        assert_eq!(json_usage(responses), usage(4, 2));
        let anthropic = br#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":11,"output_tokens":22,"cache_read_input_tokens":0}}"#;
        assert_eq!(
            json_usage(anthropic),
            Usage {
                cached_input_tokens: Some(0),
                ..usage(11, 22)
            }
        );
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
    fn cached_and_cache_write_tokens_of_every_provider() {
        // Chat Completions: cached tokens are a part of prompt_tokens.
        let chat = br#"{"object":"chat.completion","usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;
        assert_eq!(json_usage(chat), cached(2006, 300, 1920, None));
        // Responses: likewise, of input_tokens.
        let responses = br#"{"object":"response","usage":{"input_tokens":1500,"input_tokens_details":{"cached_tokens":1024},"output_tokens":20,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":1520}}"#;
        assert_eq!(json_usage(responses), cached(1500, 20, 1024, None));
        // Anthropic: cache reads and writes are reported beside input_tokens.
        let anthropic = br#"{"type":"message","usage":{"input_tokens":10,"cache_creation_input_tokens":200,"cache_read_input_tokens":3000,"cache_creation":{"ephemeral_5m_input_tokens":200,"ephemeral_1h_input_tokens":0},"output_tokens":5,"service_tier":"standard"}}"#;
        assert_eq!(json_usage(anthropic), cached(3210, 5, 3000, Some(200)));
        // Gemini: cachedContentTokenCount is a part of promptTokenCount.
        let gemini = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":5000,"candidatesTokenCount":7,"cachedContentTokenCount":4096,"totalTokenCount":5007}}"#;
        assert_eq!(json_usage(gemini), cached(5000, 7, 4096, None));
        // Details that are null or missing leave the counts unreported.
        let plain =
            br#"{"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":null}}"#;
        assert_eq!(json_usage(plain), usage(3, 1));
    }

    #[test]
    fn anthropic_stream_with_cache_fields_in_message_start_and_delta() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":200,\"cache_read_input_tokens\":3000,\"output_tokens\":1}}}\n\n";
        // The current API repeats the cumulative input counts in message_delta.
        let full_delta = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":200,\"cache_read_input_tokens\":3000,\"output_tokens\":42}}\n\n";
        every_split_point_gives(
            &[start, full_delta].concat(),
            cached(3210, 42, 3000, Some(200)),
        );
        // Older responses carry output_tokens only: the input counts stand.
        let short_delta = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\n\n";
        every_split_point_gives(
            &[start, short_delta].concat(),
            cached(3210, 42, 3000, Some(200)),
        );
    }

    #[test]
    fn openai_gemini_and_responses_streams_with_cached_tokens() {
        let chat = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1100,\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":1024}}}\n\ndata: [DONE]\n\n";
        every_split_point_gives(chat, cached(1100, 3, 1024, None));
        let responses = "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":1100,\"input_tokens_details\":{\"cached_tokens\":1024},\"output_tokens\":3}}}\n\n";
        every_split_point_gives(responses, cached(1100, 3, 1024, None));
        let gemini = "data: {\"usageMetadata\":{\"promptTokenCount\":1100,\"cachedContentTokenCount\":1024}}\r\n\r\ndata: {\"usageMetadata\":{\"promptTokenCount\":1100,\"candidatesTokenCount\":3,\"cachedContentTokenCount\":1024}}\r\n\r\n";
        every_split_point_gives(gemini, cached(1100, 3, 1024, None));
    }

    #[test]
    fn json_parser_reads_across_chunks() {
        let body = br#"{"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        let mut p = UsageParser::new(BodyKind::Json);
        for c in body.chunks(5) {
            p.feed(&Bytes::copy_from_slice(c));
        }
        assert_eq!(p.finish(), usage(1, 2));
        let mut p = UsageParser::new(BodyKind::Json);
        p.feed(&Bytes::from_static(body));
        assert_eq!(p.finish(), usage(1, 2));
        // A body cut short counts the usage it carried.
        let mut p = JsonUsage::default();
        p.feed(br#"{"usage":{"prompt_tokens":4},"choices":[{"text":"cut"#);
        assert_eq!(
            p.finish(),
            Usage {
                input_tokens: Some(4),
                ..Usage::default()
            }
        );
    }

    /// Whether `body`, fed whole and split at every byte, reads as `expected`.
    fn every_json_split_gives(body: &str, expected: Usage) {
        let b = body.as_bytes();
        assert_eq!(json_usage(b), expected, "{body}");
        for cut in 0..=b.len() {
            let mut p = JsonUsage::default();
            p.feed(&b[..cut]);
            p.feed(&b[cut..]);
            assert_eq!(p.finish(), expected, "{body} split at {cut}");
        }
    }

    #[test]
    fn a_later_member_replaces_an_earlier_one() {
        let only = |input, output| Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        };
        for (body, expected) in [
            (
                r#"{"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":null}"#,
                Usage::default(),
            ),
            (
                r#"{"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":{"prompt_tokens":3}}"#,
                only(Some(3), None),
            ),
            (
                r#"{"usage":{"prompt_tokens":1,"prompt_tokens":"1","completion_tokens":2}}"#,
                only(None, Some(2)),
            ),
            (
                r#"{"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":4},"prompt_tokens_details":7,"completion_tokens":1}}"#,
                usage(5, 1),
            ),
            (
                r#"{"usageMetadata":{"promptTokenCount":1},"usageMetadata":{"candidatesTokenCount":2}}"#,
                only(None, Some(2)),
            ),
            (
                r#"{"message":{"usage":{"input_tokens":4}},"message":{"id":"m"}}"#,
                only(Some(4), None),
            ),
            // Escaped names are the same names.
            (
                r#"{"us\u0061ge":{"prompt_t\u006fkens":6,"completion_tokens":1}}"#,
                usage(6, 1),
            ),
        ] {
            every_json_split_gives(body, expected);
        }
        // A later member the body was cut inside replaces nothing.
        let mut p = JsonUsage::default();
        p.feed(br#"{"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":"cut"#);
        assert_eq!(p.finish(), usage(1, 2));
        let mut p = JsonUsage::default();
        p.feed(br#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2"#);
        assert_eq!(p.finish(), only(Some(1), None));
    }

    #[test]
    fn a_usage_object_longer_than_the_cap_reads_as_absent() {
        let body = |object_len: usize| {
            let bare = r#"{"prompt_tokens":1,"completion_tokens":2,"pad":""}"#;
            let pad = "x".repeat(object_len - bare.len());
            format!(r#"{{"usage":{{"prompt_tokens":1,"completion_tokens":2,"pad":"{pad}"}}}}"#)
        };
        for (len, expected) in [
            (json::MAX_OBJECT, usage(1, 2)),
            (json::MAX_OBJECT + 1, Usage::default()),
        ] {
            let text = body(len);
            assert_eq!(json_usage(text.as_bytes()), expected, "{len}");
            let mut p = JsonUsage::default();
            for chunk in text.as_bytes().chunks(1000) {
                p.feed(chunk);
            }
            assert_eq!(p.finish(), expected, "{len} in chunks");
        }
    }

    #[test]
    fn a_broken_usage_object_counts_what_it_read_before_the_error() {
        for body in [
            r#"{"usage":{"prompt_tokens":3,"completion_tokens":4 "x":1},"usage":null}"#,
            r#"{"usage":{"prompt_tokens":3,"completion_tokens":4,}}"#,
            r#"{"usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":,}}}"#,
        ] {
            every_json_split_gives(body, usage(3, 4));
        }
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
        fn json_usage_never_panics(
            body in prop::collection::vec(any::<u8>(), 0..200),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let _ = json_usage(&body);
            let _ = chunked_json_usage(&body, &cuts);
        }

        /// The scanner reads exactly what a full serde parse of the whole
        /// document reads, whatever surrounds the usage members and
        /// wherever the chunks end.
        #[test]
        fn json_usage_agrees_with_a_full_parse_in_any_chunking(
            doc in usage_document(),
            as_array in any::<bool>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let doc = if as_array {
                Value::Array(vec![doc.clone(), Value::Object(Default::default()), doc])
            } else {
                doc
            };
            for text in [serde_json::to_string(&doc).unwrap(), serde_json::to_string_pretty(&doc).unwrap()] {
                let expected = reference::json_usage(text.as_bytes());
                prop_assert_eq!(json_usage(text.as_bytes()), expected);
                prop_assert_eq!(chunked_json_usage(text.as_bytes(), &cuts), expected);
                // As one SSE event, split anywhere, too.
                let event: String = text.lines().map(|l| format!("data: {l}\n")).collect::<String>() + "\n";
                let mut split: Vec<usize> = cuts.iter().map(|i| i.index(event.len() + 1)).collect();
                split.sort_unstable();
                prop_assert_eq!(sse(event.as_bytes(), &split), expected);
            }
        }
    }

    proptest! {
        /// A document cut short reads as what it carried: the root objects
        /// that closed, and of the one it was cut inside, the members that
        /// were complete (the oracle: a full parse of just those).
        #[test]
        fn a_document_cut_anywhere_counts_what_it_carried(
            doc in usage_document(),
            as_array in any::<bool>(),
            pretty in any::<bool>(),
            cut in any::<prop::sample::Index>(),
            split in any::<prop::sample::Index>(),
        ) {
            let doc = if as_array {
                Value::Array(vec![doc.clone(), Value::Object(Default::default()), doc])
            } else {
                doc
            };
            let text = if pretty {
                serde_json::to_string_pretty(&doc).unwrap()
            } else {
                serde_json::to_string(&doc).unwrap()
            };
            let b = text.as_bytes();
            let cut = cut.index(b.len() + 1);
            let split = split.index(cut + 1);
            let mut p = JsonUsage::default();
            p.feed(&b[..split]);
            p.feed(&b[split..cut]);
            prop_assert_eq!(p.finish(), cut_reference(b, cut));
        }
    }

    /// What `doc` cut after `cut` bytes carried, read by the reference.
    fn cut_reference(doc: &[u8], cut: usize) -> Usage {
        let body = doc.trim_ascii_start();
        let roots: Vec<&[u8]> = if body.first() == Some(&b'[') {
            crate::json::elements(doc).collect()
        } else {
            vec![body]
        };
        let mut carried = Vec::new();
        for root in roots {
            let start = crate::json::offset(doc, root);
            if start >= cut {
                break;
            }
            carried.push(if start + root.len() <= cut {
                String::from_utf8(root.to_vec()).unwrap()
            } else {
                complete_members(doc, root, cut)
            });
        }
        reference::json_usage(format!("[{}]", carried.join(",")).as_bytes())
    }

    /// The members of `object` (a slice of `doc`) that were complete after
    /// `cut` bytes, as an object: a number or literal needs the delimiter
    /// after it; `message` and `response` count with what they completed.
    fn complete_members(doc: &[u8], object: &[u8], cut: usize) -> String {
        let mut members = Vec::new();
        for (key, value) in crate::json::members(object) {
            let start = crate::json::offset(doc, value);
            let end = start + value.len();
            let delimited = matches!(value[0], b'{' | b'[' | b'"');
            let name = String::from_utf8(key.raw().to_vec()).unwrap();
            if end < cut || (delimited && end == cut) {
                members.push(format!(
                    "\"{name}\":{}",
                    String::from_utf8(value.to_vec()).unwrap()
                ));
            } else if start < cut && value[0] == b'{' && (key.is("message") || key.is("response")) {
                members.push(format!("\"{name}\":{}", complete_members(doc, value, cut)));
            }
        }
        format!("{{{}}}", members.join(","))
    }

    fn chunked_json_usage(body: &[u8], cuts: &[prop::sample::Index]) -> Usage {
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut p = JsonUsage::default();
        let mut start = 0;
        for cut in cuts {
            p.feed(&body[start..cut]);
            start = cut;
        }
        p.feed(&body[start..]);
        p.finish()
    }

    use serde_json::Value;

    fn counts() -> impl Strategy<Value = Value> {
        let n = || prop::option::of(0u64..1_000_000);
        (
            [n(), n(), n(), n()],
            [n(), n(), n()],
            crate::json::tests::any_json(),
        )
            .prop_map(|([p, c, i, o], [cached, read, write], extra)| {
                let mut m = serde_json::Map::new();
                for (k, v) in [
                    ("prompt_tokens", p),
                    ("completion_tokens", c),
                    ("input_tokens", i),
                    ("output_tokens", o),
                    ("cache_read_input_tokens", read),
                    ("cache_creation_input_tokens", write),
                    ("promptTokenCount", p),
                    ("candidatesTokenCount", c),
                    ("thoughtsTokenCount", o),
                    ("cachedContentTokenCount", cached),
                ] {
                    if let Some(v) = v {
                        m.insert(k.into(), v.into());
                    }
                }
                if let Some(cached) = cached {
                    let details = serde_json::json!({"cached_tokens": cached, "audio_tokens": 0});
                    let key = if p.is_some() {
                        "prompt_tokens_details"
                    } else {
                        "input_tokens_details"
                    };
                    m.insert(key.into(), details);
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
        use super::super::{Reported, Usage};
        use serde::Deserialize;

        #[derive(Deserialize)]
        struct Details {
            #[serde(default)]
            cached_tokens: Option<u64>,
        }

        #[derive(Deserialize)]
        struct Counts {
            #[serde(default)]
            prompt_tokens: Option<u64>,
            #[serde(default)]
            completion_tokens: Option<u64>,
            #[serde(default)]
            prompt_tokens_details: Option<Details>,
            #[serde(default)]
            input_tokens: Option<u64>,
            #[serde(default)]
            output_tokens: Option<u64>,
            #[serde(default)]
            input_tokens_details: Option<Details>,
            #[serde(default)]
            cache_read_input_tokens: Option<u64>,
            #[serde(default)]
            cache_creation_input_tokens: Option<u64>,
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
            #[serde(default)]
            cached_content_token_count: Option<u64>,
        }

        fn cached(d: &Option<Details>) -> Option<u64> {
            d.as_ref().and_then(|d| d.cached_tokens)
        }

        fn counts(c: &Counts) -> Reported {
            super::super::Counts {
                prompt_tokens: c.prompt_tokens,
                completion_tokens: c.completion_tokens,
                prompt_cached_tokens: cached(&c.prompt_tokens_details),
                input_tokens: c.input_tokens,
                output_tokens: c.output_tokens,
                input_cached_tokens: cached(&c.input_tokens_details),
                cache_read_input_tokens: c.cache_read_input_tokens,
                cache_creation_input_tokens: c.cache_creation_input_tokens,
            }
            .reported()
        }

        fn gemini(g: &GeminiCounts) -> Reported {
            super::super::GeminiCounts {
                prompt_token_count: g.prompt_token_count,
                candidates_token_count: g.candidates_token_count,
                thoughts_token_count: g.thoughts_token_count,
                cached_content_token_count: g.cached_content_token_count,
            }
            .reported()
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
            fn reported(&self) -> Reported {
                let mut usage = Reported::default();
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
            let reported = match body.first() {
                Some(b'{') => serde_json::from_slice::<Envelope>(body)
                    .map(|e| e.reported())
                    .unwrap_or_default(),
                Some(b'[') => {
                    let mut usage = Reported::default();
                    if let Ok(items) = serde_json::from_slice::<Vec<Envelope>>(body) {
                        for e in items {
                            usage.merge(e.reported());
                        }
                    }
                    usage
                }
                _ => Reported::default(),
            };
            reported.usage()
        }
    }
}
