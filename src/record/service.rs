//! The recording service: what connects recorders to storage and what runs after a recording is
//! final. [`QueueSink`] hands closed segments and manifest snapshots to the durable upload queue;
//! [`composite_job`] renders the composite rendition once the masters are in storage, stores it
//! beside them and adds it to the (re-signed) manifest.
//!
//! Invariants:
//! - the composite is made from what storage holds (downloaded after the queue drained), so it
//!   shows exactly the recording that verifies;
//! - adding the rendition re-signs the manifest; segments and chain are never touched after final.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{error, info};

use super::composite::{self, CompositeInput, Tile};
use super::manifest::{sha256_hex, Manifest, SigningKeys};
use super::recorder::{write_atomic, Finished, SegmentSink};
use crate::storage::UploadQueue;
use crate::store::{parse_rfc3339, Store};

/// The recorder's [`SegmentSink`] over the upload queue. Called from recorder threads (and crash
/// recovery on a blocking thread), never from a runtime worker.
pub struct QueueSink {
    pub queue: UploadQueue,
    pub rt: tokio::runtime::Handle,
}

impl SegmentSink for QueueSink {
    fn enqueue(&self, key: &str, file: &Path) -> Result<(), String> {
        self.rt.block_on(self.queue.enqueue(key, file)).map_err(|e| e.to_string())
    }
    fn has_room(&self, bytes: u64) -> bool {
        self.queue.spool().has_room(bytes)
    }
    fn failing_since(&self) -> Option<SystemTime> {
        self.queue.health().borrow().failing_since
    }
    fn spool_alarm(&self) -> bool {
        self.queue.health().borrow().alarm
    }
}

/// How long the job waits for the masters to reach storage before rendering anyway from what
/// is there (they stay queued; the composite then misses nothing it could have had).
const FLUSH_WAIT: Duration = Duration::from_secs(600);

/// The hook the recorders call when a recording is final: renders the composite in the background.
pub fn composite_job(
    queue: UploadQueue,
    store: Store,
    keys: Arc<SigningKeys>,
    spool_dir: PathBuf,
    rt: tokio::runtime::Handle,
) -> Arc<dyn Fn(Finished) + Send + Sync> {
    Arc::new(move |f: Finished| {
        let (queue, store, keys, spool_dir) = (queue.clone(), store.clone(), keys.clone(), spool_dir.clone());
        rt.spawn(async move {
            let id = f.recording_id.clone();
            let _ = store.set_composite(&id, "rendering").await;
            let state = match render_and_store(&queue, &keys, &spool_dir, f).await {
                Ok(()) => "done",
                Err(e) => {
                    error!(recording = %id, error = %e, "the composite rendition failed; the masters are unaffected");
                    "failed"
                }
            };
            let _ = store.set_composite(&id, state).await;
        });
    })
}

async fn render_and_store(
    queue: &UploadQueue,
    keys: &SigningKeys,
    spool_dir: &Path,
    f: Finished,
) -> Result<(), String> {
    if f.manifest.segments.is_empty() {
        return Err("nothing was recorded".into());
    }
    let t0 = std::time::Instant::now();
    let _ = queue.flush(FLUSH_WAIT).await;
    let work = spool_dir.join(format!("{}.composite", f.recording_id));
    let _ = tokio::fs::remove_dir_all(&work).await;
    let masters = work.join("masters");
    crate::storage::download_recording(queue.object_store(), &f.prefix, &masters).await.map_err(|e| e.to_string())?;
    let manifest = f.manifest.clone();
    let input = composite_input(&manifest, &masters)?;
    let out = work.join("composite.mp4");
    let out2 = out.clone();
    let stats = tokio::task::spawn_blocking(move || composite::render(&input, &out2))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let bytes = tokio::fs::read(&out).await.map_err(|e| e.to_string())?;
    let mut m = manifest;
    m.renditions.push(serde_json::json!({
        "kind": "composite", "path": "composite.mp4", "size": bytes.len(), "sha256": sha256_hex(&bytes),
    }));
    keys.sign(&mut m);
    let snapshot = work.join("manifest.json");
    write_atomic(&snapshot, &serde_json::to_vec_pretty(&m).expect("a manifest serialises"))
        .map_err(|e| e.to_string())?;
    queue.enqueue(&format!("{}/composite.mp4", f.prefix), &out).await.map_err(|e| e.to_string())?;
    queue.enqueue(&format!("{}/manifest.json", f.prefix), &snapshot).await.map_err(|e| e.to_string())?;
    let _ = tokio::fs::remove_dir_all(&masters).await;
    info!(
        recording = %f.recording_id, frames = stats.frames, render_ms = stats.wall.as_millis() as u64,
        total_ms = t0.elapsed().as_millis() as u64, "composite rendition stored"
    );
    Ok(())
}

/// One tile per participant who published (a screen share gets its own tile), in manifest order.
pub fn composite_input(m: &Manifest, dir: &Path) -> Result<CompositeInput, String> {
    let parse = |s: &str| parse_rfc3339(s).ok_or_else(|| format!("bad time {s}: not RFC 3339"));
    let start = parse(&m.started_at)?;
    let end = parse(m.ended_at.as_deref().ok_or("the recording has no end")?)?;
    // The composite is the joint session: segments recorded in a caucus, a consultation or a
    // waiting room stay in the masters, under their access rules.
    let files = |track: &str| -> Vec<PathBuf> {
        m.segments
            .iter()
            .filter(|s| s.track_id == track && s.zone.as_deref().is_none_or(|z| z == "main"))
            .map(|s| dir.join(&s.path))
            .collect()
    };
    let mut tiles = Vec::new();
    for p in &m.participants {
        let pid = p["id"].as_str().unwrap_or_default();
        let name = p["display_name"].as_str().unwrap_or_default();
        let role = role_zh(p["role"].as_str().unwrap_or_default());
        let tracks: Vec<&serde_json::Value> = m.tracks.iter().filter(|t| t["participant_id"] == pid).collect();
        if tracks.is_empty() {
            continue;
        }
        let mut camera = Tile { label: format!("{name} · {role}"), video: Vec::new(), audio: Vec::new() };
        let mut screens = Vec::new();
        for t in &tracks {
            let id = t["id"].as_str().unwrap_or_default();
            match (t["kind"].as_str(), t["source"].as_str()) {
                (Some("audio"), _) => camera.audio.extend(files(id)),
                (Some("video"), Some("screen")) => {
                    screens.push(Tile { label: format!("{name} · 屏幕共享"), video: files(id), audio: Vec::new() })
                }
                _ => camera.video.extend(files(id)),
            }
        }
        tiles.push(camera);
        tiles.extend(screens);
    }
    Ok(CompositeInput {
        case_label: m.case_id.clone(),
        started_at_unix_ms: (start.unix_timestamp_nanos() / 1_000_000) as i64,
        duration_ms: ((end - start).whole_milliseconds().max(0)) as u64,
        tiles,
    })
}

/// The role as the Chinese label a tile shows.
pub fn role_zh(role: &str) -> &'static str {
    match role {
        "judge" => "审判员",
        "clerk" => "书记员",
        "mediator" => "调解员",
        "petition_officer" => "接访人员",
        "leader" => "领导",
        "party" => "当事人",
        "counsel" => "代理人",
        "counsellor" => "心理咨询师",
        "interpreter" => "翻译",
        "witness" => "证人",
        "observer" => "监督人员",
        _ => "参与人",
    }
}
