//! Signalling: one task per WebSocket connection. It authenticates the `join`, then relays
//! client messages to the media driver as commands and the driver's messages (arriving on the
//! participant's outbound channel, LiveKit-style) back to the client. Written over a generic
//! `Sink`/`Stream` of axum WebSocket messages so tests can drive it with channels.
//!
//! Invariants: nothing reaches the driver before the token and the session are checked; a client
//! error closes only that connection, with a close code from `protocol::CloseCode`, and is logged
//! once; internal errors are never sent to clients.

pub mod protocol;

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use crate::auth::{AuthError, Tokens};
use crate::core::{LeaveCause, Role, Zone};
use crate::media::{Command, ConnRef, ControlRequest, JoinRefused, Joiner, MediaHandle, Outbound};
use crate::store::{AuditRecord, Store, StoreError};
use protocol::{parse_client_message, ClientMessage, CloseCode, ServerMessage, SessionView};

/// A client must send `join` this soon after connecting.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A write to a client that takes longer than this means the client is gone.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that sends nothing (not even `ping`) for this long is disconnected.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a signalling connection needs from the server.
#[derive(Clone)]
pub struct SignalContext {
    pub store: Store,
    pub tokens: Tokens,
    pub media: MediaHandle,
}

/// How a connection ended, for the log and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Closed(CloseCode),
    /// The client went away (socket closed or errored) without `leave`.
    Dropped,
}

pub async fn run_connection<S, R, E>(mut sink: S, mut stream: R, ctx: SignalContext) -> Ending
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
{
    // 1. The join.
    let first = match timeout(JOIN_TIMEOUT, next_text(&mut stream)).await {
        Err(_) => return close(&mut sink, CloseCode::JoinTimeout, "no join within the timeout").await,
        Ok(Incoming::Text(t)) => t,
        Ok(Incoming::Bad(code, why)) => return close(&mut sink, code, why).await,
        Ok(Incoming::Gone) => return Ending::Dropped,
    };
    let token = match parse_client_message(&first) {
        Ok(ClientMessage::Join { token, .. }) => token,
        Ok(_) => return close(&mut sink, CloseCode::ProtocolError, "first message must be join").await,
        Err(e) => return close(&mut sink, CloseCode::ProtocolError, &format!("bad join: {e}")).await,
    };
    let joiner = match authenticate(&ctx, &token).await {
        Ok(j) => j,
        Err(code) => {
            // Who tried, if the token says (even an invalid one is worth recording as a claim).
            let claimed = ctx.tokens.peek_subject(&token).unwrap_or_else(|| "unknown".into());
            let entry = AuditRecord::new(claimed, "join_refused").detail(code.reason());
            if let Err(e) = ctx.store.audit(entry).await {
                warn!(error = %e, "could not write the audit log");
            }
            return close(&mut sink, code, "join refused").await;
        }
    };
    let participant_id = joiner.participant_id.clone();
    let opened_at = match ctx.store.session(&joiner.session.id).await {
        Ok(s) => s.opened_at.as_deref().and_then(crate::store::parse_rfc3339),
        Err(_) => None,
    };
    let who = Who {
        session_id: joiner.session.id.clone(),
        participant_id: participant_id.clone(),
        role: joiner.role,
        opened_at,
    };
    let (out_tx, mut out_rx) = mpsc::channel(crate::media::OUTBOUND_CAPACITY);
    let me = match ctx.media.join(joiner, out_tx).await {
        Ok(Ok(me)) => me,
        Ok(Err(refused)) => {
            let code = match refused {
                JoinRefused::Locked => CloseCode::SessionLocked,
                JoinRefused::SessionClosed => CloseCode::SessionClosed,
            };
            info!(participant = %participant_id, reason = code.reason(), "join refused");
            let entry = AuditRecord::new(participant_id.as_str(), "join_refused").detail(code.reason());
            if let Err(e) = ctx.store.audit(entry).await {
                warn!(error = %e, "could not write the audit log");
            }
            return close(&mut sink, code, "join refused").await;
        }
        Err(_) => return close(&mut sink, CloseCode::ServerError, "media driver unavailable").await,
    };

    // 2. The session.
    let mut last_heard = Instant::now();
    let mut keepalive = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            incoming = next_text(&mut stream) => match incoming {
                Incoming::Text(text) => {
                    last_heard = Instant::now();
                    match parse_client_message(&text) {
                        Ok(msg) => {
                            if let Some(ending) = handle(&mut sink, &ctx, me, &who, msg).await {
                                return ending;
                            }
                        }
                        Err(e) => {
                            info!(participant = %participant_id, error = %e, "protocol error; closing");
                            let _ = ctx.media.send(Command::ConnectionLost { from: me, cause: Some(LeaveCause::ProtocolError) }).await;
                            return close(&mut sink, CloseCode::ProtocolError, &e.to_string()).await;
                        }
                    }
                }
                Incoming::Bad(code, why) => {
                    info!(participant = %participant_id, why, "bad frame; closing");
                    let cause = (code == CloseCode::ProtocolError).then_some(LeaveCause::ProtocolError);
                    let _ = ctx.media.send(Command::ConnectionLost { from: me, cause }).await;
                    return close(&mut sink, code, why).await;
                }
                Incoming::Gone => {
                    info!(participant = %participant_id, "signalling connection dropped");
                    let _ = ctx.media.send(Command::ConnectionLost { from: me, cause: None }).await;
                    return Ending::Dropped;
                }
            },
            out = out_rx.recv() => match out {
                Some(Outbound::Message(m)) => {
                    // A client that does not read for this long is gone, whatever TCP says.
                    let sent = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(m.to_text().into()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        let _ = ctx.media.send(Command::ConnectionLost { from: me, cause: None }).await;
                        return Ending::Dropped;
                    }
                }
                Some(Outbound::Close(code)) => return close(&mut sink, code, code.reason()).await,
                None => return close(&mut sink, CloseCode::ServerError, "media driver stopped").await,
            },
            _ = keepalive.tick() => {
                if last_heard.elapsed() >= KEEPALIVE_TIMEOUT {
                    info!(participant = %participant_id, "keepalive timeout");
                    let _ = ctx.media.send(Command::ConnectionLost { from: me, cause: None }).await;
                    return close(&mut sink, CloseCode::KeepaliveTimeout, "keepalive timeout").await;
                }
            }
        }
    }
}

