//! The media driver: owns the one UDP socket and every peer connection (webrtc-rs's sans-IO
//! `rtc`), feeds what arrives into the rooms of `core`, and carries out what they decide.
//!
//! Invariants:
//! - one task owns all media state, so the per-packet path takes no lock; it runs on a thread and
//!   single-threaded runtime of its own, and everything else talks to it through [`MediaHandle`]
//!   commands and hears back through each participant's outbound channel;
//! - the driver never awaits anything but the socket, its command channel and its timer: it never
//!   touches the database (presence records go out on a channel) and never blocks on a client;
//! - a datagram that belongs to no known peer is dropped and counted, never answered.

mod demux;
mod driver;
mod feedback;
mod peer;
pub mod tap;
mod timer;
mod udp;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use driver::{spawn, DriverError, OUTBOUND_CAPACITY};

use crate::core::{Action, LeaveCause, MediaKind, ParticipantKey, ParticipantView, Role, TrackSource, Zone};
use crate::signal::protocol::{CloseCode, IceCandidate, PcKind, ServerMessage, SessionView};

/// What the driver sends to a participant's signalling connection.
// `Message` is much larger than `Close`; boxing it would allocate per message to save queue slots
// that are few and short-lived.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outbound {
    Message(ServerMessage),
    /// Close the connection with this code; nothing follows.
    Close(CloseCode),
}

/// Who is joining, as the signalling layer verified it.
#[derive(Debug, Clone)]
pub struct Joiner {
    pub session: SessionView,
    pub participant_id: String,
    pub display_name: String,
    pub role: Role,
    pub site_id: Option<String>,
    /// The session has a lobby: non-hosts wait there until admitted.
    pub lobby: bool,
    /// The petitioners' group the participant represents.
    pub group: Option<String>,
}

/// Why the driver refused a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// The session is locked and the joiner is not a host.
    Locked,
    /// The session was closed (a join that raced the close).
    SessionClosed,
}

/// A `control` message with its target still an external id.
#[derive(Debug, Clone)]
pub struct ControlRequest {
    pub action: Action,
    pub target: Option<String>,
    pub zone: Option<Zone>,
    pub kind: Option<MediaKind>,
    pub reason: Option<String>,
}

/// Identifies one signalling connection of a participant; commands from a replaced connection
/// are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    pub participant: ParticipantKey,
    pub conn: u64,
}

#[derive(Debug)]
pub enum Command {
    Join {
        joiner: Joiner,
        outbound: mpsc::Sender<Outbound>,
        reply: oneshot::Sender<Result<ConnRef, JoinRefused>>,
    },
    Control {
        from: ConnRef,
        request: ControlRequest,
    },
    PublishOffer {
        from: ConnRef,
        sdp: String,
        sources: std::collections::HashMap<String, TrackSource>,
    },
    SubscribeAnswer {
        from: ConnRef,
        sdp: String,
    },
    Candidate {
        from: ConnRef,
        pc: PcKind,
        candidate: IceCandidate,
    },
    Mute {
        from: ConnRef,
        kind: MediaKind,
        muted: bool,
    },
    /// The participant said `leave`.
    Leave {
        from: ConnRef,
    },
    /// The signalling connection ended without `leave` (or was closed for a protocol error).
    ConnectionLost {
        from: ConnRef,
        cause: Option<LeaveCause>,
    },
    CloseSession {
        session_id: String,
    },
    RemoveParticipant {
        session_id: String,
        participant_id: String,
    },
    /// Tell the participant where it continues, then remove it (cause `transferred`).
    Transfer {
        session_id: String,
        participant_id: String,
        to_session: String,
        join_url: String,
    },
    /// Who is in the session right now.
    Snapshot {
        session_id: String,
        reply: oneshot::Sender<Vec<ParticipantView>>,
    },
    /// Every live session with who is in it.
    Live {
        reply: oneshot::Sender<Vec<(String, Vec<ParticipantView>)>>,
    },
    /// Published tracks of the session with their receive statistics.
    Tracks {
        session_id: String,
        reply: oneshot::Sender<Vec<crate::core::TrackReport>>,
    },
    /// Counters for health and benchmarks.
    Stats {
        reply: oneshot::Sender<DriverStats>,
    },
    /// Answered once every presence change sent before it is in the store.
    PresenceWritten {
        reply: oneshot::Sender<()>,
    },
    /// From a recorder thread: a keyframe request or a status for the session's participants.
    Recorder {
        session_id: String,
        event: crate::record::recorder::RecorderEvent,
    },
    /// Finish the session's recording (before closing it): the reply carries the final manifest
    /// and its chain head. Dropped unanswered when the session has no recorder.
    FinishRecording {
        session_id: String,
        reply: oneshot::Sender<crate::record::recorder::Finished>,
    },
    /// The server is stopping: finish every recording. The reply carries one receiver per
    /// recording, each answered with its final manifest.
    FinishAllRecordings {
        reply: oneshot::Sender<Vec<oneshot::Receiver<crate::record::recorder::Finished>>>,
    },
}

