//! A userspace network emulator: the kernel this project is tested on has no `sch_netem`, so
//! the impaired link is built here. The server runs in its own network namespace behind a TUN
//! device; a second TUN device in the test's namespace carries the clients' addresses; two
//! threads copy IP packets between them, one per direction, through a [`Link`] that applies
//! random loss, a fixed delay and optional per-destination bottlenecks.
//!
//! ```text
//!   test namespace                                          qiao-netem-<pid>-<n>
//!   clients 10.78.n.2, .3, …  ── qiaonet<n> ══ Link (up) ══▶ qiaosrv<n> ── server 10.78.n.1
//!                             ◀═════════════ Link (down) ══
//! ```
//!
//! [`Link`] and the wire classifier ([`classify`], [`WireTally`]) are pure — packets and
//! instants in, decisions out — and unit tested in `tests/netem.rs`. [`Netem`] is the thin IO
//! around them: namespaces and devices (`ip`, `setns`, `TUNSETIFF`), `poll` and `read`/`write`.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ════════════════════════════════ impairment (pure) ════════════════════════════════

/// A bottleneck toward one destination, like the access link of one subscriber: packets are
/// serialised at `bits_per_sec` (a token bucket whose burst is one packet) and wait in a
/// drop-tail queue of at most `queue_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateCap {
    /// The link's rate.
    pub bits_per_sec: u64,
    /// Bytes that may wait for the link (including the packet being sent); a packet that would
    /// exceed it is dropped.
    pub queue_bytes: usize,
}

impl RateCap {
    /// A cap whose queue holds `max_queue_delay` worth of bytes at its rate (how router buffers
    /// are usually sized).
    pub fn with_queue_delay(bits_per_sec: u64, max_queue_delay: Duration) -> RateCap {
        let queue_bytes = (bits_per_sec as u128 * max_queue_delay.as_nanos() / 8 / 1_000_000_000) as usize;
        RateCap { bits_per_sec, queue_bytes }
    }

    /// How long `bytes` take on this link.
    fn transmission_time(&self, bytes: usize) -> Duration {
        Duration::from_nanos((bytes as u128 * 8 * 1_000_000_000 / self.bits_per_sec.max(1) as u128) as u64)
    }
}

/// What one direction of the link does to packets. The default passes everything at once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Impairment {
    /// Probability (0.0 ..= 1.0) that a packet is lost, drawn independently per packet.
    pub loss: f64,
    /// One-way propagation delay added to every packet that is not lost.
    pub delay: Duration,
    /// Bottlenecks by destination address; packets to other addresses are not rate limited.
    pub caps: Vec<(Ipv4Addr, RateCap)>,
    /// Addresses whose packets random loss spares, as source or destination: one client's
    /// uplink lossy while another's stays clean.
    pub spared: Vec<Ipv4Addr>,
}

/// What happened to a packet given to [`Link::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It will be released at this instant.
    Scheduled(Instant),
    /// Random loss.
    Lost,
    /// Its destination's bottleneck queue was full.
    QueueFull,
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets given to the link.
    pub offered: u64,
    /// Dropped by random loss.
    pub lost: u64,
    /// Dropped because a bottleneck queue was full.
    pub queue_drops: u64,
    /// Delivered to the other side.
    pub released: u64,
}

/// A packet waiting for its release time.
struct Pending<P> {
    release: Instant,
    /// Arrival order: packets with the same release time leave in the order they came.
    order: u64,
    packet: P,
}

impl<P> PartialEq for Pending<P> {
    fn eq(&self, other: &Self) -> bool {
        (self.release, self.order) == (other.release, other.order)
    }
}
impl<P> Eq for Pending<P> {}
impl<P> PartialOrd for Pending<P> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<P> Ord for Pending<P> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.release, self.order).cmp(&(other.release, other.order))
    }
}

