//! A real HTTP receiver on 127.0.0.1 that records what it gets and answers
//! as scripted, and helpers to build a runtime that may reach it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use fastapihooks::{FastapihooksBuilder, NetworkPolicy, RetryPolicy};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Hit {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// The status the receiver answered.
    pub status: u16,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

/// What the receiver answers to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self { status, headers: Vec::new(), delay: Duration::ZERO, body: String::new() }
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Inner {
    hits: Mutex<Vec<Hit>>,
    /// Per path: replies used in order; the last one repeats.
    script: Mutex<HashMap<String, VecDeque<Reply>>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    notify: tokio::sync::Notify,
}

/// The receiver. Dropping it does not stop the server (the test's runtime ends it).
#[derive(Clone)]
pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Receiver {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new().fallback(record).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Scripts the replies for `path` (the last repeats; default 200).
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.inner.script.lock().unwrap().insert(path.to_owned(), replies.into_iter().collect());
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.inner.hits.lock().unwrap().clone()
    }

    pub fn hits_for(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }

    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` hits arrived on `path` (bounded by `limit`).
    pub async fn wait_for(&self, path: &str, n: usize, limit: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.inner.notify.notified();
            let hits = self.hits_for(path);
            if hits.len() >= n || Instant::now() >= deadline {
                return hits;
            }
            let _ = tokio::time::timeout(deadline - Instant::now(), notified).await;
        }
    }
}

async fn record(State(inner): State<Arc<Inner>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    inner.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let reply = {
        let mut script = inner.script.lock().unwrap();
        match script.get_mut(&path) {
            Some(q) if q.len() > 1 => q.pop_front().unwrap(),
            Some(q) if q.len() == 1 => q[0].clone(),
            _ => Reply::status(200),
        }
    };
    inner.hits.lock().unwrap().push(Hit { path, headers, body, at: Instant::now(), status: reply.status });
    inner.notify.notify_waiters();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    inner.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (name, value) in reply.headers {
        resp.headers_mut().insert(name, value.parse().unwrap());
    }
    resp
}

/// A builder that may reach 127.0.0.1, with fast retries (3 retries, 10..50 ms).
pub fn local_builder() -> FastapihooksBuilder {
    fastapihooks::Fastapihooks::builder()
        .network_policy(NetworkPolicy::default().allow_loopback())
        .retry_policy(RetryPolicy::exponential(3, Duration::from_millis(10), Duration::from_millis(50)))
}

/// A port on 127.0.0.1 where nothing listens.
pub async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

/// Captures `tracing` output (all levels) for the current thread.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        // tracing caches each callsite's interest for the whole process. While
        // only one dispatcher is registered, a thread without a subscriber (a
        // test running beside this one) that reaches a callsite first caches
        // "never" for every thread, and this capture misses the event
        // (tokio-rs/tracing#3611). A second dispatcher, kept for the whole
        // run, makes tracing ask every registered dispatcher instead.
        static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let writer = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(sub)
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An installed program: the first `name` on `PATH`, else the first of
/// `fallbacks` that exists (`/usr/sbin` is often not on a user's `PATH`).
pub fn find_program(name: &str, fallbacks: &[&str]) -> Option<std::path::PathBuf> {
    let from_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()));
    from_path.or_else(|| fallbacks.iter().map(std::path::PathBuf::from).find(|p| p.is_file()))
}

/// A program a test needs is not installed: in CI (`CI` set) that fails the
/// test; locally the test says it is skipped (and the caller returns).
pub fn program_missing(message: &str) {
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("skipped: {message}");
}

/// A free port on 127.0.0.1 for a server started by a test (it may be taken
/// again before the server binds it: callers retry on a new one).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A new empty temporary folder, named after `what`.
pub fn temp_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fh-{what}-{}", fastapihooks::EventId::new().as_str()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Waits until `child` accepts TCP connections on 127.0.0.1:`port`, up to
/// `limit`. False when it exited first or did not listen in time.
pub fn wait_listening(child: &mut std::process::Child, port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Starts a server a test needs on a free port of 127.0.0.1: `command`
/// writes its configuration for the port and returns the command line. The
/// port is free when chosen; another process may take it before the server
/// binds it, so a start that fails is tried again on a new port (5 times).
/// Returns the running child (its output discarded) and its port.
pub fn start_on_free_port(mut command: impl FnMut(u16) -> std::process::Command) -> Option<(std::process::Child, u16)> {
    use std::process::Stdio;
    for _ in 0..5 {
        let port = free_port();
        let mut child = command(port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the test server");
        if wait_listening(&mut child, port, Duration::from_secs(10)) {
            std::thread::sleep(Duration::from_millis(50));
            if matches!(child.try_wait(), Ok(None)) {
                return Some((child, port));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    None
}

/// The head (as sent) of the first whole request in `buf` (head and its
/// `Content-Length` body), removed from `buf`; `None` until one has arrived.
pub fn take_request(buf: &mut Vec<u8>) -> Option<String> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len: usize = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    if buf.len() < end + 4 + len {
        return None;
    }
    buf.drain(..end + 4 + len);
    Some(head)
}
