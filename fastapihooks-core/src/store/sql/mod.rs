//! [`SqlStore`]: subscriptions in PostgreSQL, MySQL / MariaDB or SQLite.
//!
//! One table, `webhook_subscriptions`, created by [`SqlStore::init`]
//! (idempotent: run it at start-up, as often as you like; it also adds the
//! columns of later versions to a table an earlier one created):
//!
//! | column | type | notes |
//! |---|---|---|
//! | `id` | text | primary key, `sub_` + UUIDv7 |
//! | `event_name` | text | |
//! | `target_url` | text | |
//! | `auth_type` | text | `none` or `bearer` |
//! | `auth_value` | text, null | the bearer token, in clear: protect the database |
//! | `metadata` | JSON (`JSONB`, `JSON`, `TEXT` on SQLite) | a JSON object |
//! | `owner_id` | text, null | the tenant; null receives every owner's events |
//! | `secrets` | text | the per-subscription signing secrets, as JSON |
//! | `created_at`, `updated_at` | timestamp (UTC) | microseconds; `updated_at` moves on [`Store::update`] only |
//! | `disabled_at` | timestamp, null | set while the subscription is disabled |
//! | `disabled_reason` | text, null | why; set exactly when `disabled_at` is |
//! | `consecutive_failures` | 64-bit integer, default 0 | [`EndpointHealth`]: failed attempts since the last success |
//! | `failing_since`, `last_success` | timestamp, null | the health's times |
//! | `given_up` | 64-bit integer, default 0 | deliveries given up since the last success |
//!
//! and an index on `(event_name, owner_id)` for the delivery-path look-up
//! ([`Store::subscriptions_for`]).
//!
//! The enabled state and the health are columns, not one JSON value: an
//! operator can ask SQL which subscriptions are disabled or failing, the
//! times are real timestamps like `created_at`, and a table of the previous
//! version gains them with plain defaults (enabled, healthy). Counts are
//! 64-bit (`BIGINT`, SQLite's `INTEGER`) so that every `u32` fits; a
//! negative or larger one, or a reason without a time (or the reverse), is
//! read back as [`StoreError::Corrupt`].
//!
//! Updates merge metadata atomically: the row is read and written in one
//! transaction that holds a lock on it (`SELECT ... FOR UPDATE` on
//! PostgreSQL and MySQL, `BEGIN IMMEDIATE` on SQLite), so concurrent partial
//! updates lose none of their keys.
//!
//! Errors: a database that cannot be reached, or that fails a query, gives
//! [`StoreError::Unavailable`] (retryable: the dispatcher retries the look-up,
//! then hands the event to `on_failure`); a row that cannot be read back
//! gives [`StoreError::Corrupt`].

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value};

use super::{Store, StoreError, new_subscription_id, validate_new};
use crate::health::{Disabled, EndpointHealth};
use crate::secret::SigningSecret;
use crate::subscription::{Auth, StoredWebhookSubscription, SubscriptionUpdate, WebhookSubscription};

/// The SQL database a [`SqlStore`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// PostgreSQL (`postgres://`, `postgresql://`), feature `postgres`.
    Postgres,
    /// MySQL or MariaDB (`mysql://`, `mariadb://`), feature `mysql`.
    MySql,
    /// SQLite (`sqlite://path`, `sqlite::memory:`), feature `sqlite`.
    Sqlite,
}

impl Dialect {
    /// The dialect of a connection URL, from its scheme.
    ///
    /// # Errors
    /// [`SqlConnectError::UnsupportedScheme`] for other schemes.
    pub fn from_url(url: &str) -> Result<Self, SqlConnectError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme).to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::MySql),
            "sqlite" => Ok(Self::Sqlite),
            _ => Err(SqlConnectError::UnsupportedScheme(scheme)),
        }
    }

    /// The cargo feature that compiles this dialect in.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
            Self::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
            Self::Sqlite => "sqlite",
        })
    }
}