/// One direction of the emulated link: loss, then the destination's bottleneck (if any), then
/// the propagation delay. No IO and no clock: instants come in as arguments.
pub struct Link<P> {
    /// The impairment in force; changing it affects packets pushed afterwards.
    impairment: Impairment,
    /// Seeded, so a given sequence of packets meets the same losses on every run.
    rng: StdRng,
    /// When each capped destination's bottleneck has sent everything queued so far.
    busy_until: HashMap<Ipv4Addr, Instant>,
    /// Packets in flight, earliest release first (a timer queue, not a sleep per packet).
    pending: BinaryHeap<Reverse<Pending<P>>>,
    /// Next value of `Pending::order`.
    next_order: u64,
    /// What happened so far.
    stats: LinkStats,
}

impl<P> Link<P> {
    pub fn new(seed: u64) -> Link<P> {
        Link {
            impairment: Impairment::default(),
            rng: StdRng::seed_from_u64(seed),
            busy_until: HashMap::new(),
            pending: BinaryHeap::new(),
            next_order: 0,
            stats: LinkStats::default(),
        }
    }

    pub fn set_impairment(&mut self, impairment: Impairment) {
        self.impairment = impairment;
    }

    pub fn impairment(&self) -> &Impairment {
        &self.impairment
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// A packet of `len` bytes toward `dst` (None: not IPv4) enters the link at `now`.
    pub fn push(&mut self, now: Instant, dst: Option<Ipv4Addr>, len: usize, packet: P) -> Verdict {
        self.push_between(now, None, dst, len, packet)
    }

    /// Like `push`, for a packet from `src`.
    pub fn push_between(
        &mut self,
        now: Instant,
        src: Option<Ipv4Addr>,
        dst: Option<Ipv4Addr>,
        len: usize,
        packet: P,
    ) -> Verdict {
        self.stats.offered += 1;
        let spared = [src, dst].iter().flatten().any(|a| self.impairment.spared.contains(a));
        if self.impairment.loss > 0.0 && !spared && self.rng.gen::<f64>() < self.impairment.loss {
            self.stats.lost += 1;
            return Verdict::Lost;
        }
        let mut departure = now;
        let cap = dst.and_then(|d| self.impairment.caps.iter().find(|(a, _)| *a == d).map(|(a, c)| (*a, *c)));
        if let Some((addr, cap)) = cap {
            let busy = self.busy_until.get(&addr).copied().unwrap_or(now).max(now);
            let backlog_bytes = (busy - now).as_nanos() * cap.bits_per_sec as u128 / 8 / 1_000_000_000;
            if backlog_bytes + len as u128 > cap.queue_bytes as u128 {
                self.stats.queue_drops += 1;
                return Verdict::QueueFull;
            }
            departure = busy + cap.transmission_time(len);
            self.busy_until.insert(addr, departure);
        }
        let release = departure + self.impairment.delay;
        self.pending.push(Reverse(Pending { release, order: self.next_order, packet }));
        self.next_order += 1;
        Verdict::Scheduled(release)
    }

    /// When the next packet is due, if any is in flight.
    pub fn next_release(&self) -> Option<Instant> {
        self.pending.peek().map(|Reverse(p)| p.release)
    }

    /// The next packet due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<P> {
        if self.next_release()? > now {
            return None;
        }
        self.stats.released += 1;
        self.pending.pop().map(|Reverse(p)| p.packet)
    }
}

// ════════════════════════════════ what is on the wire (pure) ════════════════════════════════

/// The parts of an IPv4/UDP packet the emulator looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Udp<'a> {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: &'a [u8],
}

/// Destination of an IPv4 packet (None for anything else, e.g. IPv6 router solicitations).
pub fn ipv4_dst(packet: &[u8]) -> Option<Ipv4Addr> {
    (packet.len() >= 20 && packet[0] >> 4 == 4).then(|| Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]))
}

/// Source of an IPv4 packet.
pub fn ipv4_src(packet: &[u8]) -> Option<Ipv4Addr> {
    (packet.len() >= 20 && packet[0] >> 4 == 4).then(|| Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]))
}

