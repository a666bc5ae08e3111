//! Starting the real `portcullis` binary for a test: keys from `portcullis init`, a
//! `gateway.yaml` with the fixture users below, and `portcullis serve` on a free loopback port.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process;

/// The `portcullis` binary cargo built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portcullis"))
}

/// Run `portcullis ARGS`, optionally with stdin, and return (status, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut command = Command::new(binary());
    command.args(args);
    let out = process::run(command, stdin);
    (out.code, out.stdout, out.stderr)
}

/// Secrets of the fixture identities (the gateway only ever sees their digests and hashes).
pub mod secrets {
    pub const ALICE_PASSWORD: &str = "alice-password";
    pub const ALICE_PAT: &str = "pat-alice-read-write-0123456789";
    pub const ALICE_READ_ONLY_PAT: &str = "pat-alice-read-only-0123456789";
    pub const ALICE_EXPIRED_PAT: &str = "pat-alice-expired-0123456789ab";
    pub const ALICE_REVOKED_PAT: &str = "pat-alice-revoked-0123456789ab";
    pub const ALICE_ADMIN_MODE_PAT: &str = "pat-alice-admin-mode-012345678";
    /// alice's `write_registry`-only token (GitLab: create_container_image, no pull).
    pub const ALICE_WRITE_ONLY_PAT: &str = "pat-alice-write-only-012345678";
    pub const BOB_PAT: &str = "pat-bob-reporter-0123456789abcd";
    pub const GUS_PAT: &str = "pat-gus-guest-0123456789abcdefg";
    pub const CAROL_API_PAT: &str = "pat-carol-group-maintainer-0123";
    pub const DAVE_PAT: &str = "pat-dave-blocked-0123456789abcd";
    pub const ROOT_PAT: &str = "pat-root-admin-0123456789abcdef";
    /// gitlab+deploy-token-1: read_registry on mygroup/myproject.
    pub const DEPLOY_READ_ONLY: &str = "deploy-project-read-only-012345";
    /// gitlab+deploy-token-2: read and write on every project of group mygroup.
    pub const DEPLOY_GROUP_WRITE: &str = "deploy-group-read-write-0123456";
    /// project_myproject_bot: project access token, developer, read and write.
    pub const PROJECT_BOT: &str = "bot-project-developer-012345678";
    /// project_myproject_maintainer_bot: project access token of mygroup/myproject,
    /// maintainer, read and write.
    pub const PROJECT_MAINTAINER_BOT: &str = "bot-project-maintainer-01234567";
    /// erin's three personal access tokens, all named `shared` (GitLab allows it), in this
    /// order: `api`; read_registry only; read_registry + write_registry.
    pub const ERIN_API_PAT: &str = "pat-erin-shared-api-0123456789a";
    pub const ERIN_READ_ONLY_PAT: &str = "pat-erin-shared-read-012345678";
    pub const ERIN_WRITE_PAT: &str = "pat-erin-shared-write-01234567";
    /// Project and user settings (tests/protection.rs): pdev (developer) and pmaint
    /// (maintainer) of prot/app; tess has two-factor (her password is alice's); lou is locked;
    /// xena is external.
    pub const PDEV_PAT: &str = "pat-pdev-developer-0123456789ab";
    pub const PMAINT_PAT: &str = "pat-pmaint-maintainer-012345678";
    /// pmaint's `api` token: deletes need a password or `api` (GitLab's admin_container_image).
    pub const PMAINT_API_PAT: &str = "pat-pmaint-maintainer-api-01234";
    pub const TESS_PASSWORD: &str = ALICE_PASSWORD;
    pub const TESS_PAT: &str = "pat-tess-two-factor-0123456789a";
    pub const LOU_PAT: &str = "pat-lou-locked-0123456789abcdef";
    pub const XENA_PAT: &str = "pat-xena-external-0123456789abc";
    /// ada: an administrator with an `api` token (the token API's admin).
    pub const ADA_API_PAT: &str = "pat-ada-admin-api-0123456789abc";
}

/// The hex SHA-256 of `text`: how the config stores a token (`token_sha256`).
pub fn sha256_hex(text: &str) -> String {
    let out = process::run(Command::new("sha256sum"), Some(text));
    out.stdout.split_whitespace().next().unwrap().to_owned()
}

