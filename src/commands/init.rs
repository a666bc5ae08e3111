//! `portcullis init`: a token-signing key, its certificate, a starter `gateway.yaml`, and the
//! registry's `auth: token:` block to paste; with `--tls-host`, a CA and a server certificate
//! and the starter config's `tls:` section enabled.

mod tls;

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
    /// Names and addresses for a TLS certificate (`--tls-host`); empty = no TLS files.
    pub tls_hosts: Vec<String>,
}

/// How long the token certificate is valid. The registry checks it when verifying `x5c`.
const CERT_VALIDITY_DAYS: i64 = 3650;

/// Write the files and return the text to print.
pub fn init(options: &InitOptions) -> Result<String, String> {
    let public_url = origin_flag("--public-url", &options.public_url, "the gateway")?;
    origin_flag("--upstream", &options.upstream, "the registry")?;
    let with_tls = !options.tls_hosts.is_empty();
    if with_tls && public_url.scheme_str() != Some("https") {
        return Err(format!(
            "--public-url {:?} is http, but --tls-host makes the gateway speak TLS: write https://",
            options.public_url
        ));
    }
    let key_path = options.dir.join("token.key");
    let cert_path = options.dir.join("token.crt");
    let config_path = options.dir.join("gateway.yaml");
    let ci_key_path = options.dir.join("ci.key");
    let tls_paths = TLS_FILES.map(|name| options.dir.join(name));
    let mut written = vec![&key_path, &cert_path, &config_path, &ci_key_path];
    if with_tls {
        written.extend(tls_paths.iter());
    }
    if !options.force {
        for path in written {
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

    let material = if with_tls {
        Some(tls::generate(&options.tls_hosts)?)
    } else {
        None
    };

    write_private(&key_path, key.serialize_pem().as_bytes())?;
    // CI job tokens' own key (`ci.signing_key`): the CI side that mints them holds only this.
    write_private(
        &ci_key_path,
        crate::auth::ci_key::CiKey::generate_pem()?.as_bytes(),
    )?;
    write_public(&cert_path, &cert.pem())?;
    let [ca_cert_path, ca_key_path, tls_cert_path, tls_key_path] = &tls_paths;
    if let Some(material) = &material {
        write_public(ca_cert_path, &material.ca_cert)?;
        write_private(ca_key_path, material.ca_key.as_bytes())?;
        write_public(tls_cert_path, &material.cert)?;
        write_private(tls_key_path, material.key.as_bytes())?;
    }
    let listen_port = public_url
        .port_u16()
        .unwrap_or(match public_url.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
    let config = starter_config(
        &options.public_url,
        &options.upstream,
        listen_port,
        with_tls,
    );
    write_public(&config_path, &config)?;

    let absolute_cert = std::fs::canonicalize(&cert_path).unwrap_or(cert_path.clone());
    let realm = format!("{}/jwt/auth", options.public_url.trim_end_matches('/'));
    let tls_text = match &material {
        Some(_) => tls_instructions(
            public_url
                .authority()
                .map(|a| a.as_str())
                .unwrap_or_default(),
            ca_cert_path,
            ca_key_path,
            tls_cert_path,
            &options.tls_hosts,
        ),
        None if public_url.scheme_str() == Some("https") => format!(
            "\nNo TLS files were made: {config} serves plain HTTP. Give it a tls: section (or run\n\
             init again with --tls-host NAME), or set server.behind_tls_proxy: true when TLS ends\n\
             in a proxy in front of portcullis.\n",
            config = config_path.display()
        ),
        None => String::new(),
    };
    Ok(format!(
        "wrote {key} (signing key, keep it secret), {cert} (its certificate, valid {CERT_VALIDITY_DAYS} days), {ci_key} (the CI job tokens' key, keep it secret) and {config}\n\n\
         Give the registry this block in its config.yml (copy {cert} to the registry host if it runs elsewhere):\n\n{block}\n\
         Then add users and projects to {config}, check it with `portcullis check --config {config}`,\n\
         and start the gateway with `portcullis serve --config {config}`.\n{tls_text}",
        key = key_path.display(),
        ci_key = ci_key_path.display(),
        cert = cert_path.display(),
        config = config_path.display(),
        block = super::registry_auth_block(&realm, "container_registry", "portcullis", &absolute_cert),
    ))
}

/// The files `--tls-host` writes, in the directory: the CA's certificate (what clients trust)
/// and key (to sign a new leaf later; keep it secret or delete it), the server pair.
const TLS_FILES: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];

/// `--public-url` / `--upstream` are origins: a scheme, a host, an optional port, nothing after.
/// Refused here, naming the flag, rather than by `check` later naming a key of the file.
fn origin_flag(flag: &str, text: &str, what: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("{flag} {text:?} is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        None => {
            return Err(format!(
                "{flag} {text:?} has no scheme: write https://{text} (or http:// for plain HTTP)"
            ))
        }
        Some(other) => {
            return Err(format!(
                "{flag} {text:?}: the scheme must be https:// or http://, not {other}://"
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{flag} {text:?} has no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{flag} {text:?} must not have a path: {what} serves the registry API at /v2/ of its origin (write {}://{})",
            uri.scheme_str().unwrap_or("https"),
            uri.authority().map(|a| a.as_str()).unwrap_or_default()
        ));
    }
    Ok(uri)
}

/// How each client trusts the new CA.
fn tls_instructions(
    authority: &str,
    ca: &Path,
    ca_key: &Path,
    cert: &Path,
    hosts: &[String],
) -> String {
    let ca = std::fs::canonicalize(ca).unwrap_or(ca.to_owned());
    let ca = ca.display();
    format!(
        "\nTLS: {cert} (for {hosts}, valid {leaf} days) is signed by the CA {ca} (valid {cav} days);\n\
         the tls: section of the config uses it. {ca_key} can sign a new certificate: keep it secret\n\
         (or delete it and run init --force for a new CA). Each client trusts the CA, not the certificate:\n\
         \x20 docker:          /etc/docker/certs.d/{authority}/ca.crt   (sudo mkdir -p /etc/docker/certs.d/{authority} && sudo cp {ca} $_/ca.crt)\n\
         \x20 podman, buildah: /etc/containers/certs.d/{authority}/ca.crt, or --cert-dir DIR holding ca.crt\n\
         \x20 skopeo:          --cert-dir DIR (inspect, login), --src-cert-dir / --dest-cert-dir DIR (copy), DIR holding ca.crt\n\
         \x20 curl:            --cacert {ca}\n\
         \x20 portcullis doctor: --ca-file {ca}\n",
        cert = cert.display(),
        ca_key = ca_key.display(),
        hosts = hosts.join(", "),
        leaf = tls::LEAF_VALIDITY_DAYS,
        cav = tls::CA_VALIDITY_DAYS,
    )
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

/// Write a file others may read (certificates, the config).
fn write_public(path: &Path, contents: &str) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn starter_config(public_url: &str, upstream: &str, port: u16, with_tls: bool) -> String {
    let tls = if with_tls {
        "tls: { cert: tls.crt, key: tls.key } # written by init --tls-host, signed by ca.crt"
    } else {
        "# tls: { cert: tls.crt, key: tls.key } # terminate TLS here (absent = plain HTTP)"
    };
    format!(
        r#"# portcullis gateway configuration. Every key is described in the README.
listen: "0.0.0.0:{port}"
public_url: "{public_url}"        # clients' address; the token realm is public_url + /jwt/auth
{tls}
upstream:
  url: "{upstream}"
token:
  issuer: "portcullis"             # = the registry's auth.token.issuer
  service: "container_registry"    # = the registry's auth.token.service
  expiry: "5m"
  signing_key: token.key
  certificate: token.crt           # = the registry's auth.token.rootcertbundle
ci:
  signing_key: ci.key              # signs CI job tokens (portcullis ci-token); rotating it revokes them all
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