/// Splits an unfragmented IPv4 UDP packet.
pub fn parse_ipv4_udp(packet: &[u8]) -> Option<Ipv4Udp<'_>> {
    if packet.len() < 20 || packet[0] >> 4 != 4 || packet[9] != 17 {
        return None;
    }
    let ihl = (packet[0] & 0x0f) as usize * 4;
    let udp = packet.get(ihl..)?;
    if udp.len() < 8 {
        return None;
    }
    let port = |i: usize| u16::from_be_bytes([udp[i], udp[i + 1]]);
    Some(Ipv4Udp {
        src: SocketAddrV4::new(ipv4_src(packet)?, port(0)),
        dst: SocketAddrV4::new(ipv4_dst(packet)?, port(2)),
        payload: &udp[8..],
    })
}

/// A UDP payload of a WebRTC connection, demultiplexed as RFC 7983 says. SRTP leaves the RTP
/// header in clear and SRTCP the first 8 bytes of a compound, so even encrypted media shows its
/// sequence numbers and the type of its first RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Stun,
    Dtls,
    Rtp {
        ssrc: u32,
        seq: u16,
        payload_type: u8,
    },
    /// Packet type and FMT/RC field of the compound's first RTCP packet (e.g. 205/1 a generic
    /// NACK, 206/1 a PLI, 200 a sender report).
    Rtcp {
        packet_type: u8,
        fmt: u8,
    },
    Other,
}

pub const RTCP_RTPFB: u8 = 205;
pub const RTCP_FMT_NACK: u8 = 1;

pub fn classify(payload: &[u8]) -> Wire {
    match payload.first() {
        Some(0..=3) => Wire::Stun,
        Some(20..=63) => Wire::Dtls,
        Some(128..=191) if payload.len() >= 8 => {
            let b1 = payload[1];
            if (192..=223).contains(&b1) {
                Wire::Rtcp { packet_type: b1, fmt: payload[0] & 0x1f }
            } else if payload.len() >= 12 {
                Wire::Rtp {
                    ssrc: u32::from_be_bytes([payload[8], payload[9], payload[10], payload[11]]),
                    seq: u16::from_be_bytes([payload[2], payload[3]]),
                    payload_type: b1 & 0x7f,
                }
            } else {
                Wire::Other
            }
        }
        _ => Wire::Other,
    }
}

/// Counts of one RTP stream (one SSRC) as it entered the link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowCount {
    pub packets: u64,
    /// UDP payload bytes.
    pub bytes: u64,
    /// Packets whose sequence number this SSRC had already sent: retransmissions without RTX.
    pub repeats: u64,
    /// Packets by payload type (an RTX stream has its own SSRC and payload type).
    pub payload_types: BTreeMap<u8, u64>,
}

/// What one client address exchanged in one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerWire {
    /// RTCP compounds by (packet type, FMT) of their first packet.
    pub rtcp: BTreeMap<(u8, u8), u64>,
    /// RTP by SSRC.
    pub rtp: BTreeMap<u32, FlowCount>,
}

impl PeerWire {
    /// Generic NACKs (RTPFB, FMT 1).
    pub fn nacks(&self) -> u64 {
        self.rtcp.get(&(RTCP_RTPFB, RTCP_FMT_NACK)).copied().unwrap_or(0)
    }

    /// RTP packets that repeated a sequence number of their SSRC.
    pub fn repeats(&self) -> u64 {
        self.rtp.values().map(|f| f.repeats).sum()
    }

    /// RTP bytes of these SSRCs.
    pub fn rtp_bytes(&self, ssrcs: impl IntoIterator<Item = u32>) -> u64 {
        ssrcs.into_iter().filter_map(|s| self.rtp.get(&s)).map(|f| f.bytes).sum()
    }

