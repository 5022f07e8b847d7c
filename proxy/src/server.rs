//! The listeners: a traffic worker's (HTTP/1.1 and h2c) with graceful
//! shutdown, and the admin port.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client::{self, UpstreamClient};
use crate::index::{Removed, Snapshot, TokenIndex};
use crate::workers;
use strake_crds::pricing::PriceTable;

use crate::federated::{MAX_CACHED_VERIFICATIONS, VerifiedCache};
use crate::fleet::Fleet;
use crate::jwks::{FederatedSettings, Issuers};
use crate::metrics::Metrics;
use crate::spend::Prices;
use crate::status_usage::StatusUsage;
use crate::{admin, pipeline};

/// Limits and timeouts. `Default` gives the CLI's defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Longest wait for the upstream's response head (504 beyond). A
    /// streaming body has no limit once it has started.
    pub upstream_timeout: Duration,
    /// Longest wait for a TCP (and TLS) connection to the upstream.
    pub connect_timeout: Duration,
    /// Longest time a client may take to send request headers, counted
    /// for the first request from the accept (so protocol detection and a
    /// partial HTTP/2 preface are covered); also how long an idle HTTP/1
    /// keep-alive connection stays open (hyper applies the same timer
    /// while waiting for the next request).
    pub header_read_timeout: Duration,
    /// Most client connections open at once, over all workers. At the cap
    /// every worker stops accepting: new connections wait in the kernel's
    /// backlog until one closes, instead of being refused.
    pub max_connections: usize,
    /// Traffic workers: threads, each with its own runtime, listener and
    /// upstream pool ([`crate::workers`]).
    pub workers: usize,
    /// Longest pause between two pieces of a request body (408 beyond).
    pub body_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub upstream_idle_timeout: Duration,
    /// How long in-flight requests and streams may run after a shutdown
    /// signal.
    pub shutdown_grace: Duration,
    /// The first part of the grace during which HTTP/1 keep-alive
    /// connections stay open and each response asks its client to close:
    /// a client learns it on its next response instead of racing the close
    /// of an idle connection it is about to reuse.
    pub drain_window: Duration,
    /// Price each forwarded request (spend and unpriced series, the
    /// token's exact spend). Off only to measure what pricing costs.
    pub pricing: bool,
    /// "Now" for budget periods (shifted only by the test-only
    /// `--dev-clock-offset-file`).
    pub clock: strake_crds::clock::Clock,
    /// How OIDC tokens are verified ([`crate::jwks`]).
    pub federated: FederatedSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_body_bytes: 32 * 1024 * 1024,
            upstream_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_connections: 4096,
            workers: workers::available(),
            body_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            // The binary's --drain-window is 5 s; an embedder (a test, a
            // benchmark) shuts down at once unless it asks for one.
            drain_window: Duration::ZERO,
            pricing: true,
            clock: strake_crds::clock::Clock::system(),
            federated: FederatedSettings::default(),
        }
    }
}

/// What every request shares, whichever worker serves it.
pub struct Shared {
    pub(crate) index: ArcSwap<Snapshot>,
    ready: AtomicBool,
    /// Set once shutdown starts: readiness stays off whatever the config
    /// source publishes meanwhile.
    draining: AtomicBool,
    /// Set if the config source stopped before shutdown: changes, and so
    /// revocations, no longer arrive. Health and readiness fail from then on.
    source_stopped: AtomicBool,
    pub(crate) metrics: Metrics,
    pub(crate) prices: Prices,
    pub(crate) settings: Settings,
    /// The rate limiter's clock origin.
    pub(crate) epoch: Instant,
    /// Who this process is to a usage collector.
    pub(crate) instance: admin::Instance,
    /// The replicas sharing each token's rate limits.
    pub(crate) fleet: Fleet,
    /// Kube mode: where `/strake/v1/me` reads a token's folded usage.
    pub(crate) status_usage: OnceLock<StatusUsage>,
    /// OIDC issuers' signing keys, and the JWTs already verified.
    pub(crate) issuers: Issuers,
    pub(crate) verified: VerifiedCache,
    /// Paces accept-failure warnings over all workers (locked only when an
    /// accept fails).
    accept_warnings: Mutex<WarningLimiter>,
}

