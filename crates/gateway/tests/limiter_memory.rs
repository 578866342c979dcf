//! Resident memory of the in-process rate limiter under a flood of distinct
//! client IPs (issue 7's "1,000,000 distinct client IPs keep resident memory
//! under its configured cap").
//!
//! It has its own test binary, holding this one test, so the process's RSS
//! (`VmRSS` of /proc/self/status) measures the limiter and nothing else;
//! nextest runs each test in a process of its own anyway. The limiter is
//! driven through its API: a million HTTP requests would take minutes, and
//! the gateway calls the same `check` for each request.
//!
//! # The bound
//!
//! A key held costs, on 64-bit Linux with glibc malloc:
//! - its slot in a shard's hash map: the owned key (two `Box<str>`, 16 B
//!   each) and the TAT (`u64`), 40 B, plus one control byte; a shard holds
//!   at most 100,000 / 64 = 1,563 keys, so its table has 2,048 buckets
//!   (7/8 load), 41 B × 2,048 / 1,563 ≈ 54 B per key;
//! - the two names on the heap: the class (`ip`, a 32 B minimum chunk) and
//!   the address (up to 39 B, a 48 B chunk): 80 B.
//!
//! About 134 B per key, 13.4 MB at the cap (measured: 13.4 MB when the
//! cap is first reached). Evicting then frees names in scattered places, and
//! the allocator keeps those chunks for reuse rather than returning them:
//! the test allows twice the arithmetic, 268 B per key (26.8 MB; measured
//! 20.3 MB after the million). Two checks follow from it:
//! - the whole flood grows resident memory by less than that, where a
//!   million keys kept would need at least 134 MB;
//! - the second half of the flood (half a million more distinct clients)
//!   grows it by almost nothing (under 16 B per key of the cap; measured 0):
//!   memory has a ceiling, it does not merely grow slowly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::Ipv6Addr;

use gateway::rate_limit::{MemoryLimiter, Quota};

/// `GatewayConfig::new`'s `limiter_max_keys`: what a gateway without Redis runs with.
const MAX_KEYS: usize = 100_000;
/// Twice the arithmetic of the module docs.
const BYTES_PER_KEY_BOUND: usize = 2 * 134;
/// What the second half of the flood may add, per key of the cap.
const PLATEAU_BYTES_PER_KEY: usize = 16;
const DISTINCT_CLIENTS: u32 = 1_000_000;

fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS in /proc/self/status");
    kib.trim().trim_end_matches("kB").trim().parse::<usize>().unwrap() * 1024
}

/// The `i`-th simulated client: an IPv6 address with no zero group, so its
/// text is about as long as addresses get in practice (up to 39 characters).
fn client(i: u32) -> String {
    const NETWORK: u128 = 0x2001_0db8_85a3_1111_2222_8a2e_0000_0000;
    Ipv6Addr::from(NETWORK | (0x1000_0000 + u128::from(i))).to_string()
}

#[test]
fn a_million_distinct_client_ips_stay_under_the_memory_bound() {
    // One request leaves a key's state alive for a minute, so nothing decays
    // during the test: only the cap stands between the flood and memory.
    let quota = Quota { per_minute: 1, burst: 5 };
    let limiter = MemoryLimiter::new(MAX_KEYS);
    // An abuser that spent its whole burst before the flood.
    for _ in 0..5 {
        assert!(limiter.decide("ip", "198.51.100.7", quota).is_allowed());
    }
    let before = resident_bytes();
    let (mut most_keys, mut halfway) = (0, 0);
    for i in 0..DISTINCT_CLIENTS {
        assert!(limiter.decide("ip", &client(i), quota).is_allowed(), "a new client starts with its burst");
        if i % 10_000 == 0 {
            most_keys = most_keys.max(limiter.len());
        }
        if i == DISTINCT_CLIENTS / 2 {
            halfway = resident_bytes();
        }
    }
    let after = resident_bytes();
    let (grown, second_half) = (after.saturating_sub(before), after.saturating_sub(halfway));
    let held = limiter.len();
    eprintln!(
        "{DISTINCT_CLIENTS} distinct clients: {held} keys held (cap {MAX_KEYS}), resident memory grew {:.1} MB \
         ({} B per key held; bound {BYTES_PER_KEY_BOUND} B), {:.1} MB of it in the second half",
        grown as f64 / 1e6,
        grown / held.max(1),
        second_half as f64 / 1e6,
    );
    assert!(held <= MAX_KEYS && most_keys <= MAX_KEYS, "{held} / {most_keys} keys held, cap {MAX_KEYS}");
    // The cap is used, not merely respected.
    assert!(held > MAX_KEYS * 9 / 10, "{held} keys held");
    assert!(grown < MAX_KEYS * BYTES_PER_KEY_BOUND, "resident memory grew {grown} bytes");
    assert!(second_half < MAX_KEYS * PLATEAU_BYTES_PER_KEY, "{second_half} bytes more for the second half");
    // Eviction takes the stalest keys: the flood did not wipe the abuser's debt.
    assert!(!limiter.decide("ip", "198.51.100.7", quota).is_allowed(), "the flood reset a limited client");
}
