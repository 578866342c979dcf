//! HMAC-SHA256, the one MAC every token in Gatehouse uses.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

pub(crate) type HmacSha256 = hmac::Hmac<Sha256>;

/// A MAC keyed with `key` over the concatenation of `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; the
    // fallback keeps the function total without a panic path.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| HmacSha256::new(&Default::default()));
    for part in parts {
        mac.update(part);
    }
    mac
}
