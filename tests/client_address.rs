//! The client's real address behind a load balancer: the PROXY protocol v2 from haproxy,
//! `X-Forwarded-For` from trusted hops, and nothing a client sends when neither is set up.

mod support;

use support::haproxy::{Haproxy, HaproxyConfig};
use support::http::get;
use support::stack::Stack;

#[test]
fn haproxy_fixture_forwards_in_tcp_mode_and_logs_the_server() {
    let stack = Stack::start();
    let haproxy = Haproxy::start(&HaproxyConfig::tcp(&[stack.gateway.host.clone()], false));
    let reply = get(&format!("{}/v2/", haproxy.url("http"))).send();
    assert_eq!(reply.status, 401, "{}", reply.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !haproxy.log().contains("be/s0") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(haproxy.log().contains("be/s0"), "{}", haproxy.log());
}
