//! `ci.signing_key`: the key CI job tokens are signed with, apart from the registry's.
//!
//! Whatever mints job tokens (`portcullis ci-token`, run by the CI side) needs only this key;
//! with it, nothing can mint a registry token, and rotating it revokes every job token and
//! nothing else. When it is set, the gateway accepts job tokens signed with it only: the
//! registry's key can no longer mint them. Without it, job tokens stay signed by
//! `token.signing_key` as before.
//!
//! An EC P-256 key (ES256) in PEM (PKCS#8 or SEC1), as `portcullis init` writes `ci.key`.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use super::keys::KeyError;

pub struct CiKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Names the key in the header: `ci-` and 16 hex digits of the public key's SHA-256.
    kid: String,
}

impl std::fmt::Debug for CiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CiKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl CiKey {
    pub fn load(path: &Path) -> Result<CiKey, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(&pem, path)
    }

    pub fn from_pem(pem: &str, path: &Path) -> Result<CiKey, KeyError> {
        let key = rcgen::KeyPair::from_pem(pem).map_err(|_| KeyError::NoKey {
            path: path.to_owned(),
        })?;
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(KeyError::UnsupportedKey {
                path: path.to_owned(),
                message: "ci.signing_key must be an EC P-256 key (portcullis init makes one)"
                    .into(),
            });
        }
        let public = key.public_key_raw().to_vec();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &public);
        let kid = format!(
            "ci-{}",
            digest.as_ref()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Ok(CiKey {
            encoding: EncodingKey::from_ec_der(&key.serialize_der()),
            decoding: DecodingKey::from_ec_der(&public),
            kid,
        })
    }

    /// A new key, PEM (PKCS#8), for `portcullis init`.
    pub fn generate_pem() -> Result<String, String> {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map(|k| k.serialize_pem())
            .map_err(|e| format!("generating the CI key: {e}"))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(super) fn sign<T: serde::Serialize>(
        &self,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    /// Verify with this key only, ES256 only, under `validation`'s other rules.
    pub(super) fn verify<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<T, jsonwebtoken::errors::Error> {
        let mut validation = validation.clone();
        validation.algorithms = vec![Algorithm::ES256];
        jsonwebtoken::decode::<T>(token, &self.decoding, &validation).map(|d| d.claims)
    }
}
