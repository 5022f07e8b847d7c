//! The server under test as the kernel sees it: CPU time and resident memory
//! of a process tree (nginx's master and worker, LiteLLM's workers), and
//! how long a freshly started server takes to become ready.

use std::collections::{BTreeMap, HashMap};
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
    descendants(root, &parents())
}

/// (pid, parent pid) of every process now.
fn parents() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, ppid(pid)?))
        })
        .collect()
}

/// `root` and every process below it in a (pid, parent pid) table, each once.
fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(pid, ppid) in parents {
        children.entry(ppid).or_default().push(pid);
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

/// The CPU time of every thread of a process tree at one moment, keyed by
/// thread id, so that a window's figure can tell a thread that ran from one
/// that came or went during it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuSample(BTreeMap<u32, u64>);

impl CpuSample {
    /// The tree under `root` as found now. Nanoseconds on CPU from
    /// `/proc/*/task/*/schedstat` (nanosecond resolution, unlike `stat`'s ticks).
    pub fn of_tree(root: u32) -> Self {
        Self::from_table(root, &parents(), |pid| {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return Vec::new();
            };
            tasks
                .flatten()
                .filter_map(|t| {
                    let tid = t.file_name().to_str()?.parse::<u32>().ok()?;
                    let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
                    Some((tid, s.split_whitespace().next()?.parse::<u64>().ok()?))
                })
                .collect()
        })
    }

    /// The threads (tid, ns) that `threads_of` gives for each process of the
    /// tree under `root` in a (pid, parent pid) table, each process once.
    fn from_table(
        root: u32,
        parents: &[(u32, u32)],
        threads_of: impl Fn(u32) -> Vec<(u32, u64)>,
    ) -> Self {
        Self(
            descendants(root, parents)
                .into_iter()
                .flat_map(threads_of)
                .collect(),
        )
    }

    /// CPU nanoseconds spent between this sample and a `later` one. A thread
    /// in both counts its difference; one only in `later` started in between
    /// and counts whole. One that exited in between counts nothing: the time
    /// it spent in the window left with it, so the figure is a lower bound
    /// when threads exit (a proxy's worker threads do not).
    pub fn ns_until(&self, later: &CpuSample) -> u64 {
        later
            .0
            .iter()
            .map(|(tid, &ns)| match self.0.get(tid) {
                // Less than before: the thread id was reused by a new thread.
                Some(&before) if before <= ns => ns - before,
                _ => ns,
            })
            .sum()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    // nginx as run.sh starts it: the master (1000) under the shell (1), its
    // worker (1001) under the master, and an unrelated process (2000).
    const NGINX: &[(u32, u32)] = &[(1000, 1), (1001, 1000), (2000, 1)];

    fn sample(root: u32, parents: &[(u32, u32)], threads: &[(u32, u32, u64)]) -> CpuSample {
        CpuSample::from_table(root, parents, |pid| {
            threads
                .iter()
                .filter(|(p, _, _)| *p == pid)
                .map(|&(_, tid, ns)| (tid, ns))
                .collect()
        })
    }

    #[test]
    fn a_master_and_its_worker_count_once_each() {
        let before = sample(
            1000,
            NGINX,
            &[(1000, 1000, 10), (1001, 1001, 100), (2000, 2000, 5)],
        );
        let after = sample(
            1000,
            NGINX,
            &[(1000, 1000, 12), (1001, 1001, 190), (2000, 2000, 900)],
        );
        // The master's 2 ns and the worker's 90 ns; not the other process's.
        assert_eq!(before.ns_until(&after), 92);
    }

    #[test]
    fn a_worker_replaced_during_the_window_counts_its_own_time() {
        let before = sample(1000, NGINX, &[(1000, 1000, 10), (1001, 1001, 100)]);
        // Worker 1001 exited; 1002 was forked and ran 30 ns.
        let parents = &[(1000, 1), (1002, 1000)];
        let after = sample(1000, parents, &[(1000, 1000, 12), (1002, 1002, 30)]);
        assert_eq!(before.ns_until(&after), 32);
    }

    #[test]
    fn a_thread_id_reused_by_a_new_thread_counts_the_new_threads_time() {
        let threads = |ns| [(1000, 1000, 10), (1000, 1005, ns)];
        let before = sample(1000, NGINX, &threads(500));
        let after = sample(1000, NGINX, &threads(20));
        assert_eq!(before.ns_until(&after), 20);
    }

    #[test]
    fn the_tree_of_a_process_with_no_children_is_itself() {
        assert_eq!(descendants(2000, NGINX), vec![2000]);
        assert_eq!(descendants(1000, NGINX), vec![1000, 1001]);
    }
}
