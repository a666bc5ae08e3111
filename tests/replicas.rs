//! Several replicas, one gateway: bans, upload sessions (push grace) and the stripped-header
//! detector hold across replicas through one Redis (`shared_state`), and an outage of Redis
//! (restarted, or frozen with SIGSTOP) fails no request and delays none past the timeout
//! budget: every replica falls back to its in-process state, says so once, and recovers.
//!
//! Real parts: Debian's `redis-server` and `docker-registry`, three `portcullis serve`
//! processes with one signing key, all on loopback ports.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::docker::Dockerd;
use support::gateway::secrets::*;
use support::haproxy::{Haproxy, HaproxyConfig};
use support::http::{get, request, Reply};
use support::process::{self, ImageCli};
use support::replicas::Replicas;

const REPO: &str = "mygroup/myproject/spread";
const CHUNK: usize = 1 << 20;

/// The generous upper bound of one request while Redis misbehaves: the 100 ms timeout, plus
/// a slow hash, plus a loaded CI machine. Far below the seconds Redis stays frozen.
const BUDGET: Duration = Duration::from_millis(1500);

#[test]
fn a_ban_earned_on_replica_1_refuses_on_replica_3_and_redis_never_holds_the_username() {
    let replicas = Replicas::start(
        3,
        "brute_force: { max_failures: 3, window: 60s, ban: 1h }\n",
        None,
    );
    for _ in 0..3 {
        let reply = replicas.login(0, "alice", "wrong-password", "");
        assert_eq!(reply.status, 401, "{}", reply.body);
    }
    // A good password from the same client, on another replica: banned.
    let reply = replicas.login(2, "alice", ALICE_PAT, "");
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        reply.error_message().contains("too many failed logins"),
        "{}",
        reply.body
    );
    assert!(replicas.gateways[0]
        .log()
        .contains("banned after too many failed logins"));
    assert!(
        replicas.gateways[2].log().contains("reason=\"banned\"")
            || replicas.gateways[2].log().contains("reason=banned"),
        "{}",
        replicas.gateways[2].log()
    );
    // Keys are fixed-size keyed hashes with TTLs: no username, no address in Redis.
    let keys = replicas.redis.cli(&["--scan", "--pattern", "test:*"]);
    assert!(!keys.is_empty(), "nothing in Redis");
    assert!(
        !keys.contains("alice") && !keys.contains("127.0.0.1"),
        "{keys}"
    );
    for key in keys.lines() {
        assert!(key.len() <= "test:bf:c:b:".len() + 32, "{key}");
        let ttl: i64 = replicas.redis.cli(&["PTTL", key]).trim().parse().unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

#[test]
fn the_stripped_header_warning_comes_from_the_replica_the_stripped_request_reached() {
    let replicas = Replicas::start(2, "", None);
    let agent = "docker/27.0 (replicas test)";
    let url = format!(
        "{}/jwt/auth?service=container_registry&account=alice",
        replicas.gateways[0].url
    );
    let reply = get(&url)
        .basic("alice", ALICE_PAT)
        .header("User-Agent", agent)
        .send();
    assert_eq!(reply.status, 200, "{}", reply.body);
    // The next /v2/ request, Authorization stripped, reaches the other replica.
    let ping = || {
        get(&format!("{}/v2/", replicas.gateways[1].url))
            .header("User-Agent", agent)
            .send()
    };
    assert_eq!(ping().status, 401);
    assert_eq!(ping().status, 401);
    let needle = "calls /v2/ WITHOUT an Authorization header";
    let log = replicas.gateways[1].log();
    assert_eq!(log.matches(needle).count(), 1, "once per token:\n{log}");
    assert!(!replicas.gateways[0].log().contains(needle));

    // A client that used its token (on replica 1) and then pings (on replica 2) is normal.
    let reply = get(&url)
        .basic("alice", ALICE_PAT)
        .header("User-Agent", "podman/5 (normal)")
        .send();
    let token = reply.json()["token"].as_str().unwrap().to_owned();
    let authed = get(&format!("{}/v2/", replicas.gateways[0].url))
        .header("User-Agent", "podman/5 (normal)")
        .bearer(&token)
        .send();
    assert_eq!(authed.status, 200, "{}", authed.body);
    let later = get(&format!("{}/v2/", replicas.gateways[1].url))
        .header("User-Agent", "podman/5 (normal)")
        .send();
    assert_eq!(later.status, 401);
    assert_eq!(replicas.gateways[1].log().matches(needle).count(), 1);
}

fn chunk(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, process::random_bytes(CHUNK)).unwrap();
    path
}

