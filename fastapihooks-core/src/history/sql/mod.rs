//! [`SqlAttemptLog`]: attempt records in PostgreSQL, MySQL / MariaDB or
//! SQLite, in one table (`webhook_attempts` by default) that
//! [`SqlAttemptLog::init`] creates (idempotent: run it at start-up).
//!
//! | column | PostgreSQL | MySQL / MariaDB | SQLite |
//! |---|---|---|---|
//! | `id` (the record id and cursor) | `BIGINT` identity | `BIGINT AUTO_INCREMENT` | `INTEGER PRIMARY KEY AUTOINCREMENT` |
//! | `event_id`, `subscription_id`, `owner_id` | `TEXT` | `VARCHAR(512)` | `TEXT` |
//! | `event_name`, `target_url`, `error_kind` | `TEXT` | `TEXT` | `TEXT` |
//! | `attempt`, `duration_ms` | `BIGINT` | `BIGINT` | `INTEGER` |
//! | `started_at` | `TIMESTAMPTZ` | `DATETIME(6)` (UTC) | `INTEGER` (µs since 1970) |
//! | `outcome` (`delivered`, `retrying`, `given_up`) | `TEXT` | `VARCHAR(16)` | `TEXT` |
//! | `status` | `INTEGER NULL` | `INT NULL` | `INTEGER NULL` |
//! | `error_message`, `response_body` | `TEXT` | `MEDIUMTEXT` | `TEXT` |
//! | `response_retry_after`, `response_content_type` | `TEXT NULL` | `TEXT NULL` | `TEXT NULL` |
//! | `response_body_truncated` | `BOOLEAN` | `BOOLEAN` | `INTEGER` (0, 1) |
//!
//! Indexes, one per query: `{table}_event_id (event_id, id)`,
//! `{table}_subscription_id (subscription_id, id)`, `{table}_owner_id
//! (owner_id, id)` (a filter, then newest first), and `{table}_started_at
//! (started_at)` (pruning by age).
//!
//! Every statement is bounded: a query reads at most a page and one more
//! row, along an index; pruning deletes at most `batch_size` rows per
//! statement, found on an index (`started_at` for age, the primary key for
//! count), so it never scans the table however large it grew.

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use super::{AttemptLog, AttemptLogError, AttemptOutcome, AttemptPage, AttemptQuery, AttemptRecord, Retention};
use crate::store::sql::{Dialect, Pool, SqlConnectError, SqlError, SqlStore, SqlStoreBuilder};

/// The table of [`SqlAttemptLog::connect`] and [`SqlAttemptLog::from_store`].
pub const DEFAULT_TABLE: &str = "webhook_attempts";

/// The longest table name accepted: its index names (`{table}_subscription_id`)
/// must stay under PostgreSQL's 63 bytes.
pub const MAX_TABLE_NAME: usize = 40;

/// The longest `event_id`, `subscription_id` and `owner_id` MySQL keeps
/// (indexed `VARCHAR` columns), in characters. Longer values are refused
/// with [`AttemptLogError::Invalid`] before anything is written.
pub const MYSQL_MAX_ID_CHARS: usize = 512;

/// The columns of a row after `id`, in the order every statement uses.
const COLUMNS: &str = "event_id, event_name, subscription_id, owner_id, target_url, attempt, started_at, \
     duration_ms, outcome, status, error_kind, error_message, response_retry_after, response_content_type, \
     response_body, response_body_truncated";
/// How many values a row binds.
const PER_ROW: usize = 16;
/// Rows per `INSERT`: 8,000 parameters, under SQLite's 32,766 and the
/// 65,535 of PostgreSQL and MySQL.
const ROWS_PER_INSERT: usize = 500;
/// Text per `INSERT`, about: well under MySQL's smallest default
/// `max_allowed_packet` (4 MiB).
const BYTES_PER_INSERT: usize = 2 << 20;

