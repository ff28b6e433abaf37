//! Unit tests: key rules, case-number encoding, the local store, the spool, backoff, and the upload
//! queue over a local store. The S3 side is tested against a real server in tests/storage_s3.rs.

use std::path::Path;
use std::time::Duration;

use super::queue::backoff;
use super::*;
use crate::store::Store;

const CASE: &str = "(2024)冀0925民初1234号";

#[test]
fn case_numbers_become_one_safe_component_and_round_trip() {
    let encoded = encode_case_id(CASE);
    assert_eq!(
        encoded, "%282024%29%E5%86%800925%E6%B0%91%E5%88%9D1234%E5%8F%B7",
        "every byte outside [A-Za-z0-9._-] is %XX, uppercase"
    );
    let tricky = [
        CASE,
        "",
        ".",
        "..",
        "../../etc/passwd",
        "/abs",
        "a/b",
        ".hidden",
        "a.b-c_d",
        "100%",
        "%25",
        "%2F",
        "back\\slash",
        "tab\tnew\nline\0nul",
        "%EMPTY",
        "空 格",
        "(2023)京01民终567号之一",
    ];
    for case in tricky {
        let encoded = encode_case_id(case);
        assert!(!encoded.is_empty(), "{case:?}");
        assert!(!encoded.contains('/'), "{case:?} -> {encoded}");
        assert!(!encoded.starts_with('.'), "{case:?} -> {encoded}");
        assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-%".contains(&b)), "{case:?} -> {encoded}");
        validate_key(&encoded).unwrap_or_else(|e| panic!("{case:?} -> {encoded}: {e}"));
        assert_eq!(decode_case_id(&encoded).as_deref(), Some(case), "round trip of {case:?}");
    }
    assert_eq!(encode_case_id("a.b"), "a.b", "a dot inside is kept");
    assert_eq!(encode_case_id(".."), "%2E.", "a leading dot is not");
    assert_ne!(encode_case_id(""), encode_case_id("%EMPTY"));
    // Distinct case numbers never share an encoding.
    let all: std::collections::HashSet<_> = tricky.iter().map(|c| encode_case_id(c)).collect();
    assert_eq!(all.len(), tricky.len());
}

#[test]
fn decoding_refuses_what_encoding_cannot_produce() {
    for bad in ["%2e", "%41", ".x", "a b", "a/b", "%", "%4", "%ZZ", "%FF"] {
        assert_eq!(decode_case_id(bad), None, "{bad:?}");
    }
}

#[test]
fn recording_prefix_has_a_fixed_shape() {
    let prefix = recording_prefix(CASE, "ses_01", "rec_02");
    assert_eq!(prefix, format!("cases/{}/sessions/ses_01/rec_02", encode_case_id(CASE)));
    assert_eq!(prefix.split('/').count(), 5);
    validate_key(&prefix).unwrap();
    // Hostile ids stay inside their component.
    let hostile = recording_prefix("../..", "../x", "a/b");
    assert_eq!(hostile.split('/').count(), 5, "{hostile}");
    validate_key(&hostile).unwrap();
}

