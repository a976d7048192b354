//! `fastapihooks subscriptions`: the subscriptions of the configured store
//! (list, show, add, remove, rotate-secret, enable, disable). Included by
//! `src/bin/fastapihooks.rs`, which opens the store.

use std::io::{BufRead, IsTerminal, Write};
use std::net::IpAddr;
use std::sync::Arc;

use chrono::Utc;
use clap::{Args, Subcommand};
use fastapihooks::health::Disabled;
use fastapihooks::secret::SigningSecret;
use fastapihooks::store::{Store, rotate_stored_secret};
use fastapihooks::subscription::{StoredWebhookSubscription, validate_target_url};
use fastapihooks::{NetworkPolicy, Secret, WebhookSubscription};

/// Where the subscriptions are.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// The subscription store: `sqlite://path.db`, `postgres://user@host/db`
    /// or `mysql://user@host/db` (the worker's `--store`).
    #[arg(long, env = "FASTAPIHOOKS_STORE", hide_env_values = true)]
    pub(crate) store: String,
}

/// Which destinations `add` accepts (as `start`'s network policy).
#[derive(Debug, Args)]
pub(crate) struct Destinations {
    /// Also accept target addresses in this CIDR (repeatable).
    #[arg(long, value_name = "CIDR")]
    allow_cidr: Vec<String>,

    /// Accept private, loopback and link-local target addresses.
    #[arg(long)]
    allow_private_networks: bool,
}

/// What to do with the store's subscriptions.
#[derive(Debug, Subcommand)]
pub(crate) enum Subscriptions {
    /// Lists subscriptions, by id: every one, or an event's, or an
    /// owner's; each with its enabled state and health.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Only the subscriptions to this event.
        #[arg(long, value_name = "NAME")]
        event: Option<String>,
        /// Only this owner's subscriptions (not the ownerless ones, which
        /// receive every owner's events).
        #[arg(long, value_name = "ID")]
        owner: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Shows one subscription (its secrets as a count and expiries, never
    /// their values).
    Show {
        #[command(flatten)]
        store: StoreArgs,
        /// Its id.
        id: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Adds a subscription and prints its id. The URL is checked, and its
    /// host's addresses must pass the network policy.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// The event it subscribes to.
        #[arg(long, value_name = "NAME")]
        event: String,
        /// Where deliveries go (`https://...`, or `http://...`).
        #[arg(long)]
        url: String,
        /// Only events of this owner reach it.
        #[arg(long, value_name = "ID")]
        owner: Option<String>,
        /// Give it a signing secret of its own, generated, printed once.
        #[arg(long)]
        generate_secret: bool,
        #[command(flatten)]
        destinations: Destinations,
    },
    /// Removes a subscription (asks first, unless --yes).
    Remove {
        #[command(flatten)]
        store: StoreArgs,
        /// Its id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Gives a subscription a new generated secret (printed once); the
    /// old ones keep signing beside it for the overlap.
    RotateSecret {
        #[command(flatten)]
        store: StoreArgs,
        /// Its id.
        id: String,
        /// How long the old secrets keep signing, in hours.
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(0..=24 * 365))]
        overlap_hours: u32,
    },
    /// Disables a subscription: its events are skipped (and counted) from
    /// now on, and its waiting retries given up.
    Disable {
        #[command(flatten)]
        store: StoreArgs,
        /// Its id.
        id: String,
        /// Why, in a few words (shown by `list` and `show`).
        #[arg(long, value_name = "TEXT", default_value = "disabled by an operator")]
        reason: String,
    },
    /// Enables a subscription again, with a fresh health.
    Enable {
        #[command(flatten)]
        store: StoreArgs,
        /// Its id.
        id: String,
    },
}

/// The longest `--reason` (every store keeps it).
const MAX_REASON_CHARS: usize = 500;

impl Subscriptions {
    /// The `--store` this command names.
    pub(crate) fn store(&self) -> &str {
        match self {
            Self::List { store, .. }
            | Self::Show { store, .. }
            | Self::Add { store, .. }
            | Self::Remove { store, .. }
            | Self::RotateSecret { store, .. }
            | Self::Disable { store, .. }
            | Self::Enable { store, .. } => &store.store,
        }
    }
}

