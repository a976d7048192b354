//! Untrusted input: the checks an event read from the stream passes before it is handed out, and the escaping of what is logged about one that did not.
//!
//! Anything with write access to Redis can add an entry, so an entry's id,
//! its event's id, name and owner, and the carried subscribers' URLs are
//! checked before they reach a header, a URL or a log line. What is said
//! about a refused value is [`escaped`]: never the raw bytes.

use crate::event::{Event, MAX_EVENT_ID_LEN};
use crate::subscription::{MAX_EVENT_NAME_LEN, event_name_error, validate_target_url};

/// The longest owner id accepted, in bytes.
pub(super) const MAX_OWNER_LEN: usize = 256;

/// How much of a refused value is shown (escaped), in characters.
const SHOWN: usize = 48;

/// Why `event` may not be published or handed out, or `None`: a
/// well-formed id ([`EventId::is_well_formed`](crate::event::EventId::is_well_formed)), a valid event name, an
/// owner of at most [`MAX_OWNER_LEN`] bytes without control characters,
/// and carried subscribers with valid URLs and owners. The reason is safe
/// to log.
pub(super) fn event_error(event: &Event) -> Option<String> {
    if !event.id.is_well_formed() {
        return Some(format!(
            "its event id {} is not 1 to {MAX_EVENT_ID_LEN} characters from `A-Z a-z 0-9 _ - . :`",
            escaped(event.id.as_str())
        ));
    }
    if event_name_error(&event.name).is_some() {
        return Some(format!(
            "its event name {} is not 1 to {MAX_EVENT_NAME_LEN} characters from `A-Z a-z 0-9 _ . -`",
            escaped(&event.name)
        ));
    }
    if let Some(owner) = &event.owner_id
        && !is_owner_id(owner)
    {
        return Some(format!(
            "its owner id {} is over {MAX_OWNER_LEN} bytes or has control characters",
            escaped(owner)
        ));
    }
    for (n, sub) in event.subscribers.iter().enumerate() {
        // Not shown: a URL may carry a token in its query.
        if has_control(&sub.target_url) || validate_target_url(&sub.target_url).is_err() {
            return Some(format!("its subscriber #{n} has an invalid target URL"));
        }
        if sub.owner_id.as_deref().is_some_and(|o| !is_owner_id(o)) {
            return Some(format!("its subscriber #{n} has an invalid owner id"));
        }
    }
    None
}

/// A stream entry id: `<ms>-<seq>`, both decimal.
pub(super) fn is_entry_id(id: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    id.split_once('-').is_some_and(|(ms, seq)| digits(ms) && digits(seq))
}

/// `value` as it may appear in a log line: quoted, every character that is
/// not printable (controls, line and paragraph separators, bidirectional
/// overrides, ...) and every quote or backslash escaped, cut after a few
/// dozen characters.
pub(super) fn escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(SHOWN * 2) + 2);
    out.push('"');
    escape_into(&mut out, value, SHOWN);
    out.push('"');
    out
}

/// A message that may quote untrusted input (serde's, say), made safe to
/// log like [`escaped`] but unquoted and cut later.
pub(super) fn sanitized(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(400));
    escape_into(&mut out, message, 200);
    out
}

fn escape_into(out: &mut String, value: &str, max_chars: usize) {
    for (n, c) in value.chars().enumerate() {
        if n == max_chars {
            out.push_str("...");
            break;
        }
        match c {
            ' '..='~' if c != '"' && c != '\\' => out.push(c),
            // Printable beyond ASCII: escape_debug leaves it alone.
            c if !c.is_ascii() && c.escape_debug().len() == 1 => out.push(c),
            c => out.extend(c.escape_default()),
        }
    }
}

/// At most [`MAX_OWNER_LEN`] bytes, no control characters.
fn is_owner_id(owner: &str) -> bool {
    owner.len() <= MAX_OWNER_LEN && !has_control(owner)
}

/// Control characters, and the separators some log viewers break lines at.
fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventId, Payload};
    use crate::subscription::WebhookSubscription;

    fn event() -> Event {
        Event::new("order.created", Payload::null())
    }

    #[test]
    fn good_events_pass() {
        assert_eq!(event_error(&event()), None);
        let sub = WebhookSubscription::new("https://example.com/hook?x=1").unwrap().owner("tenant-1");
        let e = event().with_owner(Some("tenant 1 é".to_owned())).with_subscribers(vec![sub]);
        assert_eq!(event_error(&e), None);
        assert_eq!(event_error(&event().with_id(EventId::from_string("order:42.v1-a_b"))), None);
    }

    #[test]
    fn bad_values_are_refused_and_never_echoed_raw() {
        let crlf = "evt_1\r\n2024-01-01T00:00:00Z ERROR forged";
        let cases = [
            event().with_id(EventId::from_string(crlf)),
            event().with_id(EventId::from_string("")),
            event().with_id(EventId::from_string("a".repeat(MAX_EVENT_ID_LEN + 1))),
            Event::new("order\u{1b}[31m.created", Payload::null()),
            Event::new("order\u{85}created", Payload::null()),
            Event::new("", Payload::null()),
            event().with_owner(Some("t\r\nforged".to_owned())),
            event().with_owner(Some("t\u{2028}forged".to_owned())),
            event().with_owner(Some("o".repeat(MAX_OWNER_LEN + 1))),
        ];
        for e in cases {
            let why = event_error(&e).unwrap_or_else(|| panic!("accepted {e:?}"));
            assert!(!why.chars().any(|c| c.is_control() || c == '\u{2028}'), "{why:?}");
            assert!(why.len() < 300, "{why}");
        }
        let mut sub = WebhookSubscription::new("https://example.com/").unwrap();
        sub.target_url = "https://example.com/\r\nX: 1".to_owned();
        assert!(event_error(&event().with_subscribers(vec![sub.clone()])).is_some());
        sub.target_url = "ftp://example.com/".to_owned();
        assert!(event_error(&event().with_subscribers(vec![sub.clone()])).is_some());
        sub.target_url = "https://example.com/".to_owned();
        sub.owner_id = Some("x\ny".to_owned());
        assert!(event_error(&event().with_subscribers(vec![sub])).is_some());
    }

    #[test]
    fn escaping_quotes_controls_and_cuts() {
        assert_eq!(escaped("abc"), "\"abc\"");
        assert_eq!(escaped("a\r\nb"), "\"a\\r\\nb\"");
        assert_eq!(escaped("\"\\"), "\"\\\"\\\\\"");
        assert_eq!(escaped("x\u{85}\u{202e}é"), "\"x\\u{85}\\u{202e}é\"");
        let long = escaped(&"y".repeat(1000));
        assert!(long.len() < 60 && long.ends_with("...\""), "{long}");
        assert_eq!(sanitized("unknown variant `a\nb`"), "unknown variant `a\\nb`");
        assert!(sanitized(&"z".repeat(1000)).len() < 210);
    }

    #[test]
    fn entry_ids_are_ms_dash_seq() {
        assert!(is_entry_id("1526919030474-55"));
        assert!(is_entry_id("0-0"));
        for bad in ["", "1", "1-", "-1", "1-2-3", "1-a", "1-2\r\n", "+1-2", "123456789012345678901-0"] {
            assert!(!is_entry_id(bad), "{bad:?}");
        }
    }
}