#[test]
fn keys_are_validated() {
    for good in ["a", "a/b/c.mp4", "cases/%28x%29/s/r/manifest.json", "a..b/c", ".x/y"] {
        validate_key(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
    for bad in ["", "/a", "a/", "a//b", "..", "a/../b", "a/./b", ".", "a\\b", "a\nb", "a\0b", "a/.qiao-tmp-123"] {
        assert!(matches!(validate_key(bad), Err(StorageError::InvalidKey { .. })), "{bad:?} accepted");
    }
    assert!(validate_prefix("").is_ok());
    assert!(validate_prefix("cases/").is_ok());
    assert!(validate_prefix("cases/x").is_ok());
    assert!(validate_prefix("/").is_err());
    assert!(validate_prefix("../").is_err());
}

#[tokio::test]
async fn local_store_puts_gets_lists_and_never_shows_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = ObjectStore::local(&root);
    assert!(store.describe().contains("local directory"));

    store.put_bytes("a/b/one.bin", b"one").await.unwrap();
    let src = dir.path().join("src.bin");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &big).unwrap();
    store.put_file("a/bc/two.bin", &src).await.unwrap();
    store.put_bytes("z.txt", b"z").await.unwrap();
    store.put_bytes("a/b/one.bin", b"one, again").await.unwrap();

    assert_eq!(store.get("a/b/one.bin").await.unwrap(), b"one, again");
    assert_eq!(store.get("a/bc/two.bin").await.unwrap(), big);
    assert!(matches!(store.get("a/missing").await, Err(StorageError::NotFound(_))));
    assert!(store.exists("z.txt").await.unwrap());
    assert!(!store.exists("a/b").await.unwrap(), "a directory is not an object");
    assert!(!store.exists("nope").await.unwrap());

    assert_eq!(store.list("").await.unwrap(), ["a/b/one.bin", "a/bc/two.bin", "z.txt"]);
    assert_eq!(store.list("a/b").await.unwrap(), ["a/b/one.bin", "a/bc/two.bin"]);
    assert_eq!(store.list("a/b/").await.unwrap(), ["a/b/one.bin"]);
    assert!(store.list("q/").await.unwrap().is_empty());

    assert_eq!(store.presign_get("z.txt", Duration::from_secs(60)).await.unwrap(), None);
    assert_eq!(store.local_path("a/b/one.bin"), Some(root.join("a/b/one.bin")));
    assert_eq!(store.local_path("../etc/passwd"), None);

    // Only final names are left: the temporary files were renamed or removed.
    let mut names = Vec::new();
    collect_names(&root, &mut names);
    assert!(names.iter().all(|n| !n.starts_with(".qiao-tmp-")), "{names:?}");

    // A failed write leaves no file under the final name.
    let missing = dir.path().join("does-not-exist");
    assert!(store.put_file("c/d.bin", &missing).await.is_err());
    assert!(!store.exists("c/d.bin").await.unwrap());
}

#[tokio::test]
async fn local_store_refuses_keys_that_escape() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::local(dir.path().join("store"));
    for bad in ["../x", "/etc/passwd", "a//b", "a/../../x", ""] {
        assert!(matches!(store.put_bytes(bad, b"x").await, Err(StorageError::InvalidKey { .. })), "{bad:?}");
        assert!(matches!(store.get(bad).await, Err(StorageError::InvalidKey { .. })), "{bad:?}");
        assert!(matches!(store.exists(bad).await, Err(StorageError::InvalidKey { .. })), "{bad:?}");
    }
    assert!(matches!(store.list("../").await, Err(StorageError::InvalidKey { .. })));
    assert!(!dir.path().join("x").exists());
}

fn collect_names(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        out.push(entry.file_name().to_string_lossy().into_owned());
        if entry.file_type().unwrap().is_dir() {
            collect_names(&entry.path(), out);
        }
    }
}

#[test]
fn backoff_doubles_from_half_a_second_and_stops_at_thirty() {
    assert_eq!(backoff(1, 1.0), Duration::from_millis(500));
    assert_eq!(backoff(2, 1.0), Duration::from_secs(1));
    assert_eq!(backoff(3, 1.0), Duration::from_secs(2));
    assert_eq!(backoff(7, 1.0), Duration::from_secs(30), "32 s is capped");
    assert_eq!(backoff(u32::MAX, 1.0), Duration::from_secs(30));
    assert_eq!(backoff(0, 1.0), Duration::from_millis(500));
    assert_eq!(backoff(1, 0.9), Duration::from_millis(450), "jitter shortens");
    assert_eq!(backoff(40, 2.0), Duration::from_secs(30), "jitter never exceeds the cap");
}

