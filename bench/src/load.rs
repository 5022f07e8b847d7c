//! The load generator.
//!
//! **Open loop** (`--rate R`): a pacer thread releases request slots on a
//! fixed schedule (slot n at `start + n / R`) into a queue; `--connections`
//! keep-alive connections take slots from it as soon as they are free.
//! Latency runs from the moment a slot is released to the last byte of its
//! response, so time a request spends queued behind a slow server — every
//! connection busy — is counted: the schedule does not slow down when the
//! server does (no coordinated omission). The pacer sleeps with nanosleep,
//! not tokio's millisecond timer, so requests are spaced evenly instead of
//! leaving in 1 ms bursts; its own lateness against the schedule is recorded
//! separately (`pacer_lag`) and is not charged to the server.
//!
//! **Closed loop** (`--rate 0`): every connection sends its next request as
//! soon as the last one is answered, for the maximum sustained throughput.
//!
//! Both run `--warmup` seconds unmeasured first (connections, pools, caches).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::BodyExt;
use tokio::sync::{Mutex, mpsc};

use crate::Output;
use crate::conn::{RequestArgs, Sender, Template};
use crate::histogram::Recorder;
use crate::proc;
use crate::results::{self, LoadResult, Meta, Record, ServerUsage};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    request: RequestArgs,
    /// Requests per second (open loop); 0 runs closed loop at full speed.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds before.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Speak HTTP/2 with prior knowledge (h2c), one request at a time on
    /// each connection, as HTTP/1.1 does.
    #[arg(long)]
    http2: bool,
    /// Per-request timeout in seconds; also how long queued slots may wait
    /// after the schedule ends before they count as failed.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// The server under test (its process tree's CPU and memory are reported).
    #[arg(long)]
    pid: Option<u32>,
    /// Closed loop only: stop after this many requests (for profiling runs,
    /// where a fixed count matters more than a duration).
    #[arg(long)]
    max_requests: Option<u64>,
}

/// One scheduled request.
struct Slot {
    n: u64,
    released: Instant,
    measured: bool,
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    latency: Recorder,
    statuses: BTreeMap<u16, u64>,
}

