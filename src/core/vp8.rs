//! The VP8 payload descriptor (RFC 7741 §4.2) as far as forwarding needs it: the picture id, the
//! temporal-layer index and TL0PICIDX, where they sit in the payload, and the per-down-track
//! rewriting that keeps them continuous for a subscriber when frames are dropped (temporal-layer
//! dropping) or the source changes (a simulcast layer switch).
//!
//! A VP8 decoder in a browser tracks picture ids: a gap means a lost frame, and frames that refer
//! to it are held back. So a down track that leaves out the frames of a temporal layer must also
//! close the gap in the picture ids, and one that switches to another simulcast layer (another
//! picture-id sequence) must carry on from the last id it sent. This is what mediasoup's and
//! LiveKit's VP8 handling do; this module is written from the RFC.

use super::munger::DropLog;

/// What one packet's descriptor says. Offsets are into the RTP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Desc {
    /// S = 1 and partition index 0: the first packet of a picture.
    pub picture_start: bool,
    /// The picture id and whether it is the 15-bit form; `None` when the descriptor has none.
    pub picture_id: Option<u16>,
    pub picture_id_long: bool,
    pub picture_id_at: usize,
    /// TL0PICIDX: the running index of temporal-layer-0 pictures.
    pub tl0: Option<u8>,
    pub tl0_at: usize,
    /// The temporal layer of this picture (0 = base); `None` when the sender does not say.
    pub tid: Option<u8>,
    /// Y: this picture depends only on the base layer (a temporal switching point).
    pub layer_sync: bool,
    /// The first packet of a keyframe: a picture start whose VP8 payload header has P = 0.
    pub keyframe: bool,
}

impl Vp8Desc {
    /// Reads the descriptor; `None` if the payload is too short to hold what it announces.
    pub fn parse(p: &[u8]) -> Option<Vp8Desc> {
        let b0 = *p.first()?;
        let mut d = Vp8Desc { picture_start: b0 & 0x10 != 0 && b0 & 0x07 == 0, ..Default::default() };
        if b0 & 0x80 == 0 {
            d.keyframe = d.picture_start && p.get(1).is_some_and(|h| h & 0x01 == 0);
            return Some(d);
        }
        let x = *p.get(1)?;
        let mut i = 2;
        if x & 0x80 != 0 {
            let m = *p.get(i)?;
            d.picture_id_at = i;
            if m & 0x80 != 0 {
                let lo = *p.get(i + 1)?;
                d.picture_id = Some(u16::from(m & 0x7f) << 8 | u16::from(lo));
                d.picture_id_long = true;
                i += 2;
            } else {
                d.picture_id = Some(u16::from(m));
                i += 1;
            }
        }
        if x & 0x40 != 0 {
            d.tl0 = Some(*p.get(i)?);
            d.tl0_at = i;
            i += 1;
        }
        if x & 0x30 != 0 {
            let t = *p.get(i)?;
            if x & 0x20 != 0 {
                d.tid = Some(t >> 6);
                d.layer_sync = t & 0x20 != 0;
            }
            i += 1;
        }
        d.keyframe = d.picture_start && p.get(i).is_some_and(|h| h & 0x01 == 0);
        Some(d)
    }

    /// Writes a rewritten picture id and TL0PICIDX into `p` (a copy of the payload this
    /// descriptor was read from). A 7-bit picture id keeps its width.
    pub fn write(&self, p: &mut [u8], picture_id: u16, tl0: u8) {
        if self.picture_id.is_some() {
            if self.picture_id_long {
                p[self.picture_id_at] = 0x80 | ((picture_id >> 8) as u8 & 0x7f);
                p[self.picture_id_at + 1] = picture_id as u8;
            } else {
                p[self.picture_id_at] = picture_id as u8 & 0x7f;
            }
        }
        if self.tl0.is_some() {
            p[self.tl0_at] = tl0;
        }
    }
}

/// Picture ids are 15-bit serial numbers (a 7-bit id is the same counter seen mod 128).
const PID_MASK: u16 = 0x7fff;

fn pid_newer(a: u16, b: u16) -> bool {
    let d = a.wrapping_sub(b) & PID_MASK;
    d != 0 && d < 0x4000
}

