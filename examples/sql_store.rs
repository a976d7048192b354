//! Run with `cargo run --example sql_store --features sqlite` (set `DATABASE_URL`
//! to a `postgres://` or `mysql://` URL, with the `postgres` or `mysql`
//! feature, to use a server instead of the default SQLite file).
//!
//! Keeps subscriptions in SQL, puts the delivery-path cache in front, scopes
//! them by tenant, and emits one event.

use std::time::Duration;

use fastapihooks::store::CachedStore;
use fastapihooks::store::sql::SqlStore;
use fastapihooks::{Emission, Fastapihooks, Store, SubscriptionUpdate, WebhookSubscription};
use serde_json::{Map, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        let path = std::env::temp_dir().join("fastapihooks-example.db");
        format!("sqlite://{}", path.display())
    });
    let sql = SqlStore::connect(&url).await?;
    sql.init().await?; // idempotent: creates `webhook_subscriptions` if missing
    println!("store: {} at {}", sql.dialect(), url.split('@').next_back().unwrap_or(&url));

    // Lookups on the delivery path go through a short-lived cache.
    let store = CachedStore::new(sql).with_ttl(Duration::from_secs(2));

    let for_acme = WebhookSubscription::new("https://hooks.example.com/acme")?.bearer("acme-token").owner("acme");
    let for_all = WebhookSubscription::new("https://audit.example.com/all")?;
    let acme_id = store.add("order.created", for_acme).await?;
    let all_id = store.add("order.created", for_all).await?;

    // Partial update: metadata is merged key by key.
    let mut tags = Map::new();
    tags.insert("plan".into(), json!("pro"));
    store.update(&acme_id, SubscriptionUpdate::new().merge_metadata(tags)).await?;

    for owner in [Some("acme"), Some("globex"), None] {
        let subs = store.subscriptions_for("order.created", owner).await?;
        let urls: Vec<&str> = subs.iter().map(|s| s.target_url.as_str()).collect();
        println!("an event of owner {owner:?} goes to {urls:?}");
    }

    // The runtime reads the store for every event (example.com is not
    // reachable here, so the deliveries end in the failure log).
    let hooks = Fastapihooks::builder().store(store.clone()).signing_secret("example-secret").build()?;
    hooks.emit(Emission::new("order.created").owner(Some("acme".into())).response_value(json!({"id": "ord_1"})))?;
    hooks.shutdown(Duration::from_millis(200)).await;

    // Leave the example database as it was.
    store.remove(&acme_id).await?;
    store.remove(&all_id).await?;
    println!("cache: {:?}", store.stats());
    Ok(())
}
