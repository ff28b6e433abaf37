//! Simulcast and temporal layers: what each layer of a published video costs, and which layer each
//! subscriber gets for the downlink its congestion control measured.
//!
//! A browser publishing simulcast sends up to three encodings of one camera (RIDs `q`, `h`, `f`:
//! quarter, half and full resolution), each usually with temporal layers (VP8 L1T3: TID 0, 2, 1,
//! 2, …). A subscriber receives one spatial layer and, within it, the temporal layers up to a
//! limit: dropping TID 2 halves the frame rate and removes about a third of the bits. The choice
//! is made per subscriber, every room tick, from its estimate (see [`allocate`]); the room applies
//! a spatial change at the new layer's next keyframe and a temporal change at the next base-layer
//! picture, so the subscriber's decoder never sees a frame whose reference it did not get.

use std::time::{Duration, Instant};

/// Spatial layers of one track (simulcast encodings).
pub const MAX_SPATIAL: usize = 3;
/// Temporal layers counted per spatial layer (VP8 allows four).
pub const MAX_TEMPORAL: usize = 4;

/// The spatial index for a simulcast RID as browsers and SFUs name them; `None` for a name we do
/// not know (the driver then numbers layers in order of appearance).
pub fn rid_index(rid: &str) -> Option<u8> {
    match rid {
        "q" | "l" | "low" | "0" | "r0" => Some(0),
        "h" | "m" | "mid" | "1" | "r1" => Some(1),
        "f" | "high" | "2" | "r2" => Some(2),
        _ => None,
    }
}

/// A layer with no packet for this long is taken as stopped (a browser stops its top encodings
/// when its own uplink or CPU cannot carry them).
pub const LAYER_IDLE: Duration = Duration::from_millis(1500);

const BUCKET: Duration = Duration::from_millis(500);

/// Bytes a forwarded packet costs the subscriber's link beyond its payload: IPv4 and UDP headers,
/// the RTP header with its extensions, the SRTP tag. The estimate measures the link, so costs
/// count what the link carries: for 50 audio packets a second this is a third of the Opus payload.
pub const PACKET_OVERHEAD: usize = 20 + 8 + 12 + 12 + 10;

/// Bytes received per temporal layer over the last 0.5–1 s: what forwarding a layer costs.
/// Two buckets swapped every half second; no allocation.
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    bucket_start: Option<Instant>,
    cur: [u64; MAX_TEMPORAL],
    prev: [u64; MAX_TEMPORAL],
    /// `prev` covers a whole bucket (false at the start and after an idle gap).
    has_prev: bool,
    /// Highest TID seen in either bucket.
    top_tid: u8,
    prev_top_tid: u8,
    last_packet: Option<Instant>,
}

impl RateMeter {
    pub fn on_packet(&mut self, now: Instant, tid: u8, bytes: usize) {
        self.roll(now);
        let t = usize::from(tid).min(MAX_TEMPORAL - 1);
        self.cur[t] += bytes as u64;
        self.top_tid = self.top_tid.max(t as u8);
        self.last_packet = Some(now);
    }

    fn roll(&mut self, now: Instant) {
        let start = *self.bucket_start.get_or_insert(now);
        let age = now.saturating_duration_since(start);
        if age < BUCKET {
            return;
        }
        if age >= BUCKET * 2 {
            self.prev = [0; MAX_TEMPORAL];
            self.prev_top_tid = 0;
            self.has_prev = false;
        } else {
            self.prev = self.cur;
            self.prev_top_tid = self.top_tid;
            self.has_prev = true;
        }
        self.cur = [0; MAX_TEMPORAL];
        self.top_tid = 0;
        self.bucket_start = Some(now);
    }

    /// Packets arrived recently.
    pub fn active(&self, now: Instant) -> bool {
        self.last_packet.is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
    }

    /// The highest temporal layer the source sends (0 when it sends none).
    pub fn top_temporal(&self) -> u8 {
        self.top_tid.max(self.prev_top_tid)
    }

    /// Bits per second of temporal layers `0..=max_tid`.
    pub fn bps(&self, now: Instant, max_tid: u8) -> u64 {
        let Some(start) = self.bucket_start else { return 0 };
        let n = usize::from(max_tid).min(MAX_TEMPORAL - 1) + 1;
        let bytes: u64 = self.cur[..n].iter().chain(&self.prev[..n]).sum();
        let cur = now.saturating_duration_since(start).min(BUCKET);
        // At the start only the current bucket holds data; not less than 100 ms of it.
        let span = if self.has_prev { BUCKET + cur } else { cur.max(BUCKET / 5) };
        bytes * 8 * 1000 / span.as_millis().max(1) as u64
    }
}

