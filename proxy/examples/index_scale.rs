//! How the token index behaves at scale: build time, memory, the cost of
//! changing one token, lookups. Also parses a file-mode config of the same
//! size.
//!
//! ```text
//! cargo run --release -p strake-proxy --example index_scale -- 100000
//! ```

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use strake_crds::contract::{TokenRecord, UpstreamRecord};
use strake_crds::provider::Provider;
use strake_crds::token::TokenHash;
use strake_proxy::config::{self, Environment};
use strake_proxy::index::{ApiKey, Record, TokenIndex};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn record(i: usize) -> TokenRecord {
    TokenRecord {
        name: format!("team-{}/user-{i}", i % 100),
        identity: format!("user-{i}@example.com"),
        sha256: TokenHash::of(&format!("token-{i}")),
        upstreams: vec![
            format!("team-{}/openai", i % 100),
            format!("team-{}/anthropic", i % 100),
        ],
        expires_at: None,
        suspended: false,
        allowed_models: vec!["gpt-4o*".into(), "claude-*".into()],
        limits: None,
        endpoints: vec![],
        source: None,
        budget: None,
        federated: Vec::new(),
        previous: None,
    }
}

struct NoEnv;

impl Environment for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn read_file(&self, _: &std::path::Path) -> std::io::Result<String> {
        Err(std::io::Error::other("unused"))
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let base = rss_mib();
    let records = (0..n)
        .map(|i| (format!("strake-token-{i:016x}"), Record::Token(record(i))))
        .chain((0..100).flat_map(|t| {
            [Provider::OpenAi, Provider::Anthropic].map(|p| {
                (
                    format!("strake-upstream-{t}-{p}"),
                    Record::Upstream {
                        record: UpstreamRecord {
                            name: format!("team-{t}/{p}"),
                            provider: p,
                            base_url: "https://api.example.com".into(),
                            headers: BTreeMap::new(),
                            endpoints: vec![],
                            source: None,
                            budget: None,
                        },
                        api_key: ApiKey::new("sk-real"),
                    },
                )
            })
        }));
    let mut index = TokenIndex::new();
    let t = Instant::now();
    let (_, errors) = index.reset(records);
    assert!(errors.is_empty());
    let built = t.elapsed();
    let snapshot = index.snapshot();
    println!(
        "tokens: {}  upstreams: {}",
        snapshot.token_count(),
        snapshot.upstream_count()
    );
    println!("reset (initial list): {built:?}");
    println!(
        "RSS: {:.1} MiB above start ({:.1} MiB total)",
        rss_mib() - base,
        rss_mib()
    );

    // One token changes while a reader holds the published snapshot.
    let rounds = 1000;
    let t = Instant::now();
    for i in 0..rounds {
        let mut r = record(n + i);
        r.name = format!("extra-{i}");
        index
            .apply(&format!("extra-{i}"), Record::Token(r))
            .unwrap();
        black_box(index.snapshot());
    }
    println!(
        "apply one token + publish: {:?} each",
        t.elapsed() / rounds as u32
    );
    let t = Instant::now();
    for i in 0..rounds {
        index.delete(&format!("extra-{i}"));
        black_box(index.snapshot());
    }
    println!(
        "delete one token + publish: {:?} each",
        t.elapsed() / rounds as u32
    );
    drop(snapshot);

    let snapshot = index.snapshot();
    let hashes: Vec<TokenHash> = (0..10_000)
        .map(|i| TokenHash::of(&format!("token-{}", i * 7 % n)))
        .collect();
    let t = Instant::now();
    let mut found = 0;
    for _ in 0..100 {
        for h in &hashes {
            found += usize::from(black_box(snapshot.token(h)).is_some());
        }
    }
    let lookups = 100 * hashes.len();
    assert_eq!(found, lookups);
    println!("lookup: {:?} each", t.elapsed() / lookups as u32);
    let t = Instant::now();
    for i in 0..lookups {
        black_box(TokenHash::of(black_box(&format!("sk-strk-{i:046}"))));
    }
    println!(
        "sha256 of a token (+format): {:?} each",
        t.elapsed() / lookups as u32
    );

    // The same tokens as a file-mode config.
    let mut yaml =
        String::from("upstreams:\n  - {name: openai, provider: openai, apiKey: k}\ntokens:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - {{name: user-{i}, identity: user-{i}@example.com, sha256: {}, upstreams: [openai]}}\n",
            TokenHash::of(&format!("token-{i}"))
        ));
    }
    let before = rss_mib();
    let t = Instant::now();
    let parsed = config::parse(&yaml, &NoEnv).unwrap();
    println!(
        "file config: {:.1} MiB of YAML parsed in {:?} ({} records, +{:.1} MiB RSS)",
        yaml.len() as f64 / 1048576.0,
        t.elapsed(),
        parsed.records.len(),
        rss_mib() - before
    );
}