fn sha256_of(files: &[&Path]) -> String {
    let names: Vec<String> = files.iter().map(|f| format!("'{}'", f.display())).collect();
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(format!("cat {} | sha256sum", names.join(" ")));
    process::run(command, None)
        .stdout
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn patch(location: &str, token: &str, data: &Path) -> Reply {
    request("PATCH", location)
        .bearer(token)
        .header("Content-Type", "application/octet-stream")
        .arg("--data-binary")
        .arg(&format!("@{}", data.display()))
        .send()
}

/// `location` (on the replica that answered) sent to replica `to` instead.
fn on(replicas: &Replicas, location: &str, to: usize) -> String {
    let path = &location[location.find("/v2/").expect("a /v2/ Location")..];
    format!("{}{path}", replicas.gateways[to].url)
}

#[test]
fn a_token_expiring_mid_push_is_graced_by_replicas_that_did_not_issue_it() {
    let mut replicas = Replicas::start(0, "", None);
    replicas.options_expiry("2s");
    for _ in 0..3 {
        replicas.add();
    }
    for ops in replicas.ops.clone() {
        replicas.wait_shared(&ops);
    }
    let dir = tempfile::tempdir().unwrap();
    // Token from replica 1, POST and first PATCH on replica 1.
    let reply = replicas.login(
        0,
        "alice",
        ALICE_PAT,
        &format!("repository:{REPO}:pull,push"),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json()["token"].as_str().unwrap().to_owned();
    let reply = request(
        "POST",
        &format!("{}/v2/{REPO}/blobs/uploads/", replicas.gateways[0].url),
    )
    .bearer(&token)
    .send();
    assert_eq!(reply.status, 202, "{}", reply.body);
    let first = chunk(dir.path(), "first");
    let reply = patch(
        &on(&replicas, reply.header("location").unwrap(), 0),
        &token,
        &first,
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    std::thread::sleep(Duration::from_millis(3200));
    // The token has expired: the second PATCH reaches replica 2, the PUT replica 3, the
    // manifest PUT replica 2 again. None of them issued the token or saw the POST.
    let second = chunk(dir.path(), "second");
    let reply = patch(
        &on(&replicas, reply.header("location").unwrap(), 1),
        &token,
        &second,
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    let digest = format!("sha256:{}", sha256_of(&[&first, &second]));
    let location = on(&replicas, reply.header("location").unwrap(), 2);
    let sep = if location.contains('?') { '&' } else { '?' };
    let reply = request("PUT", &format!("{location}{sep}digest={digest}"))
        .bearer(&token)
        .send();
    assert_eq!(reply.status, 201, "{}", reply.body);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 2 * CHUNK },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": 2 * CHUNK }],
    })
    .to_string();
    let reply = request(
        "PUT",
        &format!("{}/v2/{REPO}/manifests/v1", replicas.gateways[1].url),
    )
    .bearer(&token)
    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
    .body(&manifest)
    .send();
    assert_eq!(reply.status, 201, "{}", reply.body);
    let graced = |i: usize| {
        replicas.gateways[i]
            .log()
            .matches("push grace: the token expired during the push")
            .count()
    };
    assert_eq!((graced(0), graced(1), graced(2)), (0, 2, 1));

    // The blob reads back whole, from replica 1.
    let fresh = replicas.login(0, "alice", ALICE_PAT, &format!("repository:{REPO}:pull"));
    let fresh = fresh.json()["token"].as_str().unwrap().to_owned();
    let pulled = dir.path().join("pulled");
    let reply = get(&format!(
        "{}/v2/{REPO}/blobs/{digest}",
        replicas.gateways[0].url
    ))
    .bearer(&fresh)
    .arg("-L")
    .arg("-o")
    .arg(pulled.to_str().unwrap())
    .send();
    assert_eq!(reply.status, 200);
    assert_eq!(format!("sha256:{}", sha256_of(&[&pulled])), digest);
    // The expired token still starts nothing new, on any replica.
    for gateway in &replicas.gateways {
        let reply = request("POST", &format!("{}/v2/{REPO}/blobs/uploads/", gateway.url))
            .bearer(&token)
            .send();
        assert_eq!(reply.status, 401, "{}", reply.body);
    }
}

/// Logins and authenticated `/v2/` requests, round robin over the replicas, each timed.
fn traffic(replicas: &Replicas, rounds: usize, slowest: &mut Duration) {
    for round in 0..rounds {
        let i = round % replicas.gateways.len();
        let started = Instant::now();
        let reply = replicas.login(
            i,
            "alice",
            ALICE_PAT,
            "repository:mygroup/myproject/app:pull",
        );
        assert_eq!(
            reply.status, 200,
            "login refused on replica {i}: {}",
            reply.body
        );
        let token = reply.json()["token"].as_str().unwrap().to_owned();
        let reply = get(&format!(
            "{}/v2/",
            replicas.gateways[(i + 1) % replicas.gateways.len()].url
        ))
        .bearer(&token)
        .send();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let reply = get(&format!("{}/v2/", replicas.gateways[i].url)).send();
        assert_eq!(reply.status, 401);
        // Two requests and a login, each within the budget.
        *slowest = (*slowest).max(started.elapsed() / 3);
        assert!(
            started.elapsed() < BUDGET * 3,
            "round {round} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn redis_restarted_and_frozen_fails_no_request_and_each_replica_says_so_once() {
    let mut replicas = Replicas::start(2, "", None);
    let mut slowest = Duration::ZERO;
    traffic(&replicas, 6, &mut slowest);

    // Frozen: connections stay open and nothing answers.
    replicas.redis.freeze();
    let frozen = Instant::now();
    while frozen.elapsed() < Duration::from_secs(4) {
        traffic(&replicas, 2, &mut slowest);
    }
    for ops in &replicas.ops {
        let ready = get(&format!("{ops}/readyz")).send();
        assert_eq!(ready.status, 200, "{}", ready.body);
        assert!(
            ready.body.contains("shared state degraded"),
            "{}",
            ready.body
        );
        let metrics = get(&format!("{ops}/metrics")).send().body;
        assert_eq!(
            support::http::series(&metrics, "portcullis_shared_state_degraded"),
            Some(1.0),
            "{metrics}"
        );
    }
    replicas.redis.thaw();
    for ops in replicas.ops.clone() {
        replicas.wait_shared(&ops);
    }
    traffic(&replicas, 4, &mut slowest);

    // Restarted: everything in it is gone, the connections are cut.
    replicas.redis.restart();
    traffic(&replicas, 6, &mut slowest);
    for ops in replicas.ops.clone() {
        replicas.wait_shared(&ops);
    }
    traffic(&replicas, 4, &mut slowest);

    for gateway in &replicas.gateways {
        let log = gateway.log();
        let errors = log.matches("shared state: Redis does not answer").count();
        let back = log.matches("shared state: Redis answers again").count();
        // One outage (frozen); the restart is a second one unless no call fell between the
        // stop and the start.
        assert!((1..=2).contains(&errors), "{errors} ERROR lines:\n{log}");
        assert_eq!(errors, back, "each outage ends with one INFO line:\n{log}");
        for line in log.lines().filter(|l| l.contains("Redis does not answer")) {
            assert!(line.contains("ERROR"), "{line}");
        }
    }
    eprintln!("slowest request while Redis misbehaved: {slowest:?}");
}

/// Three replicas with `server.proxy_protocol` behind haproxy (TCP, round robin, no
/// stickiness, `send-proxy-v2`, health checks so a killed replica is taken out), whose
/// address is every replica's `public_url`.
fn behind_haproxy(extra: &str) -> (Replicas, Haproxy) {
    let port = support::free_port();
    let replicas = Replicas::start(
        3,
        &format!("server: {{ proxy_protocol: true }}\n{extra}"),
        Some(format!("http://127.0.0.1:{port}")),
    );
    let servers: Vec<String> = replicas.gateways.iter().map(|g| g.host.clone()).collect();
    let mut config = HaproxyConfig::tcp(&servers, true);
    config.server_options = "send-proxy-v2 check inter 200ms fall 1 rise 2".into();
    config.backend_extra = "  retries 3\n  option redispatch\n".into();
    config.timeout = Duration::from_secs(120);
    let haproxy = Haproxy::start_on(port, &config);
    (replicas, haproxy)
}

/// `/v2/` requests of `repository` in replica `i`'s access log.
fn served(replicas: &Replicas, i: usize, repository: &str) -> usize {
    let needle = format!(" path=/v2/{repository}/");
    replicas.gateways[i]
        .log()
        .lines()
        .filter(|l| l.contains("portcullis::access") && l.contains(&needle))
        .count()
}

/// A docker-archive (what `docker save` writes) with `layers` layers of `size` random bytes
/// each, tagged `reference`: a multi-layer image without any registry or network.
fn multi_layer_archive(dir: &Path, reference: &str, layers: usize, size: usize) -> PathBuf {
    let mut diff_ids = Vec::new();
    let mut names = Vec::new();
    for i in 0..layers {
        let root = dir.join(format!("root{i}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(
            root.join(format!("layer{i}.bin")),
            process::random_bytes(size),
        )
        .unwrap();
        let name = format!("layer{i}.tar");
        let mut tar = std::process::Command::new("tar");
        tar.args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf"])
            .arg(dir.join(&name))
            .arg("-C")
            .arg(&root)
            .arg(".");
        assert!(process::run(tar, None).ok, "tar");
        diff_ids.push(format!("sha256:{}", sha256_of(&[&dir.join(&name)])));
        names.push(name);
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    })
    .to_string();
    std::fs::write(dir.join("config.json"), &config).unwrap();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [reference],
        "Layers": names,
    }])
    .to_string();
    std::fs::write(dir.join("manifest.json"), manifest).unwrap();
    let archive = dir.join("image.tar");
    let mut tar = std::process::Command::new("tar");
    tar.arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(dir)
        .arg("manifest.json")
        .arg("config.json");
    for name in &names {
        tar.arg(name);
    }
    assert!(process::run(tar, None).ok, "tar");
    archive
}

