//! The HTTP/1.1 client of deliveries, against raw-socket servers: keep-alive
//! reuse, servers that close idle connections, chunked bodies, timeouts,
//! redirects, IPv6, and the exact bytes of a request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fastapihooks::{
    AttemptError, DeliveryError, Fastapihooks, InMemoryDeadLetterQueue, NotSent, RetryPolicy, WebhookSubscription,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::util::local_builder;

const WAIT: Duration = Duration::from_secs(10);

/// One request as the server read it.
#[derive(Clone, Debug)]
struct RawRequest {
    /// The request line.
    line: String,
    /// Header names lower-cased, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Which accepted connection it came on (0-based).
    conn: usize,
    /// Its place on that connection (0-based).
    nth: usize,
}

impl RawRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What the server does with one request.
enum Action {
    /// Writes these bytes, keeps reading.
    Reply(Vec<u8>),
    /// Writes these bytes, then closes the connection.
    ReplyAndClose(Vec<u8>),
    /// Closes the connection without answering.
    Close,
    /// Never answers (keeps the connection open).
    Hang,
}

fn ok() -> Action {
    Action::Reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec())
}

type Script = Arc<dyn Fn(&RawRequest) -> Action + Send + Sync>;

/// A raw HTTP/1.1 server: counts accepted connections, records requests,
/// answers as `script` says.
#[derive(Clone)]
struct RawServer {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<RawRequest>>>,
}

impl RawServer {
    async fn start(script: impl Fn(&RawRequest) -> Action + Send + Sync + 'static) -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), script)
    }

