//! Command-line flags; each one can also be set by an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use strake_crds::pricing::{PriceTable, table_with_overrides};

use crate::core::upstream_hosts::{self, AllowedHosts};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "strake-operator",
    version,
    about = "Mints a revocable token per StrakeToken and publishes it, hashed, to the Strake proxy"
)]
pub struct Cli {
    /// Namespace the proxy runs in: where the operator publishes token and upstream Secrets.
    #[arg(long, env = "STRAKE_PROXY_NAMESPACE")]
    pub proxy_namespace: String,

    /// Public base URL of the proxy, e.g. https://llm.example.com. Shown in
    /// status.endpoint and in the env keys of every token Secret.
    #[arg(long, env = "STRAKE_ENDPOINT")]
    pub endpoint: String,

    /// Comma-separated namespaces to watch for StrakeTokens and UpstreamKeys.
    /// Empty: all namespaces.
    #[arg(long, env = "STRAKE_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,

    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, env = "STRAKE_ADMIN_ADDR", default_value = "0.0.0.0:8081")]
    pub admin_addr: SocketAddr,

    /// Run the controllers only while holding a coordination.k8s.io Lease.
    #[arg(long, env = "STRAKE_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "STRAKE_LEASE_NAME", default_value = "strake-operator")]
    pub lease_name: String,

    /// Namespace of the leader-election Lease. Default: $POD_NAMESPACE, else
    /// the proxy namespace.
    #[arg(long, env = "STRAKE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Log line format.
    #[arg(long, env = "STRAKE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Comma-separated upstream hosts an UpstreamKey's baseUrl may point at;
    /// replaces the default list. `host`, `*.domain` or `*` (https, port
    /// 443), `host:port` (https on that port), `http://host:port` (plain http
    /// only where listed so). An UpstreamKey pointing elsewhere is not Ready
    /// (reason HostNotAllowed) and nothing is published for it.
    #[arg(
        long,
        env = "STRAKE_ALLOWED_UPSTREAM_HOSTS",
        value_delimiter = ',',
        default_value = upstream_hosts::DEFAULT
    )]
    pub allowed_upstream_hosts: Vec<String>,

    /// How often every resource is reconciled even without a change, and
    /// orphaned proxy Secrets are swept (e.g. 30s, 5m, 1h).
    #[arg(long, env = "STRAKE_RESYNC", default_value = "5m", value_parser = strake_crds::duration::parse)]
    pub resync: Duration,

    /// How long before spec.expiresAt a token's ExpiringSoon condition
    /// turns True and a warning Event is recorded (e.g. 7d, 48h).
    #[arg(long, env = "STRAKE_EXPIRY_WARNING", default_value = "7d", value_parser = strake_crds::duration::parse)]
    pub expiry_warning: Duration,

    /// The cluster's ServiceAccount token issuer (the API server's
    /// --service-account-issuer): spec.serviceAccount subjects name it, and
    /// it may vouch only for a StrakeToken's own namespace. Give the proxy
    /// the same value.
    #[arg(long, env = "STRAKE_CLUSTER_ISSUER", default_value = strake_crds::federated::DEFAULT_CLUSTER_ISSUER)]
    pub cluster_issuer: String,

    /// Price rows (a YAML list, the shape of crds/data/prices.yaml) added to
    /// or replacing the built-in price table, for spend in token status.
    #[arg(long, env = "STRAKE_PRICES", value_name = "FILE")]
    pub prices: Option<std::path::PathBuf>,

    /// Comma-separated admin URLs of proxy replicas to collect usage from,
    /// e.g. http://10.0.0.5:9090 (outside Kubernetes, or beside discovery).
    #[arg(long, env = "STRAKE_PROXY_ADMIN_URLS", value_delimiter = ',')]
    pub proxy_admin_urls: Vec<String>,

    /// The proxy's admin Service in the proxy namespace: every ready
    /// endpoint of its EndpointSlices is a replica to collect usage from.
    #[arg(long, env = "STRAKE_PROXY_ADMIN_SERVICE")]
    pub proxy_admin_service: Option<String>,

    /// How often usage is collected from every proxy replica; also the most
    /// a crashed replica's unreported usage can span.
    #[arg(long, env = "STRAKE_USAGE_INTERVAL", default_value = "10s", value_parser = strake_crds::duration::parse)]
    pub usage_interval: Duration,

    /// Most usage status writes per second, StrakeTokens and UpstreamKeys
    /// together. With N active resources each is refreshed every
    /// max(--usage-interval, N / this) seconds.
    #[arg(long, env = "STRAKE_USAGE_WRITES_PER_SECOND", default_value_t = 100)]
    pub usage_writes_per_second: u32,

    /// StrakeToken reconciles in flight at once (per watched namespace). Each
    /// holds a few API requests open; the API server's own limits are the
    /// bound behind it.
    #[arg(long, env = "STRAKE_TOKEN_CONCURRENCY", default_value_t = DEFAULT_TOKEN_CONCURRENCY)]
    pub token_concurrency: u16,

    /// Deleted StrakeTokens withdrawn from the proxies at once, ahead of the
    /// reconcile queue (per watched namespace).
    #[arg(long, env = "STRAKE_REVOCATION_CONCURRENCY", default_value_t = DEFAULT_REVOCATION_CONCURRENCY)]
    pub revocation_concurrency: u16,

    /// How long a cursor of a proxy instance that no longer answers is kept
    /// in status (a replica that comes back within it is not counted twice).
    #[arg(long, env = "STRAKE_USAGE_CURSOR_RETENTION", default_value = "1h", value_parser = strake_crds::duration::parse)]
    pub usage_cursor_retention: Duration,

    /// Test-only: a file holding seconds to add to the clock for expiry and
    /// budget decisions, re-read at each one (end-to-end tests roll budget
    /// periods over with it). Hidden, and not in the chart.
    #[arg(long, hide = true, value_name = "FILE")]
    pub dev_clock_offset_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Which namespaces the controllers cover.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    All,
    Namespace(String),
}

