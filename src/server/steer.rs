//! Steering every connection from one client address to the address's home core: a classic
//! BPF program on the public listeners' SO_REUSEPORT group picks the listener by
//! [`home_core`](crate::limits::home_core) of the source address, so a client's per-IP
//! counts live on one worker without any cross-core traffic.
//!
//! The program returns the index of a socket in the group, and the group is in the order the
//! listeners started listening: worker `i`'s listener is socket `i` (`bind_per_worker`). A
//! connection from a trusted proxy is many clients, so the program returns an index past the
//! group for it, and the kernel falls back to its own hash of the address and port pair: a
//! proxy's connections still spread over the workers, and each is handed to its client's home
//! core once the client is known. If the program cannot be attached, every worker hands a
//! connection that landed on the wrong core to the right one (`accept.rs`): still exact, one
//! hop slower.

use crate::config::IpNet;
use crate::limits::home::{MIX, MIX_SHIFT};
use std::net::IpAddr;

// linux/filter.h: the classic BPF encoding.
const LD: u16 = 0x00;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const B: u16 = 0x10;
const ABS: u16 = 0x20;
const AND: u16 = 0x50;
const MUL: u16 = 0x20;
const RSH: u16 = 0x70;
const MOD: u16 = 0x90;
const XOR: u16 = 0xa0;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const K: u16 = 0x00;
const X: u16 = 0x08;
const A: u16 = 0x10;
const TAX: u16 = 0x00;
/// Loads at this offset read the network header (SKF_NET_OFF), wherever the data pointer is.
const NET: u32 = (-0x10_0000i32) as u32;

/// What the program returns to mean "no choice": past the group, so the kernel uses its hash.
pub const NO_CHOICE: u32 = u32::MAX;

/// One classic BPF instruction, laid out as `struct sock_filter`.
pub type Insn = libc::sock_filter;

fn op(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_if(k: u32, jt: u8, jf: u8) -> Insn {
    Insn {
        code: JMP | JEQ | K,
        jt,
        jf,
        k,
    }
}

/// The net's prefix mask for 32-bit word `i` of its address.
fn word_mask(prefix: u8, i: u32) -> u32 {
    let bits = u32::from(prefix).saturating_sub(32 * i).min(32);
    match bits {
        0 => 0,
        b => u32::MAX << (32 - b),
    }
}

/// Instructions returning [`NO_CHOICE`] when the source address is in `net` (the version of
/// the packet already known to be `net`'s).
fn skip_if_in(net: &IpNet) -> Vec<Insn> {
    let (base, words): (u32, Vec<u32>) = match net.addr {
        IpAddr::V4(a) => (12, vec![u32::from(a)]),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            (8, vec![w(0), w(4), w(8), w(12)])
        }
    };
    let needed = words.len().min(usize::from(net.prefix).div_ceil(32));
    let mut out = Vec::new();
    for (i, word) in words.iter().enumerate().take(needed) {
        let mask = word_mask(net.prefix, i as u32);
        // On a mismatch, skip the remaining words' checks and the return.
        let rest = 3 * (needed - 1 - i) + 1;
        out.push(op(LD | W | ABS, NET + base + 4 * i as u32));
        out.push(op(ALU | AND | K, mask));
        out.push(jump_if(word & mask, 0, rest as u8));
    }
    out.push(op(RET | K, NO_CHOICE));
    out
}

/// The program for `workers` listeners. Connections from `trusted` proxies get
/// [`NO_CHOICE`]; every other IPv4 or IPv6 source gets `home_core(source, workers)`.
pub fn program(workers: usize, trusted: &[IpNet]) -> Vec<Insn> {
    let v4: Vec<Insn> = trusted
        .iter()
        .filter(|n| n.addr.is_ipv4())
        .flat_map(skip_if_in)
        .chain([op(LD | W | ABS, NET + 12)])
        .collect();
    let v6: Vec<Insn> = trusted
        .iter()
        .filter(|n| n.addr.is_ipv6())
        .flat_map(skip_if_in)
        .chain([
            // The /64: the exclusive-or of its two words.
            op(LD | W | ABS, NET + 8),
            op(MISC | TAX, 0),
            op(LD | W | ABS, NET + 12),
            op(ALU | XOR | X, 0),
        ])
        .collect();
    let mut p = vec![
        // The IP version, from the first nibble of the network header.
        op(LD | B | ABS, NET),
        op(ALU | RSH | K, 4),
        jump_if(4, 1, 0),
        op(JMP | JA, 0), // to the IPv6 part; set below
    ];
    p[3].k = v4.len() as u32 + 1;
    p.extend(v4);
    p.push(op(JMP | JA, v6.len() as u32 + 2)); // over the IPv6 part to the mix
    p.push(jump_if(6, 1, 0));
    p.push(op(RET | K, NO_CHOICE));
    p.extend(v6);
    p.extend([
        op(ALU | MUL | K, MIX),
        op(ALU | RSH | K, MIX_SHIFT),
        op(ALU | MOD | K, workers as u32),
        op(RET | A, 0),
    ]);
    p
}

