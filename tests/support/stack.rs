//! A registry and a gateway in front of it, wired the way an operator wires them: the
//! registry's `auth.token` trusts the gateway's certificate and its own realm points at an
//! unreachable internal host, so only the gateway's rewrite can make a login work.

use super::gateway::{Gateway, GatewayFiles, GatewayOptions};
use super::http::{get, jwt_part};
use super::{Registry, RegistryOptions, TokenAuth};

/// The realm the registry is configured with: never reachable, so clients that get it fail.
pub const INTERNAL_REALM: &str = "http://internal.invalid:1/jwt/auth";

/// How the registry behind the gateway authenticates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RegistryAuth {
    /// Token auth trusting the gateway's certificate (the normal set-up).
    TrustsGateway,
    /// Token auth, but expecting another issuer (a misconfigured registry).
    WrongIssuer,
    /// Token auth, but for another service name.
    WrongService,
    /// Token auth trusting another key's certificate.
    OtherCertificate,
    /// No auth at all: the gateway is the only guard.
    None,
}

pub struct StackOptions {
    pub key_type: &'static str,
    pub registry_auth: RegistryAuth,
    pub registry_http_host: Option<String>,
    pub gateway: GatewayOptions,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            key_type: "ec",
            registry_auth: RegistryAuth::TrustsGateway,
            registry_http_host: None,
            gateway: GatewayOptions::new(""),
        }
    }
}

pub struct Stack {
    // Field order = drop order: the gateway stops before the registry.
    pub gateway: Gateway,
    pub registry: Registry,
    /// The other key the registry trusts, for [`RegistryAuth::OtherCertificate`].
    _other_keys: Option<GatewayFiles>,
}

impl Stack {
    pub fn start() -> Stack {
        Stack::with(StackOptions::default())
    }

    /// A stack whose gateway also has an operations listener (`metrics.listen`: metrics,
    /// health, readiness) and `extra` YAML; the listener's base URL.
    pub fn with_ops(extra: &str, registry_auth: RegistryAuth) -> (Stack, String) {
        let port = super::free_port();
        let stack = Stack::with(StackOptions {
            registry_auth,
            gateway: GatewayOptions {
                extra: format!("metrics: {{ listen: \"127.0.0.1:{port}\" }}\n{extra}"),
                ..GatewayOptions::new("")
            },
            ..StackOptions::default()
        });
        (stack, format!("http://127.0.0.1:{port}"))
    }

    pub fn with(options: StackOptions) -> Stack {
        let files = GatewayFiles::init(options.key_type, "http://127.0.0.1:1");
        let other_keys = (options.registry_auth == RegistryAuth::OtherCertificate)
            .then(|| GatewayFiles::init("ec", "http://127.0.0.1:1"));
        let token_auth = match options.registry_auth {
            RegistryAuth::None => None,
            auth => Some(TokenAuth {
                realm: INTERNAL_REALM.into(),
                service: if auth == RegistryAuth::WrongService {
                    "other_registry".into()
                } else {
                    "container_registry".into()
                },
                issuer: if auth == RegistryAuth::WrongIssuer {
                    "someone-else".into()
                } else {
                    "portcullis".into()
                },
                rootcertbundle: other_keys
                    .as_ref()
                    .map(GatewayFiles::certificate)
                    .unwrap_or_else(|| files.certificate()),
            }),
        };
        let registry = Registry::start(RegistryOptions {
            token_auth,
            http_host: options.registry_http_host.clone(),
        });
        let mut gateway_options = options.gateway;
        gateway_options.upstream = registry.url();
        let gateway = Gateway::start(files, &gateway_options);
        Stack {
            gateway,
            registry,
            _other_keys: other_keys,
        }
    }

    /// The CI variables `portcullis ci-token` prints for a job of `user` in `project`
    /// (`CI_REGISTRY_USER`, `CI_JOB_TOKEN`, ...), valid for `ttl`.
    pub fn ci_variables(
        &self,
        project: &str,
        user: &str,
        ttl: &str,
    ) -> std::collections::HashMap<String, String> {
        let config = self.gateway.config_path();
        let (code, out, err) = super::gateway::run_cli(
            &[
                "ci-token",
                "--config",
                config.to_str().unwrap(),
                "--project",
                project,
                "--user",
                user,
                "--ttl",
                ttl,
            ],
            None,
        );
        assert_eq!(code, 0, "portcullis ci-token failed: {err}");
        out.lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches(['\'', '"']).to_owned()))
            .collect()
    }

    /// A job token (`CI_JOB_TOKEN`) of `user` in `project`, valid for an hour.
    pub fn ci_job_token(&self, project: &str, user: &str) -> String {
        self.ci_variables(project, user, "1h")
            .remove("CI_JOB_TOKEN")
            .expect("CI_JOB_TOKEN in the output of portcullis ci-token")
    }

    /// Ask the gateway for a token with Basic credentials; panics unless it answers 200.
    pub fn token(&self, user: &str, secret: &str, scopes: &[&str]) -> String {
        let mut url = format!("{}/jwt/auth?service=container_registry", self.gateway.url);
        for scope in scopes {
            url.push_str("&scope=");
            url.push_str(scope);
        }
        let reply = get(&url).basic(user, secret).arg("-k").send();
        assert_eq!(reply.status, 200, "token request failed: {}", reply.body);
        reply.json()["token"]
            .as_str()
            .expect("token in the answer")
            .to_owned()
    }

    /// The `access` claim of a token as `type:name:actions` strings.
    pub fn granted(token: &str) -> Vec<String> {
        jwt_part(token, 1)["access"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                let actions: Vec<&str> = a["actions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap())
                    .collect();
                format!(
                    "{}:{}:{}",
                    a["type"].as_str().unwrap(),
                    a["name"].as_str().unwrap(),
                    actions.join(",")
                )
            })
            .collect()
    }
}
