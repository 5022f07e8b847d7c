//! Log output: every line, access lines and tracing's alike, goes through
//! one in-memory buffer that a writer thread drains to stderr. A request
//! never waits on `write(2)`, a busy proxy writes its lines in batches, and
//! lines never interleave.
//!
//! The writer writes what has collected every [`FLUSH_INTERVAL`]: ten
//! wake-ups a second whatever the request rate, and none on the request
//! path (waking it per line cost a system call, and on a busy core the
//! woken writer could run before the response the line describes was
//! sent). A warning or an error, or a buffer past [`EAGER_BYTES`], is
//! written at once. If stderr stalls
//! (nobody reads the pipe) and the buffer holds [`MAX_BUFFERED`], further
//! lines are dropped and counted in `strake_log_lines_dropped_total`:
//! logging never slows requests down.
//!
//! Access lines are formatted here too ([`AccessLine`]), straight into a
//! reused buffer: the generic tracing JSON formatter cost about a quarter
//! of a request's instructions.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

/// How often the writer writes what has collected.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A buffer this full is written without waiting for the interval.
pub const EAGER_BYTES: usize = 64 * 1024;
/// The most the buffer holds while stderr is stalled; lines beyond are dropped.
pub const MAX_BUFFERED: usize = 16 * 1024 * 1024;
/// The most bytes of a client-chosen value (method, path, model) an access
/// line carries; longer ones are cut at a character boundary and end in `…`.
pub const MAX_LOGGED_VALUE_BYTES: usize = 512;

static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);
static GLOBAL: OnceLock<Global> = OnceLock::new();

struct Global {
    sink: LogSink,
    /// Access lines are formatted here as JSON (else they go through tracing).
    json_access: bool,
}

/// Lines dropped because the output stalled (exported as
/// `strake_log_lines_dropped_total`).
pub fn dropped_lines() -> &'static Counter {
    &DROPPED
}

/// Starts the process-wide sink on stderr (once; later calls return the
/// first sink). The binary installs it together with its tracing
/// subscriber; `json_access`: access lines are JSON (the `json` log format).
pub fn install(json_access: bool) -> &'static LogSink {
    &GLOBAL
        .get_or_init(|| Global {
            sink: LogSink::new(Box::new(std::io::stderr()), MAX_BUFFERED),
            json_access,
        })
        .sink
}

/// The process-wide sink, if [`install`]ed.
pub fn global() -> Option<&'static LogSink> {
    GLOBAL.get().map(|g| &g.sink)
}

/// A buffered, batching line sink drained by its own thread. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for lines.
    wake: Condvar,
    /// [`LogSink::flush`] waits here for the writer.
    written: Condvar,
    limit: usize,
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// Write without waiting for the interval.
    urgent: bool,
    /// Bytes ever appended, and ever written: `flush` waits for the second
    /// to reach the first.
    appended: u64,
    written: u64,
}

impl LogSink {
    /// A sink writing to `out`, holding at most `limit` bytes while `out`
    /// is slow.
    pub fn new(out: Box<dyn Write + Send>, limit: usize) -> LogSink {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            written: Condvar::new(),
            limit,
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.run(out))
            .expect("the log writer thread starts");
        LogSink { shared }
    }

    /// Queues one or more whole lines. Never blocks on the output.
    pub fn append(&self, lines: &[u8], urgent: bool) {
        let mut state = self.shared.lock();
        if state.buf.len() + lines.len() > self.shared.limit {
            drop(state);
            DROPPED.inc();
            return;
        }
        let before = state.buf.len();
        state.buf.extend_from_slice(lines);
        state.appended += lines.len() as u64;
        // The writer wakes on its own every interval; waking it for a
        // line would cost a system call, and on a busy core the woken
        // writer can run before the response this line describes is sent.
        let notify =
            (urgent && !state.urgent) || (before < EAGER_BYTES && state.buf.len() >= EAGER_BYTES);
        state.urgent |= urgent;
        drop(state);
        if notify {
            self.shared.wake.notify_one();
        }
    }

    /// Writes everything queued so far and waits until it is written (or
    /// `limit` passes: a stalled stderr must not hang shutdown).
    pub fn flush(&self, limit: Duration) {
        let mut state = self.shared.lock();
        let target = state.appended;
        if state.written >= target {
            return;
        }
        state.urgent = true;
        self.shared.wake.notify_one();
        let _ = self
            .shared
            .written
            .wait_timeout_while(state, limit, |s| s.written < target);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the buffer invalid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, mut out: Box<dyn Write + Send>) {
        let mut batch = Vec::new();
        loop {
            let mut state = self
                .wake
                .wait_timeout_while(self.lock(), FLUSH_INTERVAL, |s| {
                    !s.urgent && s.buf.len() < EAGER_BYTES
                })
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if state.buf.is_empty() {
                state.urgent = false;
                continue;
            }
            std::mem::swap(&mut state.buf, &mut batch);
            state.urgent = false;
            let upto = state.appended;
            drop(state);
            // Nowhere to report a failed write to: the lines are lost.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            if batch.capacity() > 4 * EAGER_BYTES {
                batch.shrink_to(EAGER_BYTES);
            }
            self.lock().written = upto;
            self.written.notify_all();
        }
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> SinkWriter<'a> {
        SinkWriter {
            sink: self,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SinkWriter<'a> {
        SinkWriter {
            sink: self,
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

/// tracing's handle on the sink: the fmt layer writes each event whole, in
/// one call.
pub struct SinkWriter<'a> {
    sink: &'a LogSink,
    urgent: bool,
}

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sink.append(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One access line: what a request did, never a token, a key, a query
/// string or a header value. Field for field what tracing's JSON formatter
/// printed for the `access` event, so both paths read the same. The values
/// a client chooses are capped at [`MAX_LOGGED_VALUE_BYTES`] when emitted.
#[derive(Serialize)]
pub struct AccessLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    pub status: u16,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Of `input_tokens`, read from the provider's prompt cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_input_tokens: Option<u64>,
    /// Of `input_tokens`, written to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject: Option<&'static str>,
}

/// The envelope tracing's JSON formatter puts around an event's fields:
/// what [`AccessLine::write_json`] writes, by serde, for the tests.
#[cfg(test)]
#[derive(Serialize)]
struct Envelope<'a> {
    timestamp: &'a str,
    level: &'static str,
    #[serde(flatten)]
    line: &'a AccessLine<'a>,
    target: &'static str,
}

