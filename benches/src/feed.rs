//! The feed: a full table of realistic IPv4 UPDATEs, encoded once with serval's own codec
//! before the session starts, so that sending it costs nothing but `write`.
//!
//! Each UPDATE carries ~20 prefixes that share one attribute set: ORIGIN (mostly IGP),
//! an AS_PATH of 2–6 ASes that starts with the feeder's AS and never holds an AS to avoid
//! (the target's: BIRD and serval drop routes with their own AS, RFC 4271 §9.1.2),
//! NEXT_HOP = the feeder, a MED on two thirds of them and 0–3 communities. Every UPDATE
//! gets its own attribute set, as in a real table where the path differs per origin.
//!
//! Prefixes are distinct within a feed and between feeds given different `base`s:
//! prefix `i` is `base + i × 256` with a length of /21 to /24 chosen from `i` so that its
//! host bits are clear (half /24, a quarter /23, an eighth /22 and /21 each).

use bgp::types::Asn;
use bgp::wire::attr::{AsPath, Community, NextHop, Origin, PathAttrs};
use bgp::wire::{encode_message, CodecParams, EncodeError, Message, Nlri, Update};
use bytes::BytesMut;
use ipnet::{IpNet, Ipv4Net};
use std::net::Ipv4Addr;

/// What to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedSpec {
    pub prefixes: u32,
    /// Prefixes per UPDATE (the last one may carry fewer).
    pub per_update: u32,
    /// Address of prefix 0; prefix `i` starts at `base + i × 256`.
    pub base: Ipv4Addr,
    /// The feeder's AS: first in every path.
    pub local_as: Asn,
    /// ASes that must never appear in a path (the target's own).
    pub avoid: Vec<Asn>,
    pub next_hop: Ipv4Addr,
    /// Seeds the choice of attributes, so that a feed is the same run after run.
    pub seed: u64,
}

impl FeedSpec {
    /// The reference feed: `prefixes` in UPDATEs of 20.
    pub fn new(prefixes: u32, base: Ipv4Addr, local_as: Asn, next_hop: Ipv4Addr) -> Self {
        FeedSpec {
            prefixes,
            per_update: 20,
            base,
            local_as,
            avoid: Vec::new(),
            next_hop,
            seed: u64::from(local_as.0),
        }
    }

    /// Number of UPDATEs the feed is cut into.
    pub fn updates(&self) -> u32 {
        self.prefixes.div_ceil(self.per_update.max(1))
    }

    /// The address space the feed covers, for checking that feeds do not overlap:
    /// `(first address, one past the last)`.
    pub fn span(&self) -> (u64, u64) {
        let first = u64::from(u32::from(self.base));
        (first, first + u64::from(self.prefixes) * 256)
    }
}

/// Prefix `i` of a feed starting at `base` (see the module documentation). `None` when it
/// would leave the IPv4 address space.
pub fn prefix(base: Ipv4Addr, i: u32) -> Option<Ipv4Net> {
    let addr = u32::from(base).checked_add(i.checked_mul(256)?)?;
    let len = match i % 8 {
        0 => 21,
        4 => 22,
        2 | 6 => 23,
        _ => 24,
    };
    let net = Ipv4Net::new(Ipv4Addr::from(addr), len).ok()?;
    // A base that is not /21 aligned would leave host bits set.
    (net.trunc() == net).then_some(net)
}

/// xorshift64*: reproducible without a dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// One UPDATE's attribute set.
pub fn attributes(spec: &FeedSpec, rng: &mut Rng) -> PathAttrs {
    let len = 2 + rng.below(5) as usize;
    let mut path = vec![spec.local_as];
    while path.len() < len {
        let asn = Asn(1000 + rng.below(60_000) as u32);
        if !spec.avoid.contains(&asn) && asn != spec.local_as {
            path.push(asn);
        }
    }
    let communities = (0..rng.below(4))
        .map(|_| Community::new(spec.local_as.0 as u16, rng.below(1000) as u16))
        .collect();
    let origin = match rng.below(10) {
        0 => Origin::Incomplete,
        1 => Origin::Egp,
        _ => Origin::Igp,
    };
    let med = (rng.below(3) > 0).then(|| rng.below(500) as u32);
    PathAttrs {
        origin,
        as_path: AsPath::from_sequence(path),
        next_hop: Some(NextHop::V4(spec.next_hop)),
        med,
        communities,
        ..PathAttrs::default()
    }
}