/// A proxy instance: its index, metrics and limiters. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy with an empty index, not ready until the first [`Proxy::publish`].
    pub fn new(settings: Settings) -> Proxy {
        let issuers = Issuers::new(settings.federated.clone());
        Proxy {
            shared: Arc::new(Shared {
                index: ArcSwap::from_pointee(Snapshot::default()),
                ready: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                source_stopped: AtomicBool::new(false),
                metrics: Metrics::new(),
                prices: Prices::new(PriceTable::builtin()),
                settings,
                epoch: Instant::now(),
                instance: admin::Instance::new(),
                fleet: Fleet::fixed(1),
                status_usage: OnceLock::new(),
                issuers,
                verified: VerifiedCache::new(MAX_CACHED_VERIFICATIONS),
                accept_warnings: Mutex::new(WarningLimiter::new(ACCEPT_WARNING_INTERVAL)),
            }),
        }
    }

    /// Makes the index's current content what requests see, and marks the
    /// proxy ready. `removed` are tokens gone for good: their metric series go.
    pub fn publish(&self, index: &TokenIndex, removed: Removed) {
        let snapshot = index.snapshot();
        let m = &self.shared.metrics;
        m.index_tokens.set(snapshot.token_count() as i64);
        m.index_upstreams.set(snapshot.upstream_count() as i64);
        self.shared.index.store(snapshot);
        for policy in removed {
            for u in policy.upstreams.iter() {
                m.forget_token(&policy.identity, &policy.name, &u.id);
            }
            let series = policy.state.spend.series();
            m.forget_models(
                &policy.identity,
                &policy.name,
                series.iter().map(|(u, model)| (&**u, &**model)),
            );
        }
        if !self.shared.draining.load(Ordering::Acquire)
            && !self.shared.source_stopped.load(Ordering::Acquire)
        {
            self.shared.ready.store(true, Ordering::Release);
        }
    }

    /// The config source stopped for good: the proxy reports unhealthy (so
    /// that it is restarted) and unready, rather than serve on with a
    /// frozen token list.
    pub fn config_source_stopped(&self) {
        self.shared.source_stopped.store(true, Ordering::Release);
        self.shared.ready.store(false, Ordering::Release);
    }

    /// False once the config source has stopped before shutdown.
    pub fn is_healthy(&self) -> bool {
        !self.shared.source_stopped.load(Ordering::Acquire)
    }

    /// The snapshot requests currently see.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.index.load_full()
    }

    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The cluster's ServiceAccount issuer (`--cluster-issuer`).
    pub fn cluster_issuer(&self) -> &str {
        &self.shared.settings.federated.cluster_issuer
    }

    /// Kube mode: the cluster issuer's keys come through this client.
    pub fn use_kube_for_cluster_issuer(&self, client: kube::Client) {
        self.shared.issuers.use_kube(client);
    }

    /// The replicas sharing each token's rate limits
    /// ([`Fleet::live_replicas`]).
    pub fn fleet(&self) -> &Fleet {
        &self.shared.fleet
    }

    /// Kube mode: `/strake/v1/me` shows the usage folded into each token's
    /// StrakeToken status, read with this client. Set once.
    pub fn read_usage_from(&self, client: kube::Client) {
        let _ = self.shared.status_usage.set(StatusUsage::new(client));
    }

    /// Prices requests with `table` from now on.
    pub fn set_prices(&self, table: PriceTable) {
        self.shared.prices.replace(table);
    }

    /// The price table requests are priced with.
    pub fn prices(&self) -> std::sync::Arc<PriceTable> {
        self.shared.prices.table()
    }

    pub fn instance(&self) -> &admin::Instance {
        &self.shared.instance
    }

    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// Traffic worker `worker`'s loop: serves `listener` until `shutdown`
    /// completes, then stops accepting and lets in-flight requests and
    /// streams finish, for up to [`Settings::shutdown_grace`]. Runs on the
    /// worker's own runtime ([`crate::workers`]): `TokioExecutor` spawns
    /// each connection, its HTTP/2 streams and the worker's upstream
    /// connections there. `slots` are the process-wide `--max-connections`.
    pub async fn serve(
        &self,
        worker: usize,
        listener: TcpListener,
        slots: Arc<Semaphore>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let settings = &self.shared.settings;
        let context = Arc::new(Worker {
            shared: self.shared.clone(),
            upstream: client::build(settings.connect_timeout, settings.upstream_idle_timeout),
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.shared.settings.header_read_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let metrics = &self.shared.metrics;
        let accepted_here = metrics.worker_connections(worker);
        loop {
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    // At the cap: stop accepting, so that waiting
                    // connections stay in the kernel's backlog.
                    metrics.client_connection_limit_waits.inc();
                    tokio::select! {
                        slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                        () = &mut shutdown => break,
                    }
                }
            };
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _peer) = match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            metrics.accept_errors.inc();
                            let admitted = self
                                .shared
                                .accept_warnings
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .admit(Instant::now());
                            match admitted {
                                Some(suppressed) => tracing::warn!(
                                    error = %e,
                                    suppressed,
                                    "accept failed; repeats are counted in strake_accept_errors_total"
                                ),
                                None => {
                                    metrics.accept_warnings_suppressed.inc();
                                }
                            }
                            // Out of file descriptors, most likely: back off a little.
                            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                            continue;
                        }
                    };
                    accepted_here.inc();
                    let _ = stream.set_nodelay(true);
                    let context = context.clone();
                    let first_request = Arc::new(AtomicBool::new(false));
                    let seen = first_request.clone();
                    let service = service_fn(move |req| {
                        if !seen.load(Ordering::Relaxed) {
                            seen.store(true, Ordering::Relaxed);
                        }
                        let context = context.clone();
                        async move {
                            let version = req.version();
                            let shared = &context.shared;
                            let mut response =
                                pipeline::handle(shared.clone(), &context.upstream, req).await?;
                            if asks_to_close(version, shared.draining.load(Ordering::Acquire)) {
                                response.headers_mut().insert(
                                    http::header::CONNECTION,
                                    http::HeaderValue::from_static("close"),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let conn = graceful.watch(conn);
                    let shared = self.shared.clone();
                    tokio::spawn(async move {
                        let _open = OpenConnection::new(&shared.metrics, slot);
                        let deadline = shared.settings.header_read_timeout;
                        let mut conn = std::pin::pin!(conn);
                        let ended = tokio::select! {
                            ended = &mut conn => Some(ended),
                            () = tokio::time::sleep(deadline) => None,
                        };
                        let ended = match ended {
                            Some(ended) => ended,
                            None if !first_request.load(Ordering::Relaxed) => {
                                // Nothing, or no complete request head, since
                                // the accept: dropping the connection closes it.
                                shared.metrics.client_connections_timed_out.inc();
                                return;
                            }
                            None => conn.await,
                        };
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, "client connection ended with an error");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        self.shared.draining.store(true, Ordering::Release);
        self.shared.ready.store(false, Ordering::Release);
        let in_flight = graceful.count();
        tracing::info!(
            worker,
            connections = in_flight,
            "shutting down: draining in-flight requests"
        );
        let grace = self.shared.settings.shutdown_grace;
        let began = Instant::now();
        let window = self.shared.settings.drain_window.min(grace);
        while graceful.count() > 0 && began.elapsed() < window {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        if tokio::time::timeout(grace.saturating_sub(began.elapsed()), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                worker,
                grace_secs = grace.as_secs(),
                "grace period over; closing the remaining connections"
            );
        }
        Ok(())
    }

    /// Serves `/healthz`, `/readyz`, `/metrics` and `/usage` until `shutdown`.
    pub async fn serve_admin(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        // Out of file descriptors, most likely: do not spin.
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    };
                    let proxy = self.clone();
                    let service = service_fn(move |req| {
                        let proxy = proxy.clone();
                        async move { Ok::<_, std::convert::Infallible>(admin::handle(&proxy, req)) }
                    });
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                () = &mut shutdown => return Ok(()),
            }
        }
    }
}

/// What a traffic worker's requests reach: the shared state, and the
/// worker's own upstream client, whose pooled connections live on the
/// worker's runtime.
struct Worker {
    shared: Arc<Shared>,
    upstream: UpstreamClient,
}

/// How often an accept failure is logged at most; the rest are counted.
pub const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The pause after a failed accept (out of file descriptors, most likely),
/// so that the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// How often the drain window looks whether any connection is left.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Whether a response asks its client to close the connection: while
/// draining, on HTTP/1 (HTTP/2 clients get a GOAWAY instead, which names
/// the last stream served, so nothing races).
fn asks_to_close(version: http::Version, draining: bool) -> bool {
    draining && version < http::Version::HTTP_2
}

/// One open client connection: its slot under `--max-connections` and its
/// share of `strake_client_connections`, both given back on drop.
struct OpenConnection<'a> {
    metrics: &'a Metrics,
    _slot: OwnedSemaphorePermit,
}

