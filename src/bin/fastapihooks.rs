//! `fastapihooks start`: the sidecar worker. It consumes the events an app
//! publishes to Redis Streams and delivers them to the subscriptions of a
//! store, as signed POSTs with retries, until Ctrl-C or SIGTERM.
//!
//! Build it with `cargo build --release --features cli,postgres` (or
//! `sqlite`, `mysql`; `cli` alone serves `--store memory`). See
//! `docs/worker.md`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fastapihooks::backend::{RedisConfigError, RedisSetting, RedisStreamsBackend};
use fastapihooks::{MemoryStore, NetworkPolicy, Proxy, RetryPolicy, Store, Worker};

/// Webhook delivery worker for fastapihooks.
#[derive(Debug, Parser)]
#[command(name = "fastapihooks", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume events from Redis Streams and deliver them, until Ctrl-C or SIGTERM.
    ///
    /// The signing secret is read from the FASTAPIHOOKS_SIGNING_SECRET
    /// environment variable, never from the command line.
    Start(StartArgs),
    /// The deliveries workers gave up, as recorded in Redis: list, show,
    /// replay (with the same `webhook-id`), purge.
    Failures {
        #[command(subcommand)]
        command: failures::Failures,
    },
    /// The subscriptions of a SQL store: list, show, add, remove,
    /// rotate-secret, enable, disable.
    Subscriptions {
        #[command(subcommand)]
        command: subscriptions::Subscriptions,
    },
    /// The attempt log: every attempt of every delivery, with what the receiver answered.
    Attempts {
        #[command(subcommand)]
        command: attempts::Attempts,
    },
}

#[derive(Debug, Args)]
struct StartArgs {
    /// The Redis URL, `redis://[:password@]host[:port][/db]`, or
    /// `rediss://...` for TLS. Prefer the environment variable when there is
    /// a password: command lines are visible to every user of the machine.
    #[arg(long, env = "FASTAPIHOOKS_REDIS_URL", hide_env_values = true)]
    redis_url: String,

    /// With a `rediss://` URL: trust the root certificates in this PEM file
    /// instead of the system's (a private CA).
    #[arg(long, value_name = "PEM_FILE")]
    redis_ca_file: Option<std::path::PathBuf>,

    /// Where subscriptions live: `memory` (none: only the static
    /// subscribers the events carry), `sqlite://path.db`,
    /// `postgres://user@host/db` or `mysql://user@host/db`.
    #[arg(long, env = "FASTAPIHOOKS_STORE", hide_env_values = true, default_value = "memory")]
    store: String,

    /// The stream key the app publishes to.
    #[arg(long, default_value = "fastapihooks:events")]
    stream: String,

    /// The consumer group; the workers of one group share the events.
    #[arg(long, default_value = "fastapihooks")]
    group: String,

    /// This worker's name in the group (default: host name, process id, random suffix).
    #[arg(long)]
    consumer: Option<String>,

    /// Requests in flight, all endpoints together.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrency: u32,

    /// Requests in flight to one endpoint.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    per_endpoint_concurrency: u32,

    /// Seconds an unacknowledged event must sit with a dead worker before
    /// this one claims it.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    claim_min_idle: u64,

    /// Times an event may be handed out before it is dead-lettered as a poison message.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    max_deliveries: u64,

