//! SQLite: a file (WAL journal) or memory; JSON as `TEXT`, times as RFC 3339
//! `TEXT`; updates in `BEGIN IMMEDIATE` transactions (SQLite serializes
//! writers; the busy timeout makes them wait their turn).

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{
    AddedColumn, ChangedRow, Dialect, DisabledRow, Failure, HealthRow, NewRow, RawRow, SqlConnectError,
    SqlStoreBuilder, apply_update, missing_columns,
};
use crate::subscription::SubscriptionUpdate;

const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS webhook_subscriptions (
        id TEXT PRIMARY KEY,
        event_name TEXT NOT NULL,
        target_url TEXT NOT NULL,
        auth_type TEXT NOT NULL DEFAULT 'none',
        auth_value TEXT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        owner_id TEXT NULL,
        secrets TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        disabled_at TEXT NULL,
        disabled_reason TEXT NULL,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        failing_since TEXT NULL,
        last_success TEXT NULL,
        given_up INTEGER NOT NULL DEFAULT 0
    )",
    "CREATE INDEX IF NOT EXISTS webhook_subscriptions_event_owner
        ON webhook_subscriptions (event_name, owner_id)",
];

/// The columns after `updated_at`, for tables of the first version; as in
/// [`SCHEMA`], in its order. (SQLite has no `ADD COLUMN IF NOT EXISTS`:
/// `init` reads `pragma_table_info` in its write transaction.)
const ADDED_COLUMNS: [AddedColumn; 6] = [
    AddedColumn { name: "disabled_at", add: "ALTER TABLE webhook_subscriptions ADD COLUMN disabled_at TEXT NULL" },
    AddedColumn {
        name: "disabled_reason",
        add: "ALTER TABLE webhook_subscriptions ADD COLUMN disabled_reason TEXT NULL",
    },
    AddedColumn {
        name: "consecutive_failures",
        add: "ALTER TABLE webhook_subscriptions ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0",
    },
    AddedColumn { name: "failing_since", add: "ALTER TABLE webhook_subscriptions ADD COLUMN failing_since TEXT NULL" },
    AddedColumn { name: "last_success", add: "ALTER TABLE webhook_subscriptions ADD COLUMN last_success TEXT NULL" },
    AddedColumn {
        name: "given_up",
        add: "ALTER TABLE webhook_subscriptions ADD COLUMN given_up INTEGER NOT NULL DEFAULT 0",
    },
];

macro_rules! select {
    ($tail:literal) => {
        super::select_columns!("metadata", $tail)
    };
}

pub(super) fn options(opts: &SqlStoreBuilder) -> Result<(SqlitePoolOptions, SqliteConnectOptions), SqlConnectError> {
    let conn = SqliteConnectOptions::from_str(&opts.url)
        .map_err(|e| SqlConnectError::Url { dialect: Dialect::Sqlite, source: Box::new(e) })?
        .create_if_missing(true)
        .busy_timeout(opts.acquire_timeout.max(Duration::from_secs(1)));
    let pool = SqlitePoolOptions::new().acquire_timeout(opts.acquire_timeout);
    if is_in_memory(&opts.url) {
        // An in-memory database lives as long as a connection to it: keep
        // exactly one, forever (shared-cache connections would also fail
        // with SQLITE_LOCKED instead of waiting).
        Ok((pool.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None), conn))
    } else {
        let conn = conn.journal_mode(SqliteJournalMode::Wal);
        // In WAL mode NORMAL loses no integrity, only (at a power cut) the
        // last commits: each commit then costs no wait for the disk.
        let conn = if opts.relaxed_sync { conn.synchronous(SqliteSynchronous::Normal) } else { conn };
        Ok((pool.max_connections(opts.max_connections), conn))
    }
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

