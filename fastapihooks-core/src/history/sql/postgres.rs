//! PostgreSQL: an identity `BIGINT` id, `TIMESTAMPTZ` times; text cannot
//! hold NUL, so a NUL in a value is stored as U+FFFD.

use std::borrow::Cow;

use sqlx::postgres::{PgArguments, PgPool};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Postgres};

use super::{Arg, dialect_ops};

fn schema(t: &str) -> [String; 5] {
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                event_id TEXT NOT NULL,
                event_name TEXT NOT NULL,
                subscription_id TEXT NULL,
                owner_id TEXT NULL,
                target_url TEXT NOT NULL,
                attempt BIGINT NOT NULL,
                started_at TIMESTAMPTZ NOT NULL,
                duration_ms BIGINT NOT NULL,
                outcome TEXT NOT NULL,
                status INTEGER NULL,
                error_kind TEXT NULL,
                error_message TEXT NULL,
                response_retry_after TEXT NULL,
                response_content_type TEXT NULL,
                response_body TEXT NOT NULL DEFAULT '',
                response_body_truncated BOOLEAN NOT NULL DEFAULT FALSE
            )"
        ),
        format!("CREATE INDEX IF NOT EXISTS {t}_event_id ON {t} (event_id, id)"),
        format!("CREATE INDEX IF NOT EXISTS {t}_subscription_id ON {t} (subscription_id, id)"),
        format!("CREATE INDEX IF NOT EXISTS {t}_owner_id ON {t} (owner_id, id)"),
        format!("CREATE INDEX IF NOT EXISTS {t}_started_at ON {t} (started_at)"),
    ]
}

pub(super) async fn init(pool: &PgPool, table: &str) -> Result<(), sqlx::Error> {
    // Two processes running `init` at once can race on `IF NOT EXISTS`
    // (a unique violation on the catalog): serialize them.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7293640118114)").execute(&mut *tx).await?;
    for statement in schema(table) {
        sqlx::query(AssertSqlSafe(statement)).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// `s`, with any NUL replaced by U+FFFD.
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') { Cow::Owned(s.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(s) }
}

fn bind(q: Query<'static, Postgres, PgArguments>, arg: Arg<'_>) -> Query<'static, Postgres, PgArguments> {
    match arg {
        Arg::Text(s) => q.bind(text(s)),
        Arg::OptText(s) => q.bind(s.map(text)),
        Arg::Int(n) => q.bind(n),
        Arg::OptInt(n) => q.bind(n),
        Arg::Bool(b) => q.bind(b),
        Arg::Time(t) => q.bind(t),
    }
}

fn decode(row: sqlx::postgres::PgRow) -> Result<super::RawAttempt, sqlx::Error> {
    super::decode_row!(row, status: i32, started_at: chrono::DateTime<chrono::Utc>)
}

dialect_ops!(Postgres, PgPool, "BEGIN", bind);