#[test]
fn spool_counts_what_it_holds_and_keeps_paths_inside() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("spool/old")).unwrap();
    std::fs::write(dir.path().join("spool/old/left.bin"), [0u8; 300]).unwrap();
    let spool = Spool::open(&dir.path().join("spool"), 1000).unwrap();
    assert_eq!(spool.used_bytes(), 300, "files from a previous run are counted");
    assert!(spool.has_room(700));
    assert!(!spool.has_room(701));
    assert!(!spool.alarm());

    let path = spool.path_for("rec/seg/00001.mp4").unwrap();
    assert!(path.starts_with(spool.dir()));
    assert!(path.parent().unwrap().is_dir(), "parent directories are made");
    assert!(spool.path_for("../outside").is_err());
    assert!(spool.path_for("/abs").is_err());

    std::fs::write(dir.path().join("outside.bin"), b"x").unwrap();
    assert!(matches!(spool.resolve(&dir.path().join("outside.bin")), Err(StorageError::OutsideSpool(_))));
    assert!(matches!(spool.resolve(&dir.path().join("spool/../outside.bin")), Err(StorageError::OutsideSpool(_))));

    spool.add(500);
    assert!(spool.alarm(), "800 of 1000 is the alarm threshold");
    spool.sub(10_000);
    assert_eq!(spool.used_bytes(), 0, "never wraps");
}

async fn wait_health(
    rx: &mut tokio::sync::watch::Receiver<StorageHealth>,
    what: &str,
    f: impl FnMut(&StorageHealth) -> bool,
) -> StorageHealth {
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        rx.wait_for(f).await.expect("health sender alive").clone()
    })
    .await;
    waited.unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", *rx.borrow()))
}

#[tokio::test]
async fn queue_uploads_to_a_local_store_and_empties_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).await.unwrap();
    let spool = Spool::open(&dir.path().join("spool"), 1 << 20).unwrap();
    let objects = ObjectStore::local(dir.path().join("store"));
    let queue = UploadQueue::start(db, objects.clone(), spool.clone());

    let prefix = recording_prefix(CASE, "ses_1", "rec_1");
    let mut expected = Vec::new();
    for i in 0..5 {
        let rel = format!("rec_1/segments/{i:05}.mp4");
        let path = spool.path_for(&rel).unwrap();
        let body = format!("segment {i}").repeat(100 + i);
        std::fs::write(&path, &body).unwrap();
        let key = format!("{prefix}/segments/{i:05}.mp4");
        queue.enqueue(&key, &path).await.unwrap();
        expected.push((key, path, body));
    }
    queue.flush(Duration::from_secs(20)).await.unwrap();
    for (key, path, body) in &expected {
        assert_eq!(objects.get(key).await.unwrap(), body.as_bytes());
        assert!(!path.exists(), "{} should be deleted after upload", path.display());
    }
    let mut rx = queue.health();
    let health = wait_health(&mut rx, "an empty queue", |h| h.pending_jobs == 0).await;
    assert_eq!(health.spool_bytes, 0);
    assert_eq!(spool.used_bytes(), 0);
    assert_eq!(health.failing_since, None);

    // Refused: a key that escapes, a file outside the spool.
    let path = spool.path_for("x.bin").unwrap();
    std::fs::write(&path, b"x").unwrap();
    assert!(matches!(queue.enqueue("../x", &path).await, Err(StorageError::InvalidKey { .. })));
    let outside = dir.path().join("outside.bin");
    std::fs::write(&outside, b"x").unwrap();
    assert!(matches!(queue.enqueue("x", &outside).await, Err(StorageError::OutsideSpool(_))));
}

