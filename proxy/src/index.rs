//! The token index: SHA-256 → policy, and the upstream table.
//!
//! Shaped like linkerd's policy index: a plain structure with `apply`,
//! `delete` and `reset`, driven by a config source (file reloads, Secret
//! watch events) and knowing nothing of the network.
//!
//! Readers get an immutable [`Snapshot`] (published through `ArcSwap`, one
//! load per request). Tokens live in 256 copy-on-write shards keyed by the
//! first hash byte, so changing one token copies one shard (~400 entries at
//! 100,000 tokens), not the whole map, and publishing a snapshot copies 256
//! pointers.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use strake_crds::TokenLimits;
use strake_crds::contract::{BudgetRecord, SourceRef, TokenRecord, UpstreamRecord, route_name};
use strake_crds::federated::FederatedSubject;
use strake_crds::provider::{KeyHeader, Provider};
use strake_crds::token::TokenHash;
use strake_crds::usage::Counters;

use crate::endpoint::Allowance;
use crate::federated::{Refusal, SubjectTable, Verified};
use crate::metrics::{Metrics, TokenMetrics, UpstreamMetrics};
use crate::ratelimit::Limiter;

const SHARDS: usize = 256;

/// The most upstreams one token may name (the StrakeToken CRD's limit too),
/// so routing can work on the stack.
pub const MAX_TOKEN_UPSTREAMS: usize = 16;

/// A config record, from a file or a Secret.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Token(TokenRecord),
    Upstream {
        record: UpstreamRecord,
        api_key: ApiKey,
    },
}

