//! A recorder fed directly (no WebRTC), over a real SQLite store, spool, upload queue and local
//! object store in a temp dir: for tests and benchmarks of the recorder itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use qiao::core::{MediaKind, UpTrackKey};
use qiao::record::recorder::{self, EventSink, RecInput, RecorderContext, RecorderTap, SessionFacts, TrackStart};
use qiao::record::SigningKeys;
use qiao::storage::UploadQueue;

pub struct LocalRecorder {
    pub rt: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
    pub queue: UploadQueue,
    pub keys: Arc<SigningKeys>,
    pub tap: RecorderTap,
}

/// Starts a recorder for a new session of a new case, with `segment`-long segments.
pub fn start(case_number: &str, segment: Duration, events: EventSink) -> LocalRecorder {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = rt.block_on(async {
        let store = qiao::store::Store::open(dir.path()).await.unwrap();
        let objects = qiao::storage::ObjectStore::local(dir.path().join("recordings"));
        let spool = qiao::storage::Spool::open(&dir.path().join("spool"), 8 << 30).unwrap();
        let queue = UploadQueue::start(store.clone(), objects, spool);
        (store, queue)
    });
    let case = rt.block_on(store.create_case(case_number, "hearing", None, None)).unwrap();
    let session = rt.block_on(store.create_session(&case.id, None, None, None, false, false)).unwrap();
    qiao::record::mux::init().unwrap();
    let keys = Arc::new(SigningKeys::from_seed([7; 32]));
    let ctx = Arc::new(RecorderContext {
        store,
        sink: Arc::new(qiao::record::service::QueueSink { queue: queue.clone(), rt: rt.handle().clone() }),
        keys: keys.clone(),
        spool_dir: dir.path().join("spool"),
        segment,
        manifest_budget: 32 * 1024,
        rt: rt.handle().clone(),
        on_final: None,
    });
    let facts = SessionFacts { session_id: session.id, case_ref: case.id, kind: "hearing".into(), title: None };
    let tap = recorder::start(ctx, facts, events).unwrap();
    LocalRecorder { rt, dir, queue, keys, tap }
}

/// Announces a camera (VP8, key `video`) and a microphone (Opus, key `audio`) of participant p_1;
/// their track ids are `t_a1` and `t_a2`.
pub fn announce_camera_and_microphone(tap: &mut RecorderTap, video: UpTrackKey, audio: UpTrackKey, t0: Instant) {
    for (up, id, kind, mime, clock) in [
        (video, "t_a1", MediaKind::Video, "video/VP8", 90_000),
        (audio, "t_a2", MediaKind::Audio, "audio/opus", 48_000),
    ] {
        let start = TrackStart {
            up,
            track_id: id.into(),
            participant_id: "p_1".into(),
            kind,
            source: if kind == MediaKind::Video { "camera" } else { "microphone" },
            mime: mime.into(),
            clock_rate: clock,
            zone: "main".into(),
        };
        tap.offer(RecInput::Track(Box::new(start)), t0);
    }
}
