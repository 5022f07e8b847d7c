//! Building responses: JSON and SSE heads, ids, timestamps.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use serde::Serialize;

use crate::body::MockBody;
use crate::config::Behavior;
use crate::sse::{Events, to_json};

pub(crate) type Resp = Response<MockBody>;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream; charset=utf-8");

/// A JSON response from already serialised bytes.
pub(crate) fn json_bytes(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(MockBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, JSON);
    if status == StatusCode::TOO_MANY_REQUESTS || status.as_u16() == 529 {
        // SDKs honour Retry-After; one second keeps retrying tests short.
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    json_bytes(status, to_json(value))
}

/// A successful JSON reply, cut halfway when the request asked for a drop.
pub(crate) fn ok_json<T: Serialize>(behavior: &Behavior, value: &T) -> Resp {
    ok_bytes(behavior, to_json(value))
}

/// [`ok_json`] for an already serialised body.
pub(crate) fn ok_bytes(behavior: &Behavior, json: Vec<u8>) -> Resp {
    if behavior.drop_after.is_none() {
        return json_bytes(StatusCode::OK, json);
    }
    let mut resp = json_bytes(StatusCode::OK, Bytes::new());
    *resp.body_mut() = MockBody::cut(json);
    resp
}

/// A streamed reply paced and cut as `behavior` says.
pub(crate) fn stream(
    behavior: &Behavior,
    events: Events,
    content_type: Option<HeaderValue>,
) -> Resp {
    let body = MockBody::stream(
        events,
        behavior.stream_interval,
        behavior.stream_linger,
        behavior.drop_after,
    );
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, content_type.unwrap_or(EVENT_STREAM));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Seconds since the Unix epoch, as `created` fields carry.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh id such as `chatcmpl-…`: unique within the process, and across
/// restarts thanks to a start-time component.
pub(crate) fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static NONCE: OnceLock<u32> = OnceLock::new();
    let nonce = *NONCE.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{nonce:08x}{n:016x}")
}

/// Empty JSON array/object helpers for fields the SDKs expect to exist.
pub(crate) type EmptyList = [(); 0];
pub(crate) const EMPTY_LIST: EmptyList = [];

#[derive(Serialize, Clone, Copy)]
pub(crate) struct EmptyObject {}
