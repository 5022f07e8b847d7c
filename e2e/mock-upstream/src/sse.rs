//! Server-sent event framing and the lazily rendered event sequence of a
//! streamed reply.
//!
//! Events are rendered one at a time as the body is polled, so a huge stream
//! costs no more memory than a short one and the first byte leaves at once.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::text::Chunks;

/// Line ending between events. Gemini terminates events with CRLF pairs, the
/// others with bare LFs; clients must handle both, so the mock reproduces each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Newline {
    Lf,
    CrLf,
}

impl Newline {
    fn as_str(self) -> &'static str {
        match self {
            Newline::Lf => "\n",
            Newline::CrLf => "\r\n",
        }
    }
}

/// `event: <name>\ndata: <json>\n\n` (the `event:` line only when named).
pub(crate) fn frame(name: Option<&str>, json: &[u8], newline: Newline) -> Bytes {
    let nl = newline.as_str();
    let mut out = BytesMut::with_capacity(json.len() + 32);
    if let Some(name) = name {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_slice(nl.as_bytes());
    }
    out.put_slice(b"data: ");
    out.put_slice(json);
    out.put_slice(nl.as_bytes());
    out.put_slice(nl.as_bytes());
    out.freeze()
}

/// An OpenAI-style `data: <json>\n\n` event.
pub(crate) fn data<T: Serialize>(value: &T) -> Bytes {
    frame(None, &to_json(value), Newline::Lf)
}

/// An Anthropic-style named event; the name is the payload's `type`.
pub(crate) fn named<T: Serialize>(name: &str, value: &T) -> Bytes {
    frame(Some(name), &to_json(value), Newline::Lf)
}

/// Serialises a response type. Our types have string keys and no fallible
/// `Serialize` impls, so this cannot fail.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("mock response types always serialise")
}

/// A JSON string literal, quotes and escapes included.
pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings always serialise")
}

/// Where an event sits in the stream. Pacing and `x-mock-drop` count only
/// content events; the preamble always goes out straight away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Preamble,
    Content,
    Trailer,
}

type Render = Box<dyn FnMut(&str) -> Bytes + Send>;

/// A streamed reply: fixed preamble events, one rendered event per text
/// chunk, fixed trailer events.
pub(crate) struct Events {
    preamble: std::vec::IntoIter<Bytes>,
    chunks: Chunks,
    render: Render,
    trailer: std::vec::IntoIter<Bytes>,
}

impl Events {
    pub(crate) fn new(
        preamble: Vec<Bytes>,
        chunks: Chunks,
        render: impl FnMut(&str) -> Bytes + Send + 'static,
        trailer: Vec<Bytes>,
    ) -> Self {
        Self {
            preamble: preamble.into_iter(),
            chunks,
            render: Box::new(render),
            trailer: trailer.into_iter(),
        }
    }
}

impl Iterator for Events {
    type Item = (Kind, Bytes);

    fn next(&mut self) -> Option<(Kind, Bytes)> {
        if let Some(event) = self.preamble.next() {
            return Some((Kind::Preamble, event));
        }
        if let Some(text) = self.chunks.next() {
            return Some((Kind::Content, (self.render)(&text)));
        }
        self.trailer.next().map(|event| (Kind::Trailer, event))
    }
}

/// Renders content events as `prefix + json_string(text) + suffix`, with the
/// constant parts serialised once per stream rather than once per chunk.
pub(crate) struct Template {
    prefix: Bytes,
    suffix: Bytes,
}

impl Template {
    /// Builds the template from a sample payload containing `marker` (a
    /// unique string) where the chunk text goes, framed as an event.
    pub(crate) fn new(name: Option<&str>, payload: &[u8], marker: &str, newline: Newline) -> Self {
        let framed = frame(name, payload, newline);
        let marker = json_string(marker);
        let at = find(&framed, marker.as_bytes()).expect("template payload contains the marker");
        Self {
            prefix: framed.slice(..at),
            suffix: framed.slice(at + marker.len()..),
        }
    }

    pub(crate) fn render(&self, text: &str) -> Bytes {
        let text = json_string(text);
        let mut out = BytesMut::with_capacity(self.prefix.len() + text.len() + self.suffix.len());
        out.put_slice(&self.prefix);
        out.put_slice(text.as_bytes());
        out.put_slice(&self.suffix);
        out.freeze()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Placeholder text used to build a [`Template`].
pub(crate) const MARKER: &str = "\u{1}strake-mock-chunk\u{1}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_renders_escaped_text() {
        let payload = serde_json::json!({"delta": {"text": MARKER}, "i": 0});
        let t = Template::new(Some("x"), &to_json(&payload), MARKER, Newline::Lf);
        let out = t.render("a \"b\"");
        assert_eq!(
            &out[..],
            b"event: x\ndata: {\"delta\":{\"text\":\"a \\\"b\\\"\"},\"i\":0}\n\n"
        );
    }

    #[test]
    fn events_run_preamble_content_trailer() {
        let events = Events::new(
            vec![Bytes::from_static(b"start")],
            Chunks::new(4, 2),
            |t| Bytes::from(t.to_owned()),
            vec![Bytes::from_static(b"end")],
        );
        let kinds: Vec<_> = events.collect();
        assert_eq!(kinds.len(), 4);
        assert_eq!(kinds[0].0, Kind::Preamble);
        assert_eq!(kinds[1], (Kind::Content, Bytes::from_static(b"This is")));
        assert_eq!(
            kinds[2],
            (Kind::Content, Bytes::from_static(b" a deterministic"))
        );
        assert_eq!(kinds[3].0, Kind::Trailer);
    }
}