/// How many dropped pictures a late packet can be placed behind.
const DROP_LOG: usize = 32;

/// Per down track: maps a source's picture ids and TL0PICIDX onto the continuous ones the
/// subscriber sees.
#[derive(Debug, Clone, Default)]
pub struct PictureMunger {
    /// output = input - offset (15-bit for the picture id, 8-bit for TL0PICIDX).
    pid_offset: u16,
    tl0_offset: u8,
    /// The newest input picture id seen in this segment (forwarded or dropped).
    max_in_pid: Option<u16>,
    last_out_pid: Option<u16>,
    last_out_tl0: Option<u8>,
    /// Input ids of the latest dropped pictures: a late packet of an earlier picture is shifted by
    /// the drops that came after it, not before.
    dropped: DropLog<DROP_LOG>,
    /// The next picture starts a new segment (a layer switch or a new source).
    switching: bool,
}

impl PictureMunger {
    /// The next forwarded picture comes from another source: continue the ids after the last sent.
    pub fn switch(&mut self) {
        self.switching = true;
    }

    /// A picture is left out (its temporal layer is not forwarded): the ids after it close up.
    /// Called for every packet of it; counted once.
    pub fn drop_picture(&mut self, d: &Vp8Desc) {
        let Some(pid) = d.picture_id else { return };
        if self.switching {
            return; // nothing of the new source went out yet: nothing to close up
        }
        if self.max_in_pid.is_some_and(|m| !pid_newer(pid, m)) {
            return; // already counted, or a late packet of an old picture
        }
        self.max_in_pid = Some(pid);
        self.pid_offset = self.pid_offset.wrapping_add(1) & PID_MASK;
        self.dropped.push(pid);
    }