#[test]
fn docker_push_through_haproxy_is_spread_over_replicas_and_survives_one_killed_mid_push() {
    let (mut replicas, haproxy) = behind_haproxy("");
    let docker = Dockerd::start();
    docker.ok(
        &["login", &haproxy.host(), "-u", "alice", "--password-stdin"],
        Some(ALICE_PAT),
    );
    let staging = tempfile::tempdir().unwrap();

    // A multi-layer push, its requests spread over the replicas.
    let first = format!("{}/{REPO}:v1", haproxy.host());
    let archive = multi_layer_archive(staging.path(), &first, 4, 2 << 20);
    docker.ok(&["load", "-i", archive.to_str().unwrap()], None);
    docker.ok(&["push", &first], None);
    let counts: Vec<usize> = (0..3).map(|i| served(&replicas, i, REPO)).collect();
    assert!(
        counts.iter().filter(|c| **c > 0).count() >= 2,
        "one replica served the whole push: {counts:?}\n{}",
        haproxy.log()
    );

    // Another push; replica 2 is killed (SIGKILL) as soon as it has an upload under way.
    let second_repo = "mygroup/myproject/survivor";
    let second = format!("{}/{second_repo}:v1", haproxy.host());
    let dir = staging.path().join("second");
    std::fs::create_dir_all(&dir).unwrap();
    let archive = multi_layer_archive(&dir, &second, 4, 12 << 20);
    docker.ok(&["load", "-i", archive.to_str().unwrap()], None);
    let ((ok, out), victim) = std::thread::scope(|scope| {
        let pushing = scope.spawn(|| docker.run(&["push", &second], None));
        let deadline = Instant::now() + Duration::from_secs(120);
        let needle = format!("path=/v2/{second_repo}/blobs/uploads/");
        let victim = loop {
            let found = (0..3).find(|i| {
                replicas.gateways[*i]
                    .log()
                    .lines()
                    .any(|l| l.contains("portcullis::access") && l.contains(&needle))
            });
            if let Some(i) = found {
                break i;
            }
            assert!(Instant::now() < deadline, "no upload reached any replica");
            std::thread::sleep(Duration::from_millis(20));
        };
        let manifest = format!("path=/v2/{second_repo}/manifests/");
        assert!(
            (0..3).all(|i| !replicas.gateways[i].log().contains(&manifest)),
            "the push was over before the kill"
        );
        replicas.kill(victim);
        (pushing.join().unwrap(), victim)
    });
    assert!(ok, "the push did not survive the replica's death:\n{out}");
    // What docker said (a "Retrying in N seconds" when the victim had a layer in flight).
    eprintln!("the push, replica {victim} killed under it:\n{out}");

    // The manifest landed; both images read back whole (docker checks every digest).
    docker.ok(&["rmi", &first, &second], None);
    docker.ok(&["pull", &second], None);
    docker.ok(&["pull", &first], None);
}

