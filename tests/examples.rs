//! The files in examples/ are what operators copy: each one is checked here the way it will be
//! used. The YAML files parse and fit together (ports, probes, names, variables); the
//! gateway.yaml files pass `portcullis check`; the registry config runs Debian's
//! docker-registry, which then trusts the gateway's tokens (and both keys during a rotation);
//! the nginx file passes `nginx -t` and carries a login and a chunked push; the systemd unit
//! passes `systemd-analyze verify` and has its sandboxing.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_yaml::Value;

use support::gateway::secrets::ALICE_PAT;
use support::gateway::{binary, run_cli, GatewayOptions};
use support::http::{get, request};
use support::stack::{Stack, StackOptions};
use support::{free_port, process, require_tool, self_signed, Registry};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn read_example(relative: &str) -> String {
    let path = examples_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a (multi-document) YAML text; panics naming `what` if one does not parse.
fn yaml_documents(what: &str, text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .enumerate()
        .map(|(index, document)| {
            Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{what}: document {index} is not valid YAML: {e}"))
        })
        .filter(|document| !document.is_null())
        .collect()
}

fn one_document(relative: &str) -> Value {
    let mut documents = yaml_documents(relative, &read_example(relative));
    assert_eq!(documents.len(), 1, "{relative}: expected one YAML document");
    documents.remove(0)
}

fn string(value: &Value, what: &str) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {value:?}"))
        .to_owned()
}

fn integer(value: &Value, what: &str) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: expected a number, found {value:?}"))
}

/// Seconds of a gateway.yaml duration as the examples write them (`30s`, `5m`, `1h`).
fn seconds(text: &str) -> u64 {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap());
    let number: u64 = number.parse().unwrap();
    match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => panic!("unexpected duration {text:?}"),
    }
}

/// The port of `host:port`.
fn port_of(address: &str) -> u64 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

/// `text` with `from` (which must occur exactly once: a changed example fails here, loudly,
/// instead of being tested with its old values) replaced by `to`.
fn replace_once(what: &str, text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{what}: expected {from:?} exactly once (the test substitutes it)"
    );
    text.replace(from, to)
}

/// Every `${VAR}` used in `text`.
fn variables(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}

/// `portcullis init --dir DIR` (token.key, token.crt and a starter gateway.yaml).
fn init(dir: &Path, upstream: &str, public_url: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let (code, out, err) = run_cli(
        &[
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--upstream",
            upstream,
            "--public-url",
            public_url,
        ],
        None,
    );
    assert_eq!(code, 0, "portcullis init failed:\n{out}{err}");
}

/// `portcullis check --config PATH [--upstream]` with extra environment variables.
fn check(config: &Path, upstream: bool, env: &[(String, String)]) -> process::Output {
    let mut command = Command::new(binary());
    command.arg("check").arg("--config").arg(config);
    if upstream {
        command.arg("--upstream");
    }
    for (name, value) in env {
        command.env(name, value);
    }
    process::run(command, None)
}

// ---------------------------------------------------------------------------------------------
// YAML: everything parses, and the Kubernetes objects fit together.

#[test]
fn every_yaml_example_parses() {
    let mut found = Vec::new();
    let mut folders = vec![examples_dir()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                let text = std::fs::read_to_string(&path).unwrap();
                let documents = yaml_documents(&path.display().to_string(), &text);
                assert!(!documents.is_empty(), "{}: no YAML in it", path.display());
                found.push(path.strip_prefix(examples_dir()).unwrap().to_owned());
            }
        }
    }
    found.sort();
    for expected in [
        "kubernetes/configmap.yaml",
        "kubernetes/deployment.yaml",
        "kubernetes/kustomization.yaml",
        "kubernetes/pdb.yaml",
        "kubernetes/redis.yaml",
        "kubernetes/secret.yaml",
        "kubernetes/service.yaml",
        "registry-config.yml",
        "systemd/gateway.yaml",
    ] {
        assert!(
            found.iter().any(|p| p == Path::new(expected)),
            "examples/{expected} missing; found {found:?}"
        );
    }
    // The gateway.yaml held by the ConfigMap is YAML too.
    yaml_documents("configmap gateway.yaml", &configmap_gateway_yaml());
}

