//! `qiao verify <dir>` checks a recorded session offline against the server's published key and
//! names the segment that was changed. (The recorder that writes real segments is the recording
//! issue's; here the segments are stand-in bytes, chained and signed exactly as the server does.)

mod common;

use common::server::TestServer;
use qiao::record::manifest::{chain_next, sha256_hex, Manifest, Segment, ZERO_CHAIN};
use qiao::record::SigningKeys;

fn qiao(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_qiao")).args(args).output().expect("qiao runs")
}

#[tokio::test]
async fn qiao_verify_accepts_a_signed_recording_and_names_a_changed_segment() {
    let s = TestServer::start().await;
    let published = s.get("/api/v1/recordings/public-key").await["public_key"].as_str().unwrap().to_string();
    // The server's own key, from its data dir (as the recorder will use it).
    let keys = SigningKeys::load_or_create(&s.data_dir).unwrap();
    assert_eq!(keys.public_key_b64(), published);

    let dir = tempfile::tempdir().unwrap();
    let mut segments = Vec::new();
    let mut prev = ZERO_CHAIN.to_string();
    for i in 0..4u64 {
        let path = format!("tracks/t_0a/{i:06}.webm");
        let bytes = vec![i as u8; 1000 + i as usize];
        std::fs::create_dir_all(dir.path().join("tracks/t_0a")).unwrap();
        std::fs::write(dir.path().join(&path), &bytes).unwrap();
        let sha256 = sha256_hex(&bytes);
        let chain = chain_next(&prev, i, &path, &sha256);
        segments.push(Segment {
            index: i,
            track_id: "t_0a".into(),
            path,
            start_ms: i * 5000,
            duration_ms: 5000,
            size: bytes.len() as u64,
            sha256,
            chain: chain.clone(),
            zone: Some("main".into()),
        });
        prev = chain;
    }
    let example: Manifest = serde_json::from_str(include_str!("../recordings-schema/examples/hearing.json")).unwrap();
    let mut m = Manifest { segments, chain_head: prev.clone(), signature: None, renditions: Vec::new(), ..example };
    keys.sign(&mut m);
    std::fs::write(dir.path().join("manifest.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();

    let ok = qiao(&["verify".as_ref(), dir.path().as_os_str(), "--public-key".as_ref(), published.as_ref()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains(&prev), "prints the integrity value");

    let victim = dir.path().join("tracks/t_0a/000002.webm");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[500] ^= 0x80;
    std::fs::write(&victim, bytes).unwrap();
    let bad = qiao(&["verify".as_ref(), dir.path().as_os_str()]);
    assert!(!bad.status.success());
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(msg.contains("segment 2") && msg.contains("tracks/t_0a/000002.webm"), "{msg}");
}
