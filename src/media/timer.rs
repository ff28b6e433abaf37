//! The media thread's one timer, which wakes it at the instant it is set to and at no other.
//!
//! A tokio `Sleep` moved to a later instant is moved lazily: its entry stays in the timer wheel's
//! old slot, the thread wakes at the old instant, finds nothing due and sleeps again. The driver
//! moves its timer on most turns (the earliest connection deadline moves whenever one runs), and
//! at light load (2 × 2 × 3) the media thread's `epoll_wait` timed out about 75 times a second,
//! and the time driver woke the thread's own task through its eventfd about 90 times (`strace`).
//! On Linux the timer is a `timerfd` instead: setting it is one system call, it fires only when
//! it is due, and its firing is an ordinary readiness event (no timeouts, no eventfd writes in
//! the same measurement). Elsewhere it is a tokio `Sleep`.

#[cfg(target_os = "linux")]
pub use linux::WakeTimer;
#[cfg(not(target_os = "linux"))]
pub use portable::WakeTimer;

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::{Duration, Instant};

    use tokio::io::unix::AsyncFd;

    /// A one-shot monotonic `timerfd`, registered with the thread's reactor.
    pub struct WakeTimer {
        fd: AsyncFd<OwnedFd>,
        /// The instant it is armed for; `None` once it has fired or before it is set.
        armed: Option<Instant>,
    }

    impl WakeTimer {
        pub fn new() -> std::io::Result<WakeTimer> {
            // SAFETY: no pointers; the returned descriptor is checked before it is owned.
            let raw = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
            if raw < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `raw` is a descriptor we just created and nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: the `OwnedFd` keeps the descriptor open, and it is the same descriptor, for
            // as long as the `AsyncFd` that owns it.
            let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(std::io::Error::from)?;
            Ok(WakeTimer { fd, armed: None })
        }

        /// Arms the timer for `at` (at once if `at` has passed); a no-op if it is armed for `at`.
        pub fn set(&mut self, at: Instant) {
            if self.armed == Some(at) {
                return;
            }
            // Relative to now: `Instant` is CLOCK_MONOTONIC on Linux but does not expose it.
            // A zero value would disarm the timer, so a due instant is one nanosecond away.
            let after = at.saturating_duration_since(Instant::now()).max(Duration::from_nanos(1));
            let spec = libc::itimerspec {
                it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
                it_value: libc::timespec {
                    tv_sec: after.as_secs() as libc::time_t,
                    tv_nsec: after.subsec_nanos() as libc::c_long,
                },
            };
            // SAFETY: a valid timerfd and a valid itimerspec; the old value is not asked for.
            let r = unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
            // Setting a valid timer on a valid descriptor cannot fail; if it did, the timer keeps
            // its previous instant, and the next turn sets it again.
            if r == 0 {
                self.armed = Some(at);
            }
        }

        /// Waits until the timer fires. Cancel-safe: a firing that is not returned stays pending.
        pub async fn fired(&mut self) {
            loop {
                let Ok(mut guard) = self.fd.readable().await else {
                    // The reactor is gone (the runtime is shutting down): never fire.
                    return std::future::pending().await;
                };
                let mut count = [0u8; 8];
                // SAFETY: reads at most 8 bytes into an 8-byte buffer.
                let r = unsafe { libc::read(guard.get_inner().as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
                if r == 8 {
                    self.armed = None;
                    return;
                }
                // Not expired (re-armed since the readiness was seen): wait for the next edge.
                guard.clear_ready();
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod portable {
    use std::pin::Pin;
    use std::time::Instant;

    /// A tokio `Sleep` (moved lazily to later instants; see the module's documentation).
    pub struct WakeTimer {
        sleep: Pin<Box<tokio::time::Sleep>>,
        armed: Option<Instant>,
    }

    impl WakeTimer {
        pub fn new() -> std::io::Result<WakeTimer> {
            Ok(WakeTimer { sleep: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)), armed: None })
        }

        pub fn set(&mut self, at: Instant) {
            if self.armed != Some(at) {
                self.sleep.as_mut().reset(at.into());
                self.armed = Some(at);
            }
        }

        pub async fn fired(&mut self) {
            if self.armed.is_none() {
                return std::future::pending().await;
            }
            (&mut self.sleep).await;
            self.armed = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// How often this thread has slept so far (Linux's count of voluntary context switches).
    #[cfg(target_os = "linux")]
    fn sleeps() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn it_fires_at_the_instant_it_was_moved_to_and_not_at_the_one_before() {
        runtime().block_on(async {
            let mut t = WakeTimer::new().unwrap();
            let start = Instant::now();
            t.set(start + Duration::from_millis(20));
            // Moved later before it fires: it must not fire at 20 ms.
            t.set(start + Duration::from_millis(60));
            t.fired().await;
            let waited = start.elapsed();
            assert!(waited >= Duration::from_millis(60), "fired after {waited:?}");
        });
    }

    /// The reason for this module: a tokio `Sleep` moved later wakes the thread at the old
    /// instant for nothing; the timerfd wakes it once.
    #[cfg(target_os = "linux")]
    #[test]
    fn moved_later_it_wakes_the_thread_once_where_a_tokio_sleep_wakes_it_twice() {
        // The fewest of three tries: anything else on this thread can only add sleeps.
        let rt = runtime();
        let (mut ours, mut tokio_sleep) = (u64::MAX, u64::MAX);
        for _ in 0..3 {
            rt.block_on(async {
                let mut t = WakeTimer::new().unwrap();
                let before = sleeps();
                let start = Instant::now();
                t.set(start + Duration::from_millis(20));
                t.set(start + Duration::from_millis(60));
                t.fired().await;
                ours = ours.min(sleeps() - before);

                let start = Instant::now();
                let sleep = tokio::time::sleep_until((start + Duration::from_millis(20)).into());
                tokio::pin!(sleep);
                // Registered at 20 ms, as the driver's timer is before it moves.
                assert!(futures_util::poll!(sleep.as_mut()).is_pending());
                let before = sleeps();
                sleep.as_mut().reset((start + Duration::from_millis(60)).into());
                sleep.await;
                tokio_sleep = tokio_sleep.min(sleeps() - before);
            });
        }
        assert_eq!(ours, 1, "the timerfd slept once");
        assert!(tokio_sleep >= 2, "tokio's sleep woke {tokio_sleep} times");
    }

    #[test]
    fn moved_earlier_it_fires_at_the_earlier_instant_and_a_past_instant_fires_at_once() {
        runtime().block_on(async {
            let mut t = WakeTimer::new().unwrap();
            let start = Instant::now();
            t.set(start + Duration::from_secs(30));
            t.set(start + Duration::from_millis(10));
            tokio::time::timeout(Duration::from_secs(5), t.fired()).await.expect("fired at the earlier instant");
            assert!(start.elapsed() >= Duration::from_millis(10));
            t.set(Instant::now() - Duration::from_millis(1));
            tokio::time::timeout(Duration::from_secs(5), t.fired()).await.expect("a past instant fires at once");
        });
    }

    #[test]
    fn a_firing_interrupted_by_another_branch_is_still_seen_next_time() {
        runtime().block_on(async {
            let mut t = WakeTimer::new().unwrap();
            t.set(Instant::now() + Duration::from_millis(5));
            // Let it expire while nobody waits on it, as when a datagram's turn runs long.
            std::thread::sleep(Duration::from_millis(15));
            tokio::select! {
                biased;
                _ = std::future::ready(()) => {}
                _ = t.fired() => panic!("the other branch is ready first"),
            }
            tokio::time::timeout(Duration::from_secs(5), t.fired()).await.expect("the pending firing is returned");
        });
    }
}
