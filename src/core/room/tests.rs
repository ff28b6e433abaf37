//! Room behaviour, driven faster than real time: every instant is made up by the test.

use super::*;
use crate::core::SameZone;

struct Harness {
    room: Room,
    keys: KeyAlloc,
    t0: Instant,
}

const VP8_KEY: &[u8] = &[0x10, 0x00, 0x9d, 0x01, 0x2a];
const VP8_DELTA: &[u8] = &[0x10, 0x01, 0x00];
/// Not a partition start: the rest of a frame.
const VP8_MORE: &[u8] = &[0x00, 0x00, 0x00];

impl Harness {
    fn new() -> Harness {
        Harness::with_config(CoreConfig { gop_cache_bytes: 1 << 20, ..CoreConfig::default() })
    }
    fn with_config(config: CoreConfig) -> Harness {
        Harness { room: Room::new(config, Box::new(SameZone)), keys: KeyAlloc::default(), t0: Instant::now() }
    }
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }
    fn join(&mut self, name: &str, role: Role) -> ParticipantKey {
        self.join_in(name, role, Zone::Main)
    }
    fn join_in(&mut self, name: &str, role: Role, zone: Zone) -> ParticipantKey {
        let key = self.keys.participant();
        let info = ParticipantInfo {
            key,
            id: format!("p_{name}"),
            display_name: name.into(),
            role,
            site_id: None,
            group: None,
        };
        self.room.join(self.t0, info, zone, &mut self.keys).unwrap();
        key
    }
    fn control(&mut self, actor: ParticipantKey, c: Control) -> Result<(), ControlError> {
        self.room.control(self.t0, actor, c, &mut self.keys).map(|_| ())
    }
    fn join_group(&mut self, name: &str, group: &str, zone: Zone) -> ParticipantKey {
        let key = self.keys.participant();
        let info = ParticipantInfo {
            key,
            id: format!("p_{name}"),
            display_name: name.into(),
            role: Role::Party,
            site_id: None,
            group: Some(group.into()),
        };
        self.room.join(self.t0, info, zone, &mut self.keys).unwrap();
        key
    }
    /// Subscribers of `up`, from the room's own routing.
    fn subscribers_of(&self, up: UpTrackKey) -> Vec<ParticipantKey> {
        let mut v: Vec<_> = self.room.down_tracks.values().filter(|d| d.up == up).map(|d| d.subscriber).collect();
        v.sort();
        v
    }
    fn publish(&mut self, who: ParticipantKey, kind: MediaKind) -> UpTrackKey {
        let (mime, clock_rate, source) = match kind {
            MediaKind::Video => ("video/VP8", 90_000, TrackSource::Camera),
            MediaKind::Audio => ("audio/opus", 48_000, TrackSource::Microphone),
        };
        let info = UpTrackInfo {
            track_id: format!("t_{}", self.keys.up_track().0),
            kind,
            source,
            mime: mime.into(),
            clock_rate,
        };
        self.room.publish(self.t0, who, info, &mut self.keys).unwrap()
    }
    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.room.poll_output()).collect()
    }
    fn added_downs(outputs: &[Output]) -> Vec<(ParticipantKey, DownTrackKey, UpTrackKey)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::AddDownTrack { subscriber, down, up } => Some((*subscriber, *down, *up)),
                _ => None,
            })
            .collect()
    }
    /// A judge's video with a party subscribed and its down track ready; a keyframe (SSRC 1,
    /// seq 10) went out as seq 0.
    fn video_to_one_subscriber() -> (Harness, UpTrackKey) {
        Harness::video_to_one_subscriber_in(Harness::new())
    }
    fn video_to_one_subscriber_in(mut h: Harness) -> (Harness, UpTrackKey) {
        let a = h.join("a", Role::Judge);
        let _b = h.join("b", Role::Party);
        let up = h.publish(a, MediaKind::Video);
        let down = Harness::added_downs(&h.drain())[0].1;
        h.room.down_track_ready(h.t0, down, 0, 0, &mut Vec::new());
        h.forward(h.t0, up, 1, 10, VP8_KEY);
        (h, up)
    }

    fn forward(&mut self, at: Instant, up: UpTrackKey, ssrc: u32, seq: u16, payload: &[u8]) -> Vec<Forward> {
        let mut out = Vec::new();
        let payload = Bytes::copy_from_slice(payload);
        let pkt =
            RtpIn { ssrc, layer: 0, seq, ts: seq as u32 * 3000, marker: true, payload: &payload, audio_level: None };
        self.room.on_rtp(at, up, pkt, &mut out);
        out
    }
}

#[test]
fn a_published_track_gets_a_down_track_for_every_other_participant() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    let b = h.join("b", Role::Party);
    let c = h.join("c", Role::Counsel);
    h.drain();
    let up = h.publish(a, MediaKind::Video);
    let out = h.drain();
    let mut subs: Vec<_> = Harness::added_downs(&out)
        .into_iter()
        .map(|(s, _, u)| {
            assert_eq!(u, up);
            s
        })
        .collect();
    subs.sort();
    assert_eq!(subs, vec![b, c]);
    let published: Vec<_> =
        out.iter().filter(|o| matches!(o, Output::Event { event: RoomEvent::TrackPublished(_), .. })).collect();
    assert_eq!(published.len(), 2, "b and c are told, the publisher is not");
}

#[test]
fn a_late_joiner_subscribes_to_tracks_already_published() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    h.publish(a, MediaKind::Video);
    h.publish(a, MediaKind::Audio);
    h.drain();
    let b = h.join("b", Role::Party);
    let out = h.drain();
    let downs = Harness::added_downs(&out);
    assert_eq!(downs.len(), 2);
    assert!(downs.iter().all(|(s, _, _)| *s == b));
    let (people, tracks) = h.room.snapshot();
    assert_eq!(people.len(), 2);
    assert_eq!(tracks.len(), 2);
}

#[test]
fn an_observer_may_not_publish() {
    let mut h = Harness::new();
    let o = h.join("o", Role::Observer);
    let info = UpTrackInfo {
        track_id: "t".into(),
        kind: MediaKind::Audio,
        source: TrackSource::Microphone,
        mime: "audio/opus".into(),
        clock_rate: 48_000,
    };
    assert_eq!(h.room.publish(h.t0, o, info, &mut h.keys), Err(CoreError::MayNotPublish(Role::Observer)));
}

#[test]
fn nothing_is_forwarded_before_the_subscriber_has_negotiated() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    let _b = h.join("b", Role::Party);
    let up = h.publish(a, MediaKind::Audio);
    h.drain();
    assert!(h.forward(h.t0, up, 1, 1, &[1, 2, 3]).is_empty());
}

#[test]
fn video_starts_at_a_keyframe_and_then_flows_with_rewritten_numbers() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    let _b = h.join("b", Role::Party);
    let up = h.publish(a, MediaKind::Video);
    let down = Harness::added_downs(&h.drain())[0].1;
    h.room.down_track_ready(h.t0, down, 100, 0, &mut Vec::new());
    assert!(
        h.drain().contains(&Output::RequestKeyframe { publisher: a, up, layer: 0 }),
        "a new subscriber asks for a keyframe"
    );
    assert!(h.forward(h.t0, up, 9, 50, VP8_DELTA).is_empty(), "delta frames wait");
    let f = h.forward(h.t0, up, 9, 51, VP8_KEY);
    assert_eq!(f, vec![Forward { down, subscriber: f[0].subscriber, seq: 100, ts: 0, vp8_ids: None }]);
    let f = h.forward(h.t0, up, 9, 52, VP8_DELTA);
    assert_eq!((f[0].seq, f[0].ts), (101, 3000));
}

