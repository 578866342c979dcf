//! `gatehouse keys …`: the signing-key lifecycle of [`tokens::keyring`].
//!
//! `rotate` is the whole procedure in one command: a new key is published
//! as standby, the command waits until every auth instance has re-read the
//! ring and every gateway has refetched the JWKS (`--publish-ahead`, by
//! default `KEY_RELOAD_INTERVAL + JWKS_REFRESH_INTERVAL + 5` seconds), and
//! only then makes it active; the old key stays published as previous. Run
//! `retire` once the old key's last tokens have expired (the access-token
//! lifetime after the rotation); it refuses earlier unless `--force`.
//!
//! The first command on a deployment that signs with a single key file
//! (`JWT_PRIVATE_KEY_FILE`, or the key `up` generated) starts a ring in
//! `KEYS_DIR` with that key as the active one, so nothing already issued
//! stops verifying.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use serde_json::json;
use tokens::keyring::KeyRing;
use tokens::{Algorithm, SigningKey};

use crate::config::Settings;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Add a new standby key: published in the JWKS, not signing yet
    Generate,
    /// List the keys and their states
    List {
        #[arg(long)]
        json: bool,
    },
    /// Publish a new key, wait for everyone to learn it, then sign with it
    Rotate {
        /// Seconds between publishing the new key and signing with it (default:
        /// KEY_RELOAD_INTERVAL + JWKS_REFRESH_INTERVAL + 5, so every auth instance
        /// publishes it and every gateway has refetched the JWKS first)
        #[arg(long)]
        publish_ahead: Option<u64>,
    },
    /// Remove a previous key once its tokens have expired
    Retire {
        /// The key id, as `keys list` shows it. Key ids are JWK thumbprints
        /// (base64url), so one may start with `-`: it is still taken as the id.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Retire it even if tokens it signed may still be unexpired
        #[arg(long)]
        force: bool,
    },
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn algorithm(settings: &Settings) -> anyhow::Result<Algorithm> {
    let name = settings.get_var("JWT_ALGORITHM").unwrap_or_else(|| "RS256".to_owned());
    let algorithm =
        Algorithm::parse(&name).ok_or_else(|| anyhow!("JWT_ALGORITHM must be one of HS256, RS256, EdDSA"))?;
    if !algorithm.is_asymmetric() {
        bail!("HS256 keys are a shared secret, not a key ring; rotate JWT_SECRET instead (see the README)");
    }
    Ok(algorithm)
}

/// The ring in `KEYS_DIR`, started from the configured key when there is none.
fn ring(settings: &Settings, algorithm: Algorithm) -> anyhow::Result<KeyRing> {
    let dir = settings.keys_dir();
    if let Some(ring) = KeyRing::open(&dir).context("KEYS_DIR")? {
        return Ok(ring);
    }
    let current = settings.configured_key_file().ok_or_else(|| {
        anyhow!("no key ring in {} and no key to start it from; set JWT_PRIVATE_KEY_FILE", dir.display())
    })?;
    SigningKey::load_or_generate(algorithm, &current, settings.may_generate_keys())
        .with_context(|| format!("the current key {}", current.display()))?;
    let ring = KeyRing::start_from(&dir, algorithm, &current, now()).context("KEYS_DIR")?;
    println!("started a key ring in {} with the current key as active", dir.display());
    Ok(ring)
}

fn print_ring(ring: &KeyRing) {
    println!(
        "{:<44}  {:<6}  {:<8}  {:<11}  {:<11}  {:<11}",
        "KID", "ALG", "STATE", "CREATED", "ACTIVATED", "DEACTIVATED"
    );
    let opt = |t: Option<i64>| t.map_or_else(|| "-".to_owned(), |t| t.to_string());
    for k in ring.entries() {
        println!(
            "{:<44}  {:<6}  {:<8}  {:<11}  {:<11}  {:<11}",
            k.kid,
            k.algorithm,
            k.state.as_str(),
            k.created_at,
            opt(k.activated_at),
            opt(k.deactivated_at)
        );
    }
}

/// Runs one `gatehouse keys …` command.
///
/// # Errors
/// One line for the operator.
pub async fn run(settings: &Settings, command: KeysCommand) -> anyhow::Result<()> {
    let algorithm = algorithm(settings)?;
    let mut ring = ring(settings, algorithm)?;
    match command {
        KeysCommand::Generate => {
            let kid = ring.generate(algorithm, now())?;
            println!("generated {kid} (standby: published, not signing)");
        }
        KeysCommand::List { json } => {
            if json {
                println!("{}", json!(ring.entries()));
            } else {
                print_ring(&ring);
            }
        }
        KeysCommand::Rotate { publish_ahead } => {
            let reload = settings.key_reload_interval().context("configuration error")?;
            let jwks_refresh: u64 =
                settings.get_var("JWKS_REFRESH_INTERVAL").and_then(|v| v.parse().ok()).unwrap_or(60);
            let default_wait = reload + Duration::from_secs(jwks_refresh + 5);
            let wait = publish_ahead.map_or(default_wait, Duration::from_secs);
            let kid = match ring.newest_standby() {
                Some(k) => k.kid.clone(),
                None => ring.generate(algorithm, now())?,
            };
            println!("published {kid} as standby; waiting {} s before it signs", wait.as_secs());
            tokio::time::sleep(wait).await;
            // Another operator may have changed the ring meanwhile: start from what is on disk.
            let mut ring = KeyRing::open(ring.dir())?.ok_or_else(|| anyhow!("the key ring disappeared"))?;
            let (active, previous) = ring.activate_newest_standby(now())?;
            match previous {
                Some(old) => {
                    println!("{active} is active; {old} is previous (retire it after the access-token lifetime)")
                }
                None => println!("{active} is active"),
            }
        }
        KeysCommand::Retire { kid, force } => {
            let ttl: i64 = settings.get_var("ACCESS_TOKEN_TTL").and_then(|v| v.parse().ok()).unwrap_or(900);
            // Tokens verify up to 30 s past expiry (leeway): wait that out too.
            ring.retire(&kid, now(), ttl + 60, force)?;
            println!("retired {kid}");
        }
    }
    Ok(())
}
