//! Secrets never show in `Debug` output or in logs.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use fastapihooks::{
    Emission, Fastapihooks, MemoryStore, Secret, SigningSecret, Store, SubscriptionUpdate, Verifier,
    WebhookSubscription,
};
use serde_json::json;

use crate::signing_util::{Receiver, local_hooks};

const GLOBAL: &str = "global-secret-value-1";
const OWN: &str = "whsec_b3duLXN1YnNjcmlwdGlvbi1zZWNyZXQtdmFsdWU=";
const OLD: &str = "whsec_b2xkLXN1YnNjcmlwdGlvbi1zZWNyZXQtdmFsdWU=";

fn assert_hidden(text: &str) {
    for secret in
        [GLOBAL, OWN, OLD, "b3duLXN1YnNjcmlwdGlvbi1zZWNyZXQtdmFsdWU", "b2xkLXN1YnNjcmlwdGlvbi1zZWNyZXQtdmFsdWU"]
    {
        assert!(!text.contains(secret), "a secret leaked:\n{text}");
    }
}

#[tokio::test]
async fn signing_secrets_absent_from_debug() {
    let mut sub = WebhookSubscription::new("https://example.com/h").unwrap().signing_secret(OLD);
    sub.rotate_secret(OWN, chrono::Utc::now() + chrono::Duration::hours(1));
    assert_hidden(&format!("{sub:?}"));
    let store = MemoryStore::new();
    let id = store.add("e", sub.clone()).await.unwrap();
    assert_hidden(&format!("{:?}", store.get(&id).await.unwrap()));
    assert_hidden(&format!("{store:?}"));
    assert_hidden(&format!("{:?}", SubscriptionUpdate::new().secrets(sub.secrets.clone())));
    assert_hidden(&format!("{:?}", SigningSecret::new(OWN)));
    assert_hidden(&format!("{:?}", Secret::new(OWN).signing_key().unwrap()));
    assert_hidden(&format!("{:?}", Verifier::with_secrets([GLOBAL, OWN, OLD]).unwrap()));
    let builder = Fastapihooks::builder().signing_secret(GLOBAL).subscriber("e", sub);
    assert_hidden(&format!("{builder:?}"));
    let hooks = builder.build().unwrap();
    assert_hidden(&format!("{hooks:?}"));
    hooks.shutdown(Duration::from_millis(10)).await;
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every task of a current-thread runtime runs on this thread, so the
/// thread's default subscriber sees the runtime's logs.
#[tokio::test(flavor = "current_thread")]
async fn signing_secrets_absent_from_logs() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut receiver = Receiver::start().await;
    receiver.respond_with([StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_REQUEST]);
    let mut rotated = WebhookSubscription::new(receiver.url("/own")).unwrap().signing_secret(OLD).bearer("tok-tok-tok");
    rotated.rotate_secret(OWN, chrono::Utc::now() + chrono::Duration::hours(1));
    let mut expired = WebhookSubscription::new(receiver.url("/expired")).unwrap();
    expired.secrets = vec![SigningSecret::expiring(OWN, chrono::Utc::now())];
    let hooks = local_hooks()
        .signing_secret(GLOBAL)
        .subscriber("e", rotated)
        .subscriber("e", expired)
        .subscriber("e", WebhookSubscription::new(receiver.url("/global")).unwrap())
        .build()
        .unwrap();
    hooks.emit(Emission::new("e").response_value(json!(1))).unwrap();
    for _ in 0..3 {
        receiver.next().await; // 500, then its retry 400 (final), and /global 200
    }
    hooks.shutdown(Duration::from_secs(5)).await;

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("expired"), "the refused delivery is logged:\n{logs}");
    assert!(logs.contains("500") || logs.contains("400"), "the failed deliveries are logged:\n{logs}");
    assert_hidden(&logs);
    assert!(!logs.contains("tok-tok-tok"), "{logs}");
}