/// Why a feed cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("prefix {index} from {base} leaves the IPv4 address space or is misaligned")]
    Prefix { base: Ipv4Addr, index: u32 },
    #[error("encoding UPDATE {index}: {source}")]
    Encode { index: u32, source: EncodeError },
    #[error("the AS to avoid leaves no AS to draw")]
    NothingToDraw,
}

/// A feed encoded for one session: the UPDATEs back to back, and where each ends so that
/// the sender can interleave KEEPALIVEs between whole messages.
#[derive(Clone, Debug)]
pub struct Stream {
    pub bytes: Vec<u8>,
    /// Offsets just past each UPDATE.
    pub ends: Vec<usize>,
    pub prefixes: u32,
}

impl Stream {
    pub fn updates(&self) -> usize {
        self.ends.len()
    }

    /// Message-aligned slices of about `size` octets.
    pub fn chunks(&self, size: usize) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        let mut i = 0;
        std::iter::from_fn(move || {
            if start >= self.bytes.len() {
                return None;
            }
            let want = start + size;
            // The first message end at or after `want`, or the last one.
            let j = self.ends[i..].partition_point(|&e| e < want);
            let idx = (i + j).min(self.ends.len() - 1);
            let end = self.ends[idx];
            i = idx + 1;
            let s = &self.bytes[start..end];
            start = end;
            Some(s)
        })
    }
}

