//! Tests of the shared parts: GCRA arithmetic, headers, client keys.

use std::net::IpAddr;
use std::time::Duration;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn ipv4_text_matches_display_for_every_octet() {
    for octet in 0..=255u8 {
        for ip in [std::net::Ipv4Addr::new(octet, 0, 255, octet), std::net::Ipv4Addr::new(1, octet, octet, 100)] {
            assert_eq!(ipv4_text(ip).as_str(), ip.to_string());
        }
    }
}

#[test]
fn ip_key_v4_by_address() {
    assert_eq!(ip_key(ip("203.0.113.7")).as_str(), "203.0.113.7");
    assert_ne!(ip_key(ip("203.0.113.7")).as_str(), ip_key(ip("203.0.113.8")).as_str());
}

#[test]
fn ip_key_v6_by_64() {
    let key = ip_key(ip("2001:db8:1:2:3:4:5:6"));
    let a = key.as_str();
    assert_eq!(a, "2001:db8:1:2::/64");
    assert_eq!(ip_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).as_str(), a);
    assert_eq!(ip_key(ip("2001:db8:1:2::")).as_str(), a);
    assert_ne!(ip_key(ip("2001:db8:1:3::1")).as_str(), a);
    assert_eq!(ip_key(ip("::1")).as_str(), "::/64");
}

#[test]
fn ip_key_v4_mapped_is_v4() {
    assert_eq!(ip_key(ip("::ffff:203.0.113.7")).as_str(), "203.0.113.7");
    assert_eq!(ip_key(ip("::ffff:203.0.113.7")).as_str(), ip_key(ip("203.0.113.7")).as_str());
}

#[test]
fn gcra_parameters() {
    let g = Gcra::new(Quota::new(100, 10)).unwrap();
    assert_eq!(g.interval, 600_000);
    assert_eq!(g.tolerance, 6_000_000);
    // Rounded up: never more generous than configured.
    assert_eq!(Gcra::new(Quota::new(7, 1)).unwrap().interval, 8_571_429);
    assert_eq!(Gcra::new(Quota::new(u32::MAX, 1)).unwrap().interval, 1);
    assert_eq!(Gcra::new(Quota::new(1, u32::MAX)).unwrap().tolerance, MAX_TOLERANCE_MICROS);
    assert!(Gcra::new(Quota::new(0, 1)).is_none());
    assert!(Gcra::new(Quota::new(1, 0)).is_none());
    assert_eq!(Quota::new(100, 10).emission_interval(), Some(Duration::from_millis(600)));
    assert_eq!(Quota::new(0, 10).emission_interval(), None);
}

#[test]
fn gcra_huge_values_do_not_overflow() {
    let g = Gcra::new(Quota::new(1, u32::MAX)).unwrap();
    let (d, next) = g.step(u64::MAX - 10, Some(u64::MAX - 5));
    assert!(d.limit() == u32::MAX && next.is_some());
    let g = Gcra::new(Quota::new(u32::MAX, u32::MAX)).unwrap();
    let (d, _) = g.step(0, None);
    assert_eq!(d.remaining(), u32::MAX - 1);
}

#[test]
fn headers_allowed() {
    let d = Decision::Allowed { limit: 10, remaining: 7, reset_after: Duration::from_millis(1800) };
    assert_eq!(
        d.headers(),
        vec![
            ("ratelimit-limit", "10".to_owned()),
            ("ratelimit-remaining", "7".to_owned()),
            ("ratelimit-reset", "2".to_owned())
        ]
    );
    for (name, value) in d.headers() {
        http::HeaderName::from_static(name);
        http::HeaderValue::from_str(&value).unwrap();
    }
}

#[test]
fn headers_limited() {
    let d =
        Decision::Limited { limit: 5, retry_after: Duration::from_millis(200), reset_after: Duration::from_secs(12) };
    assert_eq!(
        d.headers(),
        vec![
            ("ratelimit-limit", "5".to_owned()),
            ("ratelimit-remaining", "0".to_owned()),
            ("ratelimit-reset", "12".to_owned()),
            ("retry-after", "1".to_owned()),
        ]
    );
    assert_eq!(d.retry_after(), Some(Duration::from_millis(200)));
    assert_eq!(ceil_secs(Duration::ZERO), 0);
    assert_eq!(ceil_secs(Duration::from_nanos(1)), 1);
}

#[tokio::test]
async fn usable_as_a_trait_object() {
    let limiter: std::sync::Arc<dyn RateLimiter> = std::sync::Arc::new(MemoryLimiter::new(10));
    let q = Quota::new(60, 1);
    assert!(limiter.check("ip", "a", q).await.unwrap().is_allowed());
    assert!(!limiter.check("ip", "a", q).await.unwrap().is_allowed());
    limiter.ping().await.unwrap();
}