/// A real provider key. Its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Surrounding whitespace is dropped: a key file or Secret made with
    /// `echo` ends in a newline that is not part of the key.
    pub fn new(key: impl Into<String>) -> ApiKey {
        let key = key.into();
        let trimmed = key.trim();
        if trimmed.len() == key.len() {
            ApiKey(key)
        } else {
            ApiKey(trimmed.to_owned())
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Why a record cannot be used. Messages name the field and never contain
/// a key or a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("token {name:?}: its sha256 is already used by {other}")]
    DuplicateHash { name: String, other: String },
    #[error("upstream {name:?} is defined twice (also by {other})")]
    DuplicateUpstream { name: String, other: String },
    #[error("token {name:?}: {problem}")]
    Token { name: String, problem: String },
    #[error("upstream {name:?}: {problem}")]
    Upstream { name: String, problem: String },
}

/// What the proxy knows about one token.
pub struct TokenPolicy {
    pub name: Arc<str>,
    pub identity: Arc<str>,
    pub hash: TokenHash,
    /// The token's upstreams, in the record's order.
    pub upstreams: Box<[TokenUpstream]>,
    /// Unix milliseconds.
    pub expires_at_ms: Option<i64>,
    pub suspended: bool,
    pub allowed_models: Box<[Box<str>]>,
    pub limits: Option<TokenLimits>,
    /// Endpoints opened beyond the inference ones ([`crate::endpoint`]).
    pub endpoints: Box<[Allowance]>,
    /// The StrakeToken it was published for (kube mode): usage is reported
    /// under it.
    pub source: Option<SourceRef>,
    /// Counters and rate-limit buckets. Shared with the policy this one
    /// replaced under the same source, so a reload or a rotation keeps them.
    pub state: Arc<TokenState>,
    /// The token's budget, as the operator last published it.
    pub budget: Option<Box<BudgetRecord>>,
    /// The OIDC subjects that authenticate as this token ([`crate::federated`]).
    pub federated: Box<[FederatedSubject]>,
}

/// One of a token's upstreams: its id and lazily resolved metric handles.
pub struct TokenUpstream {
    /// Shared by every token naming this upstream.
    pub id: Arc<str>,
    /// Boxed: most tokens of a large index are idle, and an empty slot
    /// should cost a pointer, not seven.
    metrics: OnceLock<Box<TokenMetrics>>,
}

impl TokenUpstream {
    /// The `/<name>/…` prefix that selects this upstream.
    pub fn route(&self) -> &str {
        route_name(&self.id)
    }

    pub fn metrics(&self, m: &Metrics, policy: &TokenPolicy) -> &TokenMetrics {
        self.metrics
            .get_or_init(|| Box::new(m.token(&policy.identity, &policy.name, &self.id)))
    }
}

/// Mutable per-token state: survives reloads of the same token.
#[derive(Debug, Default)]
pub struct TokenState {
    pub limiter: Mutex<Limiter>,
    /// Cumulative usage: what the rate limiter's debits, `/usage` and the
    /// collector read.
    pub usage: UsageCell,
    /// Per-model price lookups and spend series for `/metrics`.
    pub spend: crate::spend::TokenSpend,
}

impl TokenState {
    pub fn limiter(&self) -> std::sync::MutexGuard<'_, Limiter> {
        // The limiter holds plain numbers; a panic mid-update cannot leave
        // it unusable, so poisoning is ignored.
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one forwarded request used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Used {
    /// Every input token, cached and cache-write ones included.
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    /// Its price in picodollars; `None` when tokens were used but the model
    /// has no price.
    pub spend: Option<u64>,
}

/// The process-wide source of series numbers: each new [`UsageCell`] takes
/// the next, so a collector can tell counters that started over from
/// counters that went on.
static NEXT_SERIES: AtomicU64 = AtomicU64::new(1);

/// Cumulative usage counters since the cell was made (for a token or an
/// upstream: it survives a reload, a rotation or a suspension of the same
/// resource, and starts over, with a new series, when the resource leaves
/// the index and comes back).
#[derive(Debug)]
pub struct UsageCell {
    pub series: u64,
    pub requests: AtomicU64,
    pub input_tokens: AtomicU64,
    pub output_tokens: AtomicU64,
    pub cached_input_tokens: AtomicU64,
    pub cache_write_tokens: AtomicU64,
    pub spend_picodollars: AtomicU64,
    pub unpriced_requests: AtomicU64,
    /// Unix seconds; 0 = never.
    pub last_used: AtomicU64,
}

impl Default for UsageCell {
    fn default() -> Self {
        UsageCell {
            series: NEXT_SERIES.fetch_add(1, Ordering::Relaxed),
            requests: AtomicU64::new(0),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
            cached_input_tokens: AtomicU64::new(0),
            cache_write_tokens: AtomicU64::new(0),
            spend_picodollars: AtomicU64::new(0),
            unpriced_requests: AtomicU64::new(0),
            last_used: AtomicU64::new(0),
        }
    }
}

impl UsageCell {
    pub fn record(&self, used: &Used, now_unix: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.input_tokens.fetch_add(used.input, Ordering::Relaxed);
        self.output_tokens.fetch_add(used.output, Ordering::Relaxed);
        self.cached_input_tokens
            .fetch_add(used.cached_input, Ordering::Relaxed);
        self.cache_write_tokens
            .fetch_add(used.cache_write, Ordering::Relaxed);
        match used.spend {
            Some(pico) => {
                self.spend_picodollars.fetch_add(pico, Ordering::Relaxed);
            }
            None => {
                self.unpriced_requests.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.last_used.fetch_max(now_unix, Ordering::Relaxed);
    }

    /// A reading of every counter. Each is exact; a request recorded during
    /// the reading may show in some and not yet in others, and shows in all
    /// at the next reading.
    pub fn counters(&self) -> Counters {
        Counters {
            requests: self.requests.load(Ordering::Relaxed),
            input_tokens: self.input_tokens.load(Ordering::Relaxed),
            output_tokens: self.output_tokens.load(Ordering::Relaxed),
            cached_input_tokens: self.cached_input_tokens.load(Ordering::Relaxed),
            cache_write_tokens: self.cache_write_tokens.load(Ordering::Relaxed),
            spend_picodollars: self.spend_picodollars.load(Ordering::Relaxed),
            unpriced_requests: self.unpriced_requests.load(Ordering::Relaxed),
        }
    }

    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }
}

impl TokenPolicy {
    fn new(
        record: TokenRecord,
        state: Arc<TokenState>,
        intern: &mut dyn FnMut(&str) -> Arc<str>,
        cluster_issuer: Option<&str>,
    ) -> Result<TokenPolicy, IndexError> {
        let problem = |p: &str| IndexError::Token {
            name: record.name.clone(),
            problem: p.to_owned(),
        };
        if record.name.trim().is_empty() {
            return Err(problem("name is empty"));
        }
        if record.upstreams.is_empty() {
            return Err(problem(
                "upstreams is empty: a token needs at least one upstream",
            ));
        }
        if record.allowed_models.iter().any(|m| m.is_empty()) {
            return Err(problem("allowedModels contains an empty pattern"));
        }
        let endpoints = record
            .endpoints
            .iter()
            .map(Allowance::new)
            .collect::<Result<_, _>>()
            .map_err(|p| problem(&p))?;
        // The operator refuses these too; a record that bypassed it (a
        // hand-written Secret) must not widen what the cluster issuer
        // vouches for.
        if let Some(cluster_issuer) = cluster_issuer {
            let namespace = record.source.as_ref().map(|s| s.namespace.as_str());
            for subject in &record.federated {
                subject
                    .check(namespace.or(Some("")), cluster_issuer)
                    .map_err(|p| problem(&format!("federated: {p}")))?;
            }
        }
        Ok(TokenPolicy {
            name: record.name.as_str().into(),
            identity: record.identity.as_str().into(),
            hash: record.sha256,
            upstreams: record
                .upstreams
                .iter()
                .map(|id| TokenUpstream {
                    id: intern(id),
                    metrics: OnceLock::new(),
                })
                .collect(),
            expires_at_ms: record.expires_at.map(|t| t.0.as_millisecond()),
            suspended: record.suspended,
            allowed_models: record
                .allowed_models
                .into_iter()
                .map(String::into_boxed_str)
                .collect(),
            limits: record.limits,
            endpoints,
            source: record.source,
            state,
            budget: record.budget,
            federated: record.federated.into(),
        })
    }

    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| now_ms >= at)
    }

    /// The expiry as RFC 3339, for messages.
    pub fn expires_at_string(&self) -> String {
        self.expires_at_ms
            .and_then(|ms| k8s_openapi::jiff::Timestamp::from_millisecond(ms).ok())
            .map(|t| t.to_string())
            .unwrap_or_default()
    }
}

impl fmt::Debug for TokenPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPolicy")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// One upstream: where requests go and the key they carry, with header
/// values computed once.
pub struct Upstream {
    pub id: Arc<str>,
    pub provider: Provider,
    pub scheme: Scheme,
    pub authority: Authority,
    /// The base URL's path without a trailing slash (`""` for none).
    pub base_path: Box<str>,
    pub key_header: HeaderName,
    /// Marked sensitive: hyper's HPACK never indexes it.
    pub key_value: HeaderValue,
    pub headers: Box<[(HeaderName, HeaderValue)]>,
    /// Endpoints opened for every token of this upstream.
    pub endpoints: Box<[Allowance]>,
    /// The UpstreamKey it was published for (kube mode).
    pub source: Option<SourceRef>,
    /// Usage through this upstream by every token; kept when the upstream's
    /// record is replaced (a key rotation, a header change).
    pub usage: Arc<UsageCell>,
    /// The UpstreamKey's budget, as the operator last published it.
    pub budget: Option<Box<BudgetRecord>>,
    metrics: OnceLock<UpstreamMetrics>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("authority", &self.authority)
            .field("base_path", &self.base_path)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    pub fn new(record: &UpstreamRecord, api_key: &ApiKey) -> Result<Upstream, IndexError> {
        let problem = |p: String| IndexError::Upstream {
            name: record.name.clone(),
            problem: p,
        };
        if record.name.is_empty() || route_name(&record.name).is_empty() {
            return Err(problem("name is empty".into()));
        }
        let (scheme, authority, base_path) =
            parse_base_url(&record.base_url).map_err(|p| problem(format!("baseUrl: {p}")))?;
        let key = api_key.expose();
        if key.is_empty() {
            return Err(problem("the API key is empty".into()));
        }
        let (key_header, key_value) = match record.provider.key_header() {
            KeyHeader::Bearer => (
                http::header::AUTHORIZATION,
                HeaderValue::try_from(format!("Bearer {key}")),
            ),
            KeyHeader::Plain(name) => (HeaderName::from_static(name), HeaderValue::try_from(key)),
        };
        let mut key_value = key_value.map_err(|_| {
            problem("the API key contains characters that cannot go in an HTTP header".into())
        })?;
        key_value.set_sensitive(true);
        let mut headers = Vec::with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            let n = HeaderName::try_from(name.as_str())
                .map_err(|_| problem(format!("headers: {name:?} is not a valid header name")))?;
            if strake_crds::headers::is_reserved(n.as_str()) {
                return Err(problem(format!(
                    "headers: {name:?} is set by the proxy and cannot be configured"
                )));
            }
            let v = HeaderValue::try_from(value.as_str()).map_err(|_| {
                problem(format!(
                    "headers: the value of {name:?} is not a valid header value"
                ))
            })?;
            headers.push((n, v));
        }
        let endpoints = record
            .endpoints
            .iter()
            .map(Allowance::new)
            .collect::<Result<_, _>>()
            .map_err(problem)?;
        Ok(Upstream {
            id: record.name.as_str().into(),
            provider: record.provider,
            scheme,
            authority,
            base_path: base_path.into(),
            key_header,
            key_value,
            headers: headers.into(),
            endpoints,
            source: record.source.clone(),
            usage: Arc::default(),
            budget: record.budget.clone(),
            metrics: OnceLock::new(),
        })
    }

    pub fn metrics(&self, m: &Metrics) -> &UpstreamMetrics {
        self.metrics.get_or_init(|| m.upstream(&self.id))
    }
}

