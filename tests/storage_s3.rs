//! Recording storage against a real S3 server (s3s-fs, which checks SigV4 signatures): objects,
//! listings and presigned URLs; the upload queue emptying the spool; an outage during which jobs
//! wait with backoff and after which nothing is lost; a queue restarted over the same database.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::s3::S3Server;
use qiao::storage::{
    download_recording, recording_prefix, ObjectStore, Spool, StorageError, StorageHealth, UploadQueue,
};
use qiao::store::Store;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

const CASE: &str = "(2024)冀0925民初1234号";

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_test_writer()
        .try_init();
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Deterministic, incompressible-looking bytes.
fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn wait_health(
    rx: &mut watch::Receiver<StorageHealth>,
    what: &str,
    f: impl FnMut(&StorageHealth) -> bool,
) -> StorageHealth {
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        rx.wait_for(f).await.expect("health sender alive").clone()
    })
    .await;
    waited.unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", *rx.borrow()))
}

/// Writes `files` (relative spool path → bytes) into the spool and enqueues each under
/// `{prefix}/{rel}`; returns key → SHA-256 and the spool paths.
async fn spool_and_enqueue(
    queue: &UploadQueue,
    spool: &Spool,
    prefix: &str,
    files: &[(String, Vec<u8>)],
) -> (BTreeMap<String, [u8; 32]>, Vec<PathBuf>) {
    let mut expected = BTreeMap::new();
    let mut paths = Vec::new();
    for (rel, bytes) in files {
        let path = spool.path_for(rel).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let key = format!("{prefix}/{rel}");
        queue.enqueue(&key, &path).await.unwrap();
        expected.insert(key, sha256(bytes));
        paths.push(path);
    }
    (expected, paths)
}

async fn assert_stored(store: &ObjectStore, prefix: &str, expected: &BTreeMap<String, [u8; 32]>) {
    let listed = store.list(&format!("{prefix}/")).await.unwrap();
    assert_eq!(listed, expected.keys().cloned().collect::<Vec<_>>(), "exactly the enqueued keys are stored");
    for (key, digest) in expected {
        let bytes = store.get(key).await.unwrap();
        assert_eq!(&sha256(&bytes), digest, "{key} differs from the spooled file");
    }
}

fn segments(count: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    (0..count).map(|i| (format!("tracks/t1/{i:05}.mp4"), body(seed + i as u64, 20_000 + 1_000 * i))).collect()
}

#[tokio::test]
async fn objects_round_trip_through_a_real_s3_server_that_checks_signatures() {
    init_tracing();
    let server = S3Server::start();
    let store = ObjectStore::s3(&server.config("deployment-a")).unwrap();
    let described = format!("{} {store:?}", store.describe());
    assert!(described.contains("recordings") && described.contains("deployment-a"), "{described}");
    assert!(!described.contains(server.secret_key()), "the secret never reaches a log: {described}");

    let prefix = recording_prefix(CASE, "ses_1", "rec_1");
    let manifest_key = format!("{prefix}/manifest.json");
    store.put_bytes(&manifest_key, br#"{"segments":[]}"#).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.mp4");
    std::fs::write(&small, body(1, 70_000)).unwrap();
    store.put_file(&format!("{prefix}/tracks/t1/00000.mp4"), &small).await.unwrap();
    // Above rust-s3's 8 MiB chunk: a multipart upload.
    let large = dir.path().join("large.mp4");
    let large_body = body(2, 9 * 1024 * 1024 + 123);
    std::fs::write(&large, &large_body).unwrap();
    store.put_file(&format!("{prefix}/composite.mp4"), &large).await.unwrap();

    assert_eq!(store.get(&manifest_key).await.unwrap(), br#"{"segments":[]}"#);
    assert_eq!(store.get(&format!("{prefix}/tracks/t1/00000.mp4")).await.unwrap(), body(1, 70_000));
    assert_eq!(sha256(&store.get(&format!("{prefix}/composite.mp4")).await.unwrap()), sha256(&large_body));
    assert!(store.exists(&manifest_key).await.unwrap());
    assert!(!store.exists(&format!("{prefix}/missing.mp4")).await.unwrap());
    assert!(matches!(store.get(&format!("{prefix}/missing.mp4")).await, Err(StorageError::NotFound(_))));
    assert!(matches!(store.put_bytes("../escape", b"x").await, Err(StorageError::InvalidKey { .. })));

    assert_eq!(
        store.list(&format!("{prefix}/")).await.unwrap(),
        [format!("{prefix}/composite.mp4"), manifest_key.clone(), format!("{prefix}/tracks/t1/00000.mp4")]
    );
    assert_eq!(store.list("cases/").await.unwrap().len(), 3);
    // The configured prefix is really in the bucket, and another prefix sees none of it.
    let root_view = ObjectStore::s3(&server.config("")).unwrap();
    assert!(root_view.exists(&format!("deployment-a/{manifest_key}")).await.unwrap());
    let other = ObjectStore::s3(&server.config("deployment-b")).unwrap();
    assert!(other.list("").await.unwrap().is_empty());

    // A presigned URL fetches the object without credentials; a tampered one is refused.
    let url = store.presign_get(&manifest_key, Duration::from_secs(300)).await.unwrap().expect("S3 presigns");
    assert!(url.starts_with(&server.endpoint()), "{url}");
    let http = reqwest::Client::new();
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), br#"{"segments":[]}"#);
    let tampered = url.replace("manifest.json", "composite.mp4");
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 403, "the signature covers the key");
    let unsigned = url.split('?').next().unwrap();
    assert_eq!(http.get(unsigned).send().await.unwrap().status(), 403, "anonymous requests are refused");

    // A client with the wrong secret is refused: the server checks signatures.
    let mut wrong = server.config("deployment-a");
    wrong.secret_key = "not-the-secret".into();
    let intruder = ObjectStore::s3(&wrong).unwrap();
    match intruder.put_bytes(&format!("{prefix}/forged.mp4"), b"forged").await {
        Err(StorageError::S3(s3::error::S3Error::HttpFailWithBody(403, _))) => {}
        other => panic!("a wrong secret must be refused with 403, got {other:?}"),
    }
    assert!(intruder.get(&manifest_key).await.is_err());
    assert!(!store.exists(&format!("{prefix}/forged.mp4")).await.unwrap());
}