    /// The rewritten `(picture id, TL0PICIDX)` for a forwarded packet, or `None` when they are
    /// unchanged (the payload can then be shared, not copied).
    pub fn rewrite(&mut self, d: &Vp8Desc) -> Option<(u16, u8)> {
        let pid = d.picture_id?;
        let tl0 = d.tl0.unwrap_or(0);
        if self.switching {
            self.switching = false;
            self.dropped.clear();
            self.max_in_pid = None;
            self.pid_offset = match self.last_out_pid {
                Some(last) => pid.wrapping_sub(last.wrapping_add(1)) & PID_MASK,
                None => 0,
            };
            self.tl0_offset = match (self.last_out_tl0, d.tl0) {
                (Some(last), Some(_)) => tl0.wrapping_sub(last.wrapping_add(1)),
                _ => 0,
            };
        }
        let newest = self.max_in_pid.is_none_or(|m| pid_newer(pid, m) || pid == m);
        let offset = if newest {
            self.max_in_pid = Some(pid);
            self.pid_offset
        } else {
            // A late packet: undo the drops that came after its picture.
            let later = self.dropped.after(pid, pid_newer);
            self.pid_offset.wrapping_sub(later) & PID_MASK
        };
        let out_pid = pid.wrapping_sub(offset) & PID_MASK;
        let out_tl0 = tl0.wrapping_sub(self.tl0_offset);
        if newest {
            self.last_out_pid = Some(out_pid);
            if d.tl0.is_some() {
                self.last_out_tl0 = Some(out_tl0);
            }
        }
        let long_form_unchanged = out_pid == pid;
        let short_form_unchanged = !d.picture_id_long && (out_pid & 0x7f) == (pid & 0x7f);
        let unchanged = (long_form_unchanged || short_form_unchanged) && out_tl0 == tl0;
        (!unchanged).then_some((out_pid, out_tl0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor with a 15-bit picture id, TL0PICIDX and TID, then one byte of VP8 payload.
    fn packet(start: bool, pid: u16, tl0: u8, tid: u8, sync: bool) -> Vec<u8> {
        let b0 = 0x80 | if start { 0x10 } else { 0 };
        let t = (tid << 6) | if sync { 0x20 } else { 0 };
        vec![b0, 0xe0, 0x80 | (pid >> 8) as u8, pid as u8, tl0, t, 0x9d]
    }

    #[test]
    fn the_descriptor_fields_are_read_where_the_flags_put_them() {
        let d = Vp8Desc::parse(&packet(true, 0x1234, 7, 2, true)).unwrap();
        assert!(d.picture_start);
        assert_eq!((d.picture_id, d.picture_id_long, d.picture_id_at), (Some(0x1234), true, 2));
        assert_eq!((d.tl0, d.tl0_at), (Some(7), 4));
        assert_eq!((d.tid, d.layer_sync), (Some(2), true));
        // 7-bit picture id, no L, no T.
        let d = Vp8Desc::parse(&[0x90, 0x80, 0x05, 0x9d]).unwrap();
        assert_eq!((d.picture_id, d.picture_id_long, d.tl0, d.tid), (Some(5), false, None, None));
        // No extension byte at all.
        assert_eq!(Vp8Desc::parse(&[0x10, 0x9d]).unwrap().picture_id, None);
        // Truncated descriptors are refused, not misread.
        assert_eq!(Vp8Desc::parse(&[0x90, 0xe0, 0x80]), None);
        assert_eq!(Vp8Desc::parse(&[]), None);
    }

    #[test]
    fn rewriting_writes_both_widths_in_place() {
        let mut p = packet(true, 0x1234, 7, 0, false);
        let d = Vp8Desc::parse(&p).unwrap();
        d.write(&mut p, 0x0102, 9);
        let again = Vp8Desc::parse(&p).unwrap();
        assert_eq!((again.picture_id, again.tl0, again.tid), (Some(0x0102), Some(9), Some(0)));
        let mut short = vec![0x90, 0x80, 0x05, 0x9d];
        let d = Vp8Desc::parse(&short).unwrap();
        d.write(&mut short, 0x0183, 0);
        assert_eq!(short, vec![0x90, 0x80, 0x03, 0x9d]);
    }

    #[test]
    fn dropped_pictures_leave_no_gap_in_the_picture_ids() {
        let mut m = PictureMunger::default();
        let mut out = Vec::new();
        // L1T3 pattern: TID 0,2,1,2,0,2,1,2; drop TID 2.
        for (i, tid) in [0u8, 2, 1, 2, 0, 2, 1, 2].into_iter().enumerate() {
            let pid = 100 + i as u16;
            let tl0 = 10 + (i / 4) as u8;
            for start in [true, false] {
                let d = Vp8Desc::parse(&packet(start, pid, tl0, tid, false)).unwrap();
                if tid == 2 {
                    m.drop_picture(&d);
                } else {
                    let (p, _) = m.rewrite(&d).unwrap_or((pid, tl0));
                    if start {
                        out.push(p);
                    }
                }
            }
        }
        assert_eq!(out, vec![100, 101, 102, 103]);
    }

    #[test]
    fn a_late_packet_keeps_the_id_of_its_picture() {
        let mut m = PictureMunger::default();
        let d = |pid, tid| Vp8Desc::parse(&packet(false, pid, 0, tid, false)).unwrap();
        assert_eq!(m.rewrite(&d(10, 0)), None);
        m.drop_picture(&d(11, 2));
        assert_eq!(m.rewrite(&d(12, 1)), Some((11, 0)));
        // A retransmitted packet of picture 10 arrives after the drop: still 10.
        assert_eq!(m.rewrite(&d(10, 0)), None);
        assert_eq!(m.rewrite(&d(12, 1)), Some((11, 0)));
    }

    #[test]
    fn a_switch_continues_after_the_last_ids_sent() {
        let mut m = PictureMunger::default();
        let a = Vp8Desc::parse(&packet(true, 500, 40, 0, false)).unwrap();
        assert_eq!(m.rewrite(&a), None);
        m.switch();
        let b = Vp8Desc::parse(&packet(true, 9000, 200, 0, false)).unwrap();
        assert_eq!(m.rewrite(&b), Some((501, 41)));
        let b2 = Vp8Desc::parse(&packet(true, 9001, 201, 0, false)).unwrap();
        assert_eq!(m.rewrite(&b2), Some((502, 42)));
        // Wrapping the 15-bit space.
        m.switch();
        let c = Vp8Desc::parse(&packet(true, 0x7fff, 3, 0, false)).unwrap();
        assert_eq!(m.rewrite(&c), Some((503, 43)));
    }
}
