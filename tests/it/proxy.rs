//! Deliveries through a real forward proxy (a private tinyproxy): `CONNECT`
//! tunnels for https receivers (TLS end to end), absolute-form requests for
//! http ones, the network guard vetting every receiver before the proxy
//! hears of it, and the proxy told the vetted address, not the host name.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fastapihooks::send::Proxy;
use fastapihooks::{
    AttemptError, DeliveryError, InMemoryDeadLetterQueue, NetworkPolicy, RetryPolicy, WebhookSubscription,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::tinyproxy_util::Tinyproxy;
use crate::util::{Receiver, closed_port, local_builder, take_request};

const CA: &[u8] = include_bytes!("../../fastapihooks-core/src/send/testdata/ca.pem");
const CERT: &[u8] = include_bytes!("../../fastapihooks-core/src/send/testdata/server.pem");
const KEY: &[u8] = include_bytes!("../../fastapihooks-core/src/send/testdata/server.key");
const WAIT: Duration = Duration::from_secs(10);

/// What the TLS receiver saw: the server name the client asked for, and
/// each request's head.
#[derive(Default)]
struct Seen {
    sni: Vec<Option<String>>,
    heads: Vec<String>,
}

/// An HTTPS receiver for `localhost` (the test CA's certificate) on
/// 127.0.0.1: answers every request 200.
async fn tls_receiver() -> (u16, Arc<Mutex<Seen>>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(CERT).unwrap()],
            PrivateKeyDer::from_pem_slice(KEY).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
            log.lock().unwrap().sni.push(tls.get_ref().1.server_name().map(str::to_owned));
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(head) = take_request(&mut buf) {
                        log.lock().unwrap().heads.push(head);
                        if tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                            return;
                        }
                    }
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn https_receivers_are_reached_through_a_connect_tunnel_to_the_vetted_address() {
    let Some(proxy) = Tinyproxy::start() else { return };
    let (port, seen) = tls_receiver().await;
    let hooks = local_builder()
        .tls_root_certificates(CA)
        .proxy(Proxy::new(&proxy.url()).unwrap())
        .subscriber("e", WebhookSubscription::new(format!("https://localhost:{port}/in")).unwrap())
        .build()
        .unwrap();
    for i in 0..2 {
        hooks.send("e", &json!({ "n": i })).unwrap();
    }
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!((hooks.stats().delivered, hooks.stats().failed), (2, 0));
    let log = proxy.log();
    assert!(log.contains(&format!("CONNECT 127.0.0.1:{port} ")), "the vetted address, not `localhost`:\n{log}");
    assert!(!log.contains("localhost"), "the proxy never hears the host name:\n{log}");
    let seen = seen.lock().unwrap();
    // TLS end to end: the receiver's own certificate was verified for the
    // host name, and the request inside the tunnel is origin-form.
    assert!(seen.sni.iter().all(|s| s.as_deref() == Some("localhost")), "{:?}", seen.sni);
    assert_eq!(seen.heads.len(), 2);
    assert!(seen.heads[0].starts_with("POST /in HTTP/1.1\r\n"), "{}", seen.heads[0]);
    assert!(seen.heads[0].to_ascii_lowercase().contains(&format!("\r\nhost: localhost:{port}\r\n")));
}

#[tokio::test]
async fn http_receivers_get_absolute_form_requests_naming_the_vetted_address() {
    let Some(proxy) = Tinyproxy::start() else { return };
    let receiver = Receiver::start().await;
    let url = format!("http://localhost:{}/in?x=1", receiver.port());
    let hooks = local_builder()
        .signing_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .proxy(Proxy::new(&proxy.url()).unwrap())
        .subscriber("e", WebhookSubscription::new(url).unwrap())
        .build()
        .unwrap();
    let id = hooks.send("e", &json!({ "a": 1 })).unwrap();
    let hits = receiver.wait_for("/in", 1, WAIT).await;
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(hooks.stats().delivered, 1);
    let log = proxy.log();
    let line = format!("POST http://127.0.0.1:{}/in?x=1 HTTP/1.1", receiver.port());
    assert!(log.contains(&line), "absolute form, the vetted address:\n{log}");
    assert!(!log.contains("localhost"), "{log}");
    // The signed headers and body arrive as sent.
    assert_eq!(hits[0].header("webhook-id"), Some(id.as_str()));
    assert_eq!(hits[0].json(), json!({ "a": 1 }));
    let verifier = fastapihooks::verify::Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    verifier.verify(&hits[0].headers, &hits[0].body).expect("the signature survives the proxy");
}

#[tokio::test]
async fn the_guard_refuses_a_receiver_before_the_proxy_hears_of_it() {
    let Some(proxy) = Tinyproxy::start() else { return };
    let receiver = Receiver::start().await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    // The default policy: loopback receivers are refused, by name or address.
    let hooks = fastapihooks::Fastapihooks::builder()
        .network_policy(NetworkPolicy::default())
        .retry_policy(RetryPolicy::schedule(Vec::new()))
        .proxy(Proxy::new(&proxy.url()).unwrap())
        .on_failure(dlq.clone())
        .subscriber("e", WebhookSubscription::new(format!("http://localhost:{}/in", receiver.port())).unwrap())
        .subscriber("e", WebhookSubscription::new(format!("https://127.0.0.1:{}/in", receiver.port())).unwrap())
        .build()
        .unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    let errors: Vec<DeliveryError> = dlq.entries().into_iter().map(|f| f.error).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|e| matches!(e, DeliveryError::Attempt(AttemptError::Refused(_)))), "{errors:?}");
    assert!(receiver.hits().is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = proxy.log();
    // (The helper's own start-up probe connects, but asks for nothing.)
    assert!(!log.contains("Request (file descriptor"), "no request reached the proxy:\n{log}");
}

#[tokio::test]
async fn a_proxy_that_is_down_is_a_network_error_that_names_it() {
    let receiver = Receiver::start().await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .retry_policy(RetryPolicy::exponential(1, Duration::from_millis(10), Duration::from_millis(10)))
        .proxy(Proxy::new(&format!("http://127.0.0.1:{}", closed_port().await)).unwrap())
        .on_failure(dlq.clone())
        .subscriber("e", WebhookSubscription::new(receiver.url("/in")).unwrap())
        .build()
        .unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    let f = &dlq.entries()[0];
    assert_eq!(
        f.error,
        DeliveryError::Attempt(AttemptError::Network("proxy: could not connect: connection refused".into()))
    );
    assert_eq!(f.attempts, 2, "retried like any network error");
    assert!(receiver.hits().is_empty(), "never sent around the proxy");
}

#[tokio::test]
async fn invalid_root_certificates_fail_the_build() {
    let err = local_builder().tls_root_certificates("not a certificate").build().unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
}
