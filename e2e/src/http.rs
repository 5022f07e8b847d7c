//! A small HTTP/1.1 client for the proxy and the mock upstream (plain HTTP on
//! 127.0.0.1), on the workspace's hyper.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Requests longer than this fail the test rather than hang it.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A whole response. Responses never carry tokens or keys (that is tested),
/// so printing one is safe.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names (lowercase) and values; a repeated header keeps its last value.
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: String,
}

impl Reply {
    /// The body as JSON (`null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Http {
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<Reply> {
        let mut req = Request::builder().method(method.clone()).uri(url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let body = match body {
            Some(json) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(json)?)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body))?;
        let exchange = async {
            let resp = self.client.request(req).await?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok(Reply {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .with_context(|| format!("{method} {url}: no response within {TIMEOUT:?}"))?
            .with_context(|| format!("{method} {url}"))
    }

    pub async fn get(&self, url: &str) -> Result<Reply> {
        self.send(Method::GET, url, &[], None).await
    }
}
