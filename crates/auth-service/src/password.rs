//! Password hashing on a bounded pool, off the async runtime.
//!
//! Argon2id at OWASP's parameters (19 MiB, t=2, p=1) costs tens of
//! milliseconds of CPU per attempt. Hashing runs on tokio's blocking threads,
//! and a semaphore admits at most one hash per core at a time, with a bounded
//! wait queue beyond which the service answers 503: a login flood then
//! queues or is shed instead of starving every other request of CPU.
//!
//! Unknown emails are verified against a dummy hash of the same parameters,
//! so a login costs the same whether or not the account exists (no timing
//! oracle, SEED-FLAWS F11). bcrypt hashes from the seed verify and are
//! reported as needing a rehash, which login then does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl HashParams {
    /// OWASP Password Storage Cheat Sheet, Argon2id option 2.
    pub const OWASP: Self = Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 };
}

impl Default for HashParams {
    fn default() -> Self {
        Self::OWASP
    }
}

/// Hashing failed or was shed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the hashing queue is full")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub matches: bool,
    /// The hash is bcrypt or weaker Argon2 than configured: rehash on success.
    pub needs_rehash: bool,
}

struct Inner {
    argon: Argon2<'static>,
    params: HashParams,
    permits: Semaphore,
    /// Hashes admitted and not finished: running plus waiting for a permit.
    admitted: AtomicUsize,
    /// Hashes allowed in flight: the concurrency plus the queue.
    max_admitted: usize,
    running: AtomicUsize,
    dummy_hash: String,
    /// Password checks done, real or dummy: the work a login costs.
    verifications: AtomicU64,
}

/// The service's password hasher; cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher(Arc<Inner>);

impl PasswordHasher {
    /// `concurrency` hashes run at once; up to `max_waiting` more may wait.
    ///
    /// # Errors
    /// [`HashError::Failed`] for invalid parameters.
    pub fn new(params: HashParams, concurrency: usize, max_waiting: usize) -> Result<Self, HashError> {
        let argon_params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| HashError::Failed(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
        let dummy_hash = argon
            .hash_password(b"gatehouse dummy password for unknown accounts")
            .map_err(|e| HashError::Failed(e.to_string()))?
            .to_string();
        Ok(Self(Arc::new(Inner {
            argon,
            params,
            permits: Semaphore::new(concurrency.max(1)),
            admitted: AtomicUsize::new(0),
            max_admitted: concurrency.max(1) + max_waiting,
            running: AtomicUsize::new(0),
            dummy_hash,
            verifications: AtomicU64::new(0),
        })))
    }

    /// Runs `work` on a blocking thread once a permit is free.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce(&Inner) -> T + Send + 'static) -> Result<T, HashError> {
        if self.0.admitted.fetch_add(1, Ordering::SeqCst) >= self.0.max_admitted {
            self.0.admitted.fetch_sub(1, Ordering::SeqCst);
            return Err(HashError::Busy);
        }
        // Released on every path out of here, including cancellation.
        let _admission = Admission(&self.0.admitted);
        let _permit = self.0.permits.acquire().await.map_err(|_| HashError::Failed("hasher closed".into()))?;
        let _running = Admission(&self.0.running);
        self.0.running.fetch_add(1, Ordering::SeqCst);
        let inner = Arc::clone(&self.0);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| work(&inner)))
            .await
            .map_err(|e| HashError::Failed(e.to_string()))
    }

    /// Hashes a new password to a PHC string.
    ///
    /// # Errors
    /// [`HashError`] when shed or failed.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let password = zeroizing(password);
        self.run(move |inner| inner.argon.hash_password(password.as_bytes()).map(|h| h.to_string()))
            .await?
            .map_err(|e| HashError::Failed(e.to_string()))
    }

    /// Checks `password` against `stored` (Argon2 PHC or bcrypt).
    ///
    /// # Errors
    /// [`HashError`] when shed or failed; a wrong password is `Ok` with `matches: false`.
    pub async fn verify(&self, password: &str, stored: &str) -> Result<Verified, HashError> {
        let password = zeroizing(password);
        let stored = stored.to_owned();
        self.run(move |inner| inner.verify_blocking(password.as_bytes(), &stored)).await
    }

    /// The same work as [`verify`](Self::verify) against a dummy hash, for unknown accounts.
    ///
    /// # Errors
    /// [`HashError`] when shed or failed.
    pub async fn verify_dummy(&self, password: &str) -> Result<(), HashError> {
        let password = zeroizing(password);
        self.run(move |inner| {
            let _ = inner.verify_blocking(password.as_bytes(), &inner.dummy_hash);
        })
        .await
    }

    /// Hashes waiting for a permit right now.
    pub fn queue_depth(&self) -> usize {
        self.0.admitted.load(Ordering::Relaxed).saturating_sub(self.0.running.load(Ordering::Relaxed))
    }

    /// Password checks completed so far, against real or dummy hashes.
    pub fn verifications(&self) -> u64 {
        self.0.verifications.load(Ordering::Relaxed)
    }
}

