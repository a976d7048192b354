//! MySQL and MariaDB: `JSON` metadata, `DATETIME(6)` times (UTC), InnoDB
//! `SELECT ... FOR UPDATE`, binary collation (event names and owners are
//! case-sensitive).

use std::str::FromStr;

use sqlx::MySqlPool;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use super::{
    AddedColumn, ChangedRow, Dialect, DisabledRow, Failure, HealthRow, NewRow, RawRow, SqlConnectError,
    SqlStoreBuilder, apply_update, missing_columns,
};
use crate::subscription::SubscriptionUpdate;

const SCHEMA: [&str; 1] = [
    // The index is declared in the table: MySQL has no `CREATE INDEX IF NOT EXISTS`.
    // Owners may be any length (as on the other databases): the index holds
    // their first 191 characters, and `=` still compares whole values.
    "CREATE TABLE IF NOT EXISTS webhook_subscriptions (
        id VARCHAR(64) NOT NULL PRIMARY KEY,
        event_name VARCHAR(128) NOT NULL,
        target_url TEXT NOT NULL,
        auth_type VARCHAR(16) NOT NULL DEFAULT 'none',
        auth_value TEXT NULL,
        metadata JSON NOT NULL,
        owner_id TEXT NULL,
        secrets TEXT NOT NULL,
        created_at DATETIME(6) NOT NULL,
        updated_at DATETIME(6) NOT NULL,
        disabled_at DATETIME(6) NULL,
        disabled_reason TEXT NULL,
        consecutive_failures BIGINT NOT NULL DEFAULT 0,
        failing_since DATETIME(6) NULL,
        last_success DATETIME(6) NULL,
        given_up BIGINT NOT NULL DEFAULT 0,
        INDEX webhook_subscriptions_event_owner (event_name, owner_id(191))
    ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
];

/// The columns after `updated_at`, for tables of the first version; as in
/// [`SCHEMA`], in its order. MariaDB has `ADD COLUMN IF NOT EXISTS`, MySQL 8
/// does not: `init` reads `information_schema.columns` instead, and takes a
/// duplicate-column error as another process's `init` having been first.
const ADDED_COLUMNS: [AddedColumn; 6] = [
    AddedColumn {
        name: "disabled_at",
        add: "ALTER TABLE webhook_subscriptions ADD COLUMN disabled_at DATETIME(6) NULL",
    },
    AddedColumn {
        name: "disabled_reason",
        add: "ALTER TABLE webhook_subscriptions ADD COLUMN disabled_reason TEXT NULL",
    },
    AddedColumn {
        name: "consecutive_failures",
        add: "ALTER TABLE webhook_subscriptions ADD COLUMN consecutive_failures BIGINT NOT NULL DEFAULT 0",
    },
    AddedColumn {
        name: "failing_since",
        add: "ALTER TABLE webhook_subscriptions ADD COLUMN failing_since DATETIME(6) NULL",
    },
    AddedColumn {
        name: "last_success",
        add: "ALTER TABLE webhook_subscriptions ADD COLUMN last_success DATETIME(6) NULL",
    },
    AddedColumn {
        name: "given_up",
        add: "ALTER TABLE webhook_subscriptions ADD COLUMN given_up BIGINT NOT NULL DEFAULT 0",
    },
];

macro_rules! select {
    ($tail:literal) => {
        super::select_columns!("CAST(metadata AS CHAR)", $tail)
    };
}

pub(super) fn options(opts: &SqlStoreBuilder) -> Result<(MySqlPoolOptions, MySqlConnectOptions), SqlConnectError> {
    // sqlx knows only `mysql://`; `mariadb://` is the same protocol.
    let url = match opts.url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb") => format!("mysql://{rest}"),
        _ => opts.url.clone(),
    };
    let conn = MySqlConnectOptions::from_str(&url)
        .map_err(|e| SqlConnectError::Url { dialect: Dialect::MySql, source: Box::new(e) })?;
    let pool = MySqlPoolOptions::new().max_connections(opts.max_connections).acquire_timeout(opts.acquire_timeout);
    Ok((pool, conn))
}

