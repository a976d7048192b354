//! A private nginx for tests: a child process of the test, on a free
//! 127.0.0.1 port, with everything it writes (pid, logs, temp files) in a
//! temporary folder. It answers `200 ok` to every request and keeps idle
//! connections for only 1 s, so tests can race its keep-alive close. Its
//! access log records, per request, the delivery's ids and the connection
//! it came on.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::util::{find_program, program_missing, start_on_free_port, temp_dir};

/// How long nginx keeps an idle keep-alive connection (`keepalive_timeout`).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// One line of the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// `webhook-id` (Standard Webhooks), `None` when absent.
    pub webhook_id: Option<String>,
    /// `x-fastapihooks-event-id`, `None` when absent.
    pub event_id: Option<String>,
    pub method: String,
    pub uri: String,
    pub status: u16,
    /// nginx's serial number of the connection (`$connection`).
    pub connection: u64,
    /// This request's place on its connection, from 1 (`$connection_requests`).
    pub connection_requests: u64,
}

/// The running nginx; killed (and its folder removed) on drop.
pub struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

/// Fields of the access log, tab-separated; nginx writes `-` for an empty one.
const LOG_FORMAT: &str = "$http_webhook_id\\t$http_x_fastapihooks_event_id\\t$request_method\\t$uri\\t$status\\t$connection\\t$connection_requests";

impl Nginx {
    /// Starts one. `None` (the test is skipped) when nginx is not installed,
    /// except in CI, where that fails the test.
    pub fn start() -> Option<Self> {
        let Some(binary) = find_program("nginx", &["/usr/sbin/nginx"]) else {
            program_missing("nginx not found: scripts/deps.sh installs nginx-light");
            return None;
        };
        let dir = temp_dir("nginx");
        let started = start_on_free_port(|port| {
            std::fs::write(dir.join("nginx.conf"), config(&dir, port)).expect("write nginx.conf");
            let mut command = Command::new(&binary);
            command.arg("-p").arg(&dir).arg("-c").arg(dir.join("nginx.conf"));
            // The error log before the config is read (default: stderr).
            command.arg("-e").arg(dir.join("error.log"));
            command
        });
        if let Some((child, port)) = started {
            return Some(Self { child, port, dir });
        }
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        panic!("nginx did not start in {}:\n{log}", dir.display());
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request logged so far, in order. nginx writes a line as it
    /// finishes a request (the log is not buffered).
    pub fn access_log(&self) -> Vec<Access> {
        let text = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        text.lines().map(parse).collect()
    }

    /// The error log (notices and `info`: closed keep-alive connections).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One process (no master, no workers, so killing it stops everything), in
/// the foreground. Run as root, nginx needs no `user` directive: without a
/// master process it never switches users.
fn config(dir: &std::path::Path, port: u16) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    log_format fh "{LOG_FORMAT}";
    access_log {d}/access.log fh;
    keepalive_timeout {timeout}s;
    keepalive_requests 100000;
    client_body_buffer_size 1m;
    client_max_body_size 10m;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            # `return` reads and discards the request body, then keeps the
            # connection for the next request.
            return 200 "ok";
        }}
    }}
}}
"#,
        timeout = KEEPALIVE_TIMEOUT.as_secs(),
    )
}

fn parse(line: &str) -> Access {
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields.len(), 7, "unexpected access log line {line:?}");
    let opt = |s: &str| (s != "-").then(|| s.to_owned());
    let num = |s: &str| s.parse::<u64>().unwrap_or_else(|_| panic!("not a number in {line:?}"));
    Access {
        webhook_id: opt(fields[0]),
        event_id: opt(fields[1]),
        method: fields[2].to_owned(),
        uri: fields[3].to_owned(),
        status: fields[4].parse().unwrap_or_else(|_| panic!("bad status in {line:?}")),
        connection: num(fields[5]),
        connection_requests: num(fields[6]),
    }
}