    /// The counts since `earlier` (a snapshot of the same peer).
    pub fn since(&self, earlier: &PeerWire) -> PeerWire {
        let rtcp = self
            .rtcp
            .iter()
            .map(|(k, v)| (*k, v - earlier.rtcp.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        let rtp = self
            .rtp
            .iter()
            .map(|(ssrc, f)| {
                let e = earlier.rtp.get(ssrc).cloned().unwrap_or_default();
                let payload_types = f
                    .payload_types
                    .iter()
                    .map(|(pt, n)| (*pt, n - e.payload_types.get(pt).copied().unwrap_or(0)))
                    .collect();
                let f = FlowCount {
                    packets: f.packets - e.packets,
                    bytes: f.bytes - e.bytes,
                    repeats: f.repeats - e.repeats,
                    payload_types,
                };
                (*ssrc, f)
            })
            .collect();
        PeerWire { rtcp, rtp }
    }
}

/// Sequence numbers one SSRC has sent: a bit per value.
struct SeenSeqs(Box<[u64; 1024]>);

impl SeenSeqs {
    /// Marks `seq`; true if it was already marked.
    fn mark(&mut self, seq: u16) -> bool {
        let (word, bit) = (seq as usize / 64, 1u64 << (seq % 64));
        let seen = self.0[word] & bit != 0;
        self.0[word] |= bit;
        seen
    }
}

/// Tallies one direction's UDP traffic per client address as it enters the link (before loss):
/// what each side *sent*.
#[derive(Default)]
pub struct WireTally {
    /// Counts by client address.
    peers: BTreeMap<Ipv4Addr, PeerWire>,
    /// Sequence numbers seen per (client address, SSRC), to recognise retransmissions.
    seen: HashMap<(Ipv4Addr, u32), SeenSeqs>,
}

impl WireTally {
    /// Counts a packet exchanged with the client at `client`.
    pub fn count(&mut self, client: Ipv4Addr, payload: &[u8]) {
        let peer = self.peers.entry(client).or_default();
        match classify(payload) {
            Wire::Rtcp { packet_type, fmt } => *peer.rtcp.entry((packet_type, fmt)).or_default() += 1,
            Wire::Rtp { ssrc, seq, payload_type } => {
                let seen = self.seen.entry((client, ssrc)).or_insert_with(|| SeenSeqs(Box::new([0; 1024])));
                let flow = peer.rtp.entry(ssrc).or_default();
                flow.packets += 1;
                flow.bytes += payload.len() as u64;
                *flow.payload_types.entry(payload_type).or_default() += 1;
                if seen.mark(seq) {
                    flow.repeats += 1;
                }
            }
            _ => {}
        }
    }

    pub fn snapshot(&self) -> BTreeMap<Ipv4Addr, PeerWire> {
        self.peers.clone()
    }
}

// ════════════════════════════════ what a receiver got (pure) ════════════════════════════════

/// How one received RTP stream fared over a window, after whatever repair happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Sequence numbers the sender used in the window: from the highest one received before the
    /// window (exclusive) to the highest one received by its end.
    pub expected: u64,
    /// Of those, how many arrived (by the time the report is made: repairs may come after the
    /// window).
    pub received: u64,
    /// Of those received, how many arrived after a higher sequence number had: a hole filled
    /// by a retransmission (the emulated link never reorders).
    pub late: u64,
    /// Lowest and highest unwrapped sequence number of the window (empty if `expected` is 0).
    pub range: (i64, i64),
    /// Where in the window the packets that never arrived were, as offsets from its start (at
    /// most 32): at its end they may only be late, spread through it the repair gave up.
    pub never: Vec<i64>,
}

impl RepairReport {
    /// Sequence numbers that never arrived.
    pub fn missing(&self) -> u64 {
        self.expected - self.received
    }

    /// `missing / expected` in percent.
    pub fn loss_pct(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            100.0 * self.missing() as f64 / self.expected as f64
        }
    }