#[test]
fn a_late_subscriber_gets_the_cached_gop_at_once_and_live_packets_continue_it() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    let up = h.publish(a, MediaKind::Video);
    h.drain();
    // The publisher has sent a keyframe and two delta frames (the harness gives every packet its
    // own frame, 3000 ticks apart) before b arrives.
    h.forward(h.at(0), up, 9, 10, VP8_KEY);
    h.forward(h.at(0), up, 9, 11, VP8_DELTA);
    h.forward(h.at(33), up, 9, 12, VP8_DELTA);
    let _b = h.join("b", Role::Party);
    let down = Harness::added_downs(&h.drain())[0].1;
    let mut replay = Vec::new();
    h.room.down_track_ready(h.at(500), down, 100, 7000, &mut replay);
    assert!(
        !h.drain().iter().any(|o| matches!(o, Output::RequestKeyframe { .. })),
        "no keyframe request: the cache answers"
    );
    // Frames 1 ms (90 ticks) apart, sequence numbers from the chosen start.
    let got: Vec<(u16, u32)> = replay.iter().map(|p| (p.seq, p.ts)).collect();
    assert_eq!(got, [(100, 7000), (101, 7090), (102, 7180)]);
    assert_eq!(replay[0].payload.as_ref(), VP8_KEY);
    // The next live packet follows the replayed ones in both numbering and media time.
    let f = h.forward(h.at(533), up, 9, 13, VP8_DELTA);
    assert_eq!((f[0].seq, f[0].ts), (103, 7180 + 3000));
}

#[test]
fn without_a_cached_gop_a_late_subscriber_waits_for_a_requested_keyframe() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    let up = h.publish(a, MediaKind::Video);
    h.drain();
    h.forward(h.at(0), up, 9, 10, VP8_KEY);
    h.forward(h.at(33), up, 9, 11, VP8_DELTA);
    let _b = h.join("b", Role::Party);
    let down = Harness::added_downs(&h.drain())[0].1;
    let mut replay = Vec::new();
    // The keyframe is older than the cache serves (4 s).
    h.room.down_track_ready(h.at(4100), down, 0, 0, &mut replay);
    assert!(replay.is_empty());
    assert!(h.drain().contains(&Output::RequestKeyframe { publisher: a, up, layer: 0 }));
    assert!(h.forward(h.at(4133), up, 9, 12, VP8_DELTA).is_empty(), "delta frames still wait");
}

#[test]
fn many_late_subscribers_cost_the_publisher_no_keyframe_request() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    let up = h.publish(a, MediaKind::Video);
    h.drain();
    h.forward(h.at(0), up, 9, 10, VP8_KEY);
    let mut replays = 0;
    for i in 0..20 {
        h.join(&format!("s{i}"), Role::Party);
        let down = Harness::added_downs(&h.drain())[0].1;
        let mut replay = Vec::new();
        h.room.down_track_ready(h.at(10 + i), down, 0, 0, &mut replay);
        replays += !replay.is_empty() as usize;
        assert!(!h.drain().iter().any(|o| matches!(o, Output::RequestKeyframe { .. })));
    }
    assert_eq!(replays, 20);
}

#[test]
fn audio_flows_at_once_after_negotiation() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    let _b = h.join("b", Role::Party);
    let up = h.publish(a, MediaKind::Audio);
    let down = Harness::added_downs(&h.drain())[0].1;
    h.room.down_track_ready(h.t0, down, 7, 0, &mut Vec::new());
    assert!(h.drain().is_empty(), "no keyframe request for audio");
    assert_eq!(h.forward(h.t0, up, 1, 1, &[0xfc]).len(), 1);
}

#[test]
fn keyframe_requests_are_throttled_per_track_and_the_last_one_is_not_lost() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    let subs: Vec<_> = (0..5).map(|i| h.join(&format!("s{i}"), Role::Party)).collect();
    assert_eq!(subs.len(), 5);
    let up = h.publish(a, MediaKind::Video);
    let downs: Vec<_> = Harness::added_downs(&h.drain()).into_iter().map(|(_, d, _)| d).collect();
    let plis = |out: &[Output]| out.iter().filter(|o| matches!(o, Output::RequestKeyframe { .. })).count();
    // Five subscribers get ready and each sends PLIs within 500 ms.
    let mut total = 0;
    for (i, d) in downs.iter().enumerate() {
        h.room.down_track_ready(h.at(i as u64 * 10), *d, 0, 0, &mut Vec::new());
        h.room.on_keyframe_request(h.at(100 + i as u64 * 10), *d);
        total += plis(&h.drain());
    }
    assert_eq!(total, 1, "one PLI inside the window");
    let due = h.room.poll_timeout().expect("a pending request is scheduled");
    assert_eq!(due, h.at(1000));
    h.room.handle_timeout(due);
    assert_eq!(plis(&h.drain()), 1, "the coalesced request goes out when the window ends");
    h.room.handle_timeout(h.at(5000));
    assert_eq!(plis(&h.drain()), 0, "and only once");
    let _ = up;
}

#[test]
fn leaving_removes_the_participants_tracks_from_everyone_and_says_why() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    let b = h.join("b", Role::Party);
    let up = h.publish(a, MediaKind::Video);
    let down = Harness::added_downs(&h.drain())[0].1;
    let track_id = h.room.up_track_info(up).unwrap().0.track_id.clone();
    h.room.leave(h.t0, a, LeaveCause::Left);
    let out = h.drain();
    assert!(out.contains(&Output::RemoveDownTrack { subscriber: b, down }));
    assert!(out.contains(&Output::Event {
        to: b,
        event: RoomEvent::TrackUnpublished { track_id, participant_id: "p_a".into() }
    }));
    assert!(out.contains(&Output::Event {
        to: b,
        event: RoomEvent::ParticipantLeft { participant_id: "p_a".into(), cause: LeaveCause::Left }
    }));
    assert!(out.contains(&Output::Disconnect { participant: a, cause: LeaveCause::Left }));
    let mut fwd = Vec::new();
    let payload = Bytes::from_static(VP8_KEY);
    h.room.on_rtp(
        h.t0,
        up,
        RtpIn { ssrc: 1, layer: 0, seq: 1, ts: 1, marker: true, payload: &payload, audio_level: None },
        &mut fwd,
    );
    assert!(fwd.is_empty());
}

#[test]
fn a_participant_whose_media_stops_is_removed_after_the_peer_timeout() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    let b = h.join("b", Role::Party);
    h.room.media_alive(a, h.at(0));
    h.room.media_alive(b, h.at(0));
    h.drain();
    h.room.media_alive(b, h.at(9000));
    assert_eq!(h.room.poll_timeout(), Some(h.at(10_000)));
    h.room.handle_timeout(h.at(10_000));
    let out = h.drain();
    assert!(out.contains(&Output::Disconnect { participant: a, cause: LeaveCause::MediaTimeout }));
    assert!(h.room.contains(b));
}

#[test]
fn a_participant_still_connecting_is_not_timed_out() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    h.room.handle_timeout(h.at(60_000));
    assert!(h.room.contains(a));
}

#[test]
fn lost_signalling_keeps_the_place_for_the_grace_period_then_records_network_lost() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Party);
    let b = h.join("b", Role::Judge);
    h.drain();
    h.room.signal_lost(h.at(0), a);
    let out = h.drain();
    assert!(
        out.iter().any(|o| matches!(o, Output::Event { to, event: RoomEvent::ParticipantUpdated(v) } if *to == b && v.connection == ConnectionState::Reconnecting)),
        "the others are told the participant is reconnecting"
    );
    h.room.handle_timeout(h.at(14_999));
    assert!(h.room.contains(a));
    h.room.handle_timeout(h.at(15_000));
    assert!(h.drain().contains(&Output::Disconnect { participant: a, cause: LeaveCause::NetworkLost }));
}

