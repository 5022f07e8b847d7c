//! `strake-proxy`: per-identity Strake tokens in, the real provider key out,
//! streaming and usage intact.
//!
//! A pure core, tested without sockets:
//!
//! - [`index`]: the token index (SHA-256 → policy) and upstream table.
//! - [`config`]: the file-mode YAML, parsed and validated.
//! - [`credential`], [`target`], [`route`], [`endpoint`], [`glob`],
//!   [`ratelimit`], [`budget`], [`rewrite`]: what a request may do and
//!   where it goes.
//! - [`usage`]: token counts read from JSON bodies and SSE streams, found
//!   with the [`json`] walker and scanner; [`include_usage`]: OpenAI-style
//!   streams asked for their usage, and the answer hidden from the client;
//!   [`spend`]: what they cost, at the price table's rates
//!   (`strake_crds::pricing`).
//! - [`federated`]: OIDC tokens checked offline (signature, issuer,
//!   audience, dates) and matched to the one StrakeToken that accepts them.
//! - [`reject`]: provider-shaped errors.
//!
//! A thin shell: [`workers`] (a thread, runtime, listener and upstream pool
//! per core), [`server`] (a worker's accept loop, graceful shutdown, the
//! admin port), `pipeline` (the request stages), [`client`], [`jwks`]
//! (issuers' signing keys), [`admin`], [`metrics`], [`logging`], and the
//! config [`source`]s (file polling, Secret watching).
//!
//! Embedding (tests, benchmarks):
//!
//! ```no_run
//! # async fn demo() -> Result<(), strake_proxy::StartError> {
//! use strake_proxy::{ConfigSource, Options, start};
//!
//! let running = start(Options {
//!     source: ConfigSource::File("strake.yaml".into()),
//!     listen: Some("127.0.0.1:0".parse().unwrap()),
//!     admin: Some("127.0.0.1:0".parse().unwrap()),
//!     ..Options::default()
//! })
//! .await?;
//! println!("proxy on http://{}", running.listen_addr());
//! running.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod body;
pub mod budget;
pub mod client;
pub mod config;
pub mod credential;
pub mod endpoint;
pub mod fd_limit;
pub mod federated;
pub mod fleet;
pub mod glob;
pub mod include_usage;
pub mod index;
pub mod json;
pub mod jwks;
pub mod limit_headers;
pub mod logging;
pub mod me;
pub mod metrics;
mod pipeline;
pub mod ratelimit;
pub mod reject;
pub mod rewrite;
pub mod route;
pub mod server;
pub mod source;
pub mod spend;
pub mod status_usage;
pub mod target;
pub mod usage;
pub mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use strake_crds::pricing::{PriceError, PriceTable};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

pub use server::{Proxy, Settings};
pub use source::file::ReloadTiming;

/// Where tokens and upstreams come from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// A YAML file, reloaded when it changes.
    File(PathBuf),
    /// The operator's Secrets in `namespace` (default: the client's
    /// namespace, i.e. the pod's).
    Kube { namespace: Option<String> },
}

/// Where the count of replicas sharing each token's rate limits comes
/// from (see [`fleet`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replicas {
    /// A fixed count; 1 applies every limit whole on this replica.
    Fixed(u32),
    /// Kube mode: the serving endpoints of this Service's EndpointSlices
    /// in the proxy's namespace.
    Service(String),
}

/// How to start a proxy.
#[derive(Clone, Debug)]
pub struct Options {
    pub source: ConfigSource,
    /// Traffic address. Default: the file's `listen`, else 127.0.0.1:8080
    /// (file mode) or 0.0.0.0:8080 (kube mode).
    pub listen: Option<SocketAddr>,
    /// Admin address. Default: the file's `admin`, else 127.0.0.1:9090
    /// (file mode) or 0.0.0.0:9090 (kube mode).
    pub admin: Option<SocketAddr>,
    pub settings: Settings,
    /// How file mode polls the file and paces reloads.
    pub reload: ReloadTiming,
    /// The price table: the built-in one, with `--prices` rows applied.
    /// File mode applies the file's `prices:` rows on top.
    pub prices: PriceTable,
    pub replicas: Replicas,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            source: ConfigSource::File(PathBuf::from("strake.yaml")),
            listen: None,
            admin: None,
            settings: Settings::default(),
            reload: ReloadTiming::default(),
            prices: PriceTable::builtin(),
            replicas: Replicas::Fixed(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] source::file::LoadError),
    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Prices(#[from] PriceError),
    #[error(transparent)]
    Workers(#[from] workers::BadCount),
    #[error(
        "--replica-service counts replicas through the Kubernetes API: it needs kube mode (use --replicas N with a config file)"
    )]
    ReplicaServiceNeedsKube,
}

