//! The XDP filter program: XSKMAP, program and the bpf link attaching it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::asm;
use super::bpf;

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Generic XDP: runs after the kernel built an skb. Works on every
    /// interface, costs an skb allocation per packet.
    Skb,
    /// Native XDP in the driver. On veth, attaching a native program turns
    /// on the veth's NAPI receive path, and redirect to an AF_XDP socket
    /// works (copy mode only; veth has no zero-copy). What needs an XDP
    /// program (or GRO) on the *peer* end is frames XDP_REDIRECTed into a
    /// veth through ndo_xdp_xmit; AF_XDP transmit in copy mode uses the
    /// normal xmit path and does not need it.
    Drv,
    /// Try native, fall back to generic.
    Auto,
}

/// The loaded filter program and its XSKMAP, attached to at most one
/// interface. Dropping it detaches the program.
///
/// The map is keyed by RX queue index: the AF_XDP socket bound to queue `q`
/// goes into slot `q`. Registering and unregistering take `&self`, so shards
/// can share one program (for example behind an `Arc`) and each register
/// its own socket.
pub struct XdpProgram {
    map: OwnedFd,
    prog: OwnedFd,
    link: Option<OwnedFd>,
    mode: Option<AttachMode>,
}

impl XdpProgram {
    /// Create the XSKMAP with `queues` slots (one past the highest RX queue
    /// a socket will be registered for: at least `queue_base` plus the
    /// number of shards) and load the filter for shards on queues from
    /// `queue_base` owning ports `port_lo..=port_hi` (shard `i`: port
    /// `port_lo + i`, queue `queue_base + i`). See `asm::xdp_udp_filter` for
    /// the steering rule. A matching datagram whose slot is empty is passed
    /// to the kernel.
    pub fn load(port_lo: u16, port_hi: u16, queue_base: u32, queues: u32) -> io::Result<Self> {
        Self::load_with_miss_action(port_lo, port_hi, queue_base, queues, bpf::XDP_PASS)
    }

    /// Like `load`, with a chosen action for matching packets when the map
    /// slot is empty. Only tests use anything but XDP_PASS.
    pub fn load_with_miss_action(
        port_lo: u16,
        port_hi: u16,
        queue_base: u32,
        queues: u32,
        miss: u32,
    ) -> io::Result<Self> {
        if port_lo > port_hi {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "port_lo > port_hi",
            ));
        }
        // No queue at or above `queues` can hold a socket, and the program
        // compares queues with signed 32-bit immediates.
        if queues <= queue_base || queues > i32::MAX as u32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("XSKMAP of {queues} slots cannot hold queue_base {queue_base}"),
            ));
        }
        let map = bpf::create_xskmap(queues).map_err(super::sys::ctx("BPF_MAP_CREATE"))?;
        let insns = asm::xdp_udp_filter(map.as_raw_fd(), port_lo, port_hi, queue_base, miss);
        let prog = bpf::load_xdp_prog(&insns, "xsk_udp_filter")?;
        Ok(XdpProgram {
            map,
            prog,
            link: None,
            mode: None,
        })
    }

    /// Put an AF_XDP socket into the slot for `queue`.
    pub fn register(&self, queue: u32, xsk_fd: RawFd) -> io::Result<()> {
        bpf::map_update_u32(&self.map, queue, xsk_fd as u32)
    }

    /// Empty the slot for `queue`. The map holds a reference to the socket
    /// in it, so a socket that is not unregistered keeps its queue claimed
    /// until the map itself is freed.
    pub fn unregister(&self, queue: u32) -> io::Result<()> {
        bpf::map_delete_u32(&self.map, queue)
    }

    /// Attach to `ifindex`. Fails if another XDP program is already attached
    /// (links never replace a program silently).
    pub fn attach(&mut self, ifindex: u32, mode: AttachMode) -> io::Result<AttachMode> {
        if self.link.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "already attached",
            ));
        }
        let try_mode = |m: AttachMode| -> io::Result<OwnedFd> {
            let flags = match m {
                AttachMode::Skb => bpf::XDP_FLAGS_SKB_MODE,
                _ => bpf::XDP_FLAGS_DRV_MODE,
            };
            bpf::link_create_xdp(&self.prog, ifindex, flags)
        };
        let (link, used) = match mode {
            AttachMode::Auto => match try_mode(AttachMode::Drv) {
                Ok(l) => (l, AttachMode::Drv),
                Err(_) => (try_mode(AttachMode::Skb)?, AttachMode::Skb),
            },
            m => (try_mode(m)?, m),
        };
        self.link = Some(link);
        self.mode = Some(used);
        Ok(used)
    }

    /// Detach from the interface. Closing the last descriptor of the link
    /// detaches it; BPF_LINK_DETACH first makes that immediate even if a
    /// forked child still holds a copy of the descriptor.
    pub fn detach(&mut self) -> io::Result<()> {
        if let Some(link) = self.link.take() {
            self.mode = None;
            let r = bpf::link_detach(&link);
            drop(link);
            return r;
        }
        Ok(())
    }

    /// The mode the program is attached in, if attached.
    pub fn mode(&self) -> Option<AttachMode> {
        self.mode
    }

    /// The kernel's id of the program (as `ip link` and `bpftool` show it).
    #[cfg(test)]
    pub fn id(&self) -> io::Result<u32> {
        bpf::prog_id(&self.prog)
    }

    /// Run the program once on `frame` (BPF_PROG_TEST_RUN); returns the
    /// XDP action. `rx` is the `(ifindex, queue)` the frame is seen as
    /// arriving on, looked up in the calling thread's network namespace;
    /// `None` means queue 0 of loopback.
    #[cfg(test)]
    pub fn test_run(&self, frame: &[u8], rx: Option<(u32, u32)>) -> io::Result<u32> {
        bpf::test_run(&self.prog, frame, rx)
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}
