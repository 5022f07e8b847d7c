//! File mode: the YAML config file, parsed and validated.
//!
//! ```yaml
//! listen: 127.0.0.1:8080          # optional; --listen overrides
//! admin: 127.0.0.1:9090           # optional; --admin overrides
//! upstreams:
//!   - name: openai
//!     provider: openai            # openai | anthropic | azure-openai | gemini | openai-compatible
//!     baseUrl: https://api.openai.com    # optional for openai, anthropic, gemini
//!     headers: {OpenAI-Organization: org-123}   # optional
//!     endpoints: [{methods: [GET], path: /v1/files}]   # optional, beyond inference
//!     apiKeyEnv: OPENAI_API_KEY   # or apiKey: <literal> or apiKeyFile: <path, relative to this file>
//! tokens:
//!   - name: alice                 # the same fields as the operator's token records
//!     identity: alice@example.com
//!     sha256: 9f86d0…             # from `strake-proxy mint`
//!     upstreams: [openai]
//!     expiresAt: "2027-03-01T00:00:00Z"
//!     suspended: false
//!     allowedModels: ["gpt-4o*"]
//!     limits: {requestsPerMinute: 60, tokensPerMinute: 200000}
//!     endpoints: [{methods: [GET, DELETE], path: "/v1/files/*"}]
//! prices:                         # optional: rows added to or replacing the built-in price table
//!   - provider: openai            # same shape as crds/data/prices.yaml; USD per million tokens
//!     model: my-finetune
//!     input: 3
//!     output: 12
//!     cachedInput: 1.5            # optional, as are cacheWrite, cacheWrite1h, longContext, source, date
//! ```
//!
//! Parsing is pure: reading key files and environment variables goes
//! through [`Environment`], so tests need neither. Every problem is reported
//! at once, each with the line and entry it concerns; none ever quotes a key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;
use strake_crds::EndpointAllowance;
use strake_crds::contract::{TokenRecord, UpstreamRecord};
use strake_crds::pricing::{PriceError, PriceRow, PriceTable};
use strake_crds::provider::Provider;

use crate::endpoint::Allowance;
use crate::index::{ApiKey, Record, Upstream};

/// A valid config file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// Index records with their source keys (`upstream/<name>`, `token/<name>`).
    pub records: Vec<(String, Record)>,
    /// Price rows over the built-in table, validated.
    pub prices: Vec<PriceRow>,
}

/// Where key files and environment variables come from.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    fn read_file(&self, path: &Path) -> std::io::Result<String>;
}

/// The process environment; relative key files resolve against `base`
/// (the config file's directory).
pub struct ProcessEnvironment {
    pub base: PathBuf,
}

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(self.base.join(path))
    }
}

/// Everything wrong with a config file, one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) if self.message.starts_with("column ") => {
                write!(f, "line {line}, {}", self.message)
            }
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    admin: Option<Spanned<String>>,
    #[serde(default)]
    upstreams: Vec<Spanned<RawUpstream>>,
    #[serde(default)]
    tokens: Vec<Spanned<TokenRecord>>,
    #[serde(default)]
    prices: Vec<Spanned<PriceRow>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawUpstream {
    name: String,
    provider: Provider,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    endpoints: Vec<EndpointAllowance>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    api_key_file: Option<String>,
}

