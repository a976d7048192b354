//! Helpers for the Redis Streams tests: the test Redis (from
//! `FASTAPIHOOKS_TEST_REDIS_URL`, which `scripts/test.sh` starts), unique
//! stream keys so tests run in parallel, a direct connection to inspect
//! streams, and a private `redis-server` a test may kill and restart.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fastapihooks::backend::{RedisStreamsBackend, RedisStreamsBuilder};
use redis::aio::MultiplexedConnection;

/// The test Redis URL. Locally, `None` (the test says it is skipped) when
/// the variable is unset; in CI (`CI` set) a missing variable fails the test.
pub fn redis_url() -> Option<String> {
    match std::env::var("FASTAPIHOOKS_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("FASTAPIHOOKS_TEST_REDIS_URL must be set in CI (scripts/test.sh starts a Redis)")
        }
        _ => {
            eprintln!("skipped: FASTAPIHOOKS_TEST_REDIS_URL is not set (scripts/test.sh sets it)");
            None
        }
    }
}

/// Gets the test Redis URL or returns from the test (skipped).
macro_rules! redis_or_skip {
    () => {
        match $crate::redis_util::redis_url() {
            Some(url) => url,
            None => return,
        }
    };
}
pub(crate) use redis_or_skip;

/// The signing secret the Redis tests' workers sign with.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The `fastapihooks` binary, or `None` (the test says it is skipped).
pub fn cli_bin() -> Option<&'static str> {
    let bin = option_env!("CARGO_BIN_EXE_fastapihooks");
    if bin.is_none() {
        eprintln!("skipped: the fastapihooks binary needs the `cli` feature");
    }
    bin
}

/// `fastapihooks start` with `args`, allowed to deliver to 127.0.0.1,
/// signing with [`SECRET`], its output discarded.
pub fn start_cli_quietly(bin: &str, args: &[&str]) -> Child {
    Command::new(bin)
        .arg("start")
        .args(args)
        .args(["--allow-cidr", "127.0.0.0/8"])
        .env("FASTAPIHOOKS_SIGNING_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A stream key no other test uses.
pub fn unique_key(test: &str) -> String {
    format!("fh-test:{test}:{}", fastapihooks::EventId::new().as_str())
}

/// A backend builder on `url` and `stream`, quick to react: short block
/// and backoff.
pub fn backend(url: &str, stream: &str) -> RedisStreamsBuilder {
    RedisStreamsBackend::builder(url)
        .stream(stream)
        .block(Duration::from_millis(200))
        .max_backoff(Duration::from_millis(200))
        .connect_timeout(Duration::from_secs(2))
}

/// A plain connection for inspecting Redis.
pub async fn connect(url: &str) -> MultiplexedConnection {
    redis::Client::open(url).expect("url").get_multiplexed_async_connection().await.expect("connect to the test redis")
}

pub async fn xlen(conn: &mut MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(conn).await.expect("XLEN")
}

/// Entries pending in `group` (read, not acked).
pub async fn pending(conn: &mut MultiplexedConnection, key: &str, group: &str) -> u64 {
    let reply: redis::Value = redis::cmd("XPENDING").arg(key).arg(group).query_async(conn).await.expect("XPENDING");
    match reply {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            other => panic!("unexpected XPENDING reply {other:?}"),
        },
        other => panic!("unexpected XPENDING reply {other:?}"),
    }
}

/// Waits until `check` holds, up to `limit`; returns whether it did.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `redis-server` of the test's own on a free 127.0.0.1 port, with an
/// append-only file in a temporary folder: it can be killed and restarted
/// with its data.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Serves TLS only (`rediss://`), with the `send` tests' certificate.
    tls: bool,
}

/// The test CA and the `localhost` / `127.0.0.1` certificate it signed.
pub const TEST_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fastapihooks-core/src/send/testdata/ca.pem");
const TEST_CERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fastapihooks-core/src/send/testdata/server.pem");
const TEST_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fastapihooks-core/src/send/testdata/server.key");

impl RedisServer {
    /// Starts one; `None` (skipped) when `redis-server` is not installed,
    /// except in CI, where that fails the test.
    pub async fn start() -> Option<Self> {
        Self::start_with(false).await
    }

    /// Starts one that speaks TLS only.
    pub async fn start_tls() -> Option<Self> {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Option<Self> {
        if binary().is_none() {
            assert!(std::env::var_os("CI").is_none(), "redis-server must be installed in CI (scripts/deps.sh)");
            eprintln!("skipped: redis-server is not installed");
            return None;
        }
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let dir = std::env::temp_dir().join(format!("fh-redis-{}", fastapihooks::EventId::new().as_str()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = Self { child: None, port, dir, tls };
        server.spawn().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        if self.tls {
            format!("rediss://localhost:{}/0", self.port)
        } else {
            format!("redis://127.0.0.1:{}/0", self.port)
        }
    }

    async fn spawn(&mut self) {
        let port = self.port.to_string();
        let ports: [&str; 4] = if self.tls { ["--port", "0", "--tls-port", &port] } else { ["--port", &port, "", ""] };
        let tls = ["--tls-cert-file", TEST_CERT, "--tls-key-file", TEST_KEY, "--tls-ca-cert-file", TEST_CA];
        let child = Command::new(binary().expect("checked"))
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(ports.iter().filter(|a| !a.is_empty()))
            .args(if self.tls { &tls[..] } else { &[] })
            .args(if self.tls { &["--tls-auth-clients", "no"][..] } else { &[] })
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let url = self.url();
        let up = eventually(Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let client = if url.starts_with("rediss://") {
                    let ca = std::fs::read(TEST_CA).expect("test CA");
                    redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls: None, root_cert: Some(ca) })
                } else {
                    redis::Client::open(url)
                };
                let Ok(client) = client else { return false };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return false };
                redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            }
        })
        .await;
        assert!(up, "redis-server did not start on port {}", self.port);
    }

    /// Kills the server (SIGKILL: no goodbye to the clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is
    /// answered, as with a partition that drops packets. [`thaw`](Self::thaw) undoes it.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts it again on the same port, with the same data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn binary() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("redis-server")).find(|p| p.is_file()));
    from_path.or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()))
}

/// A fake Redis on 127.0.0.1 that answers `+OK` to every command except
/// those named in `silent`, which it reads and never answers: a Redis that
/// froze in the middle of one step. Ends with the test's runtime.
pub async fn mute_redis(silent: &'static [&'static str]) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read);
                // Commands come as arrays of bulk strings: `*n`, then `$len` and the bytes, n times.
                loop {
                    let mut line = String::new();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let Some(n) = line.trim_end().strip_prefix('*').and_then(|n| n.parse::<usize>().ok()) else {
                        return;
                    };
                    let mut name = String::new();
                    for i in 0..n {
                        let mut head = String::new();
                        let mut bulk = String::new();
                        if lines.read_line(&mut head).await.unwrap_or(0) == 0
                            || lines.read_line(&mut bulk).await.unwrap_or(0) == 0
                        {
                            return;
                        }
                        if i == 0 {
                            name = bulk.trim_end().to_ascii_uppercase();
                        }
                    }
                    if !silent.contains(&name.as_str()) && write.write_all(b"+OK\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("redis://127.0.0.1:{port}/0")
}
