//! The result files: one JSON object per measurement, tagged by `kind`.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::histogram::Latency;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Load(LoadResult),
    Stream(StreamResult),
    Startup(StartupResult),
    Revocation(RevocationResult),
    OperatorScale(OperatorScaleResult),
    /// The operator's usage status writes with many active tokens.
    UsageWrites(UsageWritesResult),
    /// Instructions per request under callgrind.
    Profile(ProfileResult),
    /// What a budgeted StrakeToken's status counted after its load.
    BudgetSpend(BudgetSpendResult),
    /// Something that could not be measured, and why (shown in the report).
    Skipped(Skipped),
    /// The machine and software versions, as `run.sh` found them.
    Machine(Machine),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub target: String,
    pub experiment: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadResult {
    #[serde(flatten)]
    pub meta: Meta,
    /// Requests per second asked for; `None` for a closed-loop (saturation) run.
    pub rate: Option<f64>,
    pub connections: usize,
    pub duration_s: f64,
    /// Requests in the measured window (after warm-up).
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    /// (status code, count) in the measured window; 0 = transport error or
    /// timeout. Pairs, not a map: JSON object keys would be strings.
    pub statuses: Vec<(u16, u64)>,
    pub achieved_rps: f64,
    /// From the moment the pacer released a request to the last response byte.
    pub latency: Latency,
    /// How late the pacer released requests against the schedule (open loop).
    pub pacer_lag: Option<Latency>,
    /// The server under test: CPU time per request and peak memory.
    pub server: Option<ServerUsage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerUsage {
    /// user + system CPU of the server's processes during the measured window,
    /// divided by the requests in it.
    pub cpu_us_per_request: f64,
    /// Resident memory at the end of the run, summed over the process tree.
    pub rss_kib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamResult {
    #[serde(flatten)]
    pub meta: Meta,
    pub streams: u64,
    pub concurrency: usize,
    pub errors: u64,
    /// Events (SSE `\n\n`-terminated blocks) per stream, as received.
    pub events_per_stream: f64,
    /// Request sent -> first body byte.
    pub ttfb: Latency,
    /// Between consecutive events of a stream.
    pub gap: Latency,
    /// Request sent -> last byte.
    pub total: Latency,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartupResult {
    #[serde(flatten)]
    pub meta: Meta,
    /// Process spawned -> readiness URL answered 200.
    pub ready_ms: f64,
    pub rss_kib: u64,
    /// The high-water mark so far (loading a big config may peak above the steady state).
    #[serde(default)]
    pub peak_rss_kib: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevocationResult {
    #[serde(flatten)]
    pub meta: Meta,
    /// Per trial: delete issued -> first 401, in milliseconds.
    pub trials_ms: Vec<f64>,
    /// Per trial: the token's first 200 after it was created (create -> usable).
    pub issue_ms: Vec<f64>,
    pub poll_interval_ms: f64,
    pub failures: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageWritesResult {
    #[serde(flatten)]
    pub meta: Meta,
    /// Active StrakeTokens, every one with new usage at every collection.
    pub tokens: usize,
    /// The counted window.
    pub duration_s: f64,
    /// Status updates that changed `status.usage`, seen through a watch.
    pub writes: u64,
    pub writes_per_s: f64,
    /// The operator's `--usage-writes-per-second`.
    pub bound_per_s: f64,
    /// Distinct tokens written in the window.
    pub tokens_refreshed: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorScaleResult {
    #[serde(flatten)]
    pub meta: Meta,
    pub tokens: usize,
    /// Creates in flight at once.
    pub concurrency: usize,
    /// First create sent -> every token Ready.
    pub all_ready_s: f64,
    /// Time for the creates themselves (API server bound).
    pub create_s: f64,
    pub ready: usize,
    pub operator_rss_kib: Option<u64>,
    pub operator_rss_before_kib: Option<u64>,
    /// Delete -> 401 at the proxy of tokens revoked during the storm, ms.
    pub revocation_ms: Vec<f64>,
    /// API server requests during the storm (every client: the bench's
    /// creates, the operator, the proxies), per token created.
    pub api_calls: Vec<ApiCalls>,
    /// The machine's 1-minute load average when the last token was Ready:
    /// the control plane shares the cores with everything else.
    pub load_average: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiCalls {
    pub verb: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub per_token: f64,
}

impl ApiCalls {
    pub fn is_write(&self) -> bool {
        !matches!(self.verb.as_str(), "GET" | "LIST")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileResult {
    #[serde(flatten)]
    pub meta: Meta,
    pub requests: u64,
    /// User-space instructions executed while serving `requests`.
    pub instructions: u64,
    pub per_request: f64,
    /// (% of all instructions, function) by instructions in the function itself.
    pub top_self: Vec<(f64, String)>,
    /// (% of all instructions, function) including callees, for the server's own functions.
    pub top_own_inclusive: Vec<(f64, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BudgetSpendResult {
    #[serde(flatten)]
    pub meta: Meta,
    /// `spec.budget`: its period (day, week, month) and USD limit.
    pub period: String,
    pub limit_usd: String,
    /// `status.budget`: the current period's name and what it spent.
    pub status_period: String,
    pub spent_usd: String,
    /// `status.usage.lifetime.requests`: the requests the operator collected.
    pub requests: u64,
    /// `status.phase` after the load (Active unless the budget was spent).
    pub phase: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    #[serde(flatten)]
    pub meta: Meta,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// (what, value) in display order.
    pub items: Vec<(String, String)>,
}

pub fn write(path: &Path, record: &Record) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(record)?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

/// Every `*.json` record in `dir`, in file-name order.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<Record>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read(p)?;
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", p.display()))
        })
        .collect()
}
