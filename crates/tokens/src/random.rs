//! Randomness for secrets: the operating system's CSPRNG, never a userspace PRNG.

/// The OS random source failed; there is nothing sensible to do but refuse the
/// operation that needed a secret value.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomError;

/// `N` bytes from the operating system's CSPRNG.
///
/// # Errors
/// [`RandomError`] when the OS refuses to give randomness.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|_| RandomError)?;
    Ok(buf)
}