impl Scope {
    pub fn covers(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespace(ns) => ns == namespace,
        }
    }
}

/// The settings the controllers run with, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub proxy_namespace: String,
    /// Without a trailing slash.
    pub endpoint: String,
    pub scopes: Vec<Scope>,
    pub resync: Duration,
    /// How long before expiry a token warns ([`Cli::expiry_warning`]).
    pub expiry_warning: Duration,
    /// The cluster's ServiceAccount token issuer ([`Cli::cluster_issuer`]).
    pub cluster_issuer: String,
    /// "Now" for expiry and budget decisions ([`Cli::dev_clock_offset_file`]).
    pub clock: strake_crds::clock::Clock,
    /// Where UpstreamKeys may send their keys.
    pub allowed_upstream_hosts: AllowedHosts,
    /// The built-in price table with `--prices` applied.
    pub prices: PriceTable,
    pub usage: UsageSettings,
    /// StrakeToken reconciles in flight ([`Cli::token_concurrency`]).
    pub token_concurrency: u16,
    /// Revocations in flight ([`Cli::revocation_concurrency`]).
    pub revocation_concurrency: u16,
}

pub const DEFAULT_TOKEN_CONCURRENCY: u16 = 32;
pub const DEFAULT_REVOCATION_CONCURRENCY: u16 = 8;
/// Beyond this a reconcile waits on the API server's inflight limit, not on
/// the operator.
const MAX_CONCURRENCY: u16 = 256;

/// Where usage is collected from, and how fast it may be written.
#[derive(Debug, Clone, Default)]
pub struct UsageSettings {
    /// Static admin base URLs, without a trailing slash.
    pub admin_urls: Vec<String>,
    pub admin_service: Option<String>,
    pub interval: Duration,
    pub writes_per_second: u32,
    pub cursor_retention: Duration,
}

impl UsageSettings {
    /// Whether any replica can be found at all.
    pub fn enabled(&self) -> bool {
        !self.admin_urls.is_empty() || self.admin_service.is_some()
    }

    /// Longest wait for one replica's report.
    pub fn scrape_timeout(&self) -> Duration {
        (self.interval / 2).min(SCRAPE_TIMEOUT)
    }

    /// How long a revoked token that was used stays (its finalizer held)
    /// so that the replicas' last counters for it are collected: two rounds
    /// and a scrape.
    pub fn final_collection(&self) -> Duration {
        self.interval * 2 + self.scrape_timeout()
    }
}

/// The most one replica's report may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

impl Settings {
    pub fn covers(&self, namespace: &str) -> bool {
        self.scopes.iter().any(|s| s.covers(namespace))
    }
}