#[test]
fn two_clients_behind_haproxy_one_brute_forcing_only_that_one_is_banned_on_every_replica() {
    let (replicas, haproxy) =
        behind_haproxy("brute_force: { max_failures: 6, window: 60s, ban: 1h }\n");
    let url = format!(
        "{}/jwt/auth?service=container_registry&scope=repository:mygroup/myproject:pull",
        haproxy.url("http")
    );
    let from = |source: &str, secret: &str| {
        get(&url)
            .basic("bob", secret)
            .arg("--interface")
            .arg(source)
            .send()
    };
    // 127.0.0.2 guesses bob's token; each guess is a new connection, so haproxy spreads them.
    for i in 0..12 {
        let reply = from("127.0.0.2", &format!("guess-{i}"));
        assert!(matches!(reply.status, 401 | 403 | 429), "{}", reply.body);
    }
    let guessed_on = (0..3)
        .filter(|i| {
            replicas.gateways[*i].log().contains("guess")
                || replicas.gateways[*i]
                    .log()
                    .contains("reason=invalid_credentials")
                || replicas.gateways[*i].log().contains("login refused")
        })
        .count();
    assert!(guessed_on >= 2, "the guesses were not spread");
    // Banned everywhere: three more tries with the right token, one per replica.
    for _ in 0..3 {
        let reply = get(&format!(
            "{}/jwt/auth?service=container_registry&scope=repository:mygroup/myproject:pull",
            haproxy.url("http")
        ))
        .basic("alice", ALICE_PAT)
        .arg("--interface")
        .arg("127.0.0.2")
        .send();
        assert_eq!(reply.status, 403, "{}", reply.body);
        assert!(
            reply.error_message().contains("from this client"),
            "{}",
            reply.body
        );
    }
    // The other client behind the same haproxy is not banned, on any replica.
    for _ in 0..3 {
        let reply = get(&format!(
            "{}/jwt/auth?service=container_registry&scope=repository:mygroup/myproject:pull",
            haproxy.url("http")
        ))
        .basic("alice", ALICE_PAT)
        .arg("--interface")
        .arg("127.0.0.3")
        .send();
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
}

#[test]
fn a_refresh_token_revoked_through_redis_is_refused_by_every_replica_within_the_bound() {
    let replicas = Replicas::start(2, "", None);
    let login = request(
        "POST",
        &format!("{}/jwt/auth", replicas.gateways[0].url),
    )
    .header("Content-Type", "application/x-www-form-urlencoded")
    .body(&format!(
        "grant_type=password&username=alice&password={ALICE_PAT}&service=container_registry&access_type=offline&client_id=test"
    ))
    .send();
    assert_eq!(login.status, 200, "{}", login.body);
    let refresh = login.json()["refresh_token"].as_str().unwrap().to_owned();
    let refresh_on = |i: usize| {
        request("POST", &format!("{}/jwt/auth", replicas.gateways[i].url))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(&format!(
                "grant_type=refresh_token&refresh_token={refresh}&service=container_registry&client_id=test"
            ))
            .send()
    };
    assert_eq!(refresh_on(1).status, 200);
    // What Revocations::revoke appends on one replica (the token store's hook).
    let claims = support::http::jwt_part(&refresh, 1);
    let (jti, exp) = (
        claims["jti"].as_str().unwrap().to_owned(),
        claims["exp"].as_u64().unwrap().to_string(),
    );
    replicas
        .redis
        .cli(&["XADD", "test:revoked", "*", "id", &jti, "until", &exp]);
    // The bound: the poll interval (1 s) plus the timeout; 3 s here for a loaded machine.
    std::thread::sleep(Duration::from_millis(3000));
    for i in 0..2 {
        let reply = refresh_on(i);
        assert_eq!(reply.status, 401, "replica {i}: {}", reply.body);
        assert!(reply.body.contains("revoked"), "{}", reply.body);
    }
}

#[test]
fn a_redis_that_never_answers_changes_nothing_but_readyz_and_one_error_line() {
    // A port nothing listens on.
    let port = support::free_port();
    let mut replicas = Replicas::start(0, "", None);
    replicas.options_extra(&format!(
        "shared_state: {{ redis: \"redis://127.0.0.1:{port}/0\", timeout: 50ms }}\n"
    ));
    replicas.add();
    let started = Instant::now();
    for _ in 0..5 {
        let reply = replicas.login(
            0,
            "alice",
            ALICE_PAT,
            "repository:mygroup/myproject/app:pull",
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        let reply = replicas.login(0, "alice", "wrong", "");
        assert_eq!(reply.status, 401, "{}", reply.body);
    }
    assert!(started.elapsed() < BUDGET * 10, "{:?}", started.elapsed());
    std::thread::sleep(Duration::from_millis(1500));
    let ready = get(&format!("{}/readyz", replicas.ops[0])).send();
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(
        ready.body.contains("shared state degraded"),
        "{}",
        ready.body
    );
    assert!(!ready.body.contains("redis://"), "{}", ready.body);
    let log = replicas.gateways[0].log();
    assert_eq!(
        log.matches("shared state: Redis does not answer").count(),
        1,
        "{log}"
    );
}

#[test]
fn hostile_clients_keep_redis_keys_fixed_size_and_never_borrow_another_users_session() {
    let mut replicas = Replicas::start(0, "", None);
    replicas.options_expiry("2s");
    replicas.add();
    replicas.add();
    for ops in replicas.ops.clone() {
        replicas.wait_shared(&ops);
    }
    let scope = format!("repository:{REPO}:pull,push");
    let token_of = |i: usize, user: &str, secret: &str| {
        let reply = replicas.login(i, user, secret, &scope);
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["token"].as_str().unwrap().to_owned()
    };
    // alice's upload, started on replica 1; root's token (an administrator, allowed to push
    // there) taken at the same time.
    let alice = token_of(0, "alice", ALICE_PAT);
    let root = token_of(0, "root", ROOT_PAT);
    let reply = request(
        "POST",
        &format!("{}/v2/{REPO}/blobs/uploads/", replicas.gateways[0].url),
    )
    .bearer(&alice)
    .send();
    assert_eq!(reply.status, 202, "{}", reply.body);
    let location = reply.header("location").unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(3200));
    let dir = tempfile::tempdir().unwrap();
    let data = chunk(dir.path(), "data");
    // root's expired token on another replica: not the token of that push, no grace.
    let reply = patch(&on(&replicas, &location, 1), &root, &data);
    assert_eq!(reply.status, 401, "{}", reply.body);
    // A UUID of 4 KiB that no registry gave out: refused or unknown, never stored.
    let junk = format!(
        "{}/v2/{REPO}/blobs/uploads/{}",
        replicas.gateways[1].url,
        "u".repeat(4096)
    );
    let reply = patch(&junk, &alice, &data);
    assert!(matches!(reply.status, 401 | 404), "{}", reply.body);
    // An 8 KiB User-Agent: hashed like any other.
    let agent = "a".repeat(8 << 10);
    let reply = get(&format!(
        "{}/jwt/auth?service=container_registry",
        replicas.gateways[0].url
    ))
    .basic("alice", ALICE_PAT)
    .header("User-Agent", &agent)
    .send();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = get(&format!("{}/v2/", replicas.gateways[1].url))
        .header("User-Agent", &agent)
        .send();
    assert_eq!(reply.status, 401);
    replicas.gateways[1].wait_for_log(
        "calls /v2/ WITHOUT an Authorization header",
        1,
        Duration::from_secs(5),
    );
    // Every key is the prefix, a short kind and 32 hex digits (the stream excepted); every one
    // expires; no user name, address or User-Agent is stored in clear.
    let keys = replicas.redis.cli(&["--scan", "--pattern", "test:*"]);
    assert!(keys.lines().count() >= 4, "{keys}");
    for key in keys.lines().filter(|k| *k != "test:revoked") {
        let hash = key.rsplit(':').next().unwrap();
        assert!(
            key.len() <= 16 + 32 && hash.len() == 32,
            "not a fixed-size key: {key}"
        );
        let ttl: i64 = replicas.redis.cli(&["PTTL", key]).trim().parse().unwrap();
        assert!(ttl > 0, "{key}: PTTL {ttl}");
        let dump = replicas.redis.cli(&["--no-raw", "DUMP", key]);
        assert!(
            !dump.contains("aaaaaaaa") && !dump.contains("127.0.0.1"),
            "{key}"
        );
    }
}
