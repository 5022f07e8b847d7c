//! Polling for what becomes true eventually (a watch event, a reconcile).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;

/// Calls `check` every 50 ms until it succeeds, and returns its value; after
/// `timeout` returns its last error, saying what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => {
                return Err(e.context(format!("{what}: still not the case after {timeout:?}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
