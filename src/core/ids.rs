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
