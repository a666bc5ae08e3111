//! Listening: accept TCP connections, terminate TLS when configured, and serve HTTP/1.1 and
//! HTTP/2 on the same port (hyper-util's auto builder decides per connection).
//!
//! [`serve`] takes an already-bound listener and a shutdown future, so tests bind port 0 and
//! run the real server.

pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

use crate::body::Body;
use crate::config::ServerSettings;

/// The client's address, attached to every request.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Accept and serve connections until `shutdown` resolves.
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    settings: ServerSettings,
    service: S,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        // The router answers heads over the limit with a registry-style 431; hyper's own
        // (body-less) 431 only bounds memory, at twice the limit.
        .max_buf_size(settings.max_header_bytes.saturating_mul(2).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(settings.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        );

    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let service = service.clone();
        let tls = tls.clone();
        let handshake_timeout = settings.header_read_timeout;
        tokio::spawn(async move {
            let hyper_service =
                hyper::service::service_fn(move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert(ClientAddr(peer));
                    service.clone().oneshot(request)
                });
            let result = match tls {
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), hyper_service)
                        .await
                }
                Some(acceptor) => match tls::accept(&acceptor, stream, handshake_timeout).await {
                    Ok(stream) => {
                        builder
                            .serve_connection(TokioIo::new(stream), hyper_service)
                            .await
                    }
                    Err(error) => {
                        tracing::debug!(client = %peer, "TLS connection refused: {error}");
                        return;
                    }
                },
            };
            if let Err(error) = result {
                tracing::debug!(client = %peer, "connection ended with an error: {error}");
            }
        });
    }
}
