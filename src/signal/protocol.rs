//! The signalling protocol, version 1 (`docs/protocol.md` is its description; this file is its
//! definition). Every message carries `"v": 1` and a `"type"`.

use serde::{Deserialize, Serialize};

use crate::core::{Action, LeaveCause, MediaKind, ParticipantView, TrackSource, TrackView};

pub const PROTOCOL_VERSION: u32 = 1;
/// Largest text frame accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Which of a participant's two peer connections a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PcKind {
    Publish,
    Subscribe,
}

/// An ICE candidate as browsers produce it (RTCIceCandidateInit), in snake_case. The camelCase
/// names of the browser API are accepted too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, alias = "sdpMid")]
    pub sdp_mid: Option<String>,
    #[serde(default, alias = "sdpMLineIndex")]
    pub sdp_m_line_index: Option<u16>,
    #[serde(default, alias = "usernameFragment")]
    pub username_fragment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Join {
        #[serde(default)]
        v: Option<u32>,
        token: String,
        #[serde(default)]
        client: Option<serde_json::Value>,
    },
    PublishOffer {
        #[serde(default)]
        v: Option<u32>,
        sdp: String,
        #[serde(default)]
        sources: std::collections::HashMap<String, TrackSource>,
    },
    SubscribeAnswer {
        #[serde(default)]
        v: Option<u32>,
        sdp: String,
    },
    Candidate {
        #[serde(default)]
        v: Option<u32>,
        pc: PcKind,
        candidate: Option<IceCandidate>,
    },
    Mute {
        #[serde(default)]
        v: Option<u32>,
        kind: MediaKind,
        muted: bool,
    },
    Ping {
        #[serde(default)]
        v: Option<u32>,
        #[serde(default)]
        ts: serde_json::Value,
    },
    Leave {
        #[serde(default)]
        v: Option<u32>,
        #[serde(default)]
        reason: Option<String>,
    },
    /// A note for the record (笔录), stamped by the server with the session's timecode.
    Note {
        #[serde(default)]
        v: Option<u32>,
        text: String,
    },
    /// A host control or a hand raise (see docs/protocol.md, "Zones and host controls").
    Control {
        #[serde(default)]
        v: Option<u32>,
        action: Action,
        #[serde(default)]
        target: Option<String>,
        /// A zone name, parsed by the receiver so that a bad one is a `bad_zone` error, not a
        /// protocol error.
        #[serde(default)]
        zone: Option<String>,
        #[serde(default)]
        kind: Option<MediaKind>,
        /// With `pause_recording`: the statutory reason (recess, non_public_evidence,
        /// mediation_unsuited_to_recording).
        #[serde(default)]
        reason: Option<String>,
    },
}

impl ClientMessage {
    fn version(&self) -> Option<u32> {
        match self {
            ClientMessage::Join { v, .. }
            | ClientMessage::PublishOffer { v, .. }
            | ClientMessage::SubscribeAnswer { v, .. }
            | ClientMessage::Candidate { v, .. }
            | ClientMessage::Mute { v, .. }
            | ClientMessage::Ping { v, .. }
            | ClientMessage::Leave { v, .. }
            | ClientMessage::Control { v, .. }
            | ClientMessage::Note { v, .. } => *v,
        }
    }
}

/// Why a text frame is not a valid client message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("not JSON")]
    NotJson,
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("protocol version must be {PROTOCOL_VERSION}")]
    WrongVersion,
    #[error("bad message: {0}")]
    Invalid(String),
}

