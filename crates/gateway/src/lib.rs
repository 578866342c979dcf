//! The Gatehouse API gateway (being built; see issue 3).
