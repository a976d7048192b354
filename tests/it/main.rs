//! The integration tests: one binary (link once), one module per area.
#![allow(unreachable_pub)] // test helpers are `pub` within this one test crate

#[cfg(all(feature = "sqlite", feature = "redis"))]
mod cli_attempts;
#[cfg(all(feature = "sqlite", feature = "redis"))]
mod cli_subscriptions;
mod delivery;
mod emission_pipeline;
mod guard;
mod health;
mod history_conformance;
mod history_storage;
mod hook_emission;
mod hook_hygiene;
mod hook_options;
mod hook_request;
mod hook_util;
mod http1;
mod keepalive_soak;
mod nginx_util;
mod proxy;
mod redeliver;
#[cfg(feature = "redis")]
mod redis_backend;
#[cfg(feature = "redis")]
mod redis_durable;
#[cfg(feature = "redis")]
mod redis_failures;
#[cfg(feature = "redis")]
mod redis_publish;
#[cfg(feature = "redis")]
mod redis_util;
#[cfg(feature = "redis")]
mod redis_worker;
mod shutdown;
mod signing_interop;
mod signing_replay;
mod signing_rotation;
mod signing_secrets;
mod signing_util;
mod store_cached;
mod store_conformance;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod store_sql;
mod store_util;
mod tinyproxy_util;
mod util;
