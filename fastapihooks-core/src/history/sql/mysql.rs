//! MySQL and MariaDB: an `AUTO_INCREMENT` id, `DATETIME(6)` times (UTC),
//! `VARCHAR(512)` ids and owners (indexed), binary collation.

use sqlx::mysql::{MySqlArguments, MySqlPool};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, MySql};

use super::{Arg, dialect_ops};

fn schema(t: &str) -> [String; 1] {
    // The indexes are declared in the table: MySQL has no `CREATE INDEX IF NOT EXISTS`.
    [format!(
        "CREATE TABLE IF NOT EXISTS {t} (
            id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            event_id VARCHAR(512) NOT NULL,
            event_name TEXT NOT NULL,
            subscription_id VARCHAR(512) NULL,
            owner_id VARCHAR(512) NULL,
            target_url TEXT NOT NULL,
            attempt BIGINT NOT NULL,
            started_at DATETIME(6) NOT NULL,
            duration_ms BIGINT NOT NULL,
            outcome VARCHAR(16) NOT NULL,
            status INT NULL,
            error_kind TEXT NULL,
            error_message MEDIUMTEXT NULL,
            response_retry_after TEXT NULL,
            response_content_type TEXT NULL,
            response_body MEDIUMTEXT NOT NULL,
            response_body_truncated BOOLEAN NOT NULL,
            INDEX {t}_event_id (event_id, id),
            INDEX {t}_subscription_id (subscription_id, id),
            INDEX {t}_owner_id (owner_id, id),
            INDEX {t}_started_at (started_at)
        ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
    )]
}

pub(super) async fn init(pool: &MySqlPool, table: &str) -> Result<(), sqlx::Error> {
    for statement in schema(table) {
        sqlx::query(AssertSqlSafe(statement)).execute(pool).await?;
    }
    Ok(())
}

fn bind(q: Query<'static, MySql, MySqlArguments>, arg: Arg<'_>) -> Query<'static, MySql, MySqlArguments> {
    match arg {
        Arg::Text(s) => q.bind(s),
        Arg::OptText(s) => q.bind(s),
        Arg::Int(n) => q.bind(n),
        Arg::OptInt(n) => q.bind(n),
        Arg::Bool(b) => q.bind(b),
        // As `DATETIME` (years 1000 to 9999): sqlx sends a `DateTime<Utc>`
        // as a `TIMESTAMP`, whose range ends in 1970 and 2038.
        Arg::Time(t) => q.bind(t.naive_utc()),
    }
}

fn decode(row: sqlx::mysql::MySqlRow) -> Result<super::RawAttempt, sqlx::Error> {
    super::decode_row!(row, status: i32, started_at: chrono::DateTime<chrono::Utc>)
}

dialect_ops!(MySql, MySqlPool, "BEGIN", bind);
