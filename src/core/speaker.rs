//! Active speaker detection from the audio level each publisher's client puts in every audio
//! packet (RFC 6464: 0 is the loudest, 127 silence, in −dBov). Per track, a smoothed loudness is
//! kept per packet (a few integer operations, no allocation); the room compares them at a fixed
//! interval and changes the speaker only when another participant has been the loudest, above the
//! voice threshold, for two evaluations in a row, so the speaker does not flicker.

use std::time::Duration;

/// How often the room compares loudness.
pub const SPEAKER_INTERVAL: Duration = Duration::from_millis(300);
/// Smoothed loudness (127 − level) below which nobody is speaking: about −50 dBov.
const VOICE_THRESHOLD: u32 = 77 << 4;

/// Per-track smoothed loudness, fixed point ×16.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loudness {
    smoothed_q4: u32,
}

impl Loudness {
    /// Feeds one packet's RFC 6464 level (0–127, 0 loudest).
    pub fn on_level(&mut self, level: u8) {
        let loud = (127 - level.min(127) as u32) << 4;
        // Exponential average with weight 1/8: reacts in a few hundred ms of 20 ms packets.
        self.smoothed_q4 = self.smoothed_q4 - (self.smoothed_q4 >> 3) + (loud >> 3);
    }

    /// Decays toward silence when no packet came (a muted or stopped track).
    pub fn decay(&mut self) {
        self.smoothed_q4 -= self.smoothed_q4 >> 2;
    }

    pub fn value(&self) -> u32 {
        self.smoothed_q4
    }

    pub fn is_voice(&self) -> bool {
        self.smoothed_q4 >= VOICE_THRESHOLD
    }
}

/// The speaker decision with its hysteresis.
#[derive(Debug, Clone)]
pub struct SpeakerPicker<K: Copy + PartialEq> {
    current: Option<K>,
    candidate: Option<K>,
}

impl<K: Copy + PartialEq> Default for SpeakerPicker<K> {
    fn default() -> Self {
        SpeakerPicker { current: None, candidate: None }
    }
}

impl<K: Copy + PartialEq> SpeakerPicker<K> {
    /// Given the loudest voice this evaluation (if any), returns the new speaker if it changed.
    pub fn evaluate(&mut self, loudest: Option<K>) -> Option<K> {
        let Some(k) = loudest else {
            self.candidate = None;
            return None; // silence keeps the last speaker on screen
        };
        if self.current == Some(k) {
            self.candidate = None;
            return None;
        }
        if self.candidate == Some(k) {
            self.current = Some(k);
            self.candidate = None;
            return Some(k);
        }
        self.candidate = Some(k);
        None
    }

    pub fn current(&self) -> Option<K> {
        self.current
    }

    /// Forgets a participant who left.
    pub fn forget(&mut self, k: K) {
        if self.current == Some(k) {
            self.current = None;
        }
        if self.candidate == Some(k) {
            self.candidate = None;
        }
    }
}

/// Reads the RFC 6464 level from a one-byte-header extension payload: the low 7 bits.
pub fn level_from_extension(payload: &[u8]) -> Option<u8> {
    payload.first().map(|b| b & 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_rises_above_the_threshold_and_silence_falls_below() {
        let mut l = Loudness::default();
        for _ in 0..50 {
            l.on_level(30); // −30 dBov: ordinary speech
        }
        assert!(l.is_voice(), "{}", l.value());
        for _ in 0..50 {
            l.on_level(127);
        }
        assert!(!l.is_voice());
    }

    #[test]
    fn the_speaker_changes_only_after_two_evaluations_in_a_row() {
        let mut p = SpeakerPicker::default();
        assert_eq!(p.evaluate(Some(1)), None, "first time loudest: a candidate");
        assert_eq!(p.evaluate(Some(1)), Some(1), "second time: the speaker");
        assert_eq!(p.evaluate(Some(2)), None);
        assert_eq!(p.evaluate(Some(1)), None, "a blip of 2 does not switch");
        assert_eq!(p.evaluate(None), None, "silence keeps the speaker");
        assert_eq!(p.current(), Some(1));
        assert_eq!(p.evaluate(Some(2)), None);
        assert_eq!(p.evaluate(Some(2)), Some(2));
        p.forget(2);
        assert_eq!(p.current(), None);
    }

    #[test]
    fn the_level_is_the_low_seven_bits() {
        assert_eq!(level_from_extension(&[0x80 | 42]), Some(42), "the voice-activity bit is ignored");
        assert_eq!(level_from_extension(&[]), None);
    }
}
