//! Where one track's frames fall on the recording's timeline: a pure map from the sender's RTP
//! clock to milliseconds since the recording began. No sockets, no clocks; the recorder passes
//! the times in.
//!
//! The first frame anchors the track at its arrival. The sender's first report (RTCP SR) then
//! re-anchors it on the sender's wall clock, which a participant's audio and video share: that
//! is what keeps them in sync, so it is taken at once. Later reports only correct drift, and a
//! sender stamps them from its own send loop, so each carries the loop's jitter (tens of
//! milliseconds on a loaded machine). Taking each at once made the timeline jump back and forth
//! by that much, packing frames a millisecond apart after every backward jump. So later reports
//! are averaged, and the correction reaches the frames at most [`SLEW_MS`] per frame.
//!
//! Invariants:
//! - between reports the map is linear in the RTP timestamp;
//! - after the first report, consecutive frames' times differ from their RTP spacing by at most
//!   [`SLEW_MS`], unless the sender's clock steps by more than [`STEP_MS`];
//! - a steady offset in the reports is followed fully (the average converges to it).

/// How far the applied correction moves per frame, ms.
pub const SLEW_MS: f64 = 1.0;
/// A report this far from the current map means the sender's clock stepped: re-anchor at once.
pub const STEP_MS: f64 = 1000.0;
/// Weight of a new report in the running average of the reports' error.
const GAIN: f64 = 0.25;

/// The map of one track (one SSRC) onto the timeline.
#[derive(Debug, Clone)]
pub struct TrackClock {
    /// RTP ticks per second.
    clock_rate: f64,
    /// (extended RTP timestamp, timeline ms) the map is drawn through.
    anchor: Option<(i64, f64)>,
    /// Whether `anchor` comes from a sender report rather than a frame's arrival.
    synced: bool,
    /// The running average of later reports' error against `anchor`, ms: where `applied` heads.
    target: f64,
    /// The correction applied to frames now, ms.
    applied: f64,
}

impl TrackClock {
    pub fn new(clock_rate: u32) -> TrackClock {
        TrackClock { clock_rate: f64::from(clock_rate.max(1)), anchor: None, synced: false, target: 0.0, applied: 0.0 }
    }

    /// Forgets the map: a new SSRC restarts the sender's clock.
    pub fn reset(&mut self) {
        *self = TrackClock::new(self.clock_rate as u32);
    }

    fn base(&self, (ts, ms): (i64, f64), rtp: i64) -> f64 {
        ms + (rtp - ts) as f64 * 1000.0 / self.clock_rate
    }

    /// A sender report: RTP timestamp `rtp` (extended) was the sender's wall-clock `timeline_ms`.
    pub fn on_sender_report(&mut self, rtp: i64, timeline_ms: f64) {
        match self.anchor {
            Some(anchor) if self.synced => {
                let error = timeline_ms - self.base(anchor, rtp);
                if (error - self.applied).abs() > STEP_MS {
                    self.resync(rtp, timeline_ms);
                } else {
                    self.target += (error - self.target) * GAIN;
                }
            }
            _ => self.resync(rtp, timeline_ms),
        }
    }

    fn resync(&mut self, rtp: i64, timeline_ms: f64) {
        self.anchor = Some((rtp, timeline_ms));
        self.synced = true;
        self.target = 0.0;
        self.applied = 0.0;
    }

    /// The timeline time of a frame with (extended) RTP timestamp `rtp` that arrived at
    /// `arrived_ms`; the first frame anchors the map when no report has.
    pub fn frame_ms(&mut self, rtp: i64, arrived_ms: f64) -> f64 {
        let anchor = *self.anchor.get_or_insert((rtp, arrived_ms));
        self.applied += (self.target - self.applied).clamp(-SLEW_MS, SLEW_MS);
        self.base(anchor, rtp) + self.applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 30 fps video on the 90 kHz clock.
    const TICKS: i64 = 3000;
    const FRAME_MS: f64 = 1000.0 / 30.0;

    #[test]
    fn the_first_frame_anchors_the_track_at_its_arrival() {
        let mut c = TrackClock::new(90_000);
        assert_eq!(c.frame_ms(500_000, 1200.0), 1200.0);
        assert!((c.frame_ms(500_000 + TICKS, 9999.0) - (1200.0 + FRAME_MS)).abs() < 1e-9);
    }

    #[test]
    fn the_first_report_moves_the_track_onto_the_senders_clock_at_once() {
        let mut c = TrackClock::new(90_000);
        c.frame_ms(0, 1000.0);
        // The sender's clock puts RTP 0 at 880 ms: its video is 120 ms behind its arrival.
        c.on_sender_report(0, 880.0);
        assert!((c.frame_ms(TICKS, 0.0) - (880.0 + FRAME_MS)).abs() < 1e-9);
    }

    #[test]
    fn jittery_reports_move_frames_by_at_most_the_slew_and_never_pack_them() {
        let mut c = TrackClock::new(90_000);
        c.on_sender_report(0, 0.0);
        // A report every 30 frames, ±40 ms off (a loaded sender's send loop), alternating so
        // that taking each at once would jump 80 ms back every other second.
        let mut last = c.frame_ms(0, 0.0);
        let mut worst_offset: f64 = 0.0;
        for i in 1..3000i64 {
            if i % 30 == 0 {
                let jitter = if (i / 30) % 2 == 0 { 40.0 } else { -40.0 };
                c.on_sender_report(i * TICKS, i as f64 * FRAME_MS + jitter);
            }
            let now = c.frame_ms(i * TICKS, 0.0);
            let step = now - last;
            assert!((step - FRAME_MS).abs() <= SLEW_MS + 1e-9, "frame {i} is {step} ms after the previous one");
            worst_offset = worst_offset.max((now - i as f64 * FRAME_MS).abs());
            last = now;
        }
        // Zero-mean jitter averages out: frames stay within half a frame of the sender's cadence.
        assert!(worst_offset < FRAME_MS / 2.0, "frames strayed {worst_offset} ms from the cadence");
    }

    #[test]
    fn a_steady_offset_in_the_reports_is_followed_fully() {
        let mut c = TrackClock::new(48_000);
        c.on_sender_report(0, 0.0);
        // The sender's RTP clock runs slow against its wall clock: every later report says
        // 60 ms later than the map; the audio (20 ms frames) follows it within a frame.
        let mut at = 0.0;
        for i in 1..2000i64 {
            if i % 50 == 0 {
                c.on_sender_report(i * 960, i as f64 * 20.0 + 60.0);
            }
            at = c.frame_ms(i * 960, 0.0);
        }
        assert!((at - (1999.0 * 20.0 + 60.0)).abs() < 1.0, "the map ends at {at}");
    }

    #[test]
    fn a_clock_step_beyond_a_second_is_taken_at_once_and_a_new_ssrc_starts_over() {
        let mut c = TrackClock::new(90_000);
        c.on_sender_report(0, 0.0);
        c.frame_ms(0, 0.0);
        c.on_sender_report(30 * TICKS, 30.0 * FRAME_MS + 5000.0);
        assert!((c.frame_ms(31 * TICKS, 0.0) - (31.0 * FRAME_MS + 5000.0)).abs() < 1e-9);
        c.reset();
        assert_eq!(c.frame_ms(7, 42.0), 42.0);
    }
}