impl Cli {
    pub fn settings(&self) -> Result<Settings> {
        let endpoint = self.endpoint.trim().trim_end_matches('/');
        let rest = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(['?', '#', ' '])) {
            return Err(Error::Config(format!(
                "--endpoint must be an http(s) URL without query, e.g. https://llm.example.com (got {:?})",
                self.endpoint
            )));
        }
        if self.proxy_namespace.is_empty() {
            return Err(Error::Config("--proxy-namespace must not be empty".into()));
        }
        if !(MIN_RESYNC..=MAX_RESYNC).contains(&self.resync) {
            return Err(Error::Config(format!(
                "--resync must be between {MIN_RESYNC:?} and {MAX_RESYNC:?}"
            )));
        }
        let allowed_upstream_hosts =
            AllowedHosts::parse(self.allowed_upstream_hosts.iter().map(String::as_str))
                .map_err(|e| Error::Config(format!("--allowed-upstream-hosts: {e}")))?;
        let mut namespaces: Vec<String> = self
            .watch_namespaces
            .iter()
            .map(|ns| ns.trim().to_string())
            .filter(|ns| !ns.is_empty())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        let scopes = if namespaces.is_empty() {
            vec![Scope::All]
        } else {
            namespaces.into_iter().map(Scope::Namespace).collect()
        };
        let prices = match &self.prices {
            None => PriceTable::builtin(),
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| table_with_overrides(&text).map_err(|e| e.to_string()))
                .map_err(|e| Error::Config(format!("--prices {}: {e}", path.display())))?,
        };
        let mut admin_urls = Vec::new();
        for url in &self.proxy_admin_urls {
            let url = url.trim().trim_end_matches('/');
            if url.is_empty() {
                continue;
            }
            let rest = url.strip_prefix("http://");
            if rest.is_none_or(|r| r.is_empty() || r.contains(['/', '?', '#', ' '])) {
                return Err(Error::Config(format!(
                    "--proxy-admin-urls: {url:?} must be http://host:port (the proxy's admin port)"
                )));
            }
            admin_urls.push(url.to_string());
        }
        if !(MIN_USAGE_INTERVAL..=MAX_USAGE_INTERVAL).contains(&self.usage_interval) {
            return Err(Error::Config(format!(
                "--usage-interval must be between {MIN_USAGE_INTERVAL:?} and {MAX_USAGE_INTERVAL:?}: \
                 status.usage must be fresh within 30 s"
            )));
        }
        if self.usage_writes_per_second == 0 {
            return Err(Error::Config(
                "--usage-writes-per-second must be at least 1".into(),
            ));
        }
        for (flag, n) in [
            ("--token-concurrency", self.token_concurrency),
            ("--revocation-concurrency", self.revocation_concurrency),
        ] {
            if !(1..=MAX_CONCURRENCY).contains(&n) {
                return Err(Error::Config(format!(
                    "{flag} must be between 1 and {MAX_CONCURRENCY}"
                )));
            }
        }
        Ok(Settings {
            proxy_namespace: self.proxy_namespace.clone(),
            endpoint: endpoint.to_string(),
            scopes,
            resync: self.resync,
            expiry_warning: self.expiry_warning,
            cluster_issuer: self.cluster_issuer.clone(),
            clock: strake_crds::clock::Clock::shifted_by(self.dev_clock_offset_file.clone()),
            allowed_upstream_hosts,
            prices,
            usage: UsageSettings {
                admin_urls,
                admin_service: self
                    .proxy_admin_service
                    .clone()
                    .filter(|s| !s.trim().is_empty()),
                interval: self.usage_interval,
                writes_per_second: self.usage_writes_per_second,
                cursor_retention: self.usage_cursor_retention,
            },
            token_concurrency: self.token_concurrency,
            revocation_concurrency: self.revocation_concurrency,
        })
    }

    /// The Lease's namespace: the flag, else $POD_NAMESPACE, else the proxy's.
    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| self.proxy_namespace.clone())
    }
}

