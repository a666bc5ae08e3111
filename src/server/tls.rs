//! TLS termination with rustls: certificate loading, ALPN (`h2`, `http/1.1`), and a clear
//! answer to plain HTTP sent to the TLS port instead of a hung or silently closed connection.
//!
//! The certificate is served from [`Certificates`], which re-reads `tls.cert`/`tls.key` when
//! they change on disk (a renewal by certbot or cert-manager) or on SIGHUP: new handshakes get
//! the new certificate, connections already open keep theirs, and a broken or mismatched new
//! pair is refused with its reason while the old one stays in service.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::cork::Cork;
use crate::config::TlsFiles;
use crate::telemetry::metrics::metrics;

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

/// Build an acceptor from PEM files, and the store that can replace its certificate.
pub fn acceptor(files: &TlsFiles) -> Result<(TlsAcceptor, Arc<Certificates>), TlsError> {
    let certificates = Arc::new(Certificates::load(files)?);
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(certificates.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Session resumption for every client, not only the last 256 (rustls's default: a
    // stateful cache of 256 sessions): stateless tickets under a key rotated every 6 hours.
    // A resumed TLS 1.3 handshake still runs an ECDHE exchange in rustls (psk_dhe_ke only), so
    // it keeps forward secrecy; it saves the certificate signature and its verification.
    // Without a ticketer (it only fails when the system has no randomness), the cache stays.
    if let Ok(ticketer) = rustls::crypto::aws_lc_rs::Ticketer::new() {
        config.ticketer = ticketer;
    }
    Ok((TlsAcceptor::from(Arc::new(config)), certificates))
}

/// Modification time and size of both files: what tells a renewal.
type Stamp = [Option<(SystemTime, u64)>; 2];

fn stamp(files: &TlsFiles) -> Stamp {
    let of = |path: &Path| {
        let metadata = std::fs::metadata(path).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    };
    [of(&files.cert), of(&files.key)]
}

/// The certificate and key in service, replaceable while the server runs.
pub struct Certificates {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: Mutex<Stamp>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

impl Certificates {
    fn load(files: &TlsFiles) -> Result<Certificates, TlsError> {
        let stamp = stamp(files);
        Ok(Certificates {
            current: RwLock::new(Arc::new(certified_key(files)?)),
            files: files.clone(),
            stamp: Mutex::new(stamp),
        })
    }

    /// Re-read the files if they changed since the last look (always when `force`). Gives
    /// `Ok(true)` when a new pair is in service; on `Err` the old one stays.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let now = stamp(&self.files);
        {
            let mut seen = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *seen == now {
                return Ok(false);
            }
            // A broken pair is reported once per change, not at every poll.
            *seen = now;
        }
        let key = Arc::new(certified_key(&self.files)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(true)
    }
}

/// Load and pair the PEM files, and publish the certificate's expiry.
fn certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        message: e.to_string(),
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified =
        CertifiedKey::from_der(certs, key, &provider).map_err(|e| TlsError::Pair(e.to_string()))?;
    if let Some(not_after) = certified
        .cert
        .first()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| cert.validity().not_after.to_datetime())
    {
        metrics().certificate_expiry("tls", not_after);
    }
    Ok(certified)
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
) -> Result<TlsStream<Cork<TcpStream>>, AcceptError> {
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
    tokio::time::timeout(timeout, acceptor.accept(Cork::new(stream)))
        .await
        .map_err(|_| AcceptError::Timeout(timeout))?
        .map_err(AcceptError::Io)
}
