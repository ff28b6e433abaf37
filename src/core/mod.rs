//! The media core: rooms, participants, published tracks and subscriptions, and every forwarding
//! decision. It does no IO and reads no clock: time comes in as an `Instant` argument, and what the
//! core wants done comes out of [`Room::poll_output`] (str0m's `handle_input`/`poll_output` shape).
//!
//! Object model (mediasoup's, LiveKit's vocabulary):
//! a [`Room`] (one per session) holds participants; a participant publishes *up tracks*; each up
//! track has one *down track* per participant allowed to receive it. Who may receive what is the
//! room's [`ForwardPolicy`]; the driver in `media` only carries out [`Output`]s.
//!
//! Invariants:
//! - every down track belongs to exactly one up track and one subscriber, and is listed in that up
//!   track's route; removing either end removes the down track and tells the driver;
//! - a down track forwards nothing until the subscriber has negotiated it ([`Room::down_track_ready`]),
//!   and a video down track forwards nothing before a keyframe;
//! - the sequence numbers and timestamps a subscriber sees on a down track are continuous,
//!   whatever happens upstream (source switches, SSRC changes, a publisher reconnecting);
//! - keyframe requests reach a publisher's track at most once per `pli_interval`;
//! - a participant is in exactly one zone, and no packet of a track reaches a participant outside
//!   the publisher's zone (the policy is asked again on every zone change);
//! - a track muted by a host forwards nothing, whatever its publisher sends.

pub mod bwe;
pub mod codec;
pub mod gop;
pub mod ids;
pub mod layers;
pub mod munger;
pub mod policy;
pub mod quality;
pub mod roles;
pub mod room;
pub mod speaker;
pub mod stats;
pub mod vp8;
pub mod zone;

pub use ids::{DownTrackKey, KeyAlloc, ParticipantKey, UpTrackKey};
pub use policy::{ForwardPolicy, SameZone, Subject};
pub use roles::{policy, Action, RolePolicy};
pub use room::{
    Control, ControlError, CoreConfig, CoreError, Forward, LayerReport, LeaveCause, MediaKind, Output, ParticipantInfo,
    ParticipantView, Replayed, Role, Room, RoomEvent, RtpIn, TrackReport, TrackSource, TrackView, UpTrackInfo,
    MAX_REPRESENTATIVES,
};
pub use zone::Zone;
