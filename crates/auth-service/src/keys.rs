//! Following the key ring: signing-key rotations without a restart.
//!
//! When the keys come from a key ring (`KEYS_DIR`, see
//! [`tokens::keyring`]), the service re-reads its manifest every interval
//! and, when it changed, swaps in the new key material: standby keys appear
//! in the JWKS before they sign, the active key signs from the next token
//! on, previous keys keep verifying until they are retired. A ring that
//! cannot be read (a half-finished manual edit, a missing file) keeps the
//! keys in use and is logged; it never takes the service down.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokens::keyring::{KeyEntry, KeyRing};
use tokio_util::sync::CancellationToken;

use crate::state::{AppState, KeyMaterial};

/// Re-reads the ring in `dir` every `interval` until `shutdown`.
pub async fn follow_key_ring(state: AppState, dir: PathBuf, interval: Duration, shutdown: CancellationToken) {
    let mut seen: Option<Vec<KeyEntry>> = KeyRing::open(&dir).ok().flatten().map(|r| r.entries().to_vec());
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ring = match KeyRing::open(&dir) {
            Ok(Some(ring)) => ring,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(error = %e, "key ring unreadable; keeping the keys in use");
                continue;
            }
        };
        if seen.as_deref() == Some(ring.entries()) {
            continue;
        }
        match ring.load() {
            Ok(loaded) => {
                let others: Vec<_> = loaded.others.into_iter().map(Arc::new).collect();
                let active = Arc::new(loaded.active);
                tracing::info!(active = active.kid(), published = others.len() + 1, "key ring reloaded");
                state.replace_keys(KeyMaterial::new(&state.config, active, &others));
                seen = Some(ring.entries().to_vec());
            }
            Err(e) => tracing::error!(error = %e, "key ring cannot be loaded; keeping the keys in use"),
        }
    }
}