/// Counters kept by the driver.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DriverStats {
    pub rooms: usize,
    pub participants: usize,
    pub peer_connections: usize,
    pub datagrams_in: u64,
    pub datagrams_unroutable: u64,
    /// Connectivity checks of a subscribe connection that arrived before its answer and were
    /// answered once it was applied, instead of waiting for the client to send them again.
    pub early_checks: u64,
    pub rtp_in: u64,
    pub rtp_forwarded: u64,
    /// Audio packets that carried the client's audio level (active speaker detection).
    pub audio_levels: u64,
    pub forward_errors: u64,
    /// Datagrams sent, and the system calls that sent them (their ratio is the send batching).
    pub datagrams_out: u64,
    pub send_syscalls: u64,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
    /// Down tracks that started from a cached GOP instead of a keyframe request, the packets
    /// those replays held, and the paced bursts they left in (see `driver::REPLAY_BURST_BYTES`).
    pub gop_replays: u64,
    pub gop_replay_packets: u64,
    pub gop_replay_bursts: u64,
    /// Layer switches and video resumes served from a cached GOP at once, instead of waiting
    /// for a requested keyframe (their packets count in `gop_replay_packets`).
    pub switch_replays: u64,
    /// Video packets that waited in a weak downlink's pacer instead of leaving at once.
    pub packets_paced: u64,
    /// Retransmissions subscribers asked for that were refused (asked too often or too soon).
    pub nacks_refused: u64,
    /// Simulcast layers that opened beyond a track's first (a publisher sending simulcast).
    pub simulcast_layers: u64,
    /// Packets left out of a down track on purpose: temporal layers above what the subscriber's
    /// link carries, and padding.
    pub packets_thinned: u64,
    /// Bandwidth probes sent to subscribers (before a climb to higher layers), the padding
    /// packets they took, and the probes that showed the link could not carry more.
    pub probes: u64,
    pub padding_packets: u64,
    pub probes_failed: u64,
    /// Over the probes measured: the rates they asked for and the rates the links delivered, in
    /// kbit/s, summed. On open links the two agree (a probe sends what it asks for); the
    /// difference is what narrow links refused.
    pub probe_asked_kbps: u64,
    pub probe_delivered_kbps: u64,
    /// The server's own delay for each forwarded packet: from the kernel receiving it to the
    /// kernel having every copy of it (time waiting in the socket's queue included). Paced and
    /// replayed copies are not in it: they wait on purpose.
    pub forward_delay: DelayHistogram,
}

/// Upper bounds of [`DelayHistogram`]'s buckets, µs; a last bucket holds what is slower.
pub const DELAY_BOUNDS_US: [u64; 15] =
    [50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000, 20_000, 50_000, 100_000];

/// Counts of delays per bucket of [`DELAY_BOUNDS_US`] (fixed buckets: recording one is an index
/// search and an add, nothing allocated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DelayHistogram {
    pub counts: [u64; DELAY_BOUNDS_US.len() + 1],
}