/// The identities every test gateway has:
/// - alice: developer of mygroup/myproject (private); a password, read+write, read-only,
///   expired, revoked and admin_mode-only personal access tokens;
/// - bob: reporter and gus: guest of mygroup/myproject; carol: maintainer of group mygroup (so of every
///   project in it) with an `api` token; dave: blocked; root: administrator;
/// - group mygroup (private) holds mygroup/myproject and mygroup/second (both private);
///   public/app is public, internal/app internal;
/// - deploy tokens gitlab+deploy-token-1 (mygroup/myproject, read) and gitlab+deploy-token-2
///   (group mygroup, read+write); project_myproject_bot (developer, read+write);
/// - mygroup/myproject/vault: a separate private project nested below mygroup/myproject, no
///   members of its own (carol maintains it through the group); project_myproject_maintainer_bot
///   (mygroup/myproject's maintainer bot, read+write);
/// - erin: developer of erin/app (private), three personal access tokens all named `shared`.
pub fn fixture_users() -> String {
    use secrets::*;
    // bcrypt cost 4 keeps the suite fast; the cost is the operator's choice.
    let (code, hash, err) = run_cli(
        &["hash-password", "--algorithm", "bcrypt", "--cost", "4"],
        Some(ALICE_PASSWORD),
    );
    assert_eq!(code, 0, "hash-password failed: {err}");
    let d = sha256_hex;
    format!(
        r#"users:
  - username: alice
    password_hash: "{hash}"
    personal_access_tokens:
      - {{ name: laptop, token_sha256: "{rw}", scopes: [read_registry, write_registry] }}
      - {{ name: ci-read, token_sha256: "{ro}", scopes: [read_registry] }}
      - {{ name: old, token_sha256: "{old}", scopes: [read_registry, write_registry], expires_at: 2020-01-01 }}
      - {{ name: leaked, token_sha256: "{revoked}", scopes: [read_registry, write_registry], revoked: true }}
      - {{ name: admin-only, token_sha256: "{admin_mode}", scopes: [admin_mode] }}
      - {{ name: write-only, token_sha256: "{write_only}", scopes: [write_registry] }}
  - username: bob
    personal_access_tokens:
      - {{ name: bob, token_sha256: "{bob}", scopes: [read_registry, write_registry] }}
  - username: gus
    personal_access_tokens:
      - {{ name: gus, token_sha256: "{gus}", scopes: [read_registry, write_registry] }}
  - username: carol
    personal_access_tokens:
      - {{ name: carol, token_sha256: "{carol}", scopes: [api] }}
  - username: dave
    blocked: true
    personal_access_tokens:
      - {{ name: dave, token_sha256: "{dave}", scopes: [read_registry, write_registry] }}
  - username: root
    admin: true
    personal_access_tokens:
      - {{ name: root, token_sha256: "{root}", scopes: [read_registry, write_registry] }}
  - username: erin
    personal_access_tokens:
      - {{ name: shared, token_sha256: "{erin_api}", scopes: [api] }}
      - {{ name: shared, token_sha256: "{erin_ro}", scopes: [read_registry] }}
      - {{ name: shared, token_sha256: "{erin_rw}", scopes: [read_registry, write_registry] }}
  - username: pdev
    personal_access_tokens:
      - {{ name: pdev, token_sha256: "{pdev}", scopes: [read_registry, write_registry] }}
  - username: pmaint
    personal_access_tokens:
      - {{ name: pmaint, token_sha256: "{pmaint}", scopes: [read_registry, write_registry] }}
      - {{ name: pmaint-api, token_sha256: "{pmaint_api}", scopes: [api] }}
  - username: tess
    password_hash: "{hash}"
    two_factor: true
    personal_access_tokens:
      - {{ name: tess, token_sha256: "{tess}", scopes: [read_registry, write_registry] }}
  - username: lou
    locked: true
    personal_access_tokens:
      - {{ name: lou, token_sha256: "{lou}", scopes: [read_registry, write_registry] }}
  - username: xena
    external: true
    personal_access_tokens:
      - {{ name: xena, token_sha256: "{xena}", scopes: [read_registry, write_registry] }}
  - username: ada
    admin: true
    personal_access_tokens:
      - {{ name: ada, token_sha256: "{ada}", scopes: [api] }}
groups:
  - path: mygroup
    visibility: private
    members: {{ carol: maintainer }}
    deploy_tokens:
      - {{ username: gitlab+deploy-token-2, token_sha256: "{deploy_group}", scopes: [read_registry, write_registry] }}
projects:
  - path: mygroup/myproject
    visibility: private
    members: {{ alice: developer, bob: reporter, gus: guest }}
    deploy_tokens:
      - {{ username: gitlab+deploy-token-1, token_sha256: "{deploy_ro}", scopes: [read_registry], expires_at: 2099-01-01 }}
    access_tokens:
      - {{ username: project_myproject_bot, token_sha256: "{bot}", role: developer, scopes: [read_registry, write_registry] }}
      - {{ username: project_myproject_maintainer_bot, token_sha256: "{maintainer_bot}", role: maintainer, scopes: [read_registry, write_registry] }}
  - path: mygroup/myproject/vault
    visibility: private
  - path: mygroup/second
    visibility: private
  - path: public/app
    visibility: public
  - path: internal/app
    visibility: internal
  - path: erin/app
    visibility: private
    members: {{ erin: developer }}
  - path: prot/app
    visibility: private
    members: {{ pdev: developer, pmaint: maintainer }}
    container_protection:
      repositories:
        - {{ repository_path_pattern: "prot/app/release*", minimum_access_level_for_push: maintainer }}
      tags:
        - {{ tag_name_pattern: "^v[0-9]+", minimum_access_level_for_push: maintainer, minimum_access_level_for_delete: maintainer }}
      immutable_tags: ["^release-"]
  - path: regpriv/app
    visibility: public
    container_registry_access_level: private
    members: {{ pdev: reporter }}
  - path: regoff/app
    visibility: public
    container_registry_access_level: disabled
    members: {{ pmaint: maintainer }}
  - path: frozen/app
    visibility: public
    archived: true
    members: {{ pmaint: maintainer }}
  - path: ci/private
    visibility: private
    members: {{ pdev: developer }}
    job_token_allowlist: [ci/allowed]
  - path: ci/allowed
    visibility: private
    members: {{ pdev: developer }}
  - path: ci/other
    visibility: private
    members: {{ pdev: developer }}
"#,
        hash = hash.trim(),
        rw = d(ALICE_PAT),
        ro = d(ALICE_READ_ONLY_PAT),
        old = d(ALICE_EXPIRED_PAT),
        revoked = d(ALICE_REVOKED_PAT),
        admin_mode = d(ALICE_ADMIN_MODE_PAT),
        write_only = d(ALICE_WRITE_ONLY_PAT),
        bob = d(BOB_PAT),
        gus = d(GUS_PAT),
        carol = d(CAROL_API_PAT),
        dave = d(DAVE_PAT),
        root = d(ROOT_PAT),
        deploy_group = d(DEPLOY_GROUP_WRITE),
        deploy_ro = d(DEPLOY_READ_ONLY),
        bot = d(PROJECT_BOT),
        maintainer_bot = d(PROJECT_MAINTAINER_BOT),
        erin_api = d(ERIN_API_PAT),
        erin_ro = d(ERIN_READ_ONLY_PAT),
        erin_rw = d(ERIN_WRITE_PAT),
        pdev = d(PDEV_PAT),
        pmaint = d(PMAINT_PAT),
        pmaint_api = d(PMAINT_API_PAT),
        tess = d(TESS_PAT),
        lou = d(LOU_PAT),
        xena = d(XENA_PAT),
        ada = d(ADA_API_PAT),
    )
}

