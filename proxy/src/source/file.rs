//! File mode: load the config file, then poll it and reload on change.
//!
//! Polling (every 250 ms by default) rather than inotify: it sees editors
//! that replace the file, Kubernetes ConfigMap volumes that swap a symlink,
//! and network filesystems alike. A change is read once the file's
//! metadata has been stable for one poll (so a half-written file is not
//! read), and applied only if the content changed. A file that fails to
//! read or validate is logged and counted; the last good config keeps
//! serving.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{self, ConfigError, FileConfig, ProcessEnvironment};
use crate::index::TokenIndex;
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

/// Reads and validates the file.
pub fn load(path: &Path) -> Result<(FileConfig, Fingerprint), LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let before = stat(path).map_err(read_err)?;
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let env = ProcessEnvironment {
        base: path.parent().map(Path::to_owned).unwrap_or_default(),
    };
    let config = config::parse(&text, &env).map_err(|source| LoadError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    Ok((
        config,
        Fingerprint {
            stat: before,
            content: content_hash(&text),
        },
    ))
}

/// Builds an index from a loaded config's records.
pub fn index_of(records: Vec<(String, crate::index::Record)>) -> TokenIndex {
    let mut index = TokenIndex::new();
    let (_, errors) = index.reset(records);
    debug_assert!(
        errors.is_empty(),
        "config::parse validates everything the index checks: {errors:?}"
    );
    index
}

/// Polls `path` every `interval` and publishes each good new version.
/// Returns when `shutdown` fires.
pub async fn watch(
    proxy: Proxy,
    path: PathBuf,
    index: TokenIndex,
    mut last: Fingerprint,
    addresses: (Option<SocketAddr>, Option<SocketAddr>),
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut index = Some(index);
    let mut pending: Option<Stat> = None;
    let mut unreadable = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let now = match stat(&path) {
            Ok(s) => s,
            Err(e) => {
                // Mid-replacement, or deleted: keep serving, say so once.
                if !unreadable {
                    tracing::error!(path = %path.display(), error = %e, "config file unreadable; the last good config keeps serving");
                    proxy.metrics().config_reload_failures.inc();
                    unreadable = true;
                }
                continue;
            }
        };
        unreadable = false;
        if now == last.stat {
            pending = None;
            continue;
        }
        if pending != Some(now) {
            // Changed since the last poll: wait until it holds still.
            pending = Some(now);
            continue;
        }
        pending = None;
        let mut idx = index
            .take()
            .expect("the index is returned after every reload");
        let p = path.clone();
        let previous = last.content;
        // Reading, parsing and re-indexing a large file is CPU work: keep it
        // off the request threads.
        let (idx, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = match load(&p) {
                Ok((_, fp)) if fp.content == previous => Ok((fp, None)),
                Ok((config, fp)) => {
                    let (removed, errors) = idx.reset(config.records);
                    debug_assert!(errors.is_empty(), "{errors:?}");
                    Ok((fp, Some(((config.listen, config.admin), removed))))
                }
                Err(e) => Err(e),
            };
            (idx, outcome)
        })
        .await
        .expect("config reload does not panic");
        match outcome {
            Ok((fp, None)) => last = fp,
            Ok((fp, Some((new_addresses, removed)))) => {
                last = fp;
                proxy.publish(&idx, removed);
                proxy.metrics().config_reloads.inc();
                let view = idx.view();
                tracing::info!(
                    path = %path.display(),
                    tokens = view.token_count(),
                    upstreams = view.upstream_count(),
                    "config reloaded"
                );
                if new_addresses != addresses {
                    tracing::warn!("listen and admin addresses change only on restart");
                }
            }
            Err(e) => {
                // Remember the bad version, so it is reported once, not every poll.
                if let Ok(s) = stat(&path) {
                    last.stat = s;
                }
                tracing::error!(error = %e, "config rejected; the last good config keeps serving");
                proxy.metrics().config_reload_failures.inc();
            }
        }
        index = Some(idx);
    }
}
