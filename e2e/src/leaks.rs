//! The run's secrets, and the scan that proves none of them reached a log.
//!
//! Tests [`remember`] every token they read from a Secret and every upstream
//! key they create; the `no_leaks` test, run last, searches every log of the
//! stack and of the test runs for each of them (verbatim and base64-encoded,
//! as a Secret's data would be) and for any well-formed Strake token at all.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;
use strake_crds::token;

use crate::DevEnv;

/// Where the run keeps its secrets (mode 0600, truncated by run-e2e.sh).
pub fn secrets_file(env: &DevEnv) -> PathBuf {
    env.dir.join("e2e/secrets")
}

/// Remembers a secret the run handled, as `KIND VALUE` on a line of its own.
pub fn remember(env: &DevEnv, kind: &str, value: &str) -> Result<()> {
    let path = secrets_file(env);
    std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // One write per line: concurrent tests append whole lines.
    file.write_all(format!("{kind} {value}\n").as_bytes())?;
    Ok(())
}

/// Everything remembered so far, plus the stack's own upstream keys.
pub fn secrets(env: &DevEnv) -> Result<BTreeSet<(String, String)>> {
    let mut all: BTreeSet<(String, String)> = [
        &env.mock_keys.openai,
        &env.mock_keys.anthropic,
        &env.mock_keys.azure,
        &env.mock_keys.gemini,
    ]
    .into_iter()
    .map(|k| ("upstream-key".to_string(), k.clone()))
    .collect();
    let path = secrets_file(env);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    for line in text.lines() {
        if let Some((kind, value)) = line.split_once(' ') {
            all.insert((kind.to_string(), value.to_string()));
        }
    }
    Ok(all)
}

/// The logs of every process of the stack (operator, proxy, mock, etcd,
/// kube-apiserver, kube-controller-manager) and of the test runs.
pub fn log_files(env: &DevEnv) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dir in [
        env.dir.join("logs"),
        env.cluster_dir.join("logs"),
        env.dir.join("e2e"),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "log") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// One secret found in a log. `what` describes it without showing it.
#[derive(Debug, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub what: String,
}

/// Searches `text` (the content of `file`) for each secret and for any
/// well-formed Strake token. (`str::find` is std's optimised substring
/// search, fast even in this unoptimised test crate.)
pub fn scan(file: &Path, text: &str, secrets: &BTreeSet<(String, String)>) -> Vec<Finding> {
    let line_of = |at: usize| 1 + text[..at].bytes().filter(|&b| b == b'\n').count();
    let mut findings = Vec::new();
    for (kind, value) in secrets {
        let shown = format!("{kind} {}…", &value[..value.len().min(12)]);
        for (form, needle) in encodings(value) {
            if let Some(at) = text.find(&needle) {
                findings.push(Finding {
                    file: file.to_path_buf(),
                    line: line_of(at),
                    what: format!("{shown} ({form})"),
                });
            }
        }
    }
    for (at, _) in text.match_indices(token::PREFIX) {
        let Some(candidate) = text.get(at..at + token::TOKEN_LEN) else {
            continue;
        };
        if token::check(candidate).is_ok() {
            findings.push(Finding {
                file: file.to_path_buf(),
                line: line_of(at),
                what: format!(
                    "a well-formed Strake token {}…",
                    &candidate[..token::DISPLAY_PREFIX_LEN]
                ),
            });
        }
    }
    findings
}

/// The forms a secret takes in text: verbatim, and base64 at each of the
/// three byte alignments it can have inside a longer encoded value (only the
/// characters that depend on the secret alone are kept).
fn encodings(value: &str) -> Vec<(&'static str, String)> {
    let mut forms = vec![("verbatim", value.to_string())];
    for offset in 0..3 {
        let mut bytes = vec![0u8; offset];
        bytes.extend_from_slice(value.as_bytes());
        let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let encoded = encoded.trim_end_matches('=');
        let skip_front = [0, 2, 3][offset];
        let skip_back = usize::from(bytes.len() % 3 != 0);
        if encoded.len() > skip_front + skip_back + 8 {
            forms.push((
                "base64",
                encoded[skip_front..encoded.len() - skip_back].to_string(),
            ));
        }
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_secret_verbatim_and_inside_base64_at_any_alignment() {
        let key = "sk-upstream-test-0123456789";
        let secrets = BTreeSet::from([("upstream-key".to_string(), key.to_string())]);
        for prefix in ["", "x", "xy", "xyz"] {
            let text = format!(
                "line one\n{}\n",
                base64::engine::general_purpose::STANDARD.encode(format!("{prefix}{key}\"}}"))
            );
            let found = scan(Path::new("f.log"), &text, &secrets);
            assert_eq!(found.len(), 1, "prefix {prefix:?}: {found:?}");
            assert_eq!(found[0].line, 2);
            assert!(!found[0].what.contains(key));
        }
        let text = format!("a\nb {key} c\n");
        let found = scan(Path::new("f.log"), &text, &secrets);
        assert_eq!(found[0].line, 2);
        assert!(scan(Path::new("f.log"), "nothing here", &secrets).is_empty());
    }

    #[test]
    fn finds_any_well_formed_token_but_not_a_prefix() {
        let t = token::Token::mint();
        let text = format!(
            "status tokenPrefix={}\nleak {}\n",
            t.display_prefix(),
            t.expose()
        );
        let found = scan(Path::new("f.log"), &text, &BTreeSet::new());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, 2);
        assert!(!found[0].what.contains(t.expose()));
    }
}
