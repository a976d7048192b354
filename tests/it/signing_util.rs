//! Helpers of the signing tests: a recording receiver on 127.0.0.1, a
//! dispatcher that may reach it, and the Python interop scripts.

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use fastapihooks::{FastapihooksBuilder, NetworkPolicy, RetryPolicy};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Captured {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Captured {
    /// A header as text ("" when absent).
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The Standard Webhooks headers, as the Python package takes them.
    pub(crate) fn standard_headers(&self) -> Value {
        json!({
            "webhook-id": self.header("webhook-id"),
            "webhook-timestamp": self.header("webhook-timestamp"),
            "webhook-signature": self.header("webhook-signature"),
        })
    }
}

#[derive(Clone)]
struct Recorder {
    tx: mpsc::UnboundedSender<(String, Captured)>,
    statuses: Arc<Mutex<VecDeque<StatusCode>>>,
}

async fn record(State(rec): State<Recorder>, uri: axum::http::Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let _ = rec.tx.send((uri.path().to_owned(), Captured { headers, body }));
    rec.statuses.lock().unwrap().pop_front().unwrap_or(StatusCode::OK)
}

/// A receiver on 127.0.0.1 (port 0) that records every POST to any path and
/// answers 200, or the statuses queued with [`Receiver::respond_with`] first.
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<(String, Captured)>,
    statuses: Arc<Mutex<VecDeque<StatusCode>>>,
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let statuses = Arc::new(Mutex::new(VecDeque::new()));
        let app = Router::new().route("/{*path}", post(record)).with_state(Recorder { tx, statuses: statuses.clone() });
        let addr = serve(app).await;
        Self { addr, rx, statuses }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next requests answer these statuses, in order.
    pub(crate) fn respond_with(&self, statuses: impl IntoIterator<Item = StatusCode>) {
        self.statuses.lock().unwrap().extend(statuses);
    }

    /// The next request (path, request), or a panic after 10 s.
    pub(crate) async fn next(&mut self) -> (String, Captured) {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("no delivery within 10 s")
            .expect("receiver closed")
    }
}

/// Serves `app` on 127.0.0.1, port 0; returns the address.
pub(crate) async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A builder that may deliver to 127.0.0.1, with fast retries.
pub(crate) fn local_hooks() -> FastapihooksBuilder {
    fastapihooks::Fastapihooks::builder()
        .network_policy(NetworkPolicy::default().allow_loopback())
        .retry_policy(RetryPolicy::schedule([Duration::from_millis(50), Duration::from_millis(50)]))
}

/// Runs `tests/interop/<script>` with python3, `input` as JSON on stdin;
/// returns its stdout. Fails the test (never skips) when python3 or the
/// `standardwebhooks` package is missing: `bash scripts/deps.sh` installs them.
pub(crate) fn python(script: &str, input: &Value) -> String {
    let path = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("python3")
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): run `bash scripts/deps.sh` first"));
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed ({}); is `standardwebhooks` installed? run `bash scripts/deps.sh`\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Verifies each (secret, delivery) with the Python package; one result per
/// check: "ok" or "err <reason>".
pub(crate) fn python_verify(checks: &[(&str, &Captured)]) -> Vec<String> {
    let checks: Vec<Value> = checks
        .iter()
        .map(|(secret, c)| json!({"secret": secret, "headers": c.standard_headers(), "body_hex": hex::encode(&c.body)}))
        .collect();
    python("verify_deliveries.py", &json!({ "checks": checks })).lines().map(str::to_owned).collect()
}
