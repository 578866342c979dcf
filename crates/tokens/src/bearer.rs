//! The `Authorization: Bearer <token>` header (RFC 6750 §2.1).

/// Why an `Authorization` header was refused; each maps to one of the seed's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("Authorization header missing")]
    Missing,
    #[error("Invalid authorization header format. Expected: Bearer <token>")]
    Malformed,
}

/// The token of a `Bearer` credential. The scheme is case-insensitive
/// (RFC 7235 §2.1); exactly one space separates it from a non-empty token of
/// the RFC 6750 `b64token` alphabet.
///
/// # Errors
/// [`BearerError::Missing`] for no header, [`BearerError::Malformed`] otherwise.
pub fn parse_bearer(header: Option<&[u8]>) -> Result<&str, BearerError> {
    let header = header.ok_or(BearerError::Missing)?;
    let header = std::str::from_utf8(header).map_err(|_| BearerError::Malformed)?;
    let (scheme, token) = header.split_once(' ').ok_or(BearerError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(BearerError::Malformed);
    }
    let b64token = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
    if !token.bytes().all(b64token) {
        return Err(BearerError::Malformed);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_headers() {
        assert_eq!(parse_bearer(Some(b"Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(parse_bearer(Some(b"bearer abc")), Ok("abc"));
        assert_eq!(parse_bearer(None), Err(BearerError::Missing));
        for bad in
            [&b"Basic dXNlcjpwYXNz"[..], b"Bearer", b"Bearer ", b"Bearer  abc", b"Bearer a b", b"abc", b"Bearer a\xff"]
        {
            assert_eq!(parse_bearer(Some(bad)), Err(BearerError::Malformed), "{bad:?}");
        }
    }
}
