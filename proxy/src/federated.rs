//! Keyless identities, the pure part: is a credential a JWT, is it signed
//! by a key its issuer publishes, is it in date, and which StrakeToken
//! accepts it. No I/O: the keys come from [`crate::jwks`], the subjects
//! from the token index.
//!
//! Verification is offline and strict:
//! - the signature, against the issuer's JSON Web Key Set, with an
//!   asymmetric algorithm only ([`ALLOWED_ALGORITHMS`]; never `none`,
//!   never HMAC, and the key's type and its own `alg` must agree with the
//!   header's, so an RSA public key is never used as an HMAC secret);
//! - `iss` exactly as a StrakeToken names it (a token of an issuer no
//!   StrakeToken names is refused before any key is fetched);
//! - `aud`, one of the audiences a StrakeToken of that issuer names;
//! - `exp` (required) and `nbf` with [`CLOCK_SKEW_SECS`] of tolerance.
//!
//! Then the claims meet the index's subjects ([`SubjectTable::resolve`]):
//! exactly one StrakeToken must accept them. Two or more is refused rather
//! than guessed, so no resource can capture another's callers by being
//! more specific.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use strake_crds::federated::{Claim, FederatedSubject};
use strake_crds::token::TokenHash;

/// The longest credential read as a JWT; longer ones are refused unread.
/// A GitHub Actions ID token is about 1.2 KB, a ServiceAccount token 1 KB.
pub const MAX_JWT_BYTES: usize = 16 * 1024;
/// Tolerance on `exp` and `nbf` for clocks that disagree a little.
pub const CLOCK_SKEW_SECS: i64 = 60;
/// At most this many claims of a token are kept for matching.
const MAX_KEPT_CLAIMS: usize = 64;
/// Verified tokens remembered ([`VerifiedCache`]); beyond, expired ones are
/// swept, and if none had expired the cache starts over.
pub const MAX_CACHED_VERIFICATIONS: usize = 10_000;

/// The algorithms accepted, by their JOSE names.
pub const ALLOWED_ALGORITHMS: [(&str, Algorithm); 9] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// Why a JWT does not authenticate. Messages say what failed, never the
/// token; a claim quoted from an unverified token is cut short.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Malformed(&'static str),
    Algorithm(String),
    UnknownIssuer(String),
    WrongAudience(String),
    UnknownKey,
    BadSignature,
    Expired {
        at: i64,
    },
    NotYetValid {
        at: i64,
    },
    NoStrakeToken,
    Ambiguous(usize),
    /// No key set of the issuer has ever been fetched (or the last is too
    /// old to trust): a retry may pass once the issuer answers.
    KeysUnavailable(String),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "jwt_malformed",
            Refusal::Algorithm(_) => "jwt_algorithm",
            Refusal::UnknownIssuer(_) => "jwt_unknown_issuer",
            Refusal::WrongAudience(_) => "jwt_wrong_audience",
            Refusal::UnknownKey => "jwt_unknown_key",
            Refusal::BadSignature => "jwt_bad_signature",
            Refusal::Expired { .. } => "jwt_expired",
            Refusal::NotYetValid { .. } => "jwt_not_yet_valid",
            Refusal::NoStrakeToken => "jwt_no_strake_token",
            Refusal::Ambiguous(_) => "jwt_ambiguous",
            Refusal::KeysUnavailable(_) => "jwt_keys_unavailable",
        }
    }

    /// Only an issuer that could not be reached may pass on a retry.
    pub fn is_transient(&self) -> bool {
        matches!(self, Refusal::KeysUnavailable(_))
    }

    pub fn message(&self) -> String {
        let at = |secs: i64| {
            k8s_openapi::jiff::Timestamp::from_second(secs)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| secs.to_string())
        };
        match self {
            Refusal::Malformed(why) => format!("The API key looks like a JWT but is not a valid one: {why}."),
            Refusal::Algorithm(alg) => format!(
                "The JWT's algorithm {alg} is not accepted: only asymmetric signatures ({}) are.",
                ALLOWED_ALGORITHMS.map(|(name, _)| name).join(", ")
            ),
            Refusal::UnknownIssuer(iss) => format!("No StrakeToken accepts tokens of the issuer '{iss}'. Ask your platform team to add it to a StrakeToken's spec.federated."),
            Refusal::WrongAudience(iss) => format!("The JWT's audience is not one a StrakeToken accepts for the issuer '{iss}'. Request the token for the audience the StrakeToken names (by default: strake)."),
            Refusal::UnknownKey => "The JWT is signed with a key its issuer does not publish.".into(),
            Refusal::BadSignature => "The JWT's signature does not verify against its issuer's published keys.".into(),
            Refusal::Expired { at: t } => format!("The JWT expired at {}. Request a fresh one.", at(*t)),
            Refusal::NotYetValid { at: t } => format!("The JWT is not valid before {}.", at(*t)),
            Refusal::NoStrakeToken => "The JWT is valid, but no StrakeToken accepts its subject (it may have been deleted or suspended). Ask your platform team to check spec.federated or spec.serviceAccount.".into(),
            Refusal::Ambiguous(n) => format!("The JWT is valid, but {n} StrakeTokens accept its subject, so it is refused rather than guessed. Ask your platform team to narrow their spec.federated matchers."),
            Refusal::KeysUnavailable(iss) => format!("The signing keys of the issuer '{iss}' cannot be fetched right now. Try again shortly."),
        }
    }
}