/// Why a [`SqlStore`] could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlConnectError {
    /// The URL's scheme is not one of `postgres`, `postgresql`, `mysql`,
    /// `mariadb`, `sqlite`.
    #[error("unsupported database url scheme `{0}`: expected postgres://, mysql:// or sqlite://")]
    UnsupportedScheme(String),
    /// The dialect is known, but its cargo feature is off.
    #[error("{dialect} support is not compiled in: enable the `{}` feature of fastapihooks", dialect.feature())]
    FeatureDisabled {
        /// The URL's dialect.
        dialect: Dialect,
    },
    /// The URL does not parse as a connection URL of its dialect.
    #[error("invalid {dialect} connection url: {source}")]
    Url {
        /// The URL's dialect.
        dialect: Dialect,
        /// What the driver said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database could not be reached (eager connection only).
    #[error("could not connect to {dialect}: {source}")]
    Connect {
        /// The URL's dialect.
        dialect: Dialect,
        /// What the driver said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Options of a [`SqlStore`], from [`SqlStore::builder`].
#[derive(Clone)]
#[must_use]
pub struct SqlStoreBuilder {
    url: String,
    max_connections: u32,
    acquire_timeout: Duration,
    /// SQLite: commit without waiting for the disk (`synchronous = NORMAL`
    /// in WAL mode): what a record of deliveries, written by the thousand
    /// a second, needs, and subscriptions do not.
    pub(crate) relaxed_sync: bool,
}

impl fmt::Debug for SqlStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStoreBuilder")
            .field("url", &redact_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl SqlStoreBuilder {
    /// The most connections the pool opens (default 10; always 1 for an
    /// in-memory SQLite database).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long an operation waits for a connection before it fails with
    /// [`StoreError::Unavailable`] (default 5 s). This bounds how long a
    /// delivery-path look-up hangs while the database is down.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Connects now: fails if the database cannot be reached.
    ///
    /// # Errors
    /// A bad URL, a dialect whose feature is off, or an unreachable database.
    pub async fn connect(self) -> Result<SqlStore, SqlConnectError> {
        let dialect = Dialect::from_url(&self.url)?;
        let pool = Pool::open(dialect, &self).await?;
        Ok(SqlStore { pool, dialect })
    }

    /// Connects on first use: never fails because the database is down
    /// (operations then give [`StoreError::Unavailable`] until it is up).
    ///
    /// # Errors
    /// A bad URL or a dialect whose feature is off.
    pub fn connect_lazy(self) -> Result<SqlStore, SqlConnectError> {
        let dialect = Dialect::from_url(&self.url)?;
        let pool = Pool::open_lazy(dialect, &self)?;
        Ok(SqlStore { pool, dialect })
    }
}

/// A [`Store`] on PostgreSQL, MySQL / MariaDB or SQLite, chosen by the
/// connection URL. See the [module docs](self) for the schema.
///
/// Cheap to clone: clones share the connection pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use fastapihooks_core::store::sql::SqlStore;
/// use fastapihooks_core::{Store, WebhookSubscription};
///
/// let store = SqlStore::connect("sqlite://subscriptions.db").await?;
/// store.init().await?; // creates the table and index if missing
/// let id = store.add("order.created", WebhookSubscription::new("https://example.com/hooks")?).await?;
/// assert!(store.get(&id).await?.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqlStore {
    pool: Pool,
    dialect: Dialect,
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore").field("dialect", &self.dialect).finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Options for a store at `url`: `postgres://user:pass@host/db`,
    /// `mysql://user:pass@host/db`, `sqlite://path/to/file.db` (created if
    /// missing) or `sqlite::memory:`.
    pub fn builder(url: impl Into<String>) -> SqlStoreBuilder {
        SqlStoreBuilder {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            relaxed_sync: false,
        }
    }

    /// Connects to `url` with the default options. See [`SqlStore::builder`].
    ///
    /// # Errors
    /// A bad URL, a dialect whose feature is off, or an unreachable database.
    pub async fn connect(url: impl Into<String>) -> Result<Self, SqlConnectError> {
        Self::builder(url).connect().await
    }

    /// The database this store talks to.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Creates the `webhook_subscriptions` table and its `(event_name,
    /// owner_id)` index if they are missing, and adds the columns this
    /// version has to a table an earlier version created (the enabled state
    /// and the health: enabled and healthy by default). Idempotent, and
    /// safe to run from several processes at once.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached or
    /// refuses the statements.
    pub async fn init(&self) -> Result<(), StoreError> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => postgres::init(pool).await,
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => mysql::init(pool).await,
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => sqlite::init(pool).await,
        }
        .map_err(|e| store_error(self.dialect, "init", e))
    }

    /// The connection pool, for the attempt log that shares it.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Closes the pool: waits for connections in use to be returned, then
    /// closes them all. Later operations fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        match &self.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => pool.close().await,
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => pool.close().await,
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => pool.close().await,
        }
    }
}

