//! The delivery-path look-up (`Store::subscriptions_for`) on a SQLite file,
//! straight and through `CachedStore`.
//!
//! Run with `cargo bench -p fastapihooks-core --features sqlite --bench store_lookup`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fastapihooks_core::store::CachedStore;
use fastapihooks_core::store::sql::SqlStore;
use fastapihooks_core::{MemoryStore, Store, WebhookSubscription};

fn lookup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let path = std::env::temp_dir().join(format!("fastapihooks-bench-{}.db", std::process::id()));
    let url = format!("sqlite://{}", path.display());
    let (sql, cached, memory) = rt.block_on(async {
        let sql = SqlStore::connect(&url).await.expect("connect");
        sql.init().await.expect("init");
        let memory = MemoryStore::new();
        // 5 subscriptions the look-up returns, among 1,000 others.
        for i in 0..1_000 {
            let event = format!("event.{}", i % 50);
            let sub = WebhookSubscription::new(format!("https://hooks.example.com/{i}"))
                .expect("url")
                .owner(format!("tenant-{i}"));
            sql.add(&event, sub.clone()).await.expect("add");
            memory.add(&event, sub).await.expect("add");
        }
        for i in 0..5 {
            let mut sub = WebhookSubscription::new(format!("https://acme.example.com/{i}")).expect("url");
            if i % 2 == 0 {
                sub = sub.owner("acme");
            }
            sql.add("order.created", sub.clone()).await.expect("add");
            memory.add("order.created", sub).await.expect("add");
        }
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