/// Every Kubernetes object of examples/kubernetes, by kind (several of one kind allowed).
fn kubernetes_objects() -> BTreeMap<String, Vec<Value>> {
    let kustomization = one_document("kubernetes/kustomization.yaml");
    assert_eq!(kustomization["kind"].as_str(), Some("Kustomization"));
    let resources: Vec<String> = kustomization["resources"]
        .as_sequence()
        .expect("kustomization resources")
        .iter()
        .map(|r| string(r, "kustomization resource"))
        .collect();
    // The kustomization lists every other file of the folder, and only those.
    let mut files: Vec<String> = std::fs::read_dir(examples_dir().join("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    files.sort();
    let mut listed = resources.clone();
    listed.sort();
    assert_eq!(listed, files, "kustomization.yaml resources");

    let mut objects: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for file in &resources {
        let what = format!("kubernetes/{file}");
        for object in yaml_documents(&what, &read_example(&what)) {
            let kind = string(&object["kind"], &format!("{what}: kind"));
            string(&object["apiVersion"], &format!("{what}: apiVersion"));
            string(
                &object["metadata"]["name"],
                &format!("{what}: metadata.name"),
            );
            objects.entry(kind).or_default().push(object);
        }
    }
    objects
}

fn the_one<'a>(objects: &'a BTreeMap<String, Vec<Value>>, kind: &str) -> &'a Value {
    let list = objects
        .get(kind)
        .unwrap_or_else(|| panic!("no {kind} in examples/kubernetes"));
    assert_eq!(list.len(), 1, "expected one {kind}");
    &list[0]
}

fn configmap_gateway_yaml() -> String {
    let configmap = one_document("kubernetes/configmap.yaml");
    assert_eq!(configmap["kind"].as_str(), Some("ConfigMap"));
    string(
        &configmap["data"]["gateway.yaml"],
        "configmap data.gateway.yaml",
    )
}

