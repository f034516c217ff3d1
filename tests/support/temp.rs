//! Scratch directories for config files and PEMs, removed when the test ends.

use std::path::{Path, PathBuf};

pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("dcr-proxy-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path)
            .expect("create a scratch directory under the system temp dir");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory in /tmp is not worth failing a test over.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