/// Why a [`SqlAttemptLog`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlAttemptLogError {
    /// The table name is not 1 to [`MAX_TABLE_NAME`] characters from
    /// `a-z 0-9 _`, starting with a letter or `_`.
    #[error(
        "invalid attempt table name {0:?}: expected 1 to {MAX_TABLE_NAME} characters from `a-z 0-9 _`, not starting with a digit"
    )]
    InvalidTable(String),
    /// The database could not be connected to (see [`SqlConnectError`]).
    #[error(transparent)]
    Connect(#[from] SqlConnectError),
}

/// Options of a [`SqlAttemptLog`], from [`SqlAttemptLog::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SqlAttemptLogBuilder {
    store: SqlStoreBuilder,
    table: String,
}

impl SqlAttemptLogBuilder {
    /// The table (default [`DEFAULT_TABLE`]): 1 to [`MAX_TABLE_NAME`]
    /// characters from `a-z 0-9 _`. Its indexes are named after it.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// The most connections the pool opens (default 10).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.store = self.store.max_connections(n);
        self
    }

    /// How long an operation waits for a connection before it fails with
    /// [`AttemptLogError::Unavailable`] (default 5 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.store = self.store.acquire_timeout(timeout);
        self
    }

    /// Connects now: fails if the database cannot be reached.
    ///
    /// # Errors
    /// A bad table name or URL, a dialect whose feature is off, or an
    /// unreachable database.
    pub async fn connect(self) -> Result<SqlAttemptLog, SqlAttemptLogError> {
        let statements = Statements::new(&self.table)?;
        let store = self.store.connect().await?;
        Ok(SqlAttemptLog::new(&store, statements))
    }

    /// Connects on first use: never fails because the database is down.
    ///
    /// # Errors
    /// A bad table name or URL, or a dialect whose feature is off.
    pub fn connect_lazy(self) -> Result<SqlAttemptLog, SqlAttemptLogError> {
        let statements = Statements::new(&self.table)?;
        let store = self.store.connect_lazy()?;
        Ok(SqlAttemptLog::new(&store, statements))
    }
}

/// An [`AttemptLog`] on PostgreSQL, MySQL / MariaDB or SQLite, chosen by
/// the connection URL; see the [module docs](self) for the table.
///
/// Cheap to clone: clones share the connection pool (and a log made with
/// [`SqlAttemptLog::from_store`] shares the store's).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use fastapihooks_core::history::sql::SqlAttemptLog;
/// use fastapihooks_core::history::{AttemptLog, AttemptQuery};
/// use fastapihooks_core::store::sql::SqlStore;
///
/// let store = SqlStore::connect("postgres://app:secret@db/hooks").await?;
/// let log = SqlAttemptLog::from_store(&store);
/// log.init().await?; // creates the table and its indexes if missing
/// let page = log.query(&AttemptQuery::new().owner("tenant-1").limit(20)).await?;
/// for record in &page.records {
///     println!("{} {} {:?}", record.id, record.outcome, record.status);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqlAttemptLog {
    pool: Pool,
    dialect: Dialect,
    sql: Arc<Statements>,
}

impl fmt::Debug for SqlAttemptLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlAttemptLog")
            .field("dialect", &self.dialect)
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

impl SqlAttemptLog {
    /// Options for a log at `url` (the URLs of [`SqlStore::builder`]).
    pub fn builder(url: impl Into<String>) -> SqlAttemptLogBuilder {
        let mut store = SqlStore::builder(url);
        // Records, thousands a second: on SQLite, commits that do not wait
        // for the disk (see docs/benchmarks.md, "Delivery with the attempt log").
        store.relaxed_sync = true;
        SqlAttemptLogBuilder { store, table: DEFAULT_TABLE.to_owned() }
    }

    /// Connects to `url` with the default options. See [`SqlAttemptLog::builder`].
    ///
    /// # Errors
    /// A bad URL, a dialect whose feature is off, or an unreachable database.
    pub async fn connect(url: impl Into<String>) -> Result<Self, SqlAttemptLogError> {
        Self::builder(url).connect().await
    }

    /// A log in the database of `store`, on its connection pool, in table
    /// [`DEFAULT_TABLE`].
    pub fn from_store(store: &SqlStore) -> Self {
        let statements = Statements::new(DEFAULT_TABLE).unwrap_or_else(|_| unreachable!("the default name is valid"));
        Self::new(store, statements)
    }

