//! `portcullis token generate` and `portcullis hash-password`: make the secrets and the forms
//! they are stored in (`token_sha256`, `password_hash`).

use aws_lc_rs::rand::SecureRandom;
use base64::Engine;

use crate::auth::credentials::token_digest;

/// A new access token and the digest to put in `gateway.yaml`.
pub struct NewToken {
    pub token: String,
    pub sha256_hex: String,
}

/// 160 random bits, URL-safe base64, behind `prefix` (so leaked tokens are recognisable).
pub fn generate_token(prefix: &str) -> Result<NewToken, String> {
    let mut bytes = [0u8; 20];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system random number generator failed".to_string())?;
    let token = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let sha256_hex = token_digest(&token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(NewToken { token, sha256_hex })
}

/// Password hash families `hash-password` can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HashAlgorithm {
    Argon2id,
    Bcrypt,
}

/// Hash a password read from stdin. One trailing newline is removed (as `echo` adds it).
pub fn hash_password(
    input: &str,
    algorithm: HashAlgorithm,
    bcrypt_cost: u32,
) -> Result<String, String> {
    let password = input.strip_suffix('\n').unwrap_or(input);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err("no password on standard input".into());
    }
    match algorithm {
        HashAlgorithm::Bcrypt => {
            bcrypt::hash(password, bcrypt_cost).map_err(|e| format!("bcrypt: {e}"))
        }
        HashAlgorithm::Argon2id => {
            use argon2::password_hash::{PasswordHasher, SaltString};
            let mut bytes = [0u8; 16];
            aws_lc_rs::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| "the system random number generator failed".to_string())?;
            let salt = SaltString::encode_b64(&bytes).map_err(|e| format!("argon2 salt: {e}"))?;
            argon2::Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| format!("argon2: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::directory::PasswordHash;

    #[test]
    fn generated_tokens_match_their_digest() {
        let new = generate_token("pat-").unwrap();
        assert!(new.token.starts_with("pat-") && new.token.len() == 4 + 27);
        assert_eq!(new.sha256_hex.len(), 64);
        let again: String = token_digest(&new.token)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(again, new.sha256_hex);
        assert_ne!(
            generate_token("").unwrap().token,
            generate_token("").unwrap().token
        );
    }

    #[test]
    fn hashed_passwords_verify_and_the_newline_is_not_part_of_them() {
        for algorithm in [HashAlgorithm::Argon2id, HashAlgorithm::Bcrypt] {
            let hash = hash_password("s3cret\n", algorithm, 4).unwrap();
            let parsed = PasswordHash::parse(&hash).unwrap();
            assert!(parsed.verify("s3cret"), "{algorithm:?}");
            assert!(!parsed.verify("s3cret\n"), "{algorithm:?}");
        }
        assert!(hash_password("\n", HashAlgorithm::Bcrypt, 4).is_err());
    }
}