/// Parses and validates a config file's text.
pub fn parse(text: &str, env: &dyn Environment) -> Result<FileConfig, ConfigError> {
    // An empty file is far more likely a half-written one than a wish to
    // revoke every token at once.
    let has_content = text.lines().any(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#') && l != "---"
    });
    if !has_content {
        return Err(ConfigError {
            problems: vec![Problem {
                line: None,
                message: "the file is empty; to serve no tokens, write `tokens: []`".into(),
            }],
        });
    }
    let raw: RawConfig = match serde_saphyr::from_str_with_options(text, yaml_options()) {
        Ok(raw) => raw,
        Err(e) => {
            let line = e.location().map(|l| l.line() as usize).filter(|&l| l > 0);
            let formatter = serde_saphyr::UserMessageFormatter;
            let rendered = e.render_with_options(serde_saphyr::render_options! {
                formatter: &formatter,
                snippets: serde_saphyr::SnippetMode::Off,
            });
            // The location goes in front, like every other problem's.
            let message = match e.location() {
                Some(l) => {
                    let suffix = format!(" at line {}, column {}", l.line(), l.column());
                    let m = rendered.strip_suffix(&suffix).unwrap_or(&rendered);
                    format!("column {}: {m}", l.column())
                }
                None => rendered,
            };
            return Err(ConfigError {
                problems: vec![Problem {
                    line,
                    message: redact(&message),
                }],
            });
        }
    };
    let mut problems = Vec::new();
    let mut report = |line: usize, message: String| {
        problems.push(Problem {
            line: (line > 0).then_some(line),
            message,
        })
    };

    let mut addr = |field: &str, v: Option<Spanned<String>>| -> Option<SocketAddr> {
        let v = v?;
        match v.value.trim().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                report(
                    v.referenced.line() as usize,
                    format!(
                        "{field}: {:?} is not an address like 127.0.0.1:8080",
                        v.value
                    ),
                );
                None
            }
        }
    };
    let listen = addr("listen", raw.listen);
    let admin = addr("admin", raw.admin);

    let mut records = Vec::new();
    let mut upstream_lines: HashMap<String, usize> = HashMap::new();
    for (i, spanned) in raw.upstreams.into_iter().enumerate() {
        let line = spanned.referenced.line() as usize;
        let u = spanned.value;
        let at = format!("upstreams[{i}] ({})", u.name);
        if u.name.is_empty()
            || !u
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            || u.name.starts_with('.')
        {
            report(
                line,
                format!(
                    "{at}: name must be a non-empty path segment of letters, digits, '-', '_' or '.' (clients use it as /<name>/…)"
                ),
            );
            continue;
        }
        if let Some(first) = upstream_lines.get(&u.name) {
            report(
                line,
                format!(
                    "{at}: the name {:?} is already used on line {first}",
                    u.name
                ),
            );
            continue;
        }
        upstream_lines.insert(u.name.clone(), line);
        let base_url = match u
            .base_url
            .clone()
            .or_else(|| u.provider.default_base_url().map(str::to_owned))
        {
            Some(b) => b,
            None => {
                report(
                    line,
                    format!("{at}: baseUrl is required for provider {}", u.provider),
                );
                continue;
            }
        };
        let key = match (&u.api_key, &u.api_key_env, &u.api_key_file) {
            (Some(k), None, None) => Ok(k.clone()),
            (None, Some(var), None) => {
                env.var(var)
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| {
                        format!("apiKeyEnv: the environment variable {var} is not set or empty")
                    })
            }
            (None, None, Some(path)) => env
                .read_file(Path::new(path))
                .map_err(|e| format!("apiKeyFile: cannot read {path:?}: {e}")),
            (None, None, None) => Err("set one of apiKey, apiKeyEnv or apiKeyFile".to_owned()),
            _ => Err("set only one of apiKey, apiKeyEnv and apiKeyFile".to_owned()),
        };
        let key = match key {
            Ok(k) => ApiKey::new(k),
            Err(e) => {
                report(line, format!("{at}: {e}"));
                continue;
            }
        };
        let record = UpstreamRecord {
            name: u.name.clone(),
            provider: u.provider,
            base_url,
            headers: u.headers,
            endpoints: u.endpoints,
            source: None,
            budget: None,
        };
        // Validate now (URL, key characters, headers) so the error carries a line.
        if let Err(e) = Upstream::new(&record, &key) {
            report(
                line,
                format!(
                    "upstreams[{i}] {}",
                    redact(&e.to_string()).trim_start_matches("upstream ")
                ),
            );
            continue;
        }
        records.push((
            format!("upstream/{}", u.name),
            Record::Upstream {
                record,
                api_key: key,
            },
        ));
    }

    let mut names: HashMap<String, usize> = HashMap::new();
    let mut hashes: HashMap<[u8; 32], usize> = HashMap::new();
    for (i, spanned) in raw.tokens.into_iter().enumerate() {
        let line = spanned.referenced.line() as usize;
        let t = spanned.value;
        let at = format!("tokens[{i}] ({})", t.name);
        let mut ok = true;
        let mut bad = |m: String| {
            report(line, format!("{at}: {m}"));
            ok = false;
        };
        if t.name.trim().is_empty() {
            bad("name is empty".into());
        } else if let Some(first) = names.get(&t.name) {
            bad(format!("the name is already used on line {first}"));
        }
        if t.identity.trim().is_empty() {
            bad("identity is empty".into());
        }
        if let Some(first) = hashes.get(&t.sha256.0) {
            bad(format!(
                "sha256 is the same as the token's on line {first}: mint a token per identity"
            ));
        }
        if t.upstreams.is_empty() {
            bad("upstreams is empty: a token needs at least one".into());
        }
        if t.upstreams.len() > crate::index::MAX_TOKEN_UPSTREAMS {
            bad(format!(
                "at most {} upstreams per token",
                crate::index::MAX_TOKEN_UPSTREAMS
            ));
        }
        let mut seen = HashSet::new();
        for u in &t.upstreams {
            if !upstream_lines.contains_key(u) {
                let mut defined: Vec<&str> = upstream_lines.keys().map(String::as_str).collect();
                defined.sort_unstable();
                bad(format!(
                    "upstream {u:?} is not defined under upstreams (defined: {})",
                    if defined.is_empty() {
                        "none".to_owned()
                    } else {
                        defined.join(", ")
                    }
                ));
            }
            if !seen.insert(u) {
                bad(format!("upstream {u:?} is listed twice"));
            }
        }
        if t.allowed_models.iter().any(|m| m.trim().is_empty()) {
            bad("allowedModels contains an empty pattern".into());
        }
        for e in t.endpoints.iter().filter_map(|a| Allowance::new(a).err()) {
            bad(e);
        }
        if let Some(l) = &t.limits
            && (l.requests_per_minute == Some(0) || l.tokens_per_minute == Some(0))
        {
            bad("limits must be at least 1 (leave a limit out for none)".into());
        }
        names.entry(t.name.clone()).or_insert(line);
        hashes.entry(t.sha256.0).or_insert(line);
        if ok {
            records.push((format!("token/{}", t.name), Record::Token(t)));
        }
    }

    let price_lines: Vec<usize> = raw
        .prices
        .iter()
        .map(|p| p.referenced.line() as usize)
        .collect();
    let prices: Vec<PriceRow> = raw.prices.into_iter().map(|p| p.value).collect();
    if let Err(e) = PriceTable::with_overrides(prices.clone()) {
        let line = match &e {
            PriceError::Row { index, .. } => price_lines.get(*index).copied().unwrap_or(0),
            PriceError::Parse(_) => 0,
        };
        report(line, e.to_string());
    }

    if problems.is_empty() {
        Ok(FileConfig {
            listen,
            admin,
            records,
            prices,
        })
    } else {
        Err(ConfigError { problems })
    }
}

