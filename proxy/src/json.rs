//! A JSON walker for the few members the proxy reads: it steps over the
//! members of a top-level object (or the elements of a top-level array)
//! without decoding them, so only the value that is wanted gets parsed.
//! A full serde walk of a response, every string validated and every
//! ignored member visited, cost more than all the proxying around it.
//!
//! The walk is lenient: it checks structure as far as it needs to find
//! where each value ends, not that the values are valid. Callers parse the
//! values they want with serde, strictly. Where a parser disagreement
//! matters (a restricted token's `model`, which the upstream reads too),
//! use serde on the whole document instead.

/// A member's name as written, escapes included.
#[derive(Clone, Copy, Debug)]
pub struct Key<'a> {
    raw: &'a [u8],
    escaped: bool,
}

impl Key<'_> {
    /// Whether the decoded name is `name`.
    pub fn is(&self, name: &str) -> bool {
        if !self.escaped {
            return self.raw == name.as_bytes();
        }
        // Escaped names are rare: decode them properly.
        let mut quoted = Vec::with_capacity(self.raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(self.raw);
        quoted.push(b'"');
        serde_json::from_slice::<String>(&quoted).is_ok_and(|s| s == name)
    }
}

impl<'a> Key<'a> {
    /// The name as written, between its quotes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

/// Where `part`, a slice of `doc` such as the walker returns, starts in it.
pub fn offset(doc: &[u8], part: &[u8]) -> usize {
    let at = (part.as_ptr() as usize).wrapping_sub(doc.as_ptr() as usize);
    debug_assert!(
        at.checked_add(part.len())
            .is_some_and(|end| end <= doc.len()),
        "not a slice of the document"
    );
    at
}

/// A non-negative integer written as plain digits (what token counts are),
/// else `None`: a sign, a fraction, an exponent, `null`, overflow.
pub fn as_u64(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 20 {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// The members of the object `doc` holds, in order, each value as its raw
/// JSON text. Stops at the first structural error.
pub fn members(doc: &[u8]) -> Members<'_> {
    let (cursor, state) = open(doc, b'{', b'}');
    Members { cursor, state }
}

/// The elements of the array `doc` holds, in order, as raw JSON text.
/// Stops at the first structural error.
pub fn elements(doc: &[u8]) -> Elements<'_> {
    let (cursor, state) = open(doc, b'[', b']');
    Elements { cursor, state }
}

/// A cursor past `open` and the state of the walk: `Done` at once for an
/// empty container or a document that is not one.
fn open(doc: &[u8], open: u8, close: u8) -> (Cursor<'_>, State) {
    let mut cursor = Cursor { b: doc, i: 0 };
    cursor.ws();
    if !cursor.eat(open) {
        return (cursor, State::Done);
    }
    cursor.ws();
    let state = if cursor.eat(close) {
        State::Done
    } else {
        State::First
    };
    (cursor, state)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    First,
    Next,
    Done,
}

pub struct Members<'a> {
    cursor: Cursor<'a>,
    state: State,
}

impl<'a> Iterator for Members<'a> {
    type Item = (Key<'a>, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        next_item(&mut self.cursor, &mut self.state, Cursor::member)
    }
}

pub struct Elements<'a> {
    cursor: Cursor<'a>,
    state: State,
}

impl<'a> Iterator for Elements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<Self::Item> {
        next_item(&mut self.cursor, &mut self.state, Cursor::value)
    }
}

/// The next item of an object or array: the first as it stands, the
/// others after a comma; the walk ends at anything else.
fn next_item<'a, T>(
    c: &mut Cursor<'a>,
    state: &mut State,
    read: impl FnOnce(&mut Cursor<'a>) -> Option<T>,
) -> Option<T> {
    let item = match *state {
        State::Done => None,
        State::First => read(c),
        State::Next => {
            c.ws();
            if c.eat(b',') {
                c.ws();
                read(c)
            } else {
                None
            }
        }
    };
    *state = if item.is_some() {
        State::Next
    } else {
        State::Done
    };
    item
}

/// Bytes that matter inside an object or array: quotes and brackets.
static STRUCTURAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'{' as usize] = true;
    t[b'}' as usize] = true;
    t[b'[' as usize] = true;
    t[b']' as usize] = true;
    t
};