#[test]
fn kubernetes_objects_fit_together() {
    let objects = kubernetes_objects();
    let kinds: BTreeSet<&str> = objects.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "StatefulSet"
        ])
    );
    let gateway: Value = serde_yaml::from_str(&configmap_gateway_yaml()).unwrap();
    let deployment = the_one(&objects, "Deployment");
    assert_eq!(deployment["apiVersion"].as_str(), Some("apps/v1"));
    let replicas = integer(&deployment["spec"]["replicas"], "replicas");
    assert_eq!(replicas, 2);
    let pod = &deployment["spec"]["template"];
    let pod_labels = pod["metadata"]["labels"].clone();
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"], pod_labels,
        "the Deployment selects its own pods"
    );
    let containers = pod["spec"]["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];

    // Ports: the container's named ports are gateway.yaml's listen and metrics.listen.
    let ports: BTreeMap<String, u64> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                string(&p["name"], "port name"),
                integer(&p["containerPort"], "containerPort"),
            )
        })
        .collect();
    assert_eq!(
        ports.get("https").copied(),
        Some(port_of(&string(&gateway["listen"], "listen")))
    );
    let metrics_listen = string(&gateway["metrics"]["listen"], "metrics.listen");
    assert!(
        metrics_listen.starts_with("0.0.0.0:"),
        "inside a pod the ops listener must listen on all addresses for the kubelet's probes: {metrics_listen}"
    );
    assert_eq!(ports.get("ops").copied(), Some(port_of(&metrics_listen)));
    assert_eq!(ports.get("ops").copied(), Some(9464));

    // Probes: liveness is /healthz, readiness /readyz, both on the ops port.
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
        let port = match &get["port"] {
            Value::String(name) => ports.get(name).copied(),
            other => other.as_u64(),
        };
        assert_eq!(port, Some(9464), "{probe} must use the ops port");
        assert!(
            get["scheme"].is_null() || get["scheme"].as_str() == Some("HTTP"),
            "the ops listener speaks plain HTTP"
        );
    }

    // Shutdown: preStop sleep + shutdown_grace fit in the termination grace period.
    let grace = integer(
        &pod["spec"]["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    let shutdown_grace = seconds(&string(
        &gateway["server"]["shutdown_grace"],
        "server.shutdown_grace",
    ));
    let pre_stop = &container["lifecycle"]["preStop"];
    let sleep = pre_stop["sleep"]["seconds"].as_u64().unwrap_or_else(|| {
        panic!("preStop must wait for endpoint propagation (sleep action): {pre_stop:?}")
    });
    assert!(
        grace > sleep + shutdown_grace,
        "terminationGracePeriodSeconds {grace} must exceed preStop {sleep}s + shutdown_grace {shutdown_grace}s"
    );

    // Security: non-root, read-only root, no capabilities, no escalation; resources set.
    let pod_security = &pod["spec"]["securityContext"];
    let security = &container["securityContext"];
    assert!(
        pod_security["runAsNonRoot"].as_bool() == Some(true)
            || security["runAsNonRoot"].as_bool() == Some(true),
        "runAsNonRoot"
    );
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert!(
        security["capabilities"]["drop"]
            .as_sequence()
            .is_some_and(|d| d.iter().any(|c| c.as_str() == Some("ALL"))),
        "capabilities.drop: [ALL]"
    );
    assert!(
        security["capabilities"]["add"].is_null(),
        "no capability added"
    );
    for what in ["requests", "limits"] {
        assert!(
            container["resources"][what]["memory"].is_string(),
            "resources.{what}.memory"
        );
    }
    // A read-only root file system: the audit log must go to stdout.
    assert_eq!(gateway["audit"]["path"].as_str(), Some("-"));

    // The config and the keys: the ConfigMap and the Secret the pod mounts, and gateway.yaml's
    // paths (relative to its own folder) land on the Secret's keys.
    let configmap = the_one(&objects, "ConfigMap");
    let secret = the_one(&objects, "Secret");
    let volumes = pod["spec"]["volumes"].as_sequence().unwrap();
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    let mount_of = |volume: &Value| -> PathBuf {
        let name = volume["name"].as_str().unwrap();
        let mount = mounts
            .iter()
            .find(|m| m["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("volume {name} is not mounted"));
        assert!(
            mount["subPath"].is_null(),
            "{name}: a subPath mount never sees updates"
        );
        PathBuf::from(string(&mount["mountPath"], "mountPath"))
    };
    let config_volume = volumes
        .iter()
        .find(|v| !v["configMap"].is_null())
        .expect("a configMap volume");
    assert_eq!(
        config_volume["configMap"]["name"],
        configmap["metadata"]["name"]
    );
    let secret_volume = volumes
        .iter()
        .find(|v| !v["secret"].is_null())
        .expect("a secret volume");
    assert_eq!(
        secret_volume["secret"]["secretName"],
        secret["metadata"]["name"]
    );
    let config_dir = mount_of(config_volume);
    let keys_dir = mount_of(secret_volume);
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| string(a, "args"))
        .collect();
    let config_arg = args
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .expect("serve --config PATH");
    assert_eq!(Path::new(config_arg), config_dir.join("gateway.yaml"));
    let secret_keys: BTreeSet<String> = secret["stringData"]
        .as_mapping()
        .expect("Secret stringData")
        .iter()
        .map(|(k, v)| {
            let k = string(k, "Secret key");
            assert!(
                string(v, &k).contains("PLACEHOLDER"),
                "secret.yaml {k}: the example must hold placeholders, never a real key"
            );
            k
        })
        .collect();
    for (key, value) in [
        ("tls.cert", &gateway["tls"]["cert"]),
        ("tls.key", &gateway["tls"]["key"]),
        ("token.signing_key", &gateway["token"]["signing_key"]),
        ("token.certificate", &gateway["token"]["certificate"]),
    ] {
        let path = normalize(&config_dir.join(string(value, key)));
        assert_eq!(
            path.parent(),
            Some(keys_dir.as_path()),
            "{key} must be in the Secret's mount"
        );
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            secret_keys.contains(&file),
            "{key}: no {file} in the Secret"
        );
    }

    // Every ${VAR} of gateway.yaml is set in the container.
    let env: BTreeSet<String> = container["env"]
        .as_sequence()
        .map(|e| e.iter().map(|v| string(&v["name"], "env name")).collect())
        .unwrap_or_default();
    for variable in variables(&configmap_gateway_yaml()) {
        assert!(
            env.contains(&variable),
            "${{{variable}}} is not set in the container"
        );
    }

    // Redis (shared_state): the StatefulSet's pods, behind a ClusterIP Service that
    // shared_state.redis names by host and port.
    let redis = the_one(&objects, "StatefulSet");
    let redis_labels = redis["spec"]["template"]["metadata"]["labels"].clone();
    assert_ne!(redis_labels, pod_labels);
    let url = string(&gateway["shared_state"]["redis"], "shared_state.redis");
    let (services, redis_services): (Vec<&Value>, Vec<&Value>) = objects["Service"]
        .iter()
        .partition(|s| s["spec"]["selector"] != redis_labels);
    assert_eq!(redis_services.len(), 1, "one Service for Redis");
    let redis_service = redis_services[0];
    assert_eq!(redis_service["spec"]["type"].as_str(), Some("ClusterIP"));
    let redis_port = integer(&redis_service["spec"]["ports"][0]["port"], "redis port");
    assert_eq!(
        url,
        format!(
            "redis://{}:{redis_port}/0",
            string(&redis_service["metadata"]["name"], "redis Service name")
        ),
        "shared_state.redis names the Redis Service"
    );
    let redis_container = &redis["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        redis_container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    // No stickiness: any replica may serve any request of a push.
    for service in &services {
        assert!(
            service["spec"]["sessionAffinity"].is_null()
                || service["spec"]["sessionAffinity"].as_str() == Some("None"),
            "sessionAffinity is not needed with shared_state"
        );
    }

    // Services select the pods and target the named ports; the ops port stays inside.
    for service in &services {
        let name = service["metadata"]["name"].as_str().unwrap();
        for (label, value) in service["spec"]["selector"].as_mapping().unwrap() {
            assert_eq!(&pod_labels[label], value, "Service {name} selects the pods");
        }
        for port in service["spec"]["ports"].as_sequence().unwrap() {
            let target = string(&port["targetPort"], "targetPort");
            assert!(ports.contains_key(&target), "{name}: targetPort {target}");
            if target == "ops" {
                assert_eq!(
                    service["spec"]["type"].as_str(),
                    Some("ClusterIP"),
                    "{name}: the ops port must not be exposed outside the cluster"
                );
            }
        }
    }
    assert!(
        services.iter().any(|s| s["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| p["targetPort"].as_str() == Some("https"))),
        "a Service exposes the https port"
    );

    // The PodDisruptionBudget keeps one gateway and can still let one go.
    let pdb = the_one(&objects, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"].as_str(), Some("policy/v1"));
    let min_available = integer(&pdb["spec"]["minAvailable"], "minAvailable");
    assert!(min_available >= 1 && min_available < replicas);
    for (label, value) in pdb["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(&pod_labels[label], value, "the PDB selects the pods");
    }
}

/// `a/b/../c` -> `a/c` (lexically, as the pod would see it).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The ConfigMap's gateway.yaml, laid out as in the pod (config/ and keys/ side by side) with
/// real keys, passes `portcullis check`. (Needs the configuration keys of issue 7: server
/// idle_timeout, max_connections, shutdown_grace, metrics, audit.)
#[test]
fn kubernetes_gateway_yaml_passes_portcullis_check() {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    let keys_dir = dir.path().join("keys");
    std::fs::create_dir_all(&config_dir).unwrap();
    init(
        &keys_dir,
        "http://registry:5000",
        "https://registry.example.com",
    );
    self_signed(&keys_dir, "tls", "1");
    let config = config_dir.join("gateway.yaml");
    std::fs::write(&config, configmap_gateway_yaml()).unwrap();
    // The container's environment, as the Deployment sets it.
    let objects = kubernetes_objects();
    let container = &the_one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<(String, String)> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| (string(&v["name"], "env"), string(&v["value"], "env value")))
        .collect();
    let out = check(&config, false, &env);
    assert!(
        out.ok && out.stdout.contains("OK"),
        "portcullis check on the ConfigMap's gateway.yaml:\n{}",
        out.combined()
    );
}

// ---------------------------------------------------------------------------------------------
// systemd.

/// `[Section]` -> key -> values (a key may repeat), comments dropped.
fn unit_directives(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("portcullis.service: not a directive: {line}"));
        sections
            .entry(current.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    sections
}

#[test]
fn systemd_unit_is_sandboxed_and_verifies() {
    let text = read_example("systemd/portcullis.service");
    let units = unit_directives(&text);
    let service = &units["Service"];
    let one = |key: &str| -> &str {
        let values = service
            .get(key)
            .unwrap_or_else(|| panic!("[Service] {key}= missing"));
        values.last().unwrap()
    };
    for (key, value) in [
        (
            "ExecStart",
            "/usr/local/bin/portcullis serve --config /etc/portcullis/gateway.yaml",
        ),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
        ("DynamicUser", "yes"),
        ("ConfigurationDirectory", "portcullis"),
        ("LogsDirectory", "portcullis"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one(key), value, "[Service] {key}=");
    }
    assert!(
        service["ExecReload"]
            .iter()
            .any(|v| v == "/bin/kill -HUP $MAINPID"),
        "ExecReload=/bin/kill -HUP $MAINPID"
    );
    assert!(
        !service.contains_key("AmbientCapabilities"),
        "no capability unless the port is below 1024"
    );
    assert!(
        text.contains("#AmbientCapabilities=CAP_NET_BIND_SERVICE"),
        "the commented AmbientCapabilities line for ports below 1024"
    );
    assert!(
        one("LimitNOFILE").parse::<u64>().unwrap() >= 20000,
        "LimitNOFILE"
    );

    // The unit and its gateway.yaml agree: stop timeout above shutdown_grace, the audit log in
    // LogsDirectory, every ${CREDENTIALS_DIRECTORY}/NAME loaded by LoadCredential=NAME:...
    let gateway_text = read_example("systemd/gateway.yaml");
    let gateway: Value = serde_yaml::from_str(&gateway_text).unwrap();
    let shutdown_grace = seconds(
        gateway["server"]["shutdown_grace"]
            .as_str()
            .unwrap_or("30s"),
    );
    let stop = seconds(one("TimeoutStopSec"));
    assert!(
        stop > shutdown_grace,
        "TimeoutStopSec {stop}s must exceed shutdown_grace {shutdown_grace}s"
    );
    let audit = string(&gateway["audit"]["path"], "audit.path");
    assert!(
        audit.starts_with("/var/log/portcullis/"),
        "audit.path {audit} must be in LogsDirectory"
    );
    let credentials: BTreeSet<&str> = service["LoadCredential"]
        .iter()
        .map(|v| v.split_once(':').expect("LoadCredential=ID:PATH").0)
        .collect();
    let used: BTreeSet<&str> = gateway_text
        .split("${CREDENTIALS_DIRECTORY}/")
        .skip(1)
        .map(|rest| rest.split(['"', ' ', '\n']).next().unwrap())
        .collect();
    assert!(!used.is_empty());
    assert!(
        used.is_subset(&credentials),
        "gateway.yaml uses credentials {used:?}, the unit loads {credentials:?}"
    );

    // systemd's own verdict, on a copy whose commands point at the real binary (verify checks
    // that they exist).
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        eprintln!(
            "systemd-analyze is not installed (Debian package systemd): only the directives were checked"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("portcullis.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/portcullis", binary().to_str().unwrap()),
    )
    .unwrap();
    // verify exits 0 even for unknown keys and bad values (it only warns, naming the file), so
    // any line naming the unit fails the test too.
    let out = process::run(
        {
            let mut c = Command::new(&analyze);
            c.arg("verify").arg(&unit);
            c
        },
        None,
    );
    assert!(
        out.ok && !out.combined().contains("portcullis.service"),
        "systemd-analyze verify:\n{}",
        out.combined()
    );
    // The sandboxing, scored by systemd itself (offline: no running systemd needed).
    // --threshold=20 = exposure 2.0 of 10 at most ("OK").
    let out = process::run(
        {
            let mut c = Command::new(&analyze);
            c.args(["security", "--offline=true", "--threshold=20", "--no-pager"])
                .arg(&unit);
            c
        },
        None,
    );
    assert!(
        out.ok,
        "systemd-analyze security: exposure above 2.0:\n{}",
        out.combined()
    );
}

/// The systemd example's gateway.yaml passes `portcullis check` with the key files where
/// systemd would put them ($CREDENTIALS_DIRECTORY). (Needs the configuration keys of issue 7:
/// server.shutdown_grace, metrics, audit.)
#[test]
fn systemd_gateway_yaml_passes_portcullis_check() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    init(
        &credentials,
        "http://127.0.0.1:5000",
        "https://registry.example.com:4567",
    );
    self_signed(&credentials, "tls", "1");
    let text = replace_once(
        "systemd/gateway.yaml",
        &read_example("systemd/gateway.yaml"),
        "path: /var/log/portcullis/audit.log",
        &format!("path: {}", dir.path().join("audit.log").display()),
    );
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, text).unwrap();
    let out = check(
        &config,
        false,
        &[(
            "CREDENTIALS_DIRECTORY".into(),
            credentials.display().to_string(),
        )],
    );
    assert!(
        out.ok && out.stdout.contains("OK"),
        "portcullis check on examples/systemd/gateway.yaml:\n{}",
        out.combined()
    );
}

