//! The working manifest of a recording in progress, kept at a cost that does not grow with the
//! session: when `live.json` and the stored snapshot are rewritten, and the journal of closed
//! segments that covers the time between two rewrites.
//!
//! A manifest lists every segment, so it grows by a few hundred bytes per segment: a three-hour
//! mediation with six tracks closes about 16 000 segments, a manifest of about 6 MB. Rewriting,
//! signing, syncing and uploading it every second would cost that much disk and upload bandwidth
//! every second, more than the media. So:
//! - a change to what is not a segment (a track, a gap, a pause) is written within
//!   [`HEADER_EVERY`], as before — they are rare and the hosts see them;
//! - a closed segment is appended to `segments.jsonl` at once (one line, synced), and the whole
//!   manifest is rewritten only as often as the byte budget allows: after a write of `n` bytes,
//!   the next one due for segments alone waits `n ÷ budget` seconds, at least [`SEGMENTS_EVERY`]
//!   (each rewrite also reads who is present from the store and queues an upload, which cost more
//!   than the write while the manifest is small);
//! - crash recovery reads `live.json` and appends the journal's segments that continue its chain.
//!
//! Invariants: every closed segment is in `live.json` or, in order and chained, in the journal
//! (a crash loses only open segments); the journal is emptied only after a `live.json` that lists
//! all of it was written and its rename synced.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::manifest::{chain_next, Manifest, Segment, ZERO_CHAIN};

/// How soon a change other than a new segment reaches `live.json` and storage.
pub const HEADER_EVERY: Duration = Duration::from_secs(1);
/// The shortest wait before a rewrite for new segments alone (they are journaled meanwhile).
pub const SEGMENTS_EVERY: Duration = Duration::from_secs(5);
/// The journal's file name in the recording's spool directory.
pub const JOURNAL: &str = "segments.jsonl";

/// When the working manifest is due to be rewritten. Pure: the caller passes the time.
#[derive(Debug, Clone)]
pub struct ManifestSchedule {
    /// Bytes of manifest per second the rewrites may cost, amortised.
    budget: u64,
    /// Something other than a segment changed since the last write.
    header_dirty: bool,
    /// Segments were added (and journaled) since the last write.
    segments_dirty: bool,
    /// When the last write happened, and how many bytes it wrote.
    last: Option<(Instant, usize)>,
}

impl ManifestSchedule {
    /// `budget`: bytes per second (at least 1).
    pub fn new(budget: u64) -> ManifestSchedule {
        ManifestSchedule { budget: budget.max(1), header_dirty: true, segments_dirty: false, last: None }
    }

    pub fn header_changed(&mut self) {
        self.header_dirty = true;
    }

    pub fn segment_added(&mut self) {
        self.segments_dirty = true;
    }

    /// Whether a rewrite is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        let Some((at, bytes)) = self.last else { return self.header_dirty || self.segments_dirty };
        if self.header_dirty {
            return now >= at + HEADER_EVERY;
        }
        self.segments_dirty && now >= at + self.segments_wait(bytes)
    }

    /// How long segments alone wait after a write of `bytes`.
    pub fn segments_wait(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.budget as f64).max(SEGMENTS_EVERY)
    }

    /// A manifest of `bytes` was written at `now`: nothing is dirty.
    pub fn wrote(&mut self, now: Instant, bytes: usize) {
        self.header_dirty = false;
        self.segments_dirty = false;
        self.last = Some((now, bytes));
    }
}

/// `segments.jsonl`: each closed segment as one JSON line, appended and synced when it closes.
pub struct SegmentJournal {
    path: PathBuf,
    /// Opened on the first append.
    file: Option<File>,
    /// Bytes of whole lines in the file: a failed append is cut back to this, so a torn line
    /// never hides the lines after it from recovery.
    len: u64,
}

impl SegmentJournal {
    pub fn new(dir: &Path) -> SegmentJournal {
        SegmentJournal { path: dir.join(JOURNAL), file: None, len: 0 }
    }

    /// Appends `segment` and syncs it to disk.
    pub fn append(&mut self, segment: &Segment) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(segment).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.file.is_none() {
            let f = OpenOptions::new().create(true).append(true).open(&self.path)?;
            self.len = f.metadata()?.len();
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        if let Err(e) = f.write_all(&line).and_then(|()| f.sync_data()) {
            let _ = f.set_len(self.len);
            return Err(e);
        }
        self.len += line.len() as u64;
        Ok(())
    }

    /// Empties the journal: `live.json` now lists everything in it.
    pub fn clear(&mut self) -> std::io::Result<()> {
        if let Some(f) = &self.file {
            f.set_len(0)?;
        }
        self.len = 0;
        Ok(())
    }