/// Splits `http(s)://host[:port][/path]` into its parts. No user info,
/// query or fragment: the base URL is where requests go, nothing more.
pub fn parse_base_url(url: &str) -> Result<(Scheme, Authority, String), String> {
    if url.contains(['?', '#']) {
        return Err(format!("{url:?} must not have a query or fragment"));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("{url:?} is not a URL (expected e.g. https://api.openai.com)"))?;
    let scheme = match uri.scheme_str() {
        Some("https") => Scheme::HTTPS,
        Some("http") => Scheme::HTTP,
        _ => return Err(format!("{url:?} must start with https:// or http://")),
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("{url:?} must not contain user info"));
    }
    if authority.host().is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let path = uri.path().trim_end_matches('/');
    crate::target::check_path(if path.is_empty() { "/" } else { path })
        .map_err(|e| format!("{url:?}: {}", e.message()))?;
    Ok((scheme, authority, path.to_owned()))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A SHA-256 is already uniformly distributed: hash it by taking bytes
/// instead of running SipHash over 32 bytes on every request. Only the
/// proxy's own records are stored, so there is nothing to flood.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        if bytes.len() >= 16 {
            // Byte 0 picks the shard; bytes 8..16 are independent of it.
            self.0 = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        } else {
            for &b in bytes {
                self.0 =
                    (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
            }
        }
    }

    // The array's length prefix carries nothing.
    fn write_usize(&mut self, _: usize) {}
}

type Shard = HashMap<TokenHash, Arc<TokenPolicy>, BuildHasherDefault<DigestHasher>>;
type PreviousShard = HashMap<TokenHash, Previous, BuildHasherDefault<DigestHasher>>;

/// A token rotated out with a grace period: it authenticates as the
/// token that replaced it until the deadline, checked on every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Previous {
    /// The hash of the token that replaced it.
    pub current: TokenHash,
    /// Unix milliseconds: refused from this instant on.
    pub valid_until_ms: i64,
}

/// An immutable view of the index, as one request sees it.
#[derive(Clone)]
pub struct Snapshot {
    shards: Vec<Arc<Shard>>,
    /// Rotated-out tokens in their grace period, sharded like `shards`.
    previous: Vec<Arc<PreviousShard>>,
    upstreams: Arc<HashMap<Arc<str>, Arc<Upstream>>>,
    tokens: usize,
    /// Tokens that left the index with usage, by source: no request
    /// authenticates with them, but their counters (which requests still in
    /// flight may add to) stay in the usage report for
    /// [`DEPARTED_RETENTION_SECS`], so the collector folds their last use.
    departed: Arc<HashMap<Box<str>, Departed>>,
    /// Every token's federated subjects.
    federated: Arc<SubjectTable>,
}

/// How long a revoked token's counters stay in the usage report after it
/// left the index: far beyond the operator's final collection (two
/// collection rounds and a scrape, at most 65 s), so a deleted token's last
/// use is collected even when the collector runs a round late.
pub const DEPARTED_RETENTION_SECS: u64 = 600;

#[derive(Clone, Debug)]
pub struct Departed {
    pub policy: Arc<TokenPolicy>,
    /// Unix seconds when it left.
    pub at: u64,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            shards: (0..SHARDS).map(|_| Arc::new(Shard::default())).collect(),
            previous: (0..SHARDS)
                .map(|_| Arc::new(PreviousShard::default()))
                .collect(),
            upstreams: Arc::default(),
            tokens: 0,
            departed: Arc::default(),
            federated: Arc::default(),
        }
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("tokens", &self.tokens)
            .field("upstreams", &self.upstreams.len())
            .finish()
    }
}

impl Snapshot {
    pub fn token(&self, hash: &TokenHash) -> Option<&Arc<TokenPolicy>> {
        self.shards[usize::from(hash.0[0])].get(hash)
    }

    /// The policy a presented token's hash authenticates as at `now_ms`
    /// (unix milliseconds): its own, or, for a rotated-out token before its
    /// deadline, its successor's. The deadline is the proxy's to enforce:
    /// no later record is needed to end it.
    pub fn authenticate(&self, hash: &TokenHash, now_ms: i64) -> Option<&Arc<TokenPolicy>> {
        if let Some(policy) = self.token(hash) {
            return Some(policy);
        }
        let previous = self.previous[usize::from(hash.0[0])].get(hash)?;
        if now_ms < previous.valid_until_ms {
            self.token(&previous.current)
        } else {
            None
        }
    }

