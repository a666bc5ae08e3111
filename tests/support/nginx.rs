//! Debian's nginx in front of the gateway, the way operators misconfigure it (or not).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{process, require_tool};

/// A running nginx, stopped gracefully on drop (SIGQUIT to the master, which lets its workers
/// finish and exit, then SIGTERM); a worker still running afterwards fails the test.
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Nginx {
    /// nginx on `port` proxying to `upstream` (`127.0.0.1:PORT`); `locations` is the inside of
    /// the `server` block after `listen` (use `{upstream}` for the address).
    pub fn start(port: u16, upstream: &str, locations: &str) -> Nginx {
        let binary = require_tool("nginx", "nginx");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let config = format!(
            "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 0;\n    proxy_request_buffering off;\n    proxy_set_header Host $http_host;\n    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n{}\n  }}\n}}\n",
            locations.replace("{upstream}", upstream)
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let log = dir.path().join("error.log");
        if let Err(log) = process::wait_ready(
            &mut child,
            "nginx",
            Duration::from_secs(10),
            || std::fs::read_to_string(&log).unwrap_or_default(),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        ) {
            panic!("{log}");
        }
        Nginx { child, dir, port }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Nginx {
    /// The master's pid (its workers are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        process::stop_or_fail(
            &mut self.child,
            "nginx",
            &[
                ("QUIT", Duration::from_secs(10)),
                ("TERM", Duration::from_secs(5)),
            ],
        );
    }
}
