//! What was sent, joined with what the receiver said about it.

use super::acknowledgement::{Acknowledgement, PacketReport};
use rtcp::transport_feedbacks::cc_feedback_report::Ecn;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// Qiao patch: the RFC 8888 index hashes its integer keys with one multiply, not SipHash. Every
/// key is chosen by this endpoint (its own record ids, RTP sequence numbers and SSRCs); a remote
/// only looks keys up, so it cannot fill a bucket.
#[derive(Default, Clone, Copy)]
struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// A slot of [`History::twcc_ids`] whose transport-wide number was never sent here.
const NO_ID: u64 = u64::MAX;
/// A jump in transport-wide numbers up to this many is bridged with empty slots; a larger one
/// (a restarted counter) starts the index afresh.
const TWCC_GAP_BRIDGED: u16 = 1024;
/// Slots the transport-wide index holds at most: half the number space, so a number is never
/// ambiguous. Older slots are dropped (their packets are long pruned or reported).
const TWCC_SLOTS_MAX: usize = 1 << 15;

/// One packet sent, and whether any feedback has named it yet.
#[derive(Debug)]
struct Record {
    report: PacketReport,
    /// Some feedback said whether the packet arrived.
    ///
    /// Qiao patch: a packet no feedback named is not reported at all. Receivers name each packet
    /// once (a TWCC feedback starts where the previous one ended, RFC 8888 likewise per stream),
    /// so such a packet is one whose feedback was itself lost on the way back, or one that
    /// carried no transport-wide number: whether it arrived is unknown. Counting it as lost, as
    /// upstream did, doubled the loss seen on a link with 10 % random loss each way (10 % of the
    /// packets, plus the tenth of the feedback that was lost), enough to be taken for overload.
    heard: bool,
}

/// Records outgoing packets and matches incoming feedback against them.
///
/// Qiao patch: rings instead of three hash maps. Every packet sent is recorded and released
/// again once reported, so the maps' inserts and removals were about 3.5 % of the forwarding
/// profile at ten publishers. Records get consecutive ids and leave in id order (reports and
/// pruning both work from the oldest), so a ring indexed by id holds them; transport-wide
/// numbers are handed out consecutively by the TWCC sender just before this, so a second ring
/// indexed by number finds a record's id. RFC 8888 names packets by SSRC and RTP sequence
/// number, which no ring orders; that index is a map, built only once such feedback arrives
/// (browsers send TWCC).
///
/// The two feedback formats identify a packet differently — TWCC by its own transport-wide
/// sequence number, RFC 8888 by the stream's SSRC and RTP sequence number — so both indexes are
/// kept, pointing at one record.
#[derive(Debug, Default)]
pub struct History {
    /// Monotonic id, so reports come out in send order however sequence numbers wrap.
    next_id: u64,
    /// `packets[i]` is the record with id `first_id + i`, `None` once pruned. Invariant:
    /// `first_id + packets.len() == next_id`, and the front slot is never `None`.
    packets: VecDeque<Option<Record>>,
    /// The id of `packets[0]`.
    first_id: u64,
    /// How many slots of `packets` hold a record.
    tracked: usize,
    /// `twcc_ids[k]` is the id of the packet that carried transport-wide number
    /// `twcc_first + k` (mod 2^16), or [`NO_ID`]. A lookup checks the record it finds.
    twcc_ids: VecDeque<u64>,
    twcc_first: u16,
    /// The RFC 8888 index, from the first such feedback on.
    ccfb_index: Option<IntMap<(u32, u16), u64>>,
    /// Highest id acknowledged so far.
    highest_acknowledged: Option<u64>,
    /// Lowest id not yet reported to the consumer.
    next_to_report: u64,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many packets are being tracked.
    pub fn len(&self) -> usize {
        self.tracked
    }

    /// Whether nothing is being tracked.
    pub fn is_empty(&self) -> bool {
        self.tracked == 0
    }

