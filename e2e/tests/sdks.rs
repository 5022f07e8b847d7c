//! The official OpenAI and Anthropic Python SDKs, streaming included, with
//! nothing but the env keys of a token's Secret (as `envFrom` would set
//! them): e2e/sdk/test_e2e_sdks.py, run by pytest from the venv that
//! e2e/deps.sh builds.

use anyhow::Result;
use strake_e2e::Stack;

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
    strake_e2e::sdk::run_suite(&stack, sdk.vars(), &ns.marker("sdk")).await
}
