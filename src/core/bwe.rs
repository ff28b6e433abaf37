//! Audio-only fallback: whether a subscriber's downlink can carry the video it subscribes to.
//!
//! The estimate comes from the subscribe connection's send-side congestion control (GCC over
//! transport-wide feedback, see `media::peer`); the need is what the room would forward to that
//! subscriber. A township link of 300 kbps that is sent 1 Mbps of video loses most of everything,
//! voice included; with video suspended the hearing goes on by voice, which is what matters.
//!
//! A suspended link cannot show that it recovered (it carries only audio), so video is tried again
//! after a back-off that doubles while tries fail. After a try GCC's estimate starts from its
//! last, low value and only climbs by a few percent a second; during a probation period video is
//! suspended again only if the estimate falls further (a new congestion signal), not merely
//! because it has not climbed yet.

use std::time::{Duration, Instant};

/// The estimate must stay below the need this long before video is suspended; after a try, a
/// falling estimate only this long (the try is hurting the link, voice included).
const SUSPEND_AFTER: Duration = Duration::from_secs(2);
const SUSPEND_AFTER_TRY: Duration = Duration::from_secs(1);
/// First and longest wait before video is tried again.
const RETRY_FIRST: Duration = Duration::from_secs(8);
const RETRY_MAX: Duration = Duration::from_secs(64);
/// After a try, how long only a falling estimate suspends video again.
const PROBATION: Duration = Duration::from_secs(20);
/// During probation, "falling" means below this share of the estimate at the try.
const PROBATION_DROP: f64 = 0.85;
/// Video is kept while the estimate covers this share of the need. Well below 1: GCC answers a
/// brief delay rise on a good link by setting its target to 0.85 × what was acknowledged, then
/// climbs back; only a link that truly cannot carry the video keeps the estimate far below it.
const HEADROOM: f64 = 0.6;

/// A change the room applies to the subscriber's video down tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateChange {
    Suspend,
    Resume,
}

#[derive(Debug, Clone)]
pub struct VideoGate {
    suspended: bool,
    /// Since when the estimate has been short of the need; `None` while it is not.
    short_since: Option<Instant>,
    /// While suspended: when video is tried again.
    retry_at: Option<Instant>,
    /// The next back-off.
    backoff: Duration,
    /// After a try: until when, and the estimate it started from.
    probation: Option<(Instant, u64)>,
}

impl Default for VideoGate {
    fn default() -> Self {
        VideoGate { suspended: false, short_since: None, retry_at: None, backoff: RETRY_FIRST, probation: None }
    }
}

impl VideoGate {
    pub fn suspended(&self) -> bool {
        self.suspended
    }