    /// Record a packet as it leaves.
    ///
    /// `departure` must be the instant the packet was **released** to the network, not the
    /// instant the application handed it over. A pacer can hold a packet for tens of
    /// milliseconds, and counting that as network delay is exactly the error that makes a
    /// bandwidth estimate collapse (chain contract rule 3).
    #[allow(clippy::too_many_arguments)]
    pub fn add_outgoing(
        &mut self,
        ssrc: u32,
        rtp_sequence_number: u16,
        is_twcc: bool,
        twcc_sequence_number: u16,
        size: usize,
        departure: Instant,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;

        if is_twcc {
            self.index_twcc(twcc_sequence_number, id);
        }
        if let Some(index) = self.ccfb_index.as_mut() {
            index.insert((ssrc, rtp_sequence_number), id);
        }

        self.packets.push_back(Some(Record {
            report: PacketReport {
                ssrc,
                id,
                rtp_sequence_number,
                is_twcc,
                twcc_sequence_number,
                size,
                arrived: false,
                departure,
                arrival: None,
                ecn: Ecn::NotEct,
            },
            heard: false,
        }));
        self.tracked += 1;

        id
    }

    fn index_twcc(&mut self, seq: u16, id: u64) {
        if self.twcc_ids.is_empty() {
            self.twcc_first = seq;
        } else {
            let expected = self.twcc_first.wrapping_add(self.twcc_ids.len() as u16);
            let gap = seq.wrapping_sub(expected);
            if gap != 0 {
                if gap <= TWCC_GAP_BRIDGED {
                    self.twcc_ids
                        .extend(std::iter::repeat_n(NO_ID, gap as usize));
                } else {
                    self.twcc_ids.clear();
                    self.twcc_first = seq;
                }
            }
        }
        self.twcc_ids.push_back(id);
        // Slots whose packets are gone, or more than the number space can tell apart.
        while let Some(&front) = self.twcc_ids.front() {
            if self.twcc_ids.len() > TWCC_SLOTS_MAX || front == NO_ID || front < self.first_id {
                self.twcc_ids.pop_front();
                self.twcc_first = self.twcc_first.wrapping_add(1);
            } else {
                break;
            }
        }
    }

    fn record_mut(&mut self, id: u64) -> Option<&mut Record> {
        let index = usize::try_from(id.checked_sub(self.first_id)?).ok()?;
        self.packets.get_mut(index)?.as_mut()
    }

    fn twcc_id(&self, seq: u16) -> Option<u64> {
        let k = usize::from(seq.wrapping_sub(self.twcc_first));
        self.twcc_ids.get(k).copied().filter(|&id| id != NO_ID)
    }

    /// Apply TWCC feedback, returning the round trip time it implies.
    ///
    /// `None` when the feedback names a packet this endpoint has no record of — which happens
    /// routinely at startup and after the history has been pruned, and is not an error.
    pub fn on_twcc_feedback(
        &mut self,
        received_at: Instant,
        acknowledgement: Acknowledgement,
    ) -> Option<Duration> {
        let seq = acknowledgement.sequence_number;
        let id = self.twcc_id(seq)?;
        // A slot may outlive its record (pruned or reported: then `record_mut` finds nothing).
        // The number check guards the two indexes against ever disagreeing: a wrong match
        // would feed congestion control another packet's timing.
        let record = &self.record_mut(id)?.report;
        if !record.is_twcc || record.twcc_sequence_number != seq {
            return None;
        }
        self.apply(received_at, id, acknowledgement)
    }

