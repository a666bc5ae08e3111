//! Several gateway replicas with one signing key, one Redis (`shared_state`) and one registry:
//! the multi-replica variant of [`super::stack::Stack`]. Each replica has its own port, its
//! own operations listener and its own log.

use super::gateway::{Gateway, GatewayFiles, GatewayOptions};
use super::redis::RedisServer;
use super::stack::INTERNAL_REALM;
use super::{free_port, Registry, RegistryOptions, TokenAuth};

pub struct Replicas {
    // Field order = drop order: gateways first, then Redis and the registry.
    pub gateways: Vec<Gateway>,
    /// Each replica's operations listener (`http://127.0.0.1:PORT`).
    pub ops: Vec<String>,
    pub redis: RedisServer,
    pub registry: Registry,
    /// The keys every replica shares (for restarting one).
    pub files: GatewayFiles,
    options: GatewayOptions,
}

impl Replicas {
    /// `count` replicas; `extra` YAML for each (after `shared_state:` and `metrics:`);
    /// `public_url` the address clients use (a balancer in front), else each its own.
    pub fn start(count: usize, extra: &str, public_url: Option<String>) -> Replicas {
        let redis = RedisServer::start();
        let files = GatewayFiles::init("ec", "http://127.0.0.1:1");
        let registry = Registry::start(RegistryOptions {
            token_auth: Some(TokenAuth {
                realm: INTERNAL_REALM.into(),
                service: "container_registry".into(),
                issuer: "portcullis".into(),
                rootcertbundle: files.certificate(),
            }),
            http_host: None,
        });
        let mut options = GatewayOptions::new(&registry.url());
        options.public_url = public_url;
        options.extra = format!(
            "shared_state: {{ redis: \"{}\", key_prefix: \"test:\", timeout: 100ms }}\n{extra}",
            redis.url()
        );
        let mut replicas = Replicas {
            gateways: Vec::new(),
            ops: Vec::new(),
            redis,
            registry,
            files,
            options,
        };
        for _ in 0..count {
            replicas.add();
        }
        for ops in replicas.ops.clone() {
            replicas.wait_shared(&ops);
        }
        replicas
    }

    /// `token.expiry` of the replicas started from now on.
    pub fn options_expiry(&mut self, expiry: &str) {
        self.options.expiry = expiry.to_owned();
    }

    /// Replace the replicas' extra YAML (`shared_state:` included) for those started from now.
    pub fn options_extra(&mut self, extra: &str) {
        self.options.extra = extra.to_owned();
    }

    /// Start one more replica.
    pub fn add(&mut self) {
        let port = free_port();
        let mut options = self.options.clone();
        options.extra = format!(
            "metrics: {{ listen: \"127.0.0.1:{port}\" }}\n{}",
            options.extra
        );
        self.gateways
            .push(Gateway::start(self.files.copy_keys(), &options));
        self.ops.push(format!("http://127.0.0.1:{port}"));
    }

    /// SIGKILL replica `i`: no drain, no goodbye (a node lost).
    pub fn kill(&mut self, i: usize) {
        let status = std::process::Command::new("kill")
            .arg("-KILL")
            .arg(self.gateways[i].pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -KILL");
    }

    /// Wait until the replica at `ops` says Redis answers (`/readyz` without "degraded").
    pub fn wait_shared(&self, ops: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let reply = super::http::get(&format!("{ops}/readyz")).send();
            if reply.status == 200 && !reply.body.contains("degraded") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the replica never reached Redis: {} {}",
                reply.status,
                reply.body
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Ask replica `i` for a token with Basic credentials: (status, body JSON).
    pub fn login(&self, i: usize, user: &str, secret: &str, scope: &str) -> super::http::Reply {
        let mut url = format!(
            "{}/jwt/auth?service=container_registry",
            self.gateways[i].url
        );
        if !scope.is_empty() {
            url.push_str("&scope=");
            url.push_str(scope);
        }
        super::http::get(&url).basic(user, secret).send()
    }
}
