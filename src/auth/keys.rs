//! The token-signing key, its certificate, and the key ids registries look keys up by.
//!
//! The registry verifies our tokens with the certificate it was given as `rootcertbundle`.
//! Every token carries that certificate in `x5c` (found first by distribution 2.8 and 3.x) and
//! its libtrust key id in `kid` (what 2.8 falls back to). At load time the key is checked
//! against the certificate by signing and verifying a token, so a mismatched pair is a config
//! problem at start-up, not a registry that refuses every push.

use std::path::{Path, PathBuf};

use aws_lc_rs::{digest, signature};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

/// Why the signing key or its certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} is not a valid X.509 certificate: {message}", path.display())]
    BadCertificate { path: PathBuf, message: String },
    #[error("{} holds no PEM private key (PKCS#8, SEC1 \"EC PRIVATE KEY\" or PKCS#1 \"RSA PRIVATE KEY\")", path.display())]
    NoKey { path: PathBuf },
    #[error("{} is not a usable signing key: {message}", path.display())]
    UnsupportedKey { path: PathBuf, message: String },
    #[error("the certificate {} expired at {not_after}: registries refuse tokens it vouches for; make a new one with `portcullis init`", path.display())]
    Expired {
        path: PathBuf,
        not_after: OffsetDateTime,
    },
    #[error("the signing key {} does not match the certificate {}: the registry would refuse every token", key.display(), cert.display())]
    Mismatch { key: PathBuf, cert: PathBuf },
}

/// A public key tokens are verified with, from a certificate: the signing key's own, or a
/// retired key's (`token.previous_certificates`) during a rotation.
#[derive(Clone)]
pub struct VerifyingKey {
    pub algorithm: Algorithm,
    decoding: DecodingKey,
    /// libtrust key id of the certificate's public key (distribution 2.8's `kid`).
    pub kid: String,
    /// The certificate chain, standard base64 DER, for the `x5c` header.
    pub x5c: Vec<String>,
    pub not_after: OffsetDateTime,
    /// The public key as a JWK (RFC 7517), without `kid`/`x5c`.
    jwk: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Load a retired key's PEM certificate (chain). Its expiry is not checked: tokens it
    /// signed stop verifying by their own `exp` long before a certificate runs out.
    pub fn load(cert_path: &Path) -> Result<VerifyingKey, KeyError> {
        let pem = std::fs::read(cert_path).map_err(|source| KeyError::Read {
            path: cert_path.to_owned(),
            source,
        })?;
        let (chain, certificate) = parse_chain(&pem, cert_path)?;
        let algorithm = match certificate.public_key.len() {
            65 if certificate.public_key[0] == 4 => Algorithm::ES256,
            _ => Algorithm::RS256,
        };
        Self::new(algorithm, &chain, &certificate, cert_path)
    }

    fn new(
        algorithm: Algorithm,
        chain: &[CertificateDer<'static>],
        certificate: &Certificate,
        cert_path: &Path,
    ) -> Result<VerifyingKey, KeyError> {
        let decoding = match algorithm {
            Algorithm::ES256 => DecodingKey::from_ec_der(&certificate.public_key),
            _ => DecodingKey::from_rsa_der(&certificate.public_key),
        };
        let jwk = public_jwk(algorithm, &certificate.public_key).ok_or_else(|| {
            KeyError::BadCertificate {
                path: cert_path.to_owned(),
                message: "its public key is neither EC P-256 nor RSA".into(),
            }
        })?;
        Ok(VerifyingKey {
            jwk,
            algorithm,
            decoding,
            kid: libtrust_key_id(&certificate.spki),
            x5c: chain
                .iter()
                .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
                .collect(),
            not_after: certificate.not_after,
        })
    }

    /// RFC 7638 thumbprint of the public key: the `kid` distribution 3.x looks keys up by.
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.jwk)
    }

    /// The public key as a JWK with its thumbprint `kid`, `alg`, `use` and `x5c`.
    pub fn jwk(&self) -> serde_json::Value {
        let mut jwk = self.jwk.clone();
        jwk.insert("kid".into(), self.thumbprint().into());
        jwk.insert("use".into(), "sig".into());
        jwk.insert("alg".into(), format!("{:?}", self.algorithm).into());
        jwk.insert("x5c".into(), self.x5c.clone().into());
        serde_json::Value::Object(jwk)
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The algorithm's name (`ES256`, `RS256`), for metrics.
    pub fn algorithm_name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::ES256 => "ES256",
            _ => "RS256",
        }
    }
}

/// The PEM chain and its parsed leaf certificate.
fn parse_chain(
    cert_pem: &[u8],
    cert_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, Certificate), KeyError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| KeyError::BadCertificate {
            path: cert_path.to_owned(),
            message: e.to_string(),
        })?;
    let leaf = chain.first().ok_or_else(|| KeyError::NoCertificate {
        path: cert_path.to_owned(),
    })?;
    let certificate = Certificate::parse(leaf).map_err(|message| KeyError::BadCertificate {
        path: cert_path.to_owned(),
        message,
    })?;
    Ok((chain, certificate))
}