/// One pool per compiled dialect (shared with `history::sql::SqlAttemptLog`).
#[derive(Clone)]
pub(crate) enum Pool {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
}

impl Pool {
    async fn open(dialect: Dialect, opts: &SqlStoreBuilder) -> Result<Self, SqlConnectError> {
        let connect_err = |e: sqlx::Error| SqlConnectError::Connect { dialect, source: Box::new(e) };
        match dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                let (pool_opts, conn) = postgres::options(opts)?;
                Ok(Self::Postgres(pool_opts.connect_with(conn).await.map_err(connect_err)?))
            }
            #[cfg(feature = "mysql")]
            Dialect::MySql => {
                let (pool_opts, conn) = mysql::options(opts)?;
                Ok(Self::MySql(pool_opts.connect_with(conn).await.map_err(connect_err)?))
            }
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => {
                let (pool_opts, conn) = sqlite::options(opts)?;
                Ok(Self::Sqlite(pool_opts.connect_with(conn).await.map_err(connect_err)?))
            }
            #[allow(unreachable_patterns)]
            _ => Err(SqlConnectError::FeatureDisabled { dialect }),
        }
    }

    fn open_lazy(dialect: Dialect, opts: &SqlStoreBuilder) -> Result<Self, SqlConnectError> {
        match dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                let (pool_opts, conn) = postgres::options(opts)?;
                Ok(Self::Postgres(pool_opts.connect_lazy_with(conn)))
            }
            #[cfg(feature = "mysql")]
            Dialect::MySql => {
                let (pool_opts, conn) = mysql::options(opts)?;
                Ok(Self::MySql(pool_opts.connect_lazy_with(conn)))
            }
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => {
                let (pool_opts, conn) = sqlite::options(opts)?;
                Ok(Self::Sqlite(pool_opts.connect_lazy_with(conn)))
            }
            #[allow(unreachable_patterns)]
            _ => Err(SqlConnectError::FeatureDisabled { dialect }),
        }
    }
}