#[test]
fn reconnecting_within_the_grace_period_keeps_the_participant_and_renews_its_subscriptions() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Party);
    let b = h.join("b", Role::Judge);
    h.publish(b, MediaKind::Audio);
    h.drain();
    h.room.signal_lost(h.at(0), a);
    h.room.reconnect(h.at(3000), a, &mut h.keys).unwrap();
    let out = h.drain();
    assert_eq!(Harness::added_downs(&out).len(), 1, "a new down track for the new connection");
    h.room.handle_timeout(h.at(20_000));
    assert!(h.room.contains(a));
}

#[test]
fn a_source_switch_waits_for_a_keyframe_and_keeps_numbers_continuous() {
    let (mut h, up) = Harness::video_to_one_subscriber();
    h.forward(h.t0, up, 1, 11, VP8_DELTA);
    h.drain();
    assert!(h.forward(h.at(2000), up, 2, 500, VP8_DELTA).is_empty(), "new SSRC, not a keyframe");
    assert!(h.drain().iter().any(|o| matches!(o, Output::RequestKeyframe { .. })), "asks for one");
    let f = h.forward(h.at(2000), up, 2, 501, VP8_KEY);
    assert_eq!(f[0].seq, 2, "continues right after 1");
}

#[test]
fn a_keyframe_whose_first_packet_arrives_after_the_rest_starts_the_switch_from_the_cache() {
    let (mut h, up) = Harness::video_to_one_subscriber();
    h.drain();
    // A new source; its keyframe's first packet (500) is lost and resent after 501 and 502
    // (which ask for a keyframe, as any packet of a new source that cannot start it does).
    assert!(h.forward(h.at(2000), up, 2, 501, VP8_MORE).is_empty());
    assert!(h.forward(h.at(2000), up, 2, 502, VP8_MORE).is_empty());
    h.drain();
    assert!(
        h.forward(h.at(2010), up, 2, 500, VP8_KEY).is_empty(),
        "501 and 502 went by: forwarded live, the keyframe would miss them"
    );
    let out = h.drain();
    assert!(!out.iter().any(|o| matches!(o, Output::RequestKeyframe { .. })), "no further request: {out:?}");
    let replayed: Vec<u16> = out
        .iter()
        .find_map(|o| match o {
            Output::Replay { packets, .. } => Some(packets.iter().map(|p| p.seq).collect()),
            _ => None,
        })
        .expect("the keyframe replayed whole from the cache");
    assert_eq!(replayed, [1, 2, 3], "500, 501, 502 right after the first source's 0");
    let f = h.forward(h.at(2040), up, 2, 503, VP8_DELTA);
    assert_eq!(f[0].seq, 4, "live packets continue after the replay");
    // 502's request, held back by the throttle, was answered by that keyframe: it never goes out.
    h.room.handle_timeout(h.at(3500));
    assert!(!h.drain().iter().any(|o| matches!(o, Output::RequestKeyframe { .. })), "a held request is dropped");
}

#[test]
fn without_a_cache_a_keyframe_whose_first_packet_arrives_after_the_rest_waits_for_the_next() {
    let no_cache = Harness::with_config(CoreConfig { gop_cache_bytes: 0, ..CoreConfig::default() });
    let (mut h, up) = Harness::video_to_one_subscriber_in(no_cache);
    h.drain();
    assert!(h.forward(h.at(2000), up, 2, 501, VP8_MORE).is_empty());
    assert!(h.forward(h.at(2010), up, 2, 500, VP8_KEY).is_empty());
    assert!(h.drain().iter().any(|o| matches!(o, Output::RequestKeyframe { .. })), "it asks for a keyframe");
    let f = h.forward(h.at(2500), up, 2, 503, VP8_KEY);
    assert_eq!(f[0].seq, 1, "the next keyframe starts it, right after the first source's 0");
}

// ---- zones and controls -----------------------------------------------------------------------

#[test]
fn a_participant_in_the_lobby_gets_nothing_until_admitted() {
    let mut h = Harness::new();
    let judge = h.join("judge", Role::Judge);
    let up = h.publish(judge, MediaKind::Video);
    let party = h.join_in("party", Role::Party, Zone::Lobby);
    assert!(Harness::added_downs(&h.drain()).is_empty(), "nothing for the lobby");
    let party_up = h.publish(party, MediaKind::Audio);
    assert!(h.subscribers_of(party_up).is_empty(), "and nothing from it");
    h.control(judge, Control::Admit(party)).unwrap();
    assert_eq!(h.subscribers_of(up), vec![party]);
    assert_eq!(h.subscribers_of(party_up), vec![judge]);
    assert_eq!(h.room.zone_of(party), Some(Zone::Main));
    assert_eq!(h.control(judge, Control::Admit(party)), Err(ControlError::BadTarget), "not in the lobby any more");
}

#[test]
fn a_caucus_hears_only_itself_and_the_other_party_loses_its_tracks() {
    let mut h = Harness::new();
    let mediator = h.join("mediator", Role::Mediator);
    let a = h.join("a", Role::Party);
    let b = h.join("b", Role::Party);
    let m_up = h.publish(mediator, MediaKind::Audio);
    let a_up = h.publish(a, MediaKind::Audio);
    let b_up = h.publish(b, MediaKind::Audio);
    h.drain();
    h.control(mediator, Control::Move(mediator, Zone::Caucus(1))).unwrap();
    h.control(mediator, Control::Move(a, Zone::Caucus(1))).unwrap();
    let out = h.drain();
    assert_eq!(h.subscribers_of(m_up), vec![a]);
    assert_eq!(h.subscribers_of(a_up), vec![mediator]);
    assert!(h.subscribers_of(b_up).is_empty(), "b is alone in main");
    assert!(
        out.iter().any(|o| matches!(o, Output::RemoveDownTrack { subscriber, .. } if *subscriber == b)),
        "b's down tracks are removed"
    );
    // Back together.
    h.control(mediator, Control::Move(mediator, Zone::Main)).unwrap();
    h.control(mediator, Control::Move(a, Zone::Main)).unwrap();
    assert_eq!(h.subscribers_of(b_up), vec![mediator, a]);
}

#[test]
fn a_caucus_forwards_no_packet_to_the_party_outside() {
    let mut h = Harness::new();
    let mediator = h.join("mediator", Role::Mediator);
    let a = h.join("a", Role::Party);
    let b = h.join("b", Role::Party);
    let m_up = h.publish(mediator, MediaKind::Audio);
    for (_, down, _) in Harness::added_downs(&h.drain()) {
        h.room.down_track_ready(h.t0, down, 0, 0, &mut Vec::new());
    }
    h.control(mediator, Control::Move(mediator, Zone::Caucus(1))).unwrap();
    h.control(mediator, Control::Move(a, Zone::Caucus(1))).unwrap();
    for (_, down, _) in Harness::added_downs(&h.drain()) {
        h.room.down_track_ready(h.t0, down, 0, 0, &mut Vec::new());
    }
    for seq in 0..50 {
        let f = h.forward(h.t0, m_up, 1, seq, &[0xfc]);
        assert!(f.iter().all(|f| f.subscriber != b), "packet {seq} reached b");
        assert!(f.iter().any(|f| f.subscriber == a));
    }
}

#[test]
fn a_witness_receives_nothing_until_called_and_nothing_after_dismissal() {
    let mut h = Harness::new();
    let judge = h.join("judge", Role::Judge);
    let up = h.publish(judge, MediaKind::Video);
    let witness = h.join_in("witness", Role::Witness, Zone::WitnessWaiting);
    assert!(h.subscribers_of(up).is_empty());
    let party = h.join("party", Role::Party);
    assert_eq!(h.control(party, Control::CallWitness(witness)), Err(ControlError::NotAllowed));
    assert_eq!(h.control(judge, Control::CallWitness(party)), Err(ControlError::BadTarget), "not a witness");
    h.control(judge, Control::CallWitness(witness)).unwrap();
    assert_eq!(h.subscribers_of(up), vec![witness, party]);
    h.control(judge, Control::DismissWitness(witness)).unwrap();
    assert_eq!(h.subscribers_of(up), vec![party]);
}

