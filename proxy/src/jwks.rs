//! Keyless identities, the I/O part: each issuer's signing keys, fetched
//! through OIDC discovery and held per issuer. When to fetch is decided by
//! [`federated::key_plan`]; this module only fetches and keeps.
//!
//! - The cluster's own issuer (`--cluster-issuer`) is asked through the
//!   Kubernetes client, with the proxy's ServiceAccount credentials:
//!   `/.well-known/openid-configuration` (whose `issuer` must be the
//!   configured one) and `/openid/v1/jwks` on the API server.
//! - Any other issuer over https only, with the webpki roots plus the
//!   `--issuer-ca-file` certificates: `<issuer>/.well-known/openid-configuration`,
//!   whose `issuer` must be the same string and whose `jwks_uri` must be
//!   https, then that document.
//!
//! Only issuers some StrakeToken names are ever asked (the caller checks),
//! one fetch at a time per issuer, never more often than the refetch
//! interval. A failed fetch keeps the last good set, until it is older
//! than the staleness bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;

use crate::federated::{self, KeyPlan, KeySet, KeyState, KeyTiming, Refusal};
use crate::metrics::Metrics;

/// The largest discovery or JWKS document read.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// The cluster issuer's JWKS path on the API server.
const CLUSTER_JWKS_PATH: &str = "/openid/v1/jwks";
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// How federated tokens are verified (the `--cluster-issuer`,
/// `--issuer-ca-file` and `--jwks-*` flags).
#[derive(Clone, Debug)]
pub struct FederatedSettings {
    pub cluster_issuer: String,
    /// Trusted beside the webpki roots for issuers' https.
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub timing: KeyTiming,
    /// Longest wait for one issuer document.
    pub fetch_timeout: Duration,
    /// A verified JWT is remembered at most this long (and never past its
    /// `exp`).
    pub verified_max_age: Duration,
}

impl Default for FederatedSettings {
    fn default() -> Self {
        FederatedSettings {
            cluster_issuer: strake_crds::federated::DEFAULT_CLUSTER_ISSUER.into(),
            extra_roots: Vec::new(),
            timing: KeyTiming::default(),
            fetch_timeout: Duration::from_secs(5),
            verified_max_age: Duration::from_secs(300),
        }
    }
}

type IssuerClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