    /// The delays before each retry of a failed delivery, comma-separated
    /// durations with a unit (`ms`, `s`, `m`, `h`, `d`), such as
    /// `5s,5m,30m,2h`; or `none` for no retries. Each delay is varied by
    /// up to 20 % (jitter).
    #[arg(
        long,
        env = "FASTAPIHOOKS_RETRY_SCHEDULE",
        value_name = "DELAYS",
        default_value = DEFAULT_RETRY_SCHEDULE,
        value_parser = parse_retry_schedule
    )]
    retry_schedule: RetrySchedule,

    /// Seconds to finish the deliveries in flight on shutdown (keep it
    /// below --claim-min-idle).
    #[arg(long, default_value_t = 30)]
    shutdown_timeout: u64,

    /// Also deliver to this network (CIDR, repeatable), such as
    /// `10.0.0.0/8`. By default only public addresses are allowed.
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    allow_cidr: Vec<String>,

    /// Deliver to every address, private networks included (trusted
    /// subscription URLs only).
    #[arg(long)]
    allow_private_networks: bool,

    /// Send every delivery through this forward proxy,
    /// `http://[user:password@]host:port`: `CONNECT` tunnels for https
    /// receivers, absolute-form requests for http ones. Receivers are still
    /// vetted by the network policy first.
    #[arg(
        long,
        env = "FASTAPIHOOKS_PROXY",
        hide_env_values = true,
        value_name = "URL",
        conflicts_with = "proxy_from_env"
    )]
    proxy: Option<String>,

    /// Use the proxy that `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
    /// `NO_PROXY` name (ignored unless this flag is given).
    #[arg(long)]
    proxy_from_env: bool,

    /// Receivers that bypass the proxy: comma-separated host names (with
    /// their subdomains), addresses and CIDR networks, as `NO_PROXY`.
    #[arg(long, value_name = "LIST")]
    no_proxy: Option<String>,

    /// Trust the CA certificates in this PEM file for https receivers,
    /// beside the system's (receivers behind a private CA).
    #[arg(long, value_name = "PEM_FILE")]
    tls_ca_file: Option<std::path::PathBuf>,

    /// Where every attempt is recorded: `redis` (a bounded stream beside
    /// the worker's, `{stream}:attempts`), a SQL URL (`sqlite://path.db`,
    /// `postgres://...`, `mysql://...`: a `webhook_attempts` table, created
    /// if missing), `memory` (this process only) or `none`.
    #[arg(long, env = "FASTAPIHOOKS_ATTEMPT_LOG", hide_env_values = true, default_value = "redis")]
    attempt_log: String,

    /// How long attempt records are kept (a duration like `30d`; past it
    /// they are pruned in small batches).
    #[arg(long, value_name = "AGE", default_value = "30d", value_parser = parse_delay)]
    attempt_retention: Duration,

    /// Log level.
    #[arg(long, default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: String,
}

/// `RetryPolicy`'s default schedule, as `--retry-schedule` writes it.
const DEFAULT_RETRY_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";

/// The delays of `--retry-schedule`.
#[derive(Clone, Debug, PartialEq)]
struct RetrySchedule(Vec<Duration>);

/// Parses `--retry-schedule`: `none`, or comma-separated durations, each a
/// positive whole number and a unit.
fn parse_retry_schedule(value: &str) -> Result<RetrySchedule, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("none") {
        return Ok(RetrySchedule(Vec::new()));
    }
    if value.is_empty() {
        return Err("no delays given (write `none` for no retries)".into());
    }
    value.split(',').map(|d| parse_delay(d.trim())).collect::<Result<_, _>>().map(RetrySchedule)
}

/// One delay: `200ms`, `5s`, `5m`, `2h`, `1d`.
fn parse_delay(delay: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        if delay.is_empty() { format!("an empty delay ({why})") } else { format!("`{delay}`: {why}") }
    };
    let digits = delay.find(|c: char| !c.is_ascii_digit()).unwrap_or(delay.len());
    let (number, unit) = delay.split_at(digits);
    const FORM: &str = "a delay is a whole number and a unit, ms, s, m, h or d, such as 200ms or 5m";
    let n: u64 = number.parse().map_err(|_| bad(FORM))?;
    let millis_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad(FORM)),
    };
    if n == 0 {
        return Err(bad("a delay must be longer than zero"));
    }
    n.checked_mul(millis_per).map(Duration::from_millis).ok_or_else(|| bad("too long"))
}

#[path = "../cli/attempts.rs"]
mod attempts;
#[path = "../cli/failures.rs"]
mod failures;
#[path = "../cli/subscriptions.rs"]
mod subscriptions;