#[test]
fn a_host_mute_drops_every_packet_of_that_kind_and_survives_republishing() {
    let mut h = Harness::new();
    let judge = h.join("judge", Role::Judge);
    let party = h.join("party", Role::Party);
    let up = h.publish(party, MediaKind::Audio);
    let down = Harness::added_downs(&h.drain())[0].1;
    h.room.down_track_ready(h.t0, down, 0, 0, &mut Vec::new());
    assert_eq!(h.forward(h.t0, up, 1, 1, &[0xfc]).len(), 1);
    h.control(judge, Control::Mute(party, MediaKind::Audio)).unwrap();
    assert!(h.forward(h.t0, up, 1, 2, &[0xfc]).is_empty());
    let view = h.room.participant_view(party).unwrap();
    assert!(view.audio_muted_by_host && !view.video_muted_by_host);
    // A new audio track (e.g. after reconnecting) is muted too.
    let up2 = h.publish(party, MediaKind::Audio);
    let down2 = Harness::added_downs(&h.drain()).into_iter().find(|(_, _, u)| *u == up2).unwrap().1;
    h.room.down_track_ready(h.t0, down2, 0, 0, &mut Vec::new());
    assert!(h.forward(h.t0, up2, 2, 1, &[0xfc]).is_empty());
    h.control(judge, Control::Unmute(party, MediaKind::Audio)).unwrap();
    assert_eq!(h.forward(h.t0, up, 1, 3, &[0xfc]).len(), 1);
}

#[test]
fn parties_raise_their_own_hand_but_control_nobody() {
    let mut h = Harness::new();
    let judge = h.join("judge", Role::Judge);
    let a = h.join("a", Role::Party);
    let b = h.join("b", Role::Party);
    h.control(a, Control::RaiseHand(a)).unwrap();
    assert!(h.room.participant_view(a).unwrap().hand_raised);
    assert_eq!(h.control(b, Control::LowerHand(a)), Err(ControlError::NotAllowed));
    h.control(judge, Control::LowerHand(a)).unwrap();
    assert!(!h.room.participant_view(a).unwrap().hand_raised);
    for c in [
        Control::Remove(b),
        Control::Mute(b, MediaKind::Audio),
        Control::Lock,
        Control::Move(b, Zone::Main),
        Control::Spotlight(Some(a)),
    ] {
        assert_eq!(h.control(a, c), Err(ControlError::NotAllowed), "{c:?}");
    }
    let o = h.join("observer", Role::Observer);
    assert_eq!(h.control(o, Control::RaiseHand(o)), Err(ControlError::NotAllowed));
}

#[test]
fn deny_removes_a_lobby_participant_with_its_own_cause_and_lock_is_announced() {
    let mut h = Harness::new();
    let mediator = h.join("mediator", Role::Mediator);
    let x = h.join_in("x", Role::Party, Zone::Lobby);
    h.drain();
    h.control(mediator, Control::Deny(x)).unwrap();
    assert!(h.drain().contains(&Output::Disconnect { participant: x, cause: LeaveCause::Denied }));
    h.control(mediator, Control::Lock).unwrap();
    assert!(h.room.is_locked());
    assert!(h
        .drain()
        .contains(&Output::Event { to: mediator, event: RoomEvent::SessionUpdated { locked: true, spotlight: None } }));
}

#[test]
fn a_spotlight_is_cleared_when_its_participant_leaves() {
    let mut h = Harness::new();
    let judge = h.join("judge", Role::Judge);
    let a = h.join("a", Role::Party);
    h.control(judge, Control::Spotlight(Some(a))).unwrap();
    assert_eq!(h.room.spotlight_id().as_deref(), Some("p_a"));
    h.room.leave(h.t0, a, LeaveCause::Left);
    assert_eq!(h.room.spotlight_id(), None);
}

// ---- the reception queue ------------------------------------------------------------------------

#[test]
fn call_next_admits_petitioners_in_arrival_order_and_says_whom() {
    let mut h = Harness::new();
    let officer = h.join("officer", Role::PetitionOfficer);
    let first = h.join_in("first", Role::Party, Zone::Lobby);
    let second = h.join_in("second", Role::Party, Zone::Lobby);
    let third = h.join_in("third", Role::Party, Zone::Lobby);
    assert_eq!(h.room.participant_view(third).unwrap().queue_position, Some(3));
    assert_eq!(h.room.control(h.t0, officer, Control::CallNext, &mut h.keys), Ok(Some(first)));
    assert_eq!(h.room.participant_view(third).unwrap().queue_position, Some(2), "everyone moves up");
    assert_eq!(h.room.participant_view(first).unwrap().queue_position, None);
    assert_eq!(h.room.control(h.t0, officer, Control::CallNext, &mut h.keys), Ok(Some(second)));
    assert_eq!(h.room.control(h.t0, first, Control::CallNext, &mut h.keys), Err(ControlError::NotAllowed));
    assert_eq!(h.room.control(h.t0, officer, Control::CallNext, &mut h.keys), Ok(Some(third)));
    assert_eq!(h.room.control(h.t0, officer, Control::CallNext, &mut h.keys), Err(ControlError::QueueEmpty));
}

#[test]
fn at_most_five_representatives_of_a_group_are_admitted() {
    let mut h = Harness::new();
    let officer = h.join("officer", Role::PetitionOfficer);
    let reps: Vec<_> = (0..6).map(|i| h.join_group(&format!("rep{i}"), "某村拆迁户", Zone::Lobby)).collect();
    let other = h.join_group("other", "另一群体", Zone::Lobby);
    for r in &reps[..5] {
        h.control(officer, Control::Admit(*r)).unwrap();
    }
    assert_eq!(h.control(officer, Control::Admit(reps[5])), Err(ControlError::GroupLimit));
    assert_eq!(h.room.zone_of(reps[5]), Some(Zone::Lobby), "the sixth keeps waiting");
    h.control(officer, Control::Admit(other)).unwrap();
    h.room.leave(h.t0, reps[0], LeaveCause::Left);
    h.control(officer, Control::Admit(reps[5])).unwrap();
}

#[test]
fn a_waiting_participant_learns_nothing_of_the_others_until_it_enters() {
    let mut h = Harness::new();
    let judge = h.join("judge", Role::Judge);
    let party = h.join("party", Role::Party);
    h.publish(judge, MediaKind::Audio);
    let witness = h.join_in("witness", Role::Witness, Zone::WitnessWaiting);
    let (people, tracks) = h.room.snapshot_for(witness);
    assert_eq!((people.len(), tracks.len()), (1, 0), "only itself");
    h.drain();
    // The hearing goes on: hands, mutes, joins, publications.
    h.control(party, Control::RaiseHand(party)).unwrap();
    h.control(judge, Control::Mute(party, MediaKind::Video)).unwrap();
    let late = h.join("late", Role::Counsel);
    h.publish(late, MediaKind::Audio);
    h.room.leave(h.t0, late, LeaveCause::Left);
    let told_witness: Vec<_> =
        h.drain().into_iter().filter(|o| matches!(o, Output::Event { to, .. } if *to == witness)).collect();
    assert!(told_witness.is_empty(), "the witness heard: {told_witness:?}");
    // Called: now it is told who is here and what they publish.
    h.control(judge, Control::CallWitness(witness)).unwrap();
    let out = h.drain();
    let joined: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Event { to, event: RoomEvent::ParticipantJoined(v) } if *to == witness => Some(v.id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(joined.len(), 2, "judge and party: {joined:?}");
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Event { to, event: RoomEvent::TrackPublished(_) } if *to == witness)));
    // The others still see the lobby, so hosts can admit.
    let waiting = h.join_in("waiting", Role::Party, Zone::Lobby);
    assert!(h.drain().iter().any(|o| matches!(o, Output::Event { to, event: RoomEvent::ParticipantJoined(v) } if *to == judge && v.id == "p_waiting")));
    let _ = waiting;
}