/// Attaches `program` to the reuseport group `listener` belongs to. The kernel copies it.
pub fn attach(listener: &std::net::TcpListener, program: &[Insn]) -> std::io::Result<()> {
    crate::runtime::socket::attach_reuseport_cbpf(listener, program)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::home_core;

    /// Runs `prog` the way the kernel does on a packet whose network header is `net`, for the
    /// instructions [`program`] emits (anything else fails the test).
    fn run(prog: &[Insn], net: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let load = |k: u32, n: usize| -> u32 {
            let off = k.wrapping_sub(NET) as usize;
            net[off..off + n]
                .iter()
                .fold(0u32, |v, b| (v << 8) | u32::from(*b))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                c if c == LD | W | ABS => a = load(i.k, 4),
                c if c == LD | B | ABS => a = load(i.k, 1),
                c if c == ALU | RSH | K => a >>= i.k,
                c if c == ALU | AND | K => a &= i.k,
                c if c == ALU | MUL | K => a = a.wrapping_mul(i.k),
                c if c == ALU | MOD | K => a %= i.k,
                c if c == ALU | XOR | X => a ^= x,
                c if c == MISC | TAX => x = a,
                c if c == JMP | JA => pc += i.k as usize,
                c if c == JMP | JEQ | K => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf });
                }
                c if c == RET | K => return i.k,
                c if c == RET | A => return a,
                c => panic!("unexpected instruction {c:#x}"),
            }
        }
    }

    /// The first 40 bytes of an IPv4 or IPv6 header from `src`.
    fn header(src: IpAddr) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        match src {
            IpAddr::V4(a) => {
                h[0] = 0x45;
                h[12..16].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                h[0] = 0x60;
                h[8..24].copy_from_slice(&a.octets());
            }
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn addresses() -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = (0..300u32)
            .map(|i| IpAddr::from(i.wrapping_mul(0x0101_0107).to_be_bytes()))
            .collect();
        out.extend((0..300u128).map(|i| {
            IpAddr::from((i.wrapping_mul(0x0123_4567_89ab_cdef_0011_2233_4455_6677)).to_be_bytes())
        }));
        out.extend(
            ["127.0.0.1", "255.255.255.255", "0.0.0.0", "::1", "ffff::"]
                .map(|s| s.parse::<IpAddr>().unwrap()),
        );
        out
    }

    #[test]
    fn the_program_computes_home_core() {
        for workers in [2, 3, 4, 7, 64] {
            let prog = program(workers, &[]);
            for ip in addresses() {
                assert_eq!(
                    run(&prog, &header(ip)) as usize,
                    home_core(ip, workers),
                    "{ip} over {workers}"
                );
            }
        }
    }

    #[test]
    fn trusted_proxies_are_left_to_the_kernel_hash() {
        let trusted = nets(&[
            "10.0.0.0/8",
            "192.0.2.7",
            "2001:db8::/32",
            "2001:db8:ffff::/48",
            "fd00::5",
            "fe80::/10",
        ]);
        let prog = program(4, &trusted);
        for ip in addresses().into_iter().chain(
            [
                "10.1.2.3",
                "10.255.255.255",
                "11.0.0.0",
                "192.0.2.7",
                "192.0.2.8",
                "2001:db8:1::1",
                "2001:db9::1",
                "fd00::5",
                "fd00::6",
                "fe80::1",
                "fec0::1",
            ]
            .map(|s| s.parse::<IpAddr>().unwrap()),
        ) {
            let want = if trusted.iter().any(|n| n.contains(ip)) {
                NO_CHOICE
            } else {
                home_core(ip, 4) as u32
            };
            assert_eq!(run(&prog, &header(ip)), want, "{ip}");
        }
        // Everything trusted: /0 blocks.
        let all = program(4, &nets(&["0.0.0.0/0", "::/0"]));
        assert_eq!(run(&all, &header("1.2.3.4".parse().unwrap())), NO_CHOICE);
        assert_eq!(run(&all, &header("2001::1".parse().unwrap())), NO_CHOICE);
    }

    #[test]
    fn packets_of_another_version_get_no_choice() {
        let prog = program(4, &[]);
        let mut h = header("1.2.3.4".parse().unwrap());
        h[0] = 0x55;
        assert_eq!(run(&prog, &h), NO_CHOICE);
    }
}
