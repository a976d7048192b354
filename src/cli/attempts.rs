//! `fastapihooks attempts`: the attempt log the workers write (a Redis
//! stream beside theirs, or a SQL table), listed with filters; and the
//! `--attempt-log` setting `fastapihooks start` shares. Included by
//! `src/bin/fastapihooks.rs`.

use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use fastapihooks::backend::RedisStreamsBackend;
use fastapihooks::history::{AttemptLog, AttemptOutcome, AttemptQuery, AttemptRecord, MemoryAttemptLog};

use super::failures::{clean, parse_time, redis_backend};

/// What `attempts` does.
#[derive(Debug, Subcommand)]
pub(crate) enum Attempts {
    /// Lists attempts, newest first, one page (`--after` for the next).
    List {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        filter: Filter,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Where the attempt log is.
#[derive(Debug, Args)]
pub(crate) struct Source {
    /// The log: `redis` (the workers' stream, `{stream}:attempts`, on
    /// --redis-url) or a SQL URL (`sqlite://path.db`, `postgres://...`,
    /// `mysql://...`), as given to `start --attempt-log`.
    #[arg(long, env = "FASTAPIHOOKS_ATTEMPT_LOG", hide_env_values = true, default_value = "redis")]
    attempt_log: String,

    /// The Redis URL (with `--attempt-log redis`).
    #[arg(long, env = "FASTAPIHOOKS_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,

    /// With a `rediss://` URL: trust the root certificates in this PEM file.
    #[arg(long, value_name = "PEM_FILE")]
    redis_ca_file: Option<std::path::PathBuf>,

    /// The stream key the workers consume.
    #[arg(long, default_value = "fastapihooks:events")]
    stream: String,
}

/// Which attempts: every option given must match.
#[derive(Debug, Args)]
pub(crate) struct Filter {
    /// Only this event's (its id, the `webhook-id`).
    #[arg(long, value_name = "ID")]
    event_id: Option<String>,

    /// Only this subscription's (its store id).
    #[arg(long, value_name = "ID")]
    subscription: Option<String>,

    /// Only this owner's.
    #[arg(long, value_name = "OWNER")]
    owner: Option<String>,

    /// Only attempts with this outcome.
    #[arg(long, value_parser = ["delivered", "retrying", "given_up"])]
    outcome: Option<String>,

    /// Only attempts started since then: an RFC 3339 time or a time ago (`30m`, `2h`, `7d`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<DateTime<Utc>>,

    /// Only attempts started before then (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<DateTime<Utc>>,

    /// At most this many.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,

    /// The next page: the cursor the previous listing printed.
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
}

impl Filter {
    fn to_query(&self) -> AttemptQuery {
        let mut q = AttemptQuery::new().limit(self.limit as usize);
        if let Some(id) = &self.event_id {
            q = q.event(id.clone());
        }
        if let Some(id) = &self.subscription {
            q = q.subscription(id.clone());
        }
        if let Some(owner) = &self.owner {
            q = q.owner(owner.clone());
        }
        if let Some(outcome) = self.outcome.as_deref().and_then(AttemptOutcome::from_name) {
            q = q.outcome(outcome);
        }
        if let Some(t) = self.since {
            q = q.since(t);
        }
        if let Some(t) = self.until {
            q = q.until(t);
        }
        if let Some(cursor) = &self.after {
            q = q.after(cursor.clone());
        }
        q
    }
}

/// The attempt log `spec` names (`redis`, `memory`, `none`, a SQL URL),
/// `flag` naming the setting in errors; `redis` needs the worker's backend.
pub(crate) async fn open(
    spec: &str,
    flag: &str,
    redis: Option<&RedisStreamsBackend>,
) -> Result<Option<Arc<dyn AttemptLog>>, String> {
    match spec {
        "none" => Ok(None),
        "memory" => Ok(Some(Arc::new(MemoryAttemptLog::default()))),
        "redis" => match redis {
            Some(backend) => Ok(Some(Arc::new(backend.attempt_log()))),
            None => Err(format!("{flag} redis: give --redis-url")),
        },
        url => sql(url, flag).await.map(Some),
    }
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
async fn sql(url: &str, flag: &str) -> Result<Arc<dyn AttemptLog>, String> {
    use fastapihooks::history::sql::SqlAttemptLog;
    let log = SqlAttemptLog::connect(url).await.map_err(|e| format!("{flag}: {e}"))?;
    log.init().await.map_err(|e| format!("{flag}: could not create the attempts table: {e}"))?;
    Ok(Arc::new(log))
}

#[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
async fn sql(url: &str, flag: &str) -> Result<Arc<dyn AttemptLog>, String> {
    let scheme = url.split_once(':').map_or(url, |(s, _)| s);
    Err(format!("{flag}: `{scheme}` is neither redis, memory, none nor a SQL URL this binary was built for"))
}

fn line(r: &AttemptRecord) -> String {
    format!(
        "{}  {}  {}  attempt={}  status={}  {}ms  {}  {}  {}  {}",
        clean(&r.id),
        r.started_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        r.outcome,
        r.attempt,
        r.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
        r.duration_ms,
        clean(&r.event_name),
        clean(&r.event_id),
        clean(r.subscription_id.as_deref().unwrap_or(&r.target_url)),
        clean(r.error.as_deref().unwrap_or("")),
    )
}

/// Runs one `attempts` command.
pub(crate) async fn run(command: Attempts) -> Result<(), String> {
    let Attempts::List { source, filter, json } = command;
    let redis = match (&source.attempt_log[..], &source.redis_url) {
        ("redis", Some(url)) => Some(redis_backend(url, source.redis_ca_file.as_deref(), &source.stream)?),
        _ => None,
    };
    if matches!(&source.attempt_log[..], "memory" | "none") {
        return Err("--attempt-log: `memory` and `none` keep nothing another process can read".into());
    }
    let log = open(&source.attempt_log, "--attempt-log", redis.as_ref()).await?.ok_or("--attempt-log: none")?;
    let page = log.query(&filter.to_query()).await.map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let write = |e: std::io::Error| format!("could not write the output: {e}");
    for r in &page.records {
        // serde_json escapes every control character: safe to print.
        let text = if json { serde_json::to_string(r).unwrap_or_default() } else { line(r) };
        writeln!(out, "{text}").map_err(write)?;
    }
    match &page.next {
        Some(cursor) => eprintln!("{} attempt(s); more with --after {}", page.records.len(), clean(cursor)),
        None => eprintln!("{} attempt(s)", page.records.len()),
    }
    Ok(())
}
