//! Streamed completions through a proxy: time to the first body byte and the
//! gaps between consecutive server-sent events as the client receives them.
//! A proxy that forwards each event as it arrives adds a constant to the
//! first byte and nothing to the gaps; one that buffers shows long gaps
//! followed by zero gaps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::BodyExt;

use crate::Output;
use crate::conn::{self, RequestArgs};
use crate::histogram::Recorder;
use crate::results::{self, Meta, Record, StreamResult};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    request: RequestArgs,
    /// Streams to run in total.
    #[arg(long, default_value_t = 20)]
    streams: u64,
    /// Streams in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Per-stream timeout in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

#[derive(Default)]
struct Tally {
    ttfb: Recorder,
    gap: Recorder,
    total: Recorder,
    events: u64,
    errors: u64,
}

/// Counts SSE event ends (a blank line) across frame boundaries, CRLF or LF.
#[derive(Default)]
struct EventSplitter {
    after_newline: bool,
}

impl EventSplitter {
    fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut ended = 0;
        for &b in bytes {
            match b {
                b'\n' if self.after_newline => {
                    ended += 1;
                    self.after_newline = false;
                }
                b'\n' => self.after_newline = true,
                b'\r' => {}
                _ => self.after_newline = false,
            }
        }
        ended
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let template = Arc::new(args.request.template()?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let next = Arc::new(AtomicU64::new(0));
    let tally = rt.block_on(async {
        let workers: Vec<_> = (0..args.concurrency)
            .map(|_| {
                let template = template.clone();
                let next = next.clone();
                let streams = args.streams;
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let mut conn = None;
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= streams {
                            break;
                        }
                        let one = tokio::time::timeout(
                            timeout,
                            one_stream(&template, &mut conn, n, &mut tally),
                        )
                        .await;
                        if !matches!(one, Ok(Ok(()))) {
                            tally.errors += 1;
                            conn = None;
                        }
                    }
                    tally
                })
            })
            .collect();
        let mut all = Tally::default();
        for w in workers {
            let t = w.await.context("worker")?;
            all.ttfb.add(&t.ttfb);
            all.gap.add(&t.gap);
            all.total.add(&t.total);
            all.events += t.events;
            all.errors += t.errors;
        }
        anyhow::Ok(all)
    })?;
    let ok = tally.total.len();
    let result = StreamResult {
        meta: Meta {
            target: args.output.target,
            experiment: args.output.experiment,
        },
        streams: args.streams,
        concurrency: args.concurrency,
        errors: tally.errors,
        events_per_stream: tally.events as f64 / ok.max(1) as f64,
        ttfb: tally.ttfb.summary(),
        gap: tally.gap.summary(),
        total: tally.total.summary(),
    };
    eprintln!(
        "{:>8} stream: {} ok, {} errors, {:.1} events/stream; ttfb p50 {:.0} µs p99 {:.0} µs; gap p50 {:.0} µs p99 {:.0} µs max {:.0} µs",
        result.meta.target,
        ok,
        result.errors,
        result.events_per_stream,
        result.ttfb.p50_us,
        result.ttfb.p99_us,
        result.gap.p50_us,
        result.gap.p99_us,
        result.gap.max_us,
    );
    results::write(&args.output.out, &Record::Stream(result))
}

async fn one_stream(
    template: &conn::Template,
    conn: &mut Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>>,
    n: u64,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(conn::connect(template.addr).await?);
    }
    let c = conn.as_mut().expect("just connected");
    c.ready().await?;
    let sent = Instant::now();
    let resp = c.send_request(template.request(n)).await?;
    anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
    let mut body = resp.into_body();
    let mut splitter = EventSplitter::default();
    let mut first = None;
    let mut last_event = None;
    let mut events = 0;
    let mut ttfb = Recorder::default();
    let mut gaps = Recorder::default();
    while let Some(frame) = body.frame().await {
        let now = Instant::now();
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if first.is_none() {
            first = Some(now);
            ttfb.record(now - sent);
        }
        for _ in 0..splitter.feed(&data) {
            if let Some(prev) = last_event {
                gaps.record(now - prev);
            }
            last_event = Some(now);
            events += 1;
        }
    }
    anyhow::ensure!(events > 0, "no events");
    // Only complete streams count.
    tally.ttfb.add(&ttfb);
    tally.gap.add(&gaps);
    tally.total.record(sent.elapsed());
    tally.events += events;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::EventSplitter;

    #[test]
    fn splits_events_across_frames_and_line_endings() {
        let mut s = EventSplitter::default();
        assert_eq!(s.feed(b"data: {}\n\ndata: {}\n"), 1);
        assert_eq!(s.feed(b"\n"), 1);
        assert_eq!(s.feed(b"event: x\r\ndata: 1\r\n\r\ndata: [DONE]\n\n"), 2);
        assert_eq!(s.feed(b"data: a\ndata: b\n"), 0);
    }
}
