//! Path normalisation: the one canonical path that is both authorised and
//! forwarded (ASVS V13.1.1, SEED-FLAWS F18).
//!
//! The gateway does not decode and re-encode paths (every decoder disagrees
//! with some upstream's); it refuses anything whose meaning could differ
//! between the gateway and a service: dot segments (`.`, `..`, and their
//! encoded forms), encoded or literal separators (`%2f`, `%5c`, `\`), empty
//! segments (`//`), NUL (literal or `%00`) and other control characters. A
//! path that passes is forwarded byte for byte, so what the route table saw
//! is what the upstream gets.

/// Why a path was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with /")]
    NotAbsolute,
    #[error("dot segments are not allowed")]
    DotSegment,
    #[error("encoded or backslash separators are not allowed")]
    EncodedSeparator,
    #[error("empty path segments are not allowed")]
    EmptySegment,
    #[error("control characters are not allowed")]
    ControlCharacter,
    #[error("malformed percent-encoding")]
    BadEncoding,
}

/// Checks `path` (without query) and returns it unchanged when it is canonical.
///
/// # Errors
/// [`PathError`] naming the rule broken.
pub fn canonical_path(path: &str) -> Result<&str, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    // One pass over the bytes: each segment is checked when its `/` (or the
    // end) is reached.
    let mut segment_start = 1;
    let mut i = 1;
    while i <= bytes.len() {
        let Some(&byte) = bytes.get(i) else {
            // The end: the last segment may be empty (`/api/v1/users/`).
            check_segment(&bytes[segment_start..], true)?;
            break;
        };
        match byte {
            b'/' => {
                check_segment(&bytes[segment_start..i], false)?;
                segment_start = i + 1;
            }
            b'\\' => return Err(PathError::EncodedSeparator),
            b if b < 0x20 || b == 0x7f => return Err(PathError::ControlCharacter),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
                let decoded = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(PathError::BadEncoding)?;
                match decoded {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b'.' => return Err(PathError::DotSegment),
                    b if b < 0x20 || b == 0x7f => return Err(PathError::ControlCharacter),
                    _ => {}
                }
                i += 3;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(path)
}

/// A segment may not be a dot segment, nor empty unless it is the last.
fn check_segment(segment: &[u8], last: bool) -> Result<(), PathError> {
    match segment {
        b"." | b".." => Err(PathError::DotSegment),
        b"" if !last => Err(PathError::EmptySegment),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_pass_unchanged() {
        for p in ["/", "/api/v1/users/profile", "/api/v1/users/", "/api/v1/payments/abc-123", "/a/%41b", "/a/caf%C3%A9"]
        {
            assert_eq!(canonical_path(p), Ok(p), "{p}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let cases = [
            ("api/v1/users", PathError::NotAbsolute),
            ("/api/v1/users/../auth/login", PathError::DotSegment),
            ("/api/v1/users/./profile", PathError::DotSegment),
            ("/api/v1/users/%2e%2e/admin", PathError::DotSegment),
            ("/api/v1/users/%2E%2E/admin", PathError::DotSegment),
            ("/api/v1/users/.%2e/admin", PathError::DotSegment),
            ("/api/v1/users%2fadmin", PathError::EncodedSeparator),
            ("/api/v1/users%2Fadmin", PathError::EncodedSeparator),
            ("/api/v1/users%5cadmin", PathError::EncodedSeparator),
            ("/api/v1/users\\admin", PathError::EncodedSeparator),
            ("/api/v1//users/profile", PathError::EmptySegment),
            ("//api/v1/users", PathError::EmptySegment),
            ("/api/v1/users/%00", PathError::ControlCharacter),
            ("/api/v1/users/\0", PathError::ControlCharacter),
            ("/api/v1/users/%zz", PathError::BadEncoding),
            ("/api/v1/users/%", PathError::BadEncoding),
            ("/api/v1/users/..", PathError::DotSegment),
        ];
        for (p, e) in cases {
            assert_eq!(canonical_path(p), Err(e), "{p:?}");
        }
    }
}