    fn new(store: &SqlStore, statements: Statements) -> Self {
        Self { pool: store.pool().clone(), dialect: store.dialect(), sql: Arc::new(statements) }
    }

    /// The same log in another table of the same database (same pool).
    ///
    /// # Errors
    /// [`SqlAttemptLogError::InvalidTable`].
    pub fn with_table(self, name: &str) -> Result<Self, SqlAttemptLogError> {
        Ok(Self { sql: Arc::new(Statements::new(name)?), ..self })
    }

    /// The database this log talks to.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The table.
    pub fn table(&self) -> &str {
        &self.sql.table
    }

    /// Creates the table and its four indexes if they are missing. Idempotent.
    ///
    /// # Errors
    /// [`AttemptLogError::Unavailable`] when the database cannot be reached
    /// or refuses the statements.
    pub async fn init(&self) -> Result<(), AttemptLogError> {
        let table = &self.sql.table;
        on_pool!(self, "init", |m, pool| m::init(pool, table).await)
    }

    /// Deletes rows in `stmt`'s batch; how many.
    async fn delete(&self, op: &'static str, stmt: Stmt<'_>) -> Result<u64, AttemptLogError> {
        on_pool!(self, op, |m, pool| m::execute(pool, stmt).await)
    }
}

/// The statements that name the table, made once.
#[derive(Debug)]
struct Statements {
    table: String,
    /// `SELECT id, <COLUMNS> FROM t`.
    select: String,
    /// `INSERT INTO t (<COLUMNS>) VALUES `.
    insert: String,
}

impl Statements {
    fn new(table: &str) -> Result<Self, SqlAttemptLogError> {
        let valid = !table.is_empty()
            && table.len() <= MAX_TABLE_NAME
            && !table.starts_with(|c: char| c.is_ascii_digit())
            && table.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(SqlAttemptLogError::InvalidTable(table.to_owned()));
        }
        Ok(Self {
            table: table.to_owned(),
            select: format!("SELECT id, {COLUMNS} FROM {table}"),
            insert: format!("INSERT INTO {table} ({COLUMNS}) VALUES "),
        })
    }
}

/// Runs `$body` with `$pool` bound to the dialect's pool and `$m` to its
/// module, mapping driver errors to [`AttemptLogError`].
macro_rules! on_pool {
    ($self:ident, $op:expr, |$m:ident, $pool:ident| $body:expr) => {{
        let result: Result<_, sqlx::Error> = match &$self.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres($pool) => {
                use postgres as $m;
                $body
            }
            #[cfg(feature = "mysql")]
            Pool::MySql($pool) => {
                use mysql as $m;
                $body
            }
            #[cfg(feature = "sqlite")]
            Pool::Sqlite($pool) => {
                use sqlite as $m;
                $body
            }
        };
        result.map_err(|e| log_error($self.dialect, $op, e))
    }};
}
use on_pool;

