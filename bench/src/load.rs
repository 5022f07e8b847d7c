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

use anyhow::{Context, bail};
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
    /// Stop after this many requests, warm-up ones included (for profiling
    /// runs, where a fixed count matters more than a duration). Open loop:
    /// the schedule ends after this many slots, and the measured window
    /// with it.
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
    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let timeout = Duration::from_secs_f64(args.timeout);
    let slots = (args.rate > 0.0)
        .then(|| open_loop_slots(args.warmup + args.duration, args.rate, args.max_requests));
    if let Some(slots) = slots
        && open_loop_measured_s(slots, args.rate, args.warmup, args.duration) <= 0.0
    {
        bail!(
            "--max-requests {slots} ends within the {} s warm-up at {} rps: nothing would be measured",
            args.warmup,
            args.rate
        );
    }
    // The measured window, sampled for the server's CPU by a thread of its own
    // so the sampling never delays a request. The server's process tree is
    // read at both ends of the window, so that a process it starts or ends
    // meanwhile is accounted for.
    let start = Instant::now() + Duration::from_millis(20);
    let window = (start + warmup, start + warmup + duration);
    let (load_done, done) = std::sync::mpsc::channel::<()>();
    let sampler = args.pid.map(|pid| {
        std::thread::spawn(move || {
            sleep_until(window.0);
            let before = proc::CpuSample::of_tree(pid);
            // The window ends at its end, or with the load if a request cap
            // ends that first.
            let _ = done.recv_timeout(window.1.saturating_duration_since(Instant::now()));
            before.ns_until(&proc::CpuSample::of_tree(pid))
        })
    });

    let (tally, pacer_lag, measured_s) = if let Some(slots) = slots {
        let (tally, lag) =
            rt.block_on(open_loop(&args, template, start, slots, window, timeout))?;
        let measured_s = open_loop_measured_s(slots, args.rate, args.warmup, args.duration);
        (tally, Some(lag.summary()), measured_s)
    } else {
        let tally = rt.block_on(closed_loop(&args, template, start, window, timeout))?;
        // A closed loop with --max-requests may finish before the window does.
        let measured_s = Instant::now()
            .saturating_duration_since(window.0)
            .as_secs_f64()
            .min(args.duration);
        (tally, None, measured_s)
    };
    // The load is over: the sampler's window ends now if it has not yet.
    drop(load_done);

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
    total: u64,
    window: (Instant, Instant),
    timeout: Duration,
) -> anyhow::Result<(Tally, Recorder)> {
    let (tx, rx) = mpsc::unbounded_channel::<Slot>();
    let rx = Arc::new(Mutex::new(rx));
    let interval = 1.0 / args.rate;
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
    let give_up = start + Duration::from_secs_f64(total as f64 * interval) + timeout;
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

/// How many slots an open loop releases over `span_s` seconds (warm-up and
/// window) at `rate`: one every 1/rate from the start, at most `max`.
fn open_loop_slots(span_s: f64, rate: f64, max: Option<u64>) -> u64 {
    let all = (span_s * rate).ceil() as u64;
    max.map_or(all, |max| all.min(max))
}

/// The measured seconds of an open loop of `slots` slots: from the end of the
/// warm-up to the end of the schedule, which a request cap may bring forward.
fn open_loop_measured_s(slots: u64, rate: f64, warmup_s: f64, duration_s: f64) -> f64 {
    (slots as f64 / rate - warmup_s).clamp(0.0, duration_s)
}

/// Sleeps until `t` with the OS's fine-grained timer.
fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use clap::Parser;

    use super::*;

    #[test]
    fn a_cap_shortens_the_open_loop_schedule_and_its_window() {
        // 2 s + 10 s at 100 rps: 1,200 slots, 10 s measured.
        assert_eq!(open_loop_slots(12.0, 100.0, None), 1200);
        assert_eq!(open_loop_measured_s(1200, 100.0, 2.0, 10.0), 10.0);
        // A cap of 500: the warm-up's 200 slots, then 3 s measured.
        assert_eq!(open_loop_slots(12.0, 100.0, Some(500)), 500);
        assert_eq!(open_loop_measured_s(500, 100.0, 2.0, 10.0), 3.0);
        // A cap above the schedule changes nothing.
        assert_eq!(open_loop_slots(12.0, 100.0, Some(5000)), 1200);
        // A cap within the warm-up leaves nothing measured.
        assert_eq!(open_loop_measured_s(150, 100.0, 2.0, 10.0), 0.0);
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// An HTTP/1.1 server answering every GET with 200 on keep-alive
    /// connections; counts the requests it answered.
    fn server() -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let served = Arc::new(AtomicU64::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let count = count.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            count.fetch_add(1, Ordering::SeqCst);
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if conn.write_all(ok).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, served)
    }

    fn load(url: &str, out: &std::path::Path, rest: &[&str]) -> anyhow::Result<LoadResult> {
        let mut argv = vec!["load", "--target", "t", "--experiment", "e", "--url", url];
        let out_s = out.to_str().unwrap();
        argv.extend(["--out", out_s, "--connections", "4"]);
        argv.extend(rest);
        run(Cli::try_parse_from(argv)?.args)?;
        match serde_json::from_slice(&std::fs::read(out)?)? {
            Record::Load(result) => Ok(result),
            other => anyhow::bail!("not a load result: {other:?}"),
        }
    }

    #[test]
    fn an_open_loop_with_a_cap_sends_that_many_requests_and_stops() {
        let (url, served) = server();
        let out =
            std::env::temp_dir().join(format!("strake-bench-cap-{}.json", std::process::id()));
        // Without the cap this schedule would be 30 s and 3,856 requests.
        // (Rates and times that are exact in binary, so the slot at the end
        // of the warm-up is the window's first.)
        let result = load(
            &url,
            &out,
            &[
                "--rate",
                "128",
                "--warmup",
                "0.125",
                "--duration",
                "30",
                "--max-requests",
                "48",
            ],
        )
        .unwrap();
        let _ = std::fs::remove_file(&out);
        assert_eq!(served.load(Ordering::SeqCst), 48);
        // The first 16 were warm-up; the window is the 32 after, 0.25 s of schedule.
        assert_eq!((result.requests, result.ok), (32, 32));
        assert_eq!(result.duration_s, 0.25);
    }

    #[test]
    fn a_cap_within_the_warm_up_is_refused() {
        let out =
            std::env::temp_dir().join(format!("strake-bench-cap0-{}.json", std::process::id()));
        let err = load(
            "http://127.0.0.1:9/",
            &out,
            &["--rate", "100", "--warmup", "2", "--max-requests", "50"],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("ends within the 2 s warm-up"),
            "{err}"
        );
    }
}
