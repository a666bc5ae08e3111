//! A local OIDC issuer for the federation tests: Debian's nginx serving, over HTTPS with a
//! test CA, the discovery documents and JWKS the test writes, and the keys to sign ID tokens
//! with (RSA and EC, made here). One nginx serves several issuers, one per path
//! (`https://127.0.0.1:PORT/github`, `/gitlab`, `/k8s`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};

use super::{free_port, process, require_tool};

/// A signing key of the issuer.
pub struct TestKey {
    pub algorithm: Algorithm,
    encoding: EncodingKey,
    /// The public JWK, with `kid` and `alg`.
    pub jwk: serde_json::Value,
    /// The public key's bytes (for an HMAC-confusion attempt).
    pub public_der: Vec<u8>,
}

pub struct Issuer {
    nginx: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    keys: HashMap<String, TestKey>,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Issuer {
    pub fn start() -> Issuer {
        let dir = tempfile::tempdir().unwrap();
        // The test CA and a certificate for 127.0.0.1 it signs.
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf = CertificateParams::default();
        leaf.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.crt"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        std::fs::create_dir_all(dir.path().join("www")).unwrap();
        let mut issuer = Issuer {
            nginx: None,
            dir,
            port: free_port(),
            keys: HashMap::new(),
        };
        issuer.run();
        issuer
    }

    fn run(&mut self) {
        let binary = require_tool("nginx", "nginx");
        let d = self.dir.path().display();
        let port = self.port;
        let config = format!(
            "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log {d}/access.log;\n  default_type application/json;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {d}/server.crt;\n    ssl_certificate_key {d}/server.key;\n    root {d}/www;\n    location / {{ try_files $uri =404; }}\n  }}\n}}\n"
        );
        let path = self.dir.path().join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(self.dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let log = self.dir.path().join("error.log");
        if let Err(log) = process::wait_ready(
            &mut child,
            "nginx (OIDC issuer)",
            Duration::from_secs(10),
            || std::fs::read_to_string(&log).unwrap_or_default(),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        ) {
            panic!("{log}");
        }
        self.nginx = Some(child);
    }

    /// Stop serving (the issuer is down).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.nginx.take() {
            process::stop_or_fail(
                &mut child,
                "nginx (OIDC issuer)",
                &[
                    ("QUIT", Duration::from_secs(10)),
                    ("TERM", Duration::from_secs(5)),
                ],
            );
        }
    }

