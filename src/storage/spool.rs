//! The local spool: segment files wait here until the object store has them. It knows how many
//! bytes it holds (scanned at open, then kept up to date by the upload queue) so the recorder can
//! ask for room and the health report can raise an alarm before the disk fills.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{validate_key, Result, StorageError};

/// The spool directory and its usage. Cloning shares the counter.
#[derive(Clone, Debug)]
pub struct Spool {
    /// Shared by every clone: the recorder, the queue's enqueue path and its worker.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Canonical (symlinks resolved), so "is this path inside the spool" is a prefix test.
    dir: PathBuf,
    /// The usage the alarm is measured against (80%) and `has_room` refuses beyond.
    limit_bytes: u64,
    /// Bytes of the files in the spool: the scan at open, plus enqueued files, minus deleted ones.
    used_bytes: AtomicU64,
}

impl Spool {
    /// Creates `dir` if needed and counts the bytes already in it (files left by a previous run).
    /// Blocking: call it at start-up.
    pub fn open(dir: &Path, limit_bytes: u64) -> Result<Spool> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let dir = dir.canonicalize().map_err(|e| StorageError::io(dir, e))?;
        let used = scan(&dir)?;
        Ok(Spool { inner: Arc::new(Inner { dir, limit_bytes, used_bytes: AtomicU64::new(used) }) })
    }

    /// The spool directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Where to write the spool file `rel` (a key-like relative path, checked like a key); its
    /// parent directories are created.
    pub fn path_for(&self, rel: &str) -> Result<PathBuf> {
        validate_key(rel)?;
        let path = self.inner.dir.join(rel);
        let parent = path.parent().expect("below the spool dir");
        std::fs::create_dir_all(parent).map_err(|e| StorageError::io(parent, e))?;
        Ok(path)
    }

    /// Bytes currently held.
    pub fn used_bytes(&self) -> u64 {
        self.inner.used_bytes.load(Ordering::Relaxed)
    }

    pub fn limit_bytes(&self) -> u64 {
        self.inner.limit_bytes
    }

    /// Whether `bytes` more fit under the limit.
    pub fn has_room(&self, bytes: u64) -> bool {
        self.used_bytes().saturating_add(bytes) <= self.inner.limit_bytes
    }

    /// Whether usage is at or above 80% of the limit.
    pub fn alarm(&self) -> bool {
        alarm(self.used_bytes(), self.inner.limit_bytes)
    }

    /// `path` canonicalised, if it is a file inside the spool.
    pub(crate) fn resolve(&self, path: &Path) -> Result<PathBuf> {
        let canonical = path.canonicalize().map_err(|e| StorageError::io(path, e))?;
        if canonical.starts_with(&self.inner.dir) && canonical != self.inner.dir {
            Ok(canonical)
        } else {
            Err(StorageError::OutsideSpool(path.to_owned()))
        }
    }

    pub(crate) fn add(&self, bytes: u64) {
        self.inner.used_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, bytes: u64) {
        // Saturating: a file changed behind our back must not wrap the counter.
        let _ =
            self.inner.used_bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| Some(u.saturating_sub(bytes)));
    }

    /// Deletes a spool file and subtracts its size. Only the caller whose `remove_file` succeeds
    /// subtracts, so two racing deletions count once. A file already gone is not an error.
    pub(crate) async fn remove(&self, path: &Path) -> Result<()> {
        debug_assert!(path.starts_with(&self.inner.dir));
        let size = match tokio::fs::metadata(path).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::io(path, e)),
        };
        match tokio::fs::remove_file(path).await {
            Ok(()) => {
                self.sub(size);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(path, e)),
        }
    }
}

pub(crate) fn alarm(used: u64, limit: u64) -> bool {
    // used >= 0.8 * limit, without floating point.
    (used as u128) * 5 >= (limit as u128) * 4
}

fn scan(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let kind = entry.file_type().map_err(|e| StorageError::io(entry.path(), e))?;
        if kind.is_dir() {
            total += scan(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata().map_err(|e| StorageError::io(entry.path(), e))?.len();
        }
    }
    Ok(total)
}