/// Runs `$body` with `$pool` bound to the dialect's pool and `$m` to its
/// module, mapping driver errors to [`StoreError`].
macro_rules! on_pool {
    ($self:ident, $op:literal, |$m:ident, $pool:ident| $body:expr) => {{
        let result: Result<_, Failure> = match &$self.pool {
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
        result.map_err(|e| e.into_store_error($self.dialect, $op))
    }};
}

#[async_trait]
impl Store for SqlStore {
    async fn add(&self, event_name: &str, subscription: WebhookSubscription) -> Result<String, StoreError> {
        validate_new(event_name, &subscription)?;
        let row = NewRow::new(new_subscription_id(), event_name, &subscription)
            .map_err(|e| StoreError::Corrupt(format!("cannot serialize subscription: {e}")))?;
        on_pool!(self, "add", |m, pool| m::insert(pool, &row).await.map_err(Failure::Db))?;
        Ok(row.id)
    }

    async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        on_pool!(self, "remove", |m, pool| m::delete(pool, id).await.map_err(Failure::Db))
    }

    async fn get(&self, id: &str) -> Result<Option<StoredWebhookSubscription>, StoreError> {
        let row = on_pool!(self, "get", |m, pool| m::get(pool, id).await.map_err(Failure::Db))?;
        row.map(RawRow::into_stored).transpose()
    }

    async fn list(&self, event_name: &str) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        let rows = on_pool!(self, "list", |m, pool| m::list(pool, event_name).await.map_err(Failure::Db))?;
        let mut subs = into_stored(rows)?;
        // Collations may compare loosely (MySQL); the store's contract is exact.
        subs.retain(|s| s.event_name == event_name);
        Ok(subs)
    }

    async fn update(&self, id: &str, update: SubscriptionUpdate) -> Result<bool, StoreError> {
        update.validate()?;
        on_pool!(self, "update", |m, pool| m::update(pool, id, update).await)
    }

    /// One `UPDATE`; `updated_at` stays (it dates the user's edits), the
    /// disable time is in `disabled_at`. Enabling resets the health columns.
    async fn set_disabled(&self, id: &str, disabled: Option<Disabled>) -> Result<bool, StoreError> {
        let disabled = disabled.map(|d| DisabledRow { at: d.at.trunc_subsecs(6), reason: d.reason });
        on_pool!(self, "set_disabled", |m, pool| m::set_disabled(pool, id, disabled.as_ref())
            .await
            .map_err(Failure::Db))
    }

    /// One `UPDATE` of the health columns only: `updated_at` stays.
    async fn record_health(&self, id: &str, health: &EndpointHealth) -> Result<bool, StoreError> {
        let health = HealthRow::new(health);
        on_pool!(self, "record_health", |m, pool| m::record_health(pool, id, &health).await.map_err(Failure::Db))
    }

    async fn list_all(&self, owner_id: Option<&str>) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        let rows = on_pool!(self, "list_all", |m, pool| m::list_all(pool, owner_id).await.map_err(Failure::Db))?;
        let mut subs = into_stored(rows)?;
        // Exact owners whatever the collation (MySQL's `utf8mb4_bin` pads),
        // and byte order of ids whatever the database's locale.
        subs.retain(|s| owner_id.is_none_or(|owner| s.owner_id.as_deref() == Some(owner)));
        subs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(subs)
    }

    async fn subscriptions_for(
        &self,
        event_name: &str,
        owner_id: Option<&str>,
    ) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        let rows = on_pool!(self, "subscriptions_for", |m, pool| m::for_owner(pool, event_name, owner_id)
            .await
            .map_err(Failure::Db))?;
        let mut subs = into_stored(rows)?;
        // Exact comparison whatever the column collation (MySQL pads and folds).
        subs.retain(|s| s.event_name == event_name && s.accepts_owner(owner_id));
        Ok(subs)
    }
}

/// What went wrong inside a dialect's operation.
#[derive(Debug)]
enum Failure {
    /// The driver failed.
    Db(sqlx::Error),
    /// A stored row could not be read back.
    Corrupt(StoreError),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

impl Failure {
    fn into_store_error(self, dialect: Dialect, op: &'static str) -> StoreError {
        match self {
            Self::Db(e) => store_error(dialect, op, e),
            Self::Corrupt(e) => e,
        }
    }
}

/// A driver error, with the dialect, what was using it (`""` for the
/// store, `"attempt log "`) and the operation it came from.
#[derive(Debug, thiserror::Error)]
#[error("{dialect} {what}{op}: {source}{hint}")]
pub(crate) struct SqlError {
    dialect: Dialect,
    what: &'static str,
    op: &'static str,
    #[source]
    source: sqlx::Error,
    hint: &'static str,
}

impl SqlError {
    /// The error with a hint at its likely cause (`init` names the call
    /// that creates the missing table), and whether a value failed to
    /// decode (stored data, not the database, is at fault).
    pub(crate) fn classify(
        dialect: Dialect,
        what: &'static str,
        op: &'static str,
        source: sqlx::Error,
        init: &'static str,
    ) -> (Self, bool) {
        let hint = match &source {
            sqlx::Error::PoolTimedOut => " (is the database up and reachable?)",
            sqlx::Error::Database(db) if is_missing_table(db.as_ref()) => init,
            _ => "",
        };
        let decode = matches!(source, sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_));
        (Self { dialect, what, op, source, hint }, decode)
    }
}

/// A driver error as a [`StoreError`]: `Corrupt` when a value could not be
/// decoded, else `Unavailable` (retryable).
fn store_error(dialect: Dialect, op: &'static str, source: sqlx::Error) -> StoreError {
    match SqlError::classify(dialect, "", op, source, " (did `SqlStore::init` run?)") {
        (err, true) => StoreError::Corrupt(err.to_string()),
        (err, false) => StoreError::unavailable(err),
    }
}

