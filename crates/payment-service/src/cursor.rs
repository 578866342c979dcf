//! The opaque pagination cursor of `GET /payments`.
//!
//! Pages are keyset pages over `(created_at, payment_id)` descending, so a
//! payment created while a client pages through the list never shifts or
//! repeats an entry (offset pagination would). The cursor is the position
//! of the last payment of the previous page, `base64url("<created_at>:<id>")`
//! without padding. Clients must treat it as opaque.
//!
//! It is neither signed nor bound to a user, on purpose: every query is
//! filtered by the caller's user id, so a forged or another user's cursor
//! only chooses where the caller's own list starts. Anything that does not
//! decode to a non-negative time and a UUID is refused (400), never a 500.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

/// Longer than any cursor this service hands out (20 digits, `:`, 36 characters, in base64).
const MAX_ENCODED_LEN: usize = 128;

/// A position in a user's payment list: the last payment already seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: Uuid,
}

/// The cursor could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCursor;

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.created_at, self.id.hyphenated()))
    }

    /// # Errors
    /// [`InvalidCursor`] for anything [`Cursor::encode`] would not produce.
    pub fn decode(text: &str) -> Result<Self, InvalidCursor> {
        if text.is_empty() || text.len() > MAX_ENCODED_LEN {
            return Err(InvalidCursor);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| InvalidCursor)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| InvalidCursor)?;
        let (created_at, id) = text.split_once(':').ok_or(InvalidCursor)?;
        if created_at.is_empty() || !created_at.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidCursor);
        }
        let created_at: i64 = created_at.parse().map_err(|_| InvalidCursor)?;
        let id = Uuid::try_parse(id).map_err(|_| InvalidCursor)?;
        Ok(Self { created_at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor { created_at: 1_700_000_000, id: Uuid::now_v7() };
        let encoded = cursor.encode();
        assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{encoded}");
        assert_eq!(Cursor::decode(&encoded), Ok(cursor));
        let zero = Cursor { created_at: 0, id: Uuid::nil() };
        assert_eq!(Cursor::decode(&zero.encode()), Ok(zero));
        let max = Cursor { created_at: i64::MAX, id: Uuid::max() };
        assert!(max.encode().len() <= MAX_ENCODED_LEN);
        assert_eq!(Cursor::decode(&max.encode()), Ok(max));
    }

    #[test]
    fn anything_else_is_invalid() {
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let id = Uuid::now_v7();
        let bad = [
            String::new(),
            "not base64!".to_owned(),
            "====".to_owned(),
            b64("1700000000"),
            b64(&format!(":{id}")),
            b64(&format!("-1:{id}")),
            b64(&format!("+1:{id}")),
            b64(&format!("1.5:{id}")),
            b64(&format!("99999999999999999999:{id}")),
            b64("1700000000:not-a-uuid"),
            b64(&format!("1700000000:{id}:x")),
            URL_SAFE_NO_PAD.encode([0xff, 0xfe, b':', b'1']),
            "A".repeat(MAX_ENCODED_LEN + 1),
        ];
        for text in bad {
            assert_eq!(Cursor::decode(&text), Err(InvalidCursor), "{text}");
        }
    }
}
