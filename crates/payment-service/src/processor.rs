//! The simulated card processor.
//!
//! There is no real acquirer behind this service; a pure function decides
//! each payment from its amount alone, so every test (and every client
//! developer) can produce each outcome on purpose and gets the same answer
//! every time:
//!
//! | amount in minor units ends in | status | `decline_reason` |
//! |---|---|---|
//! | `…02` (e.g. `1002` = 10.02) | `declined` | `card_declined` |
//! | `…05` (e.g. `2505` = 25.05) | `declined` | `insufficient_funds` |
//! | anything else | `succeeded` | `null` |
//!
//! The rule looks at the last two decimal digits of the minor units whatever
//! the currency's exponent (`JPY` has none, `BHD` three): it is a test
//! convention, not a monetary one.
//!
//! Because the decision is pure, the service may take it before recording
//! the payment. A real processor would be called after the payment row
//! (status `pending`) had claimed the idempotency key, with the payment id
//! as the processor's own idempotency key, so that a retry could never
//! charge twice.

/// Why the processor declined a payment (the `decline_reason` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclineReason {
    CardDeclined,
    InsufficientFunds,
}

impl DeclineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CardDeclined => "card_declined",
            Self::InsufficientFunds => "insufficient_funds",
        }
    }
}

/// The processor's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Succeeded,
    Declined(DeclineReason),
}

/// Decides a payment of `amount` minor units (see the module docs).
pub fn decide(amount: i64) -> Decision {
    match amount.rem_euclid(100) {
        2 => Decision::Declined(DeclineReason::CardDeclined),
        5 => Decision::Declined(DeclineReason::InsufficientFunds),
        _ => Decision::Succeeded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_two_digits_decide() {
        assert_eq!(decide(1000), Decision::Succeeded);
        assert_eq!(decide(1), Decision::Succeeded);
        assert_eq!(decide(1002), Decision::Declined(DeclineReason::CardDeclined));
        assert_eq!(decide(2), Decision::Declined(DeclineReason::CardDeclined));
        assert_eq!(decide(2505), Decision::Declined(DeclineReason::InsufficientFunds));
        assert_eq!(decide(5), Decision::Declined(DeclineReason::InsufficientFunds));
        // Only the last two digits count: 102 ends in 02, 1020 and 12 do not.
        assert_eq!(decide(102), Decision::Declined(DeclineReason::CardDeclined));
        assert_eq!(decide(1020), Decision::Succeeded);
        assert_eq!(decide(12), Decision::Succeeded);
        assert_eq!(decide(15), Decision::Succeeded);
        assert_eq!(decide(10_000_000_000), Decision::Succeeded);
    }

    #[test]
    fn it_is_deterministic() {
        for amount in [1, 2, 5, 99, 1002, 2505, 123_456_789] {
            assert_eq!(decide(amount), decide(amount));
        }
    }

    #[test]
    fn reasons_have_their_wire_names() {
        assert_eq!(DeclineReason::CardDeclined.as_str(), "card_declined");
        assert_eq!(DeclineReason::InsufficientFunds.as_str(), "insufficient_funds");
    }
}