/// "No such table": PostgreSQL `42P01`, MySQL `42S02` / 1146, SQLite's message.
fn is_missing_table(err: &dyn sqlx::error::DatabaseError) -> bool {
    matches!(err.code().as_deref(), Some("42P01" | "42S02" | "1146")) || err.message().contains("no such table")
}

/// A new row, serialized for binding.
struct NewRow {
    id: String,
    event_name: String,
    target_url: String,
    auth_type: &'static str,
    auth_value: Option<String>,
    metadata: String,
    owner_id: Option<String>,
    secrets: String,
    now: DateTime<Utc>,
}

impl NewRow {
    fn new(id: String, event_name: &str, sub: &WebhookSubscription) -> Result<Self, serde_json::Error> {
        Ok(Self {
            id,
            event_name: event_name.to_owned(),
            target_url: sub.target_url.clone(),
            auth_type: sub.auth.auth_type(),
            auth_value: sub.auth.auth_value().map(|s| s.expose().to_owned()),
            metadata: serde_json::to_string(&sub.metadata)?,
            owner_id: sub.owner_id.clone(),
            secrets: serde_json::to_string(&sub.secrets)?,
            now: now(),
        })
    }
}

/// The columns an update writes (every mutable one, so whatever
/// [`SubscriptionUpdate::apply`] changes is persisted).
struct ChangedRow {
    target_url: String,
    auth_type: &'static str,
    auth_value: Option<String>,
    metadata: String,
    owner_id: Option<String>,
    secrets: String,
    updated_at: DateTime<Utc>,
}

/// Reads the locked row, applies `update` to it and returns what to write.
fn apply_update(row: RawRow, update: SubscriptionUpdate) -> Result<ChangedRow, Failure> {
    let mut stored = row.into_stored().map_err(Failure::Corrupt)?;
    update.apply(std::sync::Arc::make_mut(&mut stored.subscription));
    let sub = &stored.subscription;
    let corrupt = |e: serde_json::Error| Failure::Corrupt(StoreError::Corrupt(format!("cannot serialize: {e}")));
    Ok(ChangedRow {
        target_url: sub.target_url.clone(),
        auth_type: sub.auth.auth_type(),
        auth_value: sub.auth.auth_value().map(|s| s.expose().to_owned()),
        metadata: serde_json::to_string(&sub.metadata).map_err(corrupt)?,
        owner_id: sub.owner_id.clone(),
        secrets: serde_json::to_string(&sub.secrets).map_err(corrupt)?,
        // Never before created_at, even if clocks step back.
        updated_at: now().max(stored.created_at),
    })
}

/// The enabled state to write: `None` enables.
struct DisabledRow {
    at: DateTime<Utc>,
    reason: String,
}

/// The health columns to write, to the microsecond every dialect keeps.
struct HealthRow {
    consecutive_failures: i64,
    failing_since: Option<DateTime<Utc>>,
    last_success: Option<DateTime<Utc>>,
    given_up: i64,
}

impl HealthRow {
    fn new(health: &EndpointHealth) -> Self {
        Self {
            consecutive_failures: i64::from(health.consecutive_failures),
            failing_since: health.failing_since.map(|t| t.trunc_subsecs(6)),
            last_success: health.last_success.map(|t| t.trunc_subsecs(6)),
            given_up: i64::from(health.given_up),
        }
    }
}

/// A column a later version added to `webhook_subscriptions`, and the
/// statement that adds it to a table an earlier version created.
struct AddedColumn {
    name: &'static str,
    add: &'static str,
}

/// The columns of `added` that are not among `existing` (names compare as
/// SQL identifiers do: without case).
fn missing_columns<'a>(added: &'a [AddedColumn], existing: &[String]) -> impl Iterator<Item = &'a AddedColumn> {
    added.iter().filter(|column| !existing.iter().any(|name| name.eq_ignore_ascii_case(column.name)))
}