    /// Removes the file (the recording is final).
    pub fn remove(mut self) {
        self.file = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Appends to `m` the journal's segments that continue it: each must have the next index, and its
/// chain must follow from the one before. Lines already in `m` are skipped; reading stops at the
/// first line that does not fit (a torn last line, or anything edited). Returns how many it added.
pub fn replay_journal(m: &mut Manifest, journal: &str) -> usize {
    let mut added = 0;
    for line in journal.lines() {
        let Ok(s) = serde_json::from_str::<Segment>(line) else { break };
        let next = m.segments.len() as u64;
        if s.index < next {
            continue;
        }
        let prev = m.segments.last().map_or(ZERO_CHAIN, |p| p.chain.as_str());
        let known_track = m.tracks.iter().any(|t| t["id"] == s.track_id.as_str());
        if s.index != next || !known_track || chain_next(prev, s.index, &s.path, &s.sha256) != s.chain {
            break;
        }
        m.chain_head = s.chain.clone();
        m.segments.push(s);
        added += 1;
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::manifest::{sha256_hex, SessionInfo};

    fn manifest() -> Manifest {
        let session = SessionInfo { id: "s_1".into(), kind: "mediation".into(), title: None, sites: vec![] };
        let mut m = Manifest::started("c_1".into(), "（2026）调字第1号".into(), session, "2026-11-22T08:00:00Z".into());
        m.tracks.push(serde_json::json!({ "id": "t_1" }));
        m
    }

    /// The segments a recorder would list, chained from the start.
    fn chained(n: u64) -> Vec<Segment> {
        let mut prev = ZERO_CHAIN.to_string();
        (0..n)
            .map(|index| {
                let path = format!("tracks/t_1/{index:06}.webm");
                let sha256 = sha256_hex(path.as_bytes());
                let chain = chain_next(&prev, index, &path, &sha256);
                prev = chain.clone();
                Segment {
                    index,
                    track_id: "t_1".into(),
                    path,
                    start_ms: index * 4000,
                    duration_ms: 4000,
                    size: 10,
                    sha256,
                    chain,
                    zone: Some("main".into()),
                }
            })
            .collect()
    }

    fn lines(segments: &[Segment]) -> String {
        segments.iter().map(|s| serde_json::to_string(s).unwrap() + "\n").collect()
    }

    #[test]
    fn the_journal_appends_what_the_live_manifest_does_not_list_yet() {
        let all = chained(5);
        let mut m = manifest();
        m.segments = all[..2].to_vec();
        m.chain_head = all[1].chain.clone();
        // The journal still holds lines live.json already has (written before it was cleared).
        assert_eq!(replay_journal(&mut m, &lines(&all[1..])), 3);
        assert_eq!(m.segments, all);
        assert_eq!(m.chain_head, all[4].chain);
    }

    #[test]
    fn replaying_stops_at_a_torn_line_or_a_broken_chain() {
        let all = chained(4);
        let mut m = manifest();
        let mut text = lines(&all[..2]);
        text.push_str(&serde_json::to_string(&all[2]).unwrap()[..40]); // the crash cut the write
        assert_eq!(replay_journal(&mut m, &text), 2);

        let mut m = manifest();
        let mut edited = all.clone();
        edited[1].sha256 = sha256_hex(b"something else");
        assert_eq!(replay_journal(&mut m, &lines(&edited)), 1, "the chain no longer follows at index 1");
        assert_eq!(m.chain_head, all[0].chain);

        let mut m = manifest();
        let mut unknown = all.clone();
        unknown[0].track_id = "t_9".into();
        assert_eq!(replay_journal(&mut m, &lines(&unknown)), 0, "a segment of a track the manifest lacks");
    }

    #[test]
    fn segments_alone_wait_in_proportion_to_the_manifest_and_other_changes_do_not() {
        let t0 = Instant::now();
        let mut s = ManifestSchedule::new(32 * 1024);
        assert!(s.due(t0), "the first write is due at once");
        s.wrote(t0, 4 * 1024 * 1024); // a 4 MiB manifest: 128 s of budget
        s.segment_added();
        assert!(!s.due(t0 + Duration::from_secs(127)));
        assert!(s.due(t0 + Duration::from_secs(128)));
        s.header_changed();
        assert!(!s.due(t0 + Duration::from_millis(999)));
        assert!(s.due(t0 + HEADER_EVERY), "a gap or a new track is written within a second");

        // A small manifest waits the minimum for segments alone.
        s.wrote(t0, 6_000);
        s.segment_added();
        assert!(!s.due(t0 + SEGMENTS_EVERY - Duration::from_millis(1)));
        assert!(s.due(t0 + SEGMENTS_EVERY));
        // Nothing changed: nothing is due.
        s.wrote(t0, 6_000);
        assert!(!s.due(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn the_journal_file_takes_lines_and_is_emptied_after_a_full_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = SegmentJournal::new(dir.path());
        let all = chained(3);
        for s in &all {
            j.append(s).unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
        let mut m = manifest();
        assert_eq!(replay_journal(&mut m, &text), 3);
        j.clear().unwrap();
        j.append(&chained(4)[3]).unwrap();
        let text = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
        assert_eq!(text.lines().count(), 1, "the append after a clear starts the file afresh: {text}");
        assert_eq!(replay_journal(&mut m, &text), 1);
        j.remove();
        assert!(!dir.path().join(JOURNAL).exists());
    }
}
