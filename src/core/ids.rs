//! Small copyable keys for the per-packet path. External identifiers (`p_…`, `ses_…`) are strings
//! and live at the edges; inside the core and the driver everything is keyed by these integers.

/// A participant, unique within one server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantKey(pub u32);

/// A published (up) track, unique within one server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpTrackKey(pub u32);

/// One subscriber's copy of an up track, unique within one server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DownTrackKey(pub u32);

/// Hands out keys. Owned by the driver and lent to rooms, so keys never collide across rooms.
#[derive(Debug, Default)]
pub struct KeyAlloc {
    next: u32,
}

impl KeyAlloc {
    fn bump(&mut self) -> u32 {
        // u32 keys last for 4 billion allocations; a server restarts long before that.
        self.next = self.next.wrapping_add(1);
        self.next
    }
    pub fn participant(&mut self) -> ParticipantKey {
        ParticipantKey(self.bump())
    }
    pub fn up_track(&mut self) -> UpTrackKey {
        UpTrackKey(self.bump())
    }
    pub fn down_track(&mut self) -> DownTrackKey {
        DownTrackKey(self.bump())
    }
}

/// Hashes the keys above (and the driver's own integer keys) with one multiply instead of
/// SipHash. Every forwarded packet looks up its down track, its peer connection and more by
/// these keys; SipHash's rounds were a share of the forwarding profile for no benefit here. SipHash
/// guards a map against keys a remote chooses to collide; these keys are handed out by
/// [`KeyAlloc`] (and the driver's counters), never taken from the wire. Maps keyed by what a
/// remote sends (SSRCs, addresses, ufrags) keep the default hasher.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        // A Fibonacci-style multiply spreads consecutive keys over the high bits hashbrown uses.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A map keyed by the server's own integer keys (see [`KeyHasher`]).
pub type KeyMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<KeyHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn consecutive_keys_hash_apart_in_the_bits_a_map_uses() {
        let b = std::hash::BuildHasherDefault::<KeyHasher>::default();
        let hashes: Vec<u64> = (1..=64u32).map(|k| b.hash_one(DownTrackKey(k))).collect();
        // hashbrown takes its 7-bit tag from the top bits and the bucket from the low ones.
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        let buckets: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 63).collect();
        assert!(tags.len() > 32, "top bits: {} distinct of 64", tags.len());
        assert!(buckets.len() > 32, "low bits: {} distinct of 64", buckets.len());
        let mut m: KeyMap<DownTrackKey, u32> = KeyMap::default();
        for k in 1..=1000u32 {
            m.insert(DownTrackKey(k), k);
        }
        assert!((1..=1000u32).all(|k| m.get(&DownTrackKey(k)) == Some(&k)));
    }
}