#[tokio::test]
async fn failing_uploads_stay_queued_and_a_new_queue_finishes_them_with_the_latest_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).await.unwrap();
    let spool = Spool::open(&dir.path().join("spool"), 1000).unwrap();
    // A store whose root is a file: every write fails.
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let queue = UploadQueue::start(db.clone(), ObjectStore::local(&blocked), spool.clone());
    let mut rx = queue.health();

    let first = spool.path_for("m/manifest-1.json").unwrap();
    std::fs::write(&first, [b'1'; 500]).unwrap();
    queue.enqueue("rec/manifest.json", &first).await.unwrap();
    let health = wait_health(&mut rx, "a failure", |h| h.failing_since.is_some()).await;
    assert!(health.last_error.as_deref().unwrap_or("").contains("rec/manifest.json"), "{health:?}");
    assert_eq!(health.pending_jobs, 1);
    assert!(first.exists(), "a failed upload keeps its spool file");
    assert!(
        matches!(queue.enqueue("other/key", &first).await, Err(StorageError::AlreadyQueued { key, .. }) if key == "rec/manifest.json"),
        "one spool file cannot be queued under two keys"
    );

    // The manifest is updated: the new file replaces the pending one, which is deleted.
    let second = spool.path_for("m/manifest-2.json").unwrap();
    std::fs::write(&second, [b'2'; 850]).unwrap();
    queue.enqueue("rec/manifest.json", &second).await.unwrap();
    assert!(!first.exists(), "the superseded file is deleted");
    let health = wait_health(&mut rx, "the alarm", |h| h.alarm).await;
    assert_eq!((health.pending_jobs, health.spool_bytes, health.spool_limit), (1, 850, 1000));

    let row = sqlx::query_as::<_, (i64, i64, Option<String>)>(
        "SELECT revision, next_attempt_at, last_error FROM upload_jobs WHERE key = 'rec/manifest.json'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(row.0, 1, "one row per key, its revision bumped");

    // Stop this queue as abruptly as a crash; a new one over the same database finishes the job.
    drop(queue);
    let objects = ObjectStore::local(dir.path().join("store"));
    let spool = Spool::open(&dir.path().join("spool"), 1000).unwrap();
    assert_eq!(spool.used_bytes(), 850);
    let queue = UploadQueue::start(db.clone(), objects.clone(), spool.clone());
    queue.flush(Duration::from_secs(20)).await.unwrap();
    assert_eq!(objects.get("rec/manifest.json").await.unwrap(), [b'2'; 850]);
    assert!(!second.exists());
    let mut rx = queue.health();
    let health = wait_health(&mut rx, "a clear alarm", |h| !h.alarm && h.pending_jobs == 0).await;
    assert_eq!(health.spool_bytes, 0);
}

#[tokio::test]
async fn a_manifest_waits_for_the_pending_objects_under_its_directory_and_recovery_retries_them_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).await.unwrap();
    let spool = Spool::open(&dir.path().join("spool"), 1 << 20).unwrap();
    let root = dir.path().join("store");
    // The segment's directory is a file: its upload fails until that is mended.
    std::fs::create_dir_all(root.join("rec")).unwrap();
    std::fs::write(root.join("rec/tracks"), b"in the way").unwrap();
    let objects = ObjectStore::local(&root);
    let queue = UploadQueue::start(db, objects.clone(), spool.clone());
    let mut rx = queue.health();
    let file = |name: &str, body: &str| {
        let path = spool.path_for(name).unwrap();
        std::fs::write(&path, body).unwrap();
        path
    };

    queue.enqueue("rec/tracks/000001.webm", &file("s1", "segment")).await.unwrap();
    wait_health(&mut rx, "the segment's failure", |h| h.failing_since.is_some()).await;
    // An updated manifest is due at once; an object of another recording, queued after it, too.
    queue.enqueue("rec/manifest.json", &file("m1", "manifest")).await.unwrap();
    queue.enqueue("other/manifest.json", &file("o1", "other")).await.unwrap();
    wait_health(&mut rx, "the other recording uploaded", |h| h.pending_jobs == 2).await;
    assert_eq!(objects.get("other/manifest.json").await.unwrap(), b"other");
    assert!(objects.get("rec/manifest.json").await.is_err(), "the manifest went up before the segment it lists");

    // The store takes the segment's directory again: an upload succeeds, and the segment is
    // retried at once rather than after its backoff, then the manifest follows.
    std::fs::remove_file(root.join("rec/tracks")).unwrap();
    queue.enqueue("third/x.bin", &file("t1", "third")).await.unwrap();
    queue.flush(Duration::from_secs(20)).await.unwrap();
    assert_eq!(objects.get("rec/tracks/000001.webm").await.unwrap(), b"segment");
    assert_eq!(objects.get("rec/manifest.json").await.unwrap(), b"manifest");
}