const MIN_RESYNC: Duration = Duration::from_secs(1);
const MIN_USAGE_INTERVAL: Duration = Duration::from_secs(1);
/// Above this, a use can take longer than 30 s to reach status.
const MAX_USAGE_INTERVAL: Duration = Duration::from_secs(30);
/// The controller's scheduler cannot hold timers much beyond two years; a
/// day is plenty for a safety net.
const MAX_RESYNC: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["strake-operator"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    #[test]
    fn defaults() {
        let c = cli(&[
            "--proxy-namespace",
            "strake",
            "--endpoint",
            "https://llm.example.com/",
        ]);
        assert_eq!(c.admin_addr.to_string(), "0.0.0.0:8081");
        assert!(!c.leader_elect);
        assert_eq!(c.lease_name, "strake-operator");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.resync, Duration::from_secs(300));
        let s = c.settings().unwrap();
        assert_eq!(s.endpoint, "https://llm.example.com");
        assert_eq!(s.scopes, [Scope::All]);
        assert!(s.covers("anything"));
        assert_eq!(s.allowed_upstream_hosts, AllowedHosts::defaults());
        assert!(!s.usage.enabled());
        assert_eq!(s.usage.interval, Duration::from_secs(10));
        assert_eq!(s.usage.writes_per_second, 100);
        assert_eq!(s.usage.cursor_retention, Duration::from_secs(3600));
        assert_eq!(s.usage.final_collection(), Duration::from_secs(25));
        assert_eq!(s.token_concurrency, 32);
        assert_eq!(s.revocation_concurrency, 8);
    }

    #[test]
    fn concurrency_is_bounded() {
        let base = ["--proxy-namespace=s", "--endpoint=https://llm.example.com"];
        let with = |arg: &str| {
            let mut args = base.to_vec();
            args.push(arg);
            cli(&args).settings()
        };
        assert_eq!(
            with("--token-concurrency=256").unwrap().token_concurrency,
            256
        );
        for bad in [
            "--token-concurrency=0",
            "--token-concurrency=257",
            "--revocation-concurrency=0",
        ] {
            let err = with(bad).unwrap_err().to_string();
            let flag = bad.split('=').next().unwrap();
            assert!(
                err.contains(flag) && err.contains("between 1 and 256"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn allowed_upstream_hosts_replace_the_defaults_and_are_validated() {
        let base = ["--proxy-namespace=s", "--endpoint=https://llm.example.com"];
        let with = |arg: &str| {
            let mut args = base.to_vec();
            args.push(arg);
            cli(&args).settings()
        };
        let s = with("--allowed-upstream-hosts=http://127.0.0.1:18080,*.openai.azure.com").unwrap();
        assert!(
            s.allowed_upstream_hosts
                .check("http://127.0.0.1:18080")
                .is_ok()
        );
        assert!(
            s.allowed_upstream_hosts
                .check("https://api.openai.com")
                .is_err()
        );
        for bad in [
            "--allowed-upstream-hosts=",
            "--allowed-upstream-hosts=https://x.example/path",
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("--allowed-upstream-hosts"), "{bad}: {err}");
        }
    }

    #[test]
    fn watch_namespaces_is_a_comma_list() {
        let c = cli(&[
            "--proxy-namespace=strake",
            "--endpoint=http://localhost:8080",
            "--watch-namespaces=team-b,team-a,,team-b",
            "--log-format=text",
            "--resync=90s",
        ]);
        let s = c.settings().unwrap();
        assert_eq!(
            s.scopes,
            [
                Scope::Namespace("team-a".into()),
                Scope::Namespace("team-b".into())
            ]
        );
        assert!(s.covers("team-a") && !s.covers("team-c"));
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(s.resync, Duration::from_secs(90));
    }

    #[test]
    fn prices_file_extends_the_table_and_a_bad_row_is_named() {
        let dir =
            std::env::temp_dir().join(format!("strake-operator-prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("prices.yaml");
        let with = |text: &str| {
            std::fs::write(&file, text).unwrap();
            cli(&[
                "--proxy-namespace=s",
                "--endpoint=https://x",
                &format!("--prices={}", file.display()),
            ])
            .settings()
        };
        let s =
            with("- {provider: azure-openai, model: prod-gpt, input: 2.5, output: 10}\n").unwrap();
        let p = s
            .prices
            .lookup(strake_crds::Provider::AzureOpenAi, "prod-gpt");
        assert!(p.is_some());
        let e = with("- {provider: openai, model: x, input: 1, output: 1}\n- {provider: openai, model: x, input: 1, output: 2}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--prices") && e.contains("prices[1] (openai \"x\"): listed twice"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_endpoints_are_rejected() {
        for ep in ["llm.example.com", "https://", "ftp://x", "https://x/?a=b"] {
            let c = cli(&["--proxy-namespace=s", "--endpoint", ep]);
            assert!(c.settings().is_err(), "{ep}");
        }
    }

    #[test]
    fn proxy_admin_urls() {
        let c = cli(&[
            "--proxy-namespace=s",
            "--endpoint=http://x",
            "--proxy-admin-urls=http://127.0.0.1:9090/, http://127.0.0.1:9091",
        ]);
        let s = c.settings().unwrap();
        assert_eq!(
            s.usage.admin_urls,
            ["http://127.0.0.1:9090", "http://127.0.0.1:9091"]
        );
        assert!(s.usage.enabled());
        for bad in ["127.0.0.1:9090", "https://x:1", "http://x/usage"] {
            let c = cli(&[
                "--proxy-namespace=s",
                "--endpoint=http://x",
                "--proxy-admin-urls",
                bad,
            ]);
            assert!(c.settings().is_err(), "{bad}");
        }
        let c = cli(&[
            "--proxy-namespace=s",
            "--endpoint=http://x",
            "--usage-interval=60s",
        ]);
        assert!(c.settings().is_err());
    }
}
