//! `init --tls-host`: a private CA and a server certificate it signs, for a gateway that
//! terminates TLS itself without a public CA.
//!
//! Clients are told to trust the CA (`ca.crt`), never the leaf: the leaf can then be renewed
//! (same CA, `init --force`) without touching a client. The leaf is what browsers and Go's
//! crypto/tls (docker, podman, skopeo) accept for a server: `CA:FALSE`, the names in
//! `subjectAltName` (the CN is ignored by Go), `serverAuth`, ECDSA P-256.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// The CA outlives many leaves; clients are configured with it once.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// Under the 398 days browsers and Apple's clients accept for a server certificate.
pub const LEAF_VALIDITY_DAYS: i64 = 397;

/// PEM texts of the CA and the server pair.
pub struct TlsMaterial {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

/// One name of `--tls-host`: a DNS name or an IP address.
fn san(host: &str) -> Result<SanType, String> {
    let host = host.trim();
    if host.is_empty() {
        return Err("--tls-host has an empty name (write NAME[,NAME...])".into());
    }
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && (label == "*" || label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    });
    if !valid || host.contains(':') || host.contains('/') {
        return Err(format!(
            "--tls-host {host:?} is not a host name or an IP address (give names only, no scheme or port)"
        ));
    }
    host.to_ascii_lowercase()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|e| format!("--tls-host {host:?}: {e}"))
}

/// A new CA and a leaf for `hosts` signed by it.
pub fn generate(hosts: &[String]) -> Result<TlsMaterial, String> {
    let sans = hosts
        .iter()
        .map(|h| san(h))
        .collect::<Result<Vec<_>, _>>()?;
    let now = OffsetDateTime::now_utc();
    let new_key = || {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("generating a TLS key: {e}"))
    };

    let ca_key = new_key()?;
    let mut ca = CertificateParams::default();
    let mut ca_name = DistinguishedName::new();
    ca_name.push(
        DnType::CommonName,
        format!("portcullis CA for {}", hosts[0]),
    );
    ca.distinguished_name = ca_name;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::hours(1);
    ca.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    let ca_cert = ca
        .self_signed(&ca_key)
        .map_err(|e| format!("signing the CA certificate: {e}"))?;

    let key = new_key()?;
    let mut leaf = CertificateParams::default();
    let mut leaf_name = DistinguishedName::new();
    leaf_name.push(DnType::CommonName, hosts[0].trim());
    leaf.distinguished_name = leaf_name;
    leaf.subject_alt_names = sans;
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = now - Duration::hours(1);
    leaf.not_after = now + Duration::days(LEAF_VALIDITY_DAYS);
    let issuer = Issuer::from_params(&ca, &ca_key);
    let cert = leaf
        .signed_by(&key, &issuer)
        .map_err(|e| format!("signing the TLS certificate: {e}"))?;

    Ok(TlsMaterial {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_accepted_and_urls_are_not() {
        assert!(matches!(
            san("registry.example.com"),
            Ok(SanType::DnsName(_))
        ));
        assert!(matches!(san("10.0.0.7"), Ok(SanType::IpAddress(_))));
        assert!(matches!(san("::1"), Ok(SanType::IpAddress(_))));
        for bad in [
            "https://r.example.com",
            "r.example.com:4567",
            "",
            "a..b",
            "r/x",
        ] {
            let error = san(bad).unwrap_err();
            assert!(error.contains("--tls-host"), "{bad}: {error}");
        }
    }
}