    /// The policy a verified JWT authenticates as: the one token whose
    /// subjects accept it. In the same snapshot as minted tokens, so
    /// deleting or changing the StrakeToken refuses its JWTs at once.
    pub fn authenticate_federated(&self, v: &Verified) -> Result<&Arc<TokenPolicy>, Refusal> {
        let hash = self.federated.resolve(v)?;
        self.token(&hash).ok_or(Refusal::NoStrakeToken)
    }

    /// The subjects of every token, by issuer.
    pub fn federated(&self) -> &SubjectTable {
        &self.federated
    }

    /// The rotated-out token `hash`, while the index holds it.
    pub fn previous(&self, hash: &TokenHash) -> Option<&Previous> {
        self.previous[usize::from(hash.0[0])].get(hash)
    }

    pub fn upstream(&self, id: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(id)
    }

    pub fn token_count(&self) -> usize {
        self.tokens
    }

    pub fn upstream_count(&self) -> usize {
        self.upstreams.len()
    }

    pub fn tokens(&self) -> impl Iterator<Item = &Arc<TokenPolicy>> {
        self.shards.iter().flat_map(|s| s.values())
    }

    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.upstreams.values()
    }

    /// Tokens that left with usage, still reported (see [`Departed`]).
    pub fn departed(&self) -> impl Iterator<Item = &Departed> {
        self.departed.values()
    }
}

/// What a source key contributed to the index.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Contribution {
    /// A token, and the token it replaced while that one is in its grace.
    Token(TokenHash, Option<TokenHash>),
    Upstream(Arc<str>),
}

impl Contribution {
    fn token_hash(&self) -> Option<TokenHash> {
        match self {
            Contribution::Token(hash, _) => Some(*hash),
            Contribution::Upstream(_) => None,
        }
    }
}

/// The writer side: a snapshot under construction plus which source (a
/// Secret name, a file entry) contributed which entry, so that a delete or
/// a changed record removes exactly what its source put in.
#[derive(Default)]
pub struct TokenIndex {
    view: Snapshot,
    sources: HashMap<Box<str>, Contribution>,
    /// Upstream ids, one allocation each however many tokens name them.
    ids: std::collections::HashSet<Arc<str>>,
    /// The cluster's ServiceAccount issuer: it may vouch only for a
    /// token's own namespace. `None` (file mode): no such rule.
    cluster_issuer: Option<Arc<str>>,
}

/// What a change removed for good (no replacement under the same name):
/// callers drop these tokens' metric series.
pub type Removed = Vec<Arc<TokenPolicy>>;

impl TokenIndex {
    pub fn new() -> TokenIndex {
        TokenIndex::default()
    }

    /// An index that holds subjects of `cluster_issuer` to the rule of
    /// [`FederatedSubject::check`] (kube mode).
    pub fn with_cluster_issuer(cluster_issuer: &str) -> TokenIndex {
        TokenIndex {
            cluster_issuer: Some(cluster_issuer.into()),
            ..TokenIndex::default()
        }
    }

    /// Adds or replaces what `source` contributes.
    pub fn apply(&mut self, source: &str, record: Record) -> Result<Removed, IndexError> {
        match record {
            Record::Token(record) => self.apply_token(source, record, None),
            Record::Upstream { record, api_key } => {
                let upstream = Upstream::new(&record, &api_key)?;
                self.apply_upstream(source, upstream, None)
            }
        }
    }

