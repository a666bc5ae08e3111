//! portcullis as a library: mount the gateway's tower service inside your own hyper server,
//! next to routes of your own.
//!
//! ```text
//! cargo run --example embed -- gateway.yaml
//! ```
//!
//! The gateway answers `/jwt/auth`, `/jwt/jwks.json` and `/v2/...`; this server adds
//! `/hello`. It serves plain HTTP/1.1 on the config's `listen` address; for TLS, HTTP/2,
//! limits and graceful shutdown use `portcullis::server::serve` (what `portcullis serve`
//! runs) or your own stack. The one contract: put the client's address in the request's
//! extensions as [`ClientAddr`], which brute-force bans, logs and the audit trail rely on.

use std::convert::Infallible;
use std::path::PathBuf;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use portcullis::body::{full, Body};
use portcullis::config::Config;
use portcullis::server::ClientAddr;
use portcullis::Gateway;
use tokio::net::TcpListener;
use tower::ServiceExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path: PathBuf = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "gateway.yaml".into())
        .into();
    let config = Config::load(&path)?;
    let gateway = Gateway::new(&config)?;
    let listener = TcpListener::bind(config.listen).await?;
    println!("embedded gateway listening on {}", listener.local_addr()?);

    loop {
        let (stream, peer) = listener.accept().await?;
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let gateway = gateway.clone();
                async move {
                    if request.uri().path() == "/hello" {
                        return Ok::<_, Infallible>(hello());
                    }
                    request.extensions_mut().insert(ClientAddr(peer));
                    // The gateway is a `tower::Service` whose error type is `Infallible`.
                    gateway.oneshot(request).await
                }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection from {peer}: {error}");
            }
        });
    }
}

/// A route of the embedding application's own.
fn hello() -> Response<Body> {
    let mut response = Response::new(full("hello from the embedding server\n"));
    *response.status_mut() = StatusCode::OK;
    response
}