/// serde-saphyr's default budget (250,000 nodes) stops near 25,000 tokens.
/// The file is the operator's own, so the limits only need to stop runaway
/// documents: room for a million tokens, alias expansion still bounded.
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = 20_000_000;
    budget.max_events = 40_000_000;
    budget.max_total_scalar_bytes = 512 * 1024 * 1024;
    budget.max_reader_input_bytes = Some(512 * 1024 * 1024);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Masks anything shaped like an API key or token (`sk-…`, `sk-strk-…`) in
/// a message that may quote config text.
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("sk-") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let run = tail
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            .count();
        if run >= 12 {
            out.push_str("sk-…");
        } else {
            out.push_str(&tail[..run.max(3)]);
        }
        rest = &tail[run.max(3)..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct FakeEnv(HashMap<&'static str, &'static str>);

    impl Environment for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }

        fn read_file(&self, path: &Path) -> std::io::Result<String> {
            self.0
                .get(path.to_str().unwrap())
                .map(|v| v.to_string())
                .ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory")
                })
        }
    }

    fn env() -> FakeEnv {
        FakeEnv(HashMap::from([
            ("OPENAI_API_KEY", "sk-openai-real"),
            ("keys/anthropic", "sk-ant-real\n"),
        ]))
    }

    const H1: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const H2: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

    fn good() -> String {
        format!(
            r#"listen: 127.0.0.1:8080
admin: 127.0.0.1:9090
upstreams:
  - name: openai
    provider: openai
    apiKeyEnv: OPENAI_API_KEY
  - name: claude
    provider: anthropic
    baseUrl: http://127.0.0.1:1234/anthropic
    headers: {{anthropic-beta: tools}}
    apiKeyFile: keys/anthropic
  - name: local
    provider: openai-compatible
    baseUrl: http://127.0.0.1:11434
    apiKey: ollama
tokens:
  - name: alice
    identity: alice@example.com
    sha256: {H1}
    upstreams: [openai, claude]
    expiresAt: "2027-03-01T00:00:00Z"
    allowedModels: ["gpt-4o*", "claude-*"]
    limits: {{requestsPerMinute: 60, tokensPerMinute: 200000}}
  - name: ci
    identity: ci/payments
    sha256: {H2}
    upstreams: [local]
    suspended: true
"#
        )
    }

    fn problems(text: &str) -> Vec<String> {
        parse(text, &env())
            .unwrap_err()
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn the_documented_shape_parses() {
        let c = parse(&good(), &env()).unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.admin, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(c.records.len(), 5);
        let Record::Upstream { record, api_key } = &c.records[0].1 else {
            panic!()
        };
        assert_eq!(c.records[0].0, "upstream/openai");
        assert_eq!(record.base_url, "https://api.openai.com");
        assert_eq!(api_key.expose(), "sk-openai-real");
        let Record::Upstream { api_key, record } = &c.records[1].1 else {
            panic!()
        };
        assert_eq!(api_key.expose(), "sk-ant-real", "trailing newline trimmed");
        assert_eq!(record.headers["anthropic-beta"], "tools");
        let Record::Token(alice) = &c.records[3].1 else {
            panic!()
        };
        assert_eq!(c.records[3].0, "token/alice");
        assert_eq!(alice.upstreams, ["openai", "claude"]);
        assert_eq!(alice.limits.unwrap().tokens_per_minute, Some(200000));
        let Record::Token(ci) = &c.records[4].1 else {
            panic!()
        };
        assert!(ci.suspended);
    }

    #[test]
    fn an_explicitly_empty_config_is_valid_but_an_empty_file_is_not() {
        let c = parse("upstreams: []\ntokens: []\n", &env()).unwrap();
        assert!(c.records.is_empty());
        assert_eq!(c.listen, None);
        for empty in ["", "\n  \n", "# nothing yet\n---\n"] {
            assert!(problems(empty)[0].contains("the file is empty"));
        }
    }

    #[test]
    fn yaml_errors_carry_a_line() {
        let p = parse("upstreams:\n  - name: [\n", &env()).unwrap_err();
        assert!(p.problems[0].line.is_some(), "{p}");
        let p = problems(
            "upstreams:\n  - name: openai\n    provider: openai\n    apiKey: x\n    typo: 1\n",
        );
        assert!(p[0].contains("typo") && p[0].starts_with("line "), "{p:?}");
        let p = problems("upstreams:\n  - name: x\n    provider: OpenAI\n    apiKey: x\n");
        assert!(p[0].contains("OpenAI") && p[0].contains("line 3"), "{p:?}");
        let p = problems(&good().replace(H1, "sk-strk-thisisnotahashatallbutatoken0000000000000"));
        assert!(p[0].contains("64 lowercase hex"), "{p:?}");
        assert!(
            !p[0].contains("thisisnotahash"),
            "never echo what may be a token: {p:?}"
        );
        let p = problems(&good().replace("\"2027-03-01T00:00:00Z\"", "tomorrow"));
        assert!(p[0].starts_with("line "), "{p:?}");
    }

    #[test]
    fn semantic_errors_are_all_reported_with_lines() {
        let text = good()
            .replace("apiKeyEnv: OPENAI_API_KEY", "apiKeyEnv: MISSING_VAR")
            .replace("upstreams: [local]", "upstreams: [local, nope]")
            .replace(H2, H1);
        let p = problems(&text);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(
            p[0].contains("line 4") && p[0].contains("MISSING_VAR is not set"),
            "{p:?}"
        );
        // openai is defined, if broken: alice's reference to it is not a second problem.
        assert!(!p.iter().any(|m| m.contains("alice")));
        assert!(p.iter().any(|m| m.starts_with("line 24: tokens[1] (ci)")
            && m.contains(
                "\"nope\" is not defined under upstreams (defined: claude, local, openai)"
            )));
        assert!(
            p.iter()
                .any(|m| m.contains("tokens[1] (ci)")
                    && m.contains("same as the token's on line 17"))
        );
    }

    #[test]
    fn upstream_problems() {
        let base = "upstreams:\n  - name: a\n    provider: azure-openai\n    apiKey: k\n";
        assert!(problems(base)[0].contains("baseUrl is required for provider azure-openai"));
        let p = problems("upstreams:\n  - name: a/b\n    provider: openai\n    apiKey: k\n");
        assert!(p[0].contains("path segment"), "{p:?}");
        let p = problems("upstreams:\n  - name: a\n    provider: openai\n");
        assert!(p[0].contains("set one of apiKey"), "{p:?}");
        let p = problems(
            "upstreams:\n  - name: a\n    provider: openai\n    apiKey: k\n    apiKeyEnv: OPENAI_API_KEY\n",
        );
        assert!(p[0].contains("only one"), "{p:?}");
        let p =
            problems("upstreams:\n  - name: a\n    provider: openai\n    apiKeyFile: missing\n");
        assert!(p[0].contains("cannot read \"missing\""), "{p:?}");
        let p = problems(
            "upstreams:\n  - name: a\n    provider: openai\n    apiKey: k\n  - name: a\n    provider: gemini\n    apiKey: k\n",
        );
        assert!(
            p[0].contains("line 5") && p[0].contains("already used on line 2"),
            "{p:?}"
        );
        let p = problems(
            "upstreams:\n  - name: a\n    provider: openai\n    baseUrl: api.openai.com\n    apiKey: sk-abcdefghijklmnopqrstuvwxyz\n",
        );
        assert!(
            p[0].contains("baseUrl") && p[0].contains("upstreams[0]"),
            "{p:?}"
        );
        let p = problems(
            "upstreams:\n  - name: a\n    provider: openai\n    headers: {Authorization: x}\n    apiKey: k\n",
        );
        assert!(p[0].contains("set by the proxy"), "{p:?}");
        // The list the operator admits UpstreamKeys by: hop-by-hop headers
        // too, which the rewrite would otherwise add back after dropping.
        for reserved in ["Proxy-Connection", "Accept-Encoding", "Content-Type"] {
            let p = problems(&format!(
                "upstreams:\n  - name: a\n    provider: openai\n    headers: {{{reserved}: x}}\n    apiKey: k\n"
            ));
            assert!(p[0].contains("set by the proxy"), "{reserved}: {p:?}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("u{i}")).collect();
        let text = format!(
            "upstreams:\n{}tokens:\n  - {{name: a, identity: a, sha256: {H1}, upstreams: [{}]}}\n",
            many.iter()
                .map(|u| format!("  - {{name: {u}, provider: openai, apiKey: k}}\n"))
                .collect::<String>(),
            many.join(", ")
        );
        assert!(problems(&text)[0].contains("at most 16 upstreams"));
        let p = problems("listen: localhost\n");
        assert!(p[0].contains("listen") && p[0].contains("line 1"), "{p:?}");
    }

    #[test]
    fn endpoint_allowances_parse_and_bad_ones_are_reported() {
        let text = good()
            .replace(
                "    apiKey: ollama\n",
                "    apiKey: ollama\n    endpoints: [{methods: [GET], path: /v1/files}]\n",
            )
            .replace(
                "    suspended: true\n",
                "    suspended: true\n    endpoints: [{methods: [GET, DELETE], path: \"/v1/files/*\"}]\n",
            );
        let c = parse(&text, &env()).unwrap();
        let Record::Upstream { record, .. } = &c.records[2].1 else {
            panic!()
        };
        assert_eq!(record.endpoints[0].path, "/v1/files");
        let Record::Token(ci) = &c.records[4].1 else {
            panic!()
        };
        assert_eq!(ci.endpoints[0].methods.len(), 2);
        let p = problems(&text.replace("path: /v1/files}", "path: v1/files}"));
        assert!(
            p[0].contains("upstreams[2]") && p[0].contains("must start with '/'"),
            "{p:?}"
        );
        let p = problems(&text.replace("[GET, DELETE]", "[]"));
        assert!(
            p[0].contains("tokens[1] (ci)") && p[0].contains("no methods"),
            "{p:?}"
        );
        let p = problems(&text.replace("[GET, DELETE]", "[TRACE]"));
        assert!(p[0].contains("TRACE"), "{p:?}");
    }

    #[test]
    fn key_values_never_appear_in_errors() {
        let text = "upstreams:\n  - name: a\n    provider: openai\n    baseUrl: nope\n    apiKey: sk-proj-supersecretvalue123\n  - {name: b, provider: openai, apiKey: \"sk-proj-supersecretvalue123\", typo: x}\n";
        for p in problems(text) {
            assert!(!p.contains("supersecret"), "{p}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("key sk-proj-abcdefghijklmn here"), "key sk-… here");
        assert_eq!(redact("sk-short"), "sk-short");
        assert_eq!(redact("ask-me sk-"), "ask-me sk-");
        assert_eq!(redact("xsk-strk-AAAAAAAAAAAAAAAA"), "xsk-…");
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
            let _ = parse(&text, &env());
        }

        #[test]
        fn never_panics_on_yaml_like_text(text in "[a-zA-Z:\\-\\[\\]{}, \\n\"']{0,200}") {
            let _ = parse(&text, &env());
        }

        #[test]
        fn never_panics_on_mutated_good_config(pos in 0usize..900, byte in any::<u8>()) {
            let mut bytes = good().into_bytes();
            let pos = pos % bytes.len();
            bytes[pos] = byte;
            if let Ok(text) = String::from_utf8(bytes) {
                let _ = parse(&text, &env());
            }
        }
    }
}