#[tokio::test]
async fn the_queue_uploads_spooled_files_and_deletes_them_from_the_spool() {
    init_tracing();
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).await.unwrap();
    let spool = Spool::open(&dir.path().join("spool"), 64 << 20).unwrap();
    let store = ObjectStore::s3(&server.config("q")).unwrap();
    let queue = UploadQueue::start(db, store.clone(), spool.clone());

    let prefix = recording_prefix(CASE, "ses_q", "rec_q");
    let mut files = segments(5, 10);
    files.push(("composite.mp4".into(), body(99, 9 * 1024 * 1024 + 1)));
    let (expected, paths) = spool_and_enqueue(&queue, &spool, &prefix, &files).await;
    queue.flush(Duration::from_secs(60)).await.unwrap();

    assert_stored(&store, &prefix, &expected).await;
    for path in &paths {
        assert!(!path.exists(), "{} should be deleted once stored", path.display());
    }
    let health = wait_health(&mut queue.health(), "an empty queue", |h| h.pending_jobs == 0).await;
    assert_eq!((health.spool_bytes, health.alarm, health.failing_since.is_some()), (0, false, false), "{health:?}");

    // The recording can be fetched back by its manifest, as `qiao verify s3://…` does.
    let manifest = serde_json::json!({
        "segments": files.iter().filter(|(rel, _)| rel.starts_with("tracks/")).map(|(rel, _)| serde_json::json!({"path": rel})).collect::<Vec<_>>(),
        "renditions": [{"kind": "composite", "path": "composite.mp4"}],
    });
    store.put_bytes(&format!("{prefix}/manifest.json"), manifest.to_string().as_bytes()).await.unwrap();
    let out = dir.path().join("download");
    download_recording(&store, &prefix, &out).await.unwrap();
    for (rel, bytes) in &files {
        assert_eq!(sha256(&std::fs::read(out.join(rel)).unwrap()), sha256(bytes), "{rel}");
    }
}

