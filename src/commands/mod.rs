//! The CLI sub-commands, as library functions `main.rs` calls. Each returns what to print or a
//! typed error; exit codes are decided in `main.rs`.

pub mod check;
pub mod ci_token;
pub mod doctor;
mod doctor_tls;
pub mod init;
pub mod secrets;
pub mod serve;

/// The `auth: token:` block for the registry's `config.yml`.
pub fn registry_auth_block(
    realm: &str,
    service: &str,
    issuer: &str,
    rootcertbundle: &std::path::Path,
) -> String {
    format!(
        "auth:\n  token:\n    realm: \"{realm}\"\n    service: \"{service}\"\n    issuer: \"{issuer}\"\n    rootcertbundle: \"{}\"\n",
        rootcertbundle.display()
    )
}