    /// The test CA's certificate (the federations' `ca:`).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// `https://127.0.0.1:PORT/NAME`: the issuer URL of one issuer.
    pub fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.port)
    }

    /// Make a key `kid` of `algorithm` (RS256 or ES256); not published until [`publish`].
    pub fn add_key(&mut self, kid: &str, algorithm: Algorithm) {
        let (pem, public_der) = match algorithm {
            Algorithm::ES256 => {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                (key.serialize_pem(), key.public_key_raw().to_vec())
            }
            _ => {
                use aws_lc_rs::encoding::AsDer;
                use aws_lc_rs::signature::KeyPair as _;
                let rsa =
                    aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
                let pkcs8 = rsa.as_der().unwrap();
                let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
                let key =
                    KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256).unwrap();
                (key.serialize_pem(), rsa.public_key().as_ref().to_vec())
            }
        };
        let encoding = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        };
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, algorithm).unwrap();
        let mut jwk = serde_json::to_value(jwk).unwrap();
        jwk["kid"] = kid.into();
        jwk["use"] = "sig".into();
        self.keys.insert(
            kid.to_owned(),
            TestKey {
                algorithm,
                encoding,
                jwk,
                public_der,
            },
        );
    }

    pub fn key(&self, kid: &str) -> &TestKey {
        &self.keys[kid]
    }

    /// Serve issuer `name`'s discovery document and a JWKS of `kids`.
    pub fn publish(&self, name: &str, kids: &[&str]) {
        let base = self.dir.path().join("www").join(name);
        std::fs::create_dir_all(base.join(".well-known")).unwrap();
        let discovery = serde_json::json!({
            "issuer": self.url(name),
            "jwks_uri": format!("{}/jwks", self.url(name)),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        });
        std::fs::write(
            base.join(".well-known/openid-configuration"),
            discovery.to_string(),
        )
        .unwrap();
        let keys: Vec<_> = kids.iter().map(|k| self.keys[*k].jwk.clone()).collect();
        std::fs::write(
            base.join("jwks"),
            serde_json::json!({ "keys": keys }).to_string(),
        )
        .unwrap();
    }

    /// Write any file under the issuer's web root.
    pub fn write(&self, path: &str, contents: &[u8]) {
        let path = self.dir.path().join("www").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    /// A token with `claims`, signed by key `kid` (named in the header).
    pub fn sign(&self, kid: &str, claims: &serde_json::Value) -> String {
        let key = &self.keys[kid];
        let mut header = Header::new(key.algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    /// How many times `path` (e.g. `/github/jwks`) was fetched.
    pub fn fetches(&self, path: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        let needle = format!("\"GET {path} ");
        log.lines().filter(|l| l.contains(&needle)).count()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// GitHub Actions' claims for a job of `repository` on `git_ref` (token.actions.githubusercontent.com).
pub fn github_claims(
    issuer: &str,
    audience: &str,
    repository: &str,
    git_ref: &str,
) -> serde_json::Value {
    let now = now();
    let owner = repository.split('/').next().unwrap();
    serde_json::json!({
        "jti": "6f2a6b8e-0b1c-4f5e-9d1e-1c2b3a4d5e6f",
        "sub": format!("repo:{repository}:ref:{git_ref}"),
        "aud": audience,
        "ref": git_ref,
        "sha": "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
        "repository": repository,
        "repository_owner": owner,
        "repository_owner_id": "123456",
        "repository_visibility": "private",
        "repository_id": "987654",
        "run_id": "4242",
        "run_number": "7",
        "run_attempt": "1",
        "actor": "octocat",
        "actor_id": "1",
        "workflow": "build",
        "event_name": "push",
        "ref_type": "branch",
        "job_workflow_ref": format!("{repository}/.github/workflows/build.yml@{git_ref}"),
        "runner_environment": "github-hosted",
        "iss": issuer,
        "nbf": now - 5,
        "iat": now - 5,
        "exp": now + 300,
    })
}

/// GitLab CI's `id_tokens:` claims for a job of `project_path` on branch `branch`.
pub fn gitlab_claims(
    issuer: &str,
    audience: &str,
    project_path: &str,
    branch: &str,
    protected: bool,
) -> serde_json::Value {
    let now = now();
    let namespace = project_path.rsplit_once('/').unwrap().0;
    serde_json::json!({
        "namespace_id": "72",
        "namespace_path": namespace,
        "project_id": "20",
        "project_path": project_path,
        "user_id": "1",
        "user_login": "alice",
        "user_email": "alice@example.com",
        "pipeline_id": "574",
        "pipeline_source": "push",
        "job_id": "302",
        "ref": branch,
        "ref_type": "branch",
        "ref_path": format!("refs/heads/{branch}"),
        "ref_protected": protected.to_string(),
        "runner_id": 1,
        "runner_environment": "gitlab-hosted",
        "sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
        "project_visibility": "private",
        "ci_config_ref_uri": format!("gitlab.example.com/{project_path}//.gitlab-ci.yml@refs/heads/{branch}"),
        "jti": "235b3a54-b797-45c7-ae9a-f72d7bc6ef5b",
        "iss": issuer,
        "iat": now - 5,
        "nbf": now - 10,
        "exp": now + 3600,
        "sub": format!("project_path:{project_path}:ref_type:branch:ref:{branch}"),
        "aud": audience,
    })
}

/// A Kubernetes projected service-account token's claims (`aud` is a list there).
pub fn kubernetes_claims(
    issuer: &str,
    audience: &str,
    namespace: &str,
    account: &str,
) -> serde_json::Value {
    let now = now();
    serde_json::json!({
        "aud": [audience],
        "exp": now + 3600,
        "iat": now - 5,
        "iss": issuer,
        "jti": "8c1a4c4e-2b6e-4d3f-9d8e-5f1a2b3c4d5e",
        "kubernetes.io": {
            "namespace": namespace,
            "node": { "name": "node-1", "uid": "4a5b6c7d" },
            "pod": { "name": "builder-7d9f", "uid": "1a2b3c4d" },
            "serviceaccount": { "name": account, "uid": "9e8d7c6b" }
        },
        "nbf": now - 5,
        "sub": format!("system:serviceaccount:{namespace}:{account}"),
    })
}
