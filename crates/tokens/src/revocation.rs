//! Where revoked sessions are announced in Redis: the one name the auth
//! service writes and every gateway reads.

/// `<prefix>:revoked:{<session id>}`; the hash tag keeps each key on one
/// Redis Cluster slot.
pub fn redis_key(prefix: &str, session_id: &str) -> String {
    format!("{prefix}:revoked:{{{session_id}}}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_hash_tagged() {
        assert_eq!(super::redis_key("gh", "abc"), "gh:revoked:{abc}");
    }
}
