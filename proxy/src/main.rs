//! `strake-proxy`: see `strake-proxy --help` and proxy/README.md.

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use strake_crds::token::Token;
use strake_proxy::{ConfigSource, Options, Replicas, Settings};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Strake's proxy: per-identity tokens in, the real provider key out",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a new token and its SHA-256 (put the hash in the config, give the token to its holder)
    Mint {
        /// Print {"token": …, "sha256": …}
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("source").args(["config", "kube"]))]
struct Serve {
    /// File mode: the YAML config file (reloaded when it changes)
    #[arg(long, short, env = "STRAKE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Kube mode: watch the operator's Secrets
    #[arg(long, env = "STRAKE_KUBE")]
    kube: bool,
    /// Kube mode: the namespace to watch [default: the pod's]
    #[arg(long, env = "STRAKE_NAMESPACE", requires = "kube")]
    namespace: Option<String>,
    /// Kube mode: count the replicas that share each token's rate limits as the serving endpoints of this Service's EndpointSlices (the chart names its admin Service); each replica admits limit / count
    #[arg(
        long,
        env = "STRAKE_REPLICA_SERVICE",
        value_name = "SERVICE",
        requires = "kube",
        conflicts_with = "replicas"
    )]
    replica_service: Option<String>,
    /// A fixed number of replicas sharing each token's rate limits (outside a cluster); each admits limit / N [default: 1, or --replica-service]
    #[arg(long, env = "STRAKE_REPLICAS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    replicas: Option<u32>,
    /// Traffic address [default: the file's `listen`, else 127.0.0.1:8080; kube mode 0.0.0.0:8080]
    #[arg(long, env = "STRAKE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Admin address (/healthz, /readyz, /metrics, /usage) [default: the file's `admin`, else 127.0.0.1:9090; kube mode 0.0.0.0:9090]
    #[arg(long, env = "STRAKE_ADMIN")]
    admin: Option<SocketAddr>,
    /// Largest request body accepted, in bytes
    #[arg(long, env = "STRAKE_MAX_BODY_BYTES", default_value_t = Settings::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Longest wait for the upstream's response head (e.g. 600s, 10m)
    #[arg(long, env = "STRAKE_UPSTREAM_TIMEOUT", default_value = "600s", value_parser = strake_crds::duration::parse)]
    upstream_timeout: Duration,
    /// Longest wait for a connection to the upstream
    #[arg(long, env = "STRAKE_CONNECT_TIMEOUT", default_value = "10s", value_parser = strake_crds::duration::parse)]
    connect_timeout: Duration,
    /// Longest time a client may take to send request headers (the first request's counted from the accept); also the idle keep-alive timeout
    #[arg(long, env = "STRAKE_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = strake_crds::duration::parse)]
    header_read_timeout: Duration,
    /// Most client connections open at once; beyond, new ones wait in the listen backlog
    #[arg(long, env = "STRAKE_MAX_CONNECTIONS", default_value_t = Settings::default().max_connections as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Traffic workers: threads, each with its own runtime, listener (sharing the port) and upstream pool [default: the CPUs the process may run on (affinity, cgroup CPU quota), at most 64]
    #[arg(long, env = "STRAKE_WORKERS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=strake_proxy::workers::MAX_WORKERS as i64))]
    workers: Option<u32>,
    /// Longest pause while receiving a request body
    #[arg(long, env = "STRAKE_BODY_TIMEOUT", default_value = "60s", value_parser = strake_crds::duration::parse)]
    body_timeout: Duration,
    /// How long idle upstream connections are pooled; keep it below the upstream's keep-alive
    #[arg(long, env = "STRAKE_UPSTREAM_IDLE_TIMEOUT", default_value = "30s", value_parser = strake_crds::duration::parse)]
    upstream_idle_timeout: Duration,
    /// How long in-flight requests and streams may finish after SIGTERM/SIGINT
    #[arg(long, env = "STRAKE_SHUTDOWN_GRACE", default_value = "30s", value_parser = strake_crds::duration::parse)]
    shutdown_grace: Duration,
    /// The first part of the grace in which keep-alive HTTP/1 connections stay open and every response says Connection: close, so clients leave on their next response instead of racing the close of an idle connection
    #[arg(long, env = "STRAKE_DRAIN_WINDOW", default_value = "5s", value_parser = strake_crds::duration::parse)]
    drain_window: Duration,
    /// Price rows (a YAML list, the shape of crds/data/prices.yaml) added to or replacing the built-in table; read at startup. File mode applies the config's `prices:` on top
    #[arg(long, env = "STRAKE_PRICES", value_name = "FILE")]
    prices: Option<PathBuf>,
    /// Do not price requests: no spend or unpriced series (token counts stay). For measuring what pricing costs
    #[arg(long, env = "STRAKE_NO_PRICING")]
    no_pricing: bool,
    /// The cluster's ServiceAccount token issuer (the API server's --service-account-issuer): kube mode fetches its keys from the API server, and it vouches only for a StrakeToken's own namespace. Give the operator the same value
    #[arg(long, env = "STRAKE_CLUSTER_ISSUER", default_value = strake_crds::federated::DEFAULT_CLUSTER_ISSUER)]
    cluster_issuer: String,
    /// PEM certificates trusted, beside the public web roots, for OIDC issuers' https (a private issuer's CA)
    #[arg(long, env = "STRAKE_ISSUER_CA_FILE", value_name = "FILE")]
    issuer_ca_file: Option<PathBuf>,
    /// An issuer's signing keys are fetched again after this long
    #[arg(long, env = "STRAKE_JWKS_REFRESH", default_value = "5m", value_parser = strake_crds::duration::parse)]
    jwks_refresh: Duration,
    /// Fetches of one issuer's keys are at least this far apart, however many tokens name an unknown key
    #[arg(long, env = "STRAKE_JWKS_MIN_REFETCH", default_value = "10s", value_parser = strake_crds::duration::parse)]
    jwks_min_refetch: Duration,
    /// Keys not refreshed for this long (the issuer down) stop being trusted
    #[arg(long, env = "STRAKE_JWKS_MAX_STALE", default_value = "24h", value_parser = strake_crds::duration::parse)]
    jwks_max_stale: Duration,
    /// Longest wait for one issuer document (discovery or JWKS)
    #[arg(long, env = "STRAKE_JWKS_FETCH_TIMEOUT", default_value = "5s", value_parser = strake_crds::duration::parse)]
    jwks_fetch_timeout: Duration,
    /// A verified JWT is remembered this long at most (never past its exp), so a hot one costs a hash, not a signature check
    #[arg(long, env = "STRAKE_JWT_CACHE_MAX_AGE", default_value = "5m", value_parser = strake_crds::duration::parse)]
    jwt_cache_max_age: Duration,
    /// Test-only: a file holding seconds to add to the clock of budget decisions, re-read at each (end-to-end tests roll budget periods over with it). Hidden, and not in the chart
    #[arg(long, hide = true, value_name = "FILE")]
    dev_clock_offset_file: Option<PathBuf>,
    /// Log format on stderr (filter with RUST_LOG, e.g. RUST_LOG=info,access=off)
    #[arg(long, env = "STRAKE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Mint { json }) = cli.command {
        let token = Token::mint();
        let hash = token.hash().to_hex();
        if json {
            println!(
                "{}",
                serde_json::json!({"token": token.expose(), "sha256": hash})
            );
        } else {
            println!("token:  {}", token.expose());
            println!("sha256: {hash}");
        }
        return ExitCode::SUCCESS;
    }
    let serve = cli.serve;
    init_logging(serve.log_format);
    let source = match (&serve.config, serve.kube) {
        (Some(path), false) => ConfigSource::File(path.clone()),
        (None, true) => ConfigSource::Kube {
            namespace: serve.namespace.clone(),
        },
        _ => {
            eprintln!(
                "error: choose a config source: --config FILE (file mode) or --kube (kube mode)\n\nStart with `strake-proxy --help`."
            );
            return ExitCode::from(2);
        }
    };
    let prices = match &serve.prices {
        None => strake_crds::pricing::PriceTable::builtin(),
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                strake_crds::pricing::table_with_overrides(&text).map_err(|e| e.to_string())
            }) {
            Ok(table) => table,
            Err(e) => {
                tracing::error!(error = %format!("--prices {}: {e}", path.display()), "cannot start");
                return ExitCode::FAILURE;
            }
        },
    };
    let extra_roots = match &serve.issuer_ca_file {
        None => Vec::new(),
        Some(path) => match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| strake_proxy::jwks::parse_ca_file(&pem))
        {
            Ok(certs) => certs,
            Err(e) => {
                tracing::error!(error = %format!("--issuer-ca-file {}: {e}", path.display()), "cannot start");
                return ExitCode::FAILURE;
            }
        },
    };
    if !serve.cluster_issuer.starts_with("https://") {
        tracing::error!(
            error = "--cluster-issuer must be an https:// URL",
            "cannot start"
        );
        return ExitCode::FAILURE;
    }
    let replicas = match (&serve.replica_service, serve.replicas) {
        (Some(service), _) => Replicas::Service(service.clone()),
        (None, n) => Replicas::Fixed(n.unwrap_or(1)),
    };
    let options = Options {
        source,
        prices,
        replicas,
        listen: serve.listen,
        admin: serve.admin,
        settings: Settings {
            max_body_bytes: serve.max_body_bytes,
            upstream_timeout: serve.upstream_timeout,
            connect_timeout: serve.connect_timeout,
            header_read_timeout: serve.header_read_timeout,
            max_connections: serve.max_connections as usize,
            workers: serve
                .workers
                .map_or_else(strake_proxy::workers::available, |n| n as usize),
            body_timeout: serve.body_timeout,
            upstream_idle_timeout: serve.upstream_idle_timeout,
            shutdown_grace: serve.shutdown_grace,
            drain_window: serve.drain_window,
            pricing: !serve.no_pricing,
            clock: strake_crds::clock::Clock::shifted_by(serve.dev_clock_offset_file.clone()),
            federated: strake_proxy::jwks::FederatedSettings {
                cluster_issuer: serve.cluster_issuer.clone(),
                extra_roots,
                timing: strake_proxy::federated::KeyTiming {
                    refresh_secs: serve.jwks_refresh.as_secs(),
                    min_refetch_secs: serve.jwks_min_refetch.as_secs(),
                    max_stale_secs: serve.jwks_max_stale.as_secs(),
                },
                fetch_timeout: serve.jwks_fetch_timeout,
                verified_max_age: serve.jwt_cache_max_age,
            },
        },
        ..Options::default()
    };
    // The control runtime, on this thread: signals, the config source, the
    // admin port and background tasks. Traffic runs on the workers' own
    // threads and runtimes, so a reload or a scrape never queues behind
    // requests, nor they behind it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let code = runtime.block_on(async move {
        // Handlers first: a signal that arrives while the proxy starts must
        // drain it, not kill it.
        let signals = shutdown_signals();
        let running = match strake_proxy::start(options).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        signals.await;
        tracing::info!("shutdown signal received");
        running.shutdown().await;
        ExitCode::SUCCESS
    });
    if let Some(sink) = strake_proxy::logging::global() {
        sink.flush(LOG_FLUSH_LIMIT);
    }
    code
}

