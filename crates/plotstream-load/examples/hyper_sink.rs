//! The ingest benchmark's reference server: a stock hyper HTTP/1.1 server that reads each
//! request body to the end, counts its bytes and its LF bytes (one per point line, so the load
//! generator can read an acknowledged count) and answers `200` with
//! `{"status":200,"bytes":B,"points":N}`. Nothing is parsed, stored or
//! fanned out, so `plotstream serve`'s throughput divided by this one's is the cost of doing
//! the work, measured on the same machine in the same run.
//!
//! ```text
//! cargo run --release -p plotstream-load --example hyper_sink -- 127.0.0.1:0
//! ```
//!
//! It prints `listening on ADDR` first, and `GET /bytes` answers the bytes counted so far.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

static BYTES: AtomicU64 = AtomicU64::new(0);

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::GET {
        let n = BYTES.load(Ordering::Relaxed);
        return Ok(Response::new(Full::new(Bytes::from(n.to_string()))));
    }
    let mut body = req.into_body();
    let (mut n, mut lines) = (0u64, 0u64);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            n += data.len() as u64;
            lines += data.iter().filter(|&&b| b == b'\n').count() as u64;
            BYTES.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }
    let text = format!("{{\"status\":200,\"bytes\":{n},\"points\":{lines}}}");
    Ok(Response::new(Full::new(Bytes::from(text))))
}