/// Handles one message after join; `Some` ends the connection.
/// Who this connection is, for what the signalling task decides itself (notes).
struct Who {
    session_id: String,
    participant_id: String,
    role: Role,
    /// When the session opened: notes are stamped with the time since (the recording's timeline).
    opened_at: Option<time::OffsetDateTime>,
}

async fn handle<S: Sink<Message> + Unpin>(
    sink: &mut S,
    ctx: &SignalContext,
    me: ConnRef,
    who: &Who,
    msg: ClientMessage,
) -> Option<Ending> {
    let cmd = match msg {
        ClientMessage::Join { .. } => {
            let _ = ctx.media.send(Command::ConnectionLost { from: me, cause: Some(LeaveCause::ProtocolError) }).await;
            return Some(close(sink, CloseCode::ProtocolError, "already joined").await);
        }
        ClientMessage::PublishOffer { sdp, sources, .. } => Command::PublishOffer { from: me, sdp, sources },
        ClientMessage::SubscribeAnswer { sdp, .. } => Command::SubscribeAnswer { from: me, sdp },
        ClientMessage::Candidate { pc, candidate: Some(candidate), .. } => {
            Command::Candidate { from: me, pc, candidate }
        }
        ClientMessage::Candidate { candidate: None, .. } => return None, // end of trickle
        ClientMessage::Mute { kind, muted, .. } => Command::Mute { from: me, kind, muted },
        ClientMessage::Ping { ts, .. } => {
            let server_ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let pong = ServerMessage::Pong { ts, server_ts };
            return sink.send(Message::Text(pong.to_text().into())).await.is_err().then_some(Ending::Dropped);
        }
        ClientMessage::Leave { reason, .. } => {
            debug!(?reason, "leave");
            Command::Leave { from: me }
        }
        ClientMessage::Note { text, .. } => {
            let reply = save_note(ctx, who, &text).await;
            return sink.send(Message::Text(reply.to_text().into())).await.is_err().then_some(Ending::Dropped);
        }
        ClientMessage::Control { action, target, zone, kind, reason, .. } => {
            let zone = match zone.as_deref().map(Zone::parse) {
                None => None,
                Some(Some(z)) => Some(z),
                Some(None) => {
                    let err = ServerMessage::error("bad_zone", "会场名称无效", "unknown zone");
                    return sink.send(Message::Text(err.to_text().into())).await.is_err().then_some(Ending::Dropped);
                }
            };
            Command::Control { from: me, request: ControlRequest { action, target, zone, kind, reason } }
        }
    };
    if ctx.media.send(cmd).await.is_err() {
        return Some(close(sink, CloseCode::ServerError, "media driver unavailable").await);
    }
    None
}

