//! A fast webhook receiver for load benchmarks: verifies every signature,
//! counts unique deliveries (by event id and path), and can fail a share of
//! requests with 503.
//!
//! `bench-receiver --port 9100 [--ports 10] --secret S [--fail-rate 0.3] [--hang] [--threads N]`
//! (listening on `--ports` consecutive ports, with a thread per core unless
//! `--threads` says otherwise); `GET /stats`
//! returns the counters as JSON, `POST /reset` zeroes them.

use std::collections::HashSet;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{get, post};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

struct Counters {
    secret: Vec<u8>,
    fail_rate: f64,
    started: Mutex<Instant>,
    received: AtomicU64,
    failed_on_purpose: AtomicU64,
    bad_signatures: AtomicU64,
    duplicates: AtomicU64,
    unique: Mutex<HashSet<(String, String)>>,
    last_unique_ms: AtomicU64,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = arg("--port").unwrap_or_else(|| "9100".into()).parse()?;
    let secret = arg("--secret").unwrap_or_else(|| "bench-secret".into());
    let fail_rate: f64 = arg("--fail-rate").unwrap_or_else(|| "0".into()).parse()?;
    if std::env::args().any(|a| a == "--hang") {
        return tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(hang(port));
    }
    let counters = Arc::new(Counters {
        secret: secret.into_bytes(),
        fail_rate,
        started: Mutex::new(Instant::now()),
        received: AtomicU64::new(0),
        failed_on_purpose: AtomicU64::new(0),
        bad_signatures: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        unique: Mutex::new(HashSet::new()),
        last_unique_ms: AtomicU64::new(0),
    });
    let app =
        Router::new().route("/stats", get(stats)).route("/reset", post(reset)).fallback(receive).with_state(counters);
    // One port per subscriber: distinct subscribers are distinct endpoints.
    let ports: u16 = arg("--ports").unwrap_or_else(|| "1".into()).parse()?;
    // Thread per core: each thread runs a single-threaded runtime with its
    // own listener on every port (SO_REUSEPORT: the kernel spreads the
    // connections), so a request wakes only the thread that serves it.
    let threads: usize = match arg("--threads") {
        Some(n) => n.parse()?,
        None => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
    };
    let mut handles = Vec::new();
    for _ in 0..threads.max(1) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let mut listeners = Vec::new();
        for p in port..port + ports.max(1) {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            #[cfg(unix)]
            socket.set_reuseport(true)?;
            socket.bind(([127, 0, 0, 1], p).into())?;
            listeners.push(rt.block_on(async { socket.listen(1024) })?);
        }
        let app = app.clone();
        handles.push(std::thread::spawn(move || {
            rt.block_on(async move {
                let servers: Vec<_> =
                    listeners.into_iter().map(|l| tokio::spawn(axum::serve(l, app.clone()).into_future())).collect();
                for s in servers {
                    if let Ok(Err(e)) = s.await {
                        eprintln!("bench-receiver: {e}");
                    }
                }
            });
        }));
    }
    for h in handles {
        h.join().map_err(|_| "a receiver thread panicked")?;
    }
    Ok(())
}

/// A subscriber that accepts connections and never answers.
async fn hang(port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let mut held = Vec::new();
    loop {
        let (sock, _) = listener.accept().await?;
        held.push(sock);
    }
}

async fn receive(State(c): State<Arc<Counters>>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    c.received.fetch_add(1, Ordering::Relaxed);
    let sig = headers.get("x-fastapihooks-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
    let ok = sig.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()).is_some_and(|expected| {
        let mut mac = Hmac::<Sha256>::new_from_slice(&c.secret).expect("any key length");
        mac.update(&body);
        mac.verify_slice(&expected).is_ok()
    });
    if !ok {
        c.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    if c.fail_rate > 0.0 && rand::random::<f64>() < c.fail_rate {
        c.failed_on_purpose.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let id = headers.get("x-fastapihooks-event-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let fresh = c.unique.lock().expect("not poisoned").insert((id, uri.path().to_owned()));
    if fresh {
        let ms = c.started.lock().expect("not poisoned").elapsed().as_millis() as u64;
        c.last_unique_ms.fetch_max(ms, Ordering::Relaxed);
    } else {
        c.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    StatusCode::NO_CONTENT
}

async fn stats(State(c): State<Arc<Counters>>) -> axum::Json<serde_json::Value> {
    let unique = c.unique.lock().expect("not poisoned").len();
    axum::Json(serde_json::json!({
        "received": c.received.load(Ordering::Relaxed),
        "unique": unique,
        "duplicates": c.duplicates.load(Ordering::Relaxed),
        "bad_signatures": c.bad_signatures.load(Ordering::Relaxed),
        "failed_on_purpose": c.failed_on_purpose.load(Ordering::Relaxed),
        "since_reset_ms": c.started.lock().expect("not poisoned").elapsed().as_millis() as u64,
        "last_unique_ms": c.last_unique_ms.load(Ordering::Relaxed),
    }))
}

async fn reset(State(c): State<Arc<Counters>>) -> StatusCode {
    c.unique.lock().expect("not poisoned").clear();
    for a in [&c.received, &c.failed_on_purpose, &c.bad_signatures, &c.duplicates, &c.last_unique_ms] {
        a.store(0, Ordering::Relaxed);
    }
    *c.started.lock().expect("not poisoned") = Instant::now();
    StatusCode::NO_CONTENT
}
