//! Scratch directories for the configuration tests.

use std::path::PathBuf;

/// A directory for one test, removed when dropped (each run of the suite left ~130 behind in /tmp).
pub(super) struct Scratch(PathBuf);

impl Scratch {
    /// A fresh directory holding the certificate and key files the test configurations name.
    pub(super) fn with_tls_files(prefix: &str) -> Scratch {
        let d = Scratch(std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4())));
        std::fs::create_dir_all(&d.0).expect("temp dir");
        for f in ["cert.pem", "key.pem", "ca.pem"] {
            std::fs::write(d.0.join(f), "x").expect("write");
        }
        d
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
