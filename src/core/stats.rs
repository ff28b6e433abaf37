//! Receive statistics of an up track, kept per packet for later bandwidth decisions and for the
//! operator: packets, bytes, loss (RFC 3550 A.3), interarrival jitter (RFC 3550 A.8) and bitrate.
//! Fixed-size state; updating it allocates nothing.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    pub packets: u64,
    pub bytes: u64,
    /// Extended highest sequence number (cycles << 16 | seq) and the first one seen.
    base_seq: u32,
    max_seq_ext: u32,
    started: bool,
    /// Jitter in RTP timestamp units, scaled by 16 as in RFC 3550.
    jitter_q4: u32,
    last_transit: Option<i64>,
    first_arrival: Option<Instant>,
    /// Bitrate over a sliding one-second window.
    window_start: Option<Instant>,
    window_bytes: u64,
    pub bitrate_bps: u64,
    pub last_packet_at: Option<Instant>,
}

/// A snapshot for reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StatsView {
    pub packets: u64,
    pub bytes: u64,
    pub expected: u64,
    pub lost: i64,
    pub jitter_ms: u32,
    pub bitrate_bps: u64,
}

impl ReceiveStats {
    pub fn on_packet(&mut self, seq: u16, rtp_ts: u32, payload_len: usize, clock_rate: u32, now: Instant) {
        self.packets += 1;
        self.bytes += payload_len as u64;
        self.last_packet_at = Some(now);
        if !self.started {
            self.started = true;
            self.base_seq = seq as u32;
            self.max_seq_ext = seq as u32;
            self.first_arrival = Some(now);
        } else {
            let max = self.max_seq_ext as u16;
            let delta = seq.wrapping_sub(max);
            if delta != 0 && delta < 0x8000 {
                if seq < max {
                    self.max_seq_ext = self.max_seq_ext.wrapping_add(1 << 16); // wrapped
                }
                self.max_seq_ext = (self.max_seq_ext & 0xffff_0000) | seq as u32;
            }
        }
        // Jitter: transit time in RTP units, D = difference of successive transits.
        if clock_rate > 0 {
            let first = self.first_arrival.unwrap_or(now);
            let arrival = now.saturating_duration_since(first).as_secs_f64() * clock_rate as f64;
            let transit = arrival as i64 - rtp_ts as i64;
            if let Some(last) = self.last_transit {
                let d = (transit - last).unsigned_abs().min(u32::MAX as u64 / 32) as u32;
                // J += (|D| - J) / 16, kept scaled by 16.
                self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
            }
            self.last_transit = Some(transit);
        }
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) >= Duration::from_secs(1) => {
                let secs = now.saturating_duration_since(start).as_secs_f64();
                self.bitrate_bps = ((self.window_bytes * 8) as f64 / secs) as u64;
                self.window_start = Some(now);
                self.window_bytes = payload_len as u64;
            }
            Some(_) => self.window_bytes += payload_len as u64,
            None => {
                self.window_start = Some(now);
                self.window_bytes = payload_len as u64;
            }
        }
    }

    /// Packets the sequence numbers say were sent since the first one received.
    pub fn expected(&self) -> u64 {
        if self.started {
            (self.max_seq_ext.wrapping_sub(self.base_seq) as u64) + 1
        } else {
            0
        }
    }

    pub fn view(&self, clock_rate: u32) -> StatsView {
        let expected = self.expected();
        let jitter_units = self.jitter_q4 >> 4;
        StatsView {
            packets: self.packets,
            bytes: self.bytes,
            expected,
            lost: expected as i64 - self.packets as i64,
            jitter_ms: if clock_rate > 0 { (jitter_units as u64 * 1000 / clock_rate as u64) as u32 } else { 0 },
            bitrate_bps: self.bitrate_bps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_expected_minus_received_across_a_wrap() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::default();
        for seq in [65533u16, 65534, 0, 1, 3] {
            s.on_packet(seq, 0, 100, 90_000, t0);
        }
        let v = s.view(90_000);
        assert_eq!(v.expected, 7); // 65533..=3
        assert_eq!(v.packets, 5);
        assert_eq!(v.lost, 2); // 65535 and 2
    }

    #[test]
    fn duplicates_make_loss_negative_as_rfc3550_allows() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::default();
        for seq in [1u16, 2, 2, 3] {
            s.on_packet(seq, 0, 10, 48_000, t0);
        }
        assert_eq!(s.view(48_000).lost, -1);
    }

    #[test]
    fn steady_packets_have_near_zero_jitter_and_late_ones_raise_it() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::default();
        for i in 0..50u32 {
            s.on_packet(i as u16, i * 960, 100, 48_000, t0 + Duration::from_millis(20 * i as u64));
        }
        assert!(s.view(48_000).jitter_ms <= 1);
        for i in 50..100u32 {
            let wobble = if i % 2 == 0 { 30 } else { 0 };
            s.on_packet(i as u16, i * 960, 100, 48_000, t0 + Duration::from_millis(20 * i as u64 + wobble));
        }
        assert!(s.view(48_000).jitter_ms >= 10, "{:?}", s.view(48_000));
    }

    #[test]
    fn bitrate_is_measured_over_one_second_windows() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::default();
        // 125 bytes every 10 ms = 100 kbit/s
        for i in 0..=200u64 {
            s.on_packet(i as u16, 0, 125, 90_000, t0 + Duration::from_millis(10 * i));
        }
        let bps = s.view(90_000).bitrate_bps;
        assert!((95_000..=105_000).contains(&bps), "{bps}");
    }
}
