//! A pass-through interceptor with hooks. Most interceptors Qiao (and its tests) add to the
//! `rtc` chain only look at, mark or rewrite packets as they pass; the queueing that the sans-IO
//! `Protocol` needs is the same every time and lives here once. Implement [`TapHooks`] and
//! register `Tap::new(hooks)` at a slot.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Interceptor, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// What a [`Tap`] does to the packets passing through it; every hook defaults to nothing.
pub trait TapHooks: Send + Sync + 'static {
    /// An inbound packet on its way to the application: may be marked or rewritten.
    fn on_read(&mut self, _msg: &mut TaggedPacket) {}
    /// An outbound packet on its way to the wire: may be marked or rewritten.
    fn on_write(&mut self, _msg: &mut TaggedPacket) {}
    /// A stream this side sends has started.
    fn on_bind_local(&mut self, _info: &StreamInfo) {}
    /// A stream this side sends has ended.
    fn on_unbind_local(&mut self, _info: &StreamInfo) {}
}

/// Passes every packet through unchanged but for what its hooks do.
pub struct Tap<H> {
    hooks: H,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl<H: TapHooks> Tap<H> {
    pub fn new(hooks: H) -> Tap<H> {
        Tap { hooks, read: VecDeque::new(), write: VecDeque::new() }
    }
}

impl<H: TapHooks> Protocol<TaggedPacket, TaggedPacket, ()> for Tap<H> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        self.hooks.on_read(&mut msg);
        self.read.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }
    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        self.hooks.on_write(&mut msg);
        self.write.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Error> {
        Ok(())
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl<H: TapHooks> Interceptor for Tap<H> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.hooks.on_bind_local(info);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.hooks.on_unbind_local(info);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
    /// The hook, without the queue: a forwarded packet is not copied into and out of it
    /// (`vendor/README.md`, the direct write path).
    fn write_in_place(&mut self, msg: &mut TaggedPacket) -> bool {
        if !self.write.is_empty() {
            return false;
        }
        self.hooks.on_write(msg);
        true
    }
}
