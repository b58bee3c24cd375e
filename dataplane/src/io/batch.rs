//! What the batched send paths share: grouping a turn's datagrams into runs
//! (one destination, equal sizes: one GSO send each) and the `msghdr`s,
//! iovecs, addresses and UDP_SEGMENT control messages describing them. The
//! io_uring backend submits the headers as `SendMsg` operations, the mmsg
//! backend hands them to `sendmmsg`.

use std::mem;

use socket2::SockAddr;

use crate::packet::Datagram;

/// Segments per GSO send; the kernel takes 64 on every version with UDP_SEGMENT.
pub(crate) const MAX_SEGMENTS: usize = 64;
/// A GSO send is one IP packet before segmentation: stay under 64 KiB.
pub(crate) const MAX_GSO_BYTES: usize = 65_000;

/// One send: datagrams `start..end` of the turn, to one destination.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op {
    pub start: usize,
    pub end: usize,
    pub gso: bool,
    pub tries: u8,
}

/// Group `out` into sends: runs to one destination of equal size (the last
/// may be shorter), as one GSO send each while `gso` is on.
pub(crate) fn plan_runs(out: &[Datagram], gso: bool, plan: &mut Vec<Op>) {
    plan.clear();
    let mut i = 0;
    while i < out.len() {
        let dest = out[i].destination;
        let size = out[i].contents.len();
        let mut j = i + 1;
        let mut bytes = size;
        while gso
            && size > 0
            && j < out.len()
            && j - i < MAX_SEGMENTS
            && out[j].destination == dest
            && out[j].contents.len() <= size
            && out[j - 1].contents.len() == size
            && bytes + out[j].contents.len() <= MAX_GSO_BYTES
        {
            bytes += out[j].contents.len();
            j += 1;
        }
        plan.push(Op {
            start: i,
            end: j,
            gso: j - i > 1,
            tries: 0,
        });
        i = j;
    }
}

/// The kernel or device refused to segment `op` (`errno`): turn GSO off,
/// saying so once, and queue the op's datagrams to go one by one.
pub(crate) fn gso_refused(gso: &mut bool, op: Op, errno: i32, retry: &mut Vec<Op>) {
    if *gso {
        tracing::warn!("UDP GSO refused (errno {errno}); sending datagrams one by one");
    }
    *gso = false;
    retry.extend((op.start..op.end).map(|s| Op {
        start: s,
        end: s + 1,
        gso: false,
        tries: op.tries,
    }));
}

/// A `msghdr`, whose raw pointers only ever point into memory owned by the
/// same backend.
#[repr(transparent)]
pub(crate) struct MsgHdr(pub libc::msghdr);

// SAFETY: the pointers inside a `MsgHdr` refer to memory owned by the same
// backend (or are null), which moves between threads as a whole; they are
// only used by the thread that owns the backend.
unsafe impl Send for MsgHdr {}

/// An `mmsghdr` (a `msghdr` and the kernel's sent-bytes result), with the
/// same ownership rule as [`MsgHdr`].
#[repr(transparent)]
pub(crate) struct MmsgHdr(pub libc::mmsghdr);

// SAFETY: as for `MsgHdr`.
unsafe impl Send for MmsgHdr {}

/// The UDP_SEGMENT control message: a `cmsghdr` and the segment size.
#[repr(C)]
#[derive(Clone, Copy)]
struct GsoCmsg {
    hdr: libc::cmsghdr,
    segment: u16,
    _pad: [u8; 6],
}

// SAFETY: CMSG_SPACE / CMSG_LEN are pure arithmetic on their argument.
const GSO_CMSG_SPACE: usize = unsafe { libc::CMSG_SPACE(2) } as usize;
// SAFETY: as above.
const GSO_CMSG_LEN: usize = unsafe { libc::CMSG_LEN(2) } as usize;
const _: () = assert!(mem::size_of::<GsoCmsg>() == GSO_CMSG_SPACE);
const _: () = assert!(mem::offset_of!(GsoCmsg, segment) == GSO_CMSG_LEN - 2);

impl GsoCmsg {
    fn new(segment: u16) -> Self {
        // SAFETY: cmsghdr is plain integers (and padding on some libcs); zero is valid.
        let mut hdr: libc::cmsghdr = unsafe { mem::zeroed() };
        hdr.cmsg_len = GSO_CMSG_LEN as _;
        hdr.cmsg_level = libc::SOL_UDP;
        hdr.cmsg_type = libc::UDP_SEGMENT;
        GsoCmsg {
            hdr,
            segment,
            _pad: [0; 6],
        }
    }
}

/// Send descriptors for a list of ops. Filled completely before any pointer
/// into them is taken, and cleared only after the kernel is done with them.
#[derive(Default)]
pub(crate) struct SendScratch {
    addrs: Vec<SockAddr>,
    cmsgs: Vec<GsoCmsg>,
    iovs: Vec<libc::iovec>,
    pub hdrs: Vec<MmsgHdr>,
}

// SAFETY: between uses the vectors are empty; during one their pointers refer
// to themselves and to datagrams owned by the same backend, used only by the
// thread that owns it.
unsafe impl Send for SendScratch {}

impl SendScratch {
    pub fn fill(&mut self, ops: &[Op], dgs: &[Datagram]) {
        self.clear();
        for op in ops {
            let run = &dgs[op.start..op.end];
            self.addrs.push(SockAddr::from(run[0].destination));
            self.cmsgs.push(GsoCmsg::new(
                run[0].contents.len().min(u16::MAX as usize) as u16
            ));
            self.iovs.extend(run.iter().map(|d| libc::iovec {
                iov_base: d.contents.as_ptr() as *mut libc::c_void,
                iov_len: d.contents.len(),
            }));
        }
        // No more pushes to `addrs`, `cmsgs`, `iovs`: pointers into them stay valid.
        let mut iov_at = 0;
        for (k, op) in ops.iter().enumerate() {
            let n = op.end - op.start;
            // SAFETY: an all-zero mmsghdr is valid: null pointers with zero lengths.
            let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
            let h = &mut m.msg_hdr;
            h.msg_name = self.addrs[k].as_ptr() as *mut libc::c_void;
            h.msg_namelen = self.addrs[k].len();
            // SAFETY: `iov_at + n <= iovs.len()`: the first loop pushed `n`
            // iovecs for each op, in this order.
            h.msg_iov = unsafe { self.iovs.as_mut_ptr().add(iov_at) };
            h.msg_iovlen = n as _;
            if op.gso {
                // SAFETY: `k < cmsgs.len()`: one was pushed per op.
                h.msg_control = unsafe { self.cmsgs.as_mut_ptr().add(k) } as *mut libc::c_void;
                h.msg_controllen = GSO_CMSG_SPACE as _;
            }
            self.hdrs.push(MmsgHdr(m));
            iov_at += n;
        }
    }

    pub fn clear(&mut self) {
        self.hdrs.clear();
        self.iovs.clear();
        self.cmsgs.clear();
        self.addrs.clear();
    }
}
