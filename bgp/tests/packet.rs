//! Byte-vector tests of the wire codec: captures from real daemons, hand-made vectors,
//! the malformed-message table and property tests.

#[path = "packet/common.rs"]
mod common;

#[path = "packet/captures.rs"]
mod captures;
#[path = "packet/malformed.rs"]
mod malformed;
#[path = "packet/props.rs"]
mod props;
#[path = "packet/vectors.rs"]
mod vectors;
