//! The classic BPF program the kernel runs on every frame before the responder sees it, so
//! that a speaker spends nothing on address resolution for addresses it has no business with.
//!
//! Without it, the raw socket copied every frame of the interface to user space and the
//! responder parsed every ARP request on the segment: under a flood of 100,000 requests/s
//! for one address, each non-owner spent 13-18 % of a core throwing them away. The program
//! passes:
//! - ARP whose target or sender is one of `v4` (requests to answer, claims to notice);
//! - Neighbor Solicitations and Advertisements whose target is one of `v6`;
//! - anything ARP or IPv6-ICMPv6-NDP the program cannot read to the end, or whose ARP header is
//!   not Ethernet/IPv4: the parser then drops it and counts it as malformed, as before;
//!
//! and drops the rest. Every jump is local (a compare skips only the `ret` after it, or the
//! rest of one address's block), so the program stays within the 8-bit jump offsets of
//! classic BPF however many addresses it holds; past [`MAX_INSTRUCTIONS`] it falls back to
//! passing all ARP and NDP ([`Program::lists_addresses`] says which).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// One instruction, as `struct sock_filter` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The kernel's limit (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;

// Instruction classes and modes (linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_W_LEN: u16 = 0x80;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

/// Instructions per listed IPv4 address (target and sender, two each) and per IPv6 address
/// (four words, two each, and the accept); the fewest a listing program has besides.
const PER_IPV4_ADDRESS: usize = 4;
#[cfg(test)]
const PER_IPV6_ADDRESS: usize = 9;
const LISTING_BASE: usize = 31;

/// Accepted frames are passed whole.
const ACCEPT: u32 = u32::MAX;
const DROP: u32 = 0;

const ETHERTYPE_ARP: u32 = 0x0806;
const ETHERTYPE_IPV6: u32 = 0x86dd;
const ICMPV6: u32 = 58;
const NEIGHBOR_SOLICITATION: u32 = 135;
const NEIGHBOR_ADVERTISEMENT: u32 = 136;

// Offsets in an Ethernet frame.
const ETHERTYPE_AT: u32 = 12;
const ARP_HTYPE_PTYPE_AT: u32 = 14;
const ARP_LENGTHS_AT: u32 = 18;
const ARP_SENDER_IP_AT: u32 = 28;
const ARP_TARGET_IP_AT: u32 = 38;
const ARP_END: u32 = 42;
const IPV6_NEXT_HEADER_AT: u32 = 20;
const ICMPV6_TYPE_AT: u32 = 54;
const NDP_TARGET_AT: u32 = 62;
const NDP_END: u32 = 78;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> Instruction {
    Instruction { code, jt, jf, k }
}

fn ret(k: u32) -> Instruction {
    op(RET_K, 0, 0, k)
}

/// "If the loaded value is `k` pass the frame, else go on": two instructions.
fn accept_if_equal(program: &mut Vec<Instruction>, k: u32) {
    program.push(op(JMP_JEQ_K, 0, 1, k));
    program.push(ret(ACCEPT));
}

/// "If the loaded value is not `k` pass the frame (the parser will count it), else go on".
fn accept_unless_equal(program: &mut Vec<Instruction>, k: u32) {
    program.push(op(JMP_JEQ_K, 1, 0, k));
    program.push(ret(ACCEPT));
}

/// "If the frame is shorter than `length` pass it (the parser will count it), else go on".
fn accept_if_shorter(program: &mut Vec<Instruction>, length: u32) {
    program.push(op(LD_W_LEN, 0, 0, 0));
    program.push(op(JMP_JGE_K, 1, 0, length));
    program.push(ret(ACCEPT));
}

/// A compiled program and what it filters on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub instructions: Vec<Instruction>,
    lists_addresses: bool,
}

impl Program {
    /// The program for these addresses; past the kernel's size limit, one that passes all ARP
    /// and NDP.
    pub fn for_addresses(v4: &BTreeSet<Ipv4Addr>, v6: &BTreeSet<Ipv6Addr>) -> Program {
        if !Program::could_list(v4.len() + v6.len()) {
            return Program::pass_all();
        }
        let instructions = build(Some((v4, v6)));
        if instructions.len() <= MAX_INSTRUCTIONS {
            return Program {
                instructions,
                lists_addresses: true,
            };
        }
        Program::pass_all()
    }