/// Cuts a value taken from an unverified token to a length fit for a message.
pub fn quoted(value: &str) -> String {
    value.chars().take(120).collect()
}

/// Whether a credential is shaped like a compact JWS: three base64url
/// parts, the first a JSON object (`eyJ` is `{"`). Strake tokens and the
/// providers' keys never are.
pub fn looks_like_jwt(credential: &str) -> bool {
    credential.len() <= MAX_JWT_BYTES
        && credential.starts_with("eyJ")
        && credential.bytes().filter(|&b| b == b'.').count() == 2
        && credential
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What a JWT says about itself before any check: enough to pick the key
/// set. Nothing here is trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unverified {
    pub issuer: String,
    pub kid: Option<String>,
    pub algorithm: Algorithm,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// `crit` extensions cannot be honoured, so a token carrying one is
    /// refused (RFC 7515 §4.1.11).
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawIssuer {
    iss: Option<String>,
}

fn part(jwt: &str, i: usize) -> Result<Vec<u8>, Refusal> {
    let text = jwt
        .split('.')
        .nth(i)
        .ok_or(Refusal::Malformed("it does not have three parts"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| Refusal::Malformed("a part is not base64url"))
}

/// Reads the header and the issuer without verifying anything.
pub fn peek(jwt: &str) -> Result<Unverified, Refusal> {
    if !looks_like_jwt(jwt) {
        return Err(Refusal::Malformed("it is not a compact JWS"));
    }
    let header: RawHeader = serde_json::from_slice(&part(jwt, 0)?)
        .map_err(|_| Refusal::Malformed("its header is not a JSON object with an alg"))?;
    if header.crit.is_some() {
        return Err(Refusal::Malformed(
            "its header has critical extensions (crit), which are not supported",
        ));
    }
    let algorithm = ALLOWED_ALGORITHMS
        .iter()
        .find(|(name, _)| *name == header.alg)
        .map(|(_, alg)| *alg)
        .ok_or_else(|| Refusal::Algorithm(quoted(&header.alg)))?;
    let claims: RawIssuer = serde_json::from_slice(&part(jwt, 1)?)
        .map_err(|_| Refusal::Malformed("its payload is not a JSON object"))?;
    let issuer = claims
        .iss
        .ok_or(Refusal::Malformed("it has no iss claim"))?;
    Ok(Unverified {
        issuer,
        kid: header.kid,
        algorithm,
    })
}

/// One usable public key of an issuer.
pub struct Key {
    kid: Option<String>,
    /// The key's own `alg`, when the issuer says.
    algorithm: Option<Algorithm>,
    decoding: DecodingKey,
    kind: KeyKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    Ec,
    Ed,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::Ec => matches!(alg, ES256 | ES384),
            KeyKind::Ed => alg == EdDSA,
        }
    }
}

