//! Deterministic reply text and token accounting.
//!
//! Token counts must be predictable so that tests can assert on the usage the
//! proxy accounts: input tokens are `ceil(prompt text bytes / 4)` (at least 1),
//! output tokens are the number of words generated.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The reply cycles through these words. None of them needs JSON escaping,
/// which keeps serialisation cheap.
const WORDS: &[&str] = &[
    "This",
    "is",
    "a",
    "deterministic",
    "reply",
    "from",
    "the",
    "Strake",
    "mock",
    "upstream.",
    "Every",
    "word",
    "counts",
    "as",
    "one",
    "output",
    "token,",
    "and",
    "the",
    "text",
    "repeats",
    "for",
    "as",
    "long",
    "as",
    "the",
    "request",
    "asks,",
    "so",
    "tests",
    "and",
    "benchmarks",
    "can",
    "rely",
    "on",
    "its",
    "shape.",
];

/// Replies up to this many words are slices of one shared string.
const CACHED_WORDS: usize = 4096;

fn word(i: usize) -> &'static str {
    WORDS[i % WORDS.len()]
}

struct Cache {
    text: String,
    /// `ends[i]` is the byte offset just past word `i`.
    ends: Vec<usize>,
}

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let mut text = String::new();
        let mut ends = Vec::with_capacity(CACHED_WORDS);
        for i in 0..CACHED_WORDS {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(word(i));
            ends.push(text.len());
        }
        Cache { text, ends }
    })
}

/// The full reply of `words` words. Borrowed (no allocation) for common sizes.
pub(crate) fn reply(words: usize) -> Cow<'static, str> {
    match words {
        0 => Cow::Borrowed(""),
        n if n <= CACHED_WORDS => {
            let cache = cache();
            Cow::Borrowed(&cache.text[..cache.ends[n - 1]])
        }
        n => Cow::Owned(join(0..n)),
    }
}

fn join(range: std::ops::Range<usize>) -> String {
    let mut out = String::with_capacity(range.len() * 8);
    for i in range {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word(i));
    }
    out
}

/// Splits a `words`-word reply into at most `chunks` pieces, as evenly as
/// possible, each non-empty. Concatenated, the pieces equal [`reply`]: every
/// piece but the first starts with the separating space, as tokenised
/// provider streams do.
pub(crate) struct Chunks {
    words: usize,
    count: usize,
    next: usize,
}

impl Chunks {
    pub(crate) fn new(words: usize, chunks: usize) -> Self {
        Self {
            words,
            count: chunks.min(words),
            next: 0,
        }
    }

    /// Number of pieces this will yield.
    pub(crate) fn len(&self) -> usize {
        self.count
    }
}

impl Iterator for Chunks {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.next >= self.count {
            return None;
        }
        let start = self.next * self.words / self.count;
        let end = (self.next + 1) * self.words / self.count;
        self.next += 1;
        Some(join(start..end))
    }
}

/// Output words after the request's own cap (`max_tokens` and friends).
/// Returns the count and whether the cap cut the reply short.
pub(crate) fn capped_words(wanted: usize, max_tokens: Option<u64>) -> (usize, bool) {
    match max_tokens.map(|m| usize::try_from(m).unwrap_or(usize::MAX)) {
        Some(max) if max < wanted => (max, true),
        _ => (wanted, false),
    }
}

/// Prompts shorter than this are never cached (OpenAI's and Anthropic's
/// minimum).
pub(crate) const MIN_CACHED_TOKENS: u64 = 1024;

/// The cached part of a `prompt`-token prompt, as OpenAI (and here Gemini)
/// report it: on a cache hit, the prompt in 128-token steps from 1,024
/// tokens; on a miss, none.
pub(crate) fn cached_tokens(prompt: u64, hit: bool) -> u64 {
    if hit && prompt >= MIN_CACHED_TOKENS {
        prompt / 128 * 128
    } else {
        0
    }
}

/// Input tokens for a prompt of `bytes` bytes of text.
pub(crate) fn input_tokens(bytes: usize) -> u64 {
    (bytes.div_ceil(4) as u64).max(1)
}

/// Total bytes of prompt text in a JSON value, computed while deserialising
/// so the prompt is never copied.
///
/// It works across all provider request shapes: strings count when they are
/// the value itself, an array element, or the value of a text-bearing key
/// (`content`, `text`, …), so roles, types, ids and image URLs do not count.
/// Integers in a counted position (token-id prompts) count as one token each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PromptBytes(pub usize);

impl<'de> Deserialize<'de> for PromptBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TextSeed { counted: true }.deserialize(d).map(PromptBytes)
    }
}

const TEXT_KEYS: &[&str] = &["content", "text", "arguments", "parts", "thinking"];

#[derive(Clone, Copy)]
struct TextSeed {
    counted: bool,
}

impl<'de> DeserializeSeed<'de> for TextSeed {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextSeed {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        Ok(if self.counted { v.len() } else { 0 })
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<usize, E> {
        Ok(if self.counted { 4 } else { 0 })
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_unit<E: de::Error>(self) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut total = 0;
        while let Some(n) = seq.next_element_seed(self)? {
            total += n;
        }
        Ok(total)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut total = 0;
        while let Some(TextKey(counted)) = map.next_key()? {
            total += map.next_value_seed(TextSeed { counted })?;
        }
        Ok(total)
    }
}

/// Prompt text bytes as [`PromptBytes`] counts them, and how many of them
/// come up to the end of the last object marked `cache_control`
/// (Anthropic's cache breakpoints; 0 if none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CachedPrompt {
    pub bytes: usize,
    pub cacheable: usize,
}