/// Bytes that end a run of plain string contents.
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The index just past the object or array that opens at `b[open]`.
/// Plain locals and slices, no cursor: this loop runs over most of every
/// response and must stay tight.
fn container_end(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    loop {
        let rest = b.get(i..)?;
        i += rest.iter().position(|&c| STRUCTURAL[usize::from(c)])?;
        match b[i] {
            b'"' => {
                let (end, _) = string_end(&b[i + 1..])?;
                i += end + 2;
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            _ => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Some(i);
                }
            }
        }
    }
}

/// Where the string whose contents start at `b[0]` closes (the index of
/// its closing quote), and whether it holds escapes. Most strings are
/// short names and values, for which a plain table loop is quickest; a
/// long one (generated text) gets the vector search after the first bytes.
#[inline(always)]
fn string_end(b: &[u8]) -> Option<(usize, bool)> {
    const SHORT: usize = 24;
    let mut i = 0;
    let mut escaped = false;
    loop {
        let rest = b.get(i..)?;
        let head = &rest[..rest.len().min(SHORT)];
        i += match head.iter().position(|&c| STRING_STOP[usize::from(c)]) {
            Some(at) => at,
            None => memchr::memchr2(b'"', b'\\', rest)?,
        };
        if b[i] == b'"' {
            return Some((i, escaped));
        }
        escaped = true;
        i += 2; // the escaped byte, whatever it is
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        self.i += usize::from(hit);
        hit
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// `"name": value`, the cursor on the opening quote.
    fn member(&mut self) -> Option<(Key<'a>, &'a [u8])> {
        let (raw, escaped) = self.string()?;
        self.ws();
        if !self.eat(b':') {
            return None;
        }
        self.ws();
        Some((Key { raw, escaped }, self.value()?))
    }

    /// A string's contents and whether they hold escapes, the cursor on
    /// its opening quote; leaves the cursor after the closing one.
    #[inline(always)]
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let start = self.i + 1;
        let (end, escaped) = string_end(self.b.get(start..)?)?;
        self.i = start + end + 1;
        Some((&self.b[start..start + end], escaped))
    }

    /// One value's raw text, the cursor on its first byte.
    fn value(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'{' | b'[' => self.i = container_end(self.b, self.i)?,
            b',' | b'}' | b']' | b':' => return None,
            _ => {
                // A number, true, false or null: up to the next delimiter.
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.i += 1;
                }
            }
        }
        Some(&self.b[start..self.i])
    }
}

/// What a [`Scanner`] reports, in document order.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// A root object opened: the document, or an element of a top-level
    /// array.
    Root,
    /// The value at `paths[path]` of the current root object, as raw JSON
    /// text; `None` when it outgrew [`MAX_CAPTURE`].
    Value {
        path: usize,
        value: Option<&'a [u8]>,
    },
    /// The current root object closed.
    RootEnd,
}

/// The longest value a [`Scanner`] captures. The values it is used for
/// (usage objects) are a few hundred bytes.
pub const MAX_CAPTURE: usize = 64 * 1024;

/// Member names longer than this, escaped, match no wanted name.
const MAX_KEY: usize = 128;

/// Objects deep enough to hold a wanted path: the top-level array, the
/// root object and the objects along the longest path.
const MAX_FRAMES: usize = 4;

