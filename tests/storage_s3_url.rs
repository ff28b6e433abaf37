//! `qiao verify s3://bucket/prefix/…` opens the bucket from the URL and the standard AWS
//! environment variables, then downloads the recording. Its own test binary: it sets process-wide
//! environment variables, which no other test may be reading at the same time.

mod common;

use common::s3::S3Server;
use qiao::storage::{download_recording, recording_prefix, store_from_s3_url, ObjectStore};

#[tokio::test]
async fn a_recording_is_downloaded_by_its_s3_url_with_credentials_from_the_environment() {
    let server = S3Server::start();
    let prefix = recording_prefix("(2024)冀0925民初1234号", "ses_1", "rec_1");
    // Written the way the server writes it: its configured prefix, then the recording's prefix.
    let writer = ObjectStore::s3(&server.config("county-a")).unwrap();
    let manifest = br#"{"segments":[{"path":"tracks/a/00000.mp4"}],"renditions":[{"path":"composite.mp4"}]}"#;
    writer.put_bytes(&format!("{prefix}/manifest.json"), manifest).await.unwrap();
    writer.put_bytes(&format!("{prefix}/tracks/a/00000.mp4"), b"segment").await.unwrap();
    writer.put_bytes(&format!("{prefix}/composite.mp4"), b"composite").await.unwrap();

    std::env::set_var("AWS_ACCESS_KEY_ID", server.access_key());
    std::env::set_var("AWS_SECRET_ACCESS_KEY", server.secret_key());
    std::env::set_var("AWS_ENDPOINT_URL_S3", server.endpoint());
    std::env::set_var("AWS_REGION", server.region());
    std::env::set_var("QIAO_S3_PATH_STYLE", "true");

    let url = format!("s3://{}/county-a/{prefix}", server.bucket());
    let (store, inner) = store_from_s3_url(&url).unwrap();
    assert_eq!(inner, format!("county-a/{prefix}"));
    assert!(!store.describe().contains(server.secret_key()));
    let dir = tempfile::tempdir().unwrap();
    download_recording(&store, &inner, dir.path()).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("manifest.json")).unwrap(), manifest);
    assert_eq!(std::fs::read(dir.path().join("tracks/a/00000.mp4")).unwrap(), b"segment");
    assert_eq!(std::fs::read(dir.path().join("composite.mp4")).unwrap(), b"composite");

    // A URL that is not s3://bucket/… and a missing credential are configuration errors.
    assert!(store_from_s3_url("http://example.com/x").is_err());
    std::env::remove_var("AWS_SECRET_ACCESS_KEY");
    assert!(store_from_s3_url(&url).is_err());
}