/// An issuer's signing keys, from its JWKS document. Symmetric keys,
/// encryption keys and keys of unknown types are left out.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| k.kid.as_deref()).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// Parses a JWKS document. Fails when it holds no usable key, so a
    /// broken answer never replaces a good set.
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, String> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
                continue;
            }
            let kind = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => KeyKind::Rsa,
                AlgorithmParameters::EllipticCurve(_) => KeyKind::Ec,
                AlgorithmParameters::OctetKeyPair(_) => KeyKind::Ed,
                // A symmetric key in a public document is a misconfiguration;
                // accepting it would let anyone who read it sign tokens.
                AlgorithmParameters::OctetKey(_) => continue,
            };
            let algorithm = match jwk.common.key_algorithm {
                None => None,
                Some(ka) => match signing_algorithm(ka) {
                    Some(alg) if kind.fits(alg) => Some(alg),
                    _ => continue,
                },
            };
            let Ok(decoding) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                algorithm,
                decoding,
                kind,
            });
        }
        if keys.is_empty() {
            return Err("the JWKS document has no usable signing key".into());
        }
        Ok(KeySet { keys })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn signing_algorithm(ka: KeyAlgorithm) -> Option<Algorithm> {
    let name = format!("{ka:?}");
    ALLOWED_ALGORITHMS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims as the signature vouches for them. `exp` is required and
/// numeric: a token that does not say when it ends is refused.
#[derive(Deserialize)]
struct RawClaims {
    iss: String,
    aud: Option<Audience>,
    exp: f64,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ClaimValue {
    One(Box<str>),
    Many(Box<[Box<str>]>),
}

/// A JWT that passed every check but the subject match: what the cache
/// keeps and the index matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub issuer: Box<str>,
    pub audiences: Box<[Box<str>]>,
    /// Unix seconds.
    pub expires_at: i64,
    /// Top-level string claims (and lists of strings), `sub` among them.
    claims: Box<[(Box<str>, ClaimValue)]>,
}

impl Verified {
    pub fn claim(&self, name: &str) -> Claim<'_> {
        match self.claims.iter().find(|(n, _)| &**n == name) {
            None => Claim::Absent,
            Some((_, ClaimValue::One(v))) => Claim::One(v),
            Some((_, ClaimValue::Many(vs))) => Claim::Many(vs),
        }
    }

    pub fn subject(&self) -> Option<&str> {
        match self.claim("sub") {
            Claim::One(s) => Some(s),
            _ => None,
        }
    }
}

