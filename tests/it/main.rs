//! The integration tests: one binary, one module per area.

mod store_cached;
mod store_conformance;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod store_sql;
mod store_util;