/// How long exiting waits for queued log lines to reach stderr.
const LOG_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// tracing's subscriber, writing through the proxy's batching log sink;
/// a panic flushes the sink first, so the lines before it are not lost.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let sink = strake_proxy::logging::install(matches!(format, LogFormat::Json));
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        sink.flush(LOG_FLUSH_LIMIT);
        hook(info);
    }));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink.clone());
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

/// Installs the SIGTERM and SIGINT handlers now; the future completes on
/// the first of them.
fn shutdown_signals() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("the SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("the SIGINT handler installs");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sources_are_exclusive() {
        assert!(Cli::try_parse_from(["strake-proxy", "--config", "a", "--kube"]).is_err());
        assert!(Cli::try_parse_from(["strake-proxy", "--namespace", "x"]).is_err());
        assert!(Cli::try_parse_from(["strake-proxy", "mint", "--json"]).is_ok());
        // One source for the replica count; the Service needs the API.
        assert!(
            Cli::try_parse_from([
                "strake-proxy",
                "--kube",
                "--replica-service",
                "s",
                "--replicas",
                "2"
            ])
            .is_err()
        );
        // --replica-service with a config file parses (clap's `requires`
        // counts the kube flag's default as present); start() refuses it
        // (limits::a_replica_service_needs_kube_mode).
        assert!(Cli::try_parse_from(["strake-proxy", "--config", "a", "--replicas", "0"]).is_err());
        assert!(Cli::try_parse_from(["strake-proxy", "--config", "a", "--replicas", "3"]).is_ok());
        for bad in ["0", "65", "-1", "many"] {
            assert!(
                Cli::try_parse_from(["strake-proxy", "--config", "a", "--workers", bad]).is_err(),
                "--workers {bad}"
            );
        }
        assert!(Cli::try_parse_from(["strake-proxy", "--config", "a", "--workers", "64"]).is_ok());
        assert!(
            Cli::try_parse_from([
                "strake-proxy",
                "--kube",
                "--namespace",
                "x",
                "--listen",
                "0.0.0.0:8080"
            ])
            .is_ok()
        );
    }
}