/// A key that signs tokens and the certificate that vouches for it.
pub struct SigningKey {
    /// The certificate's public key, its key ids and chain.
    pub public: VerifyingKey,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Load a PEM private key and its PEM certificate (chain), and prove they belong together.
    pub fn load(key_path: &Path, cert_path: &Path) -> Result<SigningKey, KeyError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| KeyError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let key_pem = read(key_path)?;
        let cert_pem = read(cert_path)?;
        Self::from_pem(&key_pem, &cert_pem, key_path, cert_path)
    }

    pub fn from_pem(
        key_pem: &[u8],
        cert_pem: &[u8],
        key_path: &Path,
        cert_path: &Path,
    ) -> Result<SigningKey, KeyError> {
        let (chain, certificate) = parse_chain(cert_pem, cert_path)?;
        if certificate.not_after < OffsetDateTime::now_utc() {
            return Err(KeyError::Expired {
                path: cert_path.to_owned(),
                not_after: certificate.not_after,
            });
        }

        let (algorithm, encoding) = encoding_key(key_pem, key_path)?;
        let key = SigningKey {
            public: VerifyingKey::new(algorithm, &chain, &certificate, cert_path)?,
            encoding,
        };
        if !key.signs_for_its_certificate() {
            return Err(KeyError::Mismatch {
                key: key_path.to_owned(),
                cert: cert_path.to_owned(),
            });
        }
        Ok(key)
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    /// Sign a probe and verify it with the certificate's public key.
    fn signs_for_its_certificate(&self) -> bool {
        let header = jsonwebtoken::Header::new(self.public.algorithm);
        let Ok(probe) =
            jsonwebtoken::encode(&header, &serde_json::json!({"probe": true}), &self.encoding)
        else {
            return false;
        };
        let Some((message, signature)) = probe.rsplit_once('.') else {
            return false;
        };
        jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            &self.public.decoding,
            self.public.algorithm,
        )
        .unwrap_or(false)
    }
}

/// What the gateway needs from an X.509 certificate.
struct Certificate {
    /// DER SubjectPublicKeyInfo (input of the libtrust key id).
    spki: Vec<u8>,
    /// The key bits: an uncompressed EC point, or a PKCS#1 RSAPublicKey.
    public_key: Vec<u8>,
    not_after: OffsetDateTime,
}

impl Certificate {
    fn parse(der: &CertificateDer<'_>) -> Result<Certificate, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        let spki = cert.tbs_certificate.subject_pki.raw.to_vec();
        let public_key = cert
            .tbs_certificate
            .subject_pki
            .subject_public_key
            .data
            .to_vec();
        let not_after = cert.validity().not_after.to_datetime();
        Ok(Certificate {
            spki,
            public_key,
            not_after,
        })
    }
}

/// Build the jsonwebtoken key from PEM: EC P-256 gives ES256, RSA gives RS256.
fn encoding_key(pem: &[u8], path: &Path) -> Result<(Algorithm, EncodingKey), KeyError> {
    let unsupported = |message: &str| KeyError::UnsupportedKey {
        path: path.to_owned(),
        message: message.to_owned(),
    };
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NoKey {
        path: path.to_owned(),
    })?;
    let p256 = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    match key {
        PrivateKeyDer::Sec1(der) => {
            // jsonwebtoken signs EC keys from PKCS#8 only: re-wrap the SEC1 key.
            let pair = signature::EcdsaKeyPair::from_private_key_der(p256, der.secret_sec1_der())
                .map_err(|_| unsupported("only P-256 (prime256v1) EC keys are supported"))?;
            let pkcs8 = pair
                .to_pkcs8v1()
                .map_err(|_| unsupported("cannot convert the EC key to PKCS#8"))?;
            Ok((Algorithm::ES256, EncodingKey::from_ec_der(pkcs8.as_ref())))
        }
        PrivateKeyDer::Pkcs1(der) => {
            signature::RsaKeyPair::from_der(der.secret_pkcs1_der())
                .map_err(|e| unsupported(&format!("RSA key rejected: {e}")))?;
            Ok((
                Algorithm::RS256,
                EncodingKey::from_rsa_der(der.secret_pkcs1_der()),
            ))
        }
        PrivateKeyDer::Pkcs8(der) => {
            if signature::EcdsaKeyPair::from_pkcs8(p256, der.secret_pkcs8_der()).is_ok() {
                Ok((
                    Algorithm::ES256,
                    EncodingKey::from_ec_der(der.secret_pkcs8_der()),
                ))
            } else if signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).is_ok() {
                let key = EncodingKey::from_rsa_pem(pem)
                    .map_err(|e| unsupported(&format!("RSA key rejected: {e}")))?;
                Ok((Algorithm::RS256, key))
            } else {
                Err(unsupported(
                    "only EC P-256 and RSA (2048 bits or more) keys are supported",
                ))
            }
        }
        _ => Err(unsupported("unknown private key format")),
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The required members of the public key's JWK: EC P-256 from the uncompressed point,
/// RSA from the PKCS#1 RSAPublicKey.
fn public_jwk(
    algorithm: Algorithm,
    key: &[u8],
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut jwk = serde_json::Map::new();
    match algorithm {
        Algorithm::ES256 => {
            if key.len() != 65 || key[0] != 4 {
                return None;
            }
            jwk.insert("kty".into(), "EC".into());
            jwk.insert("crv".into(), "P-256".into());
            jwk.insert("x".into(), b64url(&key[1..33]).into());
            jwk.insert("y".into(), b64url(&key[33..]).into());
        }
        _ => {
            let (n, e) = rsa_public_key(key)?;
            jwk.insert("kty".into(), "RSA".into());
            jwk.insert("n".into(), b64url(n).into());
            jwk.insert("e".into(), b64url(e).into());
        }
    }
    Some(jwk)
}