/// A row as read, before parsing.
struct RawRow {
    id: String,
    event_name: String,
    target_url: String,
    auth_type: String,
    auth_value: Option<String>,
    metadata: String,
    owner_id: Option<String>,
    secrets: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    disabled_at: Option<DateTime<Utc>>,
    disabled_reason: Option<String>,
    consecutive_failures: i64,
    failing_since: Option<DateTime<Utc>>,
    last_success: Option<DateTime<Utc>>,
    given_up: i64,
}

impl RawRow {
    fn into_stored(self) -> Result<StoredWebhookSubscription, StoreError> {
        let corrupt =
            |what: &str, e: &dyn fmt::Display| StoreError::Corrupt(format!("subscription {}: {what}: {e}", self.id));
        let auth = Auth::from_parts(&self.auth_type, self.auth_value.clone()).map_err(|e| corrupt("auth", &e))?;
        let metadata: Map<String, Value> = serde_json::from_str(&self.metadata).map_err(|e| corrupt("metadata", &e))?;
        let secrets: Vec<SigningSecret> = match self.secrets.as_deref() {
            None | Some("") => Vec::new(),
            Some(json) => serde_json::from_str(json).map_err(|e| corrupt("secrets", &e))?,
        };
        // `set_disabled` writes both or neither: half a pair was edited by
        // hand, and guessing could deliver to an endpoint someone disabled.
        let disabled = match (self.disabled_at, self.disabled_reason) {
            (None, None) => None,
            (Some(at), Some(reason)) => Some(Disabled { at, reason }),
            (at, _) => {
                let (set, null) =
                    if at.is_some() { ("disabled_at", "disabled_reason") } else { ("disabled_reason", "disabled_at") };
                return Err(corrupt("enabled state", &format_args!("{set} is set but {null} is null")));
            }
        };
        let count =
            |what: &str, n: i64| u32::try_from(n).map_err(|_| corrupt(what, &format_args!("{n} is not a count")));
        // Every field named: a new one must get a column.
        let health = EndpointHealth {
            consecutive_failures: count("consecutive_failures", self.consecutive_failures)?,
            failing_since: self.failing_since,
            last_success: self.last_success,
            given_up: count("given_up", self.given_up)?,
        };
        let subscription =
            WebhookSubscription { target_url: self.target_url, auth, metadata, owner_id: self.owner_id, secrets };
        let mut stored =
            StoredWebhookSubscription::new(self.id, self.event_name, subscription, self.created_at, self.updated_at);
        stored.disabled = disabled;
        stored.health = health;
        Ok(stored)
    }
}

fn into_stored(rows: Vec<RawRow>) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
    rows.into_iter().map(RawRow::into_stored).collect()
}

/// Now, to the microsecond: what every dialect stores.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A `SELECT` of the columns [`RawRow`] reads, in its order, then `$tail`;
/// `$meta` is how the dialect reads `metadata` as text.
macro_rules! select_columns {
    ($meta:literal, $tail:literal) => {
        concat!(
            "SELECT id, event_name, target_url, auth_type, auth_value, ",
            $meta,
            " AS metadata, owner_id, secrets, created_at, updated_at, disabled_at, disabled_reason, ",
            "consecutive_failures, failing_since, last_success, given_up FROM webhook_subscriptions ",
            $tail
        )
    };
}
use select_columns;

/// Decodes a row of [`select_columns!`] (the same code for every dialect).
macro_rules! decode_row {
    ($row:expr) => {{
        use sqlx::Row as _;
        let row = $row;
        Ok::<_, sqlx::Error>(super::RawRow {
            id: row.try_get(0)?,
            event_name: row.try_get(1)?,
            target_url: row.try_get(2)?,
            auth_type: row.try_get(3)?,
            auth_value: row.try_get(4)?,
            metadata: row.try_get(5)?,
            owner_id: row.try_get(6)?,
            secrets: row.try_get(7)?,
            created_at: row.try_get(8)?,
            updated_at: row.try_get(9)?,
            disabled_at: row.try_get(10)?,
            disabled_reason: row.try_get(11)?,
            consecutive_failures: row.try_get(12)?,
            failing_since: row.try_get(13)?,
            last_success: row.try_get(14)?,
            given_up: row.try_get(15)?,
        })
    }};
}
use decode_row;

/// Hides a URL's password (for `Debug`).
fn redact_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests;
