//! doctor's certificate verification: what docker, podman, skopeo and buildah (Go's
//! crypto/x509) accept, so doctor's TLS verdict is theirs. Go accepts a server certificate
//! that is itself one of the trusted roots, even with basicConstraints CA:TRUE (what a plain
//! `openssl req -x509` makes); webpki refuses it (`CaUsedAsEndEntity`). This verifier runs
//! webpki first and, only for that refusal, accepts the certificate iff its DER is
//! byte-identical to one of the `--ca-file` certificates, it is valid now and its
//! subjectAltName names the server. The handshake signatures are verified as always.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// webpki, plus Go's "the leaf is a trusted root" rule for the `--ca-file` certificates.
#[derive(Debug)]
pub(super) struct GoLikeVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The `--ca-file` certificates, compared byte for byte (not the system roots: Go's
    /// rule applies to them too, but no public CA serves its root as a server certificate).
    ca_file: Vec<CertificateDer<'static>>,
}

impl GoLikeVerifier {
    pub(super) fn new(
        roots: RootCertStore,
        ca_file: Vec<CertificateDer<'static>>,
    ) -> Result<GoLikeVerifier, String> {
        let webpki = WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(GoLikeVerifier { webpki, ca_file })
    }

    /// The leaf-is-a-trusted-root rule; `refusal` is webpki's error, returned when it fails.
    fn trusted_root_as_leaf(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
        refusal: Error,
    ) -> Result<ServerCertVerified, Error> {
        if !self
            .ca_file
            .iter()
            .any(|ca| ca.as_ref() == end_entity.as_ref())
        {
            return Err(refusal);
        }
        let (_, parsed) = x509_parser::parse_x509_certificate(end_entity.as_ref())
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let validity = parsed.validity();
        let now = now.as_secs() as i64;
        if now < validity.not_before.timestamp() {
            return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
        }
        if now > validity.not_after.timestamp() {
            return Err(Error::InvalidCertificate(CertificateError::Expired));
        }
        let leaf = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&leaf, server_name)?;
        Ok(ServerCertVerified::assertion())
    }
}

/// webpki's refusal of a CA certificate as a server's own (rustls 0.23 has no variant for
/// it: `CertificateError::Other` wrapping webpki's `CaUsedAsEndEntity`, shown by its name).
fn is_ca_used_as_end_entity(error: &Error) -> bool {
    matches!(error, Error::InvalidCertificate(CertificateError::Other(other))
        if other.0.to_string() == "CaUsedAsEndEntity")
}

impl ServerCertVerifier for GoLikeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(error) if is_ca_used_as_end_entity(&error) => {
                self.trusted_root_as_leaf(end_entity, server_name, now, error)
            }
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// doctor's client TLS configuration: the system roots and `ca`'s, verified as Go does.
pub(super) fn client_config(
    settings: &crate::config::UpstreamSettings,
) -> Result<rustls::ClientConfig, String> {
    let roots = crate::proxy::forward::trust_roots(settings).map_err(|e| e.to_string())?;
    let ca_file = match &settings.ca {
        Some(path) => crate::pem::certificates(path)?,
        None => Vec::new(),
    };
    let verifier = GoLikeVerifier::new(roots, ca_file)?;
    Ok(rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}