impl AccessLine<'_> {
    /// Emits the line on the `access` target (filtered by `RUST_LOG`, e.g.
    /// `access=off`): formatted here into the installed sink, else through
    /// tracing (the text format, embedders).
    pub fn emit(&self) {
        if !tracing::enabled!(target: "access", Level::INFO) {
            return;
        }
        self.capped(|line| line.emit_capped());
    }

    /// Calls `f` with a copy whose client-chosen values fit the cap
    /// (borrowed as they are when they already fit, as nearly always).
    fn capped<R>(&self, f: impl FnOnce(&AccessLine<'_>) -> R) -> R {
        let (method, path) = (cap(self.method), cap(self.path));
        let model = self.model.map(cap);
        f(&AccessLine {
            method: &method,
            path: &path,
            model: model.as_deref(),
            ..*self
        })
    }

    fn emit_capped(&self) {
        match GLOBAL.get() {
            Some(g) if g.json_access => self.emit_to(&g.sink, SystemTime::now()),
            _ => tracing::info!(
                target: "access",
                method = self.method,
                path = self.path,
                token = self.token,
                identity = self.identity,
                upstream = self.upstream,
                model = self.model,
                status = self.status,
                latency_ms = self.latency_ms,
                ttfb_ms = self.ttfb_ms,
                input_tokens = self.input_tokens,
                output_tokens = self.output_tokens,
                cached_input_tokens = self.cached_input_tokens,
                cache_write_tokens = self.cache_write_tokens,
                complete = self.complete,
                reject = self.reject,
            ),
        }
    }

    fn emit_to(&self, sink: &LogSink, now: SystemTime) {
        thread_local! {
            static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
        }
        LINE.with_borrow_mut(|buf| {
            buf.clear();
            self.write_json_capped(buf, now);
            sink.append(buf, false);
        });
    }

    /// The JSON line, newline included.
    pub fn write_json(&self, buf: &mut Vec<u8>, now: SystemTime) {
        self.capped(|line| line.write_json_capped(buf, now));
    }

    /// Written by hand, field for field what serde writes for [`Envelope`]
    /// (a property test holds them equal): serde's flattened map cost a
    /// fifth of the proxy's own work per request.
    fn write_json_capped(&self, buf: &mut Vec<u8>, now: SystemTime) {
        let stamp = rfc3339_micros(now);
        buf.extend_from_slice(b"{\"timestamp\":\"");
        buf.extend_from_slice(&stamp);
        buf.extend_from_slice(b"\",\"level\":\"INFO\"");
        field_str(buf, b",\"method\":", Some(self.method));
        field_str(buf, b",\"path\":", Some(self.path));
        field_str(buf, b",\"token\":", self.token);
        field_str(buf, b",\"identity\":", self.identity);
        field_str(buf, b",\"upstream\":", self.upstream);
        field_str(buf, b",\"model\":", self.model);
        field_u64(buf, b",\"status\":", Some(u64::from(self.status)));
        field_f64(buf, b",\"latency_ms\":", Some(self.latency_ms));
        field_f64(buf, b",\"ttfb_ms\":", self.ttfb_ms);
        field_u64(buf, b",\"input_tokens\":", self.input_tokens);
        field_u64(buf, b",\"output_tokens\":", self.output_tokens);
        field_u64(buf, b",\"cached_input_tokens\":", self.cached_input_tokens);
        field_u64(buf, b",\"cache_write_tokens\":", self.cache_write_tokens);
        buf.extend_from_slice(if self.complete {
            b",\"complete\":true"
        } else {
            b",\"complete\":false"
        });
        field_str(buf, b",\"reject\":", self.reject);
        buf.extend_from_slice(b",\"target\":\"access\"}\n");
    }
}

