//! The response body type: a whole buffer, a buffer cut short, or a paced
//! event stream.
//!
//! One concrete enum instead of a boxed trait object keeps the common
//! (buffered JSON) path free of extra allocation.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::sse::{Events, Kind};

/// The error a body yields to make hyper abort the connection (HTTP/1) or
/// reset the stream (HTTP/2), simulating an upstream that dies mid-response.
#[derive(Debug)]
pub(crate) struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped on purpose (x-mock-drop)")
    }
}

impl std::error::Error for Dropped {}

pub(crate) struct MockBody(Inner);

enum Inner {
    Full(Option<Bytes>),
    /// Announces `len` bytes, sends `first`, then fails.
    Cut {
        first: Option<Bytes>,
        len: u64,
        cut: Cut,
    },
    Stream(Box<Paced>),
}

impl MockBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self(Inner::Full(Some(bytes.into())))
    }

    /// The first half of `bytes`, then a dropped connection. The head still
    /// advertises the full length, as a real truncated response would.
    pub(crate) fn cut(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let len = bytes.len() as u64;
        let first = bytes.slice(..bytes.len() / 2);
        Self(Inner::Cut {
            first: Some(first),
            len,
            cut: Cut::armed(),
        })
    }

    pub(crate) fn stream(
        events: Events,
        interval: Duration,
        linger: Duration,
        drop_after: Option<usize>,
    ) -> Self {
        Self(Inner::Stream(Box::new(Paced {
            events,
            interval,
            linger,
            lingering: None,
            sleep: None,
            held: None,
            content_sent: 0,
            drop_after,
            finished: false,
            cut: Cut::default(),
        })))
    }
}

/// Releases events one by one, waiting `interval` between content events.
struct Paced {
    events: Events,
    interval: Duration,
    /// The pause between the last event and the end of the body.
    linger: Duration,
    lingering: Option<Pin<Box<Sleep>>>,
    /// Allocated on first use and re-armed afterwards.
    sleep: Option<Pin<Box<Sleep>>>,
    /// A content event waiting for its pacing delay.
    held: Option<Bytes>,
    content_sent: usize,
    drop_after: Option<usize>,
    finished: bool,
    cut: Cut,
}

impl Paced {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Dropped>>> {
        if self.finished {
            return self.cut.poll(cx);
        }
        if let Some(event) = self.held.take() {
            let sleep = self.sleep.as_mut().expect("held events have a timer");
            if sleep.as_mut().poll(cx).is_pending() {
                self.held = Some(event);
                return Poll::Pending;
            }
            return Poll::Ready(Some(Ok(Frame::data(event))));
        }
        let Some((kind, event)) = self.events.next() else {
            if self.lingering.is_none() && !self.linger.is_zero() {
                self.lingering = Some(Box::pin(tokio::time::sleep(self.linger)));
            }
            if let Some(linger) = &mut self.lingering
                && linger.as_mut().poll(cx).is_pending()
            {
                return Poll::Pending;
            }
            self.finished = true;
            return Poll::Ready(None);
        };
        if kind != Kind::Preamble && self.drop_after == Some(self.content_sent) {
            self.finished = true;
            self.cut.arm();
            return self.cut.poll(cx);
        }
        if kind == Kind::Content {
            self.content_sent += 1;
            // The first chunk leaves with the preamble; later ones are spaced.
            if self.content_sent > 1 && !self.interval.is_zero() {
                let deadline = Instant::now() + self.interval;
                match &mut self.sleep {
                    Some(sleep) => sleep.as_mut().reset(deadline),
                    None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
                self.held = Some(event);
                return self.poll_next(cx);
            }
        }
        Poll::Ready(Some(Ok(Frame::data(event))))
    }
}

/// The end of a dropped response: a short pause, then the error that tears
/// the connection down. Erroring straight away would make hyper discard the
/// chunks still in its write buffer (HTTP/1) or h2 drop the queued DATA
/// frames in favour of the RST_STREAM (HTTP/2), and the client would see
/// nothing at all instead of a stream that stops mid-way.
#[derive(Default)]
struct Cut {
    armed: bool,
    pause: Option<Pin<Box<Sleep>>>,
}

/// Long enough for buffered frames to reach the socket.
const CUT_PAUSE: Duration = Duration::from_millis(10);

impl Cut {
    fn armed() -> Self {
        Self {
            armed: true,
            pause: None,
        }
    }

    fn arm(&mut self) {
        self.armed = true;
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Dropped>>> {
        if !self.armed {
            return Poll::Ready(None);
        }
        let pause = self
            .pause
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(CUT_PAUSE)));
        match pause.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Some(Err(Dropped))),
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Dropped;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Dropped>>> {
        match &mut self.get_mut().0 {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Cut { first, cut, .. } => match first.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => cut.poll(cx),
            },
            Inner::Stream(paced) => paced.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Cut { .. } => false,
            Inner::Stream(paced) => paced.finished,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Cut { len, .. } => SizeHint::with_exact(*len),
            Inner::Stream(_) => SizeHint::default(),
        }
    }
}
