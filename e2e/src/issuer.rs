//! A small OIDC issuer on loopback, standing in for an external one such
//! as GitHub Actions': https with a certificate from the stack's issuer CA
//! (which the proxies trust with `--issuer-ca-file`), serving discovery and
//! a JWKS whose keys the test changes, and signing tokens with ES256.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::DevEnv;

/// An ES256 signing key with its `kid`.
pub struct SigningKey {
    pub kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl SigningKey {
    pub fn generate(kid: &str) -> SigningKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("ring generates a P-256 key")
            .as_ref()
            .to_vec();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .expect("a key ring generated reads back");
        SigningKey {
            public: pair.public_key().as_ref().to_vec(),
            pkcs8,
            kid: kid.into(),
        }
    }

    /// The public key as a JWK (the point is 0x04 || x || y).
    pub fn jwk(&self) -> Value {
        let (x, y) = self.public[1..].split_at(32);
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)})
    }

    /// A compact JWT of `claims`, signed with this key and naming its `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8))
            .expect("claims serialize")
    }
}

/// A running issuer. Dropping it (or [`Issuer::stop`]) closes the listener
/// and every connection, as an issuer that went down.
pub struct Issuer {
    pub url: String,
    jwks: Arc<Mutex<Value>>,
    server: JoinHandle<()>,
}

impl Issuer {
    /// Starts on an ephemeral loopback port, publishing `keys`.
    pub async fn start(env: &DevEnv, keys: &[&SigningKey]) -> Result<Issuer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let url = format!("https://127.0.0.1:{port}");
        let tls = tls_config(env, port)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let jwks = Arc::new(Mutex::new(Value::Null));
        let issuer = Issuer {
            url: url.clone(),
            jwks: jwks.clone(),
            server: tokio::spawn(serve(listener, acceptor, url, jwks)),
        };
        issuer.publish(keys);
        Ok(issuer)
    }

    /// The JWKS from now on (a key rotation).
    pub fn publish(&self, keys: &[&SigningKey]) {
        let doc = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
        *self.jwks.lock().unwrap_or_else(|e| e.into_inner()) = doc;
    }

    /// [`claims`] of this issuer.
    pub fn claims(&self, subject: &str, audience: &str, expires_in_secs: i64) -> Value {
        claims(&self.url, subject, audience, expires_in_secs)
    }

    pub fn stop(self) {
        self.server.abort();
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Claims as GitHub Actions' ID tokens carry them, each token with its own
/// `jti` (so none is served from the proxy's verification cache).
pub fn claims(issuer: &str, subject: &str, audience: &str, expires_in_secs: i64) -> Value {
    let now = jiff::Timestamp::now().as_second();
    json!({"iss": issuer, "sub": subject, "aud": audience, "iat": now,
        "nbf": now - 5, "exp": now + expires_in_secs,
        "jti": format!("{now}-{}", rand_suffix()), "repository": "acme/api"})
}

fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut b).expect("randomness");
    u64::from_le_bytes(b)
}

async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    url: String,
    jwks: Arc<Mutex<Value>>,
) {
    // Connection tasks live in the set: aborting this task drops it and
    // closes every connection, pooled ones included.
    let mut connections = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, url, jwks) = (acceptor.clone(), url.clone(), jwks.clone());
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let body = match req.uri().path() {
                    "/.well-known/openid-configuration" => {
                        Some(json!({"issuer": url, "jwks_uri": format!("{url}/jwks"),
                            "id_token_signing_alg_values_supported": ["ES256"]}))
                    }
                    "/jwks" => Some(jwks.lock().unwrap_or_else(|e| e.into_inner()).clone()),
                    _ => None,
                };
                let response = match body {
                    Some(v) => hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(v.to_string()))),
                    None => hyper::Response::builder()
                        .status(404)
                        .body(Full::new(Bytes::new())),
                };
                async move { Ok::<_, Infallible>(response.expect("a static response")) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// A server certificate for 127.0.0.1 from the stack's issuer CA
/// (e2e/dev/up.sh makes it), written beside it.
fn tls_config(env: &DevEnv, port: u16) -> Result<rustls::ServerConfig> {
    let ca = env.dir.join("issuer-ca");
    ensure!(
        ca.join("ca.key").exists(),
        "{} has no CA: restart the stack (make dev-up)",
        ca.display()
    );
    let dir = ca.join(format!("leaf-{port}"));
    std::fs::create_dir_all(&dir)?;
    let (key, csr, crt, ext) = (
        dir.join("tls.key"),
        dir.join("tls.csr"),
        dir.join("tls.crt"),
        dir.join("ext"),
    );
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )?;
    let p = |path: &Path| path.to_string_lossy().into_owned();
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &p(&key),
    ])?;
    openssl(&[
        "req",
        "-new",
        "-key",
        &p(&key),
        "-subj",
        "/CN=strake-e2e-issuer",
        "-out",
        &p(&csr),
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca.join("ca.crt")),
        "-CAkey",
        &p(&ca.join("ca.key")),
        "-CAcreateserial",
        "-days",
        "1",
        "-sha256",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&crt),
    ])?;
    let certs = CertificateDer::pem_file_iter(&crt)
        .context("reading the issuer certificate")?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&key).context("reading the issuer key")?;
    std::fs::remove_dir_all(&dir)?;
    Ok(rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?)
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .context("running openssl (e2e/deps.sh installs it)")?;
    ensure!(
        out.status.success(),
        "openssl {}: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
