//! `fastapihooks subscriptions ...` against a real SQLite file: bad input
//! named by its flag, the network policy at creation, no secret shown but
//! the one generated, rotation with overlap, removal only when confirmed.

use std::process::{Command, Stdio};

use super::redis_util::cli_bin;
use super::util::temp_dir;

/// `fastapihooks subscriptions ARGS --store STORE`: (success, stdout, stderr).
fn subs(bin: &str, store: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin)
        .arg("subscriptions")
        .args(args)
        .args(["--store", store])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn subscriptions_are_added_vetted_listed_rotated_and_removed_from_the_cli() {
    let Some(bin) = cli_bin() else { return };
    let dir = temp_dir("cli-subscriptions");
    let store = format!("sqlite://{}?mode=rwc", dir.join("subs.db").display());
    let store = store.as_str();

    // Bad input: each error names its flag; nothing is added.
    let (ok, _, err) = subs(bin, store, &["add", "--event", "bad name", "--url", "https://127.0.0.1/h"]);
    assert!(!ok && err.contains("--event"), "{err}");
    let (ok, _, err) = subs(bin, store, &["add", "--event", "order.created", "--url", "ftp://127.0.0.1/h"]);
    assert!(!ok && err.contains("--url"), "{err}");
    // A private address is refused by the network policy (an IP literal: no lookup, no traffic).
    let (ok, _, err) = subs(bin, store, &["add", "--event", "order.created", "--url", "http://10.1.2.3/h"]);
    assert!(!ok && err.contains("--allow-cidr"), "{err}");
    let (ok, out, _) = subs(bin, store, &["list", "--event", "order.created"]);
    assert!(ok && out.is_empty(), "nothing was added: {out}");

    // Allowed explicitly, with a generated secret printed once.
    let (ok, out, err) = subs(
        bin,
        store,
        &[
            "add",
            "--event",
            "order.created",
            "--url",
            "http://127.0.0.1:9/h",
            "--allow-cidr",
            "127.0.0.0/8",
            "--generate-secret",
        ],
    );
    assert!(ok, "{err}");
    let mut lines = out.lines();
    let id = lines.next().unwrap().to_owned();
    let secret = lines.next().unwrap().to_owned();
    assert!(id.starts_with("sub_") && secret.starts_with("whsec_"), "{out}");

    let (ok, out, _) = subs(bin, store, &["list", "--event", "order.created", "--json"]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(listed["id"], id.as_str());
    assert!(!out.contains(&secret[6..]), "no secret value is listed: {out}");

    // Rotation: a new secret printed, the old one kept with an expiry.
    let (ok, out, err) = subs(bin, store, &["rotate-secret", &id, "--overlap-hours", "2"]);
    assert!(ok, "{err}");
    let rotated = out.trim().to_owned();
    assert!(rotated.starts_with("whsec_") && rotated != secret);
    let (ok, out, _) = subs(bin, store, &["show", &id, "--json"]);
    assert!(ok);
    let shown: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let secrets = shown["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 2, "{shown}");
    assert_eq!(secrets.iter().filter(|s| s["expires_at"].is_string()).count(), 1, "the old one expires: {shown}");
    assert!(!out.contains(&rotated[6..]) && !out.contains(&secret[6..]));

    // Unknown ids, then removal: refused without a terminal, done with --yes.
    let (ok, _, err) = subs(bin, store, &["show", "sub_nope"]);
    assert!(!ok && err.contains("no subscription"), "{err}");
    let (ok, _, err) = subs(bin, store, &["remove", &id]);
    assert!(!ok && err.contains("--yes"), "{err}");
    let (ok, _, err) = subs(bin, store, &["remove", &id, "--yes"]);
    assert!(ok, "{err}");
    let (ok, out, _) = subs(bin, store, &["list", "--event", "order.created"]);
    assert!(ok && out.is_empty());
    let (ok, _, err) = subs(bin, "memory", &["list", "--event", "e"]);
    assert!(!ok && err.contains("--store"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `add` a subscription to `event` (on 127.0.0.1, allowed), owned by
/// `owner` when given; its id.
fn add(bin: &str, store: &str, event: &str, owner: Option<&str>) -> String {
    let mut args = vec!["add", "--event", event, "--url", "http://127.0.0.1:9/h", "--allow-cidr", "127.0.0.0/8"];
    if let Some(owner) = owner {
        args.extend(["--owner", owner]);
    }
    let (ok, out, err) = subs(bin, store, &args);
    assert!(ok, "{err}");
    out.trim().to_owned()
}

/// `show ID --json`, parsed.
fn show(bin: &str, store: &str, id: &str) -> serde_json::Value {
    let (ok, out, err) = subs(bin, store, &["show", id, "--json"]);
    assert!(ok, "{err}");
    serde_json::from_str(out.trim()).unwrap()
}

/// The ids `list ARGS --json` prints, in order.
fn listed(bin: &str, store: &str, args: &[&str]) -> Vec<String> {
    let args = [&["list", "--json"][..], args].concat();
    let (ok, out, err) = subs(bin, store, &args);
    assert!(ok, "{err}");
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn subscriptions_are_disabled_and_enabled_from_the_cli_with_their_health_shown() {
    let Some(bin) = cli_bin() else { return };
    let dir = temp_dir("cli-subscriptions-enable");
    let store = format!("sqlite://{}?mode=rwc", dir.join("subs.db").display());
    let store = store.as_str();
    let id = add(bin, store, "order.created", Some("acme"));

    let shown = show(bin, store, &id);
    assert_eq!(shown["enabled"], true, "{shown}");
    assert!(shown["disabled"].is_null(), "{shown}");
    assert_eq!(shown["health"]["consecutive_failures"], 0, "{shown}");
    let (ok, out, _) = subs(bin, store, &["list", "--event", "order.created"]);
    assert!(ok && out.contains("  enabled  healthy"), "{out}");

    // Disable, with a reason: shown by show and list (text and JSON), and
    // the subscription is still listed.
    let (ok, _, err) = subs(bin, store, &["disable", &id, "--reason", "maintenance window"]);
    assert!(ok, "{err}");
    let shown = show(bin, store, &id);
    assert_eq!(shown["enabled"], false, "{shown}");
    assert_eq!(shown["disabled"]["reason"], "maintenance window", "{shown}");
    assert!(shown["disabled"]["at"].is_string(), "{shown}");
    let (ok, out, _) = subs(bin, store, &["list"]);
    assert!(ok && out.contains(&id) && out.contains("disabled since") && out.contains("(maintenance window)"), "{out}");
    let (ok, out, _) = subs(bin, store, &["list", "--event", "order.created", "--json"]);
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(ok && row["enabled"] == false && row["disabled"]["reason"] == "maintenance window", "{row}");
    let (ok, _, err) = subs(bin, store, &["disable", &id, "--reason", "  "]);
    assert!(!ok && err.contains("--reason"), "{err}");

    // The health the engine records is shown too.
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        use fastapihooks::Store as _;
        let sql = fastapihooks::store::sql::SqlStore::connect(store).await.unwrap();
        let mut health = fastapihooks::health::EndpointHealth::default();
        health.consecutive_failures = 6;
        health.given_up = 2;
        health.failing_since = Some(chrono::Utc::now() - chrono::Duration::hours(3));
        assert!(sql.record_health(&id, &health).await.unwrap());
        sql.close().await;
    });
    let shown = show(bin, store, &id);
    assert_eq!(shown["health"]["consecutive_failures"], 6, "{shown}");
    assert_eq!(shown["health"]["given_up"], 2, "{shown}");
    assert!(shown["health"]["failing_since"].is_string(), "{shown}");
    let (ok, out, _) = subs(bin, store, &["list", "--owner", "acme"]);
    assert!(ok && out.contains("failing since") && out.contains("(6 failed attempts, 2 given up)"), "{out}");

    // Enable: enabled again, with a fresh health.
    let (ok, _, err) = subs(bin, store, &["enable", &id]);
    assert!(ok, "{err}");
    let shown = show(bin, store, &id);
    assert_eq!(shown["enabled"], true, "{shown}");
    assert!(shown["disabled"].is_null(), "{shown}");
    assert_eq!(shown["health"]["consecutive_failures"], 0, "{shown}");
    assert!(shown["health"]["failing_since"].is_null(), "{shown}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn enabling_or_disabling_an_unknown_id_is_an_error_naming_it() {
    let Some(bin) = cli_bin() else { return };
    let dir = temp_dir("cli-subscriptions-unknown");
    let store = format!("sqlite://{}?mode=rwc", dir.join("subs.db").display());
    let store = store.as_str();
    let id = add(bin, store, "order.created", None);
    for args in [&["enable", "sub_nope"][..], &["disable", "sub_nope"], &["disable", "sub_nope", "--reason", "x"]] {
        let (ok, out, err) = subs(bin, store, args);
        assert!(!ok, "{args:?} succeeded: {out}");
        assert!(err.contains("no subscription `sub_nope`"), "{args:?}: {err}");
    }
    assert_eq!(show(bin, store, &id)["enabled"], true, "the other subscription is untouched");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn list_without_an_event_lists_every_subscription_and_owner_shows_only_that_owners() {
    let Some(bin) = cli_bin() else { return };
    let dir = temp_dir("cli-subscriptions-owner");
    let store = format!("sqlite://{}?mode=rwc", dir.join("subs.db").display());
    let store = store.as_str();
    let acme_created = add(bin, store, "order.created", Some("acme"));
    let globex = add(bin, store, "order.created", Some("globex"));
    let open = add(bin, store, "order.created", None);
    let acme_paid = add(bin, store, "order.paid", Some("acme"));
    let acme_upper = add(bin, store, "order.paid", Some("Acme"));

    let mut all = [&acme_created, &globex, &open, &acme_paid, &acme_upper].map(String::as_str);
    all.sort_unstable();
    assert_eq!(listed(bin, store, &[]), all, "every subscription, of every event, by id");
    assert_eq!(listed(bin, store, &["--owner", "acme"]), [acme_created.as_str(), acme_paid.as_str()]);
    assert_eq!(listed(bin, store, &["--owner", "globex"]), [globex.as_str()]);
    assert_eq!(listed(bin, store, &["--owner", "Acme"]), [acme_upper.as_str()], "owners compare exactly");
    assert!(listed(bin, store, &["--owner", "initech"]).is_empty());
    assert_eq!(listed(bin, store, &["--event", "order.created", "--owner", "acme"]), [acme_created.as_str()]);
    assert_eq!(listed(bin, store, &["--event", "order.created"]).len(), 3);
    let (ok, out, err) = subs(bin, store, &["list", "--owner", "acme"]);
    assert!(ok && !out.contains(&globex) && !out.contains(&open), "{out}");
    assert!(err.contains("2 subscription(s)"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
