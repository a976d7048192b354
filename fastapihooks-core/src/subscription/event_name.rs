//! The event-name rule: one `const fn`, used by the runtime
//! ([`validate_event_name`](super::validate_event_name)) and, evaluated by
//! rustc in the user's crate, by `#[hook]` (so that a bad name is a compile
//! error on the literal).
//!
//! Everything here is `const` so that the macro's check is this code, not a
//! copy of it; the message is rendered into a fixed buffer because a
//! `const fn` cannot format.

use std::fmt;

/// The longest event name, in bytes.
pub const MAX_EVENT_NAME_LEN: usize = 128;

/// Why an event name is refused: see [`event_name_error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventNameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_EVENT_NAME_LEN`] bytes (its length).
    TooLong(usize),
    /// The name contains a character outside `[A-Za-z0-9_.-]` (the first one).
    Character(char),
}

/// Checks an event name: 1 to [`MAX_EVENT_NAME_LEN`] characters from
/// `[A-Za-z0-9_.-]`. `None` when it is valid.
///
/// A `const fn`, so it also runs at compile time:
///
/// ```
/// use fastapihooks_core::subscription::{EventNameError, event_name_error};
///
/// const OK: () = assert!(event_name_error("order.created").is_none());
/// assert_eq!(event_name_error("order/created"), Some(EventNameError::Character('/')));
/// ```
pub const fn event_name_error(name: &str) -> Option<EventNameError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Some(EventNameError::Empty);
    }
    if bytes.len() > MAX_EVENT_NAME_LEN {
        return Some(EventNameError::TooLong(bytes.len()));
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
            return Some(EventNameError::Character(char_at(bytes, i)));
        }
        i += 1;
    }
    None
}

/// Panics with [`EventNameError`]'s message if `name` is invalid. For the
/// expansion of `#[hook]`, which calls it in a `const _: () = ...;` spanned
/// on the event name literal, so the panic is a compile error there.
#[doc(hidden)]
#[track_caller]
pub const fn assert_event_name(name: &str) {
    if let Some(error) = event_name_error(name) {
        panic!("{}", Message::of(error).as_str());
    }
}

impl fmt::Display for EventNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Message::of(*self).as_str())
    }
}

impl std::error::Error for EventNameError {}

/// Decodes the UTF-8 character that starts at byte `i` (a `&str`'s bytes,
/// so it is well formed; `i` is where the first non-ASCII-rule byte is, the
/// start of a character since every byte before it was ASCII).
const fn char_at(bytes: &[u8], i: usize) -> char {
    let b0 = bytes[i] as u32;
    let (width, mut code) = if b0 < 0x80 {
        (1, b0)
    } else if b0 >> 5 == 0b110 {
        (2, b0 & 0x1f)
    } else if b0 >> 4 == 0b1110 {
        (3, b0 & 0x0f)
    } else {
        (4, b0 & 0x07)
    };
    let mut k = 1;
    while k < width {
        code = (code << 6) | (bytes[i + k] as u32 & 0x3f);
        k += 1;
    }
    match char::from_u32(code) {
        Some(c) => c,
        None => char::REPLACEMENT_CHARACTER,
    }
}

/// An [`EventNameError`] rendered as text, in a `const fn`: a fixed buffer
/// that is appended to. The longest message is about 170 bytes.
struct Message {
    buf: [u8; 256],
    len: usize,
}

impl Message {
    const fn of(error: EventNameError) -> Self {
        let mut m = Self { buf: [0; 256], len: 0 };
        m.push("invalid event name: it ");
        match error {
            EventNameError::Empty => m.push("is empty"),
            EventNameError::TooLong(len) => {
                m.push("is ");
                m.push_usize(len);
                m.push(" characters long, over the limit of ");
                m.push_usize(MAX_EVENT_NAME_LEN);
            }
            EventNameError::Character(c) => {
                m.push("contains ");
                m.push_char(c);
            }
        }
        m.push("; use 1 to ");
        m.push_usize(MAX_EVENT_NAME_LEN);
        m.push(" characters from `A-Z a-z 0-9 _ . -`, like \"order.created\"");
        m
    }

    /// Appends `s`, or nothing once it would not fit (whole strings only,
    /// so the buffer stays UTF-8).
    const fn push(&mut self, s: &str) {
        let s = s.as_bytes();
        if self.len + s.len() > self.buf.len() {
            return;
        }
        let mut i = 0;
        while i < s.len() {
            self.buf[self.len + i] = s[i];
            i += 1;
        }
        self.len += s.len();
    }

