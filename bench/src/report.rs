//! The markdown report: every table of `docs/benchmarks.md`, computed from
//! the JSON results of one run. Added latency is a target's percentile minus
//! the direct (no proxy) percentile at the same rate in the same run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::histogram::nearest_rank;
use crate::kube_features::{BUDGET, KEYLESS, MINTED};
use crate::results::{
    BudgetSpendResult, LoadResult, Machine, OperatorScaleResult, ProfileResult, Record,
    RevocationResult, Skipped, StartupResult, StreamResult, UsageWritesResult,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of JSON results.
    #[arg(long)]
    results: PathBuf,
    /// The markdown file to write.
    #[arg(long)]
    out: PathBuf,
    /// Plots to link (PNG files), if they exist.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// A line saying how the run was made (mode, duration).
    #[arg(long, default_value = "")]
    note: String,
}

/// The ways a request reaches the mock, in report order. `strake-nolog` is
/// strake-proxy with its access log filtered out, as nginx runs here;
/// `strake-nopricing` is strake-proxy with `--no-pricing`.
/// `strake-policy` is the same process with a token that has an
/// allowed-model list and per-minute limits; `strake-h2` the same token as
/// `strake` over HTTP/2 (h2c).
const TARGETS: [&str; 9] = [
    "direct",
    "nginx",
    "strake",
    "strake-policy",
    "strake-h2",
    "strake-nolog",
    "strake-nopricing",
    "litellm",
    "portkey",
];

/// The features whose cost is a row of their own: (target, what it is).
const FEATURES: [(&str, &str); 2] = [
    (
        "strake-policy",
        "a token with an allowed-model list (4 globs) and requests- and tokens-per-minute limits",
    ),
    ("strake-h2", "HTTP/2 from the client (h2c, prior knowledge)"),
];

/// The experiment of the kube-mode feature rows (`bench/run.sh`'s step on
/// the local control plane).
const KUBE_FEATURES: &str = "kube-features";

/// The kube-mode rows: (target, what it is); the first is their baseline.
const KUBE_ROWS: [(&str, &str); 3] = [
    (MINTED, "a minted token (the kube-mode baseline)"),
    (
        BUDGET,
        "a token with a monthly USD budget, far above the run's spend",
    ),
    (
        KEYLESS,
        "a keyless token: a ServiceAccount's JWT (TokenRequest, audience strake)",
    ),
];

/// The LLM gateways a user would pick instead of Strake: (target, name).
const GATEWAY_PEERS: [(&str, &str); 2] = [("litellm", "LiteLLM"), ("portkey", "Portkey")];

/// The issue's bound on what pricing may add to the request path.
const PRICING_OVERHEAD: f64 = 0.05;

/// DESIGN.md's targets.
const ADDED_P50_US: f64 = 50.0;
const ADDED_P99_US: f64 = 300.0;
const TTFB_ADDED_US: f64 = 1000.0;
const REVOCATION_P99_MS: f64 = 1000.0;
const RSS_100K_MIB: f64 = 200.0;
const SCALE_OVERHEAD: f64 = 0.10;
/// Issue 14's operator target: 10,000 StrakeTokens Ready within 60 s, and
/// revocations during it at p99 under 100 ms.
const OPERATOR_TOKENS: f64 = 10_000.0;
const OPERATOR_READY_S: f64 = 60.0;
const OPERATOR_REVOCATION_P99_MS: f64 = 100.0;
const THROUGHPUT_VS_LITELLM: f64 = 20.0;
/// Issue 14's bound on Strake's instructions per request, as a multiple of
/// nginx's doing the same job.
const INSTRUCTIONS_VS_NGINX: f64 = 2.0;

/// A rate counts as "below saturation" for the targets when it is at most
/// this share of Strake's closed-loop maximum in the same run.
const BELOW_SATURATION: f64 = 0.5;

#[derive(Default)]
struct Results {
    machine: Vec<(String, String)>,
    loads: Vec<LoadResult>,
    streams: Vec<StreamResult>,
    startups: Vec<StartupResult>,
    revocations: Vec<RevocationResult>,
    operators: Vec<OperatorScaleResult>,
    usage_writes: Vec<UsageWritesResult>,
    profiles: Vec<ProfileResult>,
    budget_spends: Vec<BudgetSpendResult>,
    skipped: Vec<Skipped>,
}

impl Results {
    fn from_records(records: Vec<Record>) -> Results {
        let mut r = Results::default();
        for record in records {
            match record {
                Record::Load(l) => r.loads.push(l),
                Record::Stream(s) => r.streams.push(s),
                Record::Startup(s) => r.startups.push(s),
                Record::Revocation(v) => r.revocations.push(v),
                Record::OperatorScale(o) => r.operators.push(o),
                Record::UsageWrites(u) => r.usage_writes.push(u),
                Record::Skipped(s) => r.skipped.push(s),
                Record::Profile(p) => r.profiles.push(p),
                Record::BudgetSpend(b) => r.budget_spends.push(b),
                Record::Machine(Machine { items }) => r.machine.extend(items),
            }
        }
        r
    }

    fn load(&self, experiment: &str, target: &str, rate: Option<f64>) -> Option<&LoadResult> {
        self.loads.iter().find(|l| {
            l.meta.experiment == experiment && l.meta.target == target && same_rate(l.rate, rate)
        })
    }

    fn rates(&self, experiment: &str) -> Vec<f64> {
        let mut rates: Vec<f64> = self
            .loads
            .iter()
            .filter(|l| l.meta.experiment == experiment)
            .filter_map(|l| l.rate)
            .collect();
        rates.sort_by(f64::total_cmp);
        rates.dedup();
        rates
    }

    fn saturation(&self, target: &str) -> Option<&LoadResult> {
        self.load("saturation", target, None)
    }

    fn skipped(&self, target: &str) -> Option<&Skipped> {
        self.skipped.iter().find(|s| s.meta.target == target)
    }
}

fn same_rate(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-9,
        (None, None) => true,
        _ => false,
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let r = Results::from_records(crate::results::read_dir(&args.results)?);
    let plots = args.plots.as_deref().map(|dir| plot_links(dir, &args.out));
    let md = render(&r, &args.note, plots.as_ref());
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &md).with_context(|| format!("writing {}", args.out.display()))?;
    print!("{md}");
    Ok(())
}

/// PNG name -> link relative to the report.
fn plot_links(dir: &Path, out: &Path) -> BTreeMap<String, String> {
    let base = out.parent().unwrap_or(Path::new("."));
    let mut links = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return links;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "png") {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let link = relative(&path, base);
            links.insert(name, link);
        }
    }
    links
}

fn relative(path: &Path, base: &Path) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (path, base) = (abs(path), abs(base));
    match path.strip_prefix(&base) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

fn render(r: &Results, note: &str, plots: Option<&BTreeMap<String, String>>) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Strake benchmarks\n");
    let _ = writeln!(
        w,
        "Generated by `bench/run.sh` ({note}). Every number below comes from one run on \
         one machine, side by side; see [bench/README.md](../bench/README.md) for the method. \
         Latency is open-loop with coordinated-omission correction: it runs from the moment \
         the request was due, so queueing behind a slow server counts. *Added* latency is a \
         proxy's percentile minus the direct (no proxy) percentile at the same rate.\n"
    );
    machine(w, r);
    targets(w, r);
    overhead(w, r);
    features(w, r);
    saturation(w, r);
    streaming(w, r);
    revocation(w, r);
    scale(w, r);
    profile(w, r);
    if !r.skipped.is_empty() {
        let _ = writeln!(w, "## Not measured in this run\n");
        for s in &r.skipped {
            let _ = writeln!(
                w,
                "- **{}** ({}): {}",
                s.meta.target, s.meta.experiment, s.reason
            );
        }
        let _ = writeln!(w);
    }
    if let Some(plots) = plots.filter(|p| !p.is_empty()) {
        let _ = writeln!(w, "## Plots\n");
        for (name, link) in plots {
            let _ = writeln!(w, "![{name}]({link})\n");
        }
    }
    md
}