/// Verifies `jwt` (already [`peek`]ed as `seen`) against `keys` at `now`
/// (unix seconds). The issuer and audience are checked against what the
/// index accepts by [`SubjectTable::resolve`].
pub fn verify(jwt: &str, seen: &Unverified, keys: &KeySet, now: i64) -> Result<Verified, Refusal> {
    let alg = seen.algorithm;
    let candidates: Vec<&Key> = match &seen.kid {
        Some(kid) => keys
            .keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
            .collect(),
        None => keys.keys.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(Refusal::UnknownKey);
    }
    let mut validation = Validation::new(alg);
    // Dates and audience are checked below, on typed claims and the
    // proxy's clock; the library checks the signature only.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    let mut refusal = Refusal::BadSignature;
    let mut claims = None;
    for key in candidates {
        if !key.kind.fits(alg) || key.algorithm.is_some_and(|a| a != alg) {
            // The header names an algorithm this key is not for: the
            // algorithm-confusion attack, whatever the signature says.
            refusal = Refusal::Algorithm(format!("{alg:?} (not the algorithm of its key)"));
            continue;
        }
        match jsonwebtoken::decode::<RawClaims>(jwt, &key.decoding, &validation) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                refusal = match e.kind() {
                    ErrorKind::Json(_) => Refusal::Malformed(
                        "its claims lack iss or exp, or have them in the wrong type",
                    ),
                    ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                        Refusal::Malformed("it does not decode")
                    }
                    _ => Refusal::BadSignature,
                };
            }
        }
    }
    let claims = claims.ok_or(refusal)?;
    if claims.iss != seen.issuer {
        return Err(Refusal::Malformed("its iss claim is given twice"));
    }
    let exp = claims.exp.floor() as i64;
    if now >= exp.saturating_add(CLOCK_SKEW_SECS) {
        return Err(Refusal::Expired { at: exp });
    }
    if let Some(nbf) = claims.nbf.map(|n| n.floor() as i64)
        && nbf > now.saturating_add(CLOCK_SKEW_SECS)
    {
        return Err(Refusal::NotYetValid { at: nbf });
    }
    let audiences: Box<[Box<str>]> = match claims.aud {
        None => Box::new([]),
        Some(Audience::One(a)) => Box::new([a.into()]),
        Some(Audience::Many(all)) => all.into_iter().map(Into::into).collect(),
    };
    let kept = claims
        .rest
        .into_iter()
        .filter_map(|(name, value)| {
            let value = match value {
                serde_json::Value::String(s) => ClaimValue::One(s.into()),
                serde_json::Value::Array(items) => ClaimValue::Many(
                    items
                        .into_iter()
                        .filter_map(|v| match v {
                            serde_json::Value::String(s) => Some(s.into_boxed_str()),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => return None,
            };
            Some((name.into_boxed_str(), value))
        })
        .take(MAX_KEPT_CLAIMS)
        .collect();
    Ok(Verified {
        issuer: claims.iss.into(),
        audiences,
        expires_at: exp,
        claims: kept,
    })
}

/// The subjects of one issuer and audience, each with its token's hash.
type Entries = Vec<(FederatedSubject, TokenHash)>;

/// Every federated subject of the index, by issuer and audience.
#[derive(Clone, Debug, Default)]
pub struct SubjectTable {
    issuers: HashMap<Box<str>, HashMap<Box<str>, Entries>>,
}

impl SubjectTable {
    pub fn insert(&mut self, subjects: &[FederatedSubject], hash: TokenHash) {
        for s in subjects {
            self.issuers
                .entry(s.issuer.as_str().into())
                .or_default()
                .entry(s.audience.as_str().into())
                .or_default()
                .push((s.clone(), hash));
        }
    }

    pub fn remove(&mut self, subjects: &[FederatedSubject], hash: TokenHash) {
        for s in subjects {
            let Some(audiences) = self.issuers.get_mut(s.issuer.as_str()) else {
                continue;
            };
            if let Some(entries) = audiences.get_mut(s.audience.as_str()) {
                entries.retain(|(_, h)| *h != hash);
                if entries.is_empty() {
                    audiences.remove(s.audience.as_str());
                }
            }
            if audiences.is_empty() {
                self.issuers.remove(s.issuer.as_str());
            }
        }
    }

    /// Whether some StrakeToken names this issuer: only such issuers'
    /// keys are ever fetched, so a token cannot make the proxy call a URL
    /// of its choosing.
    pub fn knows_issuer(&self, issuer: &str) -> bool {
        self.issuers.contains_key(issuer)
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The one StrakeToken (by hash) whose subjects accept `v`.
    pub fn resolve(&self, v: &Verified) -> Result<TokenHash, Refusal> {
        let audiences = self
            .issuers
            .get(&*v.issuer)
            .ok_or_else(|| Refusal::UnknownIssuer(quoted(&v.issuer)))?;
        let mut audience_known = false;
        let mut found: Vec<TokenHash> = Vec::new();
        for aud in v.audiences.iter() {
            let Some(entries) = audiences.get(aud) else {
                continue;
            };
            audience_known = true;
            for (subject, hash) in entries {
                if !found.contains(hash) && subject.matches(|c| v.claim(c)) {
                    found.push(*hash);
                }
            }
        }
        match found.as_slice() {
            [one] => Ok(*one),
            [] if !audience_known => Err(Refusal::WrongAudience(quoted(&v.issuer))),
            [] => Err(Refusal::NoStrakeToken),
            many => Err(Refusal::Ambiguous(many.len())),
        }
    }
}

/// Verified JWTs by SHA-256, so that a token used again costs a hash and
/// a lookup, not a signature check. An entry lasts until the token's
/// `exp` (with the skew) or `max_age`, whichever is first: a key the
/// issuer withdraws stops vouching within `max_age`. The subject match is
/// never cached: revocation is the index's, as for minted tokens.
pub struct VerifiedCache {
    entries: Mutex<HashMap<TokenHash, (Arc<Verified>, i64)>>,
    capacity: usize,
}

impl VerifiedCache {
    pub fn new(capacity: usize) -> VerifiedCache {
        VerifiedCache {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenHash, (Arc<Verified>, i64)>> {
        // Plain data: a panic mid-update leaves nothing half-done that matters.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, hash: &TokenHash, now: i64) -> Option<Arc<Verified>> {
        let entries = self.lock();
        let (v, until) = entries.get(hash)?;
        (now < *until).then(|| v.clone())
    }

    pub fn insert(&self, hash: TokenHash, v: Arc<Verified>, now: i64, max_age_secs: i64) {
        let until = v
            .expires_at
            .saturating_add(CLOCK_SKEW_SECS)
            .min(now.saturating_add(max_age_secs));
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.retain(|_, (_, u)| now < *u);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(hash, (v, until));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// When the key set of an issuer must be fetched before verifying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyState {
    /// Seconds since the last successful fetch; `None`: never.
    pub fetched_ago: Option<u64>,
    /// Seconds since the last attempt, successful or not.
    pub attempted_ago: Option<u64>,
    /// The token's `kid` is in the set held.
    pub kid_known: bool,
}

/// Key-fetch intervals (the `--jwks-*` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyTiming {
    /// A set older than this is fetched again.
    pub refresh_secs: u64,
    /// Fetches of one issuer are at least this far apart, whatever the
    /// tokens presented (an unknown `kid` cannot make the proxy hammer
    /// the issuer).
    pub min_refetch_secs: u64,
    /// A set not refreshed for this long (the issuer down) stops being
    /// trusted.
    pub max_stale_secs: u64,
}

impl Default for KeyTiming {
    fn default() -> Self {
        KeyTiming {
            refresh_secs: 300,
            min_refetch_secs: 10,
            max_stale_secs: 86_400,
        }
    }
}

/// What to do about the keys before verifying one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPlan {
    /// Use the set held.
    Use,
    /// Fetch first (then use the new set, or the held one if the fetch fails).
    Fetch,
}

pub fn key_plan(state: KeyState, timing: KeyTiming) -> KeyPlan {
    let may_attempt = state
        .attempted_ago
        .is_none_or(|ago| ago >= timing.min_refetch_secs);
    let wanted = match state.fetched_ago {
        None => true,
        Some(ago) => !state.kid_known || ago >= timing.refresh_secs,
    };
    if wanted && may_attempt {
        KeyPlan::Fetch
    } else {
        KeyPlan::Use
    }
}

/// Whether a held set may still be used.
pub fn trusted(fetched_ago: Option<u64>, timing: KeyTiming) -> bool {
    fetched_ago.is_some_and(|ago| ago < timing.max_stale_secs)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    pub(crate) const ISSUER: &str = "https://issuer.example";
    pub(crate) const NOW: i64 = 1_800_000_000;

    /// A P-256 signing key and its JWKS entry.
    pub(crate) struct Signer {
        pkcs8: Vec<u8>,
        pub kid: String,
        public: Vec<u8>,
    }

    impl Signer {
        pub(crate) fn new(kid: &str) -> Signer {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .unwrap()
                .as_ref()
                .to_vec();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
            Signer {
                public: pair.public_key().as_ref().to_vec(),
                pkcs8,
                kid: kid.into(),
            }
        }

        pub(crate) fn jwk(&self) -> serde_json::Value {
            // Uncompressed point: 0x04 || x || y.
            let (x, y) = self.public[1..].split_at(32);
            serde_json::json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            })
        }

        pub(crate) fn sign(&self, claims: &serde_json::Value) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(self.kid.clone());
            jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
        }
    }

    pub(crate) fn jwks(signers: &[&Signer]) -> KeySet {
        let doc = serde_json::json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()});
        KeySet::from_jwks(doc.to_string().as_bytes()).unwrap()
    }

    pub(crate) fn claims(sub: &str, aud: &str, exp: i64) -> serde_json::Value {
        serde_json::json!({"iss": ISSUER, "sub": sub, "aud": aud, "exp": exp, "iat": exp - 600,
            "repository": "acme/api", "groups": ["a", "b"]})
    }

    fn check(jwt: &str, keys: &KeySet, now: i64) -> Result<Verified, Refusal> {
        verify(jwt, &peek(jwt)?, keys, now)
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn a_signed_token_verifies_and_keeps_its_string_claims() {
        let signer = Signer::new("k1");
        let jwt = signer.sign(&claims(
            "repo:acme/api:ref:refs/heads/main",
            "strake",
            NOW + 600,
        ));
        assert!(looks_like_jwt(&jwt));
        let v = check(&jwt, &jwks(&[&signer]), NOW).unwrap();
        assert_eq!(&*v.issuer, ISSUER);
        assert_eq!(&*v.audiences, &["strake".into()] as &[Box<str>]);
        assert_eq!(v.subject(), Some("repo:acme/api:ref:refs/heads/main"));
        assert!(matches!(v.claim("repository"), Claim::One("acme/api")));
        assert!(matches!(v.claim("groups"), Claim::Many(g) if g.len() == 2));
        assert!(
            matches!(v.claim("iat"), Claim::Absent),
            "numbers are not matched"
        );
    }

    #[test]
    fn an_rs256_token_verifies_against_an_rsa_jwk() {
        // GitHub's and most SSO issuers' keys are RSA. A 2048-bit key made
        // for this test only (PKCS#1 DER), and its public JWK.
        let der = include_bytes!("testdata/rsa-2048-test-key.der");
        let jwk = serde_json::json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "rsa1", "e": "AQAB",
            "n": "1nbG8aBgPBQn42Mtb7AlsPr9vwEAIw5J2ruvUOJz0GCNwb6iKdKzILLWBBOrPW8dgsmBXHzoamPJjQk945tw-KQ2InMWjusNv3v6I2BARYGSyUIrT1D2M4IKRBUgrclHnymFvvB31G-OdC1Cqrac2_5SSrePVNBQHkQB1nBn_PAajNlsHtxna1Y-9bNbApo0s4wQCoz2fr6cJ9wUmi10wQMGUbisX5ytdnlyAZKQBl3__pU6HvMCTbFGSoamDYVDict2dvWQVzvu6vnXgZOc2_Anb5NEAdWfFZL3SneY-l6fGTrnWeuNeFCBoJ7ExB-OPSbK8efz5d8qCpv-KK2WXw",
        });
        let keys =
            KeySet::from_jwks(serde_json::json!({"keys": [jwk]}).to_string().as_bytes()).unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa1".into());
        let sign = |claims: &serde_json::Value| {
            jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(der)).unwrap()
        };
        let jwt = sign(&claims(
            "repo:acme/api:ref:refs/heads/main",
            "strake",
            NOW + 600,
        ));
        let v = check(&jwt, &keys, NOW).unwrap();
        assert_eq!(v.subject(), Some("repo:acme/api:ref:refs/heads/main"));
        let mut parts: Vec<String> = jwt.split('.').map(String::from).collect();
        parts[1] = b64(&claims("someone-else", "strake", NOW + 600));
        assert_eq!(
            check(&parts.join("."), &keys, NOW),
            Err(Refusal::BadSignature)
        );
        // The RSA key does not verify a token whose header names ES256.
        let mut es = Header::new(Algorithm::ES256);
        es.kid = Some("rsa1".into());
        let signer = Signer::new("rsa1");
        let confused = jsonwebtoken::encode(
            &es,
            &claims("s", "strake", NOW + 600),
            &EncodingKey::from_ec_der(&signer.pkcs8),
        )
        .unwrap();
        assert!(check(&confused, &keys, NOW).is_err());
    }

    #[test]
    fn dates_are_checked_with_the_skew() {
        let signer = Signer::new("k1");
        let keys = jwks(&[&signer]);
        let jwt = signer.sign(&claims("s", "strake", NOW));
        assert!(check(&jwt, &keys, NOW + CLOCK_SKEW_SECS - 1).is_ok());
        assert_eq!(
            check(&jwt, &keys, NOW + CLOCK_SKEW_SECS),
            Err(Refusal::Expired { at: NOW })
        );
        let mut early = claims("s", "strake", NOW + 3600);
        early["nbf"] = (NOW + 600).into();
        let jwt = signer.sign(&early);
        assert_eq!(
            check(&jwt, &keys, NOW),
            Err(Refusal::NotYetValid { at: NOW + 600 })
        );
        let mut no_exp = claims("s", "strake", 0);
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(matches!(
            check(&signer.sign(&no_exp), &keys, NOW),
            Err(Refusal::Malformed(_))
        ));
        let mut text_exp = claims("s", "strake", 0);
        text_exp["exp"] = "9999999999".into();
        assert!(matches!(
            check(&signer.sign(&text_exp), &keys, NOW),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn another_key_an_unknown_kid_and_a_tampered_payload_are_refused() {
        let (good, evil) = (Signer::new("k1"), Signer::new("k1"));
        let keys = jwks(&[&good]);
        let forged = evil.sign(&claims("s", "strake", NOW + 600));
        assert_eq!(check(&forged, &keys, NOW), Err(Refusal::BadSignature));
        let stranger = Signer::new("k2").sign(&claims("s", "strake", NOW + 600));
        assert_eq!(check(&stranger, &keys, NOW), Err(Refusal::UnknownKey));
        let jwt = good.sign(&claims("s", "strake", NOW + 600));
        let mut parts: Vec<String> = jwt.split('.').map(String::from).collect();
        parts[1] = b64(&claims("someone-else", "strake", NOW + 600));
        assert_eq!(
            check(&parts.join("."), &keys, NOW),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn none_hmac_and_algorithm_confusion_are_refused() {
        let signer = Signer::new("k1");
        let keys = jwks(&[&signer]);
        let body = b64(&claims("s", "strake", NOW + 600));
        let none = format!(
            "{}.{body}.",
            b64(&serde_json::json!({"alg": "none", "kid": "k1"}))
        );
        assert_eq!(peek(&none), Err(Refusal::Algorithm("none".into())));
        // HS256 signed with the public key's bytes as the secret: the
        // classic confusion. It never reaches a verifier.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims("s", "strake", NOW + 600),
            &EncodingKey::from_secret(&signer.public),
        )
        .unwrap();
        assert_eq!(peek(&hs), Err(Refusal::Algorithm("HS256".into())));
        // RS256 in the header against an EC key.
        let rs = format!(
            "{}.{body}.c2ln",
            b64(&serde_json::json!({"alg": "RS256", "kid": "k1"}))
        );
        assert!(matches!(check(&rs, &keys, NOW), Err(Refusal::Algorithm(_))));
        let crit = format!(
            "{}.{body}.c2ln",
            b64(&serde_json::json!({"alg": "ES256", "kid": "k1", "crit": ["exp"]}))
        );
        assert!(matches!(peek(&crit), Err(Refusal::Malformed(_))));
    }

    #[test]
    fn a_jwks_keeps_only_asymmetric_signing_keys() {
        let signer = Signer::new("k1");
        let mut enc = signer.jwk();
        enc["use"] = "enc".into();
        enc["kid"] = "enc".into();
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            enc,
            signer.jwk(),
        ]});
        let set = KeySet::from_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.has_kid("k1") && !set.has_kid("hmac") && !set.has_kid("enc"));
        let only_oct = serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        assert!(KeySet::from_jwks(only_oct.to_string().as_bytes()).is_err());
        assert!(KeySet::from_jwks(b"<html>").is_err());
    }

    fn subject(sub: &str) -> FederatedSubject {
        FederatedSubject {
            issuer: ISSUER.into(),
            audience: "strake".into(),
            subject: Some(sub.into()),
            claims: Default::default(),
        }
    }

    #[test]
    fn exactly_one_strake_token_must_accept_the_subject() {
        let signer = Signer::new("k1");
        let keys = jwks(&[&signer]);
        let v = |sub: &str, aud: &str| {
            check(&signer.sign(&claims(sub, aud, NOW + 600)), &keys, NOW).unwrap()
        };
        let (a, b) = (TokenHash::of("a"), TokenHash::of("b"));
        let mut table = SubjectTable::default();
        table.insert(&[subject("repo:acme/api:ref:refs/heads/main")], a);
        table.insert(&[subject("repo:acme/*")], b);
        assert_eq!(table.resolve(&v("repo:acme/web:pull", "strake")), Ok(b));
        assert_eq!(
            table.resolve(&v("repo:acme/api:ref:refs/heads/main", "strake")),
            Err(Refusal::Ambiguous(2)),
            "never the more specific one: that would let a resource capture another's callers"
        );
        assert_eq!(
            table.resolve(&v("repo:other/x", "strake")),
            Err(Refusal::NoStrakeToken)
        );
        assert_eq!(
            table.resolve(&v("repo:acme/web", "other")),
            Err(Refusal::WrongAudience(ISSUER.into()))
        );
        table.remove(&[subject("repo:acme/*")], b);
        assert_eq!(
            table.resolve(&v("repo:acme/api:ref:refs/heads/main", "strake")),
            Ok(a)
        );
        table.remove(&[subject("repo:acme/api:ref:refs/heads/main")], a);
        assert!(table.is_empty() && !table.knows_issuer(ISSUER));
    }

    #[test]
    fn the_cache_keeps_a_verification_until_exp_or_its_max_age() {
        let signer = Signer::new("k1");
        let keys = jwks(&[&signer]);
        let jwt = signer.sign(&claims("s", "strake", NOW + 100));
        let v = Arc::new(check(&jwt, &keys, NOW).unwrap());
        let cache = VerifiedCache::new(2);
        let h = TokenHash::of(&jwt);
        cache.insert(h, v.clone(), NOW, 300);
        assert!(cache.get(&h, NOW + 100 + CLOCK_SKEW_SECS - 1).is_some());
        assert!(cache.get(&h, NOW + 100 + CLOCK_SKEW_SECS).is_none());
        cache.insert(h, v.clone(), NOW, 10);
        assert!(cache.get(&h, NOW + 10).is_none(), "max age first");
        for i in 0..5 {
            cache.insert(TokenHash::of(&i.to_string()), v.clone(), NOW, 300);
        }
        assert!(cache.len() <= 2, "bounded");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn segment() -> impl Strategy<Value = String> {
            prop_oneof![
                "[A-Za-z0-9_-]{0,40}",
                any::<Vec<u8>>().prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
                "\\PC{0,60}".prop_map(|j| URL_SAFE_NO_PAD.encode(j)),
                Just(URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k1"}"#)),
                Just(
                    URL_SAFE_NO_PAD
                        .encode(r#"{"iss":"https://issuer.example","exp":1e300,"aud":[1,null]}"#)
                ),
            ]
        }

        proptest! {
            #[test]
            fn no_credential_makes_parsing_or_verifying_panic(s in "\\PC{0,200}") {
                let keys = KeySet::default();
                if let Ok(seen) = peek(&s) {
                    let _ = verify(&s, &seen, &keys, NOW);
                }
                let _ = looks_like_jwt(&s);
            }

            #[test]
            fn no_jwt_shaped_input_makes_parsing_or_verifying_panic(
                header in segment(), payload in segment(), signature in segment(),
            ) {
                let jwt = format!("eyJ{header}.{payload}.{signature}");
                let signer = Signer::new("k1");
                let keys = jwks(&[&signer]);
                if let Ok(seen) = peek(&jwt) {
                    prop_assert!(verify(&jwt, &seen, &keys, NOW).is_err(), "an unsigned token verified");
                }
            }

            #[test]
            fn no_jwks_document_makes_parsing_panic(doc in "\\PC{0,300}") {
                let _ = KeySet::from_jwks(doc.as_bytes());
            }

            #[test]
            fn matching_is_exact_or_by_the_literal_prefix(
                literal in "[a-z:/]{1,12}", value in "[a-z:/]{0,16}", star in any::<bool>(),
            ) {
                let pattern = if star { format!("{literal}*") } else { literal.clone() };
                prop_assert!(strake_crds::federated::check_pattern(&pattern).is_ok());
                let matched = strake_crds::federated::pattern_matches(&pattern, &value);
                prop_assert_eq!(matched, if star { value.starts_with(&literal) } else { value == literal });
            }

            #[test]
            fn resolving_any_claims_never_panics_and_finds_at_most_one(
                subs in proptest::collection::vec("[a-z:*]{0,8}", 0..6),
                sub in "[a-z:]{0,8}",
            ) {
                let mut table = SubjectTable::default();
                for (i, s) in subs.iter().enumerate() {
                    table.insert(&[FederatedSubject {
                        issuer: ISSUER.into(),
                        audience: "strake".into(),
                        subject: Some(s.clone()),
                        claims: Default::default(),
                    }], TokenHash::of(&i.to_string()));
                }
                let v = Verified {
                    issuer: ISSUER.into(),
                    audiences: Box::new(["strake".into()]),
                    expires_at: NOW,
                    claims: Box::new([("sub".into(), ClaimValue::One(sub.clone().into()))]),
                };
                match table.resolve(&v) {
                    Ok(hash) => prop_assert!(subs.iter().enumerate().any(|(i, s)| TokenHash::of(&i.to_string()) == hash
                        && strake_crds::federated::pattern_matches(s, &sub))),
                    Err(Refusal::Ambiguous(n)) => prop_assert!(n >= 2),
                    Err(_) => {}
                }
            }
        }
    }

    #[test]
    fn keys_are_fetched_when_missing_stale_or_missing_the_kid_but_never_too_often() {
        let t = KeyTiming::default();
        let state = |fetched: Option<u64>, attempted: Option<u64>, kid_known| KeyState {
            fetched_ago: fetched,
            attempted_ago: attempted,
            kid_known,
        };
        assert_eq!(key_plan(state(None, None, false), t), KeyPlan::Fetch);
        assert_eq!(key_plan(state(Some(5), Some(5), true), t), KeyPlan::Use);
        assert_eq!(
            key_plan(state(Some(20), Some(20), false), t),
            KeyPlan::Fetch
        );
        assert_eq!(
            key_plan(state(Some(20), Some(3), false), t),
            KeyPlan::Use,
            "an unknown kid waits for the refetch interval"
        );
        assert_eq!(
            key_plan(state(Some(300), Some(300), true), t),
            KeyPlan::Fetch
        );
        assert_eq!(
            key_plan(state(None, Some(1), false), t),
            KeyPlan::Use,
            "an issuer that is down is not asked on every request"
        );
        assert!(trusted(Some(86_399), t));
        assert!(!trusted(Some(86_400), t));
        assert!(!trusted(None, t));
    }
}