    /// Whether the unwrapped sequence number `ext` (as from [`unwrap_arrivals`]) is in the window.
    pub fn contains(&self, ext: i64) -> bool {
        self.expected > 0 && (self.range.0..=self.range.1).contains(&ext)
    }
}

impl std::fmt::Display for RepairReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} packets arrived ({} never, {:.2} % loss, at offsets {:?} from sequence number {}), {} of them late (repaired)",
            self.received,
            self.expected,
            self.missing(),
            self.loss_pct(),
            self.never,
            self.range.0 as u16,
            self.late
        )
    }
}

/// Unwrapped sequence numbers, in arrival order (RFC 3550 A.1: the nearest candidate, so a step
/// back is a late packet, not a wrap).
pub fn unwrap_arrivals(seqs: impl IntoIterator<Item = u16>) -> Vec<i64> {
    let mut last: Option<(u16, i64)> = None;
    seqs.into_iter()
        .map(|seq| {
            let ext = match last {
                None => seq as i64,
                Some((prev, prev_ext)) => prev_ext + (seq.wrapping_sub(prev) as i16) as i64,
            };
            last = Some((seq, ext));
            ext
        })
        .collect()
}

/// The window `[from, to)` of a stream received as `arrivals` (arrival instant and sequence
/// number, in arrival order; arrivals after `to` count as late repairs of the window).
pub fn repair_report(arrivals: &[(Instant, u16)], from: Instant, to: Instant) -> RepairReport {
    let exts = unwrap_arrivals(arrivals.iter().map(|(_, s)| *s));
    let max_before = |t: Instant| arrivals.iter().zip(&exts).filter(|((at, _), _)| *at < t).map(|(_, e)| *e).max();
    let (Some(end), start) = (max_before(to), max_before(from)) else { return RepairReport::default() };
    let start = start.map_or_else(|| exts.iter().copied().min().unwrap_or(end), |s| s + 1);
    if end < start {
        return RepairReport::default();
    }
    let mut report = RepairReport { expected: (end - start + 1) as u64, range: (start, end), ..Default::default() };
    let mut seen = std::collections::HashSet::new();
    let mut highest = i64::MIN;
    for &ext in &exts {
        if (start..=end).contains(&ext) && seen.insert(ext) {
            report.received += 1;
            if ext < highest {
                report.late += 1;
            }
        }
        highest = highest.max(ext);
    }
    report.never = (start..=end).filter(|e| !seen.contains(e)).map(|e| e - start).take(32).collect();
    report
}

// ════════════════════════════════ namespaces, devices, threads ════════════════════════════════

/// The direction of a packet on the emulated link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Clients → server.
    Up,
    /// Server → clients.
    Down,
}

/// One direction's state, shared by its forwarding thread and the [`Netem`] handle.
struct DirState {
    link: Mutex<Link<Vec<u8>>>,
    wire: Mutex<WireTally>,
    /// Write end of the pipe that wakes the forwarding thread (new impairment, stop).
    wake: File,
}

/// Everything a forwarding thread needs.
struct Forwarder {
    dir: Dir,
    input: Arc<File>,
    output: Arc<File>,
    state: Arc<DirState>,
    wake: File,
    stop: Arc<AtomicBool>,
}

