//! `fastapihooks failures`: the deliveries workers gave up, as recorded in
//! Redis (`{stream}:failures`): list, show, replay (same `webhook-id`),
//! recover (a time window), purge. Included by `src/bin/fastapihooks.rs`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use fastapihooks::backend::RedisStreamsBackend;
use fastapihooks::dead_letter::{FailureFilter, FailureRecord};

/// Where the failures are: the worker's Redis and stream.
#[derive(Debug, Args)]
pub(crate) struct Source {
    /// The Redis URL (as for `start`).
    #[arg(long, env = "FASTAPIHOOKS_REDIS_URL", hide_env_values = true)]
    redis_url: String,

    /// With a `rediss://` URL: trust the root certificates in this PEM file.
    #[arg(long, value_name = "PEM_FILE")]
    redis_ca_file: Option<std::path::PathBuf>,

    /// The stream key the workers consume; failures are in `{stream}:failures`.
    #[arg(long, default_value = "fastapihooks:events")]
    stream: String,
}

/// Which records: every option given must match.
#[derive(Debug, Args)]
pub(crate) struct Filter {
    /// Only this subscription's (its store id).
    #[arg(long, value_name = "ID")]
    subscription: Option<String>,

    /// Only events of this owner.
    #[arg(long, value_name = "OWNER")]
    owner: Option<String>,

    /// Only events of this name.
    #[arg(long, value_name = "NAME")]
    event: Option<String>,

    /// Only failures since then: an RFC 3339 time (`2026-12-01T10:00:00Z`)
    /// or a time ago (`30m`, `2h`, `7d`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<DateTime<Utc>>,

    /// Only failures before then (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<DateTime<Utc>>,

    /// At most this many, the newest first.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    limit: u32,
}

/// The deliveries `recover` sends again.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("whose").required(true).args(["subscription", "owner"])))]
pub(crate) struct Window {
    /// The subscription's (its store id).
    #[arg(long, value_name = "ID")]
    subscription: Option<String>,

    /// Every subscription's of this owner.
    #[arg(long, value_name = "OWNER")]
    owner: Option<String>,

    /// Given up since then: an RFC 3339 time or a time ago (`2h`, `7d`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: DateTime<Utc>,

    /// Given up before then (default: now).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<DateTime<Utc>>,

    /// At most this many; past it, recover again.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    limit: u32,
}

impl Filter {
    fn to_filter(&self) -> FailureFilter {
        let mut f = FailureFilter::new().limit(self.limit as usize);
        if let Some(id) = &self.subscription {
            f = f.subscription(id.clone());
        }
        if let Some(owner) = &self.owner {
            f = f.owner(owner.clone());
        }
        if let Some(name) = &self.event {
            f = f.event(name.clone());
        }
        if let Some(t) = self.since {
            f = f.since(t);
        }
        if let Some(t) = self.until {
            f = f.until(t);
        }
        f
    }
}

/// What to do with the recorded failures.
#[derive(Debug, Subcommand)]
pub(crate) enum Failures {
    /// Lists recorded failures, newest first.
    List {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        filter: Filter,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one recorded failure, its event's payload included.
    Show {
        #[command(flatten)]
        source: Source,
        /// The record's id (as `list` shows it).
        id: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sends recorded failures again, with the same event (the same
    /// `webhook-id`) and a fresh round of attempts; a worker delivers them.
    /// Each record replayed is removed.
    Replay {
        #[command(flatten)]
        source: Source,
        /// The records to replay; none: every record the filter matches.
        ids: Vec<String>,
        #[command(flatten)]
        filter: Filter,
    },
    /// Sends again every delivery given up in a time window, of one
    /// subscription or one owner (Svix's "recover"): same `webhook-id`, a
    /// fresh round of attempts through the retry schedule; each record
    /// sent again is removed.
    Recover {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        window: Window,
    },
    /// Removes recorded failures (asks first, unless --yes).
    Purge {
        #[command(flatten)]
        source: Source,
        /// The records to remove; none: every record the filter matches.
        ids: Vec<String>,
        #[command(flatten)]
        filter: Filter,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// `30m`, `2h`, `7d` (a time ago), or an RFC 3339 time.
pub(crate) fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| format!("`{s}` is neither an RFC 3339 time nor a time ago like 2h"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: a time ago ends in s, m, h or d")),
    };
    let ago = n.checked_mul(secs).and_then(|s| chrono::Duration::try_seconds(i64::try_from(s).ok()?));
    ago.and_then(|ago| Utc::now().checked_sub_signed(ago)).ok_or_else(|| format!("`{s}` is too long ago"))
}

fn backend(source: &Source) -> Result<RedisStreamsBackend, String> {
    redis_backend(&source.redis_url, source.redis_ca_file.as_deref(), &source.stream)
}

/// The workers' stream on Redis, as the one-shot commands reach it (errors
/// name `--redis-url` and `--redis-ca-file`).
pub(crate) fn redis_backend(
    url: &str,
    ca_file: Option<&std::path::Path>,
    stream: &str,
) -> Result<RedisStreamsBackend, String> {
    let mut builder = RedisStreamsBackend::builder(url.to_owned()).stream(stream.to_owned());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("--redis-ca-file {}: {e}", path.display()))?;
        builder = builder.tls_root_certificates(pem);
    }
    builder.build().map_err(|e| format!("--redis-url: {e}"))
}

/// Text read from Redis, safe on a terminal: control characters escaped.
pub(crate) fn clean(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

/// A record as shown: the event without the subscribers it carries (their
/// secrets stay in Redis).
fn view(r: &FailureRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "failed_at": r.failed_at.to_rfc3339(),
        "event_id": r.event.id.as_str(),
        "event": r.event.name,
        "owner_id": r.event.owner_id,
        "subscription_id": r.subscription_id,
        "target_url": r.target_url,
        "attempts": r.attempts,
        "status": r.status,
        "error": r.error,
    })
}

fn line(r: &FailureRecord) -> String {
    format!(
        "{}  {}  {}  {}  {}  attempts={}  status={}  {}",
        clean(&r.id),
        r.failed_at.format("%Y-%m-%dT%H:%M:%SZ"),
        clean(&r.event.name),
        clean(r.event.id.as_str()),
        clean(r.subscription_id.as_deref().or(r.target_url.as_deref()).unwrap_or("-")),
        r.attempts,
        r.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
        clean(&r.error),
    )
}

/// The records `ids` names, or those `filter` matches.
async fn select(backend: &RedisStreamsBackend, ids: &[String], filter: &Filter) -> Result<Vec<FailureRecord>, String> {
    let store = backend.failures();
    if ids.is_empty() {
        return store.list(&filter.to_filter()).await.map_err(|e| e.to_string());
    }
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        match store.get(id).await.map_err(|e| e.to_string())? {
            Some(r) => found.push(r),
            None => return Err(format!("no recorded failure `{}`", clean(id))),
        }
    }
    Ok(found)
}

