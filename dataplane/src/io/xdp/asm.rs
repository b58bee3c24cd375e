//! A tiny eBPF assembler, just enough for the XDP UDP port filter.
//!
//! Instructions use the kernel's `struct bpf_insn` layout. Jumps refer to
//! labels and are resolved in `finish`, so the program text can be edited
//! without recounting offsets by hand.

/// One eBPF instruction, laid out like `struct bpf_insn` on a
/// little-endian host (dst register in the low nibble of `regs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Insn {
    /// Opcode: class, size or operation, and operand source.
    pub code: u8,
    /// Destination register (low nibble) and source register (high nibble).
    pub regs: u8,
    /// Memory offset or jump displacement.
    pub off: i16,
    /// Immediate operand.
    pub imm: i32,
}

// Instruction classes.
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_ALU: u8 = 0x04;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
// Sizes.
const BPF_W: u8 = 0x00;
const BPF_H: u8 = 0x08;
const BPF_B: u8 = 0x10;
const BPF_DW: u8 = 0x18;
// Modes.
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
// ALU operations.
const BPF_ADD: u8 = 0x00;
const BPF_SUB: u8 = 0x10;
const BPF_AND: u8 = 0x50;
const BPF_LSH: u8 = 0x60;
const BPF_MOV: u8 = 0xb0;
const BPF_END: u8 = 0xd0;
const BPF_TO_BE: u8 = 0x08;
// Jump operations.
const BPF_JA: u8 = 0x00;
const BPF_JEQ: u8 = 0x10;
const BPF_JGT: u8 = 0x20;
const BPF_JSET: u8 = 0x40;
const BPF_JNE: u8 = 0x50;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;
const BPF_JLT: u8 = 0xa0;
// Operand source.
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;

const BPF_PSEUDO_MAP_FD: u8 = 1;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Label(usize);

#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: (dst & 0x0f) | (src << 4),
            off,
            imm,
        });
    }

    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Bind `l` to the next instruction.
    fn bind(&mut self, l: Label) {
        assert!(self.labels[l.0].is_none(), "label bound twice");
        self.labels[l.0] = Some(self.insns.len());
    }

    fn mov64_reg(&mut self, dst: u8, src: u8) {
        self.push(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0);
    }
    fn mov64_imm(&mut self, dst: u8, imm: i32) {
        self.push(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm);
    }
    fn add64_imm(&mut self, dst: u8, imm: i32) {
        self.push(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm);
    }
    fn sub64_imm(&mut self, dst: u8, imm: i32) {
        self.push(BPF_ALU64 | BPF_SUB | BPF_K, dst, 0, 0, imm);
    }
    fn add64_reg(&mut self, dst: u8, src: u8) {
        self.push(BPF_ALU64 | BPF_ADD | BPF_X, dst, src, 0, 0);
    }
    fn and64_imm(&mut self, dst: u8, imm: i32) {
        self.push(BPF_ALU64 | BPF_AND | BPF_K, dst, 0, 0, imm);
    }
    fn lsh64_imm(&mut self, dst: u8, imm: i32) {
        self.push(BPF_ALU64 | BPF_LSH | BPF_K, dst, 0, 0, imm);
    }
    /// Convert the low `bits` of `dst` from big-endian to host order.
    fn be(&mut self, dst: u8, bits: i32) {
        self.push(BPF_ALU | BPF_END | BPF_TO_BE, dst, 0, 0, bits);
    }
    /// dst = *(size *)(src + off)
    fn ldx(&mut self, size: u8, dst: u8, src: u8, off: i16) {
        self.push(BPF_LDX | BPF_MEM | size, dst, src, off, 0);
    }
    /// Load a map file descriptor; the verifier turns it into a map pointer.
    fn ld_map_fd(&mut self, dst: u8, fd: i32) {
        self.push(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd);
        self.push(0, 0, 0, 0, 0);
    }
    fn jmp_imm(&mut self, op: u8, dst: u8, imm: i32, target: Label) {
        self.fixups.push((self.insns.len(), target));
        self.push(BPF_JMP | op | BPF_K, dst, 0, 0, imm);
    }
    fn jmp_reg(&mut self, op: u8, dst: u8, src: u8, target: Label) {
        self.fixups.push((self.insns.len(), target));
        self.push(BPF_JMP | op | BPF_X, dst, src, 0, 0);
    }
    fn ja(&mut self, target: Label) {
        self.fixups.push((self.insns.len(), target));
        self.push(BPF_JMP | BPF_JA, 0, 0, 0, 0);
    }
    fn call(&mut self, helper: i32) {
        self.push(BPF_JMP | BPF_CALL, 0, 0, 0, helper);
    }
    fn exit(&mut self) {
        self.push(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    }

    /// Resolve jump targets. Panics on an unbound label, which is a bug in
    /// the program text and never depends on input.
    fn finish(mut self) -> Vec<Insn> {
        for (at, l) in &self.fixups {
            let target = self.labels[l.0].expect("unbound label");
            // Jump offsets are relative to the instruction after the jump.
            let off = target as isize - (*at as isize + 1);
            self.insns[*at].off = i16::try_from(off).expect("jump too far");
        }
        self.insns
    }
}