#[test]
fn the_loudest_voice_of_a_zone_becomes_its_speaker_and_only_that_zone_is_told() {
    let mut h = Harness::new();
    let mediator = h.join("mediator", Role::Mediator);
    let a = h.join("a", Role::Party);
    let b = h.join("b", Role::Party);
    let ups: Vec<_> = [mediator, a, b].iter().map(|p| h.publish(*p, MediaKind::Audio)).collect();
    h.control(mediator, Control::Move(mediator, Zone::Caucus(1))).unwrap();
    h.control(mediator, Control::Move(a, Zone::Caucus(1))).unwrap();
    h.drain();
    // 1.2 s of 20 ms packets: a speaks loudly in the caucus, b quietly in main, the mediator is silent.
    let mut out = Vec::new();
    for i in 0..60u64 {
        let at = h.at(i * 20);
        for (up, level) in [(ups[0], 127u8), (ups[1], 25), (ups[2], 40)] {
            let payload = Bytes::from_static(&[0xfc]);
            let pkt = RtpIn {
                ssrc: 1,
                layer: 0,
                seq: i as u16,
                ts: i as u32 * 960,
                marker: true,
                payload: &payload,
                audio_level: Some(level),
            };
            h.room.on_rtp(at, up, pkt, &mut out);
        }
        if h.room.poll_timeout().is_some_and(|t| t <= at) {
            h.room.handle_timeout(at);
        }
    }
    let told: Vec<(ParticipantKey, String)> = h
        .drain()
        .into_iter()
        .filter_map(|o| match o {
            Output::Event { to, event: RoomEvent::ActiveSpeaker { participant_id } } => Some((to, participant_id)),
            _ => None,
        })
        .collect();
    assert!(told.contains(&(mediator, "p_a".into())) && told.contains(&(a, "p_a".into())), "{told:?}");
    assert!(told.contains(&(b, "p_b".into())), "main has its own speaker: {told:?}");
    assert!(!told.iter().any(|(to, who)| *to == b && who == "p_a"), "the caucus speaker is not announced to main");
}

#[test]
fn a_sixth_representative_joining_a_session_without_lobby_waits_in_the_lobby() {
    let mut h = Harness::new();
    let _officer = h.join("officer", Role::PetitionOfficer);
    let reps: Vec<_> = (0..6).map(|i| h.join_group(&format!("rep{i}"), "某村", Zone::Main)).collect();
    assert_eq!(h.room.zone_of(reps[4]), Some(Zone::Main));
    assert_eq!(h.room.zone_of(reps[5]), Some(Zone::Lobby));
}

#[test]
fn queue_positions_move_up_when_someone_leaves_the_lobby_and_waiting_zones_get_no_spotlight() {
    let mut h = Harness::new();
    let judge = h.join("judge", Role::Judge);
    let party = h.join("party", Role::Party);
    let first = h.join_in("first", Role::Party, Zone::Lobby);
    let second = h.join_in("second", Role::Party, Zone::Lobby);
    h.drain();
    h.room.leave(h.t0, first, LeaveCause::NetworkLost);
    let out = h.drain();
    assert!(out.iter().any(|o| matches!(o, Output::Event { to, event: RoomEvent::ParticipantUpdated(v) } if *to == second && v.queue_position == Some(1))));
    h.control(judge, Control::Spotlight(Some(party))).unwrap();
    let out = h.drain();
    assert!(out
        .contains(&Output::Event { to: second, event: RoomEvent::SessionUpdated { locked: false, spotlight: None } }));
    assert!(out.contains(&Output::Event {
        to: party,
        event: RoomEvent::SessionUpdated { locked: false, spotlight: Some("p_party".into()) }
    }));
}

// ---- simulcast and temporal layers -------------------------------------------------------------

/// A publisher sending three simulcast layers at 30 fps, each with VP8 temporal layers (TID 0, 2,
/// 1, 2, …), and answering keyframe requests at its next frame, as a browser does.
struct SimulcastSender {
    up: UpTrackKey,
    /// Packets per frame of each layer, of 1000 bytes: ≈ 240 kbps, 480 kbps and 1.44 Mbps.
    packets: [usize; 3],
    seq: [u16; 3],
    pid: [u16; 3],
    tl0: [u8; 3],
    frame: u32,
    key_wanted: [bool; 3],
    requests: [u32; 3],
    /// Probes the room asked for: (subscriber, padding bits per second).
    probes: Vec<(ParticipantKey, u64)>,
    /// Layer switches served from the GOP cache.
    replays: Vec<SwitchReplay>,
    /// Layer targets the room set: (subscriber, spatial layer, frames sent by then).
    targets: Vec<(ParticipantKey, u8, u32)>,
    /// Each layer sends a keyframe every this many frames of its own accord (0: only when asked).
    key_every: u32,
}

/// A layer switch the room served from the GOP cache ([`Output::Replay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SwitchReplay {
    subscriber: ParticipantKey,
    layer: u8,
    packets: usize,
    /// The replay's first packet starts a keyframe.
    key: bool,
    /// Frames the publisher had sent when it came.
    frame: u32,
}

/// What one subscriber received: (layer, tid, original picture id, forward).
type Received = Vec<(u8, u8, u16, Forward)>;

fn vp8_packet(start: bool, pid: u16, tl0: u8, tid: u8, key: bool, len: usize) -> Bytes {
    let mut p = vec![0x80 | if start { 0x10 } else { 0 }, 0xe0, 0x80 | (pid >> 8) as u8, pid as u8, tl0, tid << 6];
    p.push(if key { 0x00 } else { 0x01 });
    p.resize(len, 0);
    Bytes::from(p)
}

impl SimulcastSender {
    fn new(up: UpTrackKey) -> SimulcastSender {
        SimulcastSender {
            up,
            packets: [1, 2, 6],
            seq: [100, 20_000, 40_000],
            pid: [10, 5_000, 30_000],
            tl0: [0, 100, 200],
            frame: 0,
            key_wanted: [true; 3],
            requests: [0; 3],
            probes: Vec::new(),
            replays: Vec::new(),
            targets: Vec::new(),
            key_every: 0,
        }
    }

    /// One frame on every layer; forwards go to `got` by subscriber.
    fn frame(&mut self, h: &mut Harness, at: Instant, got: &mut HashMap<ParticipantKey, Received>) {
        let tid = [0u8, 2, 1, 2][(self.frame % 4) as usize];
        let periodic = self.key_every > 0 && self.frame % self.key_every == 0;
        for layer in 0..3 {
            let key = std::mem::take(&mut self.key_wanted[layer]) || periodic;
            let tid = if key { 0 } else { tid };
            if tid == 0 {
                self.tl0[layer] = self.tl0[layer].wrapping_add(1);
            }
            let pid = self.pid[layer];
            for i in 0..self.packets[layer] {
                let payload = vp8_packet(i == 0, pid, self.tl0[layer], tid, key && i == 0, 1000);
                let pkt = RtpIn {
                    ssrc: 1000 + layer as u32,
                    layer: layer as u8,
                    seq: self.seq[layer],
                    ts: self.frame * 3000,
                    marker: i + 1 == self.packets[layer],
                    payload: &payload,
                    audio_level: None,
                };
                self.seq[layer] = self.seq[layer].wrapping_add(1);
                let mut out = Vec::new();
                h.room.on_rtp(at, self.up, pkt, &mut out);
                for f in out {
                    got.entry(f.subscriber).or_default().push((layer as u8, tid, pid, f));
                }
            }
            self.pid[layer] = (pid + 1) & 0x7fff;
        }
        self.frame += 1;
        self.take_outputs(h, got);
    }

