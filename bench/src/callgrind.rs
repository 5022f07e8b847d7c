//! Reads a callgrind dump (written with `--compress-strings=no
//! --compress-pos=no`) taken over a known number of requests: instructions
//! per request, the functions that execute the most instructions themselves,
//! and the inclusive cost of the proxy's own functions (its stages).
//!
//! Instruction counts are exact and repeatable, unlike wall-clock time on a
//! shared virtual machine, so they are what a before/after comparison uses.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;

use crate::Output;
use crate::results::{self, Meta, ProfileResult, Record};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    output: Output,
    /// The callgrind output file.
    #[arg(long)]
    file: PathBuf,
    /// Requests served between zeroing and dumping the counters.
    #[arg(long)]
    requests: u64,
    /// Show this many functions in each list.
    #[arg(long, default_value_t = 15)]
    top: usize,
    /// Prefix of the functions whose inclusive cost is listed (the server's own code).
    #[arg(long)]
    own_prefix: Option<String>,
}

#[derive(Default, Debug)]
pub struct Costs {
    pub total: u64,
    pub self_cost: HashMap<String, u64>,
    /// Self plus everything called from the function (recursion counted once per call site).
    pub inclusive: HashMap<String, u64>,
}

/// Parses the uncompressed callgrind format.
pub fn parse(text: &str) -> Costs {
    let mut costs = Costs::default();
    let mut current = String::new();
    let mut callee_follows = false;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("fn=") {
            current = name.to_owned();
            continue;
        }
        if line.starts_with("calls=") {
            callee_follows = true;
            continue;
        }
        let first = line.as_bytes().first().copied().unwrap_or(b' ');
        if !(first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'*')) {
            continue;
        }
        let Some(cost) = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u64>().ok())
        else {
            callee_follows = false;
            continue;
        };
        if callee_follows {
            // The line after `calls=` is the callee's inclusive cost at this call site.
            *costs.inclusive.entry(current.clone()).or_default() += cost;
            callee_follows = false;
        } else {
            *costs.self_cost.entry(current.clone()).or_default() += cost;
            *costs.inclusive.entry(current.clone()).or_default() += cost;
            costs.total += cost;
        }
    }
    costs
}

fn top(
    map: &HashMap<String, u64>,
    total: u64,
    n: usize,
    keep: impl Fn(&str) -> bool,
) -> Vec<(f64, String)> {
    let mut v: Vec<(&String, &u64)> = map.iter().filter(|(k, _)| keep(k)).collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.into_iter()
        .take(n)
        .map(|(k, c)| (100.0 * *c as f64 / total.max(1) as f64, k.clone()))
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let costs = parse(&text);
    anyhow::ensure!(
        costs.total > 0,
        "{}: no costs (was it compressed?)",
        args.file.display()
    );
    let own = args.own_prefix.clone();
    let result = ProfileResult {
        meta: Meta {
            target: args.output.target,
            experiment: args.output.experiment,
        },
        requests: args.requests,
        instructions: costs.total,
        per_request: costs.total as f64 / args.requests.max(1) as f64,
        top_self: top(&costs.self_cost, costs.total, args.top, |_| true),
        top_own_inclusive: match &own {
            Some(p) => top(&costs.inclusive, costs.total, args.top, |k| {
                k.starts_with(p.as_str())
            }),
            None => Vec::new(),
        },
    };
    eprintln!(
        "{:>8} callgrind: {} instructions over {} requests = {:.0} per request",
        result.meta.target, result.instructions, result.requests, result.per_request
    );
    for (pct, name) in &result.top_self {
        eprintln!("  {pct:5.1}%  {name}");
    }
    results::write(&args.output.out, &Record::Profile(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_and_inclusive_costs() {
        let text =
            "events: Ir\nfn=main\n1 10\ncfn=work\ncalls=2 5\n5 100\n+1 5\nfn=work\n5 60\n* 40\n";
        let c = parse(text);
        assert_eq!(c.total, 115);
        assert_eq!(c.self_cost["main"], 15);
        assert_eq!(c.self_cost["work"], 100);
        assert_eq!(c.inclusive["main"], 115);
        assert_eq!(c.inclusive["work"], 100);
    }
}