    fn on(listener: TcpListener, script: impl Fn(&RawRequest) -> Action + Send + Sync + 'static) -> Self {
        let server = Self { addr: listener.local_addr().unwrap(), accepts: Arc::default(), requests: Arc::default() };
        let script: Script = Arc::new(script);
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let conn = s.accepts.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(sock, conn, s.requests.clone(), script.clone()));
            }
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<RawRequest> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve(mut sock: TcpStream, conn: usize, log: Arc<Mutex<Vec<RawRequest>>>, script: Script) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut nth = 0;
    loop {
        // Parse every complete request in the buffer.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let line = lines.next().unwrap_or_default().to_owned();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let len: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
            if buf.len() < end + 4 + len {
                break;
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            let req = RawRequest { line, headers, body, conn, nth };
            nth += 1;
            log.lock().unwrap().push(req.clone());
            match script(&req) {
                Action::Reply(bytes) => {
                    if sock.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Action::ReplyAndClose(bytes) => {
                    let _ = sock.write_all(&bytes).await;
                    return;
                }
                Action::Close => return,
                Action::Hang => {
                    // Hold the connection until the client gives up.
                    let _ = sock.read(&mut chunk).await;
                    return;
                }
            }
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits (bounded) until `n` deliveries succeeded.
async fn wait_delivered(hooks: &Fastapihooks, n: u64) {
    let deadline = Instant::now() + WAIT;
    while hooks.stats().delivered < n {
        assert!(Instant::now() < deadline, "only {} of {n} delivered", hooks.stats().delivered);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn sub(url: String) -> WebhookSubscription {
    WebhookSubscription::new(url).unwrap()
}

#[tokio::test]
async fn sequential_deliveries_reuse_one_connection() {
    let server = RawServer::start(|_| ok()).await;
    let hooks = local_builder().subscriber("e", sub(server.url("/h"))).build().unwrap();
    for i in 0..20 {
        hooks.send("e", &json!({ "n": i })).unwrap();
        wait_delivered(&hooks, i + 1).await;
    }
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(server.requests().len(), 20);
    assert_eq!(server.accepts(), 1, "every delivery went over the first connection");
    let nths: Vec<usize> = server.requests().iter().map(|r| r.nth).collect();
    assert_eq!(nths, (0..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced() {
    // Every answer is followed by a close, without `Connection: close`.
    let server =
        RawServer::start(|_| Action::ReplyAndClose(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec())).await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder().on_failure(dlq.clone()).subscriber("e", sub(server.url("/h"))).build().unwrap();
    for i in 0..3 {
        hooks.send("e", &json!(i)).unwrap();
        wait_delivered(&hooks, i + 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(hooks.stats().retried, 0, "no delivery needed a second attempt");
    assert!(dlq.is_empty());
    assert_eq!(server.accepts(), 3);
}

#[tokio::test]
async fn a_request_written_on_a_reused_connection_that_gets_no_answer_is_an_attempt() {
    // The first connection answers its first request, then reads the next
    // one and closes without answering, the way a server closing an idle
    // connection races a request. The receiver may have acted on it, so
    // sending it again is the retry policy's decision, not a silent resend.
    let server = RawServer::start(|r| if r.conn == 0 && r.nth == 1 { Action::Close } else { ok() }).await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .retry_policy(RetryPolicy::schedule([Duration::from_millis(300)]))
        .on_failure(dlq.clone())
        .subscriber("e", sub(server.url("/h")))
        .build()
        .unwrap();
    hooks.send("e", &json!(1)).unwrap();
    wait_delivered(&hooks, 1).await;
    let started = Instant::now();
    hooks.send("e", &json!(2)).unwrap();
    wait_delivered(&hooks, 2).await;
    // The delay is 300 ms with the schedule's jitter (x0.8 .. 1.2): at least 240 ms.
    assert!(started.elapsed() >= Duration::from_millis(200), "sent again after the retry delay, not at once");
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(hooks.stats().retried, 1, "the unanswered request was an attempt");
    assert!(dlq.is_empty());
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!((requests[1].conn, requests[2].conn), (0, 1));
    assert_eq!(requests[1].header("x-fastapihooks-event-id"), requests[2].header("x-fastapihooks-event-id"));
}

#[tokio::test]
async fn a_2xx_with_a_large_head_is_delivered_once() {
    // 80 headers; then one head of 200 KiB. Both are under hyper's limits
    // (100 headers, ~400 KiB): the receiver has the delivery.
    let mut many = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
    for i in 0..80 {
        many.extend_from_slice(format!("x-h{i}: v{i}\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\nok");
    let mut big = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-big: ".to_vec();
    big.resize(big.len() + 200 * 1024, b'a');
    big.extend_from_slice(b"\r\n\r\nok");
    for (what, reply) in [("80 headers", many), ("a 200 KiB head", big)] {
        let server = RawServer::start(move |_| Action::Reply(reply.clone())).await;
        let dlq = InMemoryDeadLetterQueue::new(10);
        let hooks = local_builder().on_failure(dlq.clone()).subscriber("e", sub(server.url("/h"))).build().unwrap();
        hooks.send("e", &json!({})).unwrap();
        assert!(hooks.shutdown(WAIT).await.drained);
        assert_eq!((hooks.stats().delivered, hooks.stats().retried), (1, 0), "{what}: {:?}", dlq.entries());
        assert_eq!(server.requests().len(), 1, "{what}: delivered once, never again");
    }
}

#[tokio::test]
async fn a_2xx_with_a_malformed_header_is_delivered() {
    let server = RawServer::start(|_| {
        Action::Reply(b"HTTP/1.1 200 OK\r\nx-ok: 1\r\nbad header\x01: \x7f\r\ncontent-length: 2\r\n\r\nok".to_vec())
    })
    .await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder().on_failure(dlq.clone()).subscriber("e", sub(server.url("/h"))).build().unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!((hooks.stats().delivered, hooks.stats().retried), (1, 0), "{:?}", dlq.entries());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn response_head_limits_are_settings() {
    let mut many = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
    for i in 0..20 {
        many.extend_from_slice(format!("x-h{i}: v{i}\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\nok");
    let server = RawServer::start(move |_| Action::Reply(many.clone())).await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .retry_policy(RetryPolicy::schedule(Vec::new()))
        .max_response_headers(10)
        .on_failure(dlq.clone())
        .subscriber("e", sub(server.url("/h")))
        .build()
        .unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    let f = &dlq.entries()[0];
    assert!(
        matches!(&f.error, DeliveryError::Attempt(AttemptError::Network(m)) if m.contains("response head too large")),
        "{:?}",
        f.error
    );
}

#[tokio::test]
async fn an_early_413_to_a_large_body_is_reported_as_413() {
    // Reads the request head only, answers 413 and stops reading: the
    // client's writes of the 16 MB body fill the socket buffers and stall.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = sock
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                // Hold the connection, reading nothing more, until the client goes.
                tokio::time::sleep(Duration::from_secs(20)).await;
            });
        }
    });
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .timeout(Duration::from_secs(5))
        .on_failure(dlq.clone())
        .subscriber("e", sub(format!("http://{addr}/h")))
        .build()
        .unwrap();
    let started = Instant::now();
    hooks.send("e", &json!({ "blob": "x".repeat(16 * 1024 * 1024) })).unwrap();
    assert!(hooks.shutdown(Duration::from_secs(20)).await.drained);
    let f = &dlq.entries()[0];
    assert_eq!(
        f.error,
        DeliveryError::Attempt(AttemptError::Status { status: 413 }),
        "the receiver's answer, not a timeout"
    );
    assert_eq!(f.attempts, 1, "413 is final");
    assert!(started.elapsed() < Duration::from_secs(5), "answered before the 5 s timeout");
    assert_eq!(heads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_new_connection_closed_before_a_response_is_a_network_error() {
    let server = RawServer::start(|_| Action::Close).await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .retry_policy(RetryPolicy::exponential(1, Duration::from_millis(10), Duration::from_millis(10)))
        .on_failure(dlq.clone())
        .subscriber("e", sub(format!("{}?token=QUERY-SECRET", server.url("/h"))))
        .build()
        .unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    let f = &dlq.entries()[0];
    assert_eq!(f.attempts, 2, "retried by the policy, like any network error");
    assert_eq!(f.error, DeliveryError::Attempt(AttemptError::Network("connection closed before a response".into())));
    assert!(!f.error.to_string().contains("QUERY-SECRET"));
    assert_eq!(server.requests().len(), 2, "no resend on a new connection: only reused ones may be stale");
}

#[tokio::test]
async fn chunked_responses_are_read_and_the_connection_kept() {
    let server = RawServer::start(|r| {
        let status = if r.nth == 0 { "200 OK" } else { "503 Busy" };
        let resp = format!(
            "HTTP/1.1 {status}\r\ntransfer-encoding: chunked\r\n\r\n4;ext=1\r\nwait\r\n6\r\n, busy\r\n0\r\nx-trailer: t\r\n\r\n"
        );
        Action::Reply(resp.into_bytes())
    })
    .await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .retry_policy(RetryPolicy::schedule(Vec::new()))
        .on_failure(dlq.clone())
        .subscriber("e", sub(server.url("/h")))
        .build()
        .unwrap();
    hooks.send("e", &json!(1)).unwrap();
    wait_delivered(&hooks, 1).await;
    hooks.send("e", &json!(2)).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(dlq.entries()[0].error, DeliveryError::Attempt(AttemptError::Status { status: 503 }));
    assert_eq!(server.accepts(), 1, "the chunked body was read to its end, the connection reused");
}

#[tokio::test]
async fn a_response_that_never_comes_is_a_timeout() {
    let server = RawServer::start(|_| Action::Hang).await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .timeout(Duration::from_millis(200))
        .retry_policy(RetryPolicy::schedule(Vec::new()))
        .on_failure(dlq.clone())
        .subscriber("e", sub(server.url("/h")))
        .build()
        .unwrap();
    let started = Instant::now();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(dlq.entries()[0].error, DeliveryError::Attempt(AttemptError::Timeout(Duration::from_millis(200))));
}

#[tokio::test]
async fn a_body_that_never_ends_does_not_undo_the_status() {
    // The head says 200 and 10 bytes; 2 come, then nothing.
    let server = RawServer::start(|_| Action::Reply(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok".to_vec())).await;
    let hooks =
        local_builder().timeout(Duration::from_millis(200)).subscriber("e", sub(server.url("/h"))).build().unwrap();
    hooks.send("e", &json!(1)).unwrap();
    wait_delivered(&hooks, 1).await;
    hooks.send("e", &json!(2)).unwrap();
    wait_delivered(&hooks, 2).await;
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(hooks.stats().retried, 0);
    assert_eq!(server.accepts(), 2, "a connection with an unfinished body is not reused");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = RawServer::start(|r| {
        if r.line.starts_with("POST /h ") {
            Action::Reply(b"HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n".to_vec())
        } else {
            ok()
        }
    })
    .await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder().on_failure(dlq.clone()).subscriber("e", sub(server.url("/h"))).build().unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    let f = &dlq.entries()[0];
    assert_eq!(f.error, DeliveryError::Attempt(AttemptError::Redirect { status: 302 }));
    assert_eq!(f.attempts, 1, "a redirect is final");
    let lines: Vec<String> = server.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(lines, ["POST /h HTTP/1.1"], "/elsewhere was never asked for");
}

#[tokio::test]
async fn ipv6_loopback_urls_are_delivered() {
    let Ok(listener) = TcpListener::bind("[::1]:0").await else {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    };
    let server = RawServer::on(listener, |_| ok());
    let port = server.addr.port();
    let hooks = local_builder().subscriber("e", sub(format!("http://[::1]:{port}/v6?q=1"))).build().unwrap();
    hooks.send("e", &json!({})).unwrap();
    wait_delivered(&hooks, 1).await;
    assert!(hooks.shutdown(WAIT).await.drained);
    let req = &server.requests()[0];
    assert_eq!(req.line, "POST /v6?q=1 HTTP/1.1");
    assert_eq!(req.header("host"), Some(format!("[::1]:{port}").as_str()), "IPv6 hosts are bracketed");
}

#[tokio::test]
async fn the_request_is_exactly_what_receivers_expect() {
    let server = RawServer::start(|_| ok()).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let hooks = local_builder()
        .signing_secret(secret)
        .subscriber("order.created", sub(server.url("/hooks/in?tenant=a&x=%20y#frag")).bearer("tok-123"))
        .build()
        .unwrap();
    let event_id = hooks.send("order.created", &json!({"id": "ord_1", "total": 12.5})).unwrap();
    wait_delivered(&hooks, 1).await;
    assert!(hooks.shutdown(WAIT).await.drained);

    let req = &server.requests()[0];
    assert_eq!(req.line, "POST /hooks/in?tenant=a&x=%20y HTTP/1.1", "path and query, never the fragment");
    let body = br#"{"id":"ord_1","total":12.5}"#;
    assert_eq!(req.body, body);
    let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "host",
            "user-agent",
            "content-type",
            "content-length",
            "x-fastapihooks-event",
            "x-fastapihooks-event-id",
            "authorization",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "x-fastapihooks-signature",
        ]
    );
    assert_eq!(req.header("host"), Some(server.addr.to_string().as_str()));
    assert_eq!(req.header("user-agent"), Some(fastapihooks::send::USER_AGENT));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("content-length"), Some(body.len().to_string().as_str()));
    assert_eq!(req.header("x-fastapihooks-event"), Some("order.created"));
    assert_eq!(req.header("x-fastapihooks-event-id"), Some(event_id.as_str()));
    assert_eq!(req.header("webhook-id"), Some(event_id.as_str()));
    assert_eq!(req.header("authorization"), Some("Bearer tok-123"));

    // Both signatures verify over the bytes that were sent.
    let mut headers = http::HeaderMap::new();
    for (name, value) in &req.headers {
        headers.insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    let verifier = fastapihooks::verify::Verifier::new(secret).unwrap();
    verifier.verify(&headers, &req.body).expect("Standard Webhooks signature");
    verifier.verify_legacy(&headers, &req.body).expect("legacy signature");
}

#[tokio::test]
async fn a_bearer_token_that_would_break_the_header_is_refused() {
    let server = RawServer::start(|_| ok()).await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .on_failure(dlq.clone())
        .subscriber("e", sub(server.url("/h")).bearer("tok\r\nx-injected: 1"))
        .build()
        .unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    let f = &dlq.entries()[0];
    assert!(matches!(&f.error, DeliveryError::Attempt(AttemptError::NotSent(NotSent::BearerToken))), "{:?}", f.error);
    assert_eq!(f.attempts, 1);
    assert!(server.requests().is_empty(), "nothing was sent");
    // Time for the server to accept a connection, had one been opened.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.accepts(), 0, "a request that cannot be made opens no connection");
}