impl<'de> Deserialize<'de> for CachedPrompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut prompt = CachedPrompt::default();
        CacheSeed {
            counted: true,
            prompt: &mut prompt,
        }
        .deserialize(d)?;
        Ok(prompt)
    }
}

struct CacheSeed<'s> {
    counted: bool,
    prompt: &'s mut CachedPrompt,
}

impl<'de> DeserializeSeed<'de> for CacheSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CacheSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.prompt.bytes += TextSeed {
            counted: self.counted,
        }
        .visit_str::<E>(v)?;
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.prompt.bytes += TextSeed {
            counted: self.counted,
        }
        .visit_u64::<E>(v)?;
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let counted = self.counted;
        while seq
            .next_element_seed(CacheSeed {
                counted,
                prompt: &mut *self.prompt,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut marked = false;
        while let Some(key) = map.next_key::<CacheKey>()? {
            match key {
                CacheKey::CacheControl => {
                    marked = !map.next_value::<serde_json::Value>()?.is_null();
                }
                CacheKey::Text(counted) => map.next_value_seed(CacheSeed {
                    counted,
                    prompt: &mut *self.prompt,
                })?,
            }
        }
        if marked {
            // The breakpoint covers the whole block it marks.
            self.prompt.cacheable = self.prompt.bytes;
        }
        Ok(())
    }
}

/// An object key for [`CachedPrompt`]: a cache breakpoint, or whether its
/// value carries prompt text.
enum CacheKey {
    CacheControl,
    Text(bool),
}

impl<'de> Deserialize<'de> for CacheKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = CacheKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CacheKey, E> {
                Ok(match v {
                    "cache_control" => CacheKey::CacheControl,
                    _ => CacheKey::Text(TEXT_KEYS.contains(&v)),
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// An object key, reduced to "does its value carry prompt text".
struct TextKey(bool);

impl<'de> Deserialize<'de> for TextKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = TextKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TextKey, E> {
                Ok(TextKey(TEXT_KEYS.contains(&v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_concatenate_to_the_reply() {
        for (words, chunks) in [(8, 8), (10, 3), (3, 10), (5000, 7), (1, 1), (0, 4)] {
            let pieces: Vec<String> = Chunks::new(words, chunks).collect();
            assert_eq!(pieces.len(), chunks.min(words));
            assert!(pieces.iter().all(|p| !p.is_empty()));
            assert_eq!(pieces.concat(), reply(words));
            assert_eq!(reply(words).split_whitespace().count(), words);
        }
    }

    #[test]
    fn prompt_bytes_count_text_only() {
        let openai = r#"[{"role":"system","content":"abcd"},
            {"role":"user","content":[{"type":"text","text":"efgh"},
            {"type":"image_url","image_url":{"url":"data:xxxxxxxx"}}]}]"#;
        assert_eq!(serde_json::from_str::<PromptBytes>(openai).unwrap().0, 8);
        let gemini = r#"[{"role":"user","parts":[{"text":"hello"}]}]"#;
        assert_eq!(serde_json::from_str::<PromptBytes>(gemini).unwrap().0, 5);
        let escaped = r#""a\"b""#;
        assert_eq!(serde_json::from_str::<PromptBytes>(escaped).unwrap().0, 3);
        let token_ids = "[[1, 2, 3]]";
        assert_eq!(
            serde_json::from_str::<PromptBytes>(token_ids).unwrap().0,
            12
        );
    }

    #[test]
    fn cache_breakpoints_mark_the_prefix_up_to_the_last_marked_block() {
        let messages = r#"[{"role":"user","content":[
            {"type":"text","text":"abcd","cache_control":{"type":"ephemeral"}},
            {"type":"text","text":"efgh","cache_control":{"type":"ephemeral","ttl":"1h"}},
            {"type":"text","text":"ij"}]}]"#;
        let p: CachedPrompt = serde_json::from_str(messages).unwrap();
        assert_eq!((p.bytes, p.cacheable), (10, 8));
        let plain: CachedPrompt = serde_json::from_str(r#""system text""#).unwrap();
        assert_eq!((plain.bytes, plain.cacheable), (11, 0));
        let null: CachedPrompt =
            serde_json::from_str(r#"[{"type":"text","text":"ab","cache_control":null}]"#).unwrap();
        assert_eq!((null.bytes, null.cacheable), (2, 0));
        assert_eq!(cached_tokens(1023, true), 0);
        assert_eq!(cached_tokens(2006, true), 1920);
        assert_eq!(cached_tokens(2006, false), 0);
    }

    #[test]
    fn token_estimates() {
        assert_eq!(input_tokens(0), 1);
        assert_eq!(input_tokens(4), 1);
        assert_eq!(input_tokens(5), 2);
        assert_eq!(capped_words(10, Some(3)), (3, true));
        assert_eq!(capped_words(10, Some(10)), (10, false));
        assert_eq!(capped_words(10, None), (10, false));
    }
}