    /// Takes the latest estimate and need (bits per second) and says whether to change anything.
    pub fn on_estimate(&mut self, now: Instant, estimate_bps: u64, need_bps: u64) -> Option<GateChange> {
        if self.suspended {
            if self.retry_at.is_some_and(|t| now >= t) {
                self.suspended = false;
                self.retry_at = None;
                self.short_since = None;
                self.probation = Some((now + PROBATION, estimate_bps));
                return Some(GateChange::Resume);
            }
            return None;
        }
        let confirm = if self.probation.is_some() { SUSPEND_AFTER_TRY } else { SUSPEND_AFTER };
        let short = match self.probation {
            Some((until, _)) if now >= until => {
                self.probation = None;
                self.backoff = RETRY_FIRST; // the try held: start over next time
                need_bps > 0 && (estimate_bps as f64) < need_bps as f64 * HEADROOM
            }
            Some((_, at_try)) => need_bps > 0 && (estimate_bps as f64) < at_try as f64 * PROBATION_DROP,
            None => need_bps > 0 && (estimate_bps as f64) < need_bps as f64 * HEADROOM,
        };
        if !short {
            self.short_since = None;
            return None;
        }
        let since = *self.short_since.get_or_insert(now);
        if now.saturating_duration_since(since) < confirm {
            return None;
        }
        self.suspended = true;
        self.short_since = None;
        self.probation = None;
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
        Some(GateChange::Suspend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KBPS: u64 = 1000;

    /// Feeds one estimate every 100 ms from `from_ms` to `to_ms` and returns the changes with
    /// their times.
    fn run(
        g: &mut VideoGate,
        t0: Instant,
        from_ms: u64,
        to_ms: u64,
        est: impl Fn(u64) -> u64,
        need: u64,
    ) -> Vec<(u64, GateChange)> {
        (from_ms..to_ms)
            .step_by(100)
            .filter_map(|ms| g.on_estimate(t0 + Duration::from_millis(ms), est(ms), need).map(|c| (ms, c)))
            .collect()
    }

    #[test]
    fn a_link_that_carries_the_video_keeps_it() {
        let t0 = Instant::now();
        let mut g = VideoGate::default();
        assert!(run(&mut g, t0, 0, 60_000, |_| 1200 * KBPS, 1000 * KBPS).is_empty());
        assert!(run(&mut g, t0, 60_000, 61_000, |_| 0, 0).is_empty(), "no video to carry");
    }

    #[test]
    fn a_short_dip_does_not_suspend_but_a_lasting_one_does() {
        let t0 = Instant::now();
        let mut g = VideoGate::default();
        assert!(run(&mut g, t0, 0, 1500, |_| 200 * KBPS, 1000 * KBPS).is_empty(), "1.5 s dip");
        assert!(run(&mut g, t0, 1500, 3000, |_| 1200 * KBPS, 1000 * KBPS).is_empty());
        let changes = run(&mut g, t0, 3000, 6000, |_| 250 * KBPS, 1000 * KBPS);
        assert_eq!(changes, [(5000, GateChange::Suspend)]);
        assert!(g.suspended());
    }

    #[test]
    fn a_capped_link_is_retried_with_a_growing_back_off() {
        let t0 = Instant::now();
        let mut g = VideoGate::default();
        // 1 Mbps of video on a 250 kbps link: suspended after 2 s; each try makes the estimate
        // fall again (loss), so video is suspended 1 s later, and the next try waits twice as long.
        let mut changes = run(&mut g, t0, 0, 10_000, |_| 250 * KBPS, 1000 * KBPS);
        assert_eq!(changes, [(2000, GateChange::Suspend)]);
        changes = run(&mut g, t0, 10_000, 10_100, |_| 250 * KBPS, 1000 * KBPS);
        assert_eq!(changes, [(10_000, GateChange::Resume)], "first try 8 s after suspending");
        changes = run(&mut g, t0, 10_100, 27_200, |_| 150 * KBPS, 1000 * KBPS);
        assert_eq!(
            changes,
            [(11_100, GateChange::Suspend), (27_100, GateChange::Resume)],
            "suspended 1 s into a failing try; the next try 16 s later"
        );
        changes = run(&mut g, t0, 27_200, 60_000, |_| 100 * KBPS, 1000 * KBPS);
        assert_eq!(changes, [(28_200, GateChange::Suspend)]);
    }

    #[test]
    fn after_a_retry_a_slowly_climbing_estimate_keeps_the_video() {
        let t0 = Instant::now();
        let mut g = VideoGate::default();
        run(&mut g, t0, 0, 2100, |_| 250 * KBPS, 1000 * KBPS);
        assert!(g.suspended());
        // The link recovered; GCC climbs ~8 %/s from 250 kbps after the retry at 10 s.
        let est = |ms: u64| {
            if ms < 10_000 {
                250 * KBPS
            } else {
                ((250.0 * 1.08f64.powf((ms - 10_000) as f64 / 1000.0)) as u64).min(1500) * KBPS
            }
        };
        let changes = run(&mut g, t0, 2100, 80_000, est, 1000 * KBPS);
        assert_eq!(changes, [(10_000, GateChange::Resume)], "no suspension while it climbs");
    }
}
