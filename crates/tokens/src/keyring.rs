//! The signing-key lifecycle on disk: `standby → active → previous → retired`.
//!
//! A key ring is a directory (`KEYS_DIR`, by default `$DATA_DIR/keys`) with
//! one PKCS#8 PEM file per key, `<kid>.pem`, and a manifest, `keyring.json`,
//! naming each key's state:
//!
//! - **standby**: published in the JWKS, never signs. A new key starts here
//!   so every verifier (the gateway's JWKS cache) can learn it before the
//!   first token it signs arrives;
//! - **active**: the one key that signs, published;
//! - **previous**: signed until the last rotation; published until every
//!   token it signed has expired, so those tokens keep verifying;
//! - **retired**: gone from the manifest, its file deleted.
//!
//! Only the operator's commands write the ring (`gatehouse keys …`), each
//! change as a whole new manifest renamed into place, so a service reading it
//! at any moment sees the old ring or the new one, never a mix. Services
//! re-read it periodically and pick up changes without a restart.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::{Algorithm, KeyError, SigningKey, write_private_file};

/// The manifest's file name inside the ring's directory.
pub const MANIFEST: &str = "keyring.json";

/// Where a key is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Standby,
    Active,
    Previous,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standby => "standby",
            Self::Active => "active",
            Self::Previous => "previous",
        }
    }
}