/// What a down track forwards: one spatial layer, temporal layers up to `temporal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Choice {
    pub spatial: u8,
    pub temporal: u8,
}

impl Choice {
    pub const TOP: Choice = Choice { spatial: MAX_SPATIAL as u8 - 1, temporal: MAX_TEMPORAL as u8 - 1 };
}

/// One track's options, cheapest first, with what each costs (bits per second).
#[derive(Debug, Clone, Default)]
pub struct Ladder {
    pub steps: Vec<(Choice, u64)>,
}

impl Ladder {
    /// From the track's per-layer meters: the lowest active spatial layer with fewer and then all
    /// of its temporal layers, then each higher active layer whole. A track that is not simulcast
    /// and has no temporal layers has one step.
    pub fn from_meters<'a>(meters: impl IntoIterator<Item = &'a RateMeter>, now: Instant) -> Ladder {
        let mut steps = Vec::new();
        for (s, m) in meters.into_iter().enumerate() {
            if !m.active(now) {
                continue;
            }
            let top = m.top_temporal();
            let first = if steps.is_empty() { 0 } else { top };
            for t in first..=top {
                steps.push((Choice { spatial: s as u8, temporal: t }, m.bps(now, t)));
            }
        }
        Ladder { steps }
    }
}

/// Picks a step per ladder so that the total fits `budget` (bits per second): everyone starts on
/// the cheapest step, then tracks move up one step at a time, the least served first, while the
/// next step fits. `out[i]` is the index of ladder `i`'s step; every ladder gets at least its
/// first step (whether even that fits is the audio-only fallback's question, see `bwe`).
pub fn allocate(ladders: &[Ladder], budget: u64, out: &mut Vec<usize>) {
    out.clear();
    out.resize(ladders.len(), 0);
    let mut total: u64 = ladders.iter().filter_map(|l| l.steps.first()).map(|s| s.1).sum();
    loop {
        let mut best: Option<(usize, u64)> = None;
        for (i, l) in ladders.iter().enumerate() {
            let (Some(cur), Some(next)) = (l.steps.get(out[i]), l.steps.get(out[i] + 1)) else { continue };
            let extra = next.1.saturating_sub(cur.1);
            if total + extra > budget {
                continue;
            }
            // Least served first: the lowest step index, then the cheapest raise.
            let better = best.is_none_or(|(b, e)| out[i] < out[b] || (out[i] == out[b] && extra < e));
            if better {
                best = Some((i, extra));
            }
        }
        let Some((i, extra)) = best else { break };
        out[i] += 1;
        total += extra;
    }
}

/// A step down is applied once the estimate has asked for it this long (the link is hurting);
/// at once after a step up that failed.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);
/// Share of the estimate that video may use: audio, RTCP and retransmissions need the rest.
pub const BUDGET_SHARE: f64 = 0.85;
/// A probe comes at least this long after a step up (long enough for congestion at the current
/// layers to show in the estimate before more is sent), at least `DWELL_AFTER_DOWN` after a step
/// down (the link has just shown its limit), and the first one `FIRST_TRY` after the first
/// estimate (long enough for a link overloaded by the first layers to show it).
pub const DWELL: Duration = Duration::from_secs(4);
pub const DWELL_AFTER_DOWN: Duration = Duration::from_secs(12);
pub const FIRST_TRY: Duration = Duration::from_secs(4);
/// A step down this soon after a step up means the step up failed: the link could not carry it.
/// It is applied at once (the link is overloaded now, voice included).
pub const PROBATION: Duration = Duration::from_secs(10);
/// After a failed probe or step up, the next probe waits this long, doubling while they keep
/// failing.
pub const RETRY_FIRST: Duration = Duration::from_secs(20);
pub const RETRY_MAX: Duration = Duration::from_secs(160);

/// A probe: padding sent for this long at the rate the wanted layers would need, times
/// `PROBE_MARGIN`; a step up needs the link to have delivered `PROOF_MARGIN` times what the new
/// layers cost. Short, so that a link that cannot carry it only queues it: 100 ms of 500 kbps
/// too much is 6 KB, less than a second of a weak link's buffer.
pub const PROBE_CLUSTER: Duration = Duration::from_millis(100);
pub const PROBE_MARGIN: f64 = 1.4;
pub const PROOF_MARGIN: f64 = 1.1;
/// A link that lost this share of the last second's packets has no room to probe: its padding
/// would only add to the loss.
pub const PROBE_MAX_LOSS: f64 = 0.02;
/// A probe with no result by then failed (its packets or their feedback were lost).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// A probe's result is acted on only this soon after it came.
pub const PROOF_FRESH: Duration = Duration::from_millis(1000);
/// A probe asks for at most this many times what the subscriber receives now, or for the next
/// step whole when that is more (a spatial layer costs about three times the one below).
pub const PROBE_MAX_FACTOR: u64 = 2;

