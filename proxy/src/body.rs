//! Bodies: the request body read under a size limit, and the response body
//! that streams back frame by frame while usage is read off it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::pipeline::Exchange;
use crate::reject::Reject;

/// Reads a request body, refusing more than `limit` bytes: at once when
/// `Content-Length` says so, otherwise as soon as the running total passes
/// the limit (chunked bodies). `idle` bounds the wait for each frame.
pub async fn read_limited(
    mut body: Incoming,
    headers: &HeaderMap,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, Reject> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Reject::BodyTooLarge { limit });
    }
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut total = 0usize;
    loop {
        // Small bodies usually arrived with the head: take what is ready
        // without arming a timer.
        let next = match body.frame().now_or_never() {
            Some(next) => next,
            None => match tokio::time::timeout(idle, body.frame()).await {
                Ok(next) => next,
                Err(_) => return Err(Reject::BodyTimeout),
            },
        };
        let frame = match next {
            None => break,
            Some(Err(_)) => return Err(Reject::BodyAborted),
            Some(Ok(frame)) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: not forwarded
        };
        total += data.len();
        if total > limit {
            return Err(Reject::BodyTooLarge { limit });
        }
        // The common case, one frame, is kept without copying.
        match (&mut first, &mut rest) {
            (None, _) => first = Some(data),
            (Some(f), None) => {
                let mut buf = BytesMut::with_capacity(declared.map_or(f.len() * 2, |n| n as usize));
                buf.extend_from_slice(f);
                buf.extend_from_slice(&data);
                rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    Ok(match rest {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// What the proxy sends back: its own small answer, or the upstream's
/// body passed through.
pub enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

impl ProxyBody {
    pub fn full(b: Bytes) -> ProxyBody {
        ProxyBody::Full((!b.is_empty()).then_some(b))
    }
}

/// The upstream's body, forwarded frame by frame, with the exchange's
/// accounting riding along: usage is parsed from each frame after it is
/// handed on, and the exchange is accounted and logged once, when the body
/// ends or is dropped (client gone, stream cut).
pub struct UpstreamBody {
    inner: Incoming,
    exchange: Option<Box<Exchange>>,
}

impl UpstreamBody {
    pub fn new(inner: Incoming, exchange: Box<Exchange>) -> UpstreamBody {
        UpstreamBody {
            inner,
            exchange: Some(exchange),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(exchange) = self.exchange.take() {
            exchange.finish(complete);
        }
    }
}

impl UpstreamBody {
    /// The upstream's next frame, its usage read; when the exchange hides
    /// usage, the client's version of it (a frame that is all held back is
    /// skipped, not sent empty).
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        loop {
            let polled = ready!(Pin::new(&mut self.inner).poll_frame(cx));
            let Some(ex) = self.exchange.as_mut() else {
                return Poll::Ready(polled);
            };
            match polled {
                Some(Ok(frame)) => {
                    let Some(data) = frame.data_ref() else {
                        return Poll::Ready(Some(Ok(frame)));
                    };
                    ex.observe(data);
                    if !ex.hides_usage() {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    let shown = ex.hide(data);
                    if !shown.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(shown))));
                    }
                }
                None => {
                    if let Some(rest) = ex.hidden_rest() {
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                    self.finish(true);
                    return Poll::Ready(None);
                }
                Some(Err(e)) => {
                    let complete = ex.answered_in_full();
                    self.finish(complete);
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

impl Drop for UpstreamBody {
    /// The client left, or the connection ended: complete if the body had
    /// ended, or the stream's final event had reached the client.
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream()
            || self
                .exchange
                .as_ref()
                .is_some_and(|ex| ex.answered_in_full());
        self.finish(complete);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(u) => u.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(u) => {
                u.inner.is_end_stream() && !u.exchange.as_ref().is_some_and(|ex| ex.holds_bytes())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Upstream(u) if u.exchange.as_ref().is_some_and(|ex| ex.hides_usage()) => {
                SizeHint::default()
            }
            ProxyBody::Upstream(u) => u.inner.size_hint(),
        }
    }
}
