//! UDP in and out of the media socket without per-datagram allocations or system calls to spare.
//!
//! [`Receiver`] reads datagrams into one buffer and hands each out as its own `BytesMut`, split off
//! the buffer (the stack takes ownership); once the stack has dropped earlier ones, `reserve`
//! reuses the same allocation.
//!
//! Batched sends. One turn of the driver loop fans a packet out to many subscribers; sending
//! each datagram with its own `sendto(2)` costs a system call per copy. On Linux `sendmmsg(2)`
//! sends up to [`BATCH`] datagrams, to different addresses, in one call; elsewhere each datagram is
//! sent on its own.
//!
//! GSO (`UDP_SEGMENT`) is not used: it needs one destination and equal-sized segments, and an
//! SFU's output mixes destinations and sizes in every batch.
//!
//! Nothing here allocates: the message headers live on the stack for the duration of one call.

use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::BytesMut;
use tokio::net::UdpSocket;

/// Datagrams per system call (the kernel's limit is 1024; a driver turn rarely has more).
pub const BATCH: usize = 32;
/// Largest datagram we receive (WebRTC keeps packets under the path MTU; 2 KiB is ample).
const MAX_DATAGRAM: usize = 2048;
/// The receive buffer datagrams are split from.
const RX_BUFFER: usize = 64 * 1024;

/// Receives datagrams; each comes out as its own buffer, nothing stays behind in ours.
pub struct Receiver {
    buf: BytesMut,
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver { buf: BytesMut::with_capacity(RX_BUFFER) }
    }
}

/// One datagram read from the socket.
#[derive(Debug)]
pub struct Datagram {
    pub data: BytesMut,
    pub from: SocketAddr,
    /// When the kernel received it (`SO_TIMESTAMPNS`, wall clock), on Linux once
    /// [`enable_rx_timestamps`] was called: the start of the server's own delay for this packet,
    /// time spent waiting in the socket's queue included.
    pub received: Option<SystemTime>,
}

/// Asks the kernel to stamp every datagram it receives on `socket` (see [`Datagram::received`]).
/// Elsewhere than on Linux, and if the kernel refuses, datagrams come without a stamp.
pub fn enable_rx_timestamps(socket: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and an int option value of the right size.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
    Ok(())
}

impl Receiver {
    /// Waits for the next datagram. Cancel-safe: nothing is read unless it is returned.
    pub async fn recv(&mut self, socket: &UdpSocket) -> std::io::Result<Datagram> {
        loop {
            socket.readable().await?;
            match self.try_read(socket) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// The next datagram if one is queued already.
    pub fn try_recv(&mut self, socket: &UdpSocket) -> Option<Datagram> {
        self.try_read(socket).ok()
    }

    fn try_read(&mut self, socket: &UdpSocket) -> std::io::Result<Datagram> {
        self.buf.reserve(MAX_DATAGRAM);
        let buf = &mut self.buf;
        let (n, from, received) = socket.try_io(tokio::io::Interest::READABLE, || recv_one(socket, buf))?;
        Ok(Datagram { data: self.buf.split_to(n), from, received })
    }
}

/// Reads one datagram into `buf`'s spare capacity (and marks it filled); its source, and the
/// kernel's receive stamp when there is one.
#[cfg(target_os = "linux")]
fn recv_one(socket: &UdpSocket, buf: &mut BytesMut) -> std::io::Result<(usize, SocketAddr, Option<SystemTime>)> {
    use std::os::fd::AsRawFd;
    let spare = buf.spare_capacity_mut();
    let mut iov = libc::iovec { iov_base: spare.as_mut_ptr() as *mut libc::c_void, iov_len: spare.len() };
    // Room for one timespec control message (aligned as cmsghdr wants).
    let mut control = [0u64; 8];
    let mut stamp = None;
    // SAFETY: `try_init` hands us zeroed storage for a socket address and its length; recvmsg
    // writes at most that many bytes there, at most `iov_len` bytes into the spare capacity it
    // points to, and at most `msg_controllen` bytes of control messages into `control`; the cmsg
    // macros walk only within `msg_controllen`.
    let (n, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = storage as *mut libc::c_void;
            msg.msg_namelen = *len;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            let r = libc::recvmsg(socket.as_raw_fd(), &mut msg, 0);
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            *len = msg.msg_namelen;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    stamp =
                        Some(SystemTime::UNIX_EPOCH + std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            Ok(r as usize)
        })?
    };
    let from = addr
        .as_socket()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an IP source address"))?;
    // SAFETY: recvmsg initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok((n, from, stamp))
}

#[cfg(not(target_os = "linux"))]
fn recv_one(socket: &UdpSocket, buf: &mut BytesMut) -> std::io::Result<(usize, SocketAddr, Option<SystemTime>)> {
    let len = buf.len();
    let (n, from) = socket.try_recv_buf_from(buf)?;
    debug_assert_eq!(buf.len(), len + n);
    Ok((n, from, None))
}

/// What one [`send_all`] did, for the driver's counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub datagrams: u64,
    pub syscalls: u64,
    /// Datagrams the kernel refused (e.g. no route); each is skipped, the rest still go.
    pub errors: u64,
}

