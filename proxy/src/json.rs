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

/// A member a [`Scanner`] looks for in an object it walks, by its name.
#[derive(Debug)]
pub struct Member<T: 'static> {
    pub name: &'static str,
    pub want: Want<T>,
}

/// What a [`Scanner`] does with a wanted member's value.
#[derive(Debug)]
pub enum Want<T: 'static> {
    /// Walks into it, if an object, for the members beneath; reports
    /// nothing of it itself.
    Within(&'static [Member<T>]),
    /// Reads it member by member: [`Found::Open`], its wanted members,
    /// then [`Found::End`]. A value that is not an object gets the `End`
    /// alone.
    Object(T, &'static [Member<T>]),
    /// Reports it whole, as raw JSON text ([`Found::Value`]).
    Value(T),
}

/// What a [`Scanner`] reports, in document order.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a, T> {
    /// A root object opened: the document, or an element of a top-level
    /// array.
    Root,
    /// The object at a [`Want::Object`] opened.
    Open(T),
    /// The value at a [`Want::Value`], as raw JSON text; `None` when longer
    /// than [`MAX_VALUE`].
    Value { id: T, value: Option<&'a [u8]> },
    /// The value at a [`Want::Object`] ended. `read`: it was an object no
    /// longer than [`MAX_OBJECT`], whose members were reported since its
    /// `Open`; else it reads as absent.
    End { id: T, read: bool },
    /// The current root object closed.
    RootEnd,
}

/// The longest object a [`Scanner`] reads. The objects it is used for
/// (usage objects) are a few hundred bytes.
pub const MAX_OBJECT: usize = 64 * 1024;

/// The longest value a [`Scanner`] reports: numbers and short names.
pub const MAX_VALUE: usize = 32;

/// Member names longer than this, escaped, match no wanted name: room for
/// the longest wanted name with every character written as `\uXXXX`.
const MAX_KEY: usize = 192;

/// Objects deep enough for every wanted member: the top-level array, the
/// root object and the objects walked below it.
const MAX_FRAMES: usize = 5;

/// A JSON reader fed a document chunk by chunk, in one pass and in bounded
/// memory whatever the document's size: it walks the objects along the
/// wanted members from the root object ([`Member`]), reports the values
/// wanted there, and steps over everything else without keeping it. A
/// document that is a top-level array is read as a sequence of root
/// objects (Gemini's `streamGenerateContent` without `alt=sse`).
///
/// Like the walker above it is lenient: it checks the structure it walks,
/// not the values it steps over, and stops at the first structural error.
/// What it reported before stands, and an object it was reading when the
/// error came ends there, read as far as it went.
#[derive(Debug)]
pub struct Scanner<T: 'static> {
    root: &'static [Member<T>],
    frames: [Frame<T>; MAX_FRAMES],
    depth: usize,
    state: Scan<T>,
    /// The current member name, at object frames, when it spans chunks.
    key: Bounded<MAX_KEY>,
    key_escaped: bool,
    /// What the value after the current name is, if wanted.
    want: Option<&'static Want<T>>,
    /// The value being stepped over or reported.
    value: ValueScan,
    /// A wanted value's text.
    value_text: Bounded<MAX_VALUE>,
    /// Bytes of the document fed before the current chunk: where objects
    /// start and end, for [`MAX_OBJECT`].
    fed: usize,
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
struct Frame<T: 'static> {
    kind: Kind,
    expect: Expect,
    /// The members wanted in it.
    members: &'static [Member<T>],
    /// A [`Want::Object`]'s id and where it opened.
    read: Option<(T, usize)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan<T> {
    /// Before the document.
    Start,
    /// Between tokens of a frame.
    Structure,
    /// In a member name.
    Key { escape: bool },
    /// In a value that is stepped over, or reported as it ends.
    Value { report: Report<T> },
    /// After the document, or after a structural error.
    Done,
}

/// What the end of a value reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Report<T> {
    Nothing,
    /// [`Found::Value`], with its text.
    Value(T),
    /// [`Found::End`] of a wanted object's value that is not an object.
    NotObject(T),
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

/// How many objects deep `members` reach.
fn depth_of<T>(members: &[Member<T>]) -> usize {
    members
        .iter()
        .map(|m| match &m.want {
            Want::Within(inner) | Want::Object(_, inner) => 1 + depth_of(inner),
            Want::Value(_) => 0,
        })
        .max()
        .unwrap_or(0)
}

impl<T: Copy> Scanner<T> {
    /// A scanner for the members `root` of each root object.
    pub fn new(root: &'static [Member<T>]) -> Scanner<T> {
        // The top-level array and the root object take two frames.
        debug_assert!(depth_of(root) + 2 <= MAX_FRAMES);
        Scanner {
            root,
            frames: [Frame {
                kind: Kind::Object,
                expect: Expect::FirstOrClose,
                members: root,
                read: None,
            }; MAX_FRAMES],
            depth: 0,
            state: Scan::Start,
            key: Bounded::EMPTY,
            key_escaped: false,
            want: None,
            value: ValueScan::default(),
            value_text: Bounded::EMPTY,
            fed: 0,
        }
    }

    /// Back to the start of a new document.
    pub fn reset(&mut self) {
        self.depth = 0;
        self.state = Scan::Start;
        self.fed = 0;
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
    pub fn feed(&mut self, chunk: &[u8], found: &mut impl FnMut(Found<'_, T>)) {
        let mut i = 0;
        while i < chunk.len() {
            i = match self.state {
                Scan::Done => break,
                Scan::Start => self.start(chunk, i, found),
                Scan::Structure => self.structure(chunk, i, found),
                Scan::Key { escape } => self.key_bytes(chunk, i, escape),
                Scan::Value { report } => self.value_bytes(chunk, i, report, found),
            };
        }
        self.fed += chunk.len();
    }

    fn start(&mut self, b: &[u8], i: usize, found: &mut impl FnMut(Found<'_, T>)) -> usize {
        let i = skip_ws(b, i);
        match b.get(i) {
            None => i,
            Some(b'{') => {
                self.push(Kind::Object, self.root, None);
                found(Found::Root);
                self.state = Scan::Structure;
                i + 1
            }
            Some(b'[') => {
                self.push(Kind::Array, &[], None);
                self.state = Scan::Structure;
                i + 1
            }
            Some(_) => self.fail(i, found),
        }
    }

    fn push(&mut self, kind: Kind, members: &'static [Member<T>], read: Option<(T, usize)>) {
        self.frames[self.depth] = Frame {
            kind,
            expect: Expect::FirstOrClose,
            members,
            read,
        };
        self.depth += 1;
    }

    /// Ends the walk at a structural error at `b[i]`; objects being read
    /// end there. Returns past any chunk.
    fn fail(&mut self, i: usize, found: &mut impl FnMut(Found<'_, T>)) -> usize {
        for frame in self.frames[..self.depth].iter().rev() {
            if let Some((id, start)) = frame.read {
                let read = self.fed + i - start <= MAX_OBJECT;
                found(Found::End { id, read });
            }
        }
        self.state = Scan::Done;
        usize::MAX
    }

    fn top(&mut self) -> &mut Frame<T> {
        &mut self.frames[self.depth - 1]
    }

    /// One structural byte of the innermost frame.
    fn structure(&mut self, b: &[u8], i: usize, found: &mut impl FnMut(Found<'_, T>)) -> usize {
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
                self.close(i, found);
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
            _ => self.fail(i, found),
        }
    }

    /// The innermost frame closes at `b[i]`.
    fn close(&mut self, i: usize, found: &mut impl FnMut(Found<'_, T>)) {
        let frame = *self.top();
        if let Some((id, start)) = frame.read {
            let read = self.fed + i + 1 - start <= MAX_OBJECT;
            found(Found::End { id, read });
        }
        if self.root_depth() == Some(self.depth) {
            found(Found::RootEnd);
        }
        self.depth -= 1;
        if self.depth == 0 {
            self.state = Scan::Done;
        }
    }

    /// The first byte of a value: walked into, reported or stepped over.
    fn value_start(&mut self, b: &[u8], i: usize, found: &mut impl FnMut(Found<'_, T>)) -> usize {
        let c = b[i];
        if matches!(c, b',' | b':' | b'}' | b']') {
            return self.fail(i, found);
        }
        let want = if self.top().kind == Kind::Array {
            // An element of the top-level array: a root object, if an object.
            if c == b'{' {
                self.push(Kind::Object, self.root, None);
                found(Found::Root);
                return i + 1;
            }
            None
        } else {
            self.want.take()
        };
        let report = match want {
            Some(&Want::Within(members)) if c == b'{' => {
                self.push(Kind::Object, members, None);
                return i + 1;
            }
            Some(&Want::Object(id, members)) if c == b'{' => {
                self.push(Kind::Object, members, Some((id, self.fed + i)));
                found(Found::Open(id));
                return i + 1;
            }
            Some(&Want::Object(id, _)) => Report::NotObject(id),
            Some(&Want::Value(id)) => {
                self.value_text.clear();
                Report::Value(id)
            }
            _ => Report::Nothing,
        };
        self.state = Scan::Value { report };
        self.value = ValueScan::default();
        match c {
            b'"' => self.value.in_string = true,
            b'{' | b'[' => self.value.depth = 1,
            _ => self.value.scalar = true,
        }
        if let Report::Value(_) = report {
            self.value_text.push(&b[i..i + 1]);
        }
        i + 1
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
                    let end = i + at;
                    // A name within one chunk, as most are, is matched where it lies.
                    let want = if self.key.is_empty() {
                        let raw = &b[start..end];
                        wanted(
                            self.top().members,
                            (raw.len() <= MAX_KEY).then_some(raw),
                            self.key_escaped,
                        )
                    } else {
                        self.key.push(&b[start..end]);
                        wanted(self.top().members, self.key.get(), self.key_escaped)
                    };
                    self.top().expect = Expect::Colon;
                    self.state = Scan::Structure;
                    self.want = want;
                    return end + 1;
                }
            }
        }
        self.key.push(&b[start..]);
        self.state = Scan::Key { escape };
        i
    }

    /// Bytes of a value being stepped over or reported, up to its end.
    fn value_bytes(
        &mut self,
        b: &[u8],
        start: usize,
        report: Report<T>,
        found: &mut impl FnMut(Found<'_, T>),
    ) -> usize {
        let (end, done) = self.value.advance(b, start);
        if let Report::Value(_) = report {
            self.value_text.push(&b[start..end]);
        }
        if done {
            self.state = Scan::Structure;
            match report {
                Report::Nothing => {}
                Report::Value(id) => {
                    found(Found::Value {
                        id,
                        value: self.value_text.get(),
                    });
                }
                Report::NotObject(id) => found(Found::End { id, read: false }),
            }
        }
        end
    }
}

/// Bytes kept up to `N`, counting past what fits: a name or a value split
/// between chunks, held without the heap.
#[derive(Clone, Copy, Debug)]
struct Bounded<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Bounded<N> {
    const EMPTY: Bounded<N> = Bounded {
        bytes: [0; N],
        len: 0,
    };

    fn clear(&mut self) {
        self.len = 0;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, part: &[u8]) {
        let at = self.len;
        self.len = at.saturating_add(part.len());
        if let Some(room) = self.bytes.get_mut(at..self.len) {
            room.copy_from_slice(part);
        }
    }

    /// What was kept; `None` once more than `N` bytes were pushed.
    fn get(&self) -> Option<&[u8]> {
        self.bytes.get(..self.len)
    }
}

/// The wanted member named `raw` (`None`: too long to be one).
fn wanted<T>(
    members: &'static [Member<T>],
    raw: Option<&[u8]>,
    escaped: bool,
) -> Option<&'static Want<T>> {
    let key = Key { raw: raw?, escaped };
    members.iter().find(|m| key.is(m.name)).map(|m| &m.want)
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