/// `name` (its comma, quotes and colon included) and `value` as a JSON
/// string, escaped as serde_json escapes; nothing when `None`. Nearly
/// every value needs no escape and is copied whole.
fn field_str(buf: &mut Vec<u8>, name: &[u8], value: Option<&str>) {
    let Some(value) = value else { return };
    buf.extend_from_slice(name);
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.push(b'"');
        buf.extend_from_slice(value.as_bytes());
        buf.push(b'"');
    } else {
        serde_json::to_writer(&mut *buf, value).expect("serializing to memory cannot fail");
    }
}

fn field_u64(buf: &mut Vec<u8>, name: &[u8], value: Option<u64>) {
    let Some(value) = value else { return };
    buf.extend_from_slice(name);
    // serde_json's integer text (itoa): a third of core::fmt's cost.
    serde_json::to_writer(&mut *buf, &value).expect("serializing to memory cannot fail");
}

/// serde_json's float text (shortest round trip; `null` if not finite).
fn field_f64(buf: &mut Vec<u8>, name: &[u8], value: Option<f64>) {
    let Some(value) = value else { return };
    buf.extend_from_slice(name);
    serde_json::to_writer(&mut *buf, &value).expect("serializing to memory cannot fail");
}

/// `value`, or its longest prefix within [`MAX_LOGGED_VALUE_BYTES`] (`…`
/// included) that ends on a character boundary.
fn cap(value: &str) -> Cow<'_, str> {
    if value.len() <= MAX_LOGGED_VALUE_BYTES {
        return Cow::Borrowed(value);
    }
    const MARK: &str = "…";
    let mut end = MAX_LOGGED_VALUE_BYTES - MARK.len();
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{MARK}", &value[..end]))
}