    /// The program that passes every ARP and NDP frame.
    pub fn pass_all() -> Program {
        Program {
            instructions: build(None),
            lists_addresses: false,
        }
    }

    /// False when this many addresses are sure not to fit, whatever their family: the
    /// responder then skips collecting them (an address costs at least four instructions).
    pub fn could_list(addresses: usize) -> bool {
        addresses
            .saturating_mul(PER_IPV4_ADDRESS)
            .saturating_add(LISTING_BASE)
            <= MAX_INSTRUCTIONS
    }

    /// False when there were too many addresses to list and every ARP and NDP frame passes.
    pub fn lists_addresses(&self) -> bool {
        self.lists_addresses
    }

    /// Runs the program over a frame as the kernel does: true when the frame is passed.
    /// Only the instructions `build` emits are understood; anything else drops the frame.
    pub fn passes(&self, frame: &[u8]) -> bool {
        run(&self.instructions, frame)
    }
}

fn build(addresses: Option<(&BTreeSet<Ipv4Addr>, &BTreeSet<Ipv6Addr>)>) -> Vec<Instruction> {
    let mut arp = Vec::new();
    accept_if_shorter(&mut arp, ARP_END);
    arp.push(op(LD_W_ABS, 0, 0, ARP_HTYPE_PTYPE_AT));
    accept_unless_equal(&mut arp, 0x0001_0800);
    arp.push(op(LD_H_ABS, 0, 0, ARP_LENGTHS_AT));
    accept_unless_equal(&mut arp, 0x0604);
    match addresses {
        Some((v4, _)) => {
            for at in [ARP_TARGET_IP_AT, ARP_SENDER_IP_AT] {
                arp.push(op(LD_W_ABS, 0, 0, at));
                for ip in v4 {
                    accept_if_equal(&mut arp, u32::from(*ip));
                }
            }
            arp.push(ret(DROP));
        }
        None => arp.push(ret(ACCEPT)),
    }

    let mut ndp = Vec::new();
    accept_if_shorter(&mut ndp, ICMPV6_TYPE_AT + 1);
    ndp.push(op(LD_B_ABS, 0, 0, IPV6_NEXT_HEADER_AT));
    ndp.push(op(JMP_JEQ_K, 1, 0, ICMPV6));
    ndp.push(ret(DROP));
    ndp.push(op(LD_B_ABS, 0, 0, ICMPV6_TYPE_AT));
    ndp.push(op(JMP_JEQ_K, 2, 0, NEIGHBOR_SOLICITATION));
    ndp.push(op(JMP_JEQ_K, 1, 0, NEIGHBOR_ADVERTISEMENT));
    ndp.push(ret(DROP));
    accept_if_shorter(&mut ndp, NDP_END);
    match addresses {
        Some((_, v6)) => {
            for ip in v6 {
                // Four words; a mismatch skips the rest of this address's block.
                let words: Vec<u32> = ip
                    .octets()
                    .chunks_exact(4)
                    .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
                    .collect();
                for (i, word) in words.iter().enumerate() {
                    let left_after = (3 - i) * 2 + 1;
                    ndp.push(op(LD_W_ABS, 0, 0, NDP_TARGET_AT + 4 * i as u32));
                    ndp.push(op(JMP_JEQ_K, 0, left_after as u8, *word));
                }
                ndp.push(ret(ACCEPT));
            }
            ndp.push(ret(DROP));
        }
        None => ndp.push(ret(ACCEPT)),
    }

    let mut program = vec![
        op(LD_H_ABS, 0, 0, ETHERTYPE_AT),
        op(JMP_JEQ_K, 0, 1, ETHERTYPE_IPV6),
        // The ARP section may be longer than an 8-bit jump: an unconditional jump has 32 bits.
        op(JMP_JA, 0, 0, 0),
        op(JMP_JEQ_K, 1, 0, ETHERTYPE_ARP),
        ret(DROP),
    ];
    let ja_at = 2;
    program.extend(arp);
    // The `ja` lands on the first NDP instruction.
    program[ja_at].k = (program.len() - ja_at - 1) as u32;
    program.extend(ndp);
    program
}