// ---------------------------------------------------------------------------------------------
// The registry side.

/// docker-registry running examples/registry-config.yml, with its paths and port moved into a
/// temporary folder and `rootcertbundle` replaced by `bundle`. Killed on drop.
fn example_registry(bundle: &Path) -> Registry {
    let example = read_example("registry-config.yml");
    Registry::start_with_config(
        "docker-registry with examples/registry-config.yml",
        |port, dir| {
            let what = "registry-config.yml";
            let mut config = replace_once(
                what,
                &example,
                "rootdirectory: /var/lib/docker-registry",
                &format!("rootdirectory: {}", dir.join("data").display()),
            );
            config = replace_once(
                what,
                &config,
                "addr: 127.0.0.1:5000",
                &format!("addr: 127.0.0.1:{port}"),
            );
            replace_once(
                what,
                &config,
                "rootcertbundle: /etc/portcullis/token.crt",
                &format!("rootcertbundle: {}", bundle.display()),
            )
        },
    )
}

#[test]
fn registry_config_runs_and_trusts_the_gateway_also_during_a_key_rotation() {
    // The registry's token settings are the gateway examples' token settings.
    let registry = one_document("registry-config.yml");
    let auth = &registry["auth"]["token"];
    let (realm, service, issuer) = (
        string(&auth["realm"], "auth.token.realm"),
        string(&auth["service"], "auth.token.service"),
        string(&auth["issuer"], "auth.token.issuer"),
    );
    let public_url = string(&registry["http"]["host"], "http.host");
    assert_eq!(realm, format!("{public_url}/jwt/auth"));
    assert!(
        string(&registry["http"]["addr"], "http.addr").starts_with("127.0.0.1:"),
        "the registry listens on loopback only"
    );
    let systemd_gateway: Value =
        serde_yaml::from_str(&read_example("systemd/gateway.yaml")).unwrap();
    let kubernetes_gateway: Value = serde_yaml::from_str(&configmap_gateway_yaml()).unwrap();
    for (what, gateway) in [
        ("systemd/gateway.yaml", &systemd_gateway),
        ("the ConfigMap's gateway.yaml", &kubernetes_gateway),
    ] {
        assert_eq!(
            gateway["token"]["service"].as_str(),
            Some(service.as_str()),
            "{what}: token.service = the registry's auth.token.service"
        );
        assert_eq!(
            gateway["token"]["issuer"].as_str(),
            Some(issuer.as_str()),
            "{what}: token.issuer = the registry's auth.token.issuer"
        );
    }
    assert_eq!(
        systemd_gateway["public_url"].as_str(),
        Some(public_url.as_str()),
        "the registry's http.host is the systemd gateway's public_url"
    );
    assert_eq!(
        port_of(&string(&registry["http"]["addr"], "http.addr")),
        port_of(&string(&systemd_gateway["upstream"]["url"], "upstream.url")),
        "the systemd gateway's upstream is this registry"
    );

    // The key the registry trusts (made by `portcullis init`, as its comments say) and the
    // next one, and a gateway config for each, pointed at the running registry.
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    for keys in [&old, &new] {
        init(keys, "http://127.0.0.1:1", &public_url);
    }
    let gateway_for = |keys: &Path, registry: &Registry| -> PathBuf {
        let config = keys.join("check.yaml");
        std::fs::write(
            &config,
            format!(
                "public_url: \"{public_url}\"\nupstream: {{ url: \"{}\" }}\ntoken: {{ issuer: \"{issuer}\", service: \"{service}\", signing_key: token.key, certificate: token.crt }}\n",
                registry.url()
            ),
        )
        .unwrap();
        config
    };
    let registry = example_registry(&old.join("token.crt"));
    // Unauthenticated: 401 with the configured Bearer challenge.
    let reply = get(&format!("{}/v2/", registry.url())).send();
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(format!("Bearer realm=\"{realm}\",service=\"{service}\"").as_str())
    );
    // The gateway's tokens are accepted (`check --upstream` presents one); another key's not.
    let out = check(&gateway_for(&old, &registry), true, &[]);
    assert!(
        out.ok
            && out
                .stdout
                .contains("the registry accepts the gateway's tokens"),
        "{}",
        out.combined()
    );
    let out = check(&gateway_for(&new, &registry), true, &[]);
    assert!(
        !out.ok,
        "a key the registry does not know:\n{}",
        out.combined()
    );
    drop(registry);

    // Rotation, as the comments describe it: a bundle of both certificates trusts both keys.
    let bundle = dir.path().join("token-bundle.crt");
    let mut both = std::fs::read_to_string(new.join("token.crt")).unwrap();
    both.push_str(&std::fs::read_to_string(old.join("token.crt")).unwrap());
    std::fs::write(&bundle, both).unwrap();
    let registry = example_registry(&bundle);
    for (which, keys) in [("old", &old), ("new", &new)] {
        let out = check(&gateway_for(keys, &registry), true, &[]);
        assert!(
            out.ok,
            "the {which} key against the rotation bundle:\n{}",
            out.combined()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// nginx in front.

/// nginx-in-front.conf with its certificate, listen address and upstream replaced, wrapped in
/// the smallest nginx.conf that includes it in `http {}`. Returns the nginx.conf path.
fn nginx_config(dir: &Path, listen: &str, upstream: &str) -> PathBuf {
    let (cert, key) = self_signed(dir, "front", "1");
    let what = "nginx-in-front.conf";
    let mut text = read_example(what);
    text = replace_once(
        what,
        &text,
        "/etc/ssl/registry.example.com/fullchain.pem",
        cert.to_str().unwrap(),
    );
    text = replace_once(
        what,
        &text,
        "/etc/ssl/registry.example.com/privkey.pem",
        key.to_str().unwrap(),
    );
    text = replace_once(
        what,
        &text,
        "listen 443 ssl http2;",
        &format!("listen {listen} ssl http2;"),
    );
    text = replace_once(
        what,
        &text,
        "server 127.0.0.1:4567;",
        &format!("server {upstream};"),
    );
    let front = dir.join("nginx-in-front.conf");
    std::fs::write(&front, text).unwrap();
    let d = dir.display();
    let main = format!(
        "master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {};\n}}\n",
        front.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, main).unwrap();
    path
}

fn nginx_command(dir: &Path, config: &Path) -> Command {
    let mut command = Command::new(require_tool("nginx", "nginx"));
    command
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(config);
    command
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn nginx_in_front_passes_nginx_t_and_carries_a_login_and_a_chunked_push() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let front = format!("https://127.0.0.1:{port}");
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            public_url: Some(front.clone()),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let config = nginx_config(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &stack.gateway.host,
    );
    let out = process::run(
        {
            let mut c = nginx_command(dir.path(), &config);
            c.arg("-t");
            c
        },
        None,
    );
    assert!(
        out.ok && out.stderr.contains("test is successful"),
        "nginx -t with examples/nginx-in-front.conf:\n{}",
        out.combined()
    );

    let mut child = nginx_command(dir.path(), &config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let error_log = dir.path().join("error.log");
    if let Err(log) = process::wait_ready(
        &mut child,
        "nginx",
        Duration::from_secs(10),
        || std::fs::read_to_string(&error_log).unwrap_or_default(),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    ) {
        panic!("{log}");
    }
    let _nginx = KillOnDrop(child);

    // The challenge names the front; the login carries its Basic credentials through.
    let reply = get(&format!("{front}/v2/")).arg("-k").send();
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|h| h.contains(&format!("realm=\"{front}/jwt/auth\""))),
        "{:?}",
        reply.headers
    );
    let repository = "mygroup/myproject/app";
    let reply = get(&format!(
        "{front}/jwt/auth?service=container_registry&scope=repository:{repository}:push,pull"
    ))
    .basic("alice", ALICE_PAT)
    .arg("-k")
    .send();
    assert_eq!(reply.status, 200, "login through nginx: {}", reply.body);
    let token = reply.json()["token"].as_str().unwrap().to_owned();
    assert!(
        !Stack::granted(&token).is_empty(),
        "the login was not anonymous"
    );
    let reply = get(&format!("{front}/v2/")).bearer(&token).arg("-k").send();
    assert_eq!(reply.status, 200, "/v2/ with the token through nginx");

    // A blob pushed the way docker does: POST, a chunked PATCH over HTTP/1.1, PUT with digest.
    let blob = dir.path().join("blob");
    std::fs::write(&blob, process::random_bytes(3 * 1024 * 1024 + 17)).unwrap();
    let digest = {
        let out = process::run(
            {
                let mut c = Command::new("sha256sum");
                c.arg(&blob);
                c
            },
            None,
        );
        format!("sha256:{}", out.stdout.split_whitespace().next().unwrap())
    };
    let reply = request("POST", &format!("{front}/v2/{repository}/blobs/uploads/"))
        .bearer(&token)
        .arg("-k")
        .send();
    assert_eq!(reply.status, 202, "start an upload: {}", reply.body);
    let location = reply.header("location").expect("Location").to_owned();
    assert!(location.starts_with(&front), "{location}");
    let reply = request("PATCH", &location)
        .bearer(&token)
        .header("Content-Type", "application/octet-stream")
        .header("Transfer-Encoding", "chunked")
        .arg("--http1.1")
        .arg("-k")
        .arg("--data-binary")
        .arg(&format!("@{}", blob.display()))
        .send();
    assert_eq!(reply.status, 202, "chunked PATCH: {}", reply.body);
    let location = reply.header("location").expect("Location").to_owned();
    let separator = if location.contains('?') { '&' } else { '?' };
    let reply = request("PUT", &format!("{location}{separator}digest={digest}"))
        .bearer(&token)
        .arg("-k")
        .send();
    assert_eq!(reply.status, 201, "finish the upload: {}", reply.body);
    let reply = request("HEAD", &format!("{front}/v2/{repository}/blobs/{digest}"))
        .bearer(&token)
        .arg("-I")
        .arg("-k")
        .send();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-length"),
        Some((3 * 1024 * 1024 + 17).to_string().as_str())
    );
    assert!(
        !stack
            .gateway
            .log()
            .contains("WITHOUT an Authorization header"),
        "{}",
        stack.gateway.log()
    );
}