fn machine(w: &mut String, r: &Results) {
    if r.machine.is_empty() {
        return;
    }
    let _ = writeln!(w, "## Machine\n\n| | |\n| --- | --- |");
    for (k, v) in &r.machine {
        let _ = writeln!(w, "| {k} | {v} |");
    }
    let _ = writeln!(w);
}

// --- formatting ---------------------------------------------------------------

fn us(v: f64) -> String {
    if !v.is_finite() {
        "—".into()
    } else if v.abs() >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v.abs() >= 100.0 {
        format!("{v:.0} µs")
    } else {
        format!("{v:.1} µs")
    }
}

fn ms(v: f64) -> String {
    if !v.is_finite() {
        "—".into()
    } else if v >= 10_000.0 {
        format!("{:.1} s", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// `a / b`, or a dash when either is not a positive measurement (an added
/// latency within the noise can come out at zero or below).
fn ratio(a: f64, b: f64) -> String {
    if !a.is_finite() || !b.is_finite() || a <= 0.0 || b <= 0.0 {
        return "—".into();
    }
    let q = a / b;
    if q >= 10.0 {
        format!("{q:.0}×")
    } else {
        format!("{q:.2}×")
    }
}

fn rps(v: f64) -> String {
    format!("{v:.0}")
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// Added latency of `target` over direct at one rate: (p50, p99, p99.9).
fn added(r: &Results, experiment: &str, target: &str, rate: f64) -> Option<(f64, f64, f64)> {
    let base = r.load(experiment, "direct", Some(rate))?;
    let t = r.load(experiment, target, Some(rate))?;
    Some((
        t.latency.p50_us - base.latency.p50_us,
        t.latency.p99_us - base.latency.p99_us,
        t.latency.p999_us - base.latency.p999_us,
    ))
}

/// A closed-loop run counts as limited by the server when its core was at
/// least this busy.
const SERVER_BOUND: f64 = 0.9;

/// Share of one core the server used during a run.
fn utilization(l: &LoadResult) -> Option<f64> {
    l.server
        .as_ref()
        .map(|s| l.achieved_rps * s.cpu_us_per_request / 1e6)
}

/// Requests per second one fully busy core could serve at the CPU cost per
/// request measured in a saturation run.
fn capacity(l: &LoadResult) -> Option<f64> {
    l.server
        .as_ref()
        .filter(|s| s.cpu_us_per_request > 0.0)
        .map(|s| 1e6 / s.cpu_us_per_request)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{:.0} %", v * 100.0))
}

/// How far two measurements of the same thing (direct, twice) differ at a
/// rate: (p50, p99), at least 5 µs each.
fn noise(r: &Results, rate: f64) -> (f64, f64) {
    let floor = 5.0;
    match (
        r.load("overhead", "direct", Some(rate)),
        r.load("overhead", "direct-repeat", Some(rate)),
    ) {
        (Some(a), Some(b)) => (
            (a.latency.p50_us - b.latency.p50_us).abs().max(floor),
            (a.latency.p99_us - b.latency.p99_us).abs().max(floor),
        ),
        _ => (floor, floor),
    }
}

/// Rates at which the targets apply: at most half of Strake's closed-loop
/// maximum (all rates when there was no saturation run).
fn below_saturation(r: &Results) -> Vec<f64> {
    let cap = r
        .saturation("strake")
        .map(|s| s.achieved_rps * BELOW_SATURATION);
    r.rates("overhead")
        .into_iter()
        .filter(|&rate| cap.is_none_or(|c| rate <= c))
        .collect()
}

// --- sections -------------------------------------------------------------------

fn targets(w: &mut String, r: &Results) {
    let _ = writeln!(
        w,
        "## Against DESIGN.md's targets\n\n| what | target | measured | |\n| --- | --- | --- | --- |"
    );
    let rates = below_saturation(r);
    let strake: Vec<(f64, (f64, f64, f64))> = rates
        .iter()
        .filter_map(|&rate| added(r, "overhead", "strake", rate).map(|a| (rate, a)))
        .collect();
    let worst = |f: fn(&(f64, f64, f64)) -> f64| {
        strake
            .iter()
            .map(|(rate, a)| (f(a), *rate))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    let rate_list = rates
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    match worst(|a| a.0) {
        Some((v, rate)) => {
            let _ = writeln!(
                w,
                "| added latency p50, below saturation ({rate_list} rps) | ≤ {} | {} (worst, at {rate:.0} rps) | {} |",
                us(ADDED_P50_US),
                us(v),
                verdict(Some(v <= ADDED_P50_US))
            );
        }
        None => {
            let _ = writeln!(
                w,
                "| added latency p50 | ≤ {} | — | not measured |",
                us(ADDED_P50_US)
            );
        }
    }
    if let Some((v, rate)) = worst(|a| a.1) {
        let _ = writeln!(
            w,
            "| added latency p99, below saturation | ≤ {} | {} (worst, at {rate:.0} rps) | {} |",
            us(ADDED_P99_US),
            us(v),
            verdict(Some(v <= ADDED_P99_US))
        );
    }
    // No worse than nginx: Strake's added p50 and p99 at or below nginx's at every rate.
    let vs_nginx: Vec<(f64, f64, f64, f64, f64)> = rates
        .iter()
        .filter_map(|&rate| {
            let s = added(r, "overhead", "strake", rate)?;
            let n = added(r, "overhead", "nginx", rate)?;
            Some((rate, s.0, n.0, s.1, n.1))
        })
        .collect();
    if !vs_nginx.is_empty() {
        // Percentile differences of two runs wobble; a rate counts as worse
        // only beyond that run's noise floor (direct measured twice), and at
        // least 5 µs.
        let worse: Vec<String> = vs_nginx
            .iter()
            .filter(|(rate, s50, n50, s99, n99)| {
                let (e50, e99) = noise(r, *rate);
                *s50 > n50 + e50 || *s99 > n99 + e99
            })
            .map(|(rate, s50, n50, s99, n99)| {
                format!(
                    "{rate:.0} rps: p50 {} vs {}, p99 {} vs {}",
                    us(*s50),
                    us(*n50),
                    us(*s99),
                    us(*n99)
                )
            })
            .collect();
        let measured = if worse.is_empty() {
            "at or below nginx's added p50 and p99 at every rate, within the run's noise".to_owned()
        } else {
            format!("worse than nginx at {}", worse.join("; "))
        };
        let _ = writeln!(
            w,
            "| added latency vs nginx, same run | no worse | {measured} | {} |",
            verdict(Some(worse.is_empty()))
        );
    }
    let sat = |t: &str| r.saturation(t).map(|l| l.achieved_rps);
    if let (Some(s), Some(n)) = (r.saturation("strake"), r.saturation("nginx")) {
        // When the server's core is not the bottleneck (the load generator
        // and mock share the other core), its CPU per request says what the
        // core could do.
        let bound = |l: &LoadResult| utilization(l).is_some_and(|u| u >= SERVER_BOUND);
        let (cs, cn) = (capacity(s), capacity(n));
        let (measured_ok, text) = if bound(s) && bound(n) {
            (
                s.achieved_rps >= n.achieved_rps,
                format!(
                    "{} vs {} rps ({})",
                    rps(s.achieved_rps),
                    rps(n.achieved_rps),
                    ratio(s.achieved_rps, n.achieved_rps)
                ),
            )
        } else {
            (
                cs.zip(cn).is_some_and(|(a, b)| a >= b),
                format!(
                    "measured {} vs {} rps ({}), with the servers' cores {} / {} busy, so the load generator's core was the limit; per core from CPU per request: {} vs {} rps ({})",
                    rps(s.achieved_rps),
                    rps(n.achieved_rps),
                    ratio(s.achieved_rps, n.achieved_rps),
                    pct(utilization(s)),
                    pct(utilization(n)),
                    cs.map_or("—".into(), rps),
                    cn.map_or("—".into(), rps),
                    cs.zip(cn).map_or("—".into(), |(a, b)| ratio(a, b)),
                ),
            )
        };
        let _ = writeln!(
            w,
            "| throughput, same cores | ≥ nginx | {text} | {} |",
            verdict(Some(measured_ok))
        );
    }
    if let (Some(s), Some(n)) = (
        instructions_per_request(r, "strake"),
        instructions_per_request(r, "nginx"),
    ) {
        let _ = writeln!(
            w,
            "| instructions per request (callgrind) | ≤ {INSTRUCTIONS_VS_NGINX:.0}× nginx's | {} vs {} ({}) | {} |",
            thousands(s.round() as u64),
            thousands(n.round() as u64),
            ratio(s, n),
            verdict(Some(s <= INSTRUCTIONS_VS_NGINX * n)),
        );
    }
    match (sat("strake"), sat("litellm")) {
        (Some(s), Some(l)) => {
            let _ = writeln!(
                w,
                "| throughput vs LiteLLM | ≥ {THROUGHPUT_VS_LITELLM:.0}× | {} vs {} rps ({}) | {} |",
                rps(s),
                rps(l),
                ratio(s, l),
                verdict(Some(s >= THROUGHPUT_VS_LITELLM * l))
            );
        }
        (Some(_), None) => {
            let _ = writeln!(
                w,
                "| throughput vs LiteLLM | ≥ {THROUGHPUT_VS_LITELLM:.0}× | LiteLLM not measured{} | not measured |",
                r.skipped("litellm")
                    .map_or(String::new(), |s| format!(": {}", s.reason))
            );
        }
        _ => {}
    }
    for (t, name) in GATEWAY_PEERS {
        ahead_of_peer(w, r, &rates, t, name);
    }
    if let Some((base, s)) = stream_pair(r, "strake") {
        let a50 = s.ttfb.p50_us - base.ttfb.p50_us;
        let a99 = s.ttfb.p99_us - base.ttfb.p99_us;
        let _ = writeln!(
            w,
            "| streaming: added time to first byte (p50) | ≤ {} | {} (p99 {}) | {} |",
            us(TTFB_ADDED_US),
            us(a50),
            us(a99),
            verdict(Some(a50 <= TTFB_ADDED_US))
        );
        // A proxy that buffers shows short gaps (events arriving together)
        // and long ones; one that forwards keeps the mock's pacing.
        let paced = (s.gap.p50_us - base.gap.p50_us).abs() <= TTFB_ADDED_US
            && (s.events_per_stream - base.events_per_stream).abs() < 0.5;
        let _ = writeln!(
            w,
            "| streaming: every chunk forwarded as it arrives | gaps as direct | gap p50 {} / p99 {} (direct {} / {}), {:.0} events per stream (direct {:.0}) | {} |",
            us(s.gap.p50_us),
            us(s.gap.p99_us),
            us(base.gap.p50_us),
            us(base.gap.p99_us),
            s.events_per_stream,
            base.events_per_stream,
            verdict(Some(paced))
        );
    }
    match r.revocations.iter().find(|v| v.meta.target == "strake") {
        Some(v) if !v.trials_ms.is_empty() => {
            let sorted = sorted(&v.trials_ms);
            let p99 = nearest_rank(&sorted, 99.0);
            let _ = writeln!(
                w,
                "| revocation: delete → 401, p99 | ≤ 1 s | {} ({} trials, max {}) | {} |",
                ms(p99),
                v.trials_ms.len(),
                ms(*sorted.last().unwrap_or(&f64::NAN)),
                verdict(Some(p99 <= REVOCATION_P99_MS && v.failures == 0))
            );
        }
        _ => {
            let _ = writeln!(
                w,
                "| revocation: delete → 401, p99 | ≤ 1 s | — | not measured |"
            );
        }
    }
    let scale = scale_rows(r);
    if let Some(largest) = scale.last() {
        let kib = largest
            .startup
            .map(|s| s.rss_kib)
            .into_iter()
            .chain(
                largest
                    .load
                    .and_then(|l| l.server.as_ref().map(|s| s.rss_kib)),
            )
            .max();
        if let Some(kib) = kib {
            let mib = kib as f64 / 1024.0;
            let _ = writeln!(
                w,
                "| scale: proxy RSS with 100,000 tokens | ≤ {RSS_100K_MIB:.0} MB | {mib:.0} MiB with {} tokens | {} |",
                thousands(largest.count),
                if largest.count >= 100_000 {
                    verdict(Some(mib * 1.048_576 <= RSS_100K_MIB))
                } else {
                    "not measured at 100,000"
                }
            );
        }
    }
    if let (Some(first), Some(last)) = (scale.first(), scale.last())
        && scale.len() > 1
        && let (Some(a0), Some(a1)) = (first.added, last.added)
    {
        let change = (a1.0 - a0.0) / a0.0.max(1.0);
        let cpu = |row: &ScaleRow<'_>| {
            row.load
                .and_then(|l| l.server.as_ref())
                .map(|s| s.cpu_us_per_request)
        };
        let cpu_text = match (cpu(first), cpu(last)) {
            (Some(c0), Some(c1)) => format!("; CPU per request {} vs {}", us(c1), us(c0)),
            _ => String::new(),
        };
        let disturbed = first.disturbed || last.disturbed;
        let _ = writeln!(
            w,
            "| scale: overhead with {} vs {} tokens | within 10 % | added p50 {} vs {} ({:+.0} %){cpu_text} | {} |",
            first_count(last),
            first_count(first),
            us(a1.0),
            us(a0.0),
            change * 100.0,
            if disturbed {
                "inconclusive: the machine was busy during it (see the scale table)"
            } else {
                // A few µs of noise on a small base is not a trend.
                verdict(Some(change <= SCALE_OVERHEAD || a1.0 - a0.0 <= 5.0))
            }
        );
    }
    for o in &r.operators {
        // The target is for 10,000; a smaller run (the short mode) is shown,
        // not judged.
        let judged = o.tokens as f64 >= OPERATOR_TOKENS;
        let _ = writeln!(
            w,
            "| operator: {} StrakeTokens Ready | ≤ {OPERATOR_READY_S:.0} s for {} | {} | {} |",
            thousands(o.tokens as u64),
            thousands(OPERATOR_TOKENS as u64),
            if o.all_ready_s.is_finite() {
                format!(
                    "{:.1} s ({:.0} tokens/s)",
                    o.all_ready_s,
                    o.tokens as f64 / o.all_ready_s
                )
            } else {
                format!("{} of {} Ready at the timeout", o.ready, o.tokens)
            },
            if judged {
                verdict(Some(o.all_ready_s <= OPERATOR_READY_S))
            } else {
                "not judged (a smaller run)"
            },
        );
        if !o.revocation_ms.is_empty() {
            let mut sorted = o.revocation_ms.clone();
            sorted.sort_by(f64::total_cmp);
            let p99 = nearest_rank(&sorted, 99.0);
            let _ = writeln!(
                w,
                "| revocation during the operator storm: delete → 401, p99 | < {OPERATOR_REVOCATION_P99_MS:.0} ms | {p99:.0} ms ({} trials, p50 {:.0} ms) | {} |",
                sorted.len(),
                nearest_rank(&sorted, 50.0),
                verdict(Some(p99 < OPERATOR_REVOCATION_P99_MS)),
            );
        }
    }
    for u in &r.usage_writes {
        let _ = writeln!(
            w,
            "| operator: usage status writes, {} active tokens | ≤ {:.0}/s (`--usage-writes-per-second`) | {:.1}/s ({} writes in {:.0} s; each token refreshed every {:.0} s) | {} |",
            thousands(u.tokens as u64),
            u.bound_per_s,
            u.writes_per_s,
            u.writes,
            u.duration_s,
            u.tokens as f64 / u.writes_per_s,
            // A write or two of timing slack at the window's edges.
            verdict(Some(
                u.writes_per_s.is_finite() && u.writes_per_s <= u.bound_per_s * 1.02 + 1.0
            ))
        );
    }
    let _ = writeln!(
        w,
        "\nWhere a target is missed: what bounds it and what was tried, in \
         [bench/README.md](../bench/README.md#where-the-targets-miss-and-what-bounds-them).\n"
    );
}

/// The issue's target against an LLM gateway peer: Strake ahead on added
/// latency (p50 and p99 at every rate both were measured at, below Strake's
/// saturation), on closed-loop throughput and on memory (RSS under that load).
fn ahead_of_peer(w: &mut String, r: &Results, rates: &[f64], target: &str, name: &str) {
    let mut misses = Vec::new();
    let mut shared = Vec::new();
    for &rate in rates {
        let (Some(s), Some(p)) = (
            added(r, "overhead", "strake", rate),
            added(r, "overhead", target, rate),
        ) else {
            continue;
        };
        shared.push(format!("{rate:.0}"));
        if s.0 > p.0 || s.1 > p.1 {
            misses.push(format!(
                "added at {rate:.0} rps: p50 {} vs {}, p99 {} vs {}",
                us(s.0),
                us(p.0),
                us(s.1),
                us(p.1)
            ));
        }
    }
    let (s, p) = (r.saturation("strake"), r.saturation(target));
    let mut parts = Vec::new();
    if let (Some(s), Some(p)) = (s, p) {
        parts.push(format!(
            "throughput {} vs {} rps ({})",
            rps(s.achieved_rps),
            rps(p.achieved_rps),
            ratio(s.achieved_rps, p.achieved_rps)
        ));
        if s.achieved_rps < p.achieved_rps {
            misses.push("throughput".into());
        }
        if let (Some(ss), Some(ps)) = (&s.server, &p.server) {
            parts.push(format!(
                "RSS {:.0} vs {:.0} MiB",
                ss.rss_kib as f64 / 1024.0,
                ps.rss_kib as f64 / 1024.0
            ));
            if ss.rss_kib > ps.rss_kib {
                misses.push("memory".into());
            }
        }
    }
    if shared.is_empty() && parts.is_empty() {
        let why = r
            .skipped
            .iter()
            .find(|s| s.meta.target == target && s.meta.experiment == "overhead")
            .map_or(String::new(), |s| format!(": {}", s.reason));
        let _ = writeln!(
            w,
            "| ahead of {name} | latency, throughput, memory | {name} not measured{why} | not measured |"
        );
        return;
    }
    let mut measured = format!(
        "added p50 and p99 at {} rps{}",
        if shared.is_empty() {
            "no".into()
        } else {
            shared.join(", ")
        },
        if parts.is_empty() {
            String::new()
        } else {
            format!("; {}", parts.join("; "))
        }
    );
    if !misses.is_empty() {
        measured.push_str(&format!("; behind on {}", misses.join(", ")));
    }
    let _ = writeln!(
        w,
        "| ahead of {name} | latency, throughput, memory | {measured} | {} |",
        verdict(Some(misses.is_empty()))
    );
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

fn overhead(w: &mut String, r: &Results) {
    let rates = r.rates("overhead");
    if rates.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "## 1. Overhead, non-streaming\n\nA fixed chat completion (with `usage`) from the mock, \
         at a constant request rate. Latency percentiles are of the whole request; *added* is \
         over direct at the same rate. CPU is the server's own (all its processes) per request. \
         *direct-repeat* is direct measured again after the others: its \"added\" latency is the \
         run-to-run noise at that rate, the resolution of every other added figure.\n"
    );
    let _ = writeln!(
        w,
        "| rate (rps) | target | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | server CPU / req | errors |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for &rate in &rates {
        for t in TARGETS.iter().copied().chain(["direct-repeat"]) {
            let Some(l) = r.load("overhead", t, Some(rate)) else {
                continue;
            };
            let a = added(r, "overhead", t, rate);
            let (a50, a99, a999) = match (t, a) {
                ("direct", _) | (_, None) => ("—".into(), "—".into(), "—".into()),
                (_, Some(a)) => (us(a.0), us(a.1), us(a.2)),
            };
            let _ = writeln!(
                w,
                "| {rate:.0} | {t} | {} | {} | {} | {a50} | {a99} | {a999} | {} | {} |",
                us(l.latency.p50_us),
                us(l.latency.p99_us),
                us(l.latency.p999_us),
                l.server
                    .as_ref()
                    .map_or("—".into(), |s| us(s.cpu_us_per_request)),
                errors(l),
            );
        }
    }
    let _ = writeln!(w);
    // Ratios of added latency.
    let peers: Vec<(&str, &str)> = GATEWAY_PEERS
        .into_iter()
        .filter(|(t, _)| {
            rates
                .iter()
                .any(|&rate| r.load("overhead", t, Some(rate)).is_some())
        })
        .collect();
    let mut head = "| rate (rps) | Strake ÷ nginx p50 | p99 | p99.9 |".to_owned();
    let mut rule = "| ---: | ---: | ---: | ---: |".to_owned();
    for (_, name) in &peers {
        head.push_str(&format!(" {name} ÷ Strake p50 | p99 | p99.9 |"));
        rule.push_str(" ---: | ---: | ---: |");
    }
    let names: Vec<String> = peers.iter().map(|(_, n)| format!("{n} ÷ Strake")).collect();
    let _ = writeln!(
        w,
        "Added latency as ratios (lower is better for Strake): Strake ÷ nginx{}.\n\n{head}\n{rule}",
        names.iter().map(|n| format!(", {n}")).collect::<String>()
    );
    let cell = |a: Option<(f64, f64, f64)>, b: Option<(f64, f64, f64)>, i: usize| match (a, b) {
        (Some(a), Some(b)) => ratio(pick(a, i), pick(b, i)),
        _ => "—".into(),
    };
    for &rate in &rates {
        let s = added(r, "overhead", "strake", rate);
        let n = added(r, "overhead", "nginx", rate);
        let mut row = format!(
            "| {rate:.0} | {} | {} | {} |",
            cell(s, n, 0),
            cell(s, n, 1),
            cell(s, n, 2)
        );
        for (t, _) in &peers {
            let p = added(r, "overhead", t, rate);
            for i in 0..3 {
                row.push_str(&format!(" {} |", cell(p, s, i)));
            }
        }
        let _ = writeln!(w, "{row}");
    }
    let _ = writeln!(w);
    pricing(w, r, &rates);
}

/// What each feature adds over plain `strake` (the same process, the same
/// run, another token or protocol), then the kube-mode features over a
/// minted token in kube mode.
fn features(w: &mut String, r: &Results) {
    let rates = r.rates("overhead");
    let file_mode = FEATURES.iter().any(|(t, _)| {
        rates
            .iter()
            .any(|&rate| r.load("overhead", t, Some(rate)).is_some())
    });
    let kube_mode = !r.rates(KUBE_FEATURES).is_empty() || kube_skipped(r).is_some();
    if !file_mode && !kube_mode {
        return;
    }
    let _ = writeln!(
        w,
        "### Cost of the features
"
    );
    if file_mode {
        file_mode_features(w, r, &rates);
    }
    if kube_mode {
        kube_mode_features(w, r);
    }
    let _ = writeln!(
        w,
        "Other features' costs are in their own sections: a streamed request (added time to \
         first byte, section 2), 100,000 tokens against 10 (section 4), pricing (the table \
         above). Budgets and keyless (federated) tokens exist only in kube mode: their rows are \
         the kube-mode table.\n"
    );
}

fn cpu_per_request(l: Option<&LoadResult>) -> Option<f64> {
    l.and_then(|l| l.server.as_ref())
        .map(|s| s.cpu_us_per_request)
}

fn file_mode_features(w: &mut String, r: &Results, rates: &[f64]) {
    let _ = writeln!(
        w,
        "The same strake-proxy process as *strake*, in the same run: \
         a row differs from *strake* only by the feature named. *Δ* is the feature's added latency \
         minus strake's at that rate (within the run's noise, see direct-repeat, it is zero), and \
         its CPU per request over strake's.\n\n\
         | feature | rate (rps) | added p50 | added p99 | Δ p50 | Δ p99 | CPU / req | ÷ strake CPU |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (t, what) in FEATURES {
        for &rate in rates {
            let (Some(f), Some(s)) = (
                added(r, "overhead", t, rate),
                added(r, "overhead", "strake", rate),
            ) else {
                continue;
            };
            let (fc, sc) = (
                cpu_per_request(r.load("overhead", t, Some(rate))),
                cpu_per_request(r.load("overhead", "strake", Some(rate))),
            );
            let _ = writeln!(
                w,
                "| {what} | {rate:.0} | {} | {} | {} | {} | {} | {} |",
                us(f.0),
                us(f.1),
                us(f.0 - s.0),
                us(f.1 - s.1),
                fc.map_or("—".into(), us),
                fc.zip(sc)
                    .map_or("—".into(), |(a, b)| format!("{:.2}", a / b)),
            );
        }
    }
    let _ = writeln!(w);
}

fn kube_skipped(r: &Results) -> Option<&Skipped> {
    r.skipped
        .iter()
        .find(|s| s.meta.experiment == KUBE_FEATURES)
}

/// Budgets and keyless tokens: a kube-mode proxy of the bench's own, Δ
/// against a minted token on that proxy.
fn kube_mode_features(w: &mut String, r: &Results) {
    let rates = r.rates(KUBE_FEATURES);
    if rates.is_empty() {
        let why = kube_skipped(r).map_or("the step did not run", |s| s.reason.as_str());
        let _ = writeln!(
            w,
            "**Kube mode** (budgets, keyless tokens): not measured in this run: {why}.\n"
        );
        return;
    }
    let _ = writeln!(
        w,
        "**Kube mode.** Budgets and keyless tokens exist only in kube mode, so these rows come \
         from a proxy of their own: the same release build of strake-proxy with `--kube`, pinned \
         like the others, watching the local control plane's proxy namespace (`make dev-up`), \
         where an operator (the same release build, started for this step) publishes three \
         StrakeTokens' records. Same mock, body and connections as above. What differs from \
         file mode: the tokens reach the proxy as Secrets through a watch, not from a file; the \
         proxy counts its replicas from an EndpointSlice; the operator collects its usage every \
         second and republishes the budget's spend into the record the proxy watches. So *Δ* is \
         against the minted token of this table (the kube-mode baseline), not against *strake* \
         above; direct was measured in the same step at each rate, the order of the four \
         reversed from one rate to the next. The keyless token's signature is verified on its \
         first request; the rest hit the proxy's cache of verified JWTs (by hash, until `exp`, \
         at most 5 minutes), as a workload re-sending its token does.\n\n\
         | feature, kube mode | rate (rps) | added p50 | added p99 | Δ p50 | Δ p99 | CPU / req | ÷ minted CPU | errors |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (t, what) in KUBE_ROWS {
        for &rate in &rates {
            let (Some(l), Some(f)) = (
                r.load(KUBE_FEATURES, t, Some(rate)),
                added(r, KUBE_FEATURES, t, rate),
            ) else {
                continue;
            };
            let base = added(r, KUBE_FEATURES, MINTED, rate).filter(|_| t != MINTED);
            let (fc, bc) = (
                cpu_per_request(Some(l)),
                cpu_per_request(r.load(KUBE_FEATURES, MINTED, Some(rate))).filter(|_| t != MINTED),
            );
            let _ = writeln!(
                w,
                "| {what} | {rate:.0} | {} | {} | {} | {} | {} | {} | {} |",
                us(f.0),
                us(f.1),
                base.map_or("—".into(), |b| us(f.0 - b.0)),
                base.map_or("—".into(), |b| us(f.1 - b.1)),
                fc.map_or("—".into(), us),
                fc.zip(bc)
                    .map_or("—".into(), |(a, b)| format!("{:.2}", a / b)),
                errors(l),
            );
        }
    }
    let _ = writeln!(w);
    let loads: Vec<&LoadResult> = r
        .loads
        .iter()
        .filter(|l| l.meta.experiment == KUBE_FEATURES && l.meta.target != "direct")
        .collect();
    let total: u64 = loads.iter().map(|l| l.requests).sum();
    let answered_200: u64 = loads
        .iter()
        .flat_map(|l| &l.statuses)
        .filter(|(s, _)| *s == 200)
        .map(|(_, n)| n)
        .sum();
    let mut said = if answered_200 == total {
        format!(
            "No request was refused: all {} measured kube-mode requests were answered 200.",
            thousands(total)
        )
    } else {
        format!(
            "**{} of {} measured kube-mode requests were not answered 200** (see errors).",
            thousands(total - answered_200),
            thousands(total)
        )
    };
    match r
        .budget_spends
        .iter()
        .find(|b| b.meta.experiment == KUBE_FEATURES)
    {
        Some(b) => said.push_str(&format!(
            " The budget (${} a {}) had counted {} requests and ${} in {} by the end of the step \
             (its status, as the operator collected it); phase {}.",
            b.limit_usd,
            b.period,
            thousands(b.requests),
            b.spent_usd,
            b.status_period,
            b.phase
        )),
        None => said.push_str(" The budget's spend was not read back."),
    }
    let _ = writeln!(w, "{said}\n");
}

/// Pricing on (`strake`, the benchmark's model priced) against off
/// (`strake-nopricing`), same run, same rates.
fn pricing(w: &mut String, r: &Results, rates: &[f64]) {
    if !rates
        .iter()
        .any(|&rate| r.load("overhead", "strake-nopricing", Some(rate)).is_some())
    {
        return;
    }
    let _ = writeln!(
        w,
        "Pricing on (*strake*: every request priced, spend series updated) against off \
         (*strake-nopricing*: `--no-pricing`), same run. Bound: pricing adds at most {:.0} % to \
         Strake's request-path cost; CPU per request is the figure timing noise does not blur.\n\n\
         | rate (rps) | added p50 on | off | added p99 on | off | server CPU / req on | off | CPU on ÷ off |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        PRICING_OVERHEAD * 100.0
    );
    for &rate in rates {
        let (Some(on), Some(off)) = (
            r.load("overhead", "strake", Some(rate)),
            r.load("overhead", "strake-nopricing", Some(rate)),
        ) else {
            continue;
        };
        let a_on = added(r, "overhead", "strake", rate);
        let a_off = added(r, "overhead", "strake-nopricing", rate);
        let cell =
            |a: Option<(f64, f64, f64)>, i: usize| a.map_or("—".into(), |a| us(pick(a, i)));
        let cpu = |l: &LoadResult| l.server.as_ref().map(|s| s.cpu_us_per_request);
        let _ = writeln!(
            w,
            "| {rate:.0} | {} | {} | {} | {} | {} | {} | {} |",
            cell(a_on, 0),
            cell(a_off, 0),
            cell(a_on, 1),
            cell(a_off, 1),
            cpu(on).map_or("—".into(), us),
            cpu(off).map_or("—".into(), us),
            match (cpu(on), cpu(off)) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.3}", a / b),
                _ => "—".into(),
            },
        );
    }
    let _ = writeln!(w);
}

fn pick(a: (f64, f64, f64), i: usize) -> f64 {
    match i {
        0 => a.0,
        1 => a.1,
        _ => a.2,
    }
}

fn errors(l: &LoadResult) -> String {
    if l.errors == 0 {
        return "0".into();
    }
    let detail: Vec<String> = l
        .statuses
        .iter()
        .filter(|(s, _)| !(200..300).contains(s))
        .map(|(s, n)| {
            if *s == 0 {
                format!("{n} failed")
            } else {
                format!("{n}×{s}")
            }
        })
        .collect();
    format!("{} ({})", l.errors, detail.join(", "))
}

fn saturation(w: &mut String, r: &Results) {
    if !TARGETS.iter().any(|t| r.saturation(t).is_some()) {
        return;
    }
    let _ = writeln!(
        w,
        "## Throughput (closed loop, saturation)\n\nEvery connection sends its next request as \
         soon as the previous one is answered; the server under test has its own core.\n\n\
         | target | max sustained rps | Strake ÷ this | p50 | p99 | server CPU / req | server core busy | rps per core at that CPU cost | server RSS | errors |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let strake = r.saturation("strake").map(|s| s.achieved_rps);
    for t in TARGETS {
        let Some(l) = r.saturation(t) else {
            continue;
        };
        let _ = writeln!(
            w,
            "| {t} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            rps(l.achieved_rps),
            strake.map_or("—".into(), |s| ratio(s, l.achieved_rps)),
            us(l.latency.p50_us),
            us(l.latency.p99_us),
            l.server
                .as_ref()
                .map_or("—".into(), |s| us(s.cpu_us_per_request)),
            pct(utilization(l)),
            capacity(l).map_or("—".into(), rps),
            l.server.as_ref().map_or("—".into(), |s| format!(
                "{:.0} MiB",
                s.rss_kib as f64 / 1024.0
            )),
            errors(l),
        );
    }
    let _ = writeln!(
        w,
        "\nDirect is the ceiling of the load generator and the mock sharing one core, not a server \
         under test. A server whose core is well below 100 % busy was not the limit: the other core \
         was, and its \"rps per core\" (1 s ÷ its CPU per request) is what its own core would carry.\n"
    );
}

fn stream_pair<'a>(r: &'a Results, target: &str) -> Option<(&'a StreamResult, &'a StreamResult)> {
    let base = r.streams.iter().find(|s| s.meta.target == "direct")?;
    let t = r.streams.iter().find(|s| s.meta.target == target)?;
    Some((base, t))
}

fn streaming(w: &mut String, r: &Results) {
    if r.streams.is_empty() {
        return;
    }
    let s0 = &r.streams[0];
    let _ = writeln!(
        w,
        "## 2. Streaming\n\n{} streams, {} at a time, of ~{:.0} server-sent events each (mock: \
         content chunks at a fixed interval). Time to first byte is request sent → first body byte; \
         a gap is the time between two consecutive events as the client receives them.\n\n\
         | target | TTFB p50 | TTFB p99 | added TTFB p50 | added TTFB p99 | gap p50 | gap p99 | gap max | errors |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        s0.streams, s0.concurrency, s0.events_per_stream
    );
    let base = r.streams.iter().find(|s| s.meta.target == "direct");
    for t in TARGETS {
        let Some(s) = r.streams.iter().find(|s| s.meta.target == t) else {
            continue;
        };
        let (a50, a99) = match (t, base) {
            ("direct", _) | (_, None) => ("—".into(), "—".into()),
            (_, Some(b)) => (
                us(s.ttfb.p50_us - b.ttfb.p50_us),
                us(s.ttfb.p99_us - b.ttfb.p99_us),
            ),
        };
        let _ = writeln!(
            w,
            "| {t} | {} | {} | {a50} | {a99} | {} | {} | {} | {} |",
            us(s.ttfb.p50_us),
            us(s.ttfb.p99_us),
            us(s.gap.p50_us),
            us(s.gap.p99_us),
            us(s.gap.max_us),
            s.errors
        );
    }
    let _ = writeln!(w);
}

fn revocation(w: &mut String, r: &Results) {
    let _ = writeln!(
        w,
        "## 3. Revocation\n\nOn the local control plane (`make dev-up`: a real kube-apiserver, the \
         operator and the proxy in kube mode, on the benchmarks' build when the run starts the stack): create a StrakeToken, wait until the proxy accepts \
         it, delete the StrakeToken through the API and probe the proxy until it answers 401.\n\n\
         | path | p50 | p99 | max | trials | note |\n| --- | ---: | ---: | ---: | ---: | --- |"
    );
    for v in &r.revocations {
        let s = sorted(&v.trials_ms);
        let issue = sorted(&v.issue_ms);
        let _ = writeln!(
            w,
            "| StrakeToken deleted → 401 at the proxy | {} | {} | {} | {}{} | measured, probing every {:.0} ms; a new token worked after {} (p50) |",
            ms(nearest_rank(&s, 50.0)),
            ms(nearest_rank(&s, 99.0)),
            ms(*s.last().unwrap_or(&f64::NAN)),
            v.trials_ms.len(),
            if v.failures > 0 {
                format!(" ({} failed)", v.failures)
            } else {
                String::new()
            },
            v.poll_interval_ms,
            ms(nearest_rank(&issue, 50.0)),
        );
    }
    if r.revocations.is_empty() {
        let _ = writeln!(
            w,
            "| StrakeToken deleted → 401 at the proxy | — | — | — | 0 | not measured (see below) |"
        );
    }
    let _ = writeln!(
        w,
        "| key in a mounted Secret volume | 60–90 s | | | | documented, not measured: the kubelet \
         refreshes mounted Secrets on its periodic sync (`syncFrequency`, 60 s default) plus its \
         Secret cache TTL, so a change reaches the pod after up to a minute or more |\n"
    );
}

struct ScaleRow<'a> {
    count: u64,
    startup: Option<&'a StartupResult>,
    load: Option<&'a LoadResult>,
    added: Option<(f64, f64, f64)>,
    /// The direct baseline measured beside it was far off the overhead
    /// run's at the same rate: something else was using the machine.
    disturbed: bool,
}

/// A baseline more than this many times slower than the same measurement
/// in the overhead section means the machine was busy with other work.
const DISTURBED: f64 = 3.0;

fn first_count(row: &ScaleRow<'_>) -> String {
    thousands(row.count)
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn scale_rows(r: &Results) -> Vec<ScaleRow<'_>> {
    let mut counts: Vec<u64> = r
        .startups
        .iter()
        .map(|s| &s.meta.experiment)
        .chain(r.loads.iter().map(|l| &l.meta.experiment))
        .filter_map(|e| e.strip_prefix("scale-")?.parse().ok())
        .collect();
    counts.sort();
    counts.dedup();
    counts
        .into_iter()
        .map(|count| {
            let exp = format!("scale-{count}");
            let load = r
                .loads
                .iter()
                .find(|l| l.meta.experiment == exp && l.meta.target == "strake");
            let added = load.and_then(|l| {
                let base = r
                    .loads
                    .iter()
                    .find(|b| b.meta.experiment == exp && b.meta.target == "direct")
                    .or_else(|| r.load("overhead", "direct", l.rate))?;
                Some((
                    l.latency.p50_us - base.latency.p50_us,
                    l.latency.p99_us - base.latency.p99_us,
                    l.latency.p999_us - base.latency.p999_us,
                ))
            });
            let disturbed = r
                .loads
                .iter()
                .find(|b| b.meta.experiment == exp && b.meta.target == "direct")
                .zip(load.and_then(|l| r.load("overhead", "direct", l.rate)))
                .is_some_and(|(here, there)| {
                    here.latency.p50_us > DISTURBED * there.latency.p50_us
                        || here.latency.p99_us > DISTURBED * there.latency.p99_us
                });
            ScaleRow {
                count,
                startup: r
                    .startups
                    .iter()
                    .find(|s| s.meta.experiment == exp && s.meta.target == "strake"),
                load,
                added,
                disturbed,
            }
        })
        .collect()
}

fn scale(w: &mut String, r: &Results) {
    let rows = scale_rows(r);
    if !rows.is_empty() {
        let rate = rows
            .iter()
            .find_map(|row| row.load.and_then(|l| l.rate))
            .unwrap_or(f64::NAN);
        let _ = writeln!(
            w,
            "## 4. Scale\n\nThe proxy in file mode with a generated config of N minted tokens \
             (SHA-256 only). Startup is process start → `/readyz` 200. The load at {rate:.0} rps \
             rotates over a sample of up to 1,000 of the tokens, so lookups are spread over the \
             index. RSS after load is the proxy's resident memory at the end of the load run.\n\n\
             | tokens | startup → ready | RSS at ready (peak) | RSS after load | p50 | p99 | added p50 | added p99 | server CPU / req |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for row in &rows {
            let mib = |kib: u64| format!("{:.0} MiB", kib as f64 / 1024.0);
            let _ = writeln!(
                w,
                "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
                thousands(row.count),
                if row.disturbed {
                    " (machine busy: direct was >3× slower than in section 1)"
                } else {
                    ""
                },
                row.startup.map_or("—".into(), |s| ms(s.ready_ms)),
                row.startup.map_or("—".into(), |s| match s.peak_rss_kib {
                    Some(peak) => format!("{} ({})", mib(s.rss_kib), mib(peak)),
                    None => mib(s.rss_kib),
                }),
                row.load
                    .and_then(|l| l.server.as_ref())
                    .map_or("—".into(), |s| mib(s.rss_kib)),
                row.load.map_or("—".into(), |l| us(l.latency.p50_us)),
                row.load.map_or("—".into(), |l| us(l.latency.p99_us)),
                row.added.map_or("—".into(), |a| us(a.0)),
                row.added.map_or("—".into(), |a| us(a.1)),
                row.load
                    .and_then(|l| l.server.as_ref())
                    .map_or("—".into(), |s| us(s.cpu_us_per_request)),
            );
        }
        let _ = writeln!(w);
    }
    if !r.usage_writes.is_empty() {
        let _ = writeln!(
            w,
            "Usage status writes on the local control plane: N StrakeTokens, a simulated proxy \
             replica reporting new usage for every one of them at every collection round, the \
             operator's pacer at its default; writes counted through a watch (updates that \
             changed `status.usage`) after a warm-up past the first round's burst.\n\n\
             | active tokens | writes counted | window | writes/s | bound | tokens refreshed |\n| ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for u in &r.usage_writes {
            let _ = writeln!(
                w,
                "| {} | {} | {:.0} s | {:.1} | {:.0} | {} |",
                thousands(u.tokens as u64),
                u.writes,
                u.duration_s,
                u.writes_per_s,
                u.bound_per_s,
                thousands(u.tokens_refreshed as u64),
            );
        }
        let _ = writeln!(w);
    }
    if !r.operators.is_empty() {
        let _ = writeln!(
            w,
            "Operator on the local control plane: create N StrakeTokens through the API ({} creates \
             in flight), count them `Ready=True` through a watch. Meanwhile tokens issued before \
             the storm are deleted one at a time and the proxy is probed every 5 ms until each \
             answers 401. API requests are the API server's `apiserver_request_total` over the \
             storm (every client: the bench's creates, the operator, the proxies; watches not \
             counted), per token.\n\n\
             The load average is the machine's (1 minute) when the last token was Ready.\n\n\
             | StrakeTokens | creates took | all Ready after | tokens/s | operator RSS before | operator RSS peak | revocations during it | revocation p50 | revocation p99 | API requests / token | of them writes | load average |\n\
             | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            r.operators[0].concurrency,
        );
        for o in &r.operators {
            let mib = |kib: Option<u64>| {
                kib.map_or("—".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
            };
            let mut sorted = o.revocation_ms.clone();
            sorted.sort_by(f64::total_cmp);
            let ms = |q: f64| {
                if sorted.is_empty() {
                    "—".to_string()
                } else {
                    format!("{:.0} ms", nearest_rank(&sorted, q))
                }
            };
            let calls: f64 = o.api_calls.iter().map(|c| c.per_token).sum();
            let writes: f64 = o
                .api_calls
                .iter()
                .filter(|c| c.is_write())
                .map(|c| c.per_token)
                .sum();
            let _ = writeln!(
                w,
                "| {} | {:.1} s | {} | {} | {} | {} | {} | {} | {} | {calls:.1} | {writes:.1} | {} |",
                thousands(o.tokens as u64),
                o.create_s,
                if o.all_ready_s.is_finite() {
                    format!("{:.1} s", o.all_ready_s)
                } else {
                    format!("{} Ready at the timeout", o.ready)
                },
                if o.all_ready_s.is_finite() {
                    format!("{:.0}", o.tokens as f64 / o.all_ready_s)
                } else {
                    "—".into()
                },
                mib(o.operator_rss_before_kib),
                mib(o.operator_rss_kib),
                sorted.len(),
                ms(50.0),
                ms(99.0),
                o.load_average.map_or("—".into(), |l| format!("{l:.1}")),
            );
        }
        let _ = writeln!(w);
        if let Some(o) = r.operators.last() {
            let breakdown: Vec<String> = o
                .api_calls
                .iter()
                .filter(|c| c.per_token >= 0.05)
                .map(|c| format!("{} {} {:.2}", c.verb, c.resource, c.per_token))
                .collect();
            let _ = writeln!(
                w,
                "API requests per token, by verb and resource: {}.\n",
                breakdown.join(", ")
            );
        }
        let _ = writeln!(
            w,
            "Where the operator's time goes under a storm of new tokens, and what bounds it: \
             [operator-scale.md](operator-scale.md).\n"
        );
    }
}

/// `target`'s instructions per request under callgrind, if it was profiled.
fn instructions_per_request(r: &Results, target: &str) -> Option<f64> {
    r.profiles
        .iter()
        .find(|p| p.meta.target == target)
        .map(|p| p.per_request)
}

fn profile(w: &mut String, r: &Results) {
    if r.profiles.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "## 5. Instructions per request (callgrind)\n\nUser-space instructions per proxied request, \
         counted by callgrind over {} requests after a warm-up (`bench/profile.sh`). Exact and \
         repeatable, unlike timings on a shared VM; the kernel's share (socket I/O) is not counted.\n\n\
         | server | instructions / request | ÷ nginx |\n| --- | ---: | ---: |",
        r.profiles[0].requests
    );
    let nginx = instructions_per_request(r, "nginx");
    for p in &r.profiles {
        let _ = writeln!(
            w,
            "| {} | {} | {} |",
            p.meta.target,
            thousands(p.per_request.round() as u64),
            nginx.map_or("—".into(), |n| ratio(p.per_request, n)),
        );
    }
    let _ = writeln!(w);
    for p in r
        .profiles
        .iter()
        .filter(|p| !p.top_own_inclusive.is_empty())
    {
        let _ = writeln!(
            w,
            "Where {}'s instructions go: its own functions with everything they call \
             (stages nest, so shares overlap), and the functions that execute the most \
             instructions themselves.\n\n| inclusive | {} function | | self | function |\n| ---: | --- | --- | ---: | --- |",
            p.meta.target, p.meta.target
        );
        let rows = p.top_own_inclusive.len().max(p.top_self.len());
        for i in 0..rows {
            let cell = |v: &[(f64, String)]| match v.get(i) {
                Some((pct, name)) => (format!("{pct:.1} %"), format!("`{}`", short_name(name))),
                None => (String::new(), String::new()),
            };
            let (ip, iname) = cell(&p.top_own_inclusive);
            let (sp, sname) = cell(&p.top_self);
            let _ = writeln!(w, "| {ip} | {iname} | | {sp} | {sname} |");
        }
        let _ = writeln!(w);
    }
}

/// Whether a `<` below the innermost one hides its contents.
fn hidden_below(stack: &[bool]) -> bool {
    stack[..stack.len().saturating_sub(1)]
        .iter()
        .any(|keep| !keep)
}

/// A function name short enough for a table cell: generic arguments and
/// closure suffixes dropped; a qualified path (`<T as Trait>::f`) is kept.
fn short_name(name: &str) -> String {
    let mut out = String::new();
    // Per open `<`: does it start a qualified path (kept) or generic arguments (dropped)?
    let mut stack: Vec<bool> = Vec::new();
    for c in name.chars() {
        let hidden = stack.iter().any(|keep| !keep);
        match c {
            '<' => {
                let qualified =
                    !hidden && (out.is_empty() || out.ends_with("::") || out.ends_with('<'));
                if !hidden {
                    out.push_str(if qualified { "<" } else { "<…>" });
                }
                stack.push(qualified);
            }
            // A qualified path closes visibly unless it sits inside hidden arguments.
            '>' if stack.last() == Some(&true) && !hidden_below(&stack) => {
                stack.pop();
                out.push('>');
            }
            '>' if !stack.is_empty() => {
                stack.pop();
            }
            _ if !hidden => out.push(c),
            _ => {}
        }
    }
    let out = out.replace("::{{closure}}", "").replace('|', "\\|");
    if out.chars().count() > 90 {
        format!("{}…", out.chars().take(89).collect::<String>())
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(
            short_name("hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_catch"),
            "hyper::proto::h1::dispatch::Dispatcher<…>::poll_catch"
        );
        assert_eq!(
            short_name("strake_proxy::pipeline::handle::{{closure}}"),
            "strake_proxy::pipeline::handle"
        );
        assert_eq!(
            short_name("<&mut W as core::fmt::Write>::write_str"),
            "<&mut W as core::fmt::Write>::write_str"
        );
        assert_eq!(
            short_name("<alloc::vec::Vec<T,A> as core::ops::Drop>::drop"),
            "<alloc::vec::Vec<…> as core::ops::Drop>::drop"
        );
    }

    fn profiled(target: &str, per_request: f64) -> ProfileResult {
        ProfileResult {
            meta: crate::results::Meta {
                target: target.into(),
                experiment: "profile".into(),
            },
            requests: 2000,
            instructions: (per_request * 2000.0) as u64,
            per_request,
            top_self: Vec::new(),
            top_own_inclusive: Vec::new(),
        }
    }

    #[test]
    fn instructions_are_held_to_twice_nginx_s() {
        let target_row = |strake: f64| {
            let mut r = kube_fixture();
            r.profiles = vec![profiled("nginx", 28_400.0), profiled("strake", strake)];
            let md = render(&r, "", None);
            let line = md
                .lines()
                .find(|l| l.starts_with("| instructions per request (callgrind) |"))
                .unwrap_or_else(|| panic!("no instructions row in\n{md}"))
                .to_owned();
            assert!(md.contains("#where-the-targets-miss-and-what-bounds-them"));
            line
        };
        assert_eq!(
            target_row(92_029.0),
            "| instructions per request (callgrind) | ≤ 2× nginx's | 92,029 vs 28,400 (3.24×) | **missed** |"
        );
        assert!(target_row(56_800.0).ends_with("| met |"));
    }

    fn kube_fixture() -> Results {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/kube-features");
        Results::from_records(crate::results::read_dir(&dir).expect("the fixture results"))
    }

    fn row<'a>(md: &'a str, what: &str, rate: &str) -> Vec<&'a str> {
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {what} | {rate} |")))
            .unwrap_or_else(|| panic!("no row for {what} at {rate} in\n{md}"));
        line.trim_matches('|').split(" | ").map(str::trim).collect()
    }

    #[test]
    fn kube_mode_rows_are_measured_against_the_kube_minted_baseline() {
        let md = render(&kube_fixture(), "", None);
        let (budget, keyless, minted) = (KUBE_ROWS[1].1, KUBE_ROWS[2].1, KUBE_ROWS[0].1);
        // feature, rate, added p50, added p99, Δ p50, Δ p99, CPU, ÷ minted, errors
        assert_eq!(
            row(&md, minted, "500"),
            [
                "a minted token (the kube-mode baseline)",
                "500",
                "220 µs",
                "800 µs",
                "—",
                "—",
                "230 µs",
                "—",
                "0"
            ]
        );
        assert_eq!(
            row(&md, budget, "500")[2..],
            [
                "240 µs", "900 µs", "20.0 µs", "100 µs", "240 µs", "1.04", "0"
            ]
        );
        assert_eq!(
            row(&md, budget, "2000")[2..],
            [
                "160 µs", "1100 µs", "10.0 µs", "-100 µs", "168 µs", "1.05", "0"
            ]
        );
        assert_eq!(
            row(&md, keyless, "2000")[2..],
            [
                "180 µs", "1300 µs", "30.0 µs", "100 µs", "176 µs", "1.10", "0"
            ]
        );
        // Rows follow the table order: every budget row before the keyless ones.
        assert!(md.find(budget).unwrap() < md.find(keyless).unwrap());
        assert!(md.contains("**Kube mode.**"), "{md}");
        assert!(md.contains("What differs from file mode"), "{md}");
        assert!(
            md.contains(
                "No request was refused: all 75,000 measured kube-mode requests were answered 200."
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "The budget ($1000000 a month) had counted 30,000 requests and $0.10875 in 2026-12"
            ),
            "{md}"
        );
        assert!(md.contains("their rows are the kube-mode table"), "{md}");
        // No file-mode run here: the kube rows stand alone under the heading.
        assert!(
            md.contains("### Cost of the features\n\n**Kube mode.**"),
            "{md}"
        );
        assert!(!md.contains("## Not measured in this run"), "{md}");
    }

    #[test]
    fn a_refused_kube_mode_request_is_reported() {
        let mut r = kube_fixture();
        let l = r
            .loads
            .iter_mut()
            .find(|l| l.meta.target == BUDGET && l.rate == Some(2000.0))
            .unwrap();
        l.ok -= 7;
        l.errors = 7;
        l.statuses = vec![(200, l.ok), (429, 7)];
        let md = render(&r, "", None);
        assert_eq!(row(&md, KUBE_ROWS[1].1, "2000")[8], "7 (7×429)");
        assert!(
            md.contains("**7 of 75,000 measured kube-mode requests were not answered 200**"),
            "{md}"
        );
    }

    #[test]
    fn a_skipped_kube_mode_step_says_why_in_place_of_its_rows() {
        let reason = "make dev-up failed (see target/bench/short/logs/dev-up.log)";
        let r = Results::from_records(vec![Record::Skipped(Skipped {
            meta: crate::results::Meta {
                target: "strake".into(),
                experiment: KUBE_FEATURES.into(),
            },
            reason: reason.into(),
        })]);
        let md = render(&r, "", None);
        assert!(
            md.contains(&format!(
                "### Cost of the features\n\n**Kube mode** (budgets, keyless tokens): not measured in this run: {reason}.\n"
            )),
            "{md}"
        );
        assert!(
            md.contains(&format!("- **strake** (kube-features): {reason}")),
            "{md}"
        );
        assert!(!md.contains("| feature, kube mode |"), "{md}");
    }

    #[test]
    fn formats() {
        assert_eq!(us(12.34), "12.3 µs");
        assert_eq!(us(123.4), "123 µs");
        assert_eq!(us(12_345.0), "12.3 ms");
        assert_eq!(ratio(30.0, 10.0), "3.00×");
        assert_eq!(ratio(300.0, 10.0), "30×");
        assert_eq!(ratio(1.0, 0.0), "—");
        assert_eq!(ratio(-3.0, 2.0), "—");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(10), "10");
        assert_eq!(ms(1500.0), "1500 ms");
    }
}
