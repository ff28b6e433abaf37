use crate::peer_connection::event::{RTCEventInternal, TaggedRTCEventInternal};
use crate::peer_connection::message::internal::{
    RTCMessageInternal, RTPMessage, TaggedRTCMessageInternal,
};

use interceptor::Packet;
use bytes::BytesMut;
use log::debug;
use shared::error::{Error, Result};
use shared::marshal::{Marshal, MarshalSize, Unmarshal};
use shared::util::is_rtcp;
use srtp::context::Context;
use std::collections::VecDeque;
use std::time::Instant;

#[derive(Default)]
pub(crate) struct SrtpHandlerContext {
    pub(crate) local_srtp_context: Option<Context>,
    pub(crate) remote_srtp_context: Option<Context>,

    pub(crate) read_outs: VecDeque<TaggedRTCMessageInternal>,
    pub(crate) write_outs: VecDeque<TaggedRTCMessageInternal>,
    pub(crate) event_outs: VecDeque<TaggedRTCEventInternal>,

    /// Qiao patch: outgoing SRTP packets are marshalled and encrypted here, each split off as
    /// its own buffer. Once every packet split from it has been sent and dropped, the next
    /// `reserve` takes the same allocation back, so a connection's packets cost no allocation
    /// (upstream allocated twice per packet: the marshalled packet, then the encrypted copy).
    pub(crate) send_arena: BytesMut,
}

/// Qiao patch: the size of a connection's send arena (about twelve full-size packets: what one
/// turn of a server usually sends on one connection).
const SEND_ARENA: usize = 16 * 1024;

/// SrtpHandler implements SRTP/RTP/RTCP Protocols handling
pub(crate) struct SrtpHandler<'a> {
    ctx: &'a mut SrtpHandlerContext,
}

impl<'a> SrtpHandler<'a> {
    /// Whether outgoing RTP can be encrypted yet (the DTLS handshake has given the keys).
    pub(crate) fn can_encrypt(&self) -> bool {
        self.ctx.local_srtp_context.is_some()
    }

    /// The SRTP packet of an outgoing RTP packet; `None` before the keys are known.
    pub(crate) fn encrypt_rtp(&mut self, rtp_message: &rtp::Packet) -> Result<Option<BytesMut>> {
        let Some(context) = self.ctx.local_srtp_context.as_mut() else {
            return Ok(None);
        };
        // Qiao patch: marshal into the send arena and encrypt there, with the header we just
        // marshalled instead of parsing it back out of the bytes (`encrypt_rtp`, which allocated
        // its extension list again for every packet sent).
        let arena = &mut self.ctx.send_arena;
        let size = rtp_message.marshal_size();
        let need = size + context.max_rtp_tag_len();
        if arena.capacity() < need {
            // Takes the arena's allocation back when every packet split from it is gone; else a
            // new one.
            arena.reserve(need.max(SEND_ARENA));
        }
        arena.resize(size, 0);
        let sealed = match rtp_message.marshal_to(&mut arena[..]) {
            Ok(n) if n == size => context.encrypt_rtp_in_place(arena, &rtp_message.header),
            Ok(n) => Err(Error::Other(format!(
                "marshal_to output size {n}, but expect {size}"
            ))),
            Err(e) => Err(e),
        };
        match sealed {
            Ok(()) => Ok(Some(arena.split())),
            Err(e) => {
                arena.clear();
                Err(e)
            }
        }
    }

    pub(crate) fn new(ctx: &'a mut SrtpHandlerContext) -> Self {
        SrtpHandler { ctx }
    }

    pub(crate) fn name(&self) -> &'static str {
        "SrtpHandler"
    }
}