impl<'a> OpenConnection<'a> {
    fn new(metrics: &'a Metrics, slot: OwnedSemaphorePermit) -> OpenConnection<'a> {
        metrics.client_connections.inc();
        OpenConnection {
            metrics,
            _slot: slot,
        }
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.metrics.client_connections.dec();
    }
}

/// Lets a repeating warning through at most once per interval.
#[derive(Debug)]
pub struct WarningLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl WarningLimiter {
    pub fn new(interval: Duration) -> WarningLimiter {
        WarningLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)`: log now, `n` occurrences were suppressed since the last
    /// line. `None`: suppressed.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Binds a listener, with a message that names the flag.
pub async fn bind(addr: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| cannot_listen(addr, what, e))
}

/// A listening error that names the address and the flag.
pub(crate) fn cannot_listen(addr: SocketAddr, what: &str, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_warning_is_let_through_once_per_interval_with_the_count_it_hid() {
        let mut w = WarningLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(w.admit(t0), Some(0));
        for ms in (50..10_000).step_by(50) {
            assert_eq!(w.admit(t0 + Duration::from_millis(ms)), None, "{ms} ms");
        }
        assert_eq!(w.admit(t0 + Duration::from_secs(10)), Some(199));
        assert_eq!(w.admit(t0 + Duration::from_secs(11)), None);
        assert_eq!(w.admit(t0 + Duration::from_secs(30)), Some(1));
    }

    #[test]
    fn only_a_draining_http1_response_asks_its_client_to_close() {
        use http::Version;
        for version in [Version::HTTP_10, Version::HTTP_11] {
            assert!(asks_to_close(version, true), "{version:?}");
            assert!(!asks_to_close(version, false), "{version:?}");
        }
        assert!(!asks_to_close(Version::HTTP_2, true));
        assert!(!asks_to_close(Version::HTTP_2, false));
    }
}
