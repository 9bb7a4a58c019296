//! Small persisted files (identity, supervisor state): versioned JSON, written atomically.
//!
//! A crash at any point leaves either the old file or the new one, never a torn one: the new
//! content goes to a temporary file that is fsynced, renamed over the old one, and the
//! directory is fsynced so the rename itself survives power loss.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A persisted-file failure.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file exists but does not parse.
    #[error("{path}: corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file was written by a newer radiantd.
    #[error("{path}: format version {found} is newer than this radiantd understands ({supported})")]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
}

#[derive(Serialize, serde::Deserialize)]
struct Envelope<T> {
    format_version: u32,
    #[serde(flatten)]
    body: T,
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let io = |source| PersistError::Io { path: path.to_path_buf(), source };
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// Saves `body` under a format version.
pub fn save<T: Serialize>(path: &Path, version: u32, body: &T) -> Result<(), PersistError> {
    let env = Envelope { format_version: version, body };
    let bytes = serde_json::to_vec_pretty(&env)
        .map_err(|e| PersistError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })?;
    write_atomic(path, &bytes)
}

/// Loads a versioned file; `Ok(None)` if it does not exist.
pub fn load<T: DeserializeOwned>(path: &Path, supported: u32) -> Result<Option<T>, PersistError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Io { path: path.to_path_buf(), source });
        }
    };
    let corrupt = |reason: String| PersistError::Corrupt { path: path.to_path_buf(), reason };
    let head: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let found =
        head.get("format_version").and_then(|v| v.as_u64()).ok_or_else(|| corrupt("no format_version".into()))? as u32;
    if found > supported {
        return Err(PersistError::TooNew { path: path.to_path_buf(), found, supported });
    }
    let env: Envelope<T> = serde_json::from_value(head).map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(env.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Thing {
        a: u32,
    }

    #[test]
    fn round_trip_and_version_guard() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("thing.json");
        assert!(load::<Thing>(&p, 1).unwrap().is_none());
        save(&p, 1, &Thing { a: 7 }).unwrap();
        assert_eq!(load::<Thing>(&p, 1).unwrap(), Some(Thing { a: 7 }));
        save(&p, 2, &Thing { a: 8 }).unwrap();
        assert!(matches!(load::<Thing>(&p, 1), Err(PersistError::TooNew { found: 2, .. })));
        std::fs::write(&p, b"{not json").unwrap();
        assert!(matches!(load::<Thing>(&p, 1), Err(PersistError::Corrupt { .. })));
    }
}
