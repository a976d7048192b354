//! SQLite: an `AUTOINCREMENT` id (never reused, even after the newest row
//! was deleted: cursors stay valid), `started_at` as microseconds since
//! 1970 (compact, and ordered like the times); writes in `BEGIN IMMEDIATE`.

use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqlitePool};
use sqlx::{AssertSqlSafe, Sqlite};

use super::{Arg, dialect_ops};

fn schema(t: &str) -> [String; 5] {
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                event_id TEXT NOT NULL,
                event_name TEXT NOT NULL,
                subscription_id TEXT NULL,
                owner_id TEXT NULL,
                target_url TEXT NOT NULL,
                attempt INTEGER NOT NULL,
                started_at INTEGER NOT NULL,
                duration_ms INTEGER NOT NULL,
                outcome TEXT NOT NULL,
                status INTEGER NULL,
                error_kind TEXT NULL,
                error_message TEXT NULL,
                response_retry_after TEXT NULL,
                response_content_type TEXT NULL,
                response_body TEXT NOT NULL DEFAULT '',
                response_body_truncated INTEGER NOT NULL DEFAULT 0
            )"
        ),
        format!("CREATE INDEX IF NOT EXISTS {t}_event_id ON {t} (event_id, id)"),
        format!("CREATE INDEX IF NOT EXISTS {t}_subscription_id ON {t} (subscription_id, id)"),
        format!("CREATE INDEX IF NOT EXISTS {t}_owner_id ON {t} (owner_id, id)"),
        format!("CREATE INDEX IF NOT EXISTS {t}_started_at ON {t} (started_at)"),
    ]
}

pub(super) async fn init(pool: &SqlitePool, table: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for statement in schema(table) {
        sqlx::query(AssertSqlSafe(statement)).execute(&mut *tx).await?;
    }
    tx.commit().await
}

fn bind(q: Query<'static, Sqlite, SqliteArguments>, arg: Arg<'_>) -> Query<'static, Sqlite, SqliteArguments> {
    match arg {
        Arg::Text(s) => q.bind(s),
        Arg::OptText(s) => q.bind(s),
        Arg::Int(n) => q.bind(n),
        Arg::OptInt(n) => q.bind(n),
        Arg::Bool(b) => q.bind(b),
        Arg::Time(t) => q.bind(t.timestamp_micros()),
    }
}

fn decode(row: sqlx::sqlite::SqliteRow) -> Result<super::RawAttempt, sqlx::Error> {
    super::decode_row!(row, status: i64, started_at: i64)
}

dialect_ops!(Sqlite, SqlitePool, "BEGIN IMMEDIATE", bind);