/// Decrements a counter when dropped.
struct Admission<'a>(&'a AtomicUsize);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Inner {
    fn verify_blocking(&self, password: &[u8], stored: &str) -> Verified {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        if stored.starts_with("$2a$") || stored.starts_with("$2b$") || stored.starts_with("$2y$") {
            // The seed's Go bcrypt hashed at most 72 bytes and failed beyond;
            // its users' passwords are never longer, so verify is faithful.
            let matches = bcrypt::verify(password, stored).unwrap_or(false);
            return Verified { matches, needs_rehash: true };
        }
        let Ok(parsed) = PasswordHash::new(stored) else {
            return Verified { matches: false, needs_rehash: false };
        };
        let matches = self.argon.verify_password(password, &parsed).is_ok();
        let weaker = Params::try_from(&parsed)
            .map_or(true, |p| p.m_cost() < self.params.memory_kib || p.t_cost() < self.params.iterations);
        let needs_rehash = parsed.algorithm.as_str() != "argon2id" || weaker;
        Verified { matches, needs_rehash }
    }
}

/// A copy of the password that is wiped when dropped.
fn zeroizing(password: &str) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> PasswordHasher {
        PasswordHasher::new(HashParams::OWASP, 2, 16).unwrap()
    }

    #[tokio::test]
    async fn argon2id_round_trip() {
        let h = hasher();
        let stored = h.hash("correct horse battery").await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(
            h.verify("correct horse battery", &stored).await.unwrap(),
            Verified { matches: true, needs_rehash: false }
        );
        assert!(!h.verify("wrong horse battery", &stored).await.unwrap().matches);
    }

    #[tokio::test]
    async fn bcrypt_hashes_verify_and_ask_for_a_rehash() {
        let stored = bcrypt::hash("legacy password", 4).unwrap().replacen("$2b$", "$2a$", 1);
        let v = hasher().verify("legacy password", &stored).await.unwrap();
        assert_eq!(v, Verified { matches: true, needs_rehash: true });
        assert!(!hasher().verify("other password", &stored).await.unwrap().matches);
    }

    #[tokio::test]
    async fn the_dummy_hash_costs_what_a_real_one_does() {
        let h = hasher();
        let real = h.hash("some password").await.unwrap();
        let params = |s: &str| s.split('$').nth(3).map(str::to_owned);
        assert_eq!(params(&h.0.dummy_hash), params(&real), "same Argon2id parameters");
        assert!(h.0.dummy_hash.starts_with("$argon2id$"));
        h.verify_dummy("x").await.unwrap();
        h.verify("x", &real).await.unwrap();
        assert_eq!(h.verifications(), 2);
    }

    #[tokio::test]
    async fn garbage_hashes_never_match() {
        for stored in ["", "plaintext", "$argon2id$garbage", "$2a$xx"] {
            assert!(!hasher().verify("whatever1", stored).await.unwrap().matches, "{stored}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_sheds_load() {
        let h = PasswordHasher::new(HashParams::OWASP, 1, 0).unwrap();
        let many: Vec<_> = (0..8)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.verify_dummy("password123").await })
            })
            .collect();
        let results = futures_join(many.into_iter()).await;
        assert!(results.iter().any(|r| matches!(r, Err(HashError::Busy))), "some attempts are shed");
        assert!(results.iter().any(|r| r.is_ok()), "some attempts run");
        assert_eq!(h.queue_depth(), 0);
        assert!(h.verify_dummy("password123").await.is_ok(), "admission is released");
    }

    async fn futures_join(
        handles: impl Iterator<Item = tokio::task::JoinHandle<Result<(), HashError>>>,
    ) -> Vec<Result<(), HashError>> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
