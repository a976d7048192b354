//! A private tinyproxy for tests: a child process of the test, on a free
//! 127.0.0.1 port, with its config, log and pid file in a temporary folder.
//! It proxies plain HTTP (absolute-form requests) and tunnels `CONNECT` to
//! any port, and logs each request line, so a test can check that a request
//! went through the proxy.
//!
//! What tinyproxy (1.11, Debian's) does to what it forwards, seen by the
//! tests below: for an absolute-form request it sends the origin form
//! (`POST /path`) with `Host` set from the URI (a client's own `Host` is
//! dropped), `Connection: close` and a `Via` header; and it closes the
//! client's connection after each response without saying
//! `Connection: close`. A `CONNECT` tunnel passes the bytes untouched.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::util::{find_program, program_missing, start_on_free_port, temp_dir};

/// The running tinyproxy; killed (and its folder removed) on drop.
pub struct Tinyproxy {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Tinyproxy {
    /// Starts one. `None` (the test is skipped) when tinyproxy is not
    /// installed, except in CI, where that fails the test.
    pub fn start() -> Option<Self> {
        let Some(binary) = find_program("tinyproxy", &["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]) else {
            program_missing("tinyproxy not found: scripts/deps.sh installs tinyproxy");
            return None;
        };
        let dir = temp_dir("tinyproxy");
        let started = start_on_free_port(|port| {
            std::fs::write(dir.join("tinyproxy.conf"), config(&dir, port)).expect("write tinyproxy.conf");
            let mut command = Command::new(&binary);
            command.arg("-d").arg("-c").arg(dir.join("tinyproxy.conf")); // -d: the foreground
            command
        });
        if let Some((child, port)) = started {
            return Some(Self { child, port, dir });
        }
        let log = std::fs::read_to_string(dir.join("tinyproxy.log")).unwrap_or_default();
        panic!("tinyproxy did not start in {}:\n{log}", dir.display());
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:PORT`, for a client's proxy setting.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The log so far. Each request shows as
    /// `Request (file descriptor N): GET http://127.0.0.1:X/path HTTP/1.1`
    /// or `... CONNECT 127.0.0.1:X HTTP/1.1`.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tinyproxy.log")).unwrap_or_default()
    }

    /// Waits (bounded) until the log holds `needle`; returns the log.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() >= deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// No `User`/`Group`: tinyproxy then runs as whoever started it (root
/// included; it only warns "You SHOULD set a UserName"). No `ConnectPort`:
/// `CONNECT` to any port is allowed.
fn config(dir: &std::path::Path, port: u16) -> String {
    let d = dir.display();
    format!(
        r#"Port {port}
Listen 127.0.0.1
Allow 127.0.0.1
Timeout 30
MaxClients 100
LogFile "{d}/tinyproxy.log"
LogLevel Info
PidFile "{d}/tinyproxy.pid"
DisableViaHeader No
"#
    )
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::Router;
    use axum::http::{HeaderMap, Uri};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    /// A server on 127.0.0.1 that answers with the path and `Host` it got.
    async fn echo_server() -> SocketAddr {
        async fn echo(uri: Uri, headers: HeaderMap) -> String {
            let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("-");
            format!("{} host={host}", uri.path())
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, Router::new().fallback(echo)).await.unwrap() });
        addr
    }

    #[tokio::test]
    async fn a_request_through_the_helper_reaches_the_server_and_the_log() {
        let Some(proxy) = Tinyproxy::start() else { return };
        let server = echo_server().await;
        let client = reqwest::Client::builder().proxy(reqwest::Proxy::all(proxy.url()).unwrap()).build().unwrap();
        let resp = client.get(format!("http://{server}/via-proxy")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("via").is_some_and(|v| v.to_str().unwrap().contains("tinyproxy")), "{resp:?}");
        assert_eq!(resp.text().await.unwrap(), format!("/via-proxy host={server}"));
        let line = format!("GET http://{server}/via-proxy HTTP/1.1");
        let log = proxy.wait_for_log(&line, WAIT).await;
        assert!(log.contains(&line), "{log}");
    }

    /// Reads one response (head and `content-length` body) from `sock`.
    async fn read_response(sock: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if buf.len() >= end + 4 + len {
                    return String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned();
                }
            }
            let n = tokio::time::timeout(WAIT, sock.read(&mut chunk)).await.expect("response in time").unwrap();
            assert!(n > 0, "closed before a whole response: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[tokio::test]
    async fn absolute_form_requests_get_the_uri_host_and_connect_tunnels_pass_bytes_as_they_are() {
        let Some(proxy) = Tinyproxy::start() else { return };
        let server = echo_server().await;
        let port = server.port();

        // Absolute form with a `Host` that differs from the URI's authority.
        let mut sock = TcpStream::connect(proxy.addr()).await.unwrap();
        let request =
            format!("POST http://{server}/abs HTTP/1.1\r\nhost: localhost:{port}\r\ncontent-length: 2\r\n\r\n{{}}");
        sock.write_all(request.as_bytes()).await.unwrap();
        let resp = read_response(&mut sock).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.ends_with(&format!("/abs host={server}")), "the Host is the URI's: {resp}");

        // CONNECT, then a request in the tunnel: forwarded byte for byte.
        let mut sock = TcpStream::connect(proxy.addr()).await.unwrap();
        sock.write_all(format!("CONNECT {server} HTTP/1.1\r\nhost: {server}\r\n\r\n").as_bytes()).await.unwrap();
        let established = read_response(&mut sock).await;
        assert!(established.starts_with("HTTP/1.0 200"), "{established}");
        sock.write_all(format!("GET /tunnel HTTP/1.1\r\nhost: localhost:{port}\r\n\r\n").as_bytes()).await.unwrap();
        let resp = read_response(&mut sock).await;
        assert!(resp.ends_with(&format!("/tunnel host=localhost:{port}")), "{resp}");
        let line = format!("CONNECT {server} HTTP/1.1");
        let log = proxy.wait_for_log(&line, WAIT).await;
        assert!(log.contains(&line), "{log}");
        assert!(log.contains(&format!("POST http://{server}/abs HTTP/1.1")), "{log}");
    }
}