/// Sends every datagram, waiting for the socket to be writable when its buffer is full.
/// `on_error` is told about each refused datagram.
pub async fn send_all(
    socket: &UdpSocket,
    mut datagrams: &[(SocketAddr, BytesMut)],
    mut on_error: impl FnMut(SocketAddr, &std::io::Error),
) -> Sent {
    let mut sent = Sent::default();
    while !datagrams.is_empty() {
        let calls = &mut sent.syscalls;
        let attempt = socket.try_io(tokio::io::Interest::WRITABLE, || {
            *calls += 1;
            send_some(socket, datagrams)
        });
        match attempt {
            Ok(n) => {
                sent.datagrams += n as u64;
                datagrams = &datagrams[n..];
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    return sent;
                }
            }
            Err(e) => {
                // The first datagram of the batch was refused: skip it, send the others.
                sent.errors += 1;
                on_error(datagrams[0].0, &e);
                datagrams = &datagrams[1..];
            }
        }
    }
    sent
}

/// Sends a prefix of `datagrams` (at least one, unless it fails) and says how many went.
#[cfg(target_os = "linux")]
fn send_some(socket: &UdpSocket, datagrams: &[(SocketAddr, BytesMut)]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let n = datagrams.len().min(BATCH);
    // SAFETY: all-zero is a valid value of these C structs (null pointers, zero lengths).
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, (to, bytes)) in datagrams[..n].iter().enumerate() {
        let addr = socket2::SockAddr::from(*to);
        // SAFETY: `addr` holds `addr.len()` initialised bytes of a sockaddr, which fit in a
        // sockaddr_storage by definition.
        unsafe {
            std::ptr::copy_nonoverlapping(
                addr.as_ptr() as *const u8,
                &mut names[i] as *mut libc::sockaddr_storage as *mut u8,
                addr.len() as usize,
            );
        }
        iovs[i] = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
        let h = &mut msgs[i].msg_hdr;
        h.msg_name = &mut names[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
        h.msg_namelen = addr.len();
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1;
    }
    // SAFETY: `msgs[..n]` point into `names` and `iovs`, which outlive the call, and the iovecs
    // point into `datagrams`, borrowed for its duration; the kernel only reads them.
    let r = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[cfg(not(target_os = "linux"))]
fn send_some(socket: &UdpSocket, datagrams: &[(SocketAddr, BytesMut)]) -> std::io::Result<usize> {
    let (to, bytes) = &datagrams[0];
    socket.try_send_to(bytes, *to).map(|_| 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real sockets on loopback: every datagram arrives, in order, at its own destination, and
    /// a batch larger than one system call's worth is split.
    #[tokio::test]
    async fn a_batch_reaches_every_destination_in_order() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let total = BATCH + 8;
        let batch: Vec<(SocketAddr, BytesMut)> =
            (0..total).map(|i| (if i % 2 == 0 { aa } else { ba }, BytesMut::from(&[i as u8; 3][..]))).collect();
        let sent = send_all(&tx, &batch, |_, e| panic!("{e}")).await;
        assert_eq!(sent.datagrams, total as u64);
        assert_eq!(sent.errors, 0);
        if cfg!(target_os = "linux") {
            assert_eq!(sent.syscalls, 2, "{total} datagrams in two calls");
        }
        let mut buf = [0u8; 16];
        for (sock, first) in [(&a, 0usize), (&b, 1)] {
            for i in (first..total).step_by(2) {
                let n = sock.recv(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], &[i as u8; 3]);
            }
        }
    }

    /// Datagrams of different sizes, queued together, come out one by one, each exactly as sent,
    /// however many are read in one turn.
    #[tokio::test]
    async fn queued_datagrams_come_out_whole_and_separate() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let sent: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 1 + (i as usize * 37) % 1400]).collect();
        let batch: Vec<(SocketAddr, BytesMut)> = sent.iter().map(|d| (to, BytesMut::from(&d[..]))).collect();
        send_all(&tx, &batch, |_, e| panic!("{e}")).await;
        let mut r = Receiver::default();
        let mut got = Vec::new();
        let mut held = Vec::new(); // the stack may keep datagrams while later ones arrive
        while got.len() < sent.len() {
            let d = r.recv(&rx).await.unwrap();
            assert_eq!(d.from, tx.local_addr().unwrap());
            got.push(d.data.to_vec());
            held.push(d.data);
            for _ in 0..3 {
                let Some(d) = r.try_recv(&rx) else { break };
                got.push(d.data.to_vec());
                held.push(d.data);
            }
        }
        assert_eq!(got, sent);
        assert!(held.iter().zip(&sent).all(|(h, s)| h[..] == s[..]), "held buffers were not overwritten");
    }

    /// With receive stamps on, every datagram says when the kernel took it: after it was sent
    /// and before it was read.
    #[tokio::test]
    async fn a_stamped_socket_says_when_the_kernel_received_each_datagram() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        enable_rx_timestamps(&rx).unwrap();
        let before = SystemTime::now();
        tx.send_to(b"stamp me", rx.local_addr().unwrap()).await.unwrap();
        let d = Receiver::default().recv(&rx).await.unwrap();
        let after = SystemTime::now();
        assert_eq!(&d.data[..], b"stamp me");
        if cfg!(target_os = "linux") {
            let at = d.received.expect("a receive stamp");
            assert!(before <= at && at <= after, "{before:?} <= {at:?} <= {after:?}");
        }
    }

    #[tokio::test]
    async fn a_refused_datagram_is_skipped_and_the_rest_still_go() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        // An IPv6 destination on an IPv4 socket is refused by the kernel.
        let bad: SocketAddr = "[::1]:9".parse().unwrap();
        let batch = vec![(bad, BytesMut::from(&b"x"[..])), (to, BytesMut::from(&b"ok"[..]))];
        let mut refused = Vec::new();
        let sent = send_all(&tx, &batch, |a, _| refused.push(a)).await;
        assert_eq!((sent.datagrams, sent.errors), (1, 1));
        assert_eq!(refused, [bad]);
        let mut buf = [0u8; 8];
        let n = rx.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ok");
    }
}
