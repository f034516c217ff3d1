//! Owns `--check-config`'s look at the SQLite store file: what can be learnt without changing anything on disk.

use std::path::Path;

use rusqlite::Connection;

use super::rows::map_err;
use super::schema::MIGRATIONS;
use crate::store::StoreError;

/// What `--check-config` can learn about the store file without changing anything on disk: if it
/// exists, that it is a database this build can use (an empty one, or our schema at a version not newer
/// than this build's) in a directory where SQLite may create its journal; if not, that it could be
/// created. Nothing is created, migrated or locked; start-up does all of that in [`super::SqliteStore::open`].
pub fn check_read_only(path: &Path) -> Result<(), StoreError> {
    let unusable = |why: String| StoreError::Unavailable(format!("{}: {why}", path.display()));
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => std::path::PathBuf::from("."),
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(unusable("is a directory, not a database file".into())),
        Ok(_) => {
            may_write(path).map_err(|e| unusable(format!("cannot be written: {e}")))?;
            // WAL and journal files are created beside the database.
            may_create_in(&dir).map_err(|e| {
                unusable(format!(
                    "its directory {} does not let us create files: {e}",
                    dir.display()
                ))
            })?;
            let version = schema_version_read_only(path)?;
            let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
            match version {
                Some(v) if v > latest => Err(StoreError::Corrupt(format!(
                    "{}: database schema version {v} is newer than this build supports ({latest})",
                    path.display()
                ))),
                _ => Ok(()),
            }
        }
        // Not a directory: a file stands where a folder of the path should be; said below.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            // The file and any missing folders would be created at start: the nearest folder that
            // exists must let us.
            let mut existing = dir.as_path();
            while !existing.exists() {
                existing = match existing.parent().filter(|p| !p.as_os_str().is_empty()) {
                    Some(p) => p,
                    None => Path::new("."),
                };
            }
            if !existing.is_dir() {
                return Err(unusable(format!(
                    "cannot be created: {} is not a directory",
                    existing.display()
                )));
            }
            may_create_in(existing).map_err(|e| {
                unusable(format!(
                    "cannot be created: {} does not let us create files: {e}",
                    existing.display()
                ))
            })
        }
        Err(e) => Err(unusable(format!("cannot be inspected: {e}"))),
    }
}

/// The schema version of an existing file, read without writing: None for an empty database (start-up
/// will create the schema). A file with tables but without our version table is someone else's.
fn schema_version_read_only(path: &Path) -> Result<Option<i64>, StoreError> {
    use rusqlite::OpenFlags;
    let sidecar = |ext: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        std::path::PathBuf::from(p).exists()
    };
    // With both WAL files present a proxy may be writing: a read-only connection reads through them.
    // Otherwise `immutable=1` reads the file alone and never creates -shm or -wal files next to it.
    let conn = if sidecar("-wal") && sidecar("-shm") {
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    } else {
        Connection::open_with_flags(
            format!("file:{}?immutable=1", uri_path(path)),
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    }
    .map_err(map_err)?;
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| {
            StoreError::Corrupt(format!("{} is not a SQLite database: {e}", path.display()))
        })?;
    if tables == 0 {
        return Ok(None);
    }
    let ours: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .map_err(map_err)?;
    if ours == 0 {
        return Err(StoreError::Corrupt(format!(
            "{} holds tables but is not a dcr-proxy store",
            path.display()
        )));
    }
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )
    .map(Some)
    .map_err(map_err)
}

/// A path as the path part of an SQLite `file:` URI: everything but unreserved characters and `/`
/// percent-encoded, so `?`, `#` and `%` in a name keep their meaning.
fn uri_path(path: &Path) -> String {
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'.' | b'_' | b'~' => {
                char::from(*b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// access(2): asks the kernel whether we may, without trying (trying would change the disk).
#[cfg(unix)]
fn may_write(path: &Path) -> std::io::Result<()> {
    use rustix::fs::Access;
    rustix::fs::access(path, Access::READ_OK | Access::WRITE_OK).map_err(std::io::Error::from)
}

#[cfg(unix)]
fn may_create_in(dir: &Path) -> std::io::Result<()> {
    use rustix::fs::Access;
    rustix::fs::access(dir, Access::WRITE_OK | Access::EXEC_OK).map_err(std::io::Error::from)
}

#[cfg(not(unix))]
fn may_write(path: &Path) -> std::io::Result<()> {
    if std::fs::metadata(path)?.permissions().readonly() {
        return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
    }
    Ok(())
}

#[cfg(not(unix))]
fn may_create_in(dir: &Path) -> std::io::Result<()> {
    may_write(dir)
}