impl Tally {
    fn record(&mut self, status: u16, latency: Duration) {
        self.latency.record(latency);
        *self.statuses.entry(status).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.latency.add(&other.latency);
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let template = Arc::new(args.request.template()?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let server = args.pid.map(proc::tree);
    let cpu = |pids: &[u32]| pids.iter().map(|&p| proc::cpu_ns(p)).sum::<u64>();

    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let timeout = Duration::from_secs_f64(args.timeout);
    // The measured window, sampled for the server's CPU by a thread of its own
    // so the sampling never delays a request.
    let start = Instant::now() + Duration::from_millis(20);
    let window = (start + warmup, start + warmup + duration);
    let sampler = server.clone().map(|pids| {
        std::thread::spawn(move || {
            sleep_until(window.0);
            let before = cpu(&pids);
            sleep_until(window.1);
            cpu(&pids) - before
        })
    });

    let (tally, pacer_lag) = if args.rate > 0.0 {
        let (tally, lag) = rt.block_on(open_loop(&args, template, start, window, timeout))?;
        (tally, Some(lag.summary()))
    } else {
        let tally = rt.block_on(closed_loop(&args, template, start, window, timeout))?;
        (tally, None)
    };
    // A closed loop with --max-requests may finish before the window does.
    let measured_s = Instant::now()
        .saturating_duration_since(window.0)
        .as_secs_f64()
        .min(args.duration);

    let requests = tally.latency.len();
    let errors: u64 = tally
        .statuses
        .iter()
        .filter(|(s, _)| !(200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let server = match (sampler, args.pid) {
        (Some(sampler), Some(pid)) => {
            let cpu_ns = sampler.join().expect("sampler thread");
            Some(ServerUsage {
                cpu_us_per_request: cpu_ns as f64 / 1000.0 / requests.max(1) as f64,
                rss_kib: proc::rss_kib(pid),
            })
        }
        _ => None,
    };
    let result = LoadResult {
        meta: Meta {
            target: args.output.target.clone(),
            experiment: args.output.experiment.clone(),
        },
        rate: (args.rate > 0.0).then_some(args.rate),
        connections: args.connections,
        duration_s: measured_s,
        requests,
        ok: requests - errors,
        errors,
        statuses: tally.statuses.into_iter().collect(),
        achieved_rps: (requests - errors) as f64 / measured_s.max(1e-9),
        latency: tally.latency.summary(),
        pacer_lag,
        server,
    };
    eprintln!(
        "{:>8} {:>12} rate {:>7} -> {:>8.0} rps ok, {} errors; p50 {:.0} µs p99 {:.0} µs p99.9 {:.0} µs max {:.0} µs{}",
        result.meta.target,
        result.meta.experiment,
        result
            .rate
            .map_or("closed".to_owned(), |r| format!("{r:.0}")),
        result.achieved_rps,
        result.errors,
        result.latency.p50_us,
        result.latency.p99_us,
        result.latency.p999_us,
        result.latency.max_us,
        result.server.as_ref().map_or(String::new(), |s| format!(
            "; server {:.1} µs CPU/req, {} MiB",
            s.cpu_us_per_request,
            s.rss_kib / 1024
        )),
    );
    results::write(&args.output.out, &Record::Load(result))
}

async fn open_loop(
    args: &Args,
    template: Arc<Template>,
    start: Instant,
    window: (Instant, Instant),
    timeout: Duration,
) -> anyhow::Result<(Tally, Recorder)> {
    let (tx, rx) = mpsc::unbounded_channel::<Slot>();
    let rx = Arc::new(Mutex::new(rx));
    let interval = 1.0 / args.rate;
    let total = ((window.1 - start).as_secs_f64() * args.rate).ceil() as u64;
    let pacer = std::thread::spawn(move || {
        let mut lag = Recorder::default();
        for n in 0..total {
            let due = start + Duration::from_secs_f64(n as f64 * interval);
            sleep_until(due);
            let released = Instant::now();
            lag.record(released - due);
            let slot = Slot {
                n,
                released,
                measured: due >= window.0,
            };
            if tx.send(slot).is_err() {
                break;
            }
        }
        lag
    });

    // Slots still queued this long after the schedule ended are failures:
    // the server could not keep up.
    let give_up = window.1 + timeout;
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            let rx = rx.clone();
            let template = template.clone();
            let http2 = args.http2;
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut conn = None;
                loop {
                    let slot = { rx.lock().await.recv().await };
                    let Some(slot) = slot else { break };
                    let status = if Instant::now() > give_up {
                        0
                    } else {
                        send(&template, &mut conn, http2, slot.n, timeout).await
                    };
                    if slot.measured {
                        tally.record(status, slot.released.elapsed());
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await.context("worker")?);
    }
    let lag = pacer.join().expect("pacer thread");
    Ok((tally, lag))
}

async fn closed_loop(
    args: &Args,
    template: Arc<Template>,
    start: Instant,
    window: (Instant, Instant),
    timeout: Duration,
) -> anyhow::Result<Tally> {
    tokio::time::sleep_until(start.into()).await;
    let budget = Arc::new(AtomicU64::new(0));
    let max = args.max_requests.unwrap_or(u64::MAX);
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            let template = template.clone();
            let budget = budget.clone();
            let http2 = args.http2;
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut conn = None;
                loop {
                    let sent = Instant::now();
                    let n = budget.fetch_add(1, Ordering::Relaxed);
                    if sent >= window.1 || n >= max {
                        break;
                    }
                    let status = send(&template, &mut conn, http2, n, timeout).await;
                    if sent >= window.0 {
                        tally.record(status, sent.elapsed());
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await.context("worker")?);
    }
    Ok(tally)
}

/// Sends request `n` on `conn` (reconnecting if needed) and reads the whole
/// response. Returns its status, or 0 for a transport error or timeout.
async fn send(
    template: &Template,
    conn: &mut Option<Sender>,
    http2: bool,
    n: u64,
    timeout: Duration,
) -> u16 {
    let attempt = async {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            *conn = Some(Sender::connect(template.addr, http2).await.ok()?);
        }
        let c = conn.as_mut()?;
        let resp = c.send(template.request(n)).await.ok()?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await.ok()?;
        Some(status)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Some(status)) => status,
        _ => {
            // The connection's state is unknown now; start afresh.
            *conn = None;
            0
        }
    }
}

/// Sleeps until `t` with the OS's fine-grained timer.
fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}
