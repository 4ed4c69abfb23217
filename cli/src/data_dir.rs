//! The data folder (`--data-dir`): the store, the development CA, the sandboxes' folders. One
//! `antwort up` per folder at a time (an exclusive lock), so the leftovers of a killed run can
//! be removed safely at start.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// The locked data folder; the lock lasts as long as this value.
pub struct DataDir {
    pub path: PathBuf,
    _lock: Flock<File>,
}

impl DataDir {
    /// Creates `path` (made absolute: children run elsewhere) and locks it.
    pub fn open(path: &Path) -> Result<DataDir> {
        let path = std::path::absolute(path).map_err(|source| Error::File {
            what: "cannot resolve the data folder",
            path: path.to_path_buf(),
            source,
        })?;
        std::fs::create_dir_all(&path).map_err(|source| Error::File {
            what: "cannot create the data folder",
            path: path.clone(),
            source,
        })?;
        let lock_path = path.join("antwort.lock");
        let file = File::create(&lock_path).map_err(|source| Error::File {
            what: "cannot create",
            path: lock_path.clone(),
            source,
        })?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            Error::Usage(format!(
                "the data folder {} is in use by another `antwort up` ({errno}); stop it or \
                 pass another --data-dir",
                path.display()
            ))
        })?;
        Ok(DataDir { path, _lock: lock })
    }

    /// The pool manager's work folder; its `sandboxes/` are removed first, since sandboxes of
    /// a run that was killed must not hand their files to the next run's sandboxes.
    pub fn fresh_pool_dir(&self) -> Result<PathBuf> {
        let pool = self.path.join("pool");
        let stale = pool.join("sandboxes");
        match std::fs::remove_dir_all(&stale) {
            Ok(()) => {
                tracing::info!(dir = %stale.display(), "removed the sandboxes of an earlier run")
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::File { what: "cannot clean", path: stale, source });
            }
        }
        Ok(pool)
    }
}