/// Keys and a folder for one gateway, made by `portcullis init`.
pub struct GatewayFiles {
    pub dir: tempfile::TempDir,
}

impl GatewayFiles {
    /// `portcullis init` with the given key type ("ec" or "rsa"). The starter config it writes
    /// is replaced by [`Gateway::start`].
    pub fn init(key_type: &str, upstream: &str) -> GatewayFiles {
        let dir = tempfile::tempdir().expect("temp dir");
        let (code, out, err) = run_cli(
            &[
                "init",
                "--dir",
                dir.path().to_str().unwrap(),
                "--upstream",
                upstream,
                "--public-url",
                "http://127.0.0.1:4567",
                "--key-type",
                key_type,
            ],
            None,
        );
        assert_eq!(code, 0, "portcullis init failed:\n{out}\n{err}");
        GatewayFiles { dir }
    }

    /// The same signing key and certificate in a new folder (a second gateway, or a restart
    /// with another config).
    pub fn copy_keys(&self) -> GatewayFiles {
        let dir = tempfile::tempdir().expect("temp dir");
        for file in ["token.key", "token.crt"] {
            std::fs::copy(self.path(file), dir.path().join(file)).expect("copy key files");
        }
        GatewayFiles { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The certificate the registry must trust.
    pub fn certificate(&self) -> PathBuf {
        self.path("token.crt")
    }
}

/// Settings of a test gateway beyond the fixture users.
#[derive(Clone)]
pub struct GatewayOptions {
    pub upstream: String,
    /// `https` when `tls` is set.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub expiry: String,
    /// Extra top-level YAML (e.g. `server:` settings), appended verbatim.
    pub extra: String,
    /// The address clients use, when it is not the gateway's own (a proxy in front).
    pub public_url: Option<String>,
    /// More keys inside the `token:` mapping, e.g. `, previous_certificates: [old.crt]`.
    pub token_extra: String,
}

impl GatewayOptions {
    pub fn new(upstream: &str) -> GatewayOptions {
        GatewayOptions {
            upstream: upstream.to_owned(),
            tls: None,
            expiry: "5m".into(),
            extra: String::new(),
            public_url: None,
            token_extra: String::new(),
        }
    }
}

/// A running `portcullis serve`, killed on drop.
pub struct Gateway {
    child: Child,
    pub files: GatewayFiles,
    /// `http(s)://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`, the registry host clients name.
    pub host: String,
    log_path: PathBuf,
}

impl Gateway {
    /// Write `gateway.yaml` into `files` and start serving on a free port.
    pub fn start(files: GatewayFiles, options: &GatewayOptions) -> Gateway {
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let tls = options
            .tls
            .as_ref()
            .map(|(cert, key)| {
                format!(
                    "tls: {{ cert: \"{}\", key: \"{}\" }}\n",
                    cert.display(),
                    key.display()
                )
            })
            .unwrap_or_default();
        let users = fixture_users();
        let config_path = files.path("gateway.yaml");
        let log_path = files.path("gateway.log");
        let (child, host) = process::start_on_free_port(|port| {
            let host = format!("127.0.0.1:{port}");
            let config = format!(
                "listen: \"{host}\"\npublic_url: \"{public}\"\n{tls}upstream: {{ url: \"{upstream}\", response_timeout: 3s, connect_timeout: 2s }}\ntoken: {{ issuer: portcullis, service: container_registry, expiry: \"{expiry}\", signing_key: token.key, certificate: token.crt{token_extra} }}\n{users}{extra}",
                token_extra = options.token_extra,
                upstream = options.upstream,
                public = options.public_url.clone().unwrap_or_else(|| format!("{scheme}://{host}")),
                expiry = options.expiry,
                extra = options.extra,
            );
            std::fs::write(&config_path, config).expect("write gateway.yaml");
            let log = std::fs::File::create(&log_path).expect("create gateway.log");
            let mut child = Command::new(binary())
                .args(["serve", "--config", config_path.to_str().unwrap()])
                .env("RUST_LOG", "info,portcullis=debug")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start portcullis serve");
            let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            process::wait_ready(
                &mut child,
                "portcullis serve",
                Duration::from_secs(10),
                read_log,
                || read_log().contains("listening on"),
            )
            .map(|()| (child, host))
        });
        Gateway {
            child,
            url: format!("{scheme}://{host}"),
            host,
            files,
            log_path,
        }
    }

    /// Send a signal (e.g. "HUP") to the gateway process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// The process id (for signals from other processes).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the process to exit on its own; `None` if it still runs after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Wait until the log holds `needle` `count` times; fail with the log after `timeout`.
    pub fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.log().matches(needle).count() >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{needle:?} did not appear {count} time(s) in the log within {timeout:?}:\n{}",
            self.log()
        );
    }