fn main() -> ExitCode {
    let args = match Cli::parse().command {
        Command::Start(args) => args,
        Command::Failures { command } => return run_tool(failures::run(command)),
        Command::Attempts { command } => return run_tool(attempts::run(command)),
        Command::Subscriptions { command } => {
            return run_tool(async move {
                if command.store() == "memory" {
                    return Err("--store: `memory` holds nothing between runs; name the worker's SQL store".into());
                }
                let store = open_store(command.store()).await?;
                subscriptions::run(command, store).await
            });
        }
    };
    let level = args.log_level.parse().unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fastapihooks: could not start the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            tracing::warn!("shutdown deadline reached: deliveries cut short will be handed out again");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fastapihooks: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a one-shot command (`failures`, `subscriptions`): errors on
/// stderr, warnings only in the log.
fn run_tool(command: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_writer(std::io::stderr).init();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("could not start the Tokio runtime: {e}"))
        .and_then(|rt| rt.block_on(command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fastapihooks: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the worker until a signal; true when it drained in time.
async fn start(args: StartArgs) -> Result<bool, String> {
    let mut network = NetworkPolicy::default();
    for cidr in &args.allow_cidr {
        network = network.allow_cidr(cidr).map_err(|e| format!("--allow-cidr `{cidr}`: {e}"))?;
    }
    if args.allow_private_networks {
        network = network.allow_private_networks();
    }
    let proxy = match (&args.proxy, args.proxy_from_env) {
        (Some(url), _) => Some(Proxy::new(url).map_err(|e| format!("--proxy: {e}"))?),
        (None, true) => {
            Some(Proxy::from_env().ok_or("--proxy-from-env: none of HTTPS_PROXY, HTTP_PROXY, ALL_PROXY is set")?)
        }
        (None, false) => None,
    };
    let proxy = match (proxy, &args.no_proxy) {
        (Some(proxy), Some(list)) => Some(proxy.no_proxy(list)),
        (None, Some(_)) => return Err("--no-proxy needs --proxy or --proxy-from-env".into()),
        (proxy, None) => proxy,
    };
    let backend = RedisStreamsBackend::builder(args.redis_url)
        .stream(args.stream)
        .group(args.group)
        .claim_min_idle(Duration::from_secs(args.claim_min_idle))
        .max_deliveries(args.max_deliveries);
    let backend = match args.consumer {
        Some(name) => backend.consumer(name),
        None => backend,
    };
    let backend = match &args.redis_ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("--redis-ca-file {}: {e}", path.display()))?;
            backend.tls_root_certificates(pem)
        }
        None => backend,
    };
    let backend = backend.build().map_err(|e| redis_error(&e, args.redis_ca_file.as_deref()))?;
    // Read before anything starts: a secret that cannot be used is an
    // error, not an unsigned worker.
    let signing_secret = signing_secret()?;
    let store = open_store(&args.store).await?;
    let attempt_log = attempts::open(&args.attempt_log, "--attempt-log", Some(&backend)).await?;
    let mut builder = Worker::builder()
        .backend(backend.clone())
        .store_arc(store)
        .retry_policy(RetryPolicy::schedule(args.retry_schedule.0))
        .network_policy(network)
        .max_concurrency(args.max_concurrency as usize)
        .per_endpoint_concurrency(args.per_endpoint_concurrency as usize)
        .attempt_retention(fastapihooks::history::Retention::default().max_age(args.attempt_retention));
    builder = match attempt_log {
        Some(log) => builder.attempt_log_arc(log),
        None => builder.no_attempt_log(),
    };
    if let Some(proxy) = proxy {
        tracing::info!(?proxy, "deliveries go through a proxy");
        builder = builder.proxy(proxy);
    }
    if let Some(path) = &args.tls_ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("--tls-ca-file {}: {e}", path.display()))?;
        builder = builder.tls_root_certificates(pem);
    }
    match signing_secret {
        Some(secret) => builder = builder.signing_secret(secret),
        None => tracing::warn!(
            "FASTAPIHOOKS_SIGNING_SECRET is not set: deliveries to subscriptions without a secret of their own are not signed"
        ),
    }
    let worker = builder.start().map_err(|e| match e {
        fastapihooks::BuildError::SigningSecret(_) => format!("FASTAPIHOOKS_SIGNING_SECRET: {e}"),
        fastapihooks::BuildError::Http(_) if args.tls_ca_file.is_some() => format!("--tls-ca-file: {e}"),
        e => e.to_string(),
    })?;
    tracing::info!(
        stream = backend.stream_key(),
        group = backend.group(),
        consumer = backend.consumer(),
        "worker started"
    );
    let report = worker.run(shutdown_signal(), Duration::from_secs(args.shutdown_timeout)).await;
    tracing::info!(drained = report.drained, "worker stopped");
    Ok(report.drained)
}

/// `FASTAPIHOOKS_SIGNING_SECRET`: `None` when unset or empty. A value
/// that is not UTF-8 is an error (never shown), not a reason to run unsigned.
fn signing_secret() -> Result<Option<String>, String> {
    const VAR: &str = "FASTAPIHOOKS_SIGNING_SECRET";
    match std::env::var_os(VAR) {
        None => Ok(None),
        Some(value) if value.is_empty() => Ok(None),
        Some(value) => match value.into_string() {
            Ok(secret) => Ok(Some(secret)),
            Err(_) => Err(format!("{VAR} is not valid UTF-8 (a whsec_ key or another text secret is expected)")),
        },
    }
}

