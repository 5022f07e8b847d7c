//! One keep-alive connection per client task (HTTP/1.1, or HTTP/2 with prior
//! knowledge), on bare hyper: no pool, no retries, nothing between the clock
//! and the socket.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// What every request of a run looks like, except its credential.
#[derive(clap::Args, Debug, Clone)]
pub struct RequestArgs {
    /// `http://HOST:PORT/path`; loopback only.
    #[arg(long)]
    url: String,
    /// Request body (JSON); without it the request is a GET.
    #[arg(long)]
    body: Option<PathBuf>,
    /// Extra header `name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// File with one credential a line, sent as `Authorization: Bearer`,
    /// round-robin over requests (many tokens exercise the index, not a cache line).
    #[arg(long)]
    bearer_file: Option<PathBuf>,
    /// A single credential sent as `Authorization: Bearer`.
    #[arg(long, conflicts_with = "bearer_file")]
    bearer: Option<String>,
}

/// A parsed [`RequestArgs`], ready to stamp out requests.
#[derive(Clone)]
pub struct Template {
    pub addr: SocketAddr,
    method: Method,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    bearers: Vec<HeaderValue>,
    body: Bytes,
}

impl RequestArgs {
    pub fn template(&self) -> anyhow::Result<Template> {
        let body = match &self.body {
            Some(path) => Some(Bytes::from(
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            )),
            None => None,
        };
        let mut bearers = Vec::new();
        if let Some(path) = &self.bearer_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            bearers.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
            if bearers.is_empty() {
                bail!("{}: no credentials", path.display());
            }
        }
        bearers.extend(self.bearer.iter().cloned());
        Template::new(&self.url, &self.headers, body, &bearers)
    }
}

impl Template {
    /// `headers` are `name: value` lines; a body makes the request a JSON POST.
    pub fn new(
        url: &str,
        headers: &[String],
        body: Option<Bytes>,
        bearers: &[String],
    ) -> anyhow::Result<Template> {
        let rest = url
            .strip_prefix("http://")
            .context("only http:// URLs (the benchmark talks to loopback servers)")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = authority
            .parse()
            .with_context(|| format!("{authority}: expected IP:PORT"))?;
        if !addr.ip().is_loopback() {
            bail!("{addr}: benchmarks only send traffic to loopback addresses");
        }
        let mut parsed = vec![(
            http::header::HOST,
            HeaderValue::from_str(authority).context("host header")?,
        )];
        for h in headers {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("header {h:?}: expected `name: value`"))?;
            parsed.push((
                HeaderName::from_bytes(name.trim().as_bytes())?,
                HeaderValue::from_str(value.trim())?,
            ));
        }
        if body.is_some() {
            parsed.push((
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ));
        }
        Ok(Template {
            addr,
            method: if body.is_some() {
                Method::POST
            } else {
                Method::GET
            },
            path: path.to_owned(),
            headers: parsed,
            bearers: bearers
                .iter()
                .map(|b| HeaderValue::from_str(&format!("Bearer {b}")))
                .collect::<Result<_, _>>()?,
            body: body.unwrap_or_default(),
        })
    }

    /// The `n`th request of a run (its credential rotates with `n`).
    pub fn request(&self, n: u64) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.path.parse().expect("validated path");
        let h = req.headers_mut();
        for (name, value) in &self.headers {
            h.append(name.clone(), value.clone());
        }
        if !self.bearers.is_empty() {
            let i = (n % self.bearers.len() as u64) as usize;
            h.insert(http::header::AUTHORIZATION, self.bearers[i].clone());
        }
        req
    }
}

/// Opens a connection and drives it on the current runtime.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // A connection error surfaces on the next send; nothing to do here.
        let _ = conn.await;
    });
    Ok(send)
}

/// A client connection of either protocol, one request at a time.
pub enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2 {
        send: http2::SendRequest<Full<Bytes>>,
        authority: String,
    },
}

impl Sender {
    /// Opens a connection (`http2`: h2c with prior knowledge, as `curl
    /// --http2-prior-knowledge` and the SDKs' HTTP/2 clients speak it to a
    /// plain-text listener) and drives it on the current runtime.
    pub async fn connect(addr: SocketAddr, http2: bool) -> anyhow::Result<Sender> {
        if !http2 {
            return Ok(Sender::Http1(connect(addr).await?));
        }
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Sender::Http2 {
            send,
            authority: addr.to_string(),
        })
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2 { send, .. } => send.is_closed(),
        }
    }

    /// Waits until the connection can take a request, then sends it.
    pub async fn send(
        &mut self,
        mut req: Request<Full<Bytes>>,
    ) -> hyper::Result<Response<Incoming>> {
        match self {
            Sender::Http1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::Http2 { send, authority } => {
                // HTTP/2 carries the scheme and authority as pseudo-headers.
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                *req.uri_mut() = format!("http://{authority}{path}")
                    .parse()
                    .expect("an address and a validated path");
                send.ready().await?;
                send.send_request(req).await
            }
        }
    }
}
