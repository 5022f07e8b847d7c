//! The floor under the proxy's overhead: a hyper server and the same pooled
//! legacy client, forwarding every request to one upstream with nothing in
//! between. Comparing it with `strake-proxy` in the same run separates what
//! the proxy's own stages cost from what hyper costs.
//!
//! ```text
//! cargo run --release -p strake-proxy --example floor -- 127.0.0.1:28383 http://127.0.0.1:28380 sk-real-key
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen: std::net::SocketAddr = args.next().expect("listen address").parse().unwrap();
    let upstream: http::Uri = args.next().expect("upstream URL").parse().unwrap();
    let key = http::HeaderValue::from_str(&format!("Bearer {}", args.next().unwrap_or_default()))
        .expect("a header-safe key");
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        let key = key.clone();
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let client = client.clone();
            let upstream = upstream.clone();
            let key = key.clone();
            async move {
                let (mut parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                parts.uri = format!("{upstream}{}", &pq[1..]).parse().unwrap();
                parts.headers.remove(http::header::HOST);
                parts.headers.insert(http::header::AUTHORIZATION, key);
                let resp = client
                    .request(http::Request::from_parts(parts, Full::new(body)))
                    .await
                    .unwrap();
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(conn);
    }
}
