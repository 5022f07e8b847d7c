//! The usage and spend `/strake/v1/me` shows: what the operator's usage
//! collector last folded into the token's StrakeToken status, summed over
//! every proxy replica, the same numbers `kubectl get straketoken` shows.
//!
//! Read on demand, because a holder asks for it rarely and the status is
//! the one place the fleet-wide sum exists: a proxy replica counts only
//! what it served itself. Bounded so that a holder who calls `/me` in a
//! loop costs the API server little: an answer is reused for
//! [`FRESH_FOR`], at most [`CONCURRENT_FETCHES`] reads run at once, and a
//! lookup gives up after [`LOOKUP_TIMEOUT`] (the holder is then told the
//! usage is unavailable; the rest of `/me` is answered as always).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Api;
use strake_crds::contract::SourceRef;
use strake_crds::{StrakeToken, TokenUsage};
use tokio::sync::Semaphore;

/// How long a status read is reused for the same token. The collector
/// folds every `--usage-interval` (10 s by default), so a fresher read
/// would rarely show anything new.
pub const FRESH_FOR: Duration = Duration::from_secs(5);
/// Status reads in flight at once, over every token.
pub const CONCURRENT_FETCHES: usize = 4;
/// A lookup's whole time, waiting for a read slot included.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Cached answers kept; past it, expired ones are dropped first.
const CACHE_ENTRIES: usize = 10_000;

/// Reads StrakeToken statuses through the proxy's own credentials (`get`
/// on StrakeTokens, nothing else).
pub struct StatusUsage {
    client: kube::Client,
    cache: Mutex<HashMap<SourceRef, (Instant, Option<TokenUsage>)>>,
    fetches: Semaphore,
}

/// Why the usage could not be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl StatusUsage {
    pub fn new(client: kube::Client) -> StatusUsage {
        StatusUsage {
            client,
            cache: Mutex::new(HashMap::new()),
            fetches: Semaphore::new(CONCURRENT_FETCHES),
        }
    }

    /// The token's folded usage (`None`: nothing counted yet, or the
    /// StrakeToken is gone).
    pub async fn lookup(&self, source: &SourceRef) -> Result<Option<TokenUsage>, Unavailable> {
        if let Some(hit) = self.cached(source) {
            return Ok(hit);
        }
        tokio::time::timeout(LOOKUP_TIMEOUT, self.fetch(source))
            .await
            .map_err(|_| Unavailable)?
    }

    async fn fetch(&self, source: &SourceRef) -> Result<Option<TokenUsage>, Unavailable> {
        let _slot = self.fetches.acquire().await.map_err(|_| Unavailable)?;
        // Another lookup may have read it while this one waited.
        if let Some(hit) = self.cached(source) {
            return Ok(hit);
        }
        let api: Api<StrakeToken> = Api::namespaced(self.client.clone(), &source.namespace);
        let usage = match api.get_opt(&source.name).await {
            Ok(token) => token.and_then(|t| t.status).and_then(|s| s.usage),
            Err(error) => {
                tracing::debug!(%error, "reading a StrakeToken's usage for /strake/v1/me failed");
                return Err(Unavailable);
            }
        };
        self.remember(source, usage.clone());
        Ok(usage)
    }

    fn cached(&self, source: &SourceRef) -> Option<Option<TokenUsage>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(source)
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, usage)| usage.clone())
    }

    fn remember(&self, source: &SourceRef, usage: Option<TokenUsage>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < FRESH_FOR);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(source.clone(), (Instant::now(), usage));
    }
}
