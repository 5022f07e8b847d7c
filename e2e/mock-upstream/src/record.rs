//! What the mock received, kept for assertions.
//!
//! Tests use the recording to prove what reached the provider: that the real
//! key arrived, that no Strake token (`sk-strk-…`) leaked through, that the
//! body was forwarded untouched. Headers are therefore kept verbatim and in
//! arrival order, duplicates included.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::request::Parts;
use serde::{Serialize, Serializer};

/// One request as the mock received it.
#[derive(Clone, Debug, Serialize)]
pub struct RecordedRequest {
    /// Arrival order, starting at 0; not reset by [`crate::MockUpstream::clear`].
    pub seq: u64,
    /// Arrival time, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query, exactly as sent (query keys such as Gemini's `?key=` included).
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Every header as a `[name, value]` pair, names lowercase; values are
    /// converted lossily if they are not UTF-8.
    pub headers: Vec<(String, String)>,
    /// The body, up to the configured limit. Serialised as a (lossy) UTF-8 string.
    #[serde(serialize_with = "lossy_utf8")]
    pub body: Bytes,
    /// Length of the whole body, which may exceed `body.len()`.
    pub body_len: usize,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in arrival order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True if `needle` appears in any header value, the path or the body:
    /// the check behind "no Strake token reached the provider".
    pub fn contains(&self, needle: &str) -> bool {
        let in_body = !needle.is_empty()
            && self
                .body
                .windows(needle.len())
                .any(|w| w == needle.as_bytes());
        self.path.contains(needle)
            || self.headers.iter().any(|(_, v)| v.contains(needle))
            || in_body
    }

    /// The body parsed as JSON, if it is JSON (and was not truncated).
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Whether the recording holds only a prefix of the body.
    pub fn body_truncated(&self) -> bool {
        self.body_len > self.body.len()
    }
}

fn lossy_utf8<S: Serializer>(body: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(body))
}

/// A bounded, shared log of requests.
pub(crate) struct Recorder {
    inner: Mutex<Log>,
    body_limit: usize,
    capacity: usize,
}

struct Log {
    next_seq: u64,
    requests: VecDeque<RecordedRequest>,
}

impl Recorder {
    pub(crate) fn new(body_limit: usize, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Log {
                next_seq: 0,
                requests: VecDeque::new(),
            }),
            body_limit,
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn record(&self, parts: &Parts, body: &Bytes) {
        let headers = parts
            .headers
            .iter()
            .map(|(n, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_owned(), value)
            })
            .collect();
        let mut request = RecordedRequest {
            seq: 0,
            received_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            version: format!("{:?}", parts.version),
            headers,
            body: body.slice(..body.len().min(self.body_limit)),
            body_len: body.len(),
        };
        let mut log = self.lock();
        request.seq = log.next_seq;
        log.next_seq += 1;
        if log.requests.len() == self.capacity {
            log.requests.pop_front();
        }
        log.requests.push_back(request);
    }

    pub(crate) fn snapshot(&self) -> Vec<RecordedRequest> {
        self.lock().requests.iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.lock().requests.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave the log inconsistent
        // (every update is a single push or pop), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> Parts {
        let (parts, ()) = http::Request::post(uri)
            .header("Authorization", "Bearer real")
            .header("x-dup", "1")
            .header("x-dup", "2")
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    #[test]
    fn records_verbatim_and_bounded() {
        let rec = Recorder::new(4, 2);
        for i in 0..3 {
            rec.record(
                &parts(&format!("/v1/x?i={i}")),
                &Bytes::from_static(b"abcdef"),
            );
        }
        let all = rec.snapshot();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].seq, 1);
        assert_eq!(all[1].path, "/v1/x?i=2");
        assert_eq!(all[1].header("AUTHORIZATION"), Some("Bearer real"));
        assert_eq!(
            all[1].headers_named("x-dup").collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert_eq!(&all[1].body[..], b"abcd");
        assert!(all[1].body_truncated());
        assert!(all[1].contains("real") && all[1].contains("bcd") && !all[1].contains("sk-strk-"));
        let json = serde_json::to_value(&all[1]).unwrap();
        assert_eq!(
            json["headers"][0],
            serde_json::json!(["authorization", "Bearer real"])
        );
        assert_eq!(json["body"], "abcd");
        rec.clear();
        assert!(rec.snapshot().is_empty());
    }
}