    /// Answers the room's outputs: keyframe requests (the next frame of that layer is one),
    /// probes (kept for the downlinks), and switch replays (received like forwarded packets).
    fn take_outputs(&mut self, h: &mut Harness, got: &mut HashMap<ParticipantKey, Received>) {
        for o in h.drain() {
            match o {
                Output::RequestKeyframe { up, layer, .. } => {
                    assert_eq!(up, self.up);
                    self.key_wanted[usize::from(layer)] = true;
                    self.requests[usize::from(layer)] += 1;
                }
                Output::Probe { subscriber, rate_bps, duration } => {
                    assert_eq!(duration, crate::core::layers::PROBE_CLUSTER);
                    self.probes.push((subscriber, rate_bps));
                }
                Output::LayerTarget { subscriber, spatial, .. } => self.targets.push((subscriber, spatial, self.frame)),
                Output::Replay { subscriber, down, layer, packets } => {
                    let key = packets.first().is_some_and(|p| starts_keyframe(Codec::Vp8, &p.payload));
                    self.replays.push(SwitchReplay {
                        subscriber,
                        layer,
                        packets: packets.len(),
                        key,
                        frame: self.frame,
                    });
                    let r = got.entry(subscriber).or_default();
                    for p in packets {
                        let d = Vp8Desc::parse(&p.payload).expect("a VP8 packet");
                        let f = Forward { down, subscriber, seq: p.seq, ts: p.ts, vp8_ids: None };
                        r.push((layer, d.tid.unwrap_or(0), d.picture_id.expect("picture id"), f));
                    }
                }
                _ => {}
            }
        }
    }
}

/// A subscriber's downlink in the simulcast tests: its congestion control's estimate is its
/// capacity, and a probe's padding is sent (taking sequence numbers, which must stay continuous)
/// and delivered up to that capacity.
struct Downlink {
    who: ParticipantKey,
    capacity: u64,
    /// Packets forwarded to it at each of the last ten ticks (1000 bytes each).
    sent: VecDeque<usize>,
    /// Probes answered, and padding packets sent for them.
    probes: usize,
    padded: usize,
}

impl Downlink {
    fn tick(
        &mut self,
        h: &mut Harness,
        s: &mut SimulcastSender,
        at: Instant,
        got: &mut HashMap<ParticipantKey, Received>,
    ) {
        let n = got.get(&self.who).map_or(0, Vec::len);
        self.sent.push_back(n);
        let sending = if self.sent.len() > 10 {
            let first = self.sent.pop_front().expect("more than ten");
            (n - first) as u64 * 8000
        } else {
            0
        };
        for (_, rate) in s.probes.iter().filter(|(p, _)| *p == self.who) {
            for _ in 0..5 {
                let Some((down, seq, ts)) = h.room.padding_slot(self.who) else { break };
                let r = got.entry(self.who).or_default();
                let (layer, tid, pid, prev) = *r.last().expect("padding follows forwarded media");
                r.push((layer, tid, pid, Forward { down, subscriber: self.who, seq, ts, vp8_ids: prev.vp8_ids }));
                self.padded += 1;
            }
            self.probes += 1;
            // Padding fills what the media leaves of the probe's rate (the driver's `ProbeRun`).
            h.room.on_probe_result(at, self.who, sending.max(*rate).min(self.capacity));
        }
        s.probes.retain(|(p, _)| *p != self.who);
        h.room.on_bandwidth(at, self.who, self.capacity, 0.0);
        s.take_outputs(h, got);
    }
}

/// Runs `ms` of simulcast with each subscriber's downlink estimate fixed, ticking every 100 ms.
fn run_simulcast(estimates: &[(&str, u64)], ms: u64) -> (Harness, SimulcastSender, Vec<(Downlink, Received)>) {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    let subs: Vec<(ParticipantKey, u64)> = estimates.iter().map(|(n, e)| (h.join(n, Role::Party), *e)).collect();
    let up = h.publish(a, MediaKind::Video);
    for (_, down, _) in Harness::added_downs(&h.drain()) {
        h.room.down_track_ready(h.t0, down, 0, 0, &mut Vec::new());
    }
    let mut s = SimulcastSender::new(up);
    let mut got = HashMap::new();
    let mut links: Vec<Downlink> = subs
        .iter()
        .map(|(p, e)| Downlink { who: *p, capacity: *e, sent: VecDeque::new(), probes: 0, padded: 0 })
        .collect();
    for t in (0..ms).step_by(33) {
        let at = h.at(t);
        s.frame(&mut h, at, &mut got);
        if t % 99 == 0 {
            h.room.on_tick(at);
            for l in &mut links {
                l.tick(&mut h, &mut s, at, &mut got);
            }
        }
    }
    let got = links
        .into_iter()
        .map(|l| {
            let r = got.remove(&l.who).unwrap_or_default();
            (l, r)
        })
        .collect();
    (h, s, got)
}

/// Sequence numbers and (per picture) picture ids a subscriber saw are continuous.
fn assert_continuous(name: &str, r: &Received) {
    for w in r.windows(2) {
        assert_eq!(w[1].3.seq, w[0].3.seq.wrapping_add(1), "{name}: sequence numbers jump: {:?} → {:?}", w[0], w[1]);
    }
    let pids: Vec<u16> = r
        .iter()
        .map(|(_, _, pid, f)| f.vp8_ids.map_or(*pid, |(p, _)| p))
        .collect::<Vec<_>>()
        .chunk_by(|a, b| a == b)
        .map(|c| c[0])
        .collect();
    for w in pids.windows(2) {
        assert_eq!(w[1], (w[0] + 1) & 0x7fff, "{name}: picture ids jump: {pids:?}");
    }
}

#[test]
fn each_subscriber_gets_the_simulcast_layer_its_estimate_allows() {
    let (_h, s, got) = run_simulcast(&[("fast", 10_000_000), ("township", 340_000), ("village", 200_000)], 12_000);
    let last_second = |r: &Received| -> Vec<(u8, u8)> {
        let n = r.len();
        r[n.saturating_sub(60)..].iter().map(|(l, t, _, _)| (*l, *t)).collect()
    };
    let (fast, township, village) = (&got[0].1, &got[1].1, &got[2].1);
    // The fast link climbed by two probes (one per layer), with padding between frames; the
    // others' estimates never asked for more than they had.
    assert_eq!((got[0].0.probes, got[1].0.probes, got[2].0.probes), (2, 0, 0));
    assert!(got[0].0.padded > 0);
    assert!(last_second(fast).iter().all(|(l, _)| *l == 2), "fast link: the full layer");
    assert!(last_second(fast).iter().any(|(_, t)| *t == 2), "with every temporal layer");
    // 340 kbps: the quarter layer (240 kbps) fits its budget (85 %), the half (480 kbps) does not.
    assert!(last_second(township).iter().all(|(l, _)| *l == 0), "township: {:?}", last_second(township));
    assert!(last_second(township).iter().any(|(_, t)| *t == 2), "at the full frame rate");
    // 200 kbps: the quarter layer without its top temporal layer (TID 2 is half the frames).
    let v = last_second(village);
    assert!(v.iter().all(|(l, t)| *l == 0 && *t <= 1), "village: {v:?}");
    assert!(v.iter().any(|(_, t)| *t == 1));
    for (name, r) in [("fast", fast), ("township", township), ("village", village)] {
        assert_continuous(name, r);
        // Every switch to another layer began with that layer's keyframe.
        for w in r.windows(2) {
            if w[0].0 != w[1].0 {
                assert_eq!(w[1].1, 0, "{name}: switched to layer {} mid-GOP", w[1].0);
            }
        }
    }
    // Keyframe requests per layer stay throttled (1 s) however many subscribers switch.
    assert!(s.requests.iter().all(|&n| n <= 7), "requests per layer over 6 s: {:?}", s.requests);
}