#[async_trait]
impl AttemptLog for SqlAttemptLog {
    /// Writes the batch in multi-row `INSERT`s of at most 500 rows (and
    /// about 2 MiB), in one transaction when there are several.
    async fn record(&self, batch: &[AttemptRecord]) -> Result<(), AttemptLogError> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.dialect == Dialect::MySql {
            for record in batch {
                mysql_fits(record)?;
            }
        }
        let mut inserts = Vec::new();
        let mut rest = batch;
        while !rest.is_empty() {
            let mut stmt = Stmt::new(self.dialect, &self.sql.insert);
            let mut bytes = 0;
            let mut rows = 0;
            for record in rest {
                if rows == ROWS_PER_INSERT || (rows > 0 && bytes + text_len(record) > BYTES_PER_INSERT) {
                    break;
                }
                bytes += text_len(record);
                stmt.push(if rows == 0 { "(" } else { ", (" });
                for (n, arg) in row_args(record, self.dialect).into_iter().enumerate() {
                    if n > 0 {
                        stmt.push(", ");
                    }
                    stmt.arg(arg);
                }
                stmt.push(")");
                rows += 1;
            }
            inserts.push(stmt);
            rest = &rest[rows..];
        }
        on_pool!(self, "record", |m, pool| m::execute_all(pool, inserts).await)
    }

    async fn query(&self, query: &AttemptQuery) -> Result<AttemptPage, AttemptLogError> {
        let before = match &query.cursor {
            None => None,
            Some(cursor) => Some(parse_cursor(cursor)?),
        };
        let size = query.page_size();
        let mut stmt = Stmt::new(self.dialect, &self.sql.select);
        if let Some(id) = &query.event_id {
            stmt.filter("event_id = ").arg(Arg::Text(id));
        }
        if let Some(id) = &query.subscription_id {
            stmt.filter("subscription_id = ").arg(Arg::Text(id));
        }
        if let Some(id) = &query.owner_id {
            stmt.filter("owner_id = ").arg(Arg::Text(id));
        }
        if let Some(t) = query.since {
            stmt.filter("started_at >= ").arg(Arg::Time(storable_time(self.dialect, t)));
        }
        if let Some(t) = query.until {
            stmt.filter("started_at < ").arg(Arg::Time(storable_time(self.dialect, t)));
        }
        if let Some(outcome) = query.outcome {
            stmt.filter("outcome = ").arg(Arg::Text(outcome.as_str()));
        }
        if let Some(id) = before {
            stmt.filter("id < ").arg(Arg::Int(id));
        }
        stmt.push(" ORDER BY id DESC LIMIT ").arg(Arg::Int(size as i64 + 1));
        let mut rows = on_pool!(self, "query", |m, pool| m::fetch(pool, stmt).await)?;
        let more = rows.len() > size;
        rows.truncate(size);
        let next = if more { rows.last().map(|r| r.id.to_string()) } else { None };
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let record = row.into_record()?;
            // The filter again, exactly: MySQL's collations ignore trailing
            // spaces, so `owner_id = 'acme'` also finds 'acme '.
            if query.matches(&record) {
                records.push(record);
            }
        }
        Ok(AttemptPage::new(records, next))
    }

    async fn prune(&self, retention: &Retention, now: DateTime<Utc>) -> Result<u64, AttemptLogError> {
        let budget = retention.batch_size.max(1);
        let mut deleted = 0;
        if let Some(cutoff) = retention.cutoff(now) {
            deleted += self.delete("prune by age", self.older_than(cutoff, budget)).await?;
        }
        let left = budget.saturating_sub(usize::try_from(deleted).unwrap_or(usize::MAX));
        if let Some(max) = retention.max_count
            && left > 0
        {
            // The newest row beyond the `max` newest: an index-only walk
            // down the primary key; everything at or below it goes.
            let mut stmt = Stmt::new(self.dialect, "SELECT id FROM ");
            stmt.push(&self.sql.table).push(" ORDER BY id DESC LIMIT 1 OFFSET ");
            stmt.arg(Arg::Int(i64::try_from(max).unwrap_or(i64::MAX)));
            let threshold = on_pool!(self, "prune by count", |m, pool| m::fetch_id(pool, stmt).await)?;
            if let Some(threshold) = threshold {
                deleted += self.delete("prune by count", self.up_to(threshold, left)).await?;
            }
        }
        Ok(deleted)
    }
}