impl DelayHistogram {
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = DELAY_BOUNDS_US.partition_point(|b| *b < us);
        self.counts[i] += 1;
    }

    /// What was recorded since `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &DelayHistogram) -> DelayHistogram {
        let mut d = *self;
        for (c, e) in d.counts.iter_mut().zip(earlier.counts) {
            *c = c.saturating_sub(e);
        }
        d
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The bound, µs, of the bucket the `p`-th percentile falls in (`None` when empty;
    /// `u64::MAX` for the last, unbounded bucket): the percentile is at most this.
    pub fn percentile_bound_us(&self, p: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(DELAY_BOUNDS_US.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }
}

/// What the driver sends the presence writer, in order.
#[derive(Debug)]
pub enum Presence {
    Record(PresenceRecord),
    /// Answer once everything before this is written (readers that must see a join that just
    /// happened, e.g. a rating right after the session).
    Written(oneshot::Sender<()>),
}

/// A presence change for the store (written by a task outside the driver).
#[derive(Debug, Clone)]
pub struct PresenceRecord {
    pub session_id: String,
    pub participant_id: String,
    /// `joined`, `reconnected`, `left`, `control` or `network`.
    pub event: &'static str,
    pub cause: Option<LeaveCause>,
    /// What a `control` event did, e.g. `admit p_…` (the participant is the actor); for
    /// `network`, the level shown and what it rests on (`poor: uplink loss 12.3 %, …`).
    pub detail: Option<String>,
    pub at: std::time::SystemTime,
}

/// The cloneable handle the rest of the server uses to reach the driver.
#[derive(Clone)]
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    /// Where media is announced (the host candidate in every SDP).
    pub announced: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
#[error("the media driver has stopped")]
pub struct DriverGone;

impl MediaHandle {
    pub async fn send(&self, cmd: Command) -> Result<(), DriverGone> {
        self.tx.send(cmd).await.map_err(|_| DriverGone)
    }

    pub async fn join(
        &self,
        joiner: Joiner,
        outbound: mpsc::Sender<Outbound>,
    ) -> Result<Result<ConnRef, JoinRefused>, DriverGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Join { joiner, outbound, reply }).await?;
        rx.await.map_err(|_| DriverGone)
    }

    pub async fn snapshot(&self, session_id: &str) -> Result<Vec<ParticipantView>, DriverGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Snapshot { session_id: session_id.into(), reply }).await?;
        rx.await.map_err(|_| DriverGone)
    }

    pub async fn live(&self) -> Result<Vec<(String, Vec<ParticipantView>)>, DriverGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Live { reply }).await?;
        rx.await.map_err(|_| DriverGone)
    }

    pub async fn tracks(&self, session_id: &str) -> Result<Vec<crate::core::TrackReport>, DriverGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Tracks { session_id: session_id.into(), reply }).await?;
        rx.await.map_err(|_| DriverGone)
    }

    pub async fn stats(&self) -> Result<DriverStats, DriverGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Stats { reply }).await?;
        rx.await.map_err(|_| DriverGone)
    }

    /// Waits until every presence change the driver made so far is in the store.
    pub async fn presence_written(&self) -> Result<(), DriverGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::PresenceWritten { reply }).await?;
        rx.await.map_err(|_| DriverGone)
    }
}

#[cfg(test)]
mod tests {
    use super::{DelayHistogram, DELAY_BOUNDS_US};
    use std::time::Duration;

    #[test]
    fn a_delay_falls_in_the_first_bucket_whose_bound_is_not_below_it_and_percentiles_read_bounds() {
        let mut h = DelayHistogram::default();
        for us in [10, 50, 51, 1_999, 2_000, 2_001, 10_000_000] {
            h.record(Duration::from_micros(us));
        }
        let at = |bound: u64| h.counts[DELAY_BOUNDS_US.iter().position(|b| *b == bound).unwrap()];
        assert_eq!((at(50), at(100), at(2_000), at(3_000)), (2, 1, 2, 1));
        assert_eq!(h.counts[DELAY_BOUNDS_US.len()], 1, "slower than every bound");
        assert_eq!(h.total(), 7);
        assert_eq!(h.percentile_bound_us(50.0), Some(2_000), "the 4th of 7 is 1 999 µs");
        assert_eq!(h.percentile_bound_us(100.0), Some(u64::MAX));
        let later = {
            let mut l = h;
            l.record(Duration::from_micros(120));
            l
        };
        let d = later.since(&h);
        assert_eq!((d.total(), d.percentile_bound_us(99.0)), (1, Some(200)));
        assert_eq!(DelayHistogram::default().percentile_bound_us(50.0), None);
    }
}