/// A subscription as shown: no secret values, no bearer token.
fn view(s: &StoredWebhookSubscription) -> serde_json::Value {
    let secrets: Vec<serde_json::Value> = s
        .subscription
        .secrets
        .iter()
        .map(|k| serde_json::json!({ "expires_at": k.expires_at.map(|t| t.to_rfc3339()) }))
        .collect();
    let time = |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.to_rfc3339());
    serde_json::json!({
        "id": s.id,
        "event": s.event_name,
        "url": s.subscription.target_url,
        "owner_id": s.subscription.owner_id,
        "secrets": secrets,
        "created_at": s.created_at.to_rfc3339(),
        "updated_at": s.updated_at.to_rfc3339(),
        "enabled": s.is_enabled(),
        "disabled": s.disabled.as_ref().map(|d| serde_json::json!({ "at": d.at.to_rfc3339(), "reason": d.reason })),
        "health": {
            "consecutive_failures": s.health.consecutive_failures,
            "failing_since": time(s.health.failing_since),
            "last_success": time(s.health.last_success),
            "given_up": s.health.given_up,
        },
    })
}

/// One line of `list`: id, event, URL, owner, enabled state, health.
fn line(s: &StoredWebhookSubscription) -> String {
    let state = match &s.disabled {
        None => "enabled".to_owned(),
        Some(d) => format!("disabled since {} ({})", d.at.to_rfc3339(), clean(&d.reason)),
    };
    let h = &s.health;
    let health = match h.failing_since {
        Some(since) => format!(
            "failing since {} ({} failed attempts, {} given up)",
            since.to_rfc3339(),
            h.consecutive_failures,
            h.given_up
        ),
        None if h.consecutive_failures > 0 || h.given_up > 0 => {
            format!("{} failed attempts, {} given up", h.consecutive_failures, h.given_up)
        }
        None => "healthy".to_owned(),
    };
    format!(
        "{}  {}  {}  owner={}  {state}  {health}",
        clean(&s.id),
        clean(&s.event_name),
        clean(&s.subscription.target_url),
        clean(s.subscription.owner_id.as_deref().unwrap_or("-"))
    )
}

