//! Who receives whose media. The room asks its policy for every (subscriber, track) pair whenever
//! participants, zones or tracks change; forwarding itself never decides.

use super::room::{ParticipantInfo, UpTrackInfo};
use super::zone::Zone;

/// A participant as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub info: &'a ParticipantInfo,
    pub zone: Zone,
}

pub trait ForwardPolicy: Send {
    /// May `subscriber` receive `track`, published by `publisher`?
    fn may_receive(&self, subscriber: Subject<'_>, publisher: Subject<'_>, track: &UpTrackInfo) -> bool;
}

/// The rule for every session kind: media flows between different participants of the same zone,
/// and never in a waiting zone.
#[derive(Debug, Default, Clone, Copy)]
pub struct SameZone;

impl ForwardPolicy for SameZone {
    fn may_receive(&self, s: Subject<'_>, p: Subject<'_>, _t: &UpTrackInfo) -> bool {
        s.info.key != p.info.key && s.zone == p.zone && s.zone.carries_media()
    }
}
