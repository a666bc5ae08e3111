//! TLS termination with rustls: certificate loading, ALPN (`h2`, `http/1.1`), and a clear
//! answer to plain HTTP sent to the TLS port instead of a hung or silently closed connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why the TLS configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert {}: {message}", path.display())]
    Cert { path: PathBuf, message: String },
    #[error("tls.key {}: {message}", path.display())]
    Key { path: PathBuf, message: String },
    #[error("tls: the certificate and key do not belong together: {0}")]
    Pair(String),
}

/// Build an acceptor from PEM files.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        message: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    crate::pem::certificates(path).map_err(|message| TlsError::Cert {
        path: path.to_owned(),
        message,
    })
}

/// Why one connection did not become a TLS session.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("the client sent plain HTTP to the TLS port (answered 400)")]
    PlainHttp,
    #[error("the handshake did not complete within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Complete a TLS handshake, or answer plain HTTP with a 400 that says what happened.
pub async fn accept(
    acceptor: &TlsAcceptor,
    mut stream: TcpStream,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, AcceptError> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(timeout, stream.peek(&mut first))
        .await
        .map_err(|_| AcceptError::Timeout(timeout))??;
    if peeked == 1 && first[0] != TLS_HANDSHAKE_RECORD {
        let body = r#"{"errors":[{"code":"UNSUPPORTED","message":"this port speaks HTTPS: the client sent plain HTTP; use an https:// URL"}]}"#;
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(timeout, async {
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await
        })
        .await;
        return Err(AcceptError::PlainHttp);
    }
    tokio::time::timeout(timeout, acceptor.accept(stream))
        .await
        .map_err(|_| AcceptError::Timeout(timeout))?
        .map_err(AcceptError::Io)
}