/// Per subscriber: when its layers may change.
///
/// GCC's estimate is evidence only about what was actually sent: a link carrying 200 kbps shows
/// no congestion and the estimate keeps climbing, whatever the link could really take. So the
/// estimate decides only how far down to go and whether climbing is worth a try; a climb needs a
/// probe (a short burst of padding, see `Room::on_bandwidth`) showing the link delivers what the
/// new layers need. Probes and climbs that fail make the next try wait 20 s, 40 s, … 160 s, as the
/// audio-only fallback's retries do (see `bwe`); a climb that holds for `PROBATION` resets that.
#[derive(Debug, Clone)]
pub struct Climb {
    /// Since when a step down has been wanted.
    down_since: Option<Instant>,
    /// The latest step up, while on probation.
    last_up: Option<Instant>,
    /// No probe before this.
    blocked_until: Option<Instant>,
    backoff: Duration,
    /// The latest change and whether it was a step down; before the first, the instant of the
    /// first estimate (the subscriber's first layers count as a change).
    last_change: Option<(Instant, bool)>,
}

impl Default for Climb {
    fn default() -> Self {
        Climb { down_since: None, last_up: None, blocked_until: None, backoff: RETRY_FIRST, last_change: None }
    }
}

impl Climb {
    fn expire(&mut self, now: Instant) {
        if self.last_up.is_some_and(|t| now >= t + PROBATION) {
            self.last_up = None;
            self.backoff = RETRY_FIRST; // the last climb held
        }
        if self.last_change.is_none() {
            // The first try comes FIRST_TRY after the first estimate.
            self.last_change = Some((now.checked_sub(DWELL - FIRST_TRY).unwrap_or(now), false));
        }
    }

    /// The estimate asks for less than the current layers: true when it has asked long enough
    /// (and records the step down).
    pub fn wants_down(&mut self, now: Instant) -> bool {
        self.expire(now);
        let since = *self.down_since.get_or_insert(now);
        let wait = if self.last_up.is_some() { Duration::ZERO } else { DOWN_AFTER };
        if now.saturating_duration_since(since) < wait {
            return false;
        }
        self.down_since = None;
        self.last_change = Some((now, true));
        if self.last_up.take().is_some() {
            self.failed(now); // a failed climb: undone now, and the next try waits
        }
        true
    }

    /// Whether a probe for higher layers may go out now.
    pub fn may_try(&mut self, now: Instant) -> bool {
        self.expire(now);
        let (changed, was_down) = self.last_change.expect("set by expire");
        let dwell = if was_down { DWELL_AFTER_DOWN } else { DWELL };
        now.saturating_duration_since(changed) >= dwell && self.blocked_until.is_none_or(|t| now >= t)
    }

    /// A probe showed the link carries more: the layers went up now.
    pub fn climbed(&mut self, now: Instant) {
        self.down_since = None;
        self.last_change = Some((now, false));
        self.last_up = Some(now);
    }

    /// A probe (or a climb) failed: the next probe waits, longer each time.
    pub fn failed(&mut self, now: Instant) {
        self.blocked_until = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
    }

    /// Nothing to step down from.
    pub fn settled(&mut self) {
        self.down_since = None;
    }
}