#[derive(Default)]
struct Held {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

/// Every named issuer's keys.
pub struct Issuers {
    settings: FederatedSettings,
    https: IssuerClient,
    kube: OnceLock<kube::Client>,
    held: Mutex<HashMap<Box<str>, Arc<tokio::sync::Mutex<Held>>>>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl Issuers {
    pub fn new(settings: FederatedSettings) -> Issuers {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for cert in &settings.extra_roots {
            // Checked when the flag was read (see `parse_ca_file`).
            let _ = roots.add(cert.clone());
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.fetch_timeout));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Issuers {
            https: Client::builder(TokioExecutor::new()).build(https),
            settings,
            kube: OnceLock::new(),
            held: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &FederatedSettings {
        &self.settings
    }

    /// Kube mode: the cluster issuer is asked through this client.
    pub fn use_kube(&self, client: kube::Client) {
        let _ = self.kube.set(client);
    }

    /// The keys to verify a token of `issuer` with `kid`, fetched first
    /// when [`federated::key_plan`] says so.
    pub async fn keys(
        &self,
        issuer: &str,
        kid: Option<&str>,
        metrics: &Metrics,
    ) -> Result<Arc<KeySet>, Refusal> {
        let cell = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.entry(issuer.into()).or_default().clone()
        };
        // One fetch at a time per issuer: concurrent requests wait for it.
        let mut held = cell.lock().await;
        let secs = |at: Option<Instant>| at.map(|t| t.elapsed().as_secs());
        let timing = self.settings.timing;
        let state = KeyState {
            fetched_ago: secs(held.fetched_at),
            attempted_ago: secs(held.attempted_at),
            kid_known: match (kid, &held.keys) {
                (Some(kid), Some(keys)) => keys.has_kid(kid),
                (None, Some(_)) => true,
                (_, None) => false,
            },
        };
        if federated::key_plan(state, timing) == KeyPlan::Fetch {
            held.attempted_at = Some(Instant::now());
            metrics.federated_key_fetches.inc();
            match tokio::time::timeout(self.settings.fetch_timeout * 2, self.fetch(issuer)).await {
                Ok(Ok(keys)) => {
                    tracing::info!(%issuer, keys = keys.len(), "issuer keys fetched");
                    held.keys = Some(Arc::new(keys));
                    held.fetched_at = held.attempted_at;
                }
                Ok(Err(e)) => {
                    metrics.federated_key_fetch_failures.inc();
                    tracing::warn!(%issuer, error = %e, "cannot fetch the issuer's keys; keeping the last good set");
                }
                Err(_) => {
                    metrics.federated_key_fetch_failures.inc();
                    tracing::warn!(%issuer, "fetching the issuer's keys timed out; keeping the last good set");
                }
            }
        }
        match &held.keys {
            Some(keys) if federated::trusted(secs(held.fetched_at), timing) => Ok(keys.clone()),
            _ => Err(Refusal::KeysUnavailable(issuer.chars().take(120).collect())),
        }
    }

    async fn fetch(&self, issuer: &str) -> Result<KeySet, String> {
        if issuer == self.settings.cluster_issuer
            && let Some(client) = self.kube.get()
        {
            return self.fetch_cluster(client, issuer).await;
        }
        let base = issuer.trim_end_matches('/');
        let discovery: Discovery =
            serde_json::from_slice(&self.get(&format!("{base}{DISCOVERY_PATH}")).await?)
                .map_err(|e| format!("the discovery document does not parse: {e}"))?;
        if discovery.issuer != issuer {
            return Err(format!(
                "the discovery document names the issuer {:?}, not {issuer:?}",
                discovery.issuer
            ));
        }
        if !discovery.jwks_uri.starts_with("https://") {
            return Err("the discovery document's jwks_uri is not https".into());
        }
        KeySet::from_jwks(&self.get(&discovery.jwks_uri).await?)
    }

    async fn fetch_cluster(&self, client: &kube::Client, issuer: &str) -> Result<KeySet, String> {
        let get = |path: &str| {
            http::Request::get(path)
                .body(Vec::new())
                .expect("a static path is a valid request")
        };
        let text = client
            .request_text(get(DISCOVERY_PATH))
            .await
            .map_err(|e| format!("the API server's discovery document: {e}"))?;
        let discovery: Discovery = serde_json::from_str(&text)
            .map_err(|e| format!("the API server's discovery document does not parse: {e}"))?;
        if discovery.issuer != issuer {
            return Err(format!(
                "the API server's issuer is {:?}, but --cluster-issuer says {issuer:?}",
                discovery.issuer
            ));
        }
        let jwks = client
            .request_text(get(CLUSTER_JWKS_PATH))
            .await
            .map_err(|e| format!("the API server's JWKS: {e}"))?;
        KeySet::from_jwks(jwks.as_bytes())
    }

    async fn get(&self, url: &str) -> Result<Bytes, String> {
        let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
        let request = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response =
            tokio::time::timeout(self.settings.fetch_timeout, self.https.request(request))
                .await
                .map_err(|_| format!("{url} did not answer in time"))?
                .map_err(|e| format!("{url}: {e}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("{url} answered {}", response.status()));
        }
        let body = tokio::time::timeout(
            self.settings.fetch_timeout,
            Limited::new(response.into_body(), MAX_DOCUMENT_BYTES).collect(),
        )
        .await
        .map_err(|_| format!("{url} did not send its document in time"))?
        .map_err(|e| format!("{url}: {e}"))?;
        Ok(body.to_bytes())
    }
}

/// The certificates of a PEM file, for `--issuer-ca-file`.
pub fn parse_ca_file(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store
            .add(cert.clone())
            .map_err(|e| format!("a certificate cannot be a trust anchor: {e}"))?;
    }
    Ok(certs)
}
