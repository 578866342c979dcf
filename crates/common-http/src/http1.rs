//! Pieces of the HTTP/1.1 wire format (RFC 9112) read or written the same way
//! on both sides of the gateway: by the server every service listens with
//! ([`crate::serve`]) and by the gateway's upstream client (`Content-Length`
//! values, header maps built from a parsed head, field lines, decimals). One home each,
//! because a proxy whose two sides disagree on where a message ends can be
//! made to smuggle requests.

use std::ops::Range;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, InvalidHeaderValue};

/// Where `part`, a slice of `head` (a field value httparse found in it),
/// lies in `head`.
pub fn span_in(head: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - head.as_ptr() as usize;
    start..start + part.len()
}

/// The header map of a parsed head: each field's value is the `head` bytes
/// at its span ([`span_in`]), sharing `head`'s buffer instead of being
/// copied, and the map has room for `headroom` more fields (those its
/// reader adds), so adding them does not grow and rehash it.
///
/// # Errors
/// A value that is not a valid header value.
pub fn header_map_sharing(
    head: &Bytes,
    fields: Vec<(HeaderName, Range<usize>)>,
    headroom: usize,
) -> Result<HeaderMap, InvalidHeaderValue> {
    let mut headers = HeaderMap::with_capacity(fields.len() + headroom);
    for (name, span) in fields {
        headers.append(name, HeaderValue::from_maybe_shared(head.slice(span))?);
    }
    Ok(headers)
}

/// The items of a comma-separated field value (RFC 9110 §5.6.1:
/// `Connection`, `Transfer-Encoding`…), trimmed of whitespace, empty ones
/// skipped.
pub fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|item| !item.is_empty())
}

/// Appends one field line, `name: value` and CRLF, to a head being encoded.
pub fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` that is not a run of digits, is too long, or
/// disagrees with another copy of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid Content-Length")]
pub struct InvalidContentLength;

/// Folds one `Content-Length` field value into what earlier copies said
/// (`seen`). A field may repeat, or list its value more than once (RFC 9110
/// §8.6): every value must be the same run of at most 19 digits (so it fits
/// a `u64`), without sign or spaces inside.
///
/// # Errors
/// [`InvalidContentLength`] for anything else.
pub fn note_content_length(seen: &mut Option<u64>, value: &[u8]) -> Result<(), InvalidContentLength> {
    for item in value.split(|b| *b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return Err(InvalidContentLength);
        }
        let n = item.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if seen.is_some_and(|earlier| earlier != n) {
            return Err(InvalidContentLength);
        }
        *seen = Some(n);
    }
    Ok(())
}

/// An integer in decimal, as `Display` writes it, formatted without a heap
/// allocation (for header values and signed messages on the hot path).
#[derive(Debug, Clone, Copy)]
pub struct Decimal {
    /// 19 digits and a sign at most, right-aligned.
    buf: [u8; 20],
    start: usize,
}

impl Decimal {
    /// `n` in decimal.
    pub fn of_u64(n: u64) -> Self {
        let mut decimal = Self { buf: [0; 20], start: 20 };
        decimal.push_digits(n);
        decimal
    }

    /// `n` in decimal, with a `-` if negative.
    pub fn of_i64(n: i64) -> Self {
        let mut decimal = Self { buf: [0; 20], start: 20 };
        decimal.push_digits(n.unsigned_abs());
        if n < 0 {
            decimal.start -= 1;
            decimal.buf[decimal.start] = b'-';
        }
        decimal
    }

    fn push_digits(&mut self, mut n: u64) {
        loop {
            self.start -= 1;
            self.buf[self.start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return;
            }
        }
    }

    /// The digits (and sign).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_formatted_as_display_does() {
        for n in [0, 7, -7, 10, 1_795_918_505, i64::MAX, i64::MIN] {
            assert_eq!(Decimal::of_i64(n).as_bytes(), n.to_string().as_bytes(), "{n}");
        }
        for n in [0, 9, 106, 65_536, u64::MAX] {
            assert_eq!(Decimal::of_u64(n).as_bytes(), n.to_string().as_bytes(), "{n}");
        }
    }

    #[test]
    fn a_header_map_shares_the_head_it_was_parsed_from() {
        let head = Bytes::from_static(b"x-a: one\r\nx-b: two\r\n");
        let fields = vec![
            (HeaderName::from_static("x-a"), span_in(&head, &head[5..8])),
            (HeaderName::from_static("x-b"), span_in(&head, &head[15..18])),
        ];
        let headers = header_map_sharing(&head, fields, 4).unwrap();
        assert_eq!((headers["x-a"].as_bytes(), headers["x-b"].as_bytes()), (&b"one"[..], &b"two"[..]));
        assert!(headers.capacity() >= 6);
        let mut out = Vec::new();
        put_field(&mut out, b"x-a", headers["x-a"].as_bytes());
        assert_eq!(out, b"x-a: one\r\n");
    }

    #[test]
    fn list_items_are_trimmed_and_empty_ones_skipped() {
        let items: Vec<&[u8]> = list_items(b" keep-alive,, Upgrade ,\tx ,").collect();
        assert_eq!(items, [&b"keep-alive"[..], b"Upgrade", b"x"]);
        assert_eq!(list_items(b" , ").count(), 0);
    }

    #[test]
    fn content_lengths_must_be_digits_and_agree() {
        let fold = |values: &[&str]| {
            let mut seen = None;
            values.iter().try_for_each(|v| note_content_length(&mut seen, v.as_bytes())).map(|()| seen)
        };
        assert_eq!(fold(&["12"]), Ok(Some(12)));
        assert_eq!(fold(&["12, 12", " 12 "]), Ok(Some(12)));
        assert_eq!(fold(&["9999999999999999999"]), Ok(Some(9_999_999_999_999_999_999)));
        for bad in [&["1, 2"][..], &["1", "2"], &["-1"], &["+1"], &["1 2"], &[""], &["1,"], &["99999999999999999999"]] {
            assert_eq!(fold(bad), Err(InvalidContentLength), "{bad:?}");
        }
    }
}
