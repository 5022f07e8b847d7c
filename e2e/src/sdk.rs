//! The official OpenAI and Anthropic Python SDKs, driven by
//! e2e/sdk/test_e2e_sdks.py under pytest from the venv that e2e/deps.sh
//! builds, with nothing but a holder's environment.

use std::collections::BTreeMap;
use std::process::Stdio;

use anyhow::{Context, Result, ensure};

use crate::Stack;
use crate::env::{python, repo_root};

/// Runs the SDK suite with `vars` as the whole environment (plus what the
/// suite needs to read the mock's recording). `vars` must hold `token`,
/// the credential the SDKs send.
pub async fn run_suite(stack: &Stack, vars: &BTreeMap<String, String>, marker: &str) -> Result<()> {
    let python = python()?;
    let out = tokio::process::Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "e2e/sdk/test_e2e_sdks.py",
        ])
        .current_dir(repo_root())
        .env_clear()
        .envs(vars)
        .env("HOME", std::env::temp_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("E2E_MARKER", marker)
        .env("MOCK_UPSTREAM_URL", &stack.env.mock_url)
        .env("MOCK_OPENAI_KEY", &stack.env.mock_keys.openai)
        .env("MOCK_ANTHROPIC_KEY", &stack.env.mock_keys.anthropic)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running pytest")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{}", stdout.trim_end());
    ensure!(
        out.status.success(),
        "pytest failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
