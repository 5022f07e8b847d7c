//! `strake-mock-upstream`: the simulated LLM provider as a standalone server.
//!
//! Prints `listening on http://ADDR` on stdout once it accepts connections,
//! then serves until SIGINT/SIGTERM. See the library docs for endpoints and
//! knobs.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use strake_mock_upstream::{Behavior, Keys, MockConfig, MockUpstream};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Simulated OpenAI / Azure OpenAI / Anthropic / Gemini upstream"
)]
struct Args {
    /// Address to listen on (HTTP/1.1 and h2c).
    #[arg(long, env = "STRAKE_MOCK_LISTEN", default_value = "127.0.0.1:18080")]
    listen: SocketAddr,

    // Env values are hidden from --help: they are real keys.
    /// Key accepted by every provider (in addition to the per-provider ones).
    #[arg(
        long,
        env = "STRAKE_MOCK_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    key: Vec<String>,
    /// Key accepted as `Authorization: Bearer` on OpenAI endpoints (repeatable).
    #[arg(
        long,
        env = "STRAKE_MOCK_OPENAI_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    openai_key: Vec<String>,
    /// Key accepted as `x-api-key` or Bearer on Anthropic endpoints (repeatable).
    #[arg(
        long,
        env = "STRAKE_MOCK_ANTHROPIC_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    anthropic_key: Vec<String>,
    /// Key accepted as `api-key` on Azure OpenAI endpoints (repeatable).
    #[arg(
        long,
        env = "STRAKE_MOCK_AZURE_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    azure_key: Vec<String>,
    /// Key accepted as `x-goog-api-key` / `?key=` on Gemini endpoints (repeatable).
    #[arg(
        long,
        env = "STRAKE_MOCK_GEMINI_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    gemini_key: Vec<String>,

    /// Content chunks per streamed reply (header `x-mock-chunks`).
    #[arg(long, default_value_t = Behavior::default().stream_chunks)]
    stream_chunks: usize,
    /// Milliseconds between streamed content chunks (header `x-mock-interval-ms`).
    #[arg(long, default_value_t = 0)]
    stream_interval_ms: u64,
    /// Milliseconds a stream stays open after its last event (header `x-mock-linger-ms`).
    #[arg(long, default_value_t = 0)]
    stream_linger_ms: u64,
    /// Words (= output tokens) per reply; default one per stream chunk (header `x-mock-words`).
    #[arg(long)]
    words: Option<usize>,
    /// Milliseconds to wait before every response (header `x-mock-delay-ms`).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Answer every request with this error status (header `x-mock-status`).
    #[arg(long)]
    status: Option<u16>,
    /// Cut every response after this many content chunks (header `x-mock-drop`).
    #[arg(long)]
    drop: Option<usize>,
    /// Report every cacheable prompt as a prompt-cache hit (header `x-mock-cache: hit`).
    #[arg(long)]
    cache_hit: bool,

    /// Don't record requests (for benchmarks).
    #[arg(long = "no-record", visible_alias = "bench")]
    no_record: bool,
    /// Bytes of each request body kept in the recording.
    #[arg(long, default_value_t = MockConfig::default().record_body_limit)]
    record_body_limit: usize,
    /// Recorded requests kept (oldest dropped first).
    #[arg(long, default_value_t = MockConfig::default().record_limit)]
    record_limit: usize,
    /// Log one line per request to stderr (never header values or queries).
    #[arg(long, short)]
    verbose: bool,
    /// Runtime worker threads (default: one per core). In a benchmark on a
    /// small machine, 1 leaves the other cores to the proxy under test.
    #[arg(long, env = "STRAKE_MOCK_THREADS")]
    threads: Option<usize>,
}

impl Args {
    fn config(self) -> anyhow::Result<MockConfig> {
        if let Some(status) = self.status {
            anyhow::ensure!(
                (400..=599).contains(&status),
                "--status must be a 4xx or 5xx code"
            );
        }
        let with_common = |mut keys: Vec<String>| {
            keys.extend(self.key.iter().cloned());
            keys.retain(|k| !k.is_empty());
            keys
        };
        Ok(MockConfig {
            listen: self.listen,
            keys: Keys {
                openai: with_common(self.openai_key),
                anthropic: with_common(self.anthropic_key),
                azure: with_common(self.azure_key),
                gemini: with_common(self.gemini_key),
            },
            defaults: Behavior {
                stream_chunks: self.stream_chunks,
                stream_interval: Duration::from_millis(self.stream_interval_ms),
                stream_linger: Duration::from_millis(self.stream_linger_ms),
                words: self.words,
                delay: Duration::from_millis(self.delay_ms),
                status: self.status,
                drop_after: self.drop,
                cache_hit: self.cache_hit,
            },
            record: !self.no_record,
            record_body_limit: self.record_body_limit,
            record_limit: self.record_limit,
            verbose: self.verbose,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        anyhow::ensure!(threads > 0, "--threads must be at least 1");
        runtime.worker_threads(threads);
    }
    runtime.enable_all().build()?.block_on(run(args.config()?))
}

async fn run(config: MockConfig) -> anyhow::Result<()> {
    let listen = config.listen;
    let mock = MockUpstream::start(config)
        .await
        .with_context(|| format!("binding {listen}"))?;
    // Scripts wait for this exact line before sending traffic.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", mock.url())?;
    stdout.flush()?;
    drop(stdout);

    shutdown_signal().await?;
    mock.shutdown().await;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