    const fn push_usize(&mut self, n: usize) {
        self.push_digits(n as u64, 10, 1, b"0123456789");
    }

    /// `c` quoted like `{:?}` prints it: `'/'`, `' '`, `'\n'`, `'\u{1b}'`;
    /// a non-ASCII character with its code point, `'é' (U+00E9)`, since it
    /// may be invisible or look like an allowed one.
    const fn push_char(&mut self, c: char) {
        self.push("'");
        match c {
            '\'' => self.push("\\'"),
            '\\' => self.push("\\\\"),
            '\n' => self.push("\\n"),
            '\r' => self.push("\\r"),
            '\t' => self.push("\\t"),
            '\0' => self.push("\\0"),
            c if c.is_ascii_control() => {
                self.push("\\u{");
                self.push_digits(c as u64, 16, 1, b"0123456789abcdef");
                self.push("}");
            }
            c => {
                let mut utf8 = [0u8; 4];
                self.push(c.encode_utf8(&mut utf8));
            }
        }
        self.push("'");
        if !c.is_ascii() {
            self.push(" (U+");
            self.push_digits(c as u64, 16, 4, b"0123456789ABCDEF");
            self.push(")");
        }
    }

    /// Appends `n` in base `radix` (10 or 16) with `alphabet`, padded with
    /// zeros to `min_width` digits.
    const fn push_digits(&mut self, mut n: u64, radix: u64, min_width: usize, alphabet: &[u8]) {
        let mut digits = [b'0'; 20];
        let mut start = digits.len();
        while n > 0 || digits.len() - start < min_width {
            start -= 1;
            digits[start] = alphabet[(n % radix) as usize];
            n /= radix;
        }
        let (_, digits) = digits.split_at(start);
        if let Ok(s) = std::str::from_utf8(digits) {
            self.push(s);
        }
    }

    const fn as_str(&self) -> &str {
        let (text, _) = self.buf.split_at(self.len);
        match std::str::from_utf8(text) {
            Ok(s) => s,
            Err(_) => "invalid event name",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        assert_eq!(event_name_error("order.created"), None);
        assert_eq!(event_name_error("a-b_C.9"), None);
        assert_eq!(event_name_error(&"a".repeat(128)), None);
        assert_eq!(event_name_error(""), Some(EventNameError::Empty));
        assert_eq!(event_name_error(&"a".repeat(129)), Some(EventNameError::TooLong(129)));
        assert_eq!(event_name_error("order created"), Some(EventNameError::Character(' ')));
        assert_eq!(event_name_error("order.créé"), Some(EventNameError::Character('é')));
        assert_eq!(event_name_error("a\u{200b}b"), Some(EventNameError::Character('\u{200b}')));
        assert_eq!(event_name_error("a🦀"), Some(EventNameError::Character('🦀')));
    }

    #[test]
    fn messages_name_the_problem_and_the_fix() {
        let fix = "; use 1 to 128 characters from `A-Z a-z 0-9 _ . -`, like \"order.created\"";
        let msg = |name: &str| event_name_error(name).unwrap().to_string();
        assert_eq!(msg(""), format!("invalid event name: it is empty{fix}"));
        assert_eq!(
            msg(&"a".repeat(137)),
            format!("invalid event name: it is 137 characters long, over the limit of 128{fix}")
        );
        assert_eq!(msg("order/created"), format!("invalid event name: it contains '/'{fix}"));
        assert_eq!(msg("order created"), format!("invalid event name: it contains ' '{fix}"));
        assert_eq!(msg("a'b"), format!("invalid event name: it contains '\\''{fix}"));
        assert_eq!(msg("a\nb"), format!("invalid event name: it contains '\\n'{fix}"));
        assert_eq!(msg("a\u{1b}b"), format!("invalid event name: it contains '\\u{{1b}}'{fix}"));
        assert_eq!(msg("créé"), format!("invalid event name: it contains 'é' (U+00E9){fix}"));
        assert_eq!(msg("a\u{200b}"), format!("invalid event name: it contains '\u{200b}' (U+200B){fix}"));
        // The longest message still fits the buffer, whole.
        assert!(EventNameError::TooLong(usize::MAX).to_string().ends_with(fix));
    }

    #[test]
    fn usable_in_const_context() {
        const VALID: () = assert_event_name("order.created");
        const ERROR: Option<EventNameError> = event_name_error("a b");
        let () = VALID;
        assert_eq!(ERROR, Some(EventNameError::Character(' ')));
    }

    #[test]
    #[should_panic(expected = "invalid event name: it contains '/'")]
    fn assert_panics_with_the_message() {
        assert_event_name("order/created");
    }
}