/// The highest step a ladder may climb to from step `at` in one change: the next one (another
/// temporal layer, or the next spatial layer whole). The estimate says little about what the link
/// would carry beyond what it carries now, so each climb is a small try.
pub fn one_step_up(ladder: &Ladder, at: usize) -> usize {
    (at + 1).min(ladder.steps.len().saturating_sub(1)).max(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rids_map_to_spatial_indexes() {
        assert_eq!(rid_index("q"), Some(0));
        assert_eq!(rid_index("h"), Some(1));
        assert_eq!(rid_index("f"), Some(2));
        assert_eq!(rid_index("high"), Some(2));
        assert_eq!(rid_index("x"), None);
    }

    /// A meter fed for one second: `per_tid` bytes per 10 ms per temporal layer.
    fn meter(t0: Instant, per_tid: &[usize]) -> RateMeter {
        let mut m = RateMeter::default();
        for i in 0..100u64 {
            for (tid, &b) in per_tid.iter().enumerate() {
                m.on_packet(t0 + Duration::from_millis(i * 10), tid as u8, b);
            }
        }
        m
    }

    #[test]
    fn the_meter_measures_each_temporal_layer_and_notices_a_stopped_layer() {
        let t0 = Instant::now();
        // 100 bytes per 10 ms = 80 kbps on each of three temporal layers.
        let m = meter(t0, &[100, 100, 100]);
        let now = t0 + Duration::from_millis(1000);
        let base = m.bps(now, 0);
        assert!((70_000..=90_000).contains(&base), "{base}");
        let all = m.bps(now, 2);
        assert!((210_000..=270_000).contains(&all), "{all}");
        assert_eq!(m.top_temporal(), 2);
        assert!(m.active(now));
        assert!(!m.active(now + LAYER_IDLE));
    }

    fn ladder(steps: &[(u8, u8, u64)]) -> Ladder {
        Ladder { steps: steps.iter().map(|&(s, t, r)| (Choice { spatial: s, temporal: t }, r)).collect() }
    }

    #[test]
    fn the_ladder_has_temporal_steps_only_on_the_lowest_active_layer() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_millis(1000);
        let meters = [RateMeter::default(), meter(t0, &[100, 50, 50]), meter(t0, &[400, 200, 200])];
        let l = Ladder::from_meters(&meters, now);
        let choices: Vec<_> = l.steps.iter().map(|(c, _)| (c.spatial, c.temporal)).collect();
        assert_eq!(choices, vec![(1, 0), (1, 1), (1, 2), (2, 2)], "layer 0 is not sent");
        assert!(l.steps.windows(2).all(|w| w[0].1 < w[1].1), "cheapest first: {:?}", l.steps);
    }

    #[test]
    fn allocation_fills_the_budget_least_served_first() {
        let a = ladder(&[(0, 0, 60), (0, 2, 150), (1, 2, 500), (2, 2, 1500)]);
        let b = ladder(&[(0, 0, 60), (0, 2, 150), (1, 2, 500), (2, 2, 1500)]);
        let mut out = Vec::new();
        allocate(&[a.clone(), b.clone()], 10_000, &mut out);
        assert_eq!(out, vec![3, 3], "plenty: both on the top layer");
        allocate(&[a.clone(), b.clone()], 1_100, &mut out);
        assert_eq!(out, vec![2, 2], "both on the middle layer rather than one high, one low");
        allocate(&[a.clone(), b.clone()], 300, &mut out);
        assert_eq!(out, vec![1, 1]);
        allocate(std::slice::from_ref(&a), 100, &mut out);
        assert_eq!(out, vec![0], "the first step is always given");
        allocate(&[a, ladder(&[(0, 0, 30)])], 2_000, &mut out);
        assert_eq!(out, vec![3, 0], "a one-step track does not hold the others back");
    }

    #[test]
    fn probes_wait_their_dwell_and_a_step_down_waits_a_second() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = Climb::default();
        assert!(!c.may_try(ms(0)), "the first estimate");
        assert!(c.may_try(ms(4000)), "the first probe 4 s after it");
        c.climbed(ms(4100));
        assert!(!c.may_try(ms(8000)), "4 s after a climb");
        assert!(c.may_try(ms(8100)));
        assert!(!c.wants_down(ms(14_200)), "a step down waits 1 s (the climb held past probation)");
        c.settled();
        assert!(!c.wants_down(ms(14_500)), "the wish went away: start over");
        assert!(c.wants_down(ms(15_500)));
        assert!(!c.may_try(ms(27_400)), "12 s after a step down");
        assert!(c.may_try(ms(27_500)));
    }

    #[test]
    fn a_failed_climb_or_probe_delays_the_next_try_and_the_delay_doubles() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut c = Climb::default();
        c.may_try(s(0));
        c.climbed(s(4));
        assert!(c.wants_down(s(5)), "down 1 s after the climb, at once: it failed");
        assert!(!c.may_try(s(24)), "blocked for 20 s after the failure");
        assert!(c.may_try(s(25)));
        c.failed(s(25)); // a probe that failed
        assert!(!c.may_try(s(64)), "now 40 s");
        assert!(c.may_try(s(65)));
        c.climbed(s(65));
        // This one holds past its probation: the delay starts over.
        assert!(c.may_try(s(76)));
        c.failed(s(76));
        assert!(!c.may_try(s(95)));
        assert!(c.may_try(s(96)), "20 s again");
    }

    #[test]
    fn one_change_climbs_one_step() {
        let l = ladder(&[(0, 0, 60), (0, 1, 90), (0, 2, 150), (1, 2, 500), (2, 2, 1500)]);
        assert_eq!(one_step_up(&l, 0), 1);
        assert_eq!(one_step_up(&l, 2), 3);
        assert_eq!(one_step_up(&l, 4), 4);
        assert_eq!(one_step_up(&Ladder::default(), 0), 0);
    }
}
