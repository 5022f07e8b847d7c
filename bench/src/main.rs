//! `strake-bench`: the tools behind `bench/run.sh`.
//!
//! Each subcommand measures one thing and writes one JSON result; `report`
//! turns a directory of results into the markdown table of
//! `docs/benchmarks.md`. The shell script owns the processes (servers,
//! pinning, timeouts); this binary owns the clocks.

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod callgrind;
mod conn;
mod control;
mod histogram;
mod kube_features;
mod load;
mod proc;
mod report;
mod results;
mod stream;
mod tokens;
mod usage_writes;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(version, about = "Strake benchmark tools (driven by bench/run.sh)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Open-loop constant-rate load (or closed-loop saturation) against one URL.
    Load(load::Args),
    /// Streamed completions: time to first byte and the gaps between events.
    Stream(stream::Args),
    /// A file-mode proxy config with N minted tokens, and a sample of them.
    Tokens(tokens::Args),
    /// Starts a command and times it until an HTTP URL answers 200.
    Startup(proc::StartupArgs),
    /// Revocation latency on a live control plane: delete a StrakeToken, poll
    /// the proxy until it answers 401.
    Revocation(control::RevocationArgs),
    /// Time for the operator to bring N StrakeTokens to Ready.
    OperatorScale(control::OperatorScaleArgs),
    /// The operator's usage status writes per second with N active tokens.
    UsageWrites(usage_writes::Args),
    /// The kube-mode feature rows' StrakeTokens (minted, budgeted, keyless):
    /// issued to a kube-mode proxy, and the budget's spend read back.
    KubeFeatures(kube_features::Args),
    /// Instructions per request and top functions from a callgrind dump.
    Callgrind(callgrind::Args),
    /// Writes the markdown report from a directory of JSON results.
    Report(report::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Load(args) => load::run(args),
        Command::Stream(args) => stream::run(args),
        Command::Tokens(args) => tokens::run(args),
        Command::Startup(args) => proc::startup(args),
        Command::Revocation(args) => control::revocation(args),
        Command::OperatorScale(args) => control::operator_scale(args),
        Command::UsageWrites(args) => usage_writes::run(args),
        Command::KubeFeatures(args) => kube_features::run(args),
        Command::Callgrind(args) => callgrind::run(args),
        Command::Report(args) => report::run(args),
    }
}

/// Where a subcommand writes its result, and what it is called in the report.
#[derive(clap::Args, Debug, Clone)]
pub struct Output {
    /// JSON result file.
    #[arg(long)]
    out: PathBuf,
    /// What was measured (direct, nginx, strake, litellm, ...).
    #[arg(long)]
    target: String,
    /// Which experiment this result belongs to (overhead, saturation, scale-10000, ...).
    #[arg(long)]
    experiment: String,
}