/// A server namespace and an impaired link to it; see the module documentation. Dropping it
/// stops the threads, removes both devices and deletes the namespace.
pub struct Netem {
    /// Picks the subnet 10.78.<index>.0/24 and the device names; unique among live instances on
    /// the machine (the root-side device name is the lock).
    pub index: u8,
    /// The network namespace the server runs in (`ip netns exec <netns> …`).
    pub netns: String,
    /// The server's address inside `netns`.
    pub server_ip: Ipv4Addr,
    /// Addresses in the test's namespace that clients bind their UDP sockets to: one per client,
    /// so that a cap can name one subscriber and the wire counters tell clients apart.
    pub client_ips: Vec<Ipv4Addr>,
    up: Arc<DirState>,
    down: Arc<DirState>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

const NETNS_PREFIX: &str = "qiao-netem-";

impl Netem {
    /// Creates the namespace, both devices and `clients` client addresses (10.78.n.2 …), and
    /// starts forwarding with no impairment. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN).
    pub fn new(clients: usize, seed: u64) -> io::Result<Netem> {
        assert!((1..=200).contains(&clients), "1..=200 client addresses");
        remove_stale_namespaces();
        let pid = std::process::id();
        let (index, client_tun) = (0..250u32)
            .map(|i| ((pid + i) % 250 + 1) as u8)
            .find_map(|n| match open_tun(&format!("qiaonet{n}")) {
                Ok(f) => Some(Ok((n, f))),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => None,
                Err(e) => Some(Err(e)),
            })
            .unwrap_or_else(|| Err(io::Error::other("no free qiaonet<n> device")))?;
        let netns = format!("{NETNS_PREFIX}{pid}-{index}");
        let server_ip = Ipv4Addr::new(10, 78, index, 1);
        let client_ips: Vec<Ipv4Addr> = (0..clients).map(|i| Ipv4Addr::new(10, 78, index, 2 + i as u8)).collect();
        let (client_dev, server_dev) = (format!("qiaonet{index}"), format!("qiaosrv{index}"));

        ip(&["netns", "add", &netns])?;
        let setup = || -> io::Result<File> {
            let server_tun = open_tun_in_netns(&netns, &server_dev)?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            ip(&["-n", &netns, "addr", "add", &format!("{server_ip}/24"), "dev", &server_dev])?;
            ip(&["-n", &netns, "link", "set", &server_dev, "up"])?;
            for a in &client_ips {
                ip(&["addr", "add", &format!("{a}/24"), "dev", &client_dev])?;
            }
            ip(&["link", "set", &client_dev, "up"])?;
            Ok(server_tun)
        };
        let server_tun = match setup() {
            Ok(t) => t,
            Err(e) => {
                let _ = ip(&["netns", "delete", &netns]);
                return Err(e);
            }
        };

        let stop = Arc::new(AtomicBool::new(false));
        let (client_tun, server_tun) = (Arc::new(client_tun), Arc::new(server_tun));
        let mut threads = Vec::new();
        let mut states = Vec::new();
        for (dir, input, output, seed) in [
            (Dir::Up, &client_tun, &server_tun, seed),
            (Dir::Down, &server_tun, &client_tun, seed ^ 0x9e37_79b9_7f4a_7c15),
        ] {
            let (wake_read, wake_write) = pipe()?;
            let state = Arc::new(DirState {
                link: Mutex::new(Link::new(seed)),
                wire: Mutex::new(WireTally::default()),
                wake: wake_write,
            });
            let f = Forwarder {
                dir,
                input: Arc::clone(input),
                output: Arc::clone(output),
                state: Arc::clone(&state),
                wake: wake_read,
                stop: Arc::clone(&stop),
            };
            threads.push(std::thread::Builder::new().name(format!("netem-{dir:?}-{index}")).spawn(move || f.run())?);
            states.push(state);
        }
        let down = states.pop().expect("down");
        let up = states.pop().expect("up");
        Ok(Netem { index, netns, server_ip, client_ips, up, down, stop, threads })
    }

    fn state(&self, dir: Dir) -> &DirState {
        match dir {
            Dir::Up => &self.up,
            Dir::Down => &self.down,
        }
    }

    /// Sets what `dir` does to packets from now on.
    pub fn set(&self, dir: Dir, impairment: Impairment) {
        let s = self.state(dir);
        s.link.lock().unwrap().set_impairment(impairment);
        let _ = (&s.wake).write(&[1]);
    }

    pub fn stats(&self, dir: Dir) -> LinkStats {
        self.state(dir).link.lock().unwrap().stats()
    }