    fn apply_token(
        &mut self,
        source: &str,
        record: TokenRecord,
        previous: Option<&TokenIndex>,
    ) -> Result<Removed, IndexError> {
        let hash = record.sha256;
        let mine = self.sources.get(source).cloned();
        let mine_hash = mine.as_ref().and_then(Contribution::token_hash);
        if let Some(existing) = self.view.token(&hash)
            && mine_hash != Some(hash)
        {
            return Err(IndexError::DuplicateHash {
                name: record.name,
                other: existing.name.to_string(),
            });
        }
        // Keep counters and buckets of the token this source had before,
        // here or (for a reset) in the index being replaced.
        let before = previous.unwrap_or(self);
        let state = match before.sources.get(source) {
            Some(Contribution::Token(h, _)) => before
                .view
                .token(h)
                .filter(|p| *p.name == *record.name)
                .map(|p| p.state.clone()),
            _ => None,
        }
        .unwrap_or_default();
        let ids = &mut self.ids;
        let mut intern = |id: &str| match ids.get(id) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = id.into();
                ids.insert(shared.clone());
                shared
            }
        };
        let previous = record.previous.clone();
        let policy = Arc::new(TokenPolicy::new(
            record,
            state,
            &mut intern,
            self.cluster_issuer.as_deref(),
        )?);
        let mut removed = match &mine {
            Some(c) if mine_hash != Some(hash) => self.remove(c),
            Some(Contribution::Token(_, Some(old))) => {
                self.remove_previous(old);
                Vec::new()
            }
            _ => Vec::new(),
        };
        removed.retain(|p| p.name != policy.name);
        let replaced = self
            .view
            .token(&hash)
            .map(|p| p.federated.clone())
            .filter(|f| !f.is_empty());
        if replaced.is_some() || !policy.federated.is_empty() {
            let table = Arc::make_mut(&mut self.view.federated);
            if let Some(old) = replaced {
                table.remove(&old, hash);
            }
            table.insert(&policy.federated, hash);
        }
        let shard = Arc::make_mut(&mut self.view.shards[usize::from(hash.0[0])]);
        if shard.insert(hash, policy).is_none() {
            self.view.tokens += 1;
        }
        // A replaced token that is some other token's current hash (it
        // cannot be, short of a hash collision) is not taken over.
        let previous = previous
            .filter(|p| p.sha256 != hash && self.view.token(&p.sha256).is_none())
            .map(|p| {
                let shard = Arc::make_mut(&mut self.view.previous[usize::from(p.sha256.0[0])]);
                shard.insert(
                    p.sha256,
                    Previous {
                        current: hash,
                        valid_until_ms: p.valid_until.0.as_millisecond(),
                    },
                );
                p.sha256
            });
        self.sources
            .insert(source.into(), Contribution::Token(hash, previous));
        // Back (an extended expiry, a re-created resource): its new counters
        // are reported from here on, under a new series.
        if self.view.departed.contains_key(source) {
            Arc::make_mut(&mut self.view.departed).remove(source);
        }
        Ok(removed)
    }

    fn apply_upstream(
        &mut self,
        source: &str,
        mut upstream: Upstream,
        previous: Option<&TokenIndex>,
    ) -> Result<Removed, IndexError> {
        let id = upstream.id.clone();
        let mine = self.sources.get(source).cloned();
        if self.view.upstreams.contains_key(&id) && mine != Some(Contribution::Upstream(id.clone()))
        {
            let other = self
                .sources
                .iter()
                .find(|(_, c)| **c == Contribution::Upstream(id.clone()))
                .map(|(s, _)| s.to_string())
                .unwrap_or_default();
            return Err(IndexError::DuplicateUpstream {
                name: id.to_string(),
                other,
            });
        }
        // Keep the usage counters of the upstream this source had before.
        let before = previous.unwrap_or(self);
        if let Some(Contribution::Upstream(old)) = before.sources.get(source)
            && *old == id
            && let Some(kept) = before.view.upstream(old)
        {
            upstream.usage = kept.usage.clone();
        }
        let removed = match &mine {
            Some(c) if *c != Contribution::Upstream(id.clone()) => self.remove(c),
            _ => Vec::new(),
        };
        Arc::make_mut(&mut self.view.upstreams).insert(id.clone(), Arc::new(upstream));
        self.sources
            .insert(source.into(), Contribution::Upstream(id));
        Ok(removed)
    }

    /// Removes what `source` contributed, if anything.
    pub fn delete(&mut self, source: &str) -> Removed {
        let removed = match self.sources.remove(source) {
            Some(c) => self.remove(&c),
            None => Vec::new(),
        };
        let now = unix_now();
        self.depart(removed.iter().map(|p| (source.into(), p.clone())), now);
        removed
    }

    /// Keeps the counters of tokens that leave with usage in the report,
    /// and forgets those that left long enough ago.
    fn depart(&mut self, gone: impl IntoIterator<Item = (Box<str>, Arc<TokenPolicy>)>, now: u64) {
        let mut gone = gone
            .into_iter()
            .filter(|(_, p)| p.state.usage.counters().requests > 0)
            .peekable();
        let stale = self
            .view
            .departed
            .values()
            .any(|d| d.at.saturating_add(DEPARTED_RETENTION_SECS) < now);
        if gone.peek().is_none() && !stale {
            return;
        }
        let departed = Arc::make_mut(&mut self.view.departed);
        departed.retain(|_, d| d.at.saturating_add(DEPARTED_RETENTION_SECS) >= now);
        for (source, policy) in gone {
            departed.insert(source, Departed { policy, at: now });
        }
    }

    /// Forgets departed tokens as if `now` (unix seconds) had come.
    pub fn prune_departed(&mut self, now: u64) {
        self.depart(std::iter::empty(), now);
    }

    fn remove_previous(&mut self, hash: &TokenHash) {
        Arc::make_mut(&mut self.view.previous[usize::from(hash.0[0])]).remove(hash);
    }

    fn remove(&mut self, c: &Contribution) -> Removed {
        match c {
            Contribution::Token(hash, previous) => {
                if let Some(old) = previous {
                    self.remove_previous(old);
                }
                let shard = Arc::make_mut(&mut self.view.shards[usize::from(hash.0[0])]);
                match shard.remove(hash) {
                    Some(p) => {
                        self.view.tokens -= 1;
                        if !p.federated.is_empty() {
                            Arc::make_mut(&mut self.view.federated).remove(&p.federated, *hash);
                        }
                        vec![p]
                    }
                    None => Vec::new(),
                }
            }
            Contribution::Upstream(id) => {
                Arc::make_mut(&mut self.view.upstreams).remove(id);
                Vec::new()
            }
        }
    }

    /// Replaces the whole content with `records` (a watch restart). Tokens
    /// that stay keep their counters and buckets. Records that cannot be
    /// used are skipped and returned with their source.
    pub fn reset(
        &mut self,
        records: impl IntoIterator<Item = (String, Record)>,
    ) -> (Removed, Vec<(String, IndexError)>) {
        let (next, errors) = self.rebuilt(records);
        (self.replace(next), errors)
    }

    /// Replaces the whole content with `records` only if every one of them
    /// can be used (a file reload: a file is applied whole or not at all);
    /// else changes nothing and returns every problem.
    pub fn try_reset(
        &mut self,
        records: impl IntoIterator<Item = (String, Record)>,
    ) -> Result<Removed, Vec<(String, IndexError)>> {
        let (next, errors) = self.rebuilt(records);
        if errors.is_empty() {
            Ok(self.replace(next))
        } else {
            Err(errors)
        }
    }

    /// A new index of `records`, carrying over the state of tokens that stay.
    fn rebuilt(
        &self,
        records: impl IntoIterator<Item = (String, Record)>,
    ) -> (TokenIndex, Vec<(String, IndexError)>) {
        let mut next = TokenIndex {
            cluster_issuer: self.cluster_issuer.clone(),
            ..TokenIndex::default()
        };
        let mut errors = Vec::new();
        for (source, record) in records {
            let result = match record {
                Record::Token(r) => next.apply_token(&source, r, Some(self)),
                Record::Upstream { record, api_key } => Upstream::new(&record, &api_key)
                    .and_then(|u| next.apply_upstream(&source, u, Some(self))),
            };
            if let Err(e) = result {
                errors.push((source, e));
            }
        }
        (next, errors)
    }

    /// Becomes `next`; returns the tokens that `next` no longer has.
    fn replace(&mut self, mut next: TokenIndex) -> Removed {
        let kept: std::collections::HashSet<&str> = next.view.tokens().map(|p| &*p.name).collect();
        let removed: Removed = self
            .view
            .tokens()
            .filter(|p| !kept.contains(&*p.name))
            .cloned()
            .collect();
        let mut departed = (*self.view.departed).clone();
        departed.retain(|source, _| !next.sources.contains_key(source));
        next.view.departed = Arc::new(departed);
        let gone: Vec<(Box<str>, Arc<TokenPolicy>)> = self
            .sources
            .iter()
            .filter(|(source, _)| !next.sources.contains_key(*source))
            .filter_map(|(source, c)| match c {
                Contribution::Token(h, _) => {
                    self.view.token(h).map(|p| (source.clone(), p.clone()))
                }
                Contribution::Upstream(_) => None,
            })
            .collect();
        next.depart(gone, unix_now());
        *self = next;
        removed
    }

    /// The current content, for publishing. Cheap: shares every shard.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::new(self.view.clone())
    }

    pub fn view(&self) -> &Snapshot {
        &self.view
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use strake_crds::token::Token;

    #[test]
    fn a_rotated_out_token_authenticates_as_its_successor_until_its_deadline() {
        use strake_crds::contract::PreviousToken;
        let (oldest, old, new) = (Token::mint(), Token::mint(), Token::mint());
        let deadline = 1_800_000_000_000;
        let with_previous = |current: &Token, previous: &Token| {
            let mut r = token_record("team-a/alice", current.hash(), &["openai"]);
            r.previous = Some(PreviousToken {
                sha256: previous.hash(),
                valid_until: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::from_millisecond(deadline).unwrap(),
                ),
            });
            Record::Token(r)
        };
        let mut idx = TokenIndex::new();
        idx.apply(
            "alice",
            Record::Token(token_record("team-a/alice", oldest.hash(), &["openai"])),
        )
        .unwrap();
        idx.apply("alice", with_previous(&old, &oldest)).unwrap();
        let v = idx.snapshot();
        let who = |v: &Snapshot, t: &Token, at: i64| v.authenticate(&t.hash(), at).map(|p| p.hash);
        assert_eq!(who(&v, &old, deadline - 1), Some(old.hash()));
        assert_eq!(
            who(&v, &oldest, deadline - 1),
            Some(old.hash()),
            "as its successor"
        );
        assert_eq!(
            who(&v, &oldest, deadline),
            None,
            "the deadline ends it by itself"
        );
        assert_eq!(v.token_count(), 1, "one token, not two");
        assert_eq!(v.tokens().count(), 1);
        // The same state: a request with either token shares one bucket.
        assert!(Arc::ptr_eq(
            &v.authenticate(&oldest.hash(), 0).unwrap().state,
            &v.token(&old.hash()).unwrap().state
        ));

        // A second rotation: only the token it replaced survives.
        idx.apply("alice", with_previous(&new, &old)).unwrap();
        let v = idx.snapshot();
        assert_eq!(who(&v, &old, 0), Some(new.hash()));
        assert_eq!(who(&v, &oldest, 0), None);
        // The grace ended by the operator: the record names one token.
        idx.apply(
            "alice",
            Record::Token(token_record("team-a/alice", new.hash(), &["openai"])),
        )
        .unwrap();
        assert_eq!(who(&idx.snapshot(), &old, 0), None);
        // Deleting the token ends both.
        idx.apply("alice", with_previous(&new, &old)).unwrap();
        idx.delete("alice");
        let v = idx.snapshot();
        assert_eq!((who(&v, &new, 0), who(&v, &old, 0)), (None, None));
        // A relist keeps the pair.
        let (_, errors) = idx.reset([("alice".to_string(), with_previous(&new, &old))]);
        assert!(errors.is_empty());
        assert_eq!(who(&idx.snapshot(), &old, 0), Some(new.hash()));
        assert_eq!(
            idx.snapshot().previous(&old.hash()).map(|p| p.current),
            Some(new.hash())
        );
    }

    #[test]
    fn a_jwt_authenticates_as_the_token_whose_subjects_accept_it_until_the_token_goes() {
        use crate::federated::tests::{ISSUER, NOW, Signer, claims, jwks};
        let signer = Signer::new("k1");
        let keys = jwks(&[&signer]);
        let verified = |sub: &str| {
            let jwt = signer.sign(&claims(sub, "strake", NOW + 600));
            crate::federated::verify(&jwt, &crate::federated::peek(&jwt).unwrap(), &keys, NOW)
                .unwrap()
        };
        let subject = FederatedSubject {
            issuer: ISSUER.into(),
            audience: "strake".into(),
            subject: Some("repo:acme/api:*".into()),
            claims: Default::default(),
        };
        let mut record = token_record("team-a/ci", TokenHash::of("unminted"), &["openai"]);
        record.federated = vec![subject.clone()];
        let mut idx = TokenIndex::new();
        idx.apply("ci", Record::Token(record.clone())).unwrap();
        let v = idx.snapshot();
        let who = |v: &Snapshot, sub: &str| {
            v.authenticate_federated(&verified(sub))
                .map(|p| p.name.to_string())
        };
        assert_eq!(who(&v, "repo:acme/api:ref:main"), Ok("team-a/ci".into()));
        assert_eq!(who(&v, "repo:acme/web"), Err(Refusal::NoStrakeToken));

        // A changed record (suspended) keeps one entry, not two.
        record.suspended = true;
        idx.apply("ci", Record::Token(record.clone())).unwrap();
        let p = idx
            .snapshot()
            .authenticate_federated(&verified("repo:acme/api:x"))
            .cloned();
        assert!(
            p.unwrap().suspended,
            "authenticates; the suspension refuses it later"
        );
        // Subjects dropped from the record stop matching.
        record.federated.clear();
        idx.apply("ci", Record::Token(record.clone())).unwrap();
        assert!(idx.snapshot().federated().is_empty());
        record.federated = vec![subject];
        idx.apply("ci", Record::Token(record)).unwrap();
        // Revocation: the Secret goes, and the same verified JWT is refused.
        idx.delete("ci");
        assert_eq!(
            who(&idx.snapshot(), "repo:acme/api:ref:main"),
            Err(Refusal::UnknownIssuer(ISSUER.into()))
        );
    }

    /// A token `name` with one upstream, as the index builds them.
    pub(crate) fn policy_and_upstream(
        name: &str,
        upstream_name: &str,
        provider: Provider,
    ) -> (Arc<TokenPolicy>, Arc<Upstream>) {
        let mut idx = TokenIndex::new();
        idx.apply(
            "up",
            upstream(upstream_name, provider, "https://upstream.example"),
        )
        .unwrap();
        let t = Token::mint();
        idx.apply(
            "tok",
            Record::Token(token_record(name, t.hash(), &[upstream_name])),
        )
        .unwrap();
        let view = idx.view();
        (
            view.token(&t.hash()).unwrap().clone(),
            view.upstream(upstream_name).unwrap().clone(),
        )
    }

    pub(crate) fn token_record(name: &str, hash: TokenHash, upstreams: &[&str]) -> TokenRecord {
        TokenRecord {
            name: name.into(),
            identity: format!("{name}@example.com"),
            sha256: hash,
            upstreams: upstreams.iter().map(|s| s.to_string()).collect(),
            expires_at: None,
            suspended: false,
            allowed_models: vec![],
            limits: None,
            endpoints: vec![],
            source: None,
            budget: None,
            federated: Vec::new(),
            previous: None,
        }
    }

    fn used(input: u64, output: u64) -> Used {
        Used {
            input,
            output,
            spend: Some(0),
            ..Used::default()
        }
    }

    fn upstream(name: &str, provider: Provider, base: &str) -> Record {
        Record::Upstream {
            record: UpstreamRecord {
                name: name.into(),
                provider,
                base_url: base.into(),
                headers: BTreeMap::new(),
                endpoints: vec![],
                source: None,
                budget: None,
            },
            api_key: ApiKey::new("sk-real\n"),
        }
    }

    #[test]
    fn apply_lookup_delete() {
        let mut idx = TokenIndex::new();
        let t = Token::mint();
        idx.apply(
            "up/openai",
            upstream("openai", Provider::OpenAi, "https://api.openai.com/"),
        )
        .unwrap();
        idx.apply(
            "tok/alice",
            Record::Token(token_record("alice", t.hash(), &["openai"])),
        )
        .unwrap();
        let snap = idx.snapshot();
        let p = snap.token(&t.hash()).unwrap();
        assert_eq!(&*p.name, "alice");
        assert_eq!(p.upstreams[0].route(), "openai");
        let u = snap.upstream("openai").unwrap();
        assert_eq!(u.authority.as_str(), "api.openai.com");
        assert_eq!(&*u.base_path, "");
        assert_eq!(u.key_value, "Bearer sk-real");
        assert!(u.key_value.is_sensitive());
        assert_eq!((snap.token_count(), snap.upstream_count()), (1, 1));

        let removed = idx.delete("tok/alice");
        assert_eq!(removed.len(), 1);
        assert!(idx.view().token(&t.hash()).is_none());
        // The published snapshot is unaffected: readers keep their version.
        assert!(snap.token(&t.hash()).is_some());
        assert!(idx.delete("tok/alice").is_empty());
        idx.delete("up/openai");
        assert_eq!(idx.view().upstream_count(), 0);
    }

    #[test]
    fn a_source_that_changes_its_hash_replaces_the_old_one_and_keeps_state() {
        // Rotation: the same Secret now carries a new hash.
        let mut idx = TokenIndex::new();
        let (a, b) = (Token::mint(), Token::mint());
        idx.apply("s", Record::Token(token_record("alice", a.hash(), &["x"])))
            .unwrap();
        idx.view()
            .token(&a.hash())
            .unwrap()
            .state
            .usage
            .record(&used(1, 2), 3);
        let removed = idx
            .apply("s", Record::Token(token_record("alice", b.hash(), &["x"])))
            .unwrap();
        assert!(removed.is_empty(), "same name: not removed for good");
        assert!(idx.view().token(&a.hash()).is_none());
        let p = idx.view().token(&b.hash()).unwrap();
        assert_eq!(p.state.usage.counters().requests, 1);
        assert_eq!(idx.view().token_count(), 1);
    }

    #[test]
    fn an_upstream_keeps_its_usage_when_its_record_is_replaced() {
        let mut idx = TokenIndex::new();
        idx.apply("u", upstream("x", Provider::OpenAi, "https://a"))
            .unwrap();
        let before = idx.view().upstream("x").unwrap().usage.clone();
        before.record(&used(3, 4), 9);
        // A rotated key or new headers: the same upstream, new record.
        idx.apply("u", upstream("x", Provider::OpenAi, "https://b"))
            .unwrap();
        let (_, errors) = idx.reset(vec![(
            "u".to_string(),
            upstream("x", Provider::OpenAi, "https://c"),
        )]);
        assert!(errors.is_empty());
        let after = &idx.view().upstream("x").unwrap().usage;
        assert!(Arc::ptr_eq(&before, after));
        assert_eq!(after.counters().input_tokens, 3);
    }

    #[test]
    fn a_hash_owned_by_another_source_is_refused() {
        let mut idx = TokenIndex::new();
        let t = Token::mint();
        idx.apply("s1", Record::Token(token_record("alice", t.hash(), &["x"])))
            .unwrap();
        let err = idx
            .apply(
                "s2",
                Record::Token(token_record("mallory", t.hash(), &["x"])),
            )
            .unwrap_err();
        assert!(matches!(err, IndexError::DuplicateHash { .. }));
        assert_eq!(&*idx.view().token(&t.hash()).unwrap().name, "alice");
        // Deleting the refused source leaves alice alone.
        idx.delete("s2");
        assert!(idx.view().token(&t.hash()).is_some());
    }

    #[test]
    fn reset_replaces_everything_but_keeps_state_of_survivors() {
        let mut idx = TokenIndex::new();
        let (a, b, c) = (Token::mint(), Token::mint(), Token::mint());
        idx.apply("a", Record::Token(token_record("alice", a.hash(), &["x"])))
            .unwrap();
        idx.apply("b", Record::Token(token_record("bob", b.hash(), &["x"])))
            .unwrap();
        idx.view()
            .token(&a.hash())
            .unwrap()
            .state
            .usage
            .record(&used(1, 0), 0);
        let mut alice = token_record("alice", a.hash(), &["x"]);
        alice.suspended = true;
        let (removed, errors) = idx.reset(vec![
            ("a".to_string(), Record::Token(alice)),
            (
                "c".to_string(),
                Record::Token(token_record("carol", c.hash(), &["x"])),
            ),
            (
                "bad".to_string(),
                Record::Token(token_record("dave", c.hash(), &["x"])),
            ),
            (
                "u".to_string(),
                upstream("x", Provider::Anthropic, "ftp://nope"),
            ),
        ]);
        assert_eq!(
            removed.iter().map(|p| &*p.name).collect::<Vec<_>>(),
            ["bob"]
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        let v = idx.view();
        assert!(v.token(&a.hash()).unwrap().suspended);
        assert_eq!(
            v.token(&a.hash()).unwrap().state.usage.counters().requests,
            1
        );
        assert!(v.token(&b.hash()).is_none());
        assert_eq!(&*v.token(&c.hash()).unwrap().name, "carol");
        assert_eq!(v.token_count(), 2);
        assert_eq!(v.upstream_count(), 0);
    }

    #[test]
    fn try_reset_changes_nothing_unless_every_record_can_be_used() {
        let mut idx = TokenIndex::new();
        let (a, b) = (Token::mint(), Token::mint());
        idx.apply("a", Record::Token(token_record("alice", a.hash(), &["x"])))
            .unwrap();
        let errors = idx
            .try_reset(vec![
                (
                    "b".to_string(),
                    Record::Token(token_record("bob", b.hash(), &["x"])),
                ),
                (
                    "dup".to_string(),
                    Record::Token(token_record("mallory", b.hash(), &["x"])),
                ),
            ])
            .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(idx.view().token(&a.hash()).is_some(), "alice stays");
        assert!(
            idx.view().token(&b.hash()).is_none(),
            "nothing half-applied"
        );
        let removed = idx
            .try_reset(vec![(
                "b".to_string(),
                Record::Token(token_record("bob", b.hash(), &["x"])),
            )])
            .unwrap();
        assert_eq!(
            removed.iter().map(|p| &*p.name).collect::<Vec<_>>(),
            ["alice"]
        );
        assert!(idx.view().token(&b.hash()).is_some());
    }

    #[test]
    fn upstream_validation() {
        let key = ApiKey::new("k");
        let rec = |base: &str| UpstreamRecord {
            name: "ns/openai".into(),
            provider: Provider::Anthropic,
            base_url: base.into(),
            headers: BTreeMap::new(),
            endpoints: vec![],
            source: None,
            budget: None,
        };
        let u = Upstream::new(&rec("http://127.0.0.1:8080/prefix/v1/"), &key).unwrap();
        assert_eq!(u.scheme, Scheme::HTTP);
        assert_eq!(u.authority.as_str(), "127.0.0.1:8080");
        assert_eq!(&*u.base_path, "/prefix/v1");
        assert_eq!(u.key_header, "x-api-key");
        assert_eq!(u.key_value, "k");
        for bad in [
            "api.openai.com",
            "ftp://x",
            "https://user:pw@host",
            "https://host/?q=1",
            "https://host/#f",
            "https://host/a/../b",
            "",
        ] {
            let err = Upstream::new(&rec(bad), &key).unwrap_err().to_string();
            assert!(err.contains("baseUrl"), "{bad}: {err}");
        }
        assert!(Upstream::new(&rec("https://h"), &ApiKey::new("  ")).is_err());
        let err = Upstream::new(&rec("https://h"), &ApiKey::new("a\u{7}b")).unwrap_err();
        assert!(!err.to_string().contains("a\u{7}b"));
        let mut with_headers = rec("https://h");
        with_headers
            .headers
            .insert("OpenAI-Organization".into(), "org-1".into());
        assert_eq!(Upstream::new(&with_headers, &key).unwrap().headers.len(), 1);
        with_headers
            .headers
            .insert("Authorization".into(), "x".into());
        assert!(Upstream::new(&with_headers, &key).is_err());
    }

    #[test]
    fn api_keys_never_show_in_debug() {
        let k = ApiKey::new("sk-secret");
        assert!(!format!("{k:?}").contains("secret"));
        let r = upstream("x", Provider::OpenAi, "https://h");
        assert!(!format!("{r:?}").contains("sk-real"));
        let u = Upstream::new(
            &UpstreamRecord {
                name: "x".into(),
                provider: Provider::OpenAi,
                base_url: "https://h".into(),
                headers: BTreeMap::new(),
                endpoints: vec![],
                source: None,
                budget: None,
            },
            &k,
        )
        .unwrap();
        assert!(!format!("{u:?}").contains("secret"));
    }

    #[test]
    fn one_change_copies_one_shard() {
        let mut idx = TokenIndex::new();
        for i in 0..2000 {
            let h = TokenHash::of(&i.to_string());
            idx.apply(
                &format!("s{i}"),
                Record::Token(token_record(&format!("t{i}"), h, &["x"])),
            )
            .unwrap();
        }
        let before = idx.snapshot();
        let h = TokenHash::of("new");
        idx.apply("new", Record::Token(token_record("new", h, &["x"])))
            .unwrap();
        let after = idx.snapshot();
        let shared = before
            .shards
            .iter()
            .zip(&after.shards)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, SHARDS - 1);
        assert_eq!(after.token_count(), 2001);
        assert_eq!(after.tokens().count(), 2001);
    }

    #[test]
    fn expiry() {
        let mut r = token_record("a", Token::mint().hash(), &["x"]);
        r.expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2027-03-01T00:00:00Z".parse().unwrap(),
        ));
        let p = TokenPolicy::new(r, Arc::default(), &mut |s: &str| s.into(), None).unwrap();
        let at = p.expires_at_ms.unwrap();
        assert!(!p.is_expired(at - 1));
        assert!(p.is_expired(at));
        assert_eq!(p.expires_at_string(), "2027-03-01T00:00:00Z");
    }
}