/// A judge publishing video and a party whose down track of it is negotiated.
fn publisher_and_subscriber() -> (Harness, ParticipantKey, ParticipantKey, UpTrackKey) {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    let b = h.join("b", Role::Party);
    let up = h.publish(a, MediaKind::Video);
    for (_, down, _) in Harness::added_downs(&h.drain()) {
        h.room.down_track_ready(h.t0, down, 0, 0, &mut Vec::new());
    }
    (h, a, b, up)
}

#[test]
fn a_subscriber_whose_estimate_recovers_climbs_back_to_the_full_layer() {
    let (mut h, _, b, up) = publisher_and_subscriber();
    let mut s = SimulcastSender::new(up);
    let mut got = HashMap::new();
    let layer_at = |got: &HashMap<ParticipantKey, Received>| got.get(&b).and_then(|r| r.last()).map(|x| x.0);
    let mut seen = Vec::new();
    let mut link = Downlink { who: b, capacity: 0, sent: VecDeque::new(), probes: 0, padded: 0 };
    for t in (0..48_000u64).step_by(33) {
        let at = h.at(t);
        s.frame(&mut h, at, &mut got);
        if t % 99 == 0 {
            h.room.on_tick(at);
            link.capacity = if (14_000..17_000).contains(&t) { 400_000 } else { 5_000_000 };
            link.tick(&mut h, &mut s, at, &mut got);
        }
        if t % 990 == 0 {
            seen.push(layer_at(&got));
        }
    }
    let seen: Vec<u8> = seen.into_iter().flatten().collect();
    // Samples about a second apart. The lowest layer first; a probe 4 s after the first estimate
    // allows the half layer (a probe asks for at most the next layer), the next one 4 s later the
    // full layer.
    assert_eq!((seen[3], seen[5], seen[9]), (0, 1, 2), "{seen:?}");
    assert_eq!(seen[16], 0, "down to the quarter layer while the estimate was 400 kbps: {seen:?}");
    // The drop came within 10 s of the last climb, so that climb failed: the next probe waits
    // 20 s.
    assert_eq!(seen[33], 0, "{seen:?}");
    assert_eq!(seen.last(), Some(&2), "back on the full layer: {seen:?}");
    assert_continuous("b", &got[&b]);
}

#[test]
fn probe_padding_goes_between_frames_and_the_numbering_stays_continuous() {
    let (mut h, a, b, up) = publisher_and_subscriber();
    let mut out = Vec::new();
    let mut send = |h: &mut Harness, seq: u16, start: bool, marker: bool| -> u16 {
        let payload = vp8_packet(start, seq, 0, 0, seq == 1, 100);
        let pkt =
            RtpIn { ssrc: 7, layer: 0, seq, ts: 3000 * u32::from(seq), marker, payload: &payload, audio_level: None };
        h.room.on_rtp(h.t0, up, pkt, &mut out);
        out.iter().find(|f| f.subscriber == b).expect("forwarded to b").seq
    };
    assert_eq!(h.room.padding_slot(b), None, "nothing forwarded yet");
    let first = send(&mut h, 1, true, false);
    assert_eq!(h.room.padding_slot(b), None, "not inside a frame");
    assert_eq!(send(&mut h, 2, false, true), first.wrapping_add(1));
    let (_, pad1, ts) = h.room.padding_slot(b).expect("between frames");
    let (_, pad2, _) = h.room.padding_slot(b).expect("more padding");
    assert_eq!((pad1, pad2), (first.wrapping_add(2), first.wrapping_add(3)));
    assert_eq!(ts, 3000, "the last frame's timestamp");
    assert_eq!(send(&mut h, 3, true, true), first.wrapping_add(4), "media follows the padding");
    assert_eq!(h.room.padding_slot(a), None, "a subscriber with no video down track gets none");
}

#[test]
fn the_recording_takes_the_best_layer_from_its_keyframe_on() {
    let mut h = Harness::new();
    let a = h.join("a", Role::Judge);
    let up = h.publish(a, MediaKind::Video);
    h.drain();
    let mut out = Vec::new();
    let mut feed = |h: &mut Harness, layer: u8, seq: u16, key: bool| {
        let payload = vp8_packet(true, seq, 0, 0, key, 100);
        let pkt =
            RtpIn { ssrc: 10 + layer as u32, layer, seq, ts: 0, marker: true, payload: &payload, audio_level: None };
        h.room.on_rtp(h.t0, up, pkt, &mut out)
    };
    assert!(feed(&mut h, 0, 1, true), "layer 0 is recorded at first");
    assert!(!feed(&mut h, 2, 1, false), "a better layer waits for its keyframe");
    assert!(feed(&mut h, 2, 2, true));
    assert!(!feed(&mut h, 0, 2, true), "the lower layer is no longer recorded");
    assert_eq!(h.room.recorded_layer(up), 2);
}

#[test]
fn a_layer_switch_starts_at_once_from_the_new_layers_cached_gop_without_a_keyframe_request() {
    let (mut h, _, b, up) = publisher_and_subscriber();
    let mut s = SimulcastSender::new(up);
    s.key_every = 15; // every layer sends a keyframe every half second of its own accord
    let mut got = HashMap::new();
    let mut link = Downlink { who: b, capacity: 10_000_000, sent: VecDeque::new(), probes: 0, padded: 0 };
    let mut requests_before_the_drop = [0; 3];
    for t in (0..16_000u64).step_by(33) {
        let at = h.at(t);
        if s.frame == 400 {
            // 13 s in, two thirds of a GOP after a keyframe: the link falls to 250 kbps.
            requests_before_the_drop = s.requests;
            link.capacity = 250_000;
        }
        s.frame(&mut h, at, &mut got);
        if t % 99 == 0 {
            h.room.on_tick(at);
            link.tick(&mut h, &mut s, at, &mut got);
        }
    }
    let replays: Vec<SwitchReplay> = s.replays.iter().filter(|r| r.subscriber == b).copied().collect();
    let targets: Vec<(u8, u32)> = s.targets.iter().filter(|t| t.0 == b).map(|t| (t.1, t.2)).collect();
    println!(
        "replays {replays:?}\ntargets {targets:?}\nrequests before the drop {requests_before_the_drop:?}, after {:?}",
        s.requests
    );
    // The two climbs (to the half, then the full layer) each started from that layer's cached
    // GOP, keyframe first, in the same instant the room chose the layer; nobody asked the
    // publisher for a keyframe of them.
    assert_eq!(replays.iter().map(|r| r.layer).collect::<Vec<_>>(), [1, 2], "{replays:?}");
    assert!(replays.iter().all(|r| r.key && r.packets > 1), "{replays:?}");
    for r in &replays {
        assert!(targets.contains(&(r.layer, r.frame)), "switch to {} at once: {targets:?}", r.layer);
    }
    assert_eq!(requests_before_the_drop[1..], [0, 0], "no keyframe request for a layer switched to from the cache");
    // The step down came 10 frames (10 KB of the lowest layer) after its keyframe: more than a
    // quarter second of the 250 kbps link, so the switch waited for a requested keyframe.
    assert!(targets.iter().any(|&(l, f)| l == 0 && f > 400), "stepped down: {targets:?}");
    assert_eq!(s.requests[0], requests_before_the_drop[0] + 1, "one keyframe request for the lowest layer");
    let r = &got[&b];
    assert_eq!(r.last().map(|x| x.0), Some(0), "on the lowest layer at the end");
    assert_continuous("b", r);
    for w in r.windows(2) {
        if w[0].0 != w[1].0 {
            assert_eq!(w[1].1, 0, "switched to layer {} mid-GOP", w[1].0);
        }
    }
}