    /// What each client address sent (`Up`) or was sent (`Down`) so far, counted before loss.
    pub fn wire(&self, dir: Dir) -> BTreeMap<Ipv4Addr, PeerWire> {
        self.state(dir).wire.lock().unwrap().snapshot()
    }

    /// `wire(dir)` for one client address (empty if it exchanged nothing).
    pub fn peer(&self, dir: Dir, client: Ipv4Addr) -> PeerWire {
        self.wire(dir).remove(&client).unwrap_or_default()
    }
}

impl Drop for Netem {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in [&self.up, &self.down] {
            let _ = (&s.wake).write(&[1]);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Each device goes with its last file descriptor, which only the (now finished)
        // forwarding threads held; the namespace must be deleted.
        let _ = ip(&["netns", "delete", &self.netns]);
    }
}

impl Forwarder {
    fn run(self) {
        let mut buf = vec![0u8; 65536];
        let mut drain = [0u8; 64];
        while !self.stop.load(Ordering::SeqCst) {
            let timeout_ms = match self.state.link.lock().unwrap().next_release() {
                None => -1,
                Some(t) => t.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000) as i32,
            };
            let mut fds = [
                libc::pollfd { fd: self.input.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                eprintln!("netem {:?}: poll: {}", self.dir, io::Error::last_os_error());
                return;
            }
            while (&self.wake).read(&mut drain).is_ok_and(|n| n > 0) {}
            loop {
                match (&*self.input).read(&mut buf) {
                    Ok(len) => self.accept(&buf[..len]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if !self.stop.load(Ordering::SeqCst) {
                            eprintln!("netem {:?}: read: {e}", self.dir);
                        }
                        return;
                    }
                }
            }
            let now = Instant::now();
            loop {
                let Some(packet) = self.state.link.lock().unwrap().pop_due(now) else { break };
                // A full or vanished device drops the packet, as a real link would.
                let _ = (&*self.output).write(&packet);
            }
        }
    }

    fn accept(&self, packet: &[u8]) {
        if let Some(udp) = parse_ipv4_udp(packet) {
            let client = match self.dir {
                Dir::Up => *udp.src.ip(),
                Dir::Down => *udp.dst.ip(),
            };
            self.state.wire.lock().unwrap().count(client, udp.payload);
        }
        self.state.link.lock().unwrap().push_between(
            Instant::now(),
            ipv4_src(packet),
            ipv4_dst(packet),
            packet.len(),
            packet.to_vec(),
        );
    }
}

/// Runs `ip ARGS…`, failing with its stderr.
fn ip(args: &[&str]) -> io::Result<()> {
    let out = std::process::Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// Deletes namespaces left by test processes that died without dropping their [`Netem`].
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix(NETNS_PREFIX).and_then(|r| r.split('-').next()) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "delete", &name]);
        }
    }
}

/// `struct ifreq` as TUNSETIFF reads it: a name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens a new TUN device `name` (IP packets, no packet-info header), non-blocking. The device
/// exists while the file is open; EBUSY if another live file holds that name.
fn open_tun(name: &str) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut req =
        IfReq { name: [0; libc::IFNAMSIZ], flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short, _pad: [0; 22] };
    assert!(name.len() < libc::IFNAMSIZ, "device name too long: {name}");
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is laid out as and outlives.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Opens a TUN device inside the named namespace: a thread enters it (`setns` changes only the
/// calling thread) and creates the device there; the file stays bound to that device after the
/// thread is gone.
fn open_tun_in_netns(netns: &str, name: &str) -> io::Result<File> {
    let (netns, name) = (netns.to_string(), name.to_string());
    std::thread::spawn(move || {
        let ns = File::open(format!("/run/netns/{netns}"))?;
        // SAFETY: plain syscall on a valid namespace file descriptor; affects this thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        open_tun(&name)
    })
    .join()
    .map_err(|_| io::Error::other("the setns thread panicked"))?
}

/// A non-blocking pipe: (read end, write end).
fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((File::from(r), File::from(w)))
}
