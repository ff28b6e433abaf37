//! Where recordings end up: a local directory or an S3-compatible bucket, behind one cheap-to-clone
//! handle. Keys are relative and checked ([`validate_key`]) before they touch a path or a URL.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use s3::creds::Credentials;
use s3::error::S3Error;
use s3::{Bucket, Region};

use super::{validate_key, validate_prefix, Result, StorageError};
use crate::config::{S3Config, StoreConfig};

/// Names starting with this are a local store's files being written; never a key component, never
/// listed.
pub(crate) const TEMP_PREFIX: &str = ".qiao-tmp-";

/// A presigned URL is valid for at most a week (SigV4's limit).
const MAX_PRESIGN: Duration = Duration::from_secs(604_800);

/// The object store for recordings. Cloning shares the backend (one HTTP client per bucket).
#[derive(Clone)]
pub struct ObjectStore {
    /// Shared so clones are a reference-count increment, whatever the backend holds.
    backend: Arc<Backend>,
}

enum Backend {
    Local {
        /// Every key is a path below this directory.
        root: PathBuf,
    },
    S3 {
        /// The bucket with its endpoint, region, credentials and HTTP client.
        bucket: Box<Bucket>,
        /// Prepended (with '/') to every key, so several deployments can share one bucket; empty for
        /// none. Checked like a key at construction.
        prefix: String,
    },
}

impl fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the credentials.
        f.write_str(&self.describe())
    }
}

impl ObjectStore {
    /// A store in the directory `root` (created on first write).
    pub fn local(root: impl Into<PathBuf>) -> ObjectStore {
        ObjectStore { backend: Arc::new(Backend::Local { root: root.into() }) }
    }