#[test]
fn a_gop_longer_than_half_a_second_of_the_layer_is_not_replayed_however_high_the_estimate() {
    let (mut h, _, b, up) = publisher_and_subscriber();
    let mut s = SimulcastSender::new(up);
    s.key_every = 100; // a keyframe every 3.3 s: the climbs come 27 and 53 frames after one
    let mut got = HashMap::new();
    // An estimate that would allow any replay (a quarter second of it is 1.25 MB).
    let mut link = Downlink { who: b, capacity: 40_000_000, sent: VecDeque::new(), probes: 0, padded: 0 };
    for t in (0..10_000u64).step_by(33) {
        let at = h.at(t);
        s.frame(&mut h, at, &mut got);
        if t % 99 == 0 {
            h.room.on_tick(at);
            link.tick(&mut h, &mut s, at, &mut got);
        }
    }
    let targets: Vec<u8> = s.targets.iter().filter(|t| t.0 == b).map(|t| t.1).collect();
    assert_eq!(targets, [1, 2], "climbed twice");
    assert!(s.replays.is_empty(), "nothing replayed: {:?}", s.replays);
    assert!(s.requests[1] >= 1 && s.requests[2] >= 1, "each climb asked for a keyframe: {:?}", s.requests);
    assert_continuous("b", &got[&b]);
}

/// `b` publishes a microphone (50 packets a second) from `from_ms` to `to_ms` of the test's
/// clock, leaving out every `drop_every`th packet (none when 0) and sending what it left out
/// 100 ms late, as a NACK repair does; the room ticks every 100 ms until `until_ms`. Returns the
/// outputs, in order.
fn speak(h: &mut Harness, up: UpTrackKey, (from_ms, to_ms): (u64, u64), drop_every: u16, until_ms: u64) -> Vec<Output> {
    let mut outputs = Vec::new();
    let mut repairs: VecDeque<(u64, u16)> = VecDeque::new();
    let payload = Bytes::from_static(&[0xf8, 0xff, 0xfe]);
    let mut out = Vec::new();
    for t in (0..until_ms).step_by(20) {
        let at = h.at(t);
        while repairs.front().is_some_and(|(due, _)| *due <= t) {
            let (_, seq) = repairs.pop_front().expect("checked");
            let pkt = RtpIn { ssrc: 7, layer: 0, seq, ts: 0, marker: false, payload: &payload, audio_level: Some(40) };
            h.room.on_rtp(at, up, pkt, &mut out);
        }
        if (from_ms..to_ms).contains(&t) {
            let seq = (t / 20) as u16;
            if drop_every > 0 && seq % drop_every == 0 {
                repairs.push_back((t + 100, seq));
            } else {
                let ts = seq as u32 * 960;
                let pkt = RtpIn { ssrc: 7, layer: 0, seq, ts, marker: false, payload: &payload, audio_level: Some(40) };
                h.room.on_rtp(at, up, pkt, &mut out);
            }
        }
        if t % 100 == 0 {
            h.room.on_tick(at);
            outputs.extend(h.drain());
        }
    }
    outputs
}

/// The network levels `to` was told of `about`, in order.
fn network_told(outputs: &[Output], to: ParticipantKey, about: &str) -> Vec<NetworkQuality> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event { to: t, event: RoomEvent::ParticipantUpdated(v) } if *t == to && v.id == about => {
                Some(v.network)
            }
            _ => None,
        })
        .collect::<Vec<_>>()
        .chunk_by(|a, b| a == b)
        .map(|c| c[0])
        .collect()
}

#[test]
fn a_party_losing_an_eighth_of_its_uplink_is_shown_poor_to_the_judge_though_nack_repairs_it() {
    let mut h = Harness::new();
    let judge = h.join("judge", Role::Judge);
    let party = h.join("party", Role::Party);
    let up = h.publish(party, MediaKind::Audio);
    h.drain();
    let out = speak(&mut h, up, (0, 6_000), 8, 6_000);
    assert_eq!(network_told(&out, judge, "p_party"), vec![NetworkQuality::Poor]);
    let sample = out
        .iter()
        .find_map(|o| match o {
            Output::NetworkChanged { participant, quality: NetworkQuality::Poor, sample, .. }
                if *participant == party =>
            {
                Some(*sample)
            }
            _ => None,
        })
        .expect("the change is reported for the presence history");
    // One packet in eight, 12.5 %, whatever came back repaired a little later.
    let loss = sample.up_loss().expect("measured");
    assert!((0.115..=0.135).contains(&loss), "{sample:?}");
    assert_eq!(h.room.participant_view(judge).map(|v| v.network), Some(NetworkQuality::Good));
}

#[test]
fn a_clean_uplink_stays_good_and_never_announces_a_change() {
    let mut h = Harness::new();
    let judge = h.join("judge", Role::Judge);
    let party = h.join("party", Role::Party);
    let up = h.publish(party, MediaKind::Audio);
    h.drain();
    let out = speak(&mut h, up, (0, 6_000), 0, 6_000);
    assert!(network_told(&out, judge, "p_party").is_empty());
    assert!(!out.iter().any(|o| matches!(o, Output::NetworkChanged { .. })));
}

#[test]
fn a_microphone_whose_packets_stop_arriving_is_lost_at_once_then_recovers_through_poor() {
    let mut h = Harness::new();
    let judge = h.join("judge", Role::Judge);
    let party = h.join("party", Role::Party);
    let up = h.publish(party, MediaKind::Audio);
    h.drain();
    // Arrives for 2 s, then nothing for 5 s (the link dropped what was sent), then again.
    let out = speak(&mut h, up, (0, 2_000), 0, 7_000);
    assert_eq!(network_told(&out, judge, "p_party"), vec![NetworkQuality::Lost]);
    let stopped = out.iter().find_map(|o| match o {
        Output::NetworkChanged { quality: NetworkQuality::Lost, sample, .. } => Some(*sample),
        _ => None,
    });
    assert_eq!(stopped.map(|s| (s.up_stalled_tracks, s.up_live_tracks)), Some((1, 1)));
    // The first window after it resumes counts the packets the outage lost; three clean windows
    // later it is good again.
    let out = speak(&mut h, up, (7_000, 14_000), 0, 14_000);
    assert_eq!(network_told(&out, judge, "p_party"), vec![NetworkQuality::Poor, NetworkQuality::Good]);
}

#[test]
fn a_muted_microphone_that_sends_nothing_is_not_a_network_fault() {
    let mut h = Harness::new();
    let judge = h.join("judge", Role::Judge);
    let party = h.join("party", Role::Party);
    let up = h.publish(party, MediaKind::Audio);
    h.room.set_muted(party, MediaKind::Audio, true);
    h.drain();
    let out = speak(&mut h, up, (0, 1_000), 0, 8_000);
    assert!(network_told(&out, judge, "p_party").is_empty());
}

#[test]
fn downlinks_that_carry_only_a_lower_layer_read_fair_and_the_open_link_good() {
    let (h, _s, got) = run_simulcast(&[("fast", 10_000_000), ("township", 340_000), ("village", 200_000)], 14_000);
    let network = |i: usize| h.room.participant_view(got[i].0.who).map(|v| v.network);
    assert_eq!(network(0), Some(NetworkQuality::Good));
    assert_eq!(network(1), Some(NetworkQuality::Fair));
    assert_eq!(network(2), Some(NetworkQuality::Fair));
}