/// A JSON reader fed a document chunk by chunk, with memory bounded
/// whatever the document's size: it captures the values at a few paths
/// from the root object (`["usage"]`, `["message", "usage"]`) and steps over
/// everything else without keeping it. A document that is a top-level
/// array is read as a sequence of root objects (Gemini's
/// `streamGenerateContent` without `alt=sse`).
///
/// Like the walker above it is lenient: it checks the structure it walks,
/// not the values it steps over, and stops at the first structural error
/// (what it found before stands).
#[derive(Debug)]
pub struct Scanner {
    paths: &'static [&'static [&'static str]],
    frames: [Frame; MAX_FRAMES],
    depth: usize,
    /// The names leading to the innermost object frame, from the root object.
    path: [&'static str; MAX_FRAMES],
    path_len: usize,
    state: Scan,
    /// The current member name, at object frames.
    key: Vec<u8>,
    key_escaped: bool,
    /// What the value after the current name is.
    class: Class,
    /// The value being stepped over or captured.
    value: ValueScan,
    capture: Vec<u8>,
    capture_over: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Just opened: the first member or element, or the close.
    FirstOrClose,
    /// After a comma.
    Item,
    /// After a name.
    Colon,
    /// After a colon.
    Value,
    /// After a member or element: a comma or the close.
    NextOrClose,
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    kind: Kind,
    expect: Expect,
}

const NO_FRAME: Frame = Frame {
    kind: Kind::Object,
    expect: Expect::FirstOrClose,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// Before the document.
    Start,
    /// Between tokens of a frame.
    Structure,
    /// In a member name.
    Key { escape: bool },
    /// In a value that is stepped over (or captured, `capture`).
    Value { capture: Option<usize> },
    /// After the document, or after a structural error.
    Done,
}

/// What the value after a member name is, for the path it is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Skip,
    /// The end of `paths[i]`: captured.
    Leaf(usize),
    /// A step along a path: walked into if it is an object.
    Step(&'static str),
}

/// Where a value ends: strings by their closing quote, containers by the
/// bracket matching their first, other values (numbers, literals) at the
/// next delimiter.
#[derive(Clone, Copy, Debug, Default)]
struct ValueScan {
    depth: usize,
    in_string: bool,
    escape: bool,
    scalar: bool,
}

impl Scanner {
    /// A scanner for `paths`, each a list of member names from the root
    /// object, none longer than two names.
    pub fn new(paths: &'static [&'static [&'static str]]) -> Scanner {
        debug_assert!(
            paths
                .iter()
                .all(|p| !p.is_empty() && p.len() < MAX_FRAMES - 1)
        );
        Scanner {
            paths,
            frames: [NO_FRAME; MAX_FRAMES],
            depth: 0,
            path: [""; MAX_FRAMES],
            path_len: 0,
            state: Scan::Start,
            key: Vec::new(),
            key_escaped: false,
            class: Class::Skip,
            value: ValueScan::default(),
            capture: Vec::new(),
            capture_over: false,
        }
    }

    /// Back to the start of a new document, keeping the buffers.
    pub fn reset(&mut self) {
        self.depth = 0;
        self.path_len = 0;
        self.state = Scan::Start;
        self.key.clear();
        self.capture.clear();
        self.capture_over = false;
    }

    /// Bytes held in buffers, for the tests of the memory bound.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.key.capacity() + self.capture.capacity()
    }

    /// Whether a root object is open (the document was cut inside it).
    pub fn in_root(&self) -> bool {
        self.root_depth().is_some_and(|r| self.depth >= r)
    }

    /// The frame depth of the root object: 1 in an object document, 2 in
    /// an array document.
    fn root_depth(&self) -> Option<usize> {
        match (self.depth, self.frames[0].kind) {
            (0, _) => None,
            (_, Kind::Object) => Some(1),
            (_, Kind::Array) => Some(2),
        }
    }

    /// Reads the next bytes of the document, reporting what it finds.
    pub fn feed(&mut self, chunk: &[u8], found: &mut impl FnMut(Found<'_>)) {
        let mut i = 0;
        while i < chunk.len() {
            i = match self.state {
                Scan::Done => return,
                Scan::Start => self.start(chunk, i, found),
                Scan::Structure => self.structure(chunk, i, found),
                Scan::Key { escape } => self.key_bytes(chunk, i, escape),
                Scan::Value { capture } => self.value_bytes(chunk, i, capture, found),
            };
        }
    }

    fn start(&mut self, b: &[u8], i: usize, found: &mut impl FnMut(Found<'_>)) -> usize {
        let i = skip_ws(b, i);
        match b.get(i) {
            None => i,
            Some(b'{') => {
                self.push(Kind::Object);
                found(Found::Root);
                self.state = Scan::Structure;
                i + 1
            }
            Some(b'[') => {
                self.push(Kind::Array);
                self.state = Scan::Structure;
                i + 1
            }
            Some(_) => self.fail(),
        }
    }

    fn push(&mut self, kind: Kind) {
        self.frames[self.depth] = Frame {
            kind,
            expect: Expect::FirstOrClose,
        };
        self.depth += 1;
    }

    fn fail(&mut self) -> usize {
        self.state = Scan::Done;
        usize::MAX
    }

    fn top(&mut self) -> &mut Frame {
        &mut self.frames[self.depth - 1]
    }

    /// One structural byte of the innermost frame.
    fn structure(&mut self, b: &[u8], i: usize, found: &mut impl FnMut(Found<'_>)) -> usize {
        let i = skip_ws(b, i);
        let Some(&c) = b.get(i) else {
            return i;
        };
        let frame = *self.top();
        let close = match frame.kind {
            Kind::Object => b'}',
            Kind::Array => b']',
        };
        match (frame.expect, c) {
            (Expect::FirstOrClose | Expect::NextOrClose, c) if c == close => {
                self.close(found);
                i + 1
            }
            (Expect::NextOrClose, b',') => {
                self.top().expect = Expect::Item;
                i + 1
            }
            (Expect::FirstOrClose | Expect::Item, b'"') if frame.kind == Kind::Object => {
                self.key.clear();
                self.key_escaped = false;
                self.state = Scan::Key { escape: false };
                i + 1
            }
            (Expect::Colon, b':') => {
                self.top().expect = Expect::Value;
                i + 1
            }
            (Expect::Value, _) | (Expect::FirstOrClose | Expect::Item, _)
                if frame.kind == Kind::Array || frame.expect == Expect::Value =>
            {
                self.top().expect = Expect::NextOrClose;
                self.value_start(b, i, found)
            }
            _ => self.fail(),
        }
    }

    fn close(&mut self, found: &mut impl FnMut(Found<'_>)) {
        let root = self.root_depth();
        if self.frames[self.depth - 1].kind == Kind::Object && root.is_some_and(|r| self.depth > r)
        {
            self.path_len -= 1;
        }
        if root == Some(self.depth) {
            found(Found::RootEnd);
        }
        self.depth -= 1;
        if self.depth == 0 {
            self.state = Scan::Done;
        }
    }

    /// The first byte of a value: walked into, captured or stepped over.
    fn value_start(&mut self, b: &[u8], i: usize, found: &mut impl FnMut(Found<'_>)) -> usize {
        let c = b[i];
        if matches!(c, b',' | b':' | b'}' | b']') {
            return self.fail();
        }
        let in_array = self.frames[self.depth - 1].kind == Kind::Array;
        let class = if in_array {
            // An element of the top-level array: a root object, if an object.
            if c == b'{' {
                self.push(Kind::Object);
                found(Found::Root);
                return i + 1;
            }
            Class::Skip
        } else {
            std::mem::replace(&mut self.class, Class::Skip)
        };
        match class {
            Class::Step(name) if c == b'{' => {
                self.path[self.path_len] = name;
                self.path_len += 1;
                self.push(Kind::Object);
                return i + 1;
            }
            Class::Leaf(path) => {
                self.capture.clear();
                self.capture_over = false;
                self.state = Scan::Value {
                    capture: Some(path),
                };
            }
            _ => self.state = Scan::Value { capture: None },
        }
        self.value = ValueScan::default();
        match c {
            b'"' => self.value.in_string = true,
            b'{' | b'[' => self.value.depth = 1,
            _ => self.value.scalar = true,
        }
        if let Scan::Value { capture: Some(_) } = self.state {
            self.keep(&b[i..i + 1]);
        }
        i + 1
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.capture_over {
            return;
        }
        if self.capture.len() + bytes.len() > MAX_CAPTURE {
            self.capture_over = true;
            self.capture = Vec::new();
            return;
        }
        self.capture.extend_from_slice(bytes);
    }

    /// Bytes of a member name, up to its closing quote.
    fn key_bytes(&mut self, b: &[u8], start: usize, mut escape: bool) -> usize {
        let mut i = start;
        while i < b.len() {
            if escape {
                escape = false;
                i += 1;
                continue;
            }
            match memchr::memchr2(b'"', b'\\', &b[i..]) {
                None => i = b.len(),
                Some(at) if b[i + at] == b'\\' => {
                    self.key_escaped = true;
                    escape = true;
                    i += at + 1;
                }
                Some(at) => {
                    self.key_part(&b[start..i + at]);
                    self.key_done();
                    return i + at + 1;
                }
            }
        }
        self.key_part(&b[start..]);
        self.state = Scan::Key { escape };
        i
    }

    fn key_part(&mut self, part: &[u8]) {
        let room = (MAX_KEY + 1).saturating_sub(self.key.len());
        self.key.extend_from_slice(&part[..part.len().min(room)]);
    }

    /// A name is complete: what is its value?
    fn key_done(&mut self) {
        self.top().expect = Expect::Colon;
        self.state = Scan::Structure;
        self.class = Class::Skip;
        if self.key.len() > MAX_KEY {
            return;
        }
        let key = Key {
            raw: &self.key,
            escaped: self.key_escaped,
        };
        let at = &self.path[..self.path_len];
        for (n, p) in self.paths.iter().enumerate() {
            if p.len() > at.len() && p[..at.len()] == *at && key.is(p[at.len()]) {
                self.class = if p.len() == at.len() + 1 {
                    Class::Leaf(n)
                } else {
                    Class::Step(p[at.len()])
                };
                return;
            }
        }
    }

    /// Bytes of a value being stepped over or captured, up to its end.
    fn value_bytes(
        &mut self,
        b: &[u8],
        start: usize,
        capture: Option<usize>,
        found: &mut impl FnMut(Found<'_>),
    ) -> usize {
        let (end, done) = self.value.advance(b, start);
        if capture.is_some() {
            self.keep(&b[start..end]);
        }
        if done {
            self.state = Scan::Structure;
            if let Some(path) = capture {
                let value = (!self.capture_over).then_some(&self.capture[..]);
                found(Found::Value { path, value });
            }
        }
        end
    }
}

impl ValueScan {
    /// Steps over `b[i..]` up to the end of the value: where it stopped
    /// and whether the value ended there. A number or literal ends before
    /// its delimiter, which is left for the frame.
    fn advance(&mut self, b: &[u8], mut i: usize) -> (usize, bool) {
        while i < b.len() {
            if self.escape {
                self.escape = false;
                i += 1;
                continue;
            }
            if self.in_string {
                match memchr::memchr2(b'"', b'\\', &b[i..]) {
                    None => return (b.len(), false),
                    Some(at) => {
                        i += at + 1;
                        if b[i - 1] == b'\\' {
                            self.escape = true;
                        } else {
                            self.in_string = false;
                            if self.depth == 0 {
                                return (i, true);
                            }
                        }
                    }
                }
                continue;
            }
            if self.scalar {
                let rest = &b[i..];
                return match rest
                    .iter()
                    .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                {
                    Some(at) => (i + at, true),
                    None => (b.len(), false),
                };
            }
            let Some(at) = b[i..].iter().position(|&c| STRUCTURAL[usize::from(c)]) else {
                return (b.len(), false);
            };
            i += at;
            match b[i] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                _ => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return (i + 1, true);
                    }
                }
            }
            i += 1;
        }
        (i, false)
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    fn keys_and_values(doc: &str) -> Vec<(String, String)> {
        members(doc.as_bytes())
            .map(|(k, v)| {
                (
                    String::from_utf8(k.raw.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn members_are_the_top_level_ones_with_raw_values() {
        let doc = r#" { "a" : 1 , "b":{"usage":{"x":[1,"]}"]}},"c":"s\"}","d":[{},[]],"e":null,"f":-1.5e3 } "#;
        assert_eq!(
            keys_and_values(doc),
            [
                ("a", "1"),
                ("b", r#"{"usage":{"x":[1,"]}"]}}"#),
                ("c", r#""s\"}""#),
                ("d", "[{},[]]"),
                ("e", "null"),
                ("f", "-1.5e3"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn broken_documents_end_the_walk_without_panicking() {
        for doc in [
            "",
            "{",
            "[",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":{",
            "{\"a\":\"x",
            "{\"a\":\"x\\",
            "{,}",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "{\"a\":1 \"b\":2}",
            "nonsense",
            "{\"a\":}",
            "{\"a\":[1,",
        ] {
            let walked = members(doc.as_bytes()).count();
            assert!(walked <= 1, "{doc:?}");
        }
        assert_eq!(
            keys_and_values("{\"a\":1,\"b\":"),
            [("a".into(), "1".into())]
        );
    }

    #[test]
    fn escaped_names_are_decoded_before_comparing() {
        let doc = r#"{"us\u0061ge":1,"\"usage\"":2}"#;
        let keys: Vec<Key<'_>> = members(doc.as_bytes()).map(|(k, _)| k).collect();
        assert!(keys[0].is("usage"));
        assert!(!keys[1].is("usage"));
    }

    #[test]
    fn plain_integers_only() {
        assert_eq!(as_u64(b"0"), Some(0));
        assert_eq!(as_u64(b"18446744073709551615"), Some(u64::MAX));
        for no in [
            &b""[..],
            b"18446744073709551616",
            b"-1",
            b"1.0",
            b"1e3",
            b"null",
            b"\"5\"",
            b"123456789012345678901",
        ] {
            assert_eq!(as_u64(no), None, "{}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn strings_end_at_the_first_unescaped_quote_at_any_length() {
        for len in [0, 1, 7, 8, 9, 31, 63, 64, 65, 100] {
            let text = "a".repeat(len);
            for doc in [
                format!(r#"{{"k":"{text}","n":1}}"#),
                format!(r#"{{"k":"{text}\"\\","n":1}}"#),
            ] {
                let found: Vec<&[u8]> = members(doc.as_bytes()).map(|(_, v)| v).collect();
                assert_eq!(found.len(), 2, "{doc}");
                assert_eq!(found[1], b"1", "{doc}");
            }
        }
    }

    #[test]
    fn elements_of_a_top_level_array() {
        let found: Vec<&[u8]> = elements(br#"[{"a":[1]}, "x]" ,3]"#).collect();
        assert_eq!(found, [&br#"{"a":[1]}"#[..], br#""x]""#, b"3"]);
        assert_eq!(elements(b"[]").count(), 0);
        assert_eq!(elements(b"{}").count(), 0);
    }

    /// Any JSON value, strings and names full of quotes and brackets.
    pub(crate) fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::String),
            "[\"\\\\{}\\[\\],:]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\"\\\\{}]{0,5}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    proptest! {
        #[test]
        fn strings_end_at_the_first_unescaped_quote(
            text in prop::collection::vec(
                prop_oneof![40 => Just(b'a'), 1 => Just(b'"'), 1 => Just(b'\\')],
                0..150,
            ),
        ) {
            // The reference: one byte at a time.
            let mut expected = None;
            let (mut i, mut escaped) = (0, false);
            while i < text.len() {
                match text[i] {
                    b'"' => {
                        expected = Some((i, escaped));
                        break;
                    }
                    b'\\' => {
                        escaped = true;
                        i += 2;
                    }
                    _ => i += 1,
                }
            }
            prop_assert_eq!(string_end(&text), expected);
        }

        /// On any valid object, compact or pretty, the walk finds exactly
        /// serde's members, and each raw value parses to serde's value.
        #[test]
        fn members_agree_with_serde(
            fields in prop::collection::btree_map("[a-z\"\\\\]{0,6}", any_json(), 0..8),
            pretty in any::<bool>(),
        ) {
            let object = Value::Object(fields.clone().into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&object).unwrap()
            } else {
                serde_json::to_string(&object).unwrap()
            };
            let walked: Vec<(String, Value)> = members(text.as_bytes())
                .map(|(k, v)| {
                    let mut quoted = b"\"".to_vec();
                    quoted.extend_from_slice(k.raw);
                    quoted.push(b'"');
                    (
                        serde_json::from_slice(&quoted).unwrap(),
                        serde_json::from_slice(v).unwrap(),
                    )
                })
                .collect();
            // Parsed back from the same text, so floats round the same way.
            let reparsed: Map<String, Value> = serde_json::from_str(&text).unwrap();
            let expected: Vec<(String, Value)> = reparsed.into_iter().collect();
            prop_assert_eq!(walked.len(), fields.len());
            prop_assert_eq!(walked, expected);
        }

        /// Arbitrary bytes (an upstream can send anything) never panic the
        /// walk or loop forever.
        #[test]
        fn any_bytes_are_walked_safely(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            prop_assert!(members(&bytes).count() <= bytes.len());
            prop_assert!(elements(&bytes).count() <= bytes.len());
        }
    }
}