impl SqlAttemptLog {
    /// Deletes at most `n` rows started before `cutoff`, the oldest first,
    /// found on the `started_at` index.
    fn older_than(&self, cutoff: DateTime<Utc>, n: usize) -> Stmt<'static> {
        self.bounded_delete("started_at < ", Arg::Time(storable_time(self.dialect, cutoff)), "started_at", n)
    }

    /// Deletes at most `n` rows with ids up to `id`, the oldest first, found
    /// on the primary key.
    fn up_to(&self, id: i64, n: usize) -> Stmt<'static> {
        self.bounded_delete("id <= ", Arg::Int(id), "id", n)
    }

    fn bounded_delete(&self, cond: &str, value: Arg<'static>, order: &str, n: usize) -> Stmt<'static> {
        let table = &self.sql.table;
        let n = Arg::Int(i64::try_from(n).unwrap_or(i64::MAX));
        let mut stmt = Stmt::new(self.dialect, "DELETE FROM ");
        stmt.push(table);
        match self.dialect {
            // MySQL refuses `LIMIT` in an `IN (subquery)`, and deletes in
            // index order with `ORDER BY .. LIMIT` instead.
            Dialect::MySql => {
                stmt.push(" WHERE ").push(cond).arg(value);
                stmt.push(" ORDER BY ").push(order).push(" LIMIT ").arg(n);
            }
            // An array made once (an init plan), then primary-key look-ups:
            // the plan cannot turn into a join that scans the table.
            Dialect::Postgres => {
                stmt.push(" WHERE id = ANY(ARRAY(SELECT id FROM ").push(table).push(" WHERE ").push(cond).arg(value);
                stmt.push(" ORDER BY ").push(order).push(" LIMIT ").arg(n).push("))");
            }
            _ => {
                stmt.push(" WHERE id IN (SELECT id FROM ").push(table).push(" WHERE ").push(cond).arg(value);
                stmt.push(" ORDER BY ").push(order).push(" LIMIT ").arg(n).push(")");
            }
        }
        stmt
    }
}

/// A cursor: the id of the last record of the previous page.
fn parse_cursor(cursor: &str) -> Result<i64, AttemptLogError> {
    let invalid = || AttemptLogError::InvalidQuery("unknown cursor: expected the `next` of a page".into());
    if cursor.is_empty() || cursor.len() > 19 || !cursor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    cursor.parse::<i64>().map_err(|_| invalid())
}

/// MySQL keeps ids and owners in `VARCHAR(512)` columns (to index them).
fn mysql_fits(record: &AttemptRecord) -> Result<(), AttemptLogError> {
    for (name, value) in [
        ("event_id", Some(&record.event_id)),
        ("subscription_id", record.subscription_id.as_ref()),
        ("owner_id", record.owner_id.as_ref()),
    ] {
        if value.is_some_and(|v| v.chars().count() > MYSQL_MAX_ID_CHARS) {
            return Err(AttemptLogError::Invalid(format!(
                "{name} is over {MYSQL_MAX_ID_CHARS} characters, the most the MySQL attempt table keeps"
            )));
        }
    }
    Ok(())
}

/// About how many bytes a row sends.
fn text_len(r: &AttemptRecord) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    r.event_id.len()
        + r.event_name.len()
        + r.target_url.len()
        + opt(&r.subscription_id)
        + opt(&r.owner_id)
        + opt(&r.error_kind)
        + opt(&r.error)
        + opt(&r.response.retry_after)
        + opt(&r.response.content_type)
        + r.response.body.len()
        + 64
}

/// The values of a row, in [`COLUMNS`] order.
fn row_args(r: &AttemptRecord, dialect: Dialect) -> [Arg<'_>; PER_ROW] {
    [
        Arg::Text(&r.event_id),
        Arg::Text(&r.event_name),
        Arg::OptText(r.subscription_id.as_deref()),
        Arg::OptText(r.owner_id.as_deref()),
        Arg::Text(&r.target_url),
        Arg::Int(i64::from(r.attempt)),
        Arg::Time(storable_time(dialect, r.started_at)),
        Arg::Int(i64::try_from(r.duration_ms).unwrap_or(i64::MAX)),
        Arg::Text(r.outcome.as_str()),
        Arg::OptInt(r.status.map(i64::from)),
        Arg::OptText(r.error_kind.as_deref()),
        Arg::OptText(r.error.as_deref()),
        Arg::OptText(r.response.retry_after.as_deref()),
        Arg::OptText(r.response.content_type.as_deref()),
        Arg::Text(&r.response.body),
        Arg::Bool(r.response.body_truncated),
    ]
}