/// (n, e) of a DER RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }, leading zeros dropped.
fn rsa_public_key(der: &[u8]) -> Option<(&[u8], &[u8])> {
    fn element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&first, rest) = der.split_first()?;
        if first != tag {
            return None;
        }
        let (&len, rest) = rest.split_first()?;
        let (len, rest) = if len < 0x80 {
            (usize::from(len), rest)
        } else {
            let count = usize::from(len & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[count..])
        };
        (rest.len() >= len).then(|| rest.split_at(len))
    }
    let (sequence, _) = element(der, 0x30)?;
    let (n, rest) = element(sequence, 0x02)?;
    let (e, _) = element(rest, 0x02)?;
    let trim = |int: &[u8]| -> usize {
        int.iter()
            .take_while(|b| **b == 0)
            .count()
            .min(int.len().saturating_sub(1))
    };
    Some((&n[trim(n)..], &e[trim(e)..]))
}

/// RFC 7638: SHA-256 of the required members in lexicographic order, no whitespace, base64url.
fn thumbprint(jwk: &serde_json::Map<String, serde_json::Value>) -> String {
    let required: &[&str] = match jwk.get("kty").and_then(|v| v.as_str()) {
        Some("EC") => &["crv", "kty", "x", "y"],
        _ => &["e", "kty", "n"],
    };
    let members: Vec<String> = required
        .iter()
        .map(|name| {
            format!(
                "\"{name}\":\"{}\"",
                jwk.get(*name).and_then(|v| v.as_str()).unwrap_or_default()
            )
        })
        .collect();
    let canonical = format!("{{{}}}", members.join(","));
    b64url(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
}

/// The libtrust key id distribution 2.8 matches `kid` against: SHA-256 of the DER
/// SubjectPublicKeyInfo, first 30 bytes, base32 (no padding), 12 groups of 4 joined by ':'.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, spki_der);
    let encoded = base32(&hash.as_ref()[..30]);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|group| std::str::from_utf8(group).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(":")
}

/// RFC 4648 base32, standard alphabet, without padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u64 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u64::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(input.as_bytes()), expected);
        }
    }

    #[test]
    fn rfc7638_thumbprint_of_the_rfcs_own_example_key() {
        // RFC 7638 section 3.1.
        let mut jwk = serde_json::Map::new();
        jwk.insert("kty".into(), "RSA".into());
        jwk.insert("e".into(), "AQAB".into());
        jwk.insert("n".into(), "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into());
        assert_eq!(
            thumbprint(&jwk),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn rsa_public_keys_are_read_from_der() {
        // SEQUENCE { INTEGER 0x00C3 (leading zero dropped), INTEGER 0x010001 }
        let der = [
            0x30, 0x09, 0x02, 0x02, 0x00, 0xC3, 0x02, 0x03, 0x01, 0x00, 0x01,
        ];
        assert_eq!(
            rsa_public_key(&der),
            Some((&[0xC3][..], &[0x01, 0x00, 0x01][..]))
        );
        assert_eq!(rsa_public_key(&der[..5]), None);
    }

    #[test]
    fn libtrust_key_ids_have_twelve_groups_of_four() {
        // Vector: SPKI bytes "spki"; SHA-256 computed with Python's hashlib + base64.b32encode.
        let kid = libtrust_key_id(b"spki");
        assert_eq!(
            kid,
            "N7XM:ZDAW:YVKR:3H7L:H227:O7RN:U5Z3:62F5:T344:KKJH:Z2ZM:Q3SW"
        );
        assert_eq!(kid.split(':').count(), 12);
        assert!(kid.split(':').all(|g| g.len() == 4));
    }
}
