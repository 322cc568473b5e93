//! Session parameters from the first input octet, so one target covers every combination.

use bgp::wire::CodecParams;

#[allow(dead_code)]
pub fn params(b: u8) -> CodecParams {
    let bit = |i: u8| b & (1 << i) != 0;
    CodecParams {
        four_octet_asn: bit(0),
        add_path_rx: [bit(1), bit(2)],
        add_path_tx: [bit(1), bit(2)],
        extended_message: bit(3),
        families: [true, bit(4)],
        ipv4_extended_next_hop: bit(5),
        ebgp: bit(6),
    }
}

/// The first octet chooses the parameters, the rest is the input.
#[allow(dead_code)]
pub fn split(data: &[u8]) -> Option<(CodecParams, &[u8])> {
    let (&b, rest) = data.split_first()?;
    Some((params(b), rest))
}