pub fn parse_client_message(text: &str) -> Result<ClientMessage, ParseError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| ParseError::NotJson)?;
    let ty = value.get("type").and_then(|t| t.as_str()).unwrap_or("").to_string();
    const KNOWN: [&str; 9] =
        ["join", "publish_offer", "subscribe_answer", "candidate", "mute", "ping", "leave", "control", "note"];
    if !KNOWN.contains(&ty.as_str()) {
        return Err(ParseError::UnknownType(ty));
    }
    let msg: ClientMessage = serde_json::from_value(value).map_err(|e| ParseError::Invalid(e.to_string()))?;
    if msg.version() != Some(PROTOCOL_VERSION) {
        return Err(ParseError::WrongVersion);
    }
    Ok(msg)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    pub id: String,
    pub case_id: String,
    pub kind: String,
    pub title: Option<String>,
    /// Live state, filled in by the media driver.
    pub locked: bool,
    pub spotlight: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// Built once per event and serialised at once; boxing `Joined` would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum ServerMessage {
    Joined {
        participant_id: String,
        session: SessionView,
        #[serde(rename = "self")]
        me: ParticipantView,
        participants: Vec<ParticipantView>,
        tracks: Vec<TrackView>,
        reconnect_grace_ms: u64,
    },
    PublishAnswer {
        sdp: String,
    },
    SubscribeOffer {
        sdp: String,
        tracks: Vec<TrackView>,
    },
    ParticipantJoined {
        participant: ParticipantView,
    },
    ParticipantUpdated {
        participant: ParticipantView,
    },
    ParticipantLeft {
        participant_id: String,
        cause: LeaveCause,
    },
    TrackPublished {
        track: TrackView,
    },
    TrackUnpublished {
        track_id: String,
        participant_id: String,
    },
    SessionUpdated {
        locked: bool,
        spotlight: Option<String>,
    },
    ControlAck {
        action: Action,
        target: Option<String>,
    },
    NoteSaved {
        id: String,
        timecode_ms: i64,
    },
    /// The loudest participant of this participant's zone changed.
    ActiveSpeaker {
        participant_id: String,
    },
    /// This participant's downlink cannot carry its video: the server sends audio only
    /// (`suspended: true`) and tries video again later (`suspended: false`).
    VideoSuspended {
        suspended: bool,
        estimate_kbps: u64,
    },
    /// How the session's recording goes: `recording`, `paused`, `degraded`, `failed`, or `final`
    /// with the recording's integrity value (chain head) at close.
    RecordingStatus {
        #[serde(flatten)]
        status: crate::record::recorder::RecordingStatus,
    },
    /// This participant is handed to another session; its join link follows. The connection
    /// closes with 4016 right after.
    Transferred {
        session_id: String,
        join_url: String,
    },
    Pong {
        ts: serde_json::Value,
        server_ts: u64,
    },
    Error {
        code: &'static str,
        message: &'static str,
        message_en: &'static str,
    },
}

impl ServerMessage {
    /// The JSON text frame, with the protocol version added.
    pub fn to_text(&self) -> String {
        let mut v = serde_json::to_value(self).expect("server messages always serialize");
        if let Some(o) = v.as_object_mut() {
            o.insert("v".into(), PROTOCOL_VERSION.into());
        }
        v.to_string()
    }

    pub fn error(code: &'static str, message: &'static str, message_en: &'static str) -> ServerMessage {
        ServerMessage::Error { code, message, message_en }
    }
}

