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