/// A started proxy.
pub struct Running {
    proxy: Proxy,
    listen: SocketAddr,
    admin: SocketAddr,
    shutdown: watch::Sender<bool>,
    drained: watch::Sender<bool>,
    /// The traffic workers, each resolving once drained.
    traffic: Vec<workers::Done>,
    tasks: Vec<JoinHandle<()>>,
}

/// Loads the config (file mode: at once, failing on a bad file), binds
/// the listeners and starts serving and watching: the traffic workers on
/// their own threads, the admin port and the config source on the runtime
/// this is called from (the control runtime).
pub async fn start(options: Options) -> Result<Running, StartError> {
    let worker_count = workers::check(options.settings.workers)?;
    let proxy = Proxy::new(options.settings.clone());
    check_file_limit(&proxy, worker_count);
    if let Replicas::Fixed(n) = options.replicas {
        proxy.fleet().set(n);
        proxy
            .metrics()
            .live_replicas
            .set(i64::from(proxy.fleet().live_replicas()));
    }
    // Traffic drains first; the admin port (readiness) and the config
    // source stop after it.
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (drained, drained_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let (listen, admin) = match &options.source {
        ConfigSource::File(_) if matches!(options.replicas, Replicas::Service(_)) => {
            return Err(StartError::ReplicaServiceNeedsKube);
        }
        ConfigSource::File(path) => {
            let (config, fingerprint) = source::file::load(path)?;
            let addresses = (config.listen, config.admin);
            proxy.set_prices(options.prices.clone().overridden(config.prices)?);
            let index = source::file::index_of(path, config.records)?;
            proxy.publish(&index, Vec::new());
            proxy.metrics().mark_config_current();
            let view = index.view();
            tracing::info!(
                path = %path.display(),
                tokens = view.token_count(),
                upstreams = view.upstream_count(),
                "config loaded"
            );
            let addrs = (
                options
                    .listen
                    .or(config.listen)
                    .unwrap_or(([127, 0, 0, 1], 8080).into()),
                options
                    .admin
                    .or(config.admin)
                    .unwrap_or(([127, 0, 0, 1], 9090).into()),
            );
            tasks.push(supervise(
                proxy.clone(),
                drained_rx.clone(),
                source::file::watch(
                    proxy.clone(),
                    path.clone(),
                    index,
                    fingerprint,
                    addresses,
                    options.prices.clone(),
                    options.reload,
                    drained_rx.clone(),
                ),
            ));
            addrs
        }
        ConfigSource::Kube { namespace } => {
            proxy.set_prices(options.prices.clone());
            let client = kube::Client::try_default().await?;
            proxy.read_usage_from(client.clone());
            proxy.use_kube_for_cluster_issuer(client.clone());
            let namespace = namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_owned());
            if let Replicas::Service(service) = &options.replicas {
                let (fleet, proxy, client, namespace, service, stop) = (
                    proxy.fleet().clone(),
                    proxy.clone(),
                    client.clone(),
                    namespace.clone(),
                    service.clone(),
                    drained_rx.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    fleet::watch(fleet, proxy.metrics(), client, namespace, service, stop).await
                }));
            }
            tasks.push(supervise(
                proxy.clone(),
                drained_rx.clone(),
                source::kube::run(proxy.clone(), client, namespace, drained_rx.clone()),
            ));
            (
                options.listen.unwrap_or(([0, 0, 0, 0], 8080).into()),
                options.admin.unwrap_or(([0, 0, 0, 0], 9090).into()),
            )
        }
    };
    let traffic_listeners = workers::bind(listen, worker_count, "--listen")?;
    let admin_listener = server::bind(admin, "--admin").await?;
    let (listen, admin) = (
        traffic_listeners[0].local_addr()?,
        admin_listener.local_addr()?,
    );
    let admin_proxy = proxy.clone();
    let mut rx = drained_rx;
    tasks.push(tokio::spawn(async move {
        let _ = admin_proxy
            .serve_admin(admin_listener, async move {
                let _ = rx.changed().await;
            })
            .await;
    }));
    let slots = Arc::new(Semaphore::new(options.settings.max_connections.max(1)));
    let traffic = traffic_listeners
        .into_iter()
        .enumerate()
        .map(|(id, listener)| {
            workers::spawn(
                proxy.clone(),
                id,
                listener,
                slots.clone(),
                shutdown_rx.clone(),
            )
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    tracing::info!(%listen, %admin, workers = worker_count, "serving");
    Ok(Running {
        proxy,
        listen,
        admin,
        shutdown,
        drained,
        traffic,
        tasks,
    })
}

/// Raises the file descriptor limit (see [`fd_limit`]) and warns when it
/// is still below what `--max-connections` needs: past it, accepts and
/// upstream connects fail instead of waiting for a slot.
fn check_file_limit(proxy: &Proxy, workers: usize) {
    let max_connections = proxy.settings().max_connections;
    let outcome = fd_limit::raise();
    if let Some(e) = &outcome.error {
        tracing::warn!(error = %e, limit = outcome.now, "cannot raise the file descriptor limit");
    } else if outcome.now != outcome.before {
        tracing::info!(
            from = outcome.before,
            to = outcome.now,
            "raised the file descriptor limit to the hard limit"
        );
    }
    // Unlimited reads as the gauge's largest value.
    let limit = outcome.now;
    proxy
        .metrics()
        .file_descriptor_limit
        .set(limit.map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX)));
    let needed = fd_limit::needed(max_connections, workers);
    if let Some(limit) = limit.filter(|&limit| limit < needed) {
        tracing::warn!(
            max_connections,
            needed,
            limit,
            "--max-connections needs more file descriptors than the limit allows: near the cap, accepts and upstream connects fail; lower --max-connections or raise the hard limit (ulimit -Hn)"
        );
    }
}