/// A time the dialect can store: MySQL's `DATETIME` spans the years 1000
/// to 9999, PostgreSQL's from 4713 BC (kept to the same range, which no
/// real attempt leaves); SQLite's microseconds span any `DateTime`.
fn storable_time(dialect: Dialect, t: DateTime<Utc>) -> DateTime<Utc> {
    if dialect == Dialect::Sqlite {
        return t;
    }
    let bound = |y, m, d, end: bool| {
        let day = NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default();
        let time = if end { day.and_hms_micro_opt(23, 59, 59, 999_999) } else { day.and_hms_opt(0, 0, 0) };
        time.unwrap_or_default().and_utc()
    };
    t.clamp(bound(1000, 1, 1, false), bound(9999, 12, 31, true))
}

/// A value to bind.
#[derive(Debug)]
enum Arg<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
    Time(DateTime<Utc>),
}

/// A statement: its text, with the dialect's placeholders, and its values.
#[derive(Debug)]
struct Stmt<'a> {
    sql: String,
    args: Vec<Arg<'a>>,
    /// `$1, $2, ..` (PostgreSQL) rather than `?` (MySQL, SQLite: SQLite
    /// finds a named parameter's name by walking a list, which made binding
    /// a 500-row `INSERT`'s 8,000 `$n` quadratic, 4 times slower than `?`).
    numbered: bool,
    has_where: bool,
}

impl<'a> Stmt<'a> {
    fn new(dialect: Dialect, start: &str) -> Self {
        let mut sql = String::with_capacity(256);
        sql.push_str(start);
        Self { sql, args: Vec::new(), numbered: dialect == Dialect::Postgres, has_where: false }
    }

    /// Appends SQL text: only ever text of this module and the checked
    /// table name, never a value.
    fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends `WHERE cond` or `AND cond`.
    fn filter(&mut self, cond: &str) -> &mut Self {
        self.sql.push_str(if self.has_where { " AND " } else { " WHERE " });
        self.has_where = true;
        self.push(cond)
    }

    /// Appends a placeholder for `arg`.
    fn arg(&mut self, arg: Arg<'a>) -> &mut Self {
        self.args.push(arg);
        if self.numbered {
            let _ = write!(self.sql, "${}", self.args.len());
        } else {
            self.sql.push('?');
        }
        self
    }
}

/// Builds the `sqlx` query of a [`Stmt`] with the dialect's `bind`, and the
/// operations every dialect runs the same way.
macro_rules! dialect_ops {
    ($db:ty, $pool:ty, $begin:literal, $bind:path) => {
        pub(super) fn query(
            stmt: super::Stmt<'_>,
        ) -> sqlx::query::Query<'static, $db, <$db as sqlx::Database>::Arguments> {
            // The text is this module's and the validated table name; values are bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(stmt.sql));
            for arg in stmt.args {
                q = $bind(q, arg);
            }
            q
        }

        /// Runs `stmt`; the rows it changed.
        pub(super) async fn execute(pool: &$pool, stmt: super::Stmt<'_>) -> Result<u64, sqlx::Error> {
            Ok(query(stmt).execute(pool).await?.rows_affected())
        }

        /// Runs every statement, in one transaction when there are several.
        pub(super) async fn execute_all(pool: &$pool, stmts: Vec<super::Stmt<'_>>) -> Result<(), sqlx::Error> {
            if stmts.len() == 1 {
                for stmt in stmts {
                    query(stmt).execute(pool).await?;
                }
                return Ok(());
            }
            let mut tx = pool.begin_with($begin).await?;
            for stmt in stmts {
                query(stmt).execute(&mut *tx).await?;
            }
            tx.commit().await
        }

        /// The rows of a `SELECT id, <COLUMNS>`.
        pub(super) async fn fetch(pool: &$pool, stmt: super::Stmt<'_>) -> Result<Vec<super::RawAttempt>, sqlx::Error> {
            query(stmt).fetch_all(pool).await?.into_iter().map(decode).collect()
        }

        /// The id a `SELECT id` found, if any.
        pub(super) async fn fetch_id(pool: &$pool, stmt: super::Stmt<'_>) -> Result<Option<i64>, sqlx::Error> {
            use sqlx::Row as _;
            query(stmt).fetch_optional(pool).await?.map(|row| row.try_get::<i64, _>(0)).transpose()
        }
    };
}
use dialect_ops;