    /// Apply RFC 8888 feedback for one stream, returning the round trip time it implies.
    pub fn on_ccfb_feedback(
        &mut self,
        received_at: Instant,
        ssrc: u32,
        acknowledgement: Acknowledgement,
    ) -> Option<Duration> {
        let index = self.ccfb_index.get_or_insert_with(|| {
            // The first RFC 8888 feedback: index what is outstanding, then keep it up to date.
            self.packets
                .iter()
                .flatten()
                .map(|r| ((r.report.ssrc, r.report.rtp_sequence_number), r.report.id))
                .collect()
        });
        let id = *index.get(&(ssrc, acknowledgement.sequence_number))?;
        self.apply(received_at, id, acknowledgement)
    }

    fn apply(
        &mut self,
        received_at: Instant,
        id: u64,
        acknowledgement: Acknowledgement,
    ) -> Option<Duration> {
        let record = self.record_mut(id)?;
        record.heard = true;
        let packet = &mut record.report;
        packet.arrived = acknowledgement.arrived;
        packet.arrival = acknowledgement.arrival;
        packet.ecn = acknowledgement.ecn;
        let departure = packet.departure;

        if acknowledgement.arrived {
            self.highest_acknowledged = Some(match self.highest_acknowledged {
                Some(highest) => highest.max(id),
                None => id,
            });
        }

        // Round trip: this feedback arrived now, and the packet left then. Both instants are on
        // this endpoint's clock, so unlike the arrival times this is a real duration.
        Some(received_at.saturating_duration_since(departure))
    }

    /// Releases a record's RFC 8888 index entry (its slot is taken by the caller).
    fn unindex(&mut self, packet: &PacketReport) {
        if let Some(index) = self.ccfb_index.as_mut() {
            let key = (packet.ssrc, packet.rtp_sequence_number);
            // Only if it still names this record: a later packet may reuse the sequence number.
            if index.get(&key) == Some(&packet.id) {
                index.remove(&key);
            }
        }
    }

    /// Drops pruned slots at the front, keeping the invariant that the front holds a record.
    fn trim_front(&mut self) {
        while let Some(None) = self.packets.front() {
            self.packets.pop_front();
            self.first_id += 1;
        }
        if self.packets.is_empty() {
            self.first_id = self.next_id;
        }
    }

    /// Take everything up to the highest *arrived* packet since the last call, in send order.
    ///
    /// Packets older than that which feedback named as lost are reported as lost; those no
    /// feedback named are dropped unreported (see [`Record::heard`]). Loss feedback alone does not
    /// advance the reporting window; losses are emitted when a later packet is reported as
    /// arrived.
    pub fn take_reports(&mut self) -> Vec<PacketReport> {
        let Some(highest) = self.highest_acknowledged else {
            return Vec::new();
        };
        if self.next_to_report > highest {
            return Vec::new();
        }

        let mut reports = Vec::new();
        // Everything below `next_to_report` was released already, so the front is the oldest
        // unreported record.
        while self.first_id <= highest {
            let Some(slot) = self.packets.pop_front() else {
                break;
            };
            self.first_id += 1;
            if let Some(record) = slot {
                self.tracked -= 1;
                self.unindex(&record.report);
                if record.heard {
                    reports.push(record.report);
                }
            }
        }
        self.trim_front();
        self.next_to_report = highest + 1;

        reports
    }