#[tokio::test]
async fn a_lost_spool_file_is_reported_and_does_not_block_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).await.unwrap();
    let spool = Spool::open(&dir.path().join("spool"), 1 << 20).unwrap();
    let objects = ObjectStore::local(dir.path().join("store"));
    // Enqueue while the store refuses writes, then lose the file behind the queue's back.
    std::fs::write(dir.path().join("blocked-file"), b"").unwrap();
    let queue = UploadQueue::start(db.clone(), ObjectStore::local(dir.path().join("blocked-file")), spool.clone());
    let lost = spool.path_for("lost.bin").unwrap();
    std::fs::write(&lost, b"lost").unwrap();
    queue.enqueue("lost.bin", &lost).await.unwrap();
    drop(queue);
    std::fs::remove_file(&lost).unwrap();

    let kept = spool.path_for("kept.bin").unwrap();
    std::fs::write(&kept, b"kept").unwrap();
    let queue = UploadQueue::start(db, objects.clone(), spool);
    queue.enqueue("kept.bin", &kept).await.unwrap();
    queue.flush(Duration::from_secs(20)).await.unwrap();
    assert_eq!(objects.get("kept.bin").await.unwrap(), b"kept");
    assert!(!objects.exists("lost.bin").await.unwrap());
}

#[tokio::test]
async fn download_recording_fetches_what_the_manifest_names_and_nothing_outside() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::local(dir.path().join("store"));
    let prefix = recording_prefix(CASE, "ses_1", "rec_1");
    let manifest = serde_json::json!({
        "format": "qiao-recording/1",
        "segments": [
            {"index": 0, "path": "tracks/t1/00000.mp4"},
            {"index": 1, "path": "tracks/t1/00001.mp4"}
        ],
        "renditions": [{"kind": "composite", "path": "composite.mp4"}]
    });
    store.put_bytes(&format!("{prefix}/manifest.json"), manifest.to_string().as_bytes()).await.unwrap();
    for (path, body) in [("tracks/t1/00000.mp4", "s0"), ("tracks/t1/00001.mp4", "s1"), ("composite.mp4", "c")] {
        store.put_bytes(&format!("{prefix}/{path}"), body.as_bytes()).await.unwrap();
    }
    let out = dir.path().join("out");
    download_recording(&store, &prefix, &out).await.unwrap();
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), manifest.to_string().as_bytes());
    assert_eq!(std::fs::read_to_string(out.join("tracks/t1/00001.mp4")).unwrap(), "s1");
    assert_eq!(std::fs::read_to_string(out.join("composite.mp4")).unwrap(), "c");

    // A manifest naming a path outside the recording is refused before anything is written.
    let evil_prefix = recording_prefix(CASE, "ses_1", "rec_evil");
    let evil = serde_json::json!({"segments": [{"path": "../rec_1/composite.mp4"}], "renditions": []});
    store.put_bytes(&format!("{evil_prefix}/manifest.json"), evil.to_string().as_bytes()).await.unwrap();
    let out2 = dir.path().join("out2");
    assert!(matches!(download_recording(&store, &evil_prefix, &out2).await, Err(StorageError::InvalidKey { .. })));
    assert!(!out2.exists());

    // A missing segment is an error, not a silent gap.
    store.put_bytes(&format!("{evil_prefix}/manifest.json"), br#"{"segments":[{"path":"gone.mp4"}]}"#).await.unwrap();
    assert!(matches!(
        download_recording(&store, &evil_prefix, &dir.path().join("out3")).await,
        Err(StorageError::NotFound(_))
    ));
}
