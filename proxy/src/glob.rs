//! Model-name globs (`allowedModels`): `*` matches any run of characters,
//! `?` exactly one. No character classes, no escapes: model names do not
//! need them, and a smaller language is easier to reason about.

/// Whether `text` matches `pattern`.
///
/// Linear-time backtracking over the last `*` (the classic wildcard
/// algorithm), so a hostile pattern cannot make matching exponential.
/// `?` consumes one whole UTF-8 character.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the most recent `*`: (pattern index after it,
    // text index it currently absorbs up to).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                pi += 1;
                star = Some((pi, ti));
                continue;
            }
            Some(b'?') => {
                pi += 1;
                ti += char_len(t[ti]);
                continue;
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((resume, absorbed)) => {
                let next = absorbed + char_len(t[absorbed]);
                star = Some((resume, next));
                pi = resume;
                ti = next;
            }
            None => return false,
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

/// Whether `model` is allowed by `globs`; an empty list allows every model.
pub fn allowed<S: AsRef<str>>(globs: &[S], model: &str) -> bool {
    globs.is_empty() || globs.iter().any(|g| matches(g.as_ref(), model))
}

/// Length of the UTF-8 character starting with byte `b`. A continuation
/// byte cannot start a character in a `&str`, so it never reaches here
/// except through the byte-wise literal comparison, where 1 is right.
fn char_len(b: u8) -> usize {
    match b {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn literal_star_and_question_mark() {
        assert!(matches("gpt-4o", "gpt-4o"));
        assert!(!matches("gpt-4o", "gpt-4o-mini"));
        assert!(matches("gpt-4o*", "gpt-4o"));
        assert!(matches("gpt-4o*", "gpt-4o-mini-2024-07-18"));
        assert!(!matches("gpt-4o*", "gpt-4"));
        assert!(matches("claude-*", "claude-3-5-sonnet-latest"));
        assert!(matches("*sonnet*", "claude-3-5-sonnet-latest"));
        assert!(matches("gpt-?o", "gpt-4o"));
        assert!(!matches("gpt-?o", "gpt-44o"));
        assert!(matches("*", ""));
        assert!(matches("**", "x"));
        assert!(!matches("", "x"));
        assert!(matches("", ""));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(matches("*-mini", "gpt-4o-mini"));
        assert!(matches("models/gemini-*", "models/gemini-2.0-flash"));
    }

    #[test]
    fn question_mark_is_one_character_not_one_byte() {
        assert!(matches("mod?l", "modél"));
        assert!(!matches("mod??l", "modél"));
        assert!(matches("*é", "café"));
    }

    #[test]
    fn empty_allow_list_allows_everything() {
        assert!(allowed::<&str>(&[], "anything"));
        assert!(allowed(&["gpt-*", "claude-*"], "claude-3-haiku"));
        assert!(!allowed(&["gpt-*", "claude-*"], "gemini-pro"));
    }

    /// A reference implementation: exponential, but obviously right.
    fn reference(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some('*'), _) => reference(&p[1..], t) || (!t.is_empty() && reference(p, &t[1..])),
            (Some('?'), Some(_)) => reference(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => reference(&p[1..], &t[1..]),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(p in "[ab*?é]{0,8}", t in "[abé]{0,10}") {
            let pc: Vec<char> = p.chars().collect();
            let tc: Vec<char> = t.chars().collect();
            prop_assert_eq!(matches(&p, &t), reference(&pc, &tc));
        }
    }
}
