//! Small facts about the HTTP wire that signing and sending both need: what
//! may go in a header value, and numbers written without allocating.
//!
//! A leaf: it imports nothing of the crate, so `sign` and `send` can both
//! use it without importing each other.

/// True when `value` may be sent as a header value: no control character
/// but tab (so no CR, LF or NUL) and no DEL. The rule of
/// `http::HeaderValue::from_str`.
pub(crate) fn is_valid_header_value(value: &[u8]) -> bool {
    value.iter().all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

/// `n` in decimal, written at the end of `buf`: a number in a header costs
/// no allocation.
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_reject_cr_lf_and_nul() {
        assert!(is_valid_header_value(b"Bearer abc.def\tx"));
        assert!(is_valid_header_value("caf\u{e9}".as_bytes()));
        for bad in [&b"a\r\nx-injected: 1"[..], b"a\nb", b"a\0", b"a\x7f", b"\x01"] {
            assert!(!is_valid_header_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn decimals_are_written_in_place() {
        for n in [0, 7, 10, 1_234_567_890, u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string());
        }
    }
}
