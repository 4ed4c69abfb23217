//! The other binaries: `antwort up` runs them as processes (binaries never link each other),
//! found next to its own executable, where `cargo build` and a release archive put them.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const GATEWAY: &str = "antwort-gateway";
pub const POOL_MANAGER: &str = "antwort-pool-manager";
pub const SANDBOX_AGENT: &str = "antwort-sandbox-agent";
pub const SCRIPTED_BACKEND: &str = "antwort-scripted-backend";

/// Where the binaries are: `--bin-dir` / `ANTWORT_BIN_DIR`, or this executable's folder.
pub struct BinDir(PathBuf);

impl BinDir {
    pub fn resolve(configured: Option<&Path>) -> Result<BinDir> {
        match configured {
            Some(dir) => Ok(BinDir(dir.to_path_buf())),
            None => {
                let exe = std::env::current_exe().map_err(|source| Error::File {
                    what: "cannot find this executable",
                    path: PathBuf::from("/proc/self/exe"),
                    source,
                })?;
                let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
                Ok(BinDir(dir))
            }
        }
    }

    /// The path of `name`, or a usage error saying how to provide it.
    pub fn find(&self, name: &str) -> Result<PathBuf> {
        let path = self.0.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Usage(format!(
                "{name} is not in {} (build it: `cargo build --release -p {}`, or point \
                 --bin-dir / ANTWORT_BIN_DIR at the folder holding it)",
                self.0.display(),
                // Each binary's package has the binary's name.
                name
            )))
        }
    }
}