/// Helper id of bpf_redirect_map in the kernel's helper table.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;

/// Build the XDP filter: redirect a UDP datagram (IPv4 or IPv6) to the
/// XSKMAP slot of the queue it arrived on only when its destination port
/// belongs to that queue, and pass everything else to the kernel stack.
///
/// Shard `i` owns UDP port `port_lo + i` and the AF_XDP socket on queue
/// `queue_base + i`. An AF_XDP socket only receives frames from its own
/// queue, so a datagram is redirected only when
/// `dport - port_lo == rx_queue_index - queue_base` (and `dport` lies in
/// `[port_lo, port_hi]`, `rx_queue_index >= queue_base`). A datagram for
/// shard `i` that the NIC steered to another queue goes to the kernel,
/// where shard `i`'s regular UDP socket on the same port receives it; it is
/// neither lost nor delivered to the wrong shard.
///
/// `miss_action` is what bpf_redirect_map returns when no socket sits in the
/// slot; production code uses XDP_PASS so traffic is not black-holed while no
/// socket is bound. Tests use XDP_DROP to tell "matched" from "passed".
///
/// Not redirected (passed): VLAN-tagged frames, IPv4 fragments (the kernel
/// reassembles them), IPv6 with extension headers before UDP.
pub fn xdp_udp_filter(
    map_fd: i32,
    port_lo: u16,
    port_hi: u16,
    queue_base: u32,
    miss_action: u32,
) -> Vec<Insn> {
    // Immediates are sign-extended 32-bit values; a queue_base above
    // i32::MAX would compare as a huge unsigned number and match nothing.
    let queue_base = i32::try_from(queue_base).unwrap_or(i32::MAX);
    let mut a = Asm::new();
    let pass = a.label();
    let ipv4 = a.label();
    let ipv6 = a.label();
    let udp = a.label();

    // r6 = ctx; r2 = data; r3 = data_end
    a.mov64_reg(R6, R1);
    a.ldx(BPF_W, R2, R1, 0);
    a.ldx(BPF_W, R3, R1, 4);
    // Ethernet header present?
    a.mov64_reg(R4, R2);
    a.add64_imm(R4, 14);
    a.jmp_reg(BPF_JGT, R4, R3, pass);
    // EtherType, loaded as little-endian u16 so the constants are swapped.
    a.ldx(BPF_H, R5, R2, 12);
    a.jmp_imm(BPF_JEQ, R5, 0x0008, ipv4); // 0x0800
    a.jmp_imm(BPF_JEQ, R5, 0xdd86, ipv6); // 0x86dd
    a.ja(pass);

    // IPv4: fixed part of the header must be present.
    a.bind(ipv4);
    a.mov64_reg(R4, R2);
    a.add64_imm(R4, 14 + 20);
    a.jmp_reg(BPF_JGT, R4, R3, pass);
    a.ldx(BPF_B, R5, R2, 14 + 9); // protocol
    a.jmp_imm(BPF_JNE, R5, 17, pass);
    // Fragments (MF or offset != 0): leave them to the kernel. Loaded as a
    // little-endian u16, the big-endian mask 0x3fff becomes 0xff3f.
    a.ldx(BPF_H, R5, R2, 14 + 6);
    a.jmp_imm(BPF_JSET, R5, 0xff3f, pass);
    // Header length from IHL, so options are skipped correctly.
    a.ldx(BPF_B, R5, R2, 14);
    a.and64_imm(R5, 0x0f);
    a.lsh64_imm(R5, 2);
    a.jmp_imm(BPF_JLT, R5, 20, pass);
    a.add64_reg(R2, R5);
    a.add64_imm(R2, 14); // r2 -> UDP header
    a.ja(udp);

    // IPv6: fixed header, next header must be UDP directly.
    a.bind(ipv6);
    a.mov64_reg(R4, R2);
    a.add64_imm(R4, 14 + 40);
    a.jmp_reg(BPF_JGT, R4, R3, pass);
    a.ldx(BPF_B, R5, R2, 14 + 6);
    a.jmp_imm(BPF_JNE, R5, 17, pass);
    a.add64_imm(R2, 14 + 40);

    // UDP header present? Then compare the destination port.
    a.bind(udp);
    a.mov64_reg(R4, R2);
    a.add64_imm(R4, 8);
    a.jmp_reg(BPF_JGT, R4, R3, pass);
    a.ldx(BPF_H, R5, R2, 2);
    a.be(R5, 16);
    a.jmp_imm(BPF_JLT, R5, port_lo as i32, pass);
    a.jmp_imm(BPF_JGT, R5, port_hi as i32, pass);
    // r5 = dport - port_lo: the shard the port belongs to.
    a.sub64_imm(R5, port_lo as i32);
    // r2 = ctx->rx_queue_index (kept for the map key); r4 = r2 - queue_base:
    // the shard the queue belongs to. Queues below queue_base belong to none.
    a.ldx(BPF_W, R2, R6, 16);
    a.jmp_imm(BPF_JLT, R2, queue_base, pass);
    a.mov64_reg(R4, R2);
    a.sub64_imm(R4, queue_base);
    a.jmp_reg(BPF_JNE, R5, R4, pass);
    // return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, miss_action)
    a.ld_map_fd(R1, map_fd);
    a.mov64_imm(R3, miss_action as i32);
    a.call(BPF_FUNC_REDIRECT_MAP);
    a.exit();

    a.bind(pass);
    a.mov64_imm(R0, 2); // XDP_PASS
    a.exit();
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_kernel() {
        let mut a = Asm::new();
        a.mov64_imm(R0, 2);
        a.exit();
        let p = a.finish();
        // b7 00 00 00 02 00 00 00 / 95 00 00 00 00 00 00 00
        assert_eq!(
            p[0],
            Insn {
                code: 0xb7,
                regs: 0,
                off: 0,
                imm: 2
            }
        );
        assert_eq!(
            p[1],
            Insn {
                code: 0x95,
                regs: 0,
                off: 0,
                imm: 0
            }
        );
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }

    #[test]
    fn resolves_jumps() {
        let mut a = Asm::new();
        let l = a.label();
        a.jmp_imm(BPF_JEQ, R1, 0, l); // 0
        a.mov64_imm(R0, 1); // 1
        a.bind(l);
        a.exit(); // 2
        let p = a.finish();
        assert_eq!(p[0].off, 1);
        assert_eq!(p[0].regs, 1);
    }

    #[test]
    fn filter_size() {
        let p = xdp_udp_filter(3, 1000, 2000, 0, 2);
        assert!(p.len() < 64, "{} instructions", p.len());
        // ld_imm64 carries the map fd with the pseudo source register.
        assert!(p
            .iter()
            .any(|i| i.code == 0x18 && i.regs == 0x11 && i.imm == 3));
    }
}