fn run(program: &[Instruction], frame: &[u8]) -> bool {
    let load = |at: u32, size: usize| -> Option<u32> {
        let at = at as usize;
        let bytes = frame.get(at..at.checked_add(size)?)?;
        Some(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
    };
    let mut accumulator = 0u32;
    let mut pc = 0usize;
    // Every jump goes forward, so a program ends within its length.
    while let Some(instruction) = program.get(pc) {
        let Instruction { code, jt, jf, k } = *instruction;
        pc += 1;
        match code {
            LD_W_ABS | LD_H_ABS | LD_B_ABS => {
                let size = match code {
                    LD_W_ABS => 4,
                    LD_H_ABS => 2,
                    _ => 1,
                };
                // A load past the end of the frame ends the program: dropped.
                let Some(value) = load(k, size) else {
                    return false;
                };
                accumulator = value;
            }
            LD_W_LEN => accumulator = u32::try_from(frame.len()).unwrap_or(u32::MAX),
            JMP_JA => pc += k as usize,
            JMP_JEQ_K | JMP_JGE_K => {
                let taken = if code == JMP_JEQ_K {
                    accumulator == k
                } else {
                    accumulator >= k
                };
                pc += usize::from(if taken { jt } else { jf });
            }
            RET_K => return k != 0,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{self, MacAddr};
    use proptest::prelude::*;

    const MAC: MacAddr = MacAddr(2, 0, 0, 0, 0, 1);

    fn v4(addresses: &[&str]) -> BTreeSet<Ipv4Addr> {
        addresses.iter().filter_map(|a| a.parse().ok()).collect()
    }

    fn v6(addresses: &[&str]) -> BTreeSet<Ipv6Addr> {
        addresses.iter().filter_map(|a| a.parse().ok()).collect()
    }

    fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        packet::arp_request(MAC, sender, target)
    }

    fn program() -> Program {
        Program::for_addresses(&v4(&["192.0.2.10", "192.0.2.11"]), &v6(&["2001:db8::10"]))
    }

    #[test]
    fn arp_for_listed_addresses_passes_and_other_arp_does_not() {
        let program = program();
        assert!(program.lists_addresses());
        let (ours, other, client) = (
            Ipv4Addr::new(192, 0, 2, 11),
            Ipv4Addr::new(192, 0, 2, 99),
            Ipv4Addr::new(192, 0, 2, 1),
        );
        assert!(program.passes(&arp_request(client, ours)));
        assert!(!program.passes(&arp_request(client, other)));
        // A claim: someone else sends from one of ours (gratuitous ARP).
        assert!(program.passes(&packet::gratuitous_arp(MAC, ours)[0]));
        assert!(!program.passes(&packet::gratuitous_arp(MAC, other)[0]));
    }

    #[test]
    fn ndp_for_listed_addresses_passes_and_other_ndp_does_not() {
        let program = program();
        let (ours, other, client): (Ipv6Addr, Ipv6Addr, Ipv6Addr) = (
            "2001:db8::10".parse().unwrap_or(Ipv6Addr::UNSPECIFIED),
            "2001:db8::11".parse().unwrap_or(Ipv6Addr::UNSPECIFIED),
            "2001:db8::1".parse().unwrap_or(Ipv6Addr::UNSPECIFIED),
        );
        assert!(program.passes(&packet::neighbor_solicitation(MAC, client, ours)));
        assert!(!program.passes(&packet::neighbor_solicitation(MAC, client, other)));
        assert!(program.passes(&packet::unsolicited_advertisement(MAC, ours)));
        assert!(!program.passes(&packet::unsolicited_advertisement(MAC, other)));
    }

    #[test]
    fn other_traffic_is_dropped_and_unreadable_resolution_frames_pass() {
        let program = program();
        let mut ipv4 = vec![0u8; 60];
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert!(!program.passes(&ipv4));
        let mut tcp6 = vec![0u8; 74];
        tcp6[12..14].copy_from_slice(&[0x86, 0xdd]);
        tcp6[20] = 6;
        assert!(!program.passes(&tcp6));
        // Too short to read: the parser counts them.
        let request = arp_request(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 99));
        assert!(program.passes(&request[..30]));
        let mut token_ring = request.clone();
        token_ring[15] = 6;
        assert!(program.passes(&token_ring));
        assert!(!program.passes(&[0u8; 10]));
    }

    #[test]
    fn too_many_addresses_pass_all_arp_and_ndp() {
        let many: BTreeSet<Ipv4Addr> = (0..2000u32)
            .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i))
            .collect();
        let program = Program::for_addresses(&many, &BTreeSet::new());
        assert!(!program.lists_addresses());
        assert!(program.instructions.len() <= MAX_INSTRUCTIONS);
        let request = arp_request(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 99));
        assert!(program.passes(&request));
    }

    #[test]
    fn a_listing_costs_what_could_list_assumes() {
        let v4 = |n: u32| -> BTreeSet<Ipv4Addr> {
            (0..n)
                .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i))
                .collect()
        };
        let v6 = |n: u16| -> BTreeSet<Ipv6Addr> {
            (0..n)
                .map(|i| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))
                .collect()
        };
        assert_eq!(build(Some((&v4(0), &v6(0)))).len(), LISTING_BASE);
        for (a, b) in [(1, 0), (0, 1), (7, 3), (100, 40)] {
            assert_eq!(
                build(Some((&v4(a), &v6(b)))).len(),
                LISTING_BASE + PER_IPV4_ADDRESS * a as usize + PER_IPV6_ADDRESS * b as usize
            );
        }
        // The check says no only where no listing fits.
        let most = (MAX_INSTRUCTIONS - LISTING_BASE) / PER_IPV4_ADDRESS;
        assert!(Program::could_list(most));
        assert!(Program::for_addresses(&v4(most as u32), &BTreeSet::new()).lists_addresses());
        assert!(!Program::could_list(most + 1));
        assert!(!Program::for_addresses(&v4(most as u32 + 1), &BTreeSet::new()).lists_addresses());
    }

    #[test]
    fn the_largest_listed_program_fits_and_its_jumps_stay_inside() {
        let v4_many: BTreeSet<Ipv4Addr> = (0..900u32)
            .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i))
            .collect();
        let program = Program::for_addresses(&v4_many, &BTreeSet::new());
        assert!(program.lists_addresses());
        let length = program.instructions.len();
        for (at, i) in program.instructions.iter().enumerate() {
            let furthest = match i.code {
                JMP_JA => i.k as usize,
                JMP_JEQ_K | JMP_JGE_K => usize::from(i.jt.max(i.jf)),
                _ => continue,
            };
            assert!(at + 1 + furthest < length, "instruction {at} jumps out");
        }
        let last = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + 899);
        assert!(program.passes(&arp_request(Ipv4Addr::new(192, 0, 2, 1), last)));
    }

    proptest! {
        /// The program passes exactly what the responder would act on (plus what it cannot
        /// read), whatever the addresses and the frame.
        #[test]
        fn the_program_passes_what_the_responder_needs(
            listed in proptest::collection::btree_set(0u8..8, 0..5),
            listed6 in proptest::collection::btree_set(0u8..8, 0..5),
            sender in 0u8..10, target in 0u8..10, kind in 0u8..4,
            cut in proptest::option::of(0usize..90),
        ) {
            let v4: BTreeSet<Ipv4Addr> = listed.iter().map(|i| Ipv4Addr::new(192, 0, 2, *i)).collect();
            let v6: BTreeSet<Ipv6Addr> = listed6.iter().map(|i| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(*i))).collect();
            let program = Program::for_addresses(&v4, &v6);
            let (s4, t4) = (Ipv4Addr::new(192, 0, 2, sender), Ipv4Addr::new(192, 0, 2, target));
            let (s6, t6) = (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(sender)),
                            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(target)));
            let (mut frame, wanted) = match kind {
                0 => (arp_request(s4, t4), v4.contains(&s4) || v4.contains(&t4)),
                1 => (packet::arp_reply(MAC, s4, MAC, t4), v4.contains(&s4) || v4.contains(&t4)),
                2 => (packet::neighbor_solicitation(MAC, s6, t6), v6.contains(&t6)),
                _ => (packet::unsolicited_advertisement(MAC, t6), v6.contains(&t6)),
            };
            if let Some(cut) = cut {
                frame.truncate(cut);
            }
            let readable = packet::read(&frame).is_ok();
            if readable && wanted {
                prop_assert!(program.passes(&frame));
            }
            if readable && !wanted {
                prop_assert!(!program.passes(&frame));
            }
            // A frame the parser would count as malformed reaches it when it is ARP or NDP
            // far enough to tell.
            if !readable && frame.len() >= 14 {
                let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
                if ethertype == 0x0806 {
                    prop_assert!(program.passes(&frame));
                }
            }
        }
    }
}