    /// `portcullis check --upstream` against this gateway's config: exit code and output.
    pub fn check_upstream(&self) -> (i32, String) {
        let config = self.config_path();
        let (code, out, err) = run_cli(
            &["check", "--config", config.to_str().unwrap(), "--upstream"],
            None,
        );
        (code, format!("{out}{err}"))
    }

    /// The registry accepts this gateway's tokens: `check --upstream` says so and exits 0,
    /// and so does the start-up trust check in the log.
    pub fn assert_registry_trusts_its_tokens(&self) {
        let (code, out) = self.check_upstream();
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("the registry accepts the gateway's tokens"),
            "{out}"
        );
        self.wait_for_log(
            "the registry accepts the gateway's tokens",
            1,
            Duration::from_secs(10),
        );
    }

    /// Everything the gateway logged so far, once the log has stopped growing for a moment.
    ///
    /// The gateway writes a worker's access lines when that worker goes idle, just after the
    /// answer: a test that reads the log as soon as its request returns could otherwise race
    /// that write (a loaded machine may preempt the worker in between). Waiting until two
    /// reads 30 ms apart agree (at most 2 s) settles it without hiding a line that never comes.
    pub fn log(&self) -> String {
        let read = || {
            let mut text = String::new();
            if let Ok(mut file) = std::fs::File::open(&self.log_path) {
                let _ = file.read_to_string(&mut text);
            }
            text
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut text = read();
        loop {
            std::thread::sleep(Duration::from_millis(30));
            let again = read();
            if again == text || std::time::Instant::now() > deadline {
                return again;
            }
            text = again;
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.files.path("gateway.yaml")
    }

    pub fn dir(&self) -> &Path {
        self.files.dir.path()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