/// `2026-11-27T20:57:57.598138Z`: UTC, microseconds, as tracing prints it.
pub fn rfc3339_micros(t: SystemTime) -> [u8; 27] {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 6, u64::from(since.subsec_micros()));
    out
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// An output the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn at(secs: u64, micros: u32) -> String {
        let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros.into());
        String::from_utf8(rfc3339_micros(t).to_vec()).unwrap()
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
        assert_eq!(at(951_868_799, 999_999), "2000-02-29T23:59:59.999999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(at(1_795_813_077, 598_138), "2026-11-27T20:57:57.598138Z");
    }

    proptest::proptest! {
        /// Any instant from 1970 to 2400 reads as jiff formats it.
        #[test]
        fn timestamps_agree_with_jiff(secs in 0u64..13_569_465_600, micros in 0u32..1_000_000) {
            let expected = jiff::Timestamp::new(secs as i64, micros as i32 * 1000)
                .unwrap()
                .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
                .to_string();
            proptest::prop_assert_eq!(at(secs, micros), expected);
        }
    }

    #[test]
    fn access_lines_are_one_json_object_each_with_only_the_present_fields() {
        let line = AccessLine {
            method: "POST",
            path: "/v1/chat/\"quoted\"\n",
            token: Some("alice"),
            identity: Some("alice@example.com"),
            upstream: Some("team/openai"),
            model: None,
            status: 200,
            latency_ms: 1.25,
            ttfb_ms: Some(0.5),
            input_tokens: Some(12),
            output_tokens: None,
            cached_input_tokens: None,
            cache_write_tokens: None,
            complete: true,
            reject: None,
        };
        let mut buf = Vec::new();
        line.write_json(&mut buf, UNIX_EPOCH + Duration::from_secs(1_795_813_077));
        assert_eq!(buf.last(), Some(&b'\n'));
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "timestamp": "2026-11-27T20:57:57.000000Z",
                "level": "INFO",
                "method": "POST",
                "path": "/v1/chat/\"quoted\"\n",
                "token": "alice",
                "identity": "alice@example.com",
                "upstream": "team/openai",
                "status": 200,
                "latency_ms": 1.25,
                "ttfb_ms": 0.5,
                "input_tokens": 12,
                "complete": true,
                "target": "access",
            })
        );
    }

    proptest::proptest! {
        /// The hand-written line is byte for byte what serde writes for
        /// the same fields, escapes and float text included.
        #[test]
        fn access_lines_are_written_as_serde_writes_them(
            method in "[A-Z]{0,7}",
            path in "\\PC{0,40}|[\\x00-\\x7f]{0,40}",
            token in proptest::option::of("\\PC{0,20}"),
            identity in proptest::option::of("[\\x00-\\x7f]{0,20}"),
            upstream in proptest::option::of("[a-z/-]{0,20}"),
            model in proptest::option::of("\\PC{0,20}"),
            status: u16,
            latency_ms in proptest::num::f64::ANY,
            ttfb_ms in proptest::option::of(proptest::num::f64::ANY),
            counts: [Option<u64>; 4],
            complete: bool,
            reject in proptest::option::of(proptest::sample::select(vec!["rate_limited", "budget_exceeded"])),
        ) {
            let line = AccessLine {
                method: &method,
                path: &path,
                token: token.as_deref(),
                identity: identity.as_deref(),
                upstream: upstream.as_deref(),
                model: model.as_deref(),
                status,
                latency_ms,
                ttfb_ms,
                input_tokens: counts[0],
                output_tokens: counts[1],
                cached_input_tokens: counts[2],
                cache_write_tokens: counts[3],
                complete,
                reject,
            };
            let now = UNIX_EPOCH + Duration::from_micros(1_795_813_077_123_456);
            let mut ours = Vec::new();
            line.write_json_capped(&mut ours, now);
            let stamp = rfc3339_micros(now);
            let envelope = Envelope {
                timestamp: std::str::from_utf8(&stamp).unwrap(),
                level: "INFO",
                line: &line,
                target: "access",
            };
            let mut theirs = serde_json::to_vec(&envelope).unwrap();
            theirs.push(b'\n');
            proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(theirs).unwrap());
        }
    }

    #[test]
    fn client_chosen_values_are_capped_on_a_character_boundary() {
        let long_model = "é".repeat(450_000);
        let long_path = format!("/v1/{}", "a".repeat(100_000));
        let line = AccessLine {
            method: "POST",
            path: &long_path,
            token: None,
            identity: None,
            upstream: None,
            model: Some(&long_model),
            status: 400,
            latency_ms: 0.1,
            ttfb_ms: None,
            input_tokens: None,
            output_tokens: None,
            cached_input_tokens: None,
            cache_write_tokens: None,
            complete: true,
            reject: None,
        };
        let mut buf = Vec::new();
        line.write_json(&mut buf, UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        for field in ["path", "model"] {
            let value = v[field].as_str().unwrap();
            assert!(
                value.len() <= MAX_LOGGED_VALUE_BYTES,
                "{field}: {}",
                value.len()
            );
            assert!(value.ends_with('…'), "{field}");
        }
        assert!(v["path"].as_str().unwrap().starts_with("/v1/aaa"));
        assert!(v["model"].as_str().unwrap().starts_with("éé"));
        assert!(buf.len() < 2 * 1024, "{} bytes", buf.len());
        assert_eq!(cap("gpt-4o"), "gpt-4o");
    }

    #[test]
    fn flush_writes_every_line_in_order() {
        let out = Captured::default();
        let sink = LogSink::new(Box::new(out.clone()), MAX_BUFFERED);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        sink.append(format!("{t} {i}\n").as_bytes(), false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        sink.flush(Duration::from_secs(10));
        let text = out.text();
        assert_eq!(text.lines().count(), 2000);
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{t} ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..500).collect::<Vec<_>>(), "thread {t}'s lines");
        }
    }

    #[test]
    fn lines_are_written_without_a_flush() {
        let out = Captured::default();
        let sink = LogSink::new(Box::new(out.clone()), MAX_BUFFERED);
        sink.append(b"quiet\n", false);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.text().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(out.text(), "quiet\n");
    }

    /// An output that blocks until the test lets it go.
    struct Stalled(mpsc::Receiver<()>, Captured);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            self.1.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_and_counts_lines_instead_of_blocking() {
        let (release, gate) = mpsc::channel();
        let out = Captured::default();
        let sink = LogSink::new(Box::new(Stalled(gate, out.clone())), 64);
        // The writer takes the first line and blocks writing it.
        sink.append(b"first\n", true);
        while !sink.shared.lock().buf.is_empty() {
            std::thread::yield_now();
        }
        let before = dropped_lines().get();
        for _ in 0..100 {
            sink.append(b"0123456789\n", false);
        }
        assert_eq!(
            dropped_lines().get() - before,
            95,
            "at most 64 bytes wait while the output is stalled"
        );
        for _ in 0..10 {
            let _ = release.send(());
        }
        sink.flush(Duration::from_secs(10));
        let text = out.text();
        assert!(text.starts_with("first\n"), "{text}");
        assert_eq!(text.lines().count(), 6, "{text}");
    }
}
