//! The socket side: accept loop, per-request service, `/__mock/*` control
//! endpoints, and the [`MockUpstream`] handle.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::body::MockBody;
use crate::config::{Behavior, Keys, MockConfig};
use crate::record::{RecordedRequest, Recorder};
use crate::reply::{self, Resp};
use crate::router::{self, Ctx, Provider};

/// Request bodies beyond this are refused with 413 rather than buffered.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// How long [`MockUpstream::shutdown`] waits for in-flight responses.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A running mock provider. Dropping it stops the listener; in-flight
/// responses finish in the background. Use [`MockUpstream::shutdown`] to wait
/// for them.
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    /// Dropping the sender is the shutdown signal.
    stop: Option<watch::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

struct State {
    keys: ArcSwap<Keys>,
    defaults: Behavior,
    recorder: Option<Recorder>,
    verbose: bool,
}

impl MockUpstream {
    /// Binds `config.listen` and starts serving on the current Tokio runtime.
    pub async fn start(config: MockConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            keys: ArcSwap::from_pointee(config.keys),
            defaults: config.defaults,
            recorder: config
                .record
                .then(|| Recorder::new(config.record_body_limit, config.record_limit)),
            verbose: config.verbose,
        });
        let (stop, stopped) = watch::channel(());
        let task = tokio::spawn(serve(listener, Arc::clone(&state), stopped));
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address (with the real port when `:0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, the base URL for Anthropic, Gemini and Azure clients;
    /// OpenAI clients want `{url}/v1`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every provider request received so far (oldest first), unless
    /// recording is off. `/__mock/*` calls are not recorded.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .recorder
            .as_ref()
            .map(Recorder::snapshot)
            .unwrap_or_default()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        if let Some(recorder) = &self.state.recorder {
            recorder.clear();
        }
    }

    /// Replaces the accepted keys, e.g. to check that a rotated upstream key
    /// reached the proxy: after this, the old key gets 401.
    pub fn set_keys(&self, keys: Keys) {
        self.state.keys.store(Arc::new(keys));
    }

    /// The currently accepted keys.
    pub fn keys(&self) -> Keys {
        Keys::clone(&self.state.keys.load())
    }

    /// Stops accepting, lets in-flight responses finish (up to a bound), and
    /// returns once the server task has ended.
    pub async fn shutdown(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // Dropping the sender wakes the accept loop, which then drains.
        self.stop.take();
    }
}

async fn serve(listener: TcpListener, state: Arc<State>, mut stopped: watch::Receiver<()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually fd exhaustion under a benchmark: back off
                    // briefly instead of spinning.
                    if state.verbose {
                        eprintln!("mock-upstream: accept failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        // Latency benchmarks measure small writes; don't let Nagle batch them.
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let service = service_fn(move |req| handle(Arc::clone(&state), req));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Errors here are clients hanging up or x-mock-drop doing its job.
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {}
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let started = state.verbose.then(Instant::now);
    let (parts, body) = req.into_parts();
    let resp = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => respond(&state, &parts, collected.to_bytes()).await,
        Err(e) if e.is::<LengthLimitError>() => Provider::OpenAi.error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large for the Strake mock upstream.",
        ),
        Err(_) => {
            Provider::OpenAi.error(StatusCode::BAD_REQUEST, "Could not read the request body.")
        }
    };
    if let Some(started) = started {
        // Path only: queries may carry keys (Gemini's `?key=`), and header
        // values are never printed.
        eprintln!(
            "{} {} {:?} -> {} in {:.2}ms",
            parts.method,
            parts.uri.path(),
            parts.version,
            resp.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(resp)
}

async fn respond(state: &State, parts: &Parts, body: Bytes) -> Resp {
    if let Some(control) = parts.uri.path().strip_prefix("/__mock/") {
        return control_endpoint(state, &parts.method, control, &body);
    }
    if let Some(recorder) = &state.recorder {
        recorder.record(parts, &body);
    }
    let keys = state.keys.load_full();
    let ctx = Ctx {
        parts,
        body: &body,
        defaults: &state.defaults,
    };
    router::route(&ctx, &keys).await
}

#[derive(Serialize)]
struct Message<'a> {
    status: &'a str,
}

/// `/__mock/*`: test control, never recorded and never authenticated.
fn control_endpoint(state: &State, method: &Method, path: &str, body: &Bytes) -> Resp {
    let no_content = || {
        let mut resp = reply::json_bytes(StatusCode::NO_CONTENT, Bytes::new());
        resp.headers_mut().remove(http::header::CONTENT_TYPE);
        resp
    };
    match (method, path) {
        (&Method::GET, "health") => reply::json(StatusCode::OK, &Message { status: "ok" }),
        (&Method::GET, "requests") => {
            let requests = state
                .recorder
                .as_ref()
                .map(Recorder::snapshot)
                .unwrap_or_default();
            reply::json(StatusCode::OK, &requests)
        }
        (&Method::DELETE, "requests") => {
            if let Some(recorder) = &state.recorder {
                recorder.clear();
            }
            no_content()
        }
        (&Method::PUT, "keys") => match serde_json::from_slice::<Keys>(body) {
            Ok(keys) => {
                state.keys.store(Arc::new(keys));
                no_content()
            }
            Err(e) => {
                let status = format!("invalid keys: {e}");
                reply::json(StatusCode::BAD_REQUEST, &Message { status: &status })
            }
        },
        _ => reply::json(
            StatusCode::NOT_FOUND,
            &Message {
                status: "unknown mock control endpoint",
            },
        ),
    }
}