pub(super) async fn init(pool: &MySqlPool) -> Result<(), sqlx::Error> {
    for statement in SCHEMA {
        sqlx::query(statement).execute(pool).await?;
    }
    let existing: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(column_name AS CHAR) FROM information_schema.columns
         WHERE table_schema = DATABASE() AND table_name = 'webhook_subscriptions'",
    )
    .fetch_all(pool)
    .await?;
    for column in missing_columns(&ADDED_COLUMNS, &existing) {
        match sqlx::query(column.add).execute(pool).await {
            Ok(_) => {}
            // ER_DUP_FIELDNAME (1060): a concurrent `init` added it first.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42S21") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(super) async fn insert(pool: &MySqlPool, row: &NewRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_subscriptions (id, event_name, target_url, auth_type, auth_value, metadata, owner_id, secrets, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    .bind(row.now)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn delete(pool: &MySqlPool, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM webhook_subscriptions WHERE id = ?").bind(id).execute(pool).await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn get(pool: &MySqlPool, id: &str) -> Result<Option<RawRow>, sqlx::Error> {
    const SQL: &str = select!("WHERE id = ?");
    let row = sqlx::query(SQL).bind(id).fetch_optional(pool).await?;
    row.map(|row| super::decode_row!(row)).transpose()
}

pub(super) async fn list(pool: &MySqlPool, event_name: &str) -> Result<Vec<RawRow>, sqlx::Error> {
    const SQL: &str = select!("WHERE event_name = ? ORDER BY id");
    let rows = sqlx::query(SQL).bind(event_name).fetch_all(pool).await?;
    rows.into_iter().map(|row| super::decode_row!(row)).collect()
}

pub(super) async fn for_owner(
    pool: &MySqlPool,
    event_name: &str,
    owner: Option<&str>,
) -> Result<Vec<RawRow>, sqlx::Error> {
    let rows = match owner {
        Some(owner) => {
            const SQL: &str = select!("WHERE event_name = ? AND (owner_id = ? OR owner_id IS NULL) ORDER BY id");
            sqlx::query(SQL).bind(event_name).bind(owner).fetch_all(pool).await?
        }
        None => {
            const SQL: &str = select!("WHERE event_name = ? AND owner_id IS NULL ORDER BY id");
            sqlx::query(SQL).bind(event_name).fetch_all(pool).await?
        }
    };
    rows.into_iter().map(|row| super::decode_row!(row)).collect()
}

pub(super) async fn list_all(pool: &MySqlPool, owner: Option<&str>) -> Result<Vec<RawRow>, sqlx::Error> {
    let rows = match owner {
        Some(owner) => {
            const SQL: &str = select!("WHERE owner_id = ? ORDER BY id");
            sqlx::query(SQL).bind(owner).fetch_all(pool).await?
        }
        None => {
            const SQL: &str = select!("ORDER BY id");
            sqlx::query(SQL).fetch_all(pool).await?
        }
    };
    rows.into_iter().map(|row| super::decode_row!(row)).collect()
}

/// `rows_affected` counts matched rows, changed or not: sqlx connects with
/// `CLIENT_FOUND_ROWS`, so disabling twice is `true` twice.
pub(super) async fn set_disabled(
    pool: &MySqlPool,
    id: &str,
    disabled: Option<&DisabledRow>,
) -> Result<bool, sqlx::Error> {
    let done =
        match disabled {
            Some(disabled) => {
                sqlx::query("UPDATE webhook_subscriptions SET disabled_at = ?, disabled_reason = ? WHERE id = ?")
                    .bind(disabled.at)
                    .bind(&disabled.reason)
                    .bind(id)
                    .execute(pool)
                    .await?
            }
            None => sqlx::query(
                "UPDATE webhook_subscriptions SET disabled_at = NULL, disabled_reason = NULL, consecutive_failures = 0,
                 failing_since = NULL, last_success = NULL, given_up = 0 WHERE id = ?",
            )
            .bind(id)
            .execute(pool)
            .await?,
        };
    Ok(done.rows_affected() > 0)
}

pub(super) async fn record_health(pool: &MySqlPool, id: &str, health: &HealthRow) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_subscriptions SET consecutive_failures = ?, failing_since = ?, last_success = ?, given_up = ?
         WHERE id = ?",
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

pub(super) async fn update(pool: &MySqlPool, id: &str, update: SubscriptionUpdate) -> Result<bool, Failure> {
    const SQL: &str = select!("WHERE id = ? FOR UPDATE");
    let mut tx = pool.begin().await?;
    let Some(row) = sqlx::query(SQL).bind(id).fetch_optional(&mut *tx).await? else {
        return Ok(false);
    };
    let changed: ChangedRow = apply_update(super::decode_row!(row)?, update)?;
    sqlx::query(
        "UPDATE webhook_subscriptions SET target_url = ?, auth_type = ?, auth_value = ?, metadata = ?,
         owner_id = ?, secrets = ?, updated_at = ? WHERE id = ?",
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
