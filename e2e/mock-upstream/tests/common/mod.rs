//! A plain hyper client for talking to the mock in tests.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use strake_mock_upstream::{Keys, MockConfig, MockUpstream};

pub const KEY: &str = "sk-real-upstream-key";

pub async fn mock() -> MockUpstream {
    mock_with(MockConfig {
        keys: Keys::all(KEY),
        ..MockConfig::default()
    })
    .await
}

pub async fn mock_with(config: MockConfig) -> MockUpstream {
    MockUpstream::start(config).await.expect("mock starts")
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One body frame and when it arrived, relative to the response head.
pub struct Frame {
    pub at: Duration,
    pub data: Bytes,
}

pub struct Streamed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub frames: Vec<Frame>,
    /// Whether the body ended in an error (connection cut) rather than cleanly.
    pub failed: bool,
}

impl Streamed {
    pub fn text(&self) -> String {
        let all: Vec<u8> = self.frames.iter().flat_map(|f| f.data.to_vec()).collect();
        String::from_utf8(all).expect("UTF-8 stream")
    }

    /// The JSON payloads of the `data:` lines, skipping `[DONE]`.
    pub fn data(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|l| l.trim_end_matches('\r').strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).expect("JSON data line"))
            .collect()
    }

    /// The `event:` names, in order.
    pub fn events(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .map(str::to_owned)
            .collect()
    }
}

pub struct Call {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    http2: bool,
}

pub fn post(mock: &MockUpstream, path: &str, body: &str) -> Call {
    Call::new(Method::POST, mock, path).body(body)
}

pub fn get(mock: &MockUpstream, path: &str) -> Call {
    Call::new(Method::GET, mock, path)
}

impl Call {
    pub fn new(method: Method, mock: &MockUpstream, path: &str) -> Self {
        Self {
            method,
            url: format!("{}{path}", mock.url()),
            headers: Vec::new(),
            body: Bytes::new(),
            http2: false,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn bearer(self, key: &str) -> Self {
        self.header("authorization", &format!("Bearer {key}"))
    }

    pub fn anthropic(self, key: &str) -> Self {
        self.header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = Bytes::from(body.to_owned());
        self
    }

    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(&self.url);
        if !self.body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        req.body(Full::new(self.body.clone())).unwrap()
    }

    fn client(&self) -> Client<HttpConnector, Full<Bytes>> {
        Client::builder(TokioExecutor::new())
            .http2_only(self.http2)
            .build_http()
    }

    /// Sends and buffers the whole response.
    pub async fn send(self) -> Reply {
        let resp = self
            .client()
            .request(self.request())
            .await
            .expect("request");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// Sends and records every body frame with its arrival time.
    pub async fn stream(self) -> Streamed {
        let resp = self
            .client()
            .request(self.request())
            .await
            .expect("request");
        let start = Instant::now();
        let (parts, mut body) = resp.into_parts();
        let mut frames = Vec::new();
        let mut failed = false;
        loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        frames.push(Frame {
                            at: start.elapsed(),
                            data,
                        });
                    }
                }
                Some(Err(_)) => {
                    failed = true;
                    break;
                }
                None => break,
            }
        }
        Streamed {
            status: parts.status,
            headers: parts.headers,
            frames,
            failed,
        }
    }
}

/// A chat request body with a prompt of `prompt` and extra fields.
pub fn chat_body(model: &str, prompt: &str, extra: Value) -> String {
    let mut body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body.to_string()
}
