//! Who receives whose media. The room asks its policy for every (subscriber, track) pair whenever
//! participants or tracks change; zones and roles plug in here without touching forwarding.

use super::room::{ParticipantInfo, UpTrackInfo};

pub trait ForwardPolicy: Send {
    /// May `subscriber` receive `track`, published by `publisher`?
    fn may_receive(&self, subscriber: &ParticipantInfo, publisher: &ParticipantInfo, track: &UpTrackInfo) -> bool;
}

/// Everyone receives every track of everyone else. The default until zones exist.
#[derive(Debug, Default, Clone, Copy)]
pub struct EveryoneElse;

impl ForwardPolicy for EveryoneElse {
    fn may_receive(&self, s: &ParticipantInfo, p: &ParticipantInfo, _t: &UpTrackInfo) -> bool {
        s.key != p.key
    }
}
