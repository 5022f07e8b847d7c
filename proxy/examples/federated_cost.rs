//! What a federated credential costs on the request path, beside a minted
//! token's, on one index: the authenticate stage only (hash, cache, index),
//! and a first use (signature check) for scale.
//!
//! ```text
//! cargo run --release -p strake-proxy --example federated_cost
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use strake_crds::contract::TokenRecord;
use strake_crds::federated::FederatedSubject;
use strake_crds::token::{Token, TokenHash};
use strake_proxy::federated::{self, KeySet, VerifiedCache};
use strake_proxy::index::{Record, TokenIndex};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const ROUNDS: u32 = 200_000;

fn record(name: &str, hash: TokenHash, federated: Vec<FederatedSubject>) -> TokenRecord {
    TokenRecord {
        name: name.into(),
        identity: name.into(),
        sha256: hash,
        upstreams: vec!["openai".into()],
        expires_at: None,
        suspended: false,
        allowed_models: vec![],
        limits: None,
        endpoints: vec![],
        source: None,
        budget: None,
        federated,
        previous: None,
    }
}

fn per_call(label: &str, rounds: u32, mut f: impl FnMut()) {
    let start = Instant::now();
    for _ in 0..rounds {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(rounds);
    println!("{label:<44} {:>9.0} ns", ns);
}

fn main() {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let (x, y) = pair.public_key().as_ref()[1..].split_at(32);
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}]});
    let keys = KeySet::from_jwks(jwks.to_string().as_bytes()).unwrap();
    let now = jiff::Timestamp::now().as_second();
    // About the size of a GitHub Actions ID token's claims.
    let claims = serde_json::json!({"iss": ISSUER, "aud": "strake", "exp": now + 600, "iat": now,
        "sub": "repo:acme/api:ref:refs/heads/main", "repository": "acme/api", "repository_owner": "acme",
        "ref": "refs/heads/main", "sha": "0".repeat(40), "workflow": "deploy", "event_name": "push",
        "run_id": "1234567890", "actor": "octocat", "job_workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main"});
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let jwt =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(pkcs8.as_ref())).unwrap();

    let minted = Token::mint();
    let mut index = TokenIndex::new();
    index
        .apply(
            "minted",
            Record::Token(record("minted", minted.hash(), vec![])),
        )
        .unwrap();
    let subject = FederatedSubject {
        issuer: ISSUER.into(),
        audience: "strake".into(),
        subject: Some("repo:acme/api:ref:refs/heads/main".into()),
        claims: Default::default(),
    };
    index
        .apply(
            "ci",
            Record::Token(record("ci", TokenHash::of("unminted"), vec![subject])),
        )
        .unwrap();
    let snapshot = index.snapshot();
    let cache = VerifiedCache::new(federated::MAX_CACHED_VERIFICATIONS);
    let seen = federated::peek(&jwt).unwrap();
    let verified = Arc::new(federated::verify(&jwt, &seen, &keys, now).unwrap());
    cache.insert(TokenHash::of(&jwt), verified, now, 300);
    println!("JWT of {} bytes, ES256", jwt.len());

    per_call("minted: hash + index", ROUNDS, || {
        let hash = TokenHash::of(black_box(minted.expose()));
        black_box(snapshot.authenticate(&hash, 0));
    });
    per_call(
        "federated, hot: hash + cache + subject match",
        ROUNDS,
        || {
            let hash = TokenHash::of(black_box(&jwt));
            let v = cache.get(&hash, now).unwrap();
            black_box(snapshot.authenticate_federated(&v).unwrap());
        },
    );
    per_call("federated, first use: parse + ES256 verify", 5_000, || {
        let seen = federated::peek(black_box(&jwt)).unwrap();
        black_box(federated::verify(&jwt, &seen, &keys, now).unwrap());
    });
}
