//! The delivery-path look-up (`Store::subscriptions_for`) on a SQLite file,
//! straight and through `CachedStore`.
//!
//! Run with `cargo bench -p fastapihooks-core --features sqlite --bench store_lookup`.
//! With the `postgres` feature and `FASTAPIHOOKS_TEST_POSTGRES_URL` set (for
//! example inside `scripts/test.sh`'s servers), PostgreSQL is measured too.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fastapihooks_core::store::CachedStore;
use fastapihooks_core::store::sql::SqlStore;
use fastapihooks_core::{MemoryStore, Store, WebhookSubscription};

/// 5 subscriptions to `order.created` (3 for owner `acme` or no owner), among
/// 1,000 others; `tag` keeps runs on a shared database apart.
async fn fill(store: &dyn Store, tag: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..1_000 {
        let event = format!("event{tag}.{}", i % 50);
        let sub = WebhookSubscription::new(format!("https://hooks.example.com/{i}"))
            .expect("url")
            .owner(format!("tenant-{i}"));
        ids.push(store.add(&event, sub).await.expect("add"));
    }
    for i in 0..5 {
        let mut sub = WebhookSubscription::new(format!("https://acme.example.com/{i}")).expect("url");
        sub = if i % 2 == 0 { sub.owner("acme") } else { sub.owner("other") };
        if i == 4 {
            sub.owner_id = None;
        }
        ids.push(store.add(&format!("order{tag}.created"), sub).await.expect("add"));
    }
    ids
}

fn lookup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let path = std::env::temp_dir().join(format!("fastapihooks-bench-{}.db", std::process::id()));
    let url = format!("sqlite://{}", path.display());
    let (sql, cached, memory) = rt.block_on(async {
        let sql = SqlStore::connect(&url).await.expect("connect");
        sql.init().await.expect("init");
        let memory = MemoryStore::new();
        fill(&sql, "").await;
        fill(&memory, "").await;
        let cached = CachedStore::new(sql.clone()).with_ttl(Duration::from_secs(3600));
        (sql, cached, memory)
    });
    let mut group = c.benchmark_group("subscriptions_for");
    group.bench_function("sqlite_file", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(sql.subscriptions_for("order.created", Some("acme")).await.expect("lookup")) })
    });
    group.bench_function("cached_sqlite_file", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(cached.subscriptions_for("order.created", Some("acme")).await.expect("lookup"))
        })
    });
    group.bench_function("memory", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(memory.subscriptions_for("order.created", Some("acme")).await.expect("lookup"))
        })
    });
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("FASTAPIHOOKS_TEST_POSTGRES_URL") {
        let tag = format!(".bench{}", std::process::id());
        let (pg, ids) = rt.block_on(async {
            let pg = SqlStore::connect(&url).await.expect("connect");
            pg.init().await.expect("init");
            let ids = fill(&pg, &tag).await;
            (pg, ids)
        });
        let event = format!("order{tag}.created");
        let cached_pg = CachedStore::new(pg.clone()).with_ttl(Duration::from_secs(3600));
        group.bench_function("postgres", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(pg.subscriptions_for(&event, Some("acme")).await.expect("lookup")) })
        });
        group.bench_function("cached_postgres", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(cached_pg.subscriptions_for(&event, Some("acme")).await.expect("lookup")) })
        });
        rt.block_on(async {
            for id in ids {
                let _ = pg.remove(&id).await;
            }
        });
    }
    group.finish();

    rt.block_on(sql.close());
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = lookup
}
criterion_main!(benches);