/// Polls the queue's table (bounded) until `f` holds for its rows (key, attempts, next_attempt_at).
async fn wait_rows(
    db: &Store,
    what: &str,
    mut f: impl FnMut(&[(String, i64, i64)]) -> bool,
) -> Vec<(String, i64, i64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT key, attempts, next_attempt_at FROM upload_jobs ORDER BY id")
                .fetch_all(db.pool())
                .await
                .unwrap();
        if f(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn an_outage_keeps_jobs_pending_with_backoff_and_afterwards_nothing_is_lost() {
    init_tracing();
    let mut server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).await.unwrap();
    let spool = Spool::open(&dir.path().join("spool"), 64 << 20).unwrap();
    let store = ObjectStore::s3(&server.config("outage")).unwrap();
    let queue = UploadQueue::start(db.clone(), store.clone(), spool.clone());
    let mut health = queue.health();
    let prefix = recording_prefix(CASE, "ses_o", "rec_o");

    // Some segments arrive while S3 is up...
    let before = segments(3, 100);
    let (mut expected, _) = spool_and_enqueue(&queue, &spool, &prefix, &before).await;
    queue.flush(Duration::from_secs(60)).await.unwrap();

    // ...then it goes away while more are recorded.
    server.stop();
    let during: Vec<_> = segments(8, 200).into_iter().skip(3).collect();
    let (more, paths) = spool_and_enqueue(&queue, &spool, &prefix, &during).await;
    expected.extend(more);
    let failing = wait_health(&mut health, "the failure to show", |h| h.failing_since.is_some()).await;
    assert!(failing.last_error.is_some(), "{failing:?}");
    let since = failing.failing_since.unwrap();

    // Retries back off: reaching a third attempt takes at least 0.85 × (0.5 + 1) s.
    let rows = wait_rows(&db, "a third attempt", |rows| rows.iter().any(|r| r.1 >= 3)).await;
    let elapsed = since.elapsed().unwrap();
    assert!(elapsed >= Duration::from_millis(1_250), "3 attempts within {elapsed:?}: no backoff ({rows:?})");
    assert_eq!(rows.len(), during.len(), "every job is still pending: {rows:?}");
    assert!(rows.iter().any(|r| r.2 > unix_ms()), "the failed job waits for its retry time: {rows:?}");
    let attempts: i64 = rows.iter().map(|r| r.1).sum();
    assert!(attempts <= 6, "the queue probes the store, it does not hammer it: {rows:?}");
    let now = health.borrow().clone();
    assert_eq!(now.pending_jobs, during.len() as u64, "{now:?}");
    assert_eq!(now.spool_bytes, during.iter().map(|(_, b)| b.len() as u64).sum::<u64>(), "{now:?}");
    assert_eq!(now.failing_since, Some(since), "one streak, one start: {now:?}");
    for path in &paths {
        assert!(path.exists(), "{} was deleted before it was stored", path.display());
    }

    // S3 comes back: everything is uploaded, the health recovers, the spool empties.
    server.restart();
    queue.flush(Duration::from_secs(90)).await.unwrap();
    let recovered = wait_health(&mut health, "recovery", |h| h.failing_since.is_none() && h.pending_jobs == 0).await;
    assert_eq!((recovered.spool_bytes, recovered.last_error), (0, None));
    assert_stored(&store, &prefix, &expected).await;
    for path in &paths {
        assert!(!path.exists());
    }
}

#[tokio::test]
async fn a_queue_restarted_over_the_same_database_uploads_what_the_previous_one_left() {
    init_tracing();
    let mut server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let store = ObjectStore::s3(&server.config("restart")).unwrap();
    let prefix = recording_prefix(CASE, "ses_r", "rec_r");
    let files = segments(4, 300);

    server.stop();
    let expected = {
        let db = Store::open(dir.path()).await.unwrap();
        let spool = Spool::open(&spool_dir, 64 << 20).unwrap();
        let queue = UploadQueue::start(db.clone(), store.clone(), spool.clone());
        let (expected, _) = spool_and_enqueue(&queue, &spool, &prefix, &files).await;
        wait_health(&mut queue.health(), "a failure", |h| h.failing_since.is_some()).await;
        assert!(matches!(
            queue.flush(Duration::from_millis(200)).await,
            Err(StorageError::FlushTimeout { pending: 4 })
        ));
        // The process ends here, uploads undone: the queue, its worker and the database handle go.
        drop(queue);
        db.pool().close().await;
        expected
    };

    server.restart();
    let db = Store::open(dir.path()).await.unwrap();
    let spool = Spool::open(&spool_dir, 64 << 20).unwrap();
    assert_eq!(spool.used_bytes(), files.iter().map(|(_, b)| b.len() as u64).sum::<u64>());
    let queue = UploadQueue::start(db, store.clone(), spool.clone());
    queue.flush(Duration::from_secs(60)).await.unwrap();
    assert_stored(&store, &prefix, &expected).await;
    assert_eq!(spool.used_bytes(), 0);
    assert!(spool_files(spool.dir()).is_empty(), "{:?}", spool_files(spool.dir()));
}

fn spool_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(spool_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}