impl<'a>
    sansio::Protocol<TaggedRTCMessageInternal, TaggedRTCMessageInternal, TaggedRTCEventInternal>
    for SrtpHandler<'a>
{
    type Rout = TaggedRTCMessageInternal;
    type Wout = TaggedRTCMessageInternal;
    type Eout = TaggedRTCEventInternal;
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedRTCMessageInternal) -> Result<()> {
        if let RTCMessageInternal::Rtp(RTPMessage::Raw(message)) = msg.message {
            debug!("srtp read {:?}", msg.transport.peer_addr);

            #[allow(clippy::collapsible_else_if)]
            if is_rtcp(&message) {
                if let Some(context) = self.ctx.remote_srtp_context.as_mut() {
                    let mut decrypted = context.decrypt_rtcp(&message)?;
                    let rtcp_packets = rtcp::packet::unmarshal(&mut decrypted)?;
                    if rtcp_packets.is_empty() {
                        return Err(Error::Other("empty rtcp_packets".to_string()));
                    }

                    self.ctx.read_outs.push_back(TaggedRTCMessageInternal {
                        now: msg.now,
                        transport: msg.transport,
                        message: RTCMessageInternal::Rtp(RTPMessage::Packet(Packet::Rtcp(
                            rtcp_packets,
                        ))),
                    });
                } else {
                    return Err(Error::Other(format!(
                        "remote_srtp_context is not set yet for rtcp_packet {:?}",
                        msg.transport.peer_addr
                    )));
                }
            } else {
                if let Some(context) = self.ctx.remote_srtp_context.as_mut() {
                    let mut decrypted = context.decrypt_rtp(&message)?;
                    let rtp_packet = rtp::Packet::unmarshal(&mut decrypted)?;

                    self.ctx.read_outs.push_back(TaggedRTCMessageInternal {
                        now: msg.now,
                        transport: msg.transport,
                        message: RTCMessageInternal::Rtp(RTPMessage::Packet(Packet::Rtp(
                            rtp_packet,
                        ))),
                    });
                } else {
                    return Err(Error::Other(format!(
                        "remote_srtp_context is not set yet for rtp_packet {:?}",
                        msg.transport.peer_addr
                    )));
                }
            }
        } else {
            debug!("bypass srtp read {:?}", msg.transport.peer_addr);
            self.ctx.read_outs.push_back(msg);
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.ctx.read_outs.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedRTCMessageInternal) -> Result<()> {
        if let RTCMessageInternal::Rtp(message) = msg.message {
            debug!("srtp write {:?}", msg.transport.peer_addr);

            let encrypted = match message {
                RTPMessage::Packet(Packet::Rtcp(rtcp_packets)) => {
                    if rtcp_packets.is_empty() {
                        return Err(Error::Other("empty rtcp_packets".to_string()));
                    };

                    if let Some(context) = self.ctx.local_srtp_context.as_mut() {
                        let packet = rtcp::packet::marshal(&rtcp_packets)?;
                        context.encrypt_rtcp(&packet)?
                    } else {
                        return Err(Error::Other(format!(
                            "local_srp_context is not set yet for rtcp_packet {:?}",
                            msg.transport.peer_addr
                        )));
                    }
                }
                RTPMessage::Packet(Packet::Rtp(rtp_message)) => self
                    .encrypt_rtp(&rtp_message)?
                    .ok_or_else(|| {
                        Error::Other(format!(
                            "local_srtp_context is not set yet for rtp_packet {:?}",
                            msg.transport.peer_addr
                        ))
                    })?,
                RTPMessage::Raw(raw_packet) => {
                    // Bypass
                    debug!("Bypass srtp write {:?}", msg.transport.peer_addr);
                    raw_packet
                }
                RTPMessage::TrackPacket(_) => {
                    return Err(Error::Other(
                        "application level track message should never reach here".to_string(),
                    ));
                }
                RTPMessage::Packet(_) => {
                    return Err(Error::Other(
                        "unsupported packet kind for srtp write".to_string(),
                    ));
                }
            };

            self.ctx.write_outs.push_back(TaggedRTCMessageInternal {
                now: msg.now,
                transport: msg.transport,
                message: RTCMessageInternal::Rtp(RTPMessage::Raw(encrypted)),
            });
        } else {
            // Bypass
            debug!("Bypass srtp write {:?}", msg.transport.peer_addr);
            self.ctx.write_outs.push_back(msg);
        }
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.ctx.write_outs.pop_front()
    }

    fn handle_event(&mut self, mut evt: TaggedRTCEventInternal) -> Result<()> {
        if let RTCEventInternal::DTLSHandshakeComplete(local_srtp_context, remote_srtp_context) =
            &mut evt.event
        {
            debug!("srtp recv dtls handshake complete");

            self.ctx.local_srtp_context = local_srtp_context.take();
            self.ctx.remote_srtp_context = remote_srtp_context.take()
        }

        self.ctx.event_outs.push_back(evt);

        Ok(())
    }

    fn poll_event(&mut self) -> Option<Self::Eout> {
        self.ctx.event_outs.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<()> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }

    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Qiao patch: the send arena.
#[cfg(test)]
mod tests {
    use super::*;
    use srtp::protection_profile::ProtectionProfile;

    fn context() -> Context {
        let provider =
            crypto::default_provider().expect("a built-in crypto provider is enabled for tests");
        Context::new(
            &[7; 16],
            &[9; 12],
            ProtectionProfile::AeadAes128Gcm,
            None,
            None,
            provider.crypto(),
        )
        .expect("an SRTP context")
    }

    fn packet(seq: u16, len: usize) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: 3000,
                ssrc: 0x1234_5678,
                ..Default::default()
            },
            payload: bytes::Bytes::from(vec![seq as u8; len]),
        }
    }

    #[test]
    fn packets_sent_and_dropped_give_their_arena_back_and_decrypt_as_sent() {
        let mut ctx = SrtpHandlerContext {
            local_srtp_context: Some(context()),
            ..Default::default()
        };
        let mut receiver = context();
        let mut first_turn = Vec::new();
        for seq in 0..4u16 {
            let out = SrtpHandler::new(&mut ctx)
                .encrypt_rtp(&packet(seq, 1100))
                .expect("sealed")
                .expect("keys");
            first_turn.push(out);
        }
        let start = first_turn[0].as_ptr() as usize;
        for (seq, out) in first_turn.iter().enumerate() {
            // One allocation: each packet follows the one before it.
            assert_eq!(out.as_ptr() as usize, start + seq * out.len());
            let plain = receiver.decrypt_rtp(out).expect("decrypts");
            assert_eq!(&plain[12..], &packet(seq as u16, 1100).payload[..]);
        }
        drop(first_turn);
        // Later turns run the arena to its end; once it is full, the next packet goes back to
        // the start of the same allocation, since every earlier packet has been dropped.
        let mut wrapped = false;
        for seq in 4..40u16 {
            let out = SrtpHandler::new(&mut ctx)
                .encrypt_rtp(&packet(seq, 1100))
                .expect("sealed")
                .expect("keys");
            wrapped |= out.as_ptr() as usize == start;
            assert!(
                (start..start + SEND_ARENA).contains(&(out.as_ptr() as usize)),
                "packet {seq} outside the arena"
            );
            let plain = receiver.decrypt_rtp(&out).expect("decrypts");
            assert_eq!(&plain[12..], &packet(seq, 1100).payload[..]);
        }
        assert!(wrapped, "the arena was taken back");
        // A packet still held keeps its bytes: the next arena is a new allocation.
        let held = SrtpHandler::new(&mut ctx)
            .encrypt_rtp(&packet(40, 1100))
            .expect("sealed")
            .expect("keys");
        let copy = held.clone();
        for seq in 41..60u16 {
            SrtpHandler::new(&mut ctx)
                .encrypt_rtp(&packet(seq, 1100))
                .expect("sealed")
                .expect("keys");
        }
        assert_eq!(held, copy);
    }
}
