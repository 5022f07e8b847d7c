//! File mode: load the config file, then poll it and reload on change.
//!
//! Polling (every 250 ms by default) rather than inotify: it sees editors
//! that replace the file, Kubernetes ConfigMap volumes that swap a symlink,
//! and network filesystems alike. When a change is read is decided by
//! `ReloadTimer`, from the file's metadata at each poll:
//!
//! - a file replaced (a new inode: a rename, a ConfigMap symlink swap) is
//!   complete by construction and read once it holds still for one poll;
//! - a file written in place may be half-written, so it is read only once
//!   it has held still for [`ReloadTiming::settle`] (1 s): a writer pausing
//!   mid-file is not taken for a finished one;
//! - either way a change is read at most [`ReloadTiming::max_delay`] (3 s)
//!   after it was first seen, even if the file keeps changing, so a file
//!   rewritten over and over still gets its revocations applied.
//!
//! A read during which the file changed is thrown away and retried. A
//! file is applied whole or not at all: one that fails to read or validate
//! is logged and counted, and the last good config keeps serving
//! (`strake_config_last_reload_successful` drops to 0 until a good version
//! is read). A reload that panics is counted as a failure too; the watch
//! goes on.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strake_crds::pricing::{PriceError, PriceTable};

use crate::config::{self, ConfigError, FileConfig, ProcessEnvironment};
use crate::index::{IndexError, Removed, TokenIndex};
use crate::server::Proxy;

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid { path: PathBuf, source: ConfigError },
    #[error("{path}: {}", describe(.errors))]
    Index {
        path: PathBuf,
        errors: Vec<(String, IndexError)>,
    },
    #[error("{path} kept changing while being read")]
    Changing { path: PathBuf },
    #[error("{path}: {source}")]
    Prices { path: PathBuf, source: PriceError },
}

fn describe(errors: &[(String, IndexError)]) -> String {
    let all: Vec<String> = errors.iter().map(|(_, e)| e.to_string()).collect();
    all.join("; ")
}

/// How file mode paces reloads (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct ReloadTiming {
    /// How often the file's metadata is checked.
    pub poll_interval: Duration,
    /// How long a file written in place must hold still before it is read.
    pub settle: Duration,
    /// The longest a change waits after it is first seen, still or not.
    pub max_delay: Duration,
}

impl Default for ReloadTiming {
    fn default() -> Self {
        ReloadTiming {
            poll_interval: Duration::from_millis(250),
            settle: Duration::from_secs(1),
            max_delay: Duration::from_secs(3),
        }
    }
}

/// What a file looked like when last read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    stat: Stat,
    content: u64,
}

