//! Thread per core: the traffic workers.
//!
//! Each worker is an OS thread running its own current-thread tokio
//! runtime, with its own listener on the traffic address (the workers'
//! sockets share the port with `SO_REUSEPORT`, and the kernel spreads new
//! connections over them) and its own upstream connection pool. A request,
//! its upstream exchange and its response stay on the thread that accepted
//! the connection: no cross-thread wake-ups, no shared pool lock.
//!
//! What every worker shares lives in [`crate::server::Shared`] (the index,
//! metrics, prices, rate limiters, fleet); the `--max-connections` slots are
//! one process-wide semaphore. The admin port, the config source and the
//! other background tasks run on the control runtime, the one
//! [`crate::start`] is called from.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::server::Proxy;

/// Most traffic workers a process runs (`--workers`).
pub const MAX_WORKERS: usize = 64;

/// The kernel's queue of connections not yet accepted, per listener (what
/// `TcpListener::bind` uses).
const LISTEN_BACKLOG: i32 = 1024;

/// The default worker count: one per CPU the process may run on (as the
/// standard library counts them: the affinity mask, and a cgroup's CPU
/// quota rounded down), at least 1, at most [`MAX_WORKERS`].
pub fn default_count(available: Option<NonZeroUsize>) -> usize {
    available.map_or(1, NonZeroUsize::get).min(MAX_WORKERS)
}

/// The worker count for this machine: [`default_count`] of
/// `std::thread::available_parallelism`.
pub fn available() -> usize {
    default_count(std::thread::available_parallelism().ok())
}

/// A worker count outside 1..=[`MAX_WORKERS`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--workers must be between 1 and {MAX_WORKERS}, not {0}")]
pub struct BadCount(pub usize);

/// Checks a requested worker count.
pub fn check(count: usize) -> Result<usize, BadCount> {
    if (1..=MAX_WORKERS).contains(&count) {
        Ok(count)
    } else {
        Err(BadCount(count))
    }
}

/// Binds `count` listeners on `addr`, all on one port. The first binds
/// alone, without `SO_REUSEPORT`, so that a port anything else holds (a
/// second proxy included) is refused with `EADDRINUSE` rather than shared;
/// it then allows sharing, and the rest bind to the port it got (port 0
/// picks one for all). Errors name `what` (the flag).
pub fn bind(
    addr: SocketAddr,
    count: usize,
    what: &str,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let named = |e| crate::server::cannot_listen(addr, what, e);
    let first = socket(addr, false).map_err(named)?;
    if count > 1 {
        first.set_reuse_port(true).map_err(named)?;
    }
    first.listen(LISTEN_BACKLOG).map_err(named)?;
    let port = first
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or(addr.port(), |a| a.port());
    let mut listeners = vec![first];
    let shared = SocketAddr::new(addr.ip(), port);
    for _ in 1..count {
        let socket = socket(shared, true).map_err(named)?;
        socket.listen(LISTEN_BACKLOG).map_err(named)?;
        listeners.push(socket);
    }
    Ok(listeners
        .into_iter()
        .map(std::net::TcpListener::from)
        .collect())
}

/// A bound, non-blocking TCP socket on `addr`.
fn socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As `TcpListener::bind`: a restart rebinds despite connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A running worker: resolves when its thread has drained and stopped.
pub type Done = oneshot::Receiver<std::io::Result<()>>;

/// Starts worker `id` on its own thread and runtime, serving `listener`
/// until `shutdown` changes (or its sender is dropped), then draining.
pub fn spawn(
    proxy: Proxy,
    id: usize,
    listener: std::net::TcpListener,
    slots: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<Done> {
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("strake-worker-{id}"))
        .spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|runtime| {
                    runtime.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        proxy
                            .serve(id, listener, slots, async move {
                                let _ = shutdown.changed().await;
                            })
                            .await
                    })
                });
            let _ = done.send(served);
        })?;
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_one_worker_per_available_cpu_within_bounds() {
        let n = |k| NonZeroUsize::new(k);
        assert_eq!(default_count(n(1)), 1);
        assert_eq!(default_count(n(2)), 2);
        assert_eq!(default_count(n(8)), 8);
        assert_eq!(default_count(n(MAX_WORKERS)), MAX_WORKERS);
        assert_eq!(default_count(n(512)), MAX_WORKERS);
        // The count unknown (a sandbox hiding /proc and the cgroup): one.
        assert_eq!(default_count(None), 1);
    }

    #[test]
    fn a_count_outside_the_bounds_is_refused_with_them_named() {
        assert_eq!(check(1), Ok(1));
        assert_eq!(check(MAX_WORKERS), Ok(MAX_WORKERS));
        assert_eq!(check(0), Err(BadCount(0)));
        assert_eq!(check(MAX_WORKERS + 1), Err(BadCount(MAX_WORKERS + 1)));
        assert_eq!(
            BadCount(0).to_string(),
            "--workers must be between 1 and 64, not 0"
        );
    }

    #[test]
    fn every_listener_gets_the_port_the_first_was_given() {
        let listeners = bind("127.0.0.1:0".parse().unwrap(), 3, "--listen").unwrap();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_eq!(ports.len(), 3);
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|&p| p == ports[0]), "{ports:?}");
    }

    #[test]
    fn a_port_already_held_is_refused_not_shared() {
        // Another proxy's listeners, sharing among themselves.
        let held = bind("127.0.0.1:0".parse().unwrap(), 2, "--listen").unwrap();
        let addr = held[0].local_addr().unwrap();
        let err = bind(addr, 2, "--listen").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen on {addr} (--listen): ")),
            "{err}"
        );
        // A plain listener (another program) likewise.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = plain.local_addr().unwrap();
        assert!(bind(addr, 1, "--listen").is_err());
        assert!(bind(addr, 4, "--listen").is_err());
    }
}
