//! `portcullis init`: a token-signing key, its certificate, a starter `gateway.yaml`, and the
//! registry's `auth: token:` block to paste.

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use time::{Duration, OffsetDateTime};

/// The signing key's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA P-256, tokens signed with ES256 (small, fast).
    Ec,
    /// RSA 2048, tokens signed with RS256.
    Rsa,
}

/// What `init` needs to know.
pub struct InitOptions {
    pub dir: PathBuf,
    pub upstream: String,
    pub public_url: String,
    pub key_type: KeyType,
    pub force: bool,
}

/// How long the token certificate is valid. The registry checks it when verifying `x5c`.
const CERT_VALIDITY_DAYS: i64 = 3650;

/// Write the files and return the text to print.
pub fn init(options: &InitOptions) -> Result<String, String> {
    let key_path = options.dir.join("token.key");
    let cert_path = options.dir.join("token.crt");
    let config_path = options.dir.join("gateway.yaml");
    if !options.force {
        for path in [&key_path, &cert_path, &config_path] {
            if path.exists() {
                return Err(format!(
                    "{} exists; pass --force to replace it",
                    path.display()
                ));
            }
        }
    }
    std::fs::create_dir_all(&options.dir)
        .map_err(|e| format!("cannot create {}: {e}", options.dir.display()))?;

    let key = generate_key(options.key_type)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "portcullis token signing");
    params.distinguished_name = name;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CERT_VALIDITY_DAYS);
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("signing the certificate: {e}"))?;

    write_private(&key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
    let listen_port = options
        .public_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| {
            u.port_u16().or(match u.scheme_str() {
                Some("http") => Some(80),
                _ => Some(443),
            })
        })
        .unwrap_or(4567);
    let config = starter_config(&options.public_url, &options.upstream, listen_port);
    std::fs::write(&config_path, config)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;

    let absolute_cert = std::fs::canonicalize(&cert_path).unwrap_or(cert_path.clone());
    let realm = format!("{}/jwt/auth", options.public_url.trim_end_matches('/'));
    Ok(format!(
        "wrote {key} (signing key, keep it secret), {cert} (its certificate, valid {CERT_VALIDITY_DAYS} days) and {config}\n\n\
         Give the registry this block in its config.yml (copy {cert} to the registry host if it runs elsewhere):\n\n{block}\n\
         Then add users and projects to {config}, check it with `portcullis check --config {config}`,\n\
         and start the gateway with `portcullis serve --config {config}`.\n",
        key = key_path.display(),
        cert = cert_path.display(),
        config = config_path.display(),
        block = super::registry_auth_block(&realm, "container_registry", "portcullis", &absolute_cert),
    ))
}

/// A new signing key. rcgen generates EC keys itself; RSA keys come from aws-lc-rs (rcgen
/// cannot generate them) and are handed over as PKCS#8.
fn generate_key(key_type: KeyType) -> Result<KeyPair, String> {
    match key_type {
        KeyType::Ec => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("generating the key: {e}")),
        KeyType::Rsa => {
            use aws_lc_rs::encoding::AsDer;
            let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| "generating the RSA key failed".to_string())?;
            let pkcs8 = rsa
                .as_der()
                .map_err(|_| "encoding the RSA key failed".to_string())?;
            let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
            KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)
                .map_err(|e| format!("loading the RSA key: {e}"))
        }
    }
}

/// Write a secret file readable by its owner only.
///
/// The key goes to a new file created with mode 0600 and is then renamed over `path`: opening
/// the old file with `mode(0o600)` would keep the OLD file's mode (the mode applies only when a
/// file is created), so `init --force` over a world-readable key wrote the new key
/// world-readable. The rename also means a reader never sees a half-written key.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), String> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let error = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".new-{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&temporary, path)) {
        let _ = std::fs::remove_file(&temporary);
        return Err(error(e));
    }
    Ok(())
}

fn starter_config(public_url: &str, upstream: &str, port: u16) -> String {
    format!(
        r#"# portcullis gateway configuration. Every key is described in the README.
listen: "0.0.0.0:{port}"
public_url: "{public_url}"        # clients' address; the token realm is public_url + /jwt/auth
# tls: {{ cert: tls.crt, key: tls.key }} # terminate TLS here (absent = plain HTTP)
upstream:
  url: "{upstream}"
token:
  issuer: "portcullis"             # = the registry's auth.token.issuer
  service: "container_registry"    # = the registry's auth.token.service
  expiry: "5m"
  signing_key: token.key
  certificate: token.crt           # = the registry's auth.token.rootcertbundle
users: []
# users:
#   - username: alice
#     password_hash: "..."         # echo -n 'secret' | portcullis hash-password
#     personal_access_tokens:
#       - name: laptop
#         token_sha256: "..."      # portcullis token generate
#         scopes: [read_registry, write_registry]
projects: []
# projects:
#   - path: mygroup/myproject
#     visibility: private          # private | internal | public
#     members: {{ alice: developer }}
"#
    )
}
