//! The token format.
//!
//! `sk-strk-` + 40 base62 characters of OS randomness (≈238 bits) + a
//! 6-character base62 CRC32 of everything before it. The checksum lets secret
//! scanners and the proxy reject a mistyped or made-up token offline, before
//! any lookup. Only [`TokenHash`] (SHA-256) is ever stored: the token is
//! high-entropy, so a slow password hash would buy nothing.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Every Strake token starts with this. `sk-` passes client-side key checks;
/// `strk` lets scanners attribute a leaked token.
pub const PREFIX: &str = "sk-strk-";
const RANDOM_LEN: usize = 40;
const CHECKSUM_LEN: usize = 6;
/// Total length of a token.
pub const TOKEN_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// How much of a token status and logs may show: enough to recognise, far too
/// little to use (4 random characters).
pub const DISPLAY_PREFIX_LEN: usize = PREFIX.len() + 4;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A well-formed plaintext token. Its `Debug` output is redacted so that it
/// cannot leak through a stray `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a Strake token: it must start with {PREFIX}")]
    Prefix,
    #[error("malformed Strake token: expected {TOKEN_LEN} characters")]
    Length,
    #[error("malformed Strake token: it contains characters outside [0-9A-Za-z]")]
    Alphabet,
    #[error("malformed Strake token: checksum mismatch (was it copied completely?)")]
    Checksum,
}

impl Token {
    /// Mints a new token from the operating system's random source.
    pub fn mint() -> Token {
        let mut token = String::with_capacity(TOKEN_LEN);
        token.push_str(PREFIX);
        let mut filled = 0;
        let mut buf = [0u8; 64];
        while filled < RANDOM_LEN {
            getrandom::fill(&mut buf).expect("the operating system's random source failed");
            for &b in &buf {
                // Rejection sampling keeps every character uniform: 248 = 4 * 62.
                if b < 248 && filled < RANDOM_LEN {
                    token.push(BASE62[(b % 62) as usize] as char);
                    filled += 1;
                }
            }
        }
        let checksum = checksum(token.as_bytes());
        token.push_str(&checksum);
        Token(token)
    }

    /// Parses and checks a token: prefix, length, alphabet and checksum.
    pub fn parse(s: &str) -> Result<Token, TokenError> {
        check(s)?;
        Ok(Token(s.to_owned()))
    }

    /// The plaintext. Only the holder's Secret and the holder see it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }

    /// The recognisable, unusable start of the token, for status and logs.
    pub fn display_prefix(&self) -> &str {
        &self.0[..DISPLAY_PREFIX_LEN]
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}…)", self.display_prefix())
    }
}

/// Checks a candidate token without allocating. The proxy calls this on every
/// request before looking the hash up, so garbage never reaches the index.
pub fn check(s: &str) -> Result<(), TokenError> {
    let body = s.strip_prefix(PREFIX).ok_or(TokenError::Prefix)?;
    if s.len() != TOKEN_LEN {
        return Err(TokenError::Length);
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(TokenError::Alphabet);
    }
    let (signed, sum) = s.split_at(TOKEN_LEN - CHECKSUM_LEN);
    if checksum(signed.as_bytes()) != sum {
        return Err(TokenError::Checksum);
    }
    Ok(())
}

fn checksum(data: &[u8]) -> String {
    let mut n = crc32fast::hash(data) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    // 62^6 > 2^32, so every CRC32 fits in six characters.
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

/// SHA-256 of a token: the only form in which a token is stored or indexed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenHash(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a token hash is 64 lowercase hex characters (the SHA-256 of the token)")]
pub struct TokenHashError;

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 0xf) as usize] as char);
        }
        s
    }
}

impl FromStr for TokenHash {
    type Err = TokenHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        fn nibble(c: u8) -> Result<u8, TokenHashError> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(TokenHashError),
            }
        }
        let bytes = s.trim().as_bytes();
        if bytes.len() != 64 {
            return Err(TokenHashError);
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Ok(TokenHash(out))
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", &self.to_hex()[..12])
    }
}

impl serde::Serialize for TokenHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for TokenHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minted_tokens_have_the_documented_shape() {
        let t = Token::mint();
        assert!(t.expose().starts_with("sk-strk-"));
        assert_eq!(t.expose().len(), TOKEN_LEN);
        assert_eq!(check(t.expose()), Ok(()));
        assert_eq!(Token::parse(t.expose()).unwrap(), t);
        assert_eq!(t.display_prefix().len(), 12);
    }

    #[test]
    fn minted_tokens_differ() {
        let a = Token::mint();
        let b = Token::mint();
        assert_ne!(a, b);
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = Token::mint();
        let shown = format!("{t:?}");
        assert!(!shown.contains(t.expose()));
        assert!(shown.contains(t.display_prefix()));
    }

    #[test]
    fn rejects_wrong_prefix_length_alphabet_and_checksum() {
        let t = Token::mint();
        let s = t.expose();
        assert_eq!(
            check(&s.replacen("sk-strk-", "sk-proj-", 1)),
            Err(TokenError::Prefix)
        );
        assert_eq!(check(&s[..s.len() - 1]), Err(TokenError::Length));
        let mut bad_alpha = s.to_string();
        bad_alpha.replace_range(10..11, "-");
        assert_eq!(check(&bad_alpha), Err(TokenError::Alphabet));
        // Changing any random character breaks the checksum.
        let mut typo = s.as_bytes().to_vec();
        typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            check(std::str::from_utf8(&typo).unwrap()),
            Err(TokenError::Checksum)
        );
    }

    #[test]
    fn sha256_matches_a_known_vector() {
        // echo -n test | sha256sum
        assert_eq!(
            TokenHash::of("test").to_hex(),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn hash_hex_round_trips_and_rejects_garbage() {
        let h = Token::mint().hash();
        assert_eq!(h.to_hex().parse::<TokenHash>().unwrap(), h);
        assert_eq!(h.to_hex().to_uppercase().parse::<TokenHash>().unwrap(), h);
        assert!("abc".parse::<TokenHash>().is_err());
        assert!("g".repeat(64).parse::<TokenHash>().is_err());
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<TokenHash>(&json).unwrap(), h);
    }

    proptest! {
        #[test]
        fn check_never_panics(s in ".{0,80}") {
            let _ = check(&s);
        }

        #[test]
        fn single_character_substitutions_are_caught(pos in 8usize..TOKEN_LEN, c in "[0-9A-Za-z]") {
            let t = Token::mint();
            let mut s = t.expose().to_string();
            let c = c.chars().next().unwrap();
            prop_assume!(s.as_bytes()[pos] as char != c);
            s.replace_range(pos..pos + 1, &c.to_string());
            prop_assert!(check(&s).is_err());
        }
    }
}