    /// Drop records of packets sent before `cutoff` that were never acknowledged.
    ///
    /// Without this the history grows without bound on a lossy path: an unacknowledged packet is
    /// never reported and never removed, so nothing else would ever release it.
    pub fn prune_before(&mut self, cutoff: Instant) {
        // Records are in send order, so the stale ones are at the front: stop at the first one
        // sent at or after the cutoff.
        for i in 0..self.packets.len() {
            let Some(record) = self.packets[i].as_ref() else {
                continue;
            };
            if record.report.departure >= cutoff {
                break;
            }
            if record.report.arrived {
                continue;
            }
            if let Some(record) = self.packets[i].take() {
                self.tracked -= 1;
                self.unindex(&record.report);
            }
        }
        self.trim_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history_with_three_packets(now: Instant) -> History {
        let mut history = History::new();
        for sequence_number in 0..3u16 {
            history.add_outgoing(1, 100 + sequence_number, true, sequence_number, 1200, now);
        }
        history
    }

    #[test]
    fn feedback_for_an_unknown_packet_is_ignored() {
        let now = Instant::now();
        let mut history = History::new();

        assert_eq!(
            None,
            history.on_twcc_feedback(now, Acknowledgement::received(5, None, Ecn::NotEct)),
            "nothing was sent with that sequence number"
        );
        assert!(history.take_reports().is_empty());
    }

    #[test]
    fn twcc_feedback_matches_by_transport_wide_sequence_number() {
        let now = Instant::now();
        let mut history = history_with_three_packets(now);

        let rtt = history.on_twcc_feedback(
            now + Duration::from_millis(80),
            Acknowledgement::received(1, Some(Duration::from_millis(5)), Ecn::NotEct),
        );
        assert_eq!(Some(Duration::from_millis(80)), rtt);

        let reports = history.take_reports();
        assert_eq!(
            1,
            reports.len(),
            "packet 0, which no feedback named, is not reported (Qiao patch)"
        );
        assert_eq!(101, reports[0].rtp_sequence_number);
        assert!(reports[0].arrived);
        assert_eq!(1, history.len(), "packet 2 is still outstanding");
    }

    /// Qiao patch: a feedback lost on its way back leaves the packets it named unknown, not lost.
    /// Receivers name each packet once, so the next feedback starts after them.
    #[test]
    fn packets_whose_feedback_was_lost_are_not_reported_as_lost() {
        let now = Instant::now();
        let mut history = History::new();
        for seq in 0..6u16 {
            history.add_outgoing(1, 100 + seq, true, seq, 1200, now);
        }
        // The feedback naming 0..=2 was lost; the next names 3 (lost), 4 and 5 (arrived).
        history.on_twcc_feedback(now, Acknowledgement::lost(3));
        for seq in 4..6u16 {
            history.on_twcc_feedback(now, Acknowledgement::received(seq, None, Ecn::NotEct));
        }
        let reports = history.take_reports();
        assert_eq!(
            vec![(3, false), (4, true), (5, true)],
            reports
                .iter()
                .map(|r| (r.twcc_sequence_number, r.arrived))
                .collect::<Vec<_>>(),
            "one loss in three, not four in six"
        );
        assert!(history.is_empty(), "the unknown ones are released all the same");
    }

    /// RFC 8888 names packets by the stream's own sequence number, so two streams can use the
    /// same one and must not be confused.
    #[test]
    fn ccfb_feedback_matches_by_ssrc_and_sequence_number() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 500, false, 0, 1000, now);
        history.add_outgoing(2, 500, false, 0, 1000, now);

        history.on_ccfb_feedback(
            now + Duration::from_millis(50),
            2,
            Acknowledgement::received(500, Some(Duration::from_millis(1)), Ecn::Ce),
        );