/// One key of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub kid: String,
    pub algorithm: String,
    pub state: KeyState,
    pub created_at: i64,
    /// When it became active.
    pub activated_at: Option<i64>,
    /// When it stopped signing (became previous).
    pub deactivated_at: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    keys: Vec<KeyEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a valid key ring manifest: {reason}")]
    Manifest { path: String, reason: String },
    #[error("the key ring has no active key")]
    NoActiveKey,
    #[error("no key {0} in the key ring")]
    UnknownKid(String),
    #[error("no standby key to activate; run `gatehouse keys generate` first")]
    NoStandby,
    #[error("key {kid} is {state}; only a previous key can be retired")]
    NotPrevious { kid: String, state: &'static str },
    #[error("key {kid} may still have unexpired tokens until {until} (unix time); wait, or pass --force")]
    StillInUse { kid: String, until: i64 },
    #[error("{0} keys have no key pairs; rotate JWT_SECRET instead")]
    Symmetric(&'static str),
}

/// A key ring directory and its manifest.
#[derive(Debug, Clone)]
pub struct KeyRing {
    dir: PathBuf,
    manifest: Manifest,
}

/// What a service loads from a ring: the key that signs and every key to publish.
#[derive(Debug, Clone)]
pub struct LoadedKeys {
    pub active: SigningKey,
    /// Standby and previous keys: published and accepted, never signing.
    pub others: Vec<SigningKey>,
}

impl KeyRing {
    /// The ring in `dir`, `None` when it has no manifest yet.
    ///
    /// # Errors
    /// An unreadable or malformed manifest.
    pub fn open(dir: &Path) -> Result<Option<Self>, KeyRingError> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(KeyRingError::Io { path: path.display().to_string(), source }),
        };
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| KeyRingError::Manifest { path: path.display().to_string(), reason: e.to_string() })?;
        Ok(Some(Self { dir: dir.to_owned(), manifest }))
    }

    /// Starts a ring in `dir` whose active key is the PEM at `current` (the
    /// key the service signs with today), so rotation continues from it.
    ///
    /// # Errors
    /// An invalid key, or I/O.
    pub fn start_from(dir: &Path, algorithm: Algorithm, current: &Path, now: i64) -> Result<Self, KeyRingError> {
        if !algorithm.is_asymmetric() {
            return Err(KeyRingError::Symmetric(algorithm.as_str()));
        }
        let pem = std::fs::read(current)
            .map_err(|source| KeyRingError::Io { path: current.display().to_string(), source })?;
        let key = SigningKey::from_pem(algorithm, &pem)?;
        let mut ring = Self { dir: dir.to_owned(), manifest: Manifest::default() };
        let file = ring.key_path(key.kid());
        if !file.exists() {
            write_private_file(&file, &pem)?;
        }
        ring.manifest.keys.push(KeyEntry {
            kid: key.kid().to_owned(),
            algorithm: algorithm.as_str().to_owned(),
            state: KeyState::Active,
            created_at: now,
            activated_at: Some(now),
            deactivated_at: None,
        });
        ring.save()?;
        Ok(ring)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn entries(&self) -> &[KeyEntry] {
        &self.manifest.keys
    }

    fn key_path(&self, kid: &str) -> PathBuf {
        self.dir.join(format!("{kid}.pem"))
    }

    /// Generates a new standby key; its `kid`.
    ///
    /// # Errors
    /// HS256, a crypto failure, or I/O.
    pub fn generate(&mut self, algorithm: Algorithm, now: i64) -> Result<String, KeyRingError> {
        if !algorithm.is_asymmetric() {
            return Err(KeyRingError::Symmetric(algorithm.as_str()));
        }
        let pem = SigningKey::generate_pem(algorithm)?;
        let key = SigningKey::from_pem(algorithm, pem.as_bytes())?;
        write_private_file(&self.key_path(key.kid()), pem.as_bytes())?;
        self.manifest.keys.push(KeyEntry {
            kid: key.kid().to_owned(),
            algorithm: algorithm.as_str().to_owned(),
            state: KeyState::Standby,
            created_at: now,
            activated_at: None,
            deactivated_at: None,
        });
        self.save()?;
        Ok(key.kid().to_owned())
    }

    /// The newest standby key, if any.
    pub fn newest_standby(&self) -> Option<&KeyEntry> {
        self.manifest.keys.iter().filter(|k| k.state == KeyState::Standby).max_by_key(|k| k.created_at)
    }

    /// Makes the newest standby key active and the active one previous.
    /// Returns (new active kid, old active kid).
    ///
    /// # Errors
    /// No standby key, or I/O.
    pub fn activate_newest_standby(&mut self, now: i64) -> Result<(String, Option<String>), KeyRingError> {
        let kid = self.newest_standby().map(|k| k.kid.clone()).ok_or(KeyRingError::NoStandby)?;
        let mut old = None;
        for entry in &mut self.manifest.keys {
            if entry.state == KeyState::Active {
                entry.state = KeyState::Previous;
                entry.deactivated_at = Some(now);
                old = Some(entry.kid.clone());
            } else if entry.kid == kid {
                entry.state = KeyState::Active;
                entry.activated_at = Some(now);
            }
        }
        self.save()?;
        Ok((kid, old))
    }

    /// Removes a previous key from the ring and deletes its file, once every
    /// token it signed has expired (`max_token_age` after it stopped signing)
    /// unless `force`.
    ///
    /// # Errors
    /// Unknown kid, a key that is not previous, a key still in use, or I/O.
    pub fn retire(&mut self, kid: &str, now: i64, max_token_age: i64, force: bool) -> Result<(), KeyRingError> {
        let entry =
            self.manifest.keys.iter().find(|k| k.kid == kid).ok_or_else(|| KeyRingError::UnknownKid(kid.to_owned()))?;
        if entry.state != KeyState::Previous {
            return Err(KeyRingError::NotPrevious { kid: kid.to_owned(), state: entry.state.as_str() });
        }
        let until = entry.deactivated_at.unwrap_or(now).saturating_add(max_token_age);
        if now < until && !force {
            return Err(KeyRingError::StillInUse { kid: kid.to_owned(), until });
        }
        self.manifest.keys.retain(|k| k.kid != kid);
        self.save()?;
        let path = self.key_path(kid);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(KeyRingError::Io { path: path.display().to_string(), source }),
        }
    }

    /// Loads every key of the ring: the active one to sign, the others to publish.
    ///
    /// # Errors
    /// No active key, a key file missing or invalid.
    pub fn load(&self) -> Result<LoadedKeys, KeyRingError> {
        let mut active = None;
        let mut others = Vec::new();
        for entry in &self.manifest.keys {
            let algorithm = Algorithm::parse(&entry.algorithm).ok_or_else(|| KeyRingError::Manifest {
                path: self.dir.join(MANIFEST).display().to_string(),
                reason: format!("unknown algorithm {}", entry.algorithm),
            })?;
            let path = self.key_path(&entry.kid);
            let key = SigningKey::load_or_generate(algorithm, &path, false)?;
            if key.kid() != entry.kid {
                return Err(KeyRingError::Manifest {
                    path: path.display().to_string(),
                    reason: format!("the key's id is {}, the manifest says {}", key.kid(), entry.kid),
                });
            }
            if entry.state == KeyState::Active {
                active = Some(key);
            } else {
                others.push(key);
            }
        }
        Ok(LoadedKeys { active: active.ok_or(KeyRingError::NoActiveKey)?, others })
    }

    /// Writes the manifest to a temporary file and renames it into place.
    fn save(&self) -> Result<(), KeyRingError> {
        let path = self.dir.join(MANIFEST);
        let io = |source| KeyRingError::Io { path: path.display().to_string(), source };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let text = serde_json::to_string_pretty(&self.manifest)
            .map_err(|e| KeyRingError::Manifest { path: path.display().to_string(), reason: e.to_string() })?;
        let tmp = self.dir.join(format!(".{MANIFEST}.{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_moves_standby_active_previous_retired() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("current.pem");
        std::fs::write(&current, SigningKey::generate_pem(Algorithm::EdDsa).unwrap()).unwrap();
        let ring_dir = dir.path().join("ring");
        assert!(KeyRing::open(&ring_dir).unwrap().is_none());
        let mut ring = KeyRing::start_from(&ring_dir, Algorithm::EdDsa, &current, 100).unwrap();
        let first = ring.load().unwrap().active.kid().to_owned();
        assert!(matches!(ring.activate_newest_standby(110), Err(KeyRingError::NoStandby)));

        let second = ring.generate(Algorithm::EdDsa, 120).unwrap();
        let loaded = KeyRing::open(&ring_dir).unwrap().unwrap().load().unwrap();
        assert_eq!(loaded.active.kid(), first, "a standby key never signs");
        assert_eq!(loaded.others.iter().map(SigningKey::kid).collect::<Vec<_>>(), vec![second.as_str()]);

        assert_eq!(ring.activate_newest_standby(130).unwrap(), (second.clone(), Some(first.clone())));
        let reopened = KeyRing::open(&ring_dir).unwrap().unwrap();
        assert_eq!(reopened.load().unwrap().active.kid(), second);
        let states: Vec<_> = reopened.entries().iter().map(|e| (e.kid.clone(), e.state)).collect();
        assert_eq!(states, vec![(first.clone(), KeyState::Previous), (second.clone(), KeyState::Active)]);

        let mut ring = reopened;
        assert!(matches!(ring.retire(&second, 10_000, 960, false), Err(KeyRingError::NotPrevious { .. })));
        assert!(matches!(ring.retire(&first, 500, 960, false), Err(KeyRingError::StillInUse { until: 1090, .. })));
        ring.retire(&first, 1090, 960, false).unwrap();
        assert!(!ring_dir.join(format!("{first}.pem")).exists());
        assert_eq!(KeyRing::open(&ring_dir).unwrap().unwrap().entries().len(), 1);
        assert!(matches!(ring.retire("nope", 0, 0, true), Err(KeyRingError::UnknownKid(_))));
    }

    #[test]
    fn hs256_has_no_ring_and_a_corrupt_manifest_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = KeyRing { dir: dir.path().to_owned(), manifest: Manifest::default() };
        assert!(matches!(ring.generate(Algorithm::Hs256, 0), Err(KeyRingError::Symmetric("HS256"))));
        std::fs::write(dir.path().join(MANIFEST), "{not json").unwrap();
        let e = KeyRing::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("keyring.json") && e.contains("not a valid key ring manifest"), "{e}");
        std::fs::write(dir.path().join(MANIFEST), r#"{"keys":[]}"#).unwrap();
        assert!(matches!(KeyRing::open(dir.path()).unwrap().unwrap().load(), Err(KeyRingError::NoActiveKey)));
    }
}
