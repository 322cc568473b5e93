//! AS_PATH and AS4_PATH on the wire (RFC 4271 §4.3, RFC 5065 §3, RFC 6793 §4) and the
//! merge of AS4_PATH into AS_PATH on sessions without 4-octet AS numbers (RFC 6793 §4.2.3).
//!
//! ```text
//! +----------------+----------------+----------------------------+
//! | Segment Type   | Segment Length |  Segment Value (ASes) ...  |
//! |   (1 octet)    |   (1 octet)    |  (2 or 4 octets each)      |
//! +----------------+----------------+----------------------------+
//! ```

use crate::types::Asn;
use crate::wire::attr::{AsPath, AsSegment, AsnList, SegmentType};
use bytes::{BufMut, BytesMut};

/// The most ASes one segment holds (its length is one octet).
const MAX_SEGMENT: usize = 255;

/// Decode a segment list. `four`: ASes are 4 octets. `confed`: confederation segments are
/// allowed (not in AS4_PATH, RFC 6793 §6).
pub(crate) fn decode(mut value: &[u8], four: bool, confed: bool) -> Result<AsPath, &'static str> {
    let size = if four { 4 } else { 2 };
    let mut path = AsPath::default();
    while !value.is_empty() {
        let [kind, count, rest @ ..] = value else {
            return Err("segment header overruns");
        };
        let kind = match kind {
            1 => SegmentType::Set,
            2 => SegmentType::Sequence,
            3 if confed => SegmentType::ConfedSequence,
            4 if confed => SegmentType::ConfedSet,
            3 | 4 => return Err("confederation segment"),
            _ => return Err("unknown segment type"),
        };
        // RFC 7606 §7.2: a segment of length zero is malformed.
        if *count == 0 {
            return Err("empty segment");
        }
        let len = usize::from(*count) * size;
        if rest.len() < len {
            return Err("segment overruns");
        }
        let (body, tail) = rest.split_at(len);
        let asns: AsnList = if four {
            body.chunks_exact(4)
                .map(|c| Asn(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        } else {
            body.chunks_exact(2)
                .map(|c| Asn(u32::from(u16::from_be_bytes([c[0], c[1]]))))
                .collect()
        };
        // RFC 7607 §2: AS 0 in a path makes it malformed.
        if asns.iter().any(|a| a.0 == 0) {
            return Err("AS 0");
        }
        path.segments.push(AsSegment { kind, asns });
        value = tail;
    }
    Ok(path)
}

/// The number of ASes as RFC 6793 §4.2.3 counts them: a set counts one, confederation
/// segments nothing (RFC 4271 §9.1.2.2 a, RFC 5065 §5.3).
fn count(path: &AsPath) -> usize {
    path.decision_len()
}

/// RFC 6793 §4.2.3: rebuild the real path from AS_PATH (with AS_TRANS in place of the
/// large ASes) and AS4_PATH. Returns false when AS4_PATH is longer and must be ignored.
pub(crate) fn merge_as4(as_path: &mut AsPath, as4: AsPath) -> bool {
    let (n, n4) = (count(as_path), count(&as4));
    if n < n4 {
        return false;
    }
    let mut keep = n - n4;
    let mut merged = AsPath::default();
    for seg in &as_path.segments {
        match seg.kind {
            SegmentType::ConfedSequence | SegmentType::ConfedSet => {
                merged.segments.push(seg.clone())
            }
            _ if keep == 0 => break,
            SegmentType::Set => {
                merged.segments.push(seg.clone());
                keep -= 1;
            }
            SegmentType::Sequence => {
                let take = keep.min(seg.asns.len());
                merged.segments.push(AsSegment {
                    kind: SegmentType::Sequence,
                    asns: seg.asns[..take].iter().copied().collect(),
                });
                keep -= take;
            }
        }
    }
    // Where the kept part ends in a sequence and AS4_PATH starts with one, they were one
    // segment before the 2-octet speaker split them.
    let mut as4 = as4.segments.into_iter();
    if let Some(first) = as4.next() {
        match merged.segments.last_mut() {
            Some(last)
                if last.kind == SegmentType::Sequence
                    && first.kind == SegmentType::Sequence
                    && last.asns.len() + first.asns.len() <= MAX_SEGMENT =>
            {
                last.asns.extend(first.asns)
            }
            _ => merged.segments.push(first),
        }
    }
    merged.segments.extend(as4);
    *as_path = merged;
    true
}

/// Octets of the encoded segment list.
pub(crate) fn encoded_len(path: &AsPath, four: bool, skip_confed: bool) -> usize {
    let size = if four { 4 } else { 2 };
    segments(path, skip_confed)
        .map(|(_, chunk)| 2 + chunk.len() * size)
        .sum()
}

/// The segments as written: empty ones dropped, long ones split at 255 ASes.
fn segments(path: &AsPath, skip_confed: bool) -> impl Iterator<Item = (SegmentType, &[Asn])> {
    path.segments
        .iter()
        .filter(move |s| {
            !(skip_confed && matches!(s.kind, SegmentType::ConfedSequence | SegmentType::ConfedSet))
        })
        .flat_map(|s| s.asns.chunks(MAX_SEGMENT).map(move |c| (s.kind, c)))
}

/// Write the segment list; on a 2-octet session ASes that do not fit become AS_TRANS
/// (RFC 6793 §4.2.2).
pub(crate) fn encode(path: &AsPath, four: bool, skip_confed: bool, out: &mut BytesMut) {
    for (kind, chunk) in segments(path, skip_confed) {
        out.put_u8(kind as u8);
        out.put_u8(chunk.len() as u8);
        for asn in chunk {
            if four {
                out.put_u32(asn.0);
            } else {
                out.put_u16(u16::try_from(asn.0).unwrap_or(Asn::TRANS.0 as u16));
            }
        }
    }
}

/// True when a 2-octet session must add AS4_PATH (RFC 6793 §4.2.2).
pub(crate) fn needs_as4(path: &AsPath) -> bool {
    path.segments
        .iter()
        .flat_map(|s| s.asns.iter())
        .any(|a| !a.is_two_octet())
}

#[cfg(test)]
mod tests {
    use super::*;
    use smallvec::smallvec;

    fn seq(asns: &[u32]) -> AsSegment {
        AsSegment {
            kind: SegmentType::Sequence,
            asns: asns.iter().map(|a| Asn(*a)).collect(),
        }
    }

    #[test]
    fn decodes_two_and_four_octet_paths() {
        let p = decode(&[2, 2, 0xfd, 0xe9, 0xfd, 0xea, 1, 1, 0, 7], false, true).unwrap();
        assert_eq!(
            p.segments.to_vec(),
            vec![
                seq(&[65001, 65002]),
                AsSegment {
                    kind: SegmentType::Set,
                    asns: smallvec![Asn(7)]
                }
            ]
        );
        let p = decode(&[2, 1, 0, 1, 0, 0], true, true).unwrap();
        assert_eq!(p.segments.to_vec(), vec![seq(&[65536])]);
    }

    #[test]
    fn rejects_malformed_paths() {
        assert_eq!(decode(&[2], false, true), Err("segment header overruns"));
        assert_eq!(decode(&[2, 0], false, true), Err("empty segment"));
        assert_eq!(
            decode(&[5, 1, 0, 1], false, true),
            Err("unknown segment type")
        );
        assert_eq!(decode(&[2, 2, 0, 1], false, true), Err("segment overruns"));
        assert_eq!(
            decode(&[3, 1, 0, 0, 0, 1], true, false),
            Err("confederation segment")
        );
        assert_eq!(decode(&[2, 1, 0, 0], false, true), Err("AS 0"));
    }

    #[test]
    fn merge_follows_rfc6793() {
        // AS_PATH: 65001 TRANS TRANS; AS4_PATH: 70000 80000 → 65001 70000 80000
        let mut p = AsPath {
            segments: smallvec![seq(&[65001, 23456, 23456])],
        };
        assert!(merge_as4(
            &mut p,
            AsPath {
                segments: smallvec![seq(&[70000, 80000])]
            }
        ));
        assert_eq!(p, AsPath::from_sequence([65001, 70000, 80000].map(Asn)));
        // A longer AS4_PATH is ignored.
        let mut p = AsPath {
            segments: smallvec![seq(&[23456])],
        };
        assert!(!merge_as4(
            &mut p,
            AsPath {
                segments: smallvec![seq(&[70000, 80000])]
            }
        ));
        // Confederation segments stay in front.
        let confed = AsSegment {
            kind: SegmentType::ConfedSequence,
            asns: smallvec![Asn(64512)],
        };
        let mut p = AsPath {
            segments: smallvec![confed.clone(), seq(&[23456])],
        };
        assert!(merge_as4(
            &mut p,
            AsPath {
                segments: smallvec![seq(&[70000])]
            }
        ));
        assert_eq!(p.segments.to_vec(), vec![confed, seq(&[70000])]);
    }

    #[test]
    fn encode_splits_long_segments_and_writes_as_trans() {
        let long = AsPath::from_sequence((1..=300).map(Asn));
        let mut out = BytesMut::new();
        encode(&long, true, false, &mut out);
        assert_eq!(out.len(), encoded_len(&long, true, false));
        assert_eq!(decode(&out, true, true).unwrap().segments.len(), 2);
        let big = AsPath::from_sequence([Asn(70000)]);
        let mut out = BytesMut::new();
        encode(&big, false, false, &mut out);
        assert_eq!(&out[..], &[2, 1, 0x5b, 0xa0]);
        assert!(needs_as4(&big));
    }
}