fn progress(n: usize, what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(n as u64);
    if n > 1 {
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what);
        bar.enable_steady_tick(Duration::from_millis(200));
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// Runs one `failures` command.
pub(crate) async fn run(command: Failures) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let write = |e: std::io::Error| format!("could not write the output: {e}");
    match command {
        Failures::List { source, filter, json } => {
            let records = select(&backend(&source)?, &[], &filter).await?;
            for r in &records {
                let text = if json { view(r).to_string() } else { line(r) };
                writeln!(out, "{text}").map_err(write)?;
            }
            if !json {
                eprintln!("{} recorded failure(s)", records.len());
            }
        }
        Failures::Show { source, id, json } => {
            let backend = backend(&source)?;
            let r = select(&backend, &[id], &Filter::none()).await?.remove(0);
            let mut v = view(&r);
            v["payload"] = r.event.payload.to_value();
            let text = if json { v.to_string() } else { serde_json::to_string_pretty(&v).unwrap_or_default() };
            // serde_json escapes every control character: safe to print.
            writeln!(out, "{text}").map_err(write)?;
        }
        Failures::Replay { source, ids, filter } => {
            let backend = backend(&source)?;
            let records = select(&backend, &ids, &filter).await?;
            let bar = progress(records.len(), "replaying");
            let mut failed = 0;
            for r in &records {
                if let Err(e) = backend.replay(r).await {
                    failed += 1;
                    bar.suspend(|| eprintln!("not replayed {}: {e}", clean(&r.id)));
                }
                bar.inc(1);
            }
            bar.finish_and_clear();
            eprintln!("{} replayed, {failed} not", records.len() - failed);
            if failed > 0 {
                return Err(format!("{failed} record(s) could not be replayed; they are kept"));
            }
        }
        Failures::Recover { source, window } => {
            let backend = backend(&source)?;
            if window.until.is_some_and(|until| until <= window.since) {
                return Err("--until must be after --since".into());
            }
            let mut filter = FailureFilter::new().since(window.since).limit(window.limit as usize);
            if let Some(id) = window.subscription {
                filter = filter.subscription(id);
            }
            if let Some(owner) = window.owner {
                filter = filter.owner(owner);
            }
            if let Some(until) = window.until {
                filter = filter.until(until);
            }
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message("recovering");
            bar.enable_steady_tick(Duration::from_millis(200));
            let report = backend.recover(&filter).await.map_err(|e| e.to_string());
            bar.finish_and_clear();
            let report = report?;
            eprintln!("{} sent again, {} not", report.resent, report.failed);
            if report.more {
                eprintln!("more given-up deliveries remain in the window: run recover again");
            }
            if report.failed > 0 {
                return Err(format!("{} record(s) could not be sent again; they are kept", report.failed));
            }
        }
        Failures::Purge { source, ids, filter, yes } => {
            let backend = backend(&source)?;
            let records = select(&backend, &ids, &filter).await?;
            if records.is_empty() {
                eprintln!("nothing to purge");
                return Ok(());
            }
            if !yes && !confirm(&format!("Remove {} recorded failure(s) for good?", records.len()))? {
                return Err("not confirmed; nothing removed".into());
            }
            let store = backend.failures();
            let bar = progress(records.len(), "purging");
            let mut removed = 0;
            for r in &records {
                if store.remove(&r.id).await.map_err(|e| e.to_string())? {
                    removed += 1;
                }
                bar.inc(1);
            }
            bar.finish_and_clear();
            eprintln!("{removed} removed");
        }
    }
    Ok(())
}

impl Filter {
    /// No filter (for `show`, which names its record).
    fn none() -> Self {
        Self { subscription: None, owner: None, event: None, since: None, until: None, limit: 1 }
    }
}

/// Asks on the terminal; refuses (with an error naming --yes) without one.
fn confirm(question: &str) -> Result<bool, String> {
    if !std::io::stdin().is_terminal() {
        return Err("refusing to purge without confirmation: stdin is not a terminal (pass --yes)".into());
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| e.to_string())?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_ago() {
        assert_eq!(parse_time("2026-12-01T10:00:00Z").unwrap().to_rfc3339(), "2026-12-01T10:00:00+00:00");
        let two_h = Utc::now() - parse_time("2h").unwrap();
        assert!((two_h.num_seconds() - 7_200).abs() < 5);
        assert!(parse_time("2w").is_err());
        assert!(parse_time("soon").is_err());
        assert!(parse_time("99999999999999999999d").is_err());
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\r\nb"), "a\\r\\nb");
    }
}