/// A row as read, before it is checked.
struct RawAttempt {
    id: i64,
    event_id: String,
    event_name: String,
    subscription_id: Option<String>,
    owner_id: Option<String>,
    target_url: String,
    attempt: i64,
    started_at: RawTime,
    duration_ms: i64,
    outcome: String,
    status: Option<i64>,
    error_kind: Option<String>,
    error: Option<String>,
    retry_after: Option<String>,
    content_type: Option<String>,
    body: String,
    body_truncated: bool,
}

/// `started_at` as the dialect stores it.
enum RawTime {
    At(DateTime<Utc>),
    /// Microseconds since 1970 (SQLite).
    Micros(i64),
}

impl From<DateTime<Utc>> for RawTime {
    fn from(t: DateTime<Utc>) -> Self {
        Self::At(t)
    }
}

impl From<i64> for RawTime {
    fn from(us: i64) -> Self {
        Self::Micros(us)
    }
}

/// Decodes a row of `SELECT id, <COLUMNS>`; `$status` and `$started` are
/// the dialect's types for those columns.
macro_rules! decode_row {
    ($row:expr, status: $status:ty, started_at: $started:ty) => {{
        use sqlx::Row as _;
        let row = $row;
        Ok::<_, sqlx::Error>(super::RawAttempt {
            id: row.try_get(0)?,
            event_id: row.try_get(1)?,
            event_name: row.try_get(2)?,
            subscription_id: row.try_get(3)?,
            owner_id: row.try_get(4)?,
            target_url: row.try_get(5)?,
            attempt: row.try_get(6)?,
            started_at: super::RawTime::from(row.try_get::<$started, _>(7)?),
            duration_ms: row.try_get(8)?,
            outcome: row.try_get(9)?,
            status: row.try_get::<Option<$status>, _>(10)?.map(i64::from),
            error_kind: row.try_get(11)?,
            error: row.try_get(12)?,
            retry_after: row.try_get(13)?,
            content_type: row.try_get(14)?,
            body: row.try_get(15)?,
            body_truncated: row.try_get(16)?,
        })
    }};
}
use decode_row;

impl RawAttempt {
    /// The record, if every value is one a record can hold: the database is
    /// not trusted to hold only what this log wrote.
    fn into_record(self) -> Result<AttemptRecord, AttemptLogError> {
        let id = self.id;
        let corrupt = |what: &str| AttemptLogError::Corrupt(format!("attempt {id}: {what}"));
        if id <= 0 {
            return Err(corrupt("its id is not positive"));
        }
        let started_at = match self.started_at {
            RawTime::At(t) => t,
            RawTime::Micros(us) => {
                DateTime::from_timestamp_micros(us).ok_or_else(|| corrupt("started_at out of range"))?
            }
        };
        Ok(AttemptRecord {
            id: id.to_string(),
            event_id: self.event_id,
            event_name: self.event_name,
            subscription_id: self.subscription_id,
            owner_id: self.owner_id,
            target_url: self.target_url,
            attempt: u32::try_from(self.attempt).map_err(|_| corrupt("attempt out of range"))?,
            started_at,
            duration_ms: u64::try_from(self.duration_ms).map_err(|_| corrupt("duration_ms is negative"))?,
            outcome: AttemptOutcome::from_name(&self.outcome).ok_or_else(|| corrupt("unknown outcome"))?,
            status: self.status.map(|s| u16::try_from(s).map_err(|_| corrupt("status out of range"))).transpose()?,
            error_kind: self.error_kind,
            error: self.error,
            response: super::ResponseDetails {
                retry_after: self.retry_after,
                content_type: self.content_type,
                body: self.body,
                body_truncated: self.body_truncated,
            },
        })
    }
}

/// A driver error as an [`AttemptLogError`]: `Corrupt` when a value could
/// not be decoded, else `Unavailable` (retryable).
fn log_error(dialect: Dialect, op: &'static str, source: sqlx::Error) -> AttemptLogError {
    match SqlError::classify(dialect, "attempt log ", op, source, " (did `SqlAttemptLog::init` run?)") {
        (err, true) => AttemptLogError::Corrupt(err.to_string()),
        (err, false) => AttemptLogError::unavailable(err),
    }
}