/// Builds and encodes the feed with the session's negotiated `params`.
pub fn encode(spec: &FeedSpec, params: &CodecParams) -> Result<Stream, FeedError> {
    if spec.avoid.len() >= 59_000 {
        return Err(FeedError::NothingToDraw);
    }
    let mut rng = Rng::new(spec.seed);
    let per = spec.per_update.max(1);
    // ~4 octets a prefix and ~60 of header and attributes an UPDATE.
    let mut out =
        BytesMut::with_capacity(spec.prefixes as usize * 4 + spec.updates() as usize * 80);
    let mut ends = Vec::with_capacity(spec.updates() as usize);
    let mut i = 0u32;
    let mut index = 0u32;
    while i < spec.prefixes {
        let n = per.min(spec.prefixes - i);
        let nlri = (i..i + n)
            .map(|k| {
                prefix(spec.base, k)
                    .map(|p| Nlri::new(IpNet::V4(p)))
                    .ok_or(FeedError::Prefix {
                        base: spec.base,
                        index: k,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let msg = Message::Update(Update {
            attrs: Some(attributes(spec, &mut rng)),
            nlri,
            ..Update::default()
        });
        encode_message(&msg, params, &mut out)
            .map_err(|source| FeedError::Encode { index, source })?;
        ends.push(out.len());
        i += n;
        index += 1;
    }
    Ok(Stream {
        bytes: out.to_vec(),
        ends,
        prefixes: spec.prefixes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bgp::wire::{decode_message, frame, Frame};
    use std::collections::HashSet;

    fn params() -> CodecParams {
        CodecParams {
            four_octet_asn: true,
            ebgp: true,
            ..CodecParams::default()
        }
    }

    fn spec(n: u32) -> FeedSpec {
        let mut s = FeedSpec::new(
            n,
            Ipv4Addr::new(16, 0, 0, 0),
            Asn(65001),
            Ipv4Addr::new(192, 0, 2, 10),
        );
        s.avoid = vec![Asn(64512)];
        s
    }

    /// Every message of the stream, decoded.
    fn decode_all(s: &Stream) -> Vec<Update> {
        let mut rest = &s.bytes[..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let Ok(Frame::Complete { len, .. }) = frame(rest, &params()) else {
                panic!("stream is not whole messages");
            };
            match decode_message(&rest[..len], &params()).unwrap().message {
                Some(Message::Update(u)) => out.push(u),
                other => panic!("not an UPDATE: {other:?}"),
            }
            rest = &rest[len..];
        }
        out
    }

    #[test]
    fn prefixes_have_clear_host_bits_and_mixed_lengths() {
        let base = Ipv4Addr::new(16, 0, 0, 0);
        let lens: Vec<u8> = (0..8)
            .map(|i| prefix(base, i).unwrap().prefix_len())
            .collect();
        assert_eq!(lens, vec![21, 24, 23, 24, 22, 24, 23, 24]);
        for i in 0..10_000 {
            let p = prefix(base, i).unwrap();
            assert_eq!(p, p.trunc(), "{p}");
        }
        assert_eq!(prefix(Ipv4Addr::new(255, 255, 0, 0), 1000), None);
        assert_eq!(
            prefix(Ipv4Addr::new(16, 0, 1, 0), 0),
            None,
            "misaligned base"
        );
    }

    #[test]
    fn feed_decodes_to_every_prefix_once_in_updates_of_twenty() {
        let s = encode(&spec(1000), &params()).unwrap();
        assert_eq!(s.updates(), 50);
        let updates = decode_all(&s);
        assert_eq!(updates.len(), 50);
        let mut seen = HashSet::new();
        for u in &updates {
            assert_eq!(u.nlri.len(), 20);
            let a = u.attrs.as_ref().unwrap();
            let asns: Vec<Asn> = a.as_path.segments[0].asns.to_vec();
            assert!((2..=6).contains(&asns.len()), "{asns:?}");
            assert_eq!(asns[0], Asn(65001));
            assert!(!asns.contains(&Asn(64512)));
            assert_eq!(a.next_hop, Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 10))));
            assert!(a.communities.len() <= 3);
            for n in &u.nlri {
                assert!(seen.insert(n.prefix), "{} twice", n.prefix);
            }
        }
        assert_eq!(seen.len(), 1000);
        // Attributes vary: MED present on some, absent on others.
        assert!(updates
            .iter()
            .any(|u| u.attrs.as_ref().unwrap().med.is_some()));
        assert!(updates
            .iter()
            .any(|u| u.attrs.as_ref().unwrap().med.is_none()));
    }

    #[test]
    fn last_update_carries_the_remainder() {
        let s = encode(&spec(45), &params()).unwrap();
        let counts: Vec<usize> = decode_all(&s).iter().map(|u| u.nlri.len()).collect();
        assert_eq!(counts, vec![20, 20, 5]);
    }

    #[test]
    fn feeds_are_reproducible() {
        let a = encode(&spec(200), &params()).unwrap();
        let b = encode(&spec(200), &params()).unwrap();
        assert_eq!(a.bytes, b.bytes);
    }

    #[test]
    fn chunks_are_whole_messages_covering_the_stream() {
        let s = encode(&spec(2000), &params()).unwrap();
        let chunks: Vec<&[u8]> = s.chunks(1000).collect();
        assert!(chunks.len() > 5);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), s.bytes.len());
        let mut at = 0;
        for c in &chunks {
            at += c.len();
            assert!(s.ends.contains(&at), "chunk ends inside a message");
            assert!(c.len() >= 1000 || at == s.bytes.len());
        }
    }

    #[test]
    fn feeds_of_different_bases_do_not_overlap() {
        let a = spec(100_000);
        let mut b = spec(100_000);
        b.base = Ipv4Addr::new(18, 0, 0, 0);
        let (a0, a1) = a.span();
        let (b0, b1) = b.span();
        assert!(a1 <= b0 || b1 <= a0);
    }
}