    /// A store in an S3-compatible bucket. No request is made here.
    pub fn s3(config: &S3Config) -> Result<ObjectStore> {
        let prefix = config.prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            validate_key(&prefix)?;
        }
        let region = match &config.endpoint {
            Some(endpoint) => Region::Custom { region: config.region.clone(), endpoint: endpoint.clone() },
            None => config.region.parse::<Region>().map_err(S3Error::from)?,
        };
        let credentials = Credentials::new(Some(&config.access_key), Some(&config.secret_key), None, None, None)
            .map_err(S3Error::from)?;
        let mut bucket = Bucket::new(&config.bucket, region, credentials)?;
        if config.path_style {
            bucket = bucket.with_path_style();
        }
        Ok(ObjectStore { backend: Arc::new(Backend::S3 { bucket, prefix }) })
    }

    /// The store the configuration names.
    pub fn from_config(config: &StoreConfig) -> Result<ObjectStore> {
        match config {
            StoreConfig::Local { root } => Ok(ObjectStore::local(root.clone())),
            StoreConfig::S3(s3) => ObjectStore::s3(s3),
        }
    }

    /// One line for logs: backend, place and prefix; never credentials.
    pub fn describe(&self) -> String {
        match &*self.backend {
            Backend::Local { root } => format!("local directory {}", root.display()),
            Backend::S3 { bucket, prefix } => format!(
                "s3 bucket {:?} prefix {:?} at {} (region {}{})",
                bucket.name(),
                prefix,
                bucket.region().endpoint(),
                bucket.region(),
                if bucket.is_path_style() { ", path-style" } else { "" }
            ),
        }
    }

    /// Stores the file at `path` under `key`. S3: streamed (multipart above 8 MiB). Local: copied to
    /// a temporary name in the destination directory, fsynced, then renamed, so the final name
    /// never holds a partial file.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        validate_key(key)?;
        match &*self.backend {
            Backend::Local { root } => {
                let dest = root.join(key);
                let src = path.to_owned();
                blocking(move || {
                    let mut file = std::fs::File::open(&src).map_err(|e| StorageError::io(&src, e))?;
                    write_atomically(&dest, |out| std::io::copy(&mut file, out).map(drop))
                })
                .await
            }
            Backend::S3 { bucket, prefix } => {
                let mut file = tokio::fs::File::open(path).await.map_err(|e| StorageError::io(path, e))?;
                bucket.put_object_stream(&mut file, full_key(prefix, key)).await?;
                Ok(())
            }
        }
    }

    /// Stores `bytes` under `key` (same guarantees as [`ObjectStore::put_file`]).
    pub async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        validate_key(key)?;
        match &*self.backend {
            Backend::Local { root } => {
                let dest = root.join(key);
                let bytes = bytes.to_vec();
                blocking(move || write_atomically(&dest, |out| out.write_all(&bytes))).await
            }
            Backend::S3 { bucket, prefix } => {
                bucket.put_object(full_key(prefix, key), bytes).await?;
                Ok(())
            }
        }
    }

    /// The whole object. [`StorageError::NotFound`] if there is none.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        match &*self.backend {
            Backend::Local { root } => {
                let path = root.join(key);
                match tokio::fs::read(&path).await {
                    Ok(bytes) => Ok(bytes),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::NotFound(key.into())),
                    Err(e) => Err(StorageError::io(path, e)),
                }
            }
            Backend::S3 { bucket, prefix } => match bucket.get_object(full_key(prefix, key)).await {
                Ok(response) => Ok(response.to_vec()),
                Err(S3Error::HttpFailWithBody(404, _)) => Err(StorageError::NotFound(key.into())),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Whether an object is stored under `key`.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        match &*self.backend {
            Backend::Local { root } => {
                let path = root.join(key);
                match tokio::fs::metadata(&path).await {
                    Ok(m) => Ok(m.is_file()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(StorageError::io(path, e)),
                }
            }
            Backend::S3 { bucket, prefix } => match bucket.object_exists(full_key(prefix, key)).await {
                Ok(exists) => Ok(exists),
                Err(S3Error::HttpFailWithBody(404, _)) => Ok(false),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Every key that starts with `prefix` (a plain string prefix: `"a/b"` also lists `"a/bc"`;
    /// end it with '/' for one directory's tree), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let mut keys = match &*self.backend {
            Backend::Local { root } => {
                // Walk only the deepest directory the prefix names.
                let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
                let start = if dir_part.is_empty() { root.clone() } else { root.join(dir_part) };
                let (root, prefix) = (root.clone(), prefix.to_owned());
                blocking(move || {
                    let mut keys = Vec::new();
                    walk(&root, &start, &mut keys)?;
                    keys.retain(|k| k.starts_with(&prefix));
                    Ok(keys)
                })
                .await?
            }
            Backend::S3 { bucket, prefix: base } => {
                let strip = if base.is_empty() { String::new() } else { format!("{base}/") };
                let pages = bucket.list(full_key(base, prefix), None).await?;
                pages
                    .into_iter()
                    .flat_map(|page| page.contents)
                    .filter_map(|object| object.key.strip_prefix(&strip).map(str::to_owned))
                    .collect()
            }
        };
        keys.sort();
        Ok(keys)
    }

    /// A URL that fetches the object without credentials for `ttl` (at most a week): `Some` for
    /// S3, `None` for a local store (stream [`ObjectStore::local_path`] instead).
    pub async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Option<String>> {
        validate_key(key)?;
        match &*self.backend {
            Backend::Local { .. } => Ok(None),
            Backend::S3 { bucket, prefix } => {
                let secs = ttl.min(MAX_PRESIGN).as_secs().max(1) as u32;
                Ok(Some(bucket.presign_get(full_key(prefix, key), secs, None).await?))
            }
        }
    }

    /// The file that holds `key` in a local store (for streaming it); `None` for S3 or an invalid
    /// key. The file may not exist.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        match &*self.backend {
            Backend::Local { root } if validate_key(key).is_ok() => Some(root.join(key)),
            _ => None,
        }
    }
}

fn full_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}/{key}")
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StorageError::io("<blocking task>", std::io::Error::other(e)))?
}

/// Writes `dest` through a temporary file in the same directory: write, fsync, rename, fsync the
/// directory. On failure the temporary file is removed and `dest` is untouched.
fn write_atomically(dest: &Path, fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> Result<()> {
    let dir = dest.parent().expect("a key has at least one component");
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
    let tmp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        fill(&mut file)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, dest)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| StorageError::io(dest, e))
}

/// Collects the keys (relative to `root`, '/'-separated) of the files below `dir`, skipping
/// temporary files. A missing `dir` has no keys.
fn walk(root: &Path, dir: &Path, keys: &mut Vec<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let kind = entry.file_type().map_err(|e| StorageError::io(&path, e))?;
        if kind.is_dir() {
            walk(root, &path, keys)?;
        } else if kind.is_file() {
            let rel = path.strip_prefix(root).expect("walked below root");
            let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
            match parts {
                Some(parts) => keys.push(parts.join("/")),
                None => tracing::warn!(path = %path.display(), "skipping a non-UTF-8 file name in the local store"),
            }
        }
    }
    Ok(())
}