        let reports = history.take_reports();
        assert_eq!(
            1,
            reports.len(),
            "stream 1's packet, which no feedback named, is not reported (Qiao patch)"
        );
        assert_eq!(2, reports[0].ssrc, "stream 2's was acknowledged");
        assert!(reports[0].arrived);
        assert_eq!(Ecn::Ce, reports[0].ecn);
    }

    /// Feedback naming a stream that never sent that sequence number must not match another
    /// stream that did. RFC 8888 numbers packets per stream, so the same sequence number is in
    /// use on every stream at once — matching on it alone would attribute one stream's arrival to
    /// another and corrupt both their delay estimates.
    ///
    /// Deterministic by construction: only stream 1 ever sent 500, so a lookup that ignores the
    /// SSRC can only match stream 1's packet, and a correct one can only fail.
    #[test]
    fn ccfb_feedback_for_a_sequence_number_another_stream_sent_does_not_match() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 500, false, 0, 1000, now);

        assert_eq!(
            None,
            history.on_ccfb_feedback(
                now + Duration::from_millis(50),
                2,
                Acknowledgement::received(500, Some(Duration::from_millis(1)), Ecn::NotEct),
            ),
            "stream 2 never sent sequence 500"
        );
        assert!(
            history.take_reports().is_empty(),
            "and nothing was acknowledged, so stream 1's packet is still outstanding"
        );
    }

    #[test]
    fn nothing_is_reported_until_something_is_acknowledged() {
        let now = Instant::now();
        let mut history = history_with_three_packets(now);

        assert!(
            history.take_reports().is_empty(),
            "sent but not yet acknowledged"
        );
        assert_eq!(3, history.len(), "and still tracked");
    }

    /// A packet reported once must not be reported again: congestion control would count it
    /// twice, and a loss re-reported later looks like a reordered arrival.
    #[test]
    fn packets_are_reported_once() {
        let now = Instant::now();
        let mut history = history_with_three_packets(now);

        for seq in 0..3u16 {
            history.on_twcc_feedback(now, Acknowledgement::received(seq, None, Ecn::NotEct));
        }
        assert_eq!(3, history.take_reports().len());
        assert!(history.take_reports().is_empty());
        assert!(history.is_empty(), "and released");
    }

    #[test]
    fn later_feedback_reports_only_what_follows() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 100, true, 0, 1200, now);
        history.add_outgoing(1, 101, true, 1, 1200, now);

        history.on_twcc_feedback(now, Acknowledgement::received(0, None, Ecn::NotEct));
        assert_eq!(1, history.take_reports().len());

        history.on_twcc_feedback(now, Acknowledgement::received(1, None, Ecn::NotEct));
        let reports = history.take_reports();
        assert_eq!(1, reports.len());
        assert_eq!(101, reports[0].rtp_sequence_number);
    }

    /// A packet reported as lost does not advance the reporting window on its own — otherwise a
    /// long run of losses would flush packets that have not been heard about yet.
    #[test]
    fn a_loss_alone_does_not_advance_the_window() {
        let now = Instant::now();
        let mut history = history_with_three_packets(now);

        history.on_twcc_feedback(now, Acknowledgement::lost(1));
        assert!(
            history.take_reports().is_empty(),
            "nothing has been acknowledged as arrived"
        );
        assert_eq!(3, history.len());
    }

    /// The round trip is measured between two instants on *this* endpoint's clock, unlike the
    /// arrival times, which are on the receiver's.
    #[test]
    fn the_round_trip_is_measured_locally() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 100, true, 0, 1200, now);

        assert_eq!(
            Some(Duration::from_millis(120)),
            history.on_twcc_feedback(
                now + Duration::from_millis(120),
                Acknowledgement::received(0, Some(Duration::from_secs(9999)), Ecn::NotEct),
            ),
            "the receiver's arrival clock does not affect it"
        );
    }

    /// Without pruning, an unacknowledged packet is never reported and never removed, so a lossy
    /// path grows the history without bound.
    /// A non-TWCC packet carries a meaningless `twcc_sequence_number` (whatever the caller
    /// passed, typically 0) and was never entered into the TWCC index. Removing that key when it
    /// is released evicts whichever *real* TWCC packet happens to hold it, and that packet's
    /// feedback can then never match.
    #[test]
    fn releasing_a_non_twcc_packet_does_not_evict_a_twcc_packets_index_entry() {
        let now = Instant::now();
        let mut history = History::new();

        // The non-TWCC packet is sent *first*, so reporting it does not sweep up the TWCC one:
        // the reporting window runs to the highest arrived id, and anything below it is released
        // regardless. Ordering this way isolates the index eviction from that.
        history.add_outgoing(2, 200, false, 0, 1200, now);
        // A real TWCC packet holding transport-wide sequence 0, sent after.
        history.add_outgoing(1, 100, true, 0, 1200, now);

        // Release the non-TWCC packet by reporting it.
        history.on_ccfb_feedback(now, 2, Acknowledgement::received(200, None, Ecn::NotEct));
        history.take_reports();

        assert!(
            history
                .on_twcc_feedback(now, Acknowledgement::received(0, None, Ecn::NotEct))
                .is_some(),
            "the TWCC packet is still matchable by its transport-wide sequence number"
        );
    }

    /// The same hazard on the pruning path.
    #[test]
    fn pruning_a_non_twcc_packet_does_not_evict_a_twcc_packets_index_entry() {
        let now = Instant::now();
        let mut history = History::new();

        // Old, non-TWCC, carrying the default 0 it never registered.
        history.add_outgoing(2, 200, false, 0, 1200, now);
        // Recent, a real TWCC packet holding transport-wide sequence 0.
        history.add_outgoing(1, 100, true, 0, 1200, now + Duration::from_secs(5));

        history.prune_before(now + Duration::from_secs(1));

        assert!(
            history
                .on_twcc_feedback(
                    now + Duration::from_secs(5),
                    Acknowledgement::received(0, None, Ecn::NotEct)
                )
                .is_some(),
            "pruning the unrelated packet must not take the TWCC index entry with it"
        );
    }

    /// An acknowledged packet that has not been reported yet must survive pruning, or the arrival
    /// is lost and congestion control never hears about it.
    #[test]
    fn an_acknowledged_packet_is_not_pruned_before_it_is_reported() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 100, true, 0, 1200, now);

        history.on_twcc_feedback(
            now + Duration::from_millis(50),
            Acknowledgement::received(0, None, Ecn::NotEct),
        );

        // Well past the cutoff, but it has been acknowledged and not yet collected.
        history.prune_before(now + Duration::from_secs(30));

        let reports = history.take_reports();
        assert_eq!(1, reports.len(), "the arrival survived to be reported");
        assert!(reports[0].arrived);
    }

    #[test]
    fn old_unacknowledged_packets_are_pruned() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 100, true, 0, 1200, now);
        history.add_outgoing(1, 101, true, 1, 1200, now + Duration::from_secs(5));

        history.prune_before(now + Duration::from_secs(1));

        assert_eq!(1, history.len(), "only the recent one survives");
        assert_eq!(
            None,
            history.on_twcc_feedback(now, Acknowledgement::received(0, None, Ecn::NotEct)),
            "and the pruned one is no longer matchable"
        );
    }
    /// Qiao patch tests: the rings that replaced the maps.
    #[test]
    fn transport_wide_numbers_match_across_their_wrap() {
        let now = Instant::now();
        let mut history = History::new();
        for (i, seq) in [65534u16, 65535, 0, 1].into_iter().enumerate() {
            history.add_outgoing(1, 100 + i as u16, true, seq, 1200, now);
        }
        assert!(history
            .on_twcc_feedback(now, Acknowledgement::lost(65534))
            .is_some());
        assert!(history
            .on_twcc_feedback(now, Acknowledgement::received(65535, None, Ecn::NotEct))
            .is_some());
        assert!(history
            .on_twcc_feedback(now, Acknowledgement::received(0, None, Ecn::NotEct))
            .is_some());
        let reports = history.take_reports();
        assert_eq!(
            vec![65534, 65535, 0],
            reports
                .iter()
                .map(|r| r.twcc_sequence_number)
                .collect::<Vec<_>>()
        );
        assert!(reports[2].arrived && reports[1].arrived && !reports[0].arrived);
        assert!(history
            .on_twcc_feedback(now, Acknowledgement::received(1, None, Ecn::NotEct))
            .is_some());
        assert_eq!(1, history.take_reports().len());
        assert!(history.is_empty());
    }

    /// Numbers another stream took (or a packet that was never recorded), and a non-TWCC packet
    /// between two TWCC ones, do not shift which record a number names.
    #[test]
    fn gaps_in_transport_wide_numbers_and_untagged_packets_do_not_shift_the_index() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 10, true, 5, 1200, now);
        history.add_outgoing(2, 70, false, 0, 300, now);
        history.add_outgoing(1, 11, true, 9, 1200, now);
        assert_eq!(
            None,
            history.on_twcc_feedback(now, Acknowledgement::received(7, None, Ecn::NotEct)),
            "7 was never sent here"
        );
        history.on_twcc_feedback(now, Acknowledgement::lost(5));
        history.on_twcc_feedback(now, Acknowledgement::received(9, None, Ecn::NotEct));
        let reports = history.take_reports();
        // The untagged packet is named by no TWCC feedback, so it is not reported.
        assert_eq!(
            vec![(1, 10, false), (1, 11, true)],
            reports
                .iter()
                .map(|r| (r.ssrc, r.rtp_sequence_number, r.arrived))
                .collect::<Vec<_>>()
        );
    }

    /// A transport-wide counter that starts over far from where it was is indexed afresh.
    #[test]
    fn a_restarted_transport_wide_counter_is_indexed_afresh() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 10, true, 40_000, 1200, now);
        history.add_outgoing(1, 11, true, 3, 1200, now);
        assert!(history
            .on_twcc_feedback(now, Acknowledgement::received(3, None, Ecn::NotEct))
            .is_some());
        let reports = history.take_reports();
        assert_eq!(
            vec![(3, true)],
            reports
                .iter()
                .map(|r| (r.twcc_sequence_number, r.arrived))
                .collect::<Vec<_>>(),
            "the packet before the restart can no longer be named, so it is released unreported"
        );
        assert!(history.is_empty());
    }

    /// The RFC 8888 index is built at the first such feedback, from what is outstanding then.
    #[test]
    fn ccfb_feedback_finds_packets_sent_before_the_first_one_arrived() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 500, true, 0, 1000, now);
        history.add_outgoing(1, 501, true, 1, 1000, now);
        history.on_ccfb_feedback(now, 1, Acknowledgement::received(500, None, Ecn::NotEct));
        history.on_ccfb_feedback(now, 1, Acknowledgement::lost(501));
        history.add_outgoing(1, 502, true, 2, 1000, now);
        history.on_ccfb_feedback(now, 1, Acknowledgement::received(502, None, Ecn::NotEct));
        let reports = history.take_reports();
        assert_eq!(
            vec![(500, true), (501, false), (502, true)],
            reports
                .iter()
                .map(|r| (r.rtp_sequence_number, r.arrived))
                .collect::<Vec<_>>()
        );
    }

    /// Over a long run with steady feedback and some losses, what is held stays bounded.
    #[test]
    fn a_long_run_holds_only_what_is_outstanding() {
        let start = Instant::now();
        let mut history = History::new();
        let mut seq = 0u16;
        for round in 0..2_000u32 {
            let now = start + Duration::from_millis(u64::from(round) * 100);
            for _ in 0..50 {
                history.add_outgoing(1, seq, true, seq, 1200, now);
                seq = seq.wrapping_add(1);
            }
            // Every packet but each tenth arrives; the feedback names them all.
            for back in (1..=50u16).rev() {
                let s = seq.wrapping_sub(back);
                let ack = if s % 10 == 0 {
                    Acknowledgement::lost(s)
                } else {
                    Acknowledgement::received(s, None, Ecn::NotEct)
                };
                history.on_twcc_feedback(now, ack);
            }
            let reports = history.take_reports();
            assert!(reports.len() >= 49, "round {round}: {}", reports.len());
            history.prune_before(now.checked_sub(Duration::from_secs(1)).unwrap_or(start));
        }
        assert!(history.len() <= 1, "{}", history.len());
        assert!(history.packets.len() <= 1 && history.twcc_ids.len() <= 51);
    }
}