/// Runs a config source. Sources return only at shutdown; one that ends
/// sooner (a panic, a watch stream that closed) would freeze the token list
/// without a word, so the proxy reports unhealthy instead and is restarted.
fn supervise(
    proxy: Proxy,
    stopping: watch::Receiver<bool>,
    source: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let ended = tokio::spawn(source).await;
        if *stopping.borrow() {
            return;
        }
        let why = match &ended {
            Err(e) if e.is_panic() => "it panicked",
            _ => "it ended",
        };
        tracing::error!(
            reason = why,
            "the config source stopped; changes and revocations no longer arrive: reporting unhealthy"
        );
        proxy.config_source_stopped();
    })
}

impl Running {
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Stops accepting, drains in-flight requests and streams (up to the
    /// shutdown grace), then stops the config source and the admin port.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for (id, worker) in self.traffic.into_iter().enumerate() {
            match worker.await {
                Ok(Err(e)) => tracing::error!(worker = id, error = %e, "traffic worker failed"),
                Err(_) => tracing::error!(worker = id, "traffic worker panicked"),
                Ok(Ok(())) => {}
            }
        }
        let _ = self.drained.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        tracing::info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_config_source_that_stops_early_makes_the_proxy_unhealthy() {
        let proxy = Proxy::new(Settings::default());
        proxy.publish(&index::TokenIndex::new(), Vec::new());
        let (_stop, stopping) = watch::channel(false);
        supervise(proxy.clone(), stopping, async { panic!("injected") })
            .await
            .unwrap();
        assert!(!proxy.is_healthy() && !proxy.is_ready());
        proxy.publish(&index::TokenIndex::new(), Vec::new());
        assert!(!proxy.is_ready(), "a late publish does not bring it back");

        // At shutdown, a source ending is expected.
        let proxy = Proxy::new(Settings::default());
        let (stop, stopping) = watch::channel(false);
        stop.send(true).unwrap();
        supervise(proxy.clone(), stopping, async {}).await.unwrap();
        assert!(proxy.is_healthy());
    }
}
