//! The official OpenAI and Anthropic Python SDKs, streaming included, with
//! nothing but the env keys of a token's Secret (as `envFrom` would set
//! them): e2e/sdk/test_e2e_sdks.py, run by pytest from the venv that
//! e2e/deps.sh builds.

use std::process::Stdio;

use anyhow::{Context, Result, ensure};
use strake_e2e::Stack;
use strake_e2e::env::{python, repo_root};

#[tokio::test]
async fn official_sdks_work_with_the_secrets_env() -> Result<()> {
    let stack = Stack::connect().await?;
    let ns = stack.namespace("sdks").await?;
    ns.default_upstreams().await?;
    let sdk = ns
        .issue(
            "sdk",
            "identity: sdk@example.com\nupstreams: [openai, anthropic]",
        )
        .await?;
    stack.chat_until(&sdk, &ns.marker("warm-up"), 200).await?;

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
        // Only the Secret's keys, and what the test needs to read the mock's recording.
        .env_clear()
        .envs(sdk.vars())
        .env("HOME", std::env::temp_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("E2E_MARKER", ns.marker("sdk"))
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