/// Text read from the store, safe on a terminal: control characters escaped.
fn clean(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

/// Checks that every address of `host` passes `policy`; an IP literal is
/// checked without a lookup.
async fn vet(host: Option<&str>, port: u16, policy: &NetworkPolicy) -> Result<(), String> {
    let host = host.ok_or("--url: it has no host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("--url: cannot resolve `{}`: {e}", clean(bare)))?
            .map(|a| a.ip())
            .collect(),
    };
    match addrs.iter().find(|ip| !policy.permits(**ip)) {
        Some(ip) => Err(format!(
            "--url: `{}` resolves to {ip}, a private or reserved address the network policy refuses (allow it with --allow-cidr or --allow-private-networks)",
            clean(bare)
        )),
        None => Ok(()),
    }
}

fn confirm(question: &str) -> Result<bool, String> {
    if !std::io::stdin().is_terminal() {
        return Err("refusing to remove without confirmation: stdin is not a terminal (pass --yes)".into());
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| e.to_string())?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn get(store: &dyn Store, id: &str) -> Result<StoredWebhookSubscription, String> {
    store.get(id).await.map_err(|e| format!("--store: {e}"))?.ok_or_else(|| format!("no subscription `{}`", clean(id)))
}

/// Runs one `subscriptions` command on `store`.
pub(crate) async fn run(command: Subscriptions, store: Arc<dyn Store>) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let write = |e: std::io::Error| format!("could not write the output: {e}");
    match command {
        Subscriptions::List { event, owner, json, .. } => {
            let subs = match &event {
                Some(event) => {
                    let mut subs = store.list(event).await.map_err(|e| format!("--store: {e}"))?;
                    subs.retain(|s| owner.is_none() || s.subscription.owner_id == owner);
                    subs
                }
                None => store.list_all(owner.as_deref()).await.map_err(|e| format!("--store: {e}"))?,
            };
            for s in &subs {
                let text = if json { view(s).to_string() } else { line(s) };
                writeln!(out, "{text}").map_err(write)?;
            }
            if !json {
                eprintln!("{} subscription(s)", subs.len());
            }
        }
        Subscriptions::Show { id, json, .. } => {
            let s = get(&*store, &id).await?;
            let v = view(&s);
            let text = if json { v.to_string() } else { serde_json::to_string_pretty(&v).unwrap_or_default() };
            writeln!(out, "{text}").map_err(write)?;
        }
        Subscriptions::Add { event, url, owner, generate_secret, destinations, .. } => {
            fastapihooks::subscription::validate_event_name(&event).map_err(|e| format!("--event: {e}"))?;
            let parsed = validate_target_url(&url).map_err(|e| format!("--url: {e}"))?;
            let mut policy = NetworkPolicy::default();
            for cidr in &destinations.allow_cidr {
                policy = policy.allow_cidr(cidr).map_err(|e| format!("--allow-cidr `{}`: {e}", clean(cidr)))?;
            }
            if destinations.allow_private_networks {
                policy = policy.allow_private_networks();
            }
            vet(parsed.host_str(), parsed.port_or_known_default().unwrap_or(443), &policy).await?;
            let mut sub = WebhookSubscription::new(url).map_err(|e| format!("--url: {e}"))?;
            if let Some(owner) = owner {
                sub = sub.owner(owner);
            }
            let secret = generate_secret.then(Secret::generate);
            if let Some(secret) = &secret {
                sub = sub.signing_secret(secret.clone());
            }
            let id = store.add(&event, sub).await.map_err(|e| format!("--store: {e}"))?;
            writeln!(out, "{id}").map_err(write)?;
            if let Some(secret) = secret {
                // Shown once, here: the store keeps it, nothing prints it again.
                writeln!(out, "{}", secret.expose()).map_err(write)?;
            }
        }
        Subscriptions::Remove { id, yes, .. } => {
            let s = get(&*store, &id).await?;
            let question =
                format!("Remove subscription {} ({}) for good?", clean(&s.id), clean(&s.subscription.target_url));
            if !yes && !confirm(&question)? {
                return Err("not confirmed; nothing removed".into());
            }
            store.remove(&id).await.map_err(|e| format!("--store: {e}"))?;
            eprintln!("removed");
        }
        Subscriptions::RotateSecret { id, overlap_hours, .. } => {
            let secret = Secret::generate();
            let until = Utc::now() + chrono::Duration::hours(i64::from(overlap_hours));
            let rotated = rotate_stored_secret(&*store, &id, SigningSecret::new(secret.clone()), until)
                .await
                .map_err(|e| format!("--store: {e}"))?;
            if !rotated {
                return Err(format!("no subscription `{}`", clean(&id)));
            }
            writeln!(out, "{}", secret.expose()).map_err(write)?;
            eprintln!("rotated: the old secrets sign beside the new one until {}", until.to_rfc3339());
        }
        Subscriptions::Disable { id, reason, .. } => {
            let reason = reason.trim();
            if reason.is_empty() {
                return Err("--reason: say why, in a few words".into());
            }
            if reason.chars().count() > MAX_REASON_CHARS {
                return Err(format!("--reason: at most {MAX_REASON_CHARS} characters"));
            }
            let disabled =
                store.set_disabled(&id, Some(Disabled::now(reason))).await.map_err(|e| format!("--store: {e}"))?;
            if !disabled {
                return Err(format!("no subscription `{}`", clean(&id)));
            }
            eprintln!("disabled: its events are skipped until `fastapihooks subscriptions enable {}`", clean(&id));
        }
        Subscriptions::Enable { id, .. } => {
            if !store.set_disabled(&id, None).await.map_err(|e| format!("--store: {e}"))? {
                return Err(format!("no subscription `{}`", clean(&id)));
            }
            eprintln!("enabled");
        }
    }
    Ok(())
}
