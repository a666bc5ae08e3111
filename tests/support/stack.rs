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
