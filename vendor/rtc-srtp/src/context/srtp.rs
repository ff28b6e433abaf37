use super::*;
use shared::{
    error::{Error, Result},
    marshal::{MarshalSize, Unmarshal},
};

use bytes::BytesMut;

impl Context {
    /// Decrypts an SRTP packet whose header has already been parsed.
    ///
    /// Saves re-parsing when the caller needed the header to route the packet. The header must
    /// be the one belonging to `encrypted`.
    ///
    /// # Errors
    ///
    /// Fails if authentication fails, if the packet is a replay, or if it is too short to hold
    /// the profile's auth tag.
    pub fn decrypt_rtp_with_header(
        &mut self,
        encrypted: &[u8],
        header: &rtp::Header,
    ) -> Result<BytesMut> {
        let auth_tag_len = self.cipher.rtp_auth_tag_len();
        if encrypted.len() < header.marshal_size() + auth_tag_len {
            return Err(Error::ErrTooShortRtp);
        }

        let state = self.get_srtp_ssrc_state(header.ssrc);
        let (roc, diff, _) = state.next_rollover_count(header.sequence_number);
        if let Some(replay_detector) = &mut state.replay_detector
            && !replay_detector.check(header.sequence_number as u64)
        {
            return Err(Error::SrtpSsrcDuplicated(
                header.ssrc,
                header.sequence_number,
            ));
        }

        let dst = self.cipher.decrypt_rtp(encrypted, header, roc)?;
        {
            let state = self.get_srtp_ssrc_state(header.ssrc);
            if let Some(replay_detector) = &mut state.replay_detector {
                replay_detector.accept();
            }
            state.update_rollover_count(header.sequence_number, diff);
        }

        Ok(dst)
    }

    /// DecryptRTP decrypts a RTP packet with an encrypted payload
    pub fn decrypt_rtp(&mut self, encrypted: &[u8]) -> Result<BytesMut> {
        let mut buf = encrypted;
        let header = rtp::Header::unmarshal(&mut buf)?;
        self.decrypt_rtp_with_header(encrypted, &header)
    }

    /// Encrypts an RTP payload, using an already-parsed header.
    ///
    /// Saves re-parsing when the caller has just built the header. Returns the full protected
    /// packet, header included.
    ///
    /// # Errors
    ///
    /// Fails if the SRTP context has no key for this SSRC or the cipher rejects the input.
    pub fn encrypt_rtp_with_header(
        &mut self,
        plaintext: &[u8],
        header: &rtp::Header,
    ) -> Result<BytesMut> {
        let mut dst = BytesMut::with_capacity(plaintext.len() + self.max_rtp_tag_len());
        dst.extend_from_slice(plaintext);
        self.encrypt_rtp_in_place(&mut dst, header)?;
        Ok(dst)
    }

    /// Qiao patch: encrypts the RTP packet `packet` holds (its marshalled `header` and payload,
    /// exactly) where it lies, and appends the tag: a sender that marshals into a buffer of its
    /// own, with [`Context::max_rtp_tag_len`] to spare, sends without another copy or
    /// allocation. The SSRC's state is looked up once (it was twice).
    ///
    /// # Errors
    ///
    /// Fails when the SSRC's packet count is exhausted, the buffer is shorter than the header, or
    /// the cipher rejects the input; `packet` is then not to be sent.
    pub fn encrypt_rtp_in_place(
        &mut self,
        packet: &mut BytesMut,
        header: &rtp::Header,
    ) -> Result<()> {
        let new_srtp_replay_detector = &self.new_srtp_replay_detector;
        let state = self
            .srtp_ssrc_states
            .entry(header.ssrc)
            .or_insert_with(|| SrtpSsrcState {
                ssrc: header.ssrc,
                replay_detector: Some(new_srtp_replay_detector()),
                ..Default::default()
            });
        let (roc, diff, ovf) = state.next_rollover_count(header.sequence_number);
        if ovf {
            // ... when 2^48 SRTP packets or 2^31 SRTCP packets have been secured with the same key
            // (whichever occurs before), the key management MUST be called to provide new master key(s)
            // (previously stored and used keys MUST NOT be used again), or the session MUST be terminated.
            // https://www.rfc-editor.org/rfc/rfc3711#section-9.2
            return Err(Error::ErrExceededMaxPackets);
        }

        self.cipher.encrypt_rtp_in_place(packet, header, roc)?;
        state.update_rollover_count(header.sequence_number, diff);
        Ok(())
    }

    /// Qiao patch: the most bytes encryption appends to an RTP packet (the tag), for a caller
    /// that sizes its own buffer.
    pub fn max_rtp_tag_len(&self) -> usize {
        self.cipher
            .rtp_auth_tag_len()
            .max(self.cipher.aead_auth_tag_len())
    }

    /// EncryptRTP marshals and encrypts an RTP packet, writing to the dst buffer provided.
    /// If the dst buffer does not have the capacity to hold `len(plaintext) + 10` bytes, a new one will be allocated and returned.
    pub fn encrypt_rtp(&mut self, plaintext: &[u8]) -> Result<BytesMut> {
        let mut buf = plaintext;
        let header = rtp::Header::unmarshal(&mut buf)?;
        self.encrypt_rtp_with_header(plaintext, &header)
    }
}