/// Stores a note with the session's timecode, if the role keeps the record.
async fn save_note(ctx: &SignalContext, who: &Who, text: &str) -> ServerMessage {
    if !crate::core::policy(who.role).notes {
        return ServerMessage::error("not_allowed", "您的角色不能记录笔录", "your role does not keep the record");
    }
    let n = text.chars().count();
    if n == 0 || n > 2000 {
        return ServerMessage::error("bad_request", "笔录须为1–2000字", "a note is 1–2000 characters");
    }
    let timecode_ms =
        who.opened_at.map(|t| (time::OffsetDateTime::now_utc() - t).whole_milliseconds().max(0) as i64).unwrap_or(0);
    match ctx.store.add_note(&who.session_id, &who.participant_id, timecode_ms, text).await {
        Ok(id) => {
            let entry = AuditRecord::new(who.participant_id.as_str(), "note")
                .session(who.session_id.as_str())
                .target(id.as_str())
                .detail(format!("timecode_ms={timecode_ms}"));
            if let Err(e) = ctx.store.audit(entry).await {
                warn!(error = %e, "could not write the audit log");
            }
            ServerMessage::NoteSaved { id, timecode_ms }
        }
        Err(e) => {
            warn!(error = %e, "could not store a note");
            ServerMessage::error("internal", "笔录保存失败，请重试", "the note was not saved; try again")
        }
    }
}

/// Checks the token and the session; returns who is joining or the close code that says why not.
async fn authenticate(ctx: &SignalContext, token: &str) -> Result<Joiner, CloseCode> {
    let claims = ctx.tokens.verify(token).map_err(|e| {
        info!(error = %e, "join with a bad token");
        match e {
            AuthError::Expired => CloseCode::TokenExpired,
            AuthError::Invalid => CloseCode::BadToken,
        }
    })?;
    let session = match ctx.store.session(&claims.sid).await {
        Ok(s) => s,
        Err(StoreError::NotFound) => return Err(CloseCode::SessionNotFound),
        Err(e) => {
            warn!(error = %e, "store error during join");
            return Err(CloseCode::ServerError);
        }
    };
    let participant = match ctx.store.participant(&claims.sub).await {
        Ok(p) if p.session_id == claims.sid => p,
        Ok(_) | Err(StoreError::NotFound) => {
            info!(participant = %claims.sub, "join token for an unknown participant");
            return Err(CloseCode::BadToken);
        }
        Err(e) => {
            warn!(error = %e, "store error during join");
            return Err(CloseCode::ServerError);
        }
    };
    if session.status == "closed" {
        return Err(CloseCode::SessionClosed);
    }
    if session.status == "scheduled" {
        match ctx.store.open_session(&session.id).await {
            Ok(_) => info!(session = %session.id, "session opened by its first join"),
            Err(StoreError::Conflict) => return Err(CloseCode::SessionClosed),
            Err(e) => {
                warn!(error = %e, "store error opening session");
                return Err(CloseCode::ServerError);
            }
        }
    }
    match participant.revoked_cause.as_deref() {
        Some("denied") => return Err(CloseCode::Denied),
        Some("transferred") => return Err(CloseCode::Transferred),
        Some(_) => return Err(CloseCode::Removed),
        None => {}
    }
    let role = Role::parse(&participant.role).ok_or(CloseCode::BadToken)?;
    if participant.identity_required && participant.identity_verified_at.is_none() {
        return Err(CloseCode::IdentityRequired);
    }
    let consented = participant.consent_proceeding_at.is_some() && participant.consent_recording_at.is_some();
    if session.consent_required && crate::core::roles::consents(role) && !consented {
        return Err(CloseCode::ConsentRequired);
    }
    Ok(Joiner {
        session: SessionView {
            id: session.id,
            case_id: session.case_id,
            kind: session.kind,
            title: session.title,
            locked: false,
            spotlight: None,
        },
        lobby: session.lobby,
        group: participant.group,
        participant_id: participant.id,
        display_name: participant.display_name,
        role,
        site_id: participant.site_id,
    })
}

enum Incoming {
    Text(String),
    Bad(CloseCode, &'static str),
    Gone,
}

async fn next_text<R, E>(stream: &mut R) -> Incoming
where
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
{
    loop {
        match stream.next().await {
            None => return Incoming::Gone,
            Some(Err(e)) => {
                let text = e.to_string();
                debug!(error = %text, "websocket read error");
                // tungstenite reports an over-long message as a capacity error.
                if text.contains("too long") || text.contains("Space limit") || text.contains("capacity") {
                    return Incoming::Bad(CloseCode::TooBig, "message too big");
                }
                return Incoming::Gone;
            }
            Some(Ok(Message::Text(t))) => {
                if t.len() > protocol::MAX_MESSAGE_BYTES {
                    return Incoming::Bad(CloseCode::TooBig, "message too big");
                }
                return Incoming::Text(t.to_string());
            }
            Some(Ok(Message::Binary(_))) => {
                return Incoming::Bad(CloseCode::ProtocolError, "binary frames are not part of the protocol")
            }
            Some(Ok(Message::Close(_))) => return Incoming::Gone,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        }
    }
}

async fn close<S: Sink<Message> + Unpin>(sink: &mut S, code: CloseCode, why: &str) -> Ending {
    debug!(code = code.code(), why, "closing signalling connection");
    let frame = CloseFrame { code: code.code(), reason: code.reason().into() };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
    Ending::Closed(code)
}