/// A backend error, named by the flag that set what is wrong.
fn redis_error(e: &RedisConfigError, ca_file: Option<&std::path::Path>) -> String {
    let flag = match e.setting() {
        None => "--redis-url".to_owned(),
        Some(RedisSetting::Stream | RedisSetting::DeadLetterStream) => "--stream".to_owned(),
        Some(RedisSetting::Group) => "--group".to_owned(),
        Some(RedisSetting::Consumer) => "--consumer".to_owned(),
        Some(RedisSetting::ClaimMinIdle) => "--claim-min-idle".to_owned(),
        Some(RedisSetting::MaxDeliveries) => "--max-deliveries".to_owned(),
        Some(RedisSetting::TlsRootCertificates) => match ca_file {
            Some(path) => format!("--redis-ca-file {}", path.display()),
            None => "--redis-ca-file".to_owned(),
        },
        // Settings the CLI leaves at their defaults.
        Some(_) => return e.to_string(),
    };
    format!("{flag}: {e}")
}

/// The subscription store named by `--store`.
async fn open_store(spec: &str) -> Result<Arc<dyn Store>, String> {
    if spec == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    sql_store(spec).await
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
async fn sql_store(spec: &str) -> Result<Arc<dyn Store>, String> {
    use fastapihooks::store::sql::SqlStore;
    let store = SqlStore::connect(spec).await.map_err(|e| format!("--store: {e}"))?;
    store.init().await.map_err(|e| format!("--store: could not create or upgrade the subscriptions table: {e}"))?;
    Ok(Arc::new(store))
}

#[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
async fn sql_store(spec: &str) -> Result<Arc<dyn Store>, String> {
    let scheme = spec.split_once(':').map_or(spec, |(s, _)| s);
    Err(format!(
        "--store: `{scheme}` is not available: this binary has no SQL store compiled in (features postgres, mysql, sqlite); use `memory`"
    ))
}

/// Completes on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_schedules_parse_with_units_and_the_default_is_the_libraries() {
        let ms = Duration::from_millis;
        assert_eq!(parse_retry_schedule("200ms,1s,1h"), Ok(RetrySchedule(vec![ms(200), ms(1000), ms(3_600_000)])));
        assert_eq!(
            parse_retry_schedule(" 5s , 5m,2d "),
            Ok(RetrySchedule(vec![ms(5000), ms(300_000), ms(172_800_000)]))
        );
        assert_eq!(parse_retry_schedule("none"), Ok(RetrySchedule(Vec::new())));
        let default = parse_retry_schedule(DEFAULT_RETRY_SCHEDULE).unwrap();
        assert_eq!(default.0, fastapihooks::retry::DEFAULT_SCHEDULE);
        assert_eq!(RetryPolicy::schedule(default.0), RetryPolicy::default());
    }

    #[test]
    fn bad_retry_schedules_say_what_is_wrong() {
        for (bad, says) in [
            ("", "no delays given"),
            ("  ", "no delays given"),
            ("5s,,1m", "an empty delay"),
            ("5s,", "an empty delay"),
            ("0s", "`0s`: a delay must be longer than zero"),
            ("5", "`5`: a delay is a whole number and a unit"),
            ("5x", "`5x`: a delay is a whole number and a unit"),
            ("s", "`s`: a delay is a whole number and a unit"),
            ("-5s", "`-5s`"),
            ("1.5s", "`1.5s`"),
            ("5 s", "`5 s`"),
            ("5S", "`5S`"),
            ("99999999999999999999d", "`99999999999999999999d`"),
            ("9999999999999999d", "`9999999999999999d`: too long"),
            ("garbage", "`garbage`"),
        ] {
            let err = parse_retry_schedule(bad).expect_err(bad);
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn backend_errors_name_the_flag_that_is_wrong() {
        let flag = |b: fastapihooks::backend::RedisStreamsBuilder| redis_error(&b.build().unwrap_err(), None);
        let b = || RedisStreamsBackend::builder("redis://127.0.0.1/");
        assert!(flag(b().stream("")).starts_with("--stream: "));
        assert!(flag(b().group("")).starts_with("--group: "));
        assert!(flag(b().consumer("")).starts_with("--consumer: "));
        assert!(flag(b().tls_root_certificates("x")).starts_with("--redis-ca-file: "));
        assert!(flag(RedisStreamsBackend::builder("http://:pw@h/")).starts_with("--redis-url: "));
        let path = std::path::Path::new("/etc/ca.pem");
        let e = RedisStreamsBackend::builder("rediss://h/").tls_root_certificates("no cert").build().unwrap_err();
        assert!(redis_error(&e, Some(path)).starts_with("--redis-ca-file /etc/ca.pem: "));
    }
}