/// Metadata that changes when a file is written or replaced. `stat`
/// follows symlinks, so a swapped ConfigMap link shows as a new inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stat(path: &Path) -> std::io::Result<Stat> {
    let m = std::fs::metadata(path)?;
    Ok(Stat {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

fn content_hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// How many times a read is retried when the file changes under it.
const READ_ATTEMPTS: usize = 3;

/// Reads and validates the file. A read during which the file changed is
/// retried, then reported as [`LoadError::Changing`].
pub fn load(path: &Path) -> Result<(FileConfig, Fingerprint), LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    for _ in 0..READ_ATTEMPTS {
        let before = stat(path).map_err(read_err)?;
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        if stat(path).map_err(read_err)? != before {
            continue;
        }
        let env = ProcessEnvironment {
            base: path.parent().map(Path::to_owned).unwrap_or_default(),
        };
        let config = config::parse(&text, &env).map_err(|source| LoadError::Invalid {
            path: path.to_owned(),
            source,
        })?;
        return Ok((
            config,
            Fingerprint {
                stat: before,
                content: content_hash(&text),
            },
        ));
    }
    Err(LoadError::Changing {
        path: path.to_owned(),
    })
}

/// Builds an index from a loaded config's records; any record the index
/// refuses fails the whole file.
pub fn index_of(
    path: &Path,
    records: Vec<(String, crate::index::Record)>,
) -> Result<TokenIndex, LoadError> {
    let mut index = TokenIndex::new();
    index
        .try_reset(records)
        .map_err(|errors| LoadError::Index {
            path: path.to_owned(),
            errors,
        })?;
    Ok(index)
}

/// When a changed file is read: the pure part of the poll loop, fed the
/// file's metadata at each poll.
#[derive(Debug)]
struct ReloadTimer {
    timing: ReloadTiming,
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    stat: Stat,
    first_seen: Instant,
    still_since: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    /// The file is as last read.
    Unchanged,
    /// Changed, not ready to read yet.
    Wait,
    Read,
}

impl ReloadTimer {
    fn new(timing: ReloadTiming) -> ReloadTimer {
        ReloadTimer {
            timing,
            pending: None,
        }
    }

    /// One poll: the file's metadata `now` against that of the version
    /// last read, `current`, at time `at`.
    fn poll(&mut self, now: Stat, current: &Stat, at: Instant) -> Decision {
        if now == *current {
            self.pending = None;
            return Decision::Unchanged;
        }
        let moved = self.pending.as_ref().is_none_or(|p| p.stat != now);
        let pending = self.pending.get_or_insert(Pending {
            stat: now,
            first_seen: at,
            still_since: at,
        });
        if moved {
            pending.stat = now;
            pending.still_since = at;
        }
        let replaced = (now.dev, now.ino) != (current.dev, current.ino);
        let settle = if replaced {
            Duration::ZERO
        } else {
            self.timing.settle
        };
        let settled = !moved && at.saturating_duration_since(pending.still_since) >= settle;
        let overdue = at.saturating_duration_since(pending.first_seen) >= self.timing.max_delay;
        if settled || overdue {
            Decision::Read
        } else {
            Decision::Wait
        }
    }

    /// The change was read (applied or refused): the next one starts afresh.
    fn read(&mut self) {
        self.pending = None;
    }
}

/// What reading a changed file came to.
enum Reloaded {
    /// Same content as the version in force (only the metadata changed).
    Same(Fingerprint),
    Changed {
        fingerprint: Fingerprint,
        addresses: (Option<SocketAddr>, Option<SocketAddr>),
        removed: Removed,
        prices: Box<PriceTable>,
    },
}

type Loader = fn(&Path) -> Result<(FileConfig, Fingerprint), LoadError>;

/// Reads `path` and, if its content changed, makes `index` its records;
/// its `prices:` rows apply over `base_prices`.
fn reload(
    index: &mut TokenIndex,
    path: &Path,
    previous: u64,
    base_prices: &PriceTable,
    load: Loader,
) -> Result<Reloaded, LoadError> {
    let (config, fingerprint) = load(path)?;
    if fingerprint.content == previous {
        return Ok(Reloaded::Same(fingerprint));
    }
    let prices = base_prices
        .clone()
        .overridden(config.prices)
        .map_err(|source| LoadError::Prices {
            path: path.to_owned(),
            source,
        })?;
    let removed = index
        .try_reset(config.records)
        .map_err(|errors| LoadError::Index {
            path: path.to_owned(),
            errors,
        })?;
    Ok(Reloaded::Changed {
        fingerprint,
        addresses: (config.listen, config.admin),
        removed,
        prices: Box::new(prices),
    })
}

/// Polls `path` and publishes each good new version (see the module
/// docs); the file's `prices:` rows apply over `base_prices`. Returns when
/// `shutdown` fires.
#[allow(clippy::too_many_arguments)]
pub async fn watch(
    proxy: Proxy,
    path: PathBuf,
    index: TokenIndex,
    last: Fingerprint,
    addresses: (Option<SocketAddr>, Option<SocketAddr>),
    base_prices: PriceTable,
    timing: ReloadTiming,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let file = Watched {
        path,
        last,
        addresses,
        base_prices,
    };
    watch_with(proxy, file, index, timing, shutdown, load).await
}

/// The file being watched: where it is, the version in force, and the
/// addresses it was started with.
struct Watched {
    path: PathBuf,
    last: Fingerprint,
    addresses: (Option<SocketAddr>, Option<SocketAddr>),
    base_prices: PriceTable,
}

async fn watch_with(
    proxy: Proxy,
    mut file: Watched,
    index: TokenIndex,
    timing: ReloadTiming,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    load: Loader,
) {
    let metrics = proxy.metrics();
    let mut index = Some(index);
    let mut timer = ReloadTimer::new(timing);
    let mut unreadable = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(timing.poll_interval) => {}
            _ = shutdown.changed() => return,
        }
        let now = match stat(&file.path) {
            Ok(s) => s,
            Err(e) => {
                // Mid-replacement, or deleted: keep serving, say so once.
                if !unreadable {
                    tracing::error!(path = %file.path.display(), error = %e, "config file unreadable; the last good config keeps serving");
                    metrics.reload_failed();
                    unreadable = true;
                }
                continue;
            }
        };
        if std::mem::take(&mut unreadable) && now == file.last.stat {
            // Back as it was: the config in force is the file's again.
            metrics.mark_config_current();
        }
        if timer.poll(now, &file.last.stat, Instant::now()) != Decision::Read {
            continue;
        }
        let mut idx = index
            .take()
            .expect("the index is returned after every reload");
        let path = file.path.clone();
        let previous = file.last.content;
        let base = file.base_prices.clone();
        // Reading, parsing and re-indexing a large file is CPU work: keep it
        // off the request threads. A panic must not end the watch (that
        // would stop revocations without a word): `try_reset` changes the
        // index only at its very end, so after a panic it is intact.
        let (idx, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                reload(&mut idx, &path, previous, &base, load)
            }));
            (idx, outcome)
        })
        .await
        .expect("the reload task returns its panics");
        let view_counts = (idx.view().token_count(), idx.view().upstream_count());
        match outcome {
            Ok(Err(LoadError::Changing { .. })) => {
                // Read again at the next poll, still within the bound.
                index = Some(idx);
                continue;
            }
            Ok(Ok(Reloaded::Same(fingerprint))) => {
                file.last = fingerprint;
                metrics.mark_config_current();
            }
            Ok(Ok(Reloaded::Changed {
                fingerprint,
                addresses,
                removed,
                prices,
            })) => {
                file.last = fingerprint;
                proxy.set_prices(*prices);
                proxy.publish(&idx, removed);
                metrics.reload_succeeded();
                tracing::info!(
                    path = %file.path.display(),
                    tokens = view_counts.0,
                    upstreams = view_counts.1,
                    "config reloaded"
                );
                if addresses != file.addresses {
                    tracing::warn!("listen and admin addresses change only on restart");
                }
            }
            Ok(Err(e)) => {
                // Remember the bad version, so it is reported once, not every poll.
                file.last.stat = now;
                tracing::error!(error = %e, "config rejected; the last good config keeps serving");
                metrics.reload_failed();
            }
            Err(panic) => {
                file.last.stat = now;
                tracing::error!(
                    path = %file.path.display(),
                    panic = panic_message(&*panic),
                    "config reload panicked; the last good config keeps serving"
                );
                metrics.reload_failed();
            }
        }
        timer.read();
        index = Some(idx);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use strake_crds::token::Token;

    fn at_ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn file(ino: u64, mtime: i64) -> Stat {
        Stat {
            dev: 1,
            ino,
            len: 100,
            mtime: (mtime, 0),
            ctime: (mtime, 0),
        }
    }

    /// Polls every 250 ms from `from` to `to`, the file's metadata given by
    /// `stat_at(ms)`; returns when the timer first says read.
    fn first_read(
        timer: &mut ReloadTimer,
        current: &Stat,
        stat_at: impl Fn(u64) -> Stat,
        to: u64,
    ) -> Option<u64> {
        let t0 = Instant::now();
        (250..=to)
            .step_by(250)
            .find(|&ms| timer.poll(stat_at(ms), current, at_ms(t0, ms)) == Decision::Read)
    }

    #[test]
    fn a_replaced_file_is_read_once_it_holds_still_for_one_poll() {
        let mut timer = ReloadTimer::new(ReloadTiming::default());
        let current = file(1, 0);
        assert_eq!(
            first_read(&mut timer, &current, |_| file(2, 5), 10_000),
            Some(500)
        );
    }

    #[test]
    fn a_file_written_in_place_is_read_only_after_it_settles() {
        let mut timer = ReloadTimer::new(ReloadTiming::default());
        let current = file(1, 0);
        // Half written at 0, paused 800 ms, finished at 1000.
        let writer = |ms: u64| if ms < 1000 { file(1, 1) } else { file(1, 2) };
        assert_eq!(first_read(&mut timer, &current, writer, 10_000), Some(2000));
    }

    #[test]
    fn a_file_that_never_holds_still_is_read_within_the_bound() {
        let timing = ReloadTiming::default();
        for replaced in [false, true] {
            let mut timer = ReloadTimer::new(timing);
            let current = file(1, 0);
            // Rewritten every 200 ms: a different version at every poll.
            let churn = |ms: u64| file(if replaced { 2 + ms } else { 1 }, 1 + ms as i64 / 200);
            let read = first_read(&mut timer, &current, churn, 60_000).unwrap();
            assert!(
                Duration::from_millis(read) <= timing.max_delay + timing.poll_interval,
                "replaced: {replaced}: read after {read} ms"
            );
        }
    }

    #[test]
    fn after_a_read_the_next_change_waits_afresh() {
        let mut timer = ReloadTimer::new(ReloadTiming::default());
        let t0 = Instant::now();
        let current = file(1, 0);
        for ms in (250..=3000).step_by(250) {
            if timer.poll(file(1, ms as i64), &current, at_ms(t0, ms)) == Decision::Read {
                break;
            }
        }
        timer.read();
        assert_eq!(
            timer.poll(file(1, 9), &current, at_ms(t0, 3250)),
            Decision::Wait
        );
        assert_eq!(
            timer.poll(current, &current, at_ms(t0, 3500)),
            Decision::Unchanged
        );
    }

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("strake-file-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn config(tokens: &[&str]) -> String {
        let mut s = "upstreams:\n  - name: openai\n    provider: openai\n    apiKey: sk-test-key\ntokens:\n".to_owned();
        if tokens.is_empty() {
            s = s.replace("tokens:\n", "tokens: []\n");
        }
        for name in tokens {
            s.push_str(&format!(
                "  - name: {name}\n    identity: {name}@example.com\n    sha256: {}\n    upstreams: [openai]\n",
                Token::mint().hash()
            ));
        }
        s
    }

    #[test]
    fn index_errors_fail_the_file_instead_of_being_asserted_away() {
        let hash = Token::mint().hash();
        let record = |name: &str| {
            crate::index::Record::Token(strake_crds::contract::TokenRecord {
                name: name.into(),
                identity: format!("{name}@example.com"),
                sha256: hash,
                upstreams: vec!["openai".into()],
                expires_at: None,
                suspended: false,
                allowed_models: vec![],
                endpoints: vec![],
                limits: None,
                source: None,
                budget: None,
                federated: Vec::new(),
                previous: None,
            })
        };
        let err = index_of(
            Path::new("strake.yaml"),
            vec![
                ("token/a".into(), record("a")),
                ("token/b".into(), record("b")),
            ],
        )
        .err()
        .expect("a duplicate hash is an error");
        let message = err.to_string();
        assert!(
            message.contains("strake.yaml") && message.contains("sha256"),
            "{message}"
        );
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `load`, except that a file containing `# panic` panics it.
    fn panicking_load(path: &Path) -> Result<(FileConfig, Fingerprint), LoadError> {
        if std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains("# panic")
        {
            panic!("injected reload failure");
        }
        load(path)
    }

    #[tokio::test]
    async fn a_reload_that_panics_is_counted_and_the_watch_goes_on() {
        let dir = temp_dir("panic");
        let path = dir.0.join("strake.yaml");
        std::fs::write(&path, config(&["alice"])).unwrap();
        let proxy = Proxy::new(crate::Settings::default());
        let (loaded, last) = load(&path).unwrap();
        let index = index_of(&path, loaded.records).unwrap();
        proxy.publish(&index, Vec::new());
        proxy.metrics().mark_config_current();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let timing = ReloadTiming {
            poll_interval: Duration::from_millis(20),
            settle: Duration::from_millis(60),
            max_delay: Duration::from_millis(500),
        };
        let file = Watched {
            path: path.clone(),
            last,
            addresses: (None, None),
            base_prices: PriceTable::builtin(),
        };
        let task = tokio::spawn(watch_with(
            proxy.clone(),
            file,
            index,
            timing,
            shutdown,
            panicking_load,
        ));
        let m = proxy.metrics();
        std::fs::write(&path, format!("{}# panic\n", config(&[]))).unwrap();
        eventually("the panic is counted", || {
            m.config_reload_failures.get() == 1
        })
        .await;
        assert_eq!(m.config_last_reload_successful.get(), 0);
        assert_eq!(proxy.snapshot().token_count(), 1, "alice keeps serving");

        std::fs::write(&path, config(&["bob", "carol"])).unwrap();
        eventually("the next version is applied", || {
            proxy.snapshot().token_count() == 2
        })
        .await;
        assert_eq!(m.config_last_reload_successful.get(), 1);
        assert!(!task.is_finished());
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