pub(super) async fn init(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for statement in SCHEMA {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    let existing: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('webhook_subscriptions')").fetch_all(&mut *tx).await?;
    for column in missing_columns(&ADDED_COLUMNS, &existing) {
        sqlx::query(column.add).execute(&mut *tx).await?;
    }
    tx.commit().await
}

pub(super) async fn insert(pool: &SqlitePool, row: &NewRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_subscriptions (id, event_name, target_url, auth_type, auth_value, metadata, owner_id, secrets, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(&row.id)
    .bind(&row.event_name)
    .bind(&row.target_url)
    .bind(row.auth_type)
    .bind(&row.auth_value)
    .bind(&row.metadata)
    .bind(&row.owner_id)
    .bind(&row.secrets)
    .bind(row.now)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn delete(pool: &SqlitePool, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1").bind(id).execute(pool).await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn get(pool: &SqlitePool, id: &str) -> Result<Option<RawRow>, sqlx::Error> {
    const SQL: &str = select!("WHERE id = $1");
    let row = sqlx::query(SQL).bind(id).fetch_optional(pool).await?;
    row.map(|row| super::decode_row!(row)).transpose()
}

pub(super) async fn list(pool: &SqlitePool, event_name: &str) -> Result<Vec<RawRow>, sqlx::Error> {
    const SQL: &str = select!("WHERE event_name = $1 ORDER BY id");
    let rows = sqlx::query(SQL).bind(event_name).fetch_all(pool).await?;
    rows.into_iter().map(|row| super::decode_row!(row)).collect()
}

pub(super) async fn for_owner(
    pool: &SqlitePool,
    event_name: &str,
    owner: Option<&str>,
) -> Result<Vec<RawRow>, sqlx::Error> {
    let rows = match owner {
        Some(owner) => {
            const SQL: &str = select!("WHERE event_name = $1 AND (owner_id = $2 OR owner_id IS NULL) ORDER BY id");
            sqlx::query(SQL).bind(event_name).bind(owner).fetch_all(pool).await?
        }
        None => {
            const SQL: &str = select!("WHERE event_name = $1 AND owner_id IS NULL ORDER BY id");
            sqlx::query(SQL).bind(event_name).fetch_all(pool).await?
        }
    };
    rows.into_iter().map(|row| super::decode_row!(row)).collect()
}

pub(super) async fn list_all(pool: &SqlitePool, owner: Option<&str>) -> Result<Vec<RawRow>, sqlx::Error> {
    let rows = match owner {
        Some(owner) => {
            const SQL: &str = select!("WHERE owner_id = $1 ORDER BY id");
            sqlx::query(SQL).bind(owner).fetch_all(pool).await?
        }
        None => {
            const SQL: &str = select!("ORDER BY id");
            sqlx::query(SQL).fetch_all(pool).await?
        }
    };
    rows.into_iter().map(|row| super::decode_row!(row)).collect()
}

pub(super) async fn set_disabled(
    pool: &SqlitePool,
    id: &str,
    disabled: Option<&DisabledRow>,
) -> Result<bool, sqlx::Error> {
    let done =
        match disabled {
            Some(disabled) => {
                sqlx::query("UPDATE webhook_subscriptions SET disabled_at = $1, disabled_reason = $2 WHERE id = $3")
                    .bind(disabled.at)
                    .bind(&disabled.reason)
                    .bind(id)
                    .execute(pool)
                    .await?
            }
            None => sqlx::query(
                "UPDATE webhook_subscriptions SET disabled_at = NULL, disabled_reason = NULL, consecutive_failures = 0,
                 failing_since = NULL, last_success = NULL, given_up = 0 WHERE id = $1",
            )
            .bind(id)
            .execute(pool)
            .await?,
        };
    Ok(done.rows_affected() > 0)
}

pub(super) async fn record_health(pool: &SqlitePool, id: &str, health: &HealthRow) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_subscriptions SET consecutive_failures = $1, failing_since = $2, last_success = $3, given_up = $4
         WHERE id = $5",
    )
    .bind(health.consecutive_failures)
    .bind(health.failing_since)
    .bind(health.last_success)
    .bind(health.given_up)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn update(pool: &SqlitePool, id: &str, update: SubscriptionUpdate) -> Result<bool, Failure> {
    const SQL: &str = select!("WHERE id = $1");
    // Take the write lock first: a deferred transaction that reads, then
    // writes, can fail with SQLITE_BUSY when another writer got in between.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let Some(row) = sqlx::query(SQL).bind(id).fetch_optional(&mut *tx).await? else {
        return Ok(false);
    };
    let changed: ChangedRow = apply_update(super::decode_row!(row)?, update)?;
    sqlx::query(
        "UPDATE webhook_subscriptions SET target_url = $1, auth_type = $2, auth_value = $3, metadata = $4,
         owner_id = $5, secrets = $6, updated_at = $7 WHERE id = $8",
    )
    .bind(&changed.target_url)
    .bind(changed.auth_type)
    .bind(&changed.auth_value)
    .bind(&changed.metadata)
    .bind(&changed.owner_id)
    .bind(&changed.secrets)
    .bind(changed.updated_at)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