// ---------------------------------------------------------------------------------------------
// examples/embed.rs: the gateway as a library, inside another hyper server.

#[test]
fn the_embed_example_serves_the_gateway_inside_its_own_server() {
    // `cargo test` builds the examples next to the test binaries.
    let embed = binary().parent().unwrap().join("examples").join("embed");
    assert!(
        embed.exists(),
        "{} was not built: `cargo test --release` builds it (`--test e2e` alone does not; run `cargo build --release --examples` first)",
        embed.display()
    );
    let stack = Stack::start();
    let port = free_port();
    let config = std::fs::read_to_string(stack.gateway.config_path())
        .unwrap()
        .replacen(&stack.gateway.host, &format!("127.0.0.1:{port}"), 1);
    let config_path = stack.gateway.dir().join("embed.yaml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new(&embed)
        .arg(&config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "embed did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let hello = get(&format!("{base}/hello")).send();
    assert_eq!(hello.status, 200);
    assert_eq!(hello.body, "hello from the embedding server\n");
    let token = get(&format!(
        "{base}/jwt/auth?service=container_registry&scope=repository:mygroup/myproject/app:pull"
    ))
    .basic("alice", ALICE_PAT)
    .send();
    assert_eq!(token.status, 200, "{}", token.body);
    let bearer = token.json()["token"].as_str().unwrap().to_owned();
    let ping = get(&format!("{base}/v2/")).bearer(&bearer).send();
    assert_eq!(ping.status, 200, "{}", ping.body);
    let refused = get(&format!("{base}/v2/")).send();
    assert_eq!(refused.status, 401);
    let _ = child.kill();
    let _ = child.wait();
}