/// WebSocket close codes (see docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    Normal,
    TooBig,
    BadToken,
    TokenExpired,
    SessionNotFound,
    Removed,
    SessionClosed,
    ProtocolError,
    Replaced,
    JoinTimeout,
    KeepaliveTimeout,
    MediaTimeout,
    SessionLocked,
    Denied,
    IdentityRequired,
    ConsentRequired,
    Transferred,
    ServerError,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::TooBig => 1009,
            CloseCode::ServerError => 1011,
            CloseCode::BadToken => 4001,
            CloseCode::TokenExpired => 4002,
            CloseCode::SessionNotFound => 4003,
            CloseCode::Removed => 4004,
            CloseCode::SessionClosed => 4005,
            CloseCode::ProtocolError => 4006,
            CloseCode::Replaced => 4007,
            CloseCode::JoinTimeout => 4009,
            CloseCode::KeepaliveTimeout => 4010,
            CloseCode::MediaTimeout => 4011,
            CloseCode::SessionLocked => 4012,
            CloseCode::Denied => 4013,
            CloseCode::IdentityRequired => 4014,
            CloseCode::ConsentRequired => 4015,
            CloseCode::Transferred => 4016,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "bye",
            CloseCode::TooBig => "message too big",
            CloseCode::ServerError => "server error",
            CloseCode::BadToken => "bad token",
            CloseCode::TokenExpired => "token expired",
            CloseCode::SessionNotFound => "session not found",
            CloseCode::Removed => "removed",
            CloseCode::SessionClosed => "session closed",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::Replaced => "replaced by a newer connection",
            CloseCode::JoinTimeout => "no join received",
            CloseCode::KeepaliveTimeout => "keepalive timeout",
            CloseCode::MediaTimeout => "media timeout",
            CloseCode::SessionLocked => "session locked",
            CloseCode::Denied => "not admitted",
            CloseCode::IdentityRequired => "identity check required",
            CloseCode::ConsentRequired => "consent required",
            CloseCode::Transferred => "transferred to another session",
        }
    }

    /// The close code that tells a participant it was removed for `cause`.
    pub fn for_cause(cause: LeaveCause) -> CloseCode {
        match cause {
            LeaveCause::Left => CloseCode::Normal,
            LeaveCause::NetworkLost => CloseCode::KeepaliveTimeout,
            LeaveCause::MediaTimeout => CloseCode::MediaTimeout,
            LeaveCause::Removed => CloseCode::Removed,
            LeaveCause::SessionClosed => CloseCode::SessionClosed,
            LeaveCause::ProtocolError => CloseCode::ProtocolError,
            LeaveCause::Denied => CloseCode::Denied,
            LeaveCause::Transferred => CloseCode::Transferred,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_or_name_what_is_wrong() {
        let cases: &[(&str, Result<&str, ParseError>)] = &[
            (r#"{"v":1,"type":"join","token":"abc"}"#, Ok("join")),
            (r#"{"v":1,"type":"ping","ts":5}"#, Ok("ping")),
            (
                r#"{"v":1,"type":"candidate","pc":"publish","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
                Ok("candidate"),
            ),
            (r#"{"v":1,"type":"candidate","pc":"subscribe","candidate":null}"#, Ok("candidate")),
            (r#"{"v":1,"type":"mute","kind":"audio","muted":true}"#, Ok("mute")),
            (r#"not json"#, Err(ParseError::NotJson)),
            (r#"{"v":1,"type":"dance"}"#, Err(ParseError::UnknownType("dance".into()))),
            (r#"{"v":1}"#, Err(ParseError::UnknownType("".into()))),
            (r#"{"v":2,"type":"ping"}"#, Err(ParseError::WrongVersion)),
            (r#"{"type":"ping"}"#, Err(ParseError::WrongVersion)),
        ];
        for (text, want) in cases {
            let got = parse_client_message(text);
            match (want, &got) {
                (Ok(ty), Ok(m)) => {
                    assert!(format!("{m:?}").to_lowercase().starts_with(&ty.replace('_', "")), "{text} -> {m:?}")
                }
                (Err(e), Err(g)) => assert_eq!(e, g, "{text}"),
                _ => panic!("{text}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn a_missing_field_or_wrong_type_is_invalid() {
        assert!(matches!(parse_client_message(r#"{"v":1,"type":"join"}"#), Err(ParseError::Invalid(_))));
        assert!(matches!(
            parse_client_message(r#"{"v":1,"type":"mute","kind":"smell","muted":true}"#),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(parse_client_message(r#"{"v":1,"type":"leave","extra":1}"#), Err(ParseError::Invalid(_))));
    }

    #[test]
    fn server_messages_carry_the_version_and_type() {
        let text = ServerMessage::PublishAnswer { sdp: "x".into() }.to_text();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["type"], "publish_answer");
    }
}
