//! The server under test as the kernel sees it: CPU time and resident memory
//! of a process tree (nginx's master and worker, LiteLLM's workers), and
//! how long a freshly started server takes to become ready.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};

use crate::Output;
use crate::results::{self, Meta, Record, StartupResult};

/// A process and all its descendants, as found now.
pub fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = ppid(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids);
        }
        i += 1;
    }
    out
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Nanoseconds on CPU, summed over every thread of every process in the tree
/// (`/proc/*/task/*/schedstat`, nanosecond resolution unlike `stat`'s ticks).
pub fn cpu_ns(root: u32) -> u64 {
    let mut total = 0;
    for pid in tree(root) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat"))
                && let Some(ns) = s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            {
                total += ns;
            }
        }
    }
    total
}

/// Resident set size in KiB, summed over the tree.
pub fn rss_kib(root: u32) -> u64 {
    status_kib(root, "VmRSS:")
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Peak resident set size in KiB, summed over the tree.
pub fn peak_rss_kib(root: u32) -> u64 {
    status_kib(root, "VmHWM:")
}

fn status_kib(root: u32, field: &str) -> u64 {
    tree(root)
        .into_iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

#[derive(clap::Args, Debug)]
pub struct StartupArgs {
    #[command(flatten)]
    output: Output,
    /// GET this URL until it answers 200.
    #[arg(long)]
    ready_url: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Where to write the started process's pid (it keeps running; the caller stops it).
    #[arg(long)]
    pid_file: PathBuf,
    /// The process's stdout and stderr.
    #[arg(long)]
    log: PathBuf,
    /// The command, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn startup(args: StartupArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let log = File::create(&args.log).with_context(|| format!("{}", args.log.display()))?;
    let started = Instant::now();
    let mut child = Command::new(&args.command[0])
        .args(&args.command[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", args.command[0]))?;
    let pid = child.id();
    std::fs::write(&args.pid_file, format!("{pid}\n"))?;
    let deadline = started + Duration::from_secs_f64(args.timeout);
    let ready = rt.block_on(async {
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited with {status} before it was ready",
                    args.command[0]
                );
            }
            if get_status(&args.ready_url).await == Some(200) {
                return Ok(started.elapsed());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready at {} after {} s",
                    args.command[0],
                    args.ready_url,
                    args.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })?;
    let record = Record::Startup(StartupResult {
        meta: Meta {
            target: args.output.target,
            experiment: args.output.experiment,
        },
        ready_ms: ready.as_secs_f64() * 1000.0,
        rss_kib: rss_kib(pid),
        peak_rss_kib: Some(peak_rss_kib(pid)),
    });
    results::write(&args.output.out, &record)?;
    println!("ready in {:.1} ms", ready.as_secs_f64() * 1000.0);
    Ok(())
}

/// The status of a GET on a fresh connection, or `None` if it failed.
pub async fn get_status(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = authority.parse().ok()?;
    let mut send = tokio::time::timeout(Duration::from_secs(2), crate::conn::connect(addr))
        .await
        .ok()?
        .ok()?;
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .body(Full::new(bytes::Bytes::new()))
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(2), send.send_request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Some(status)
}
