//! Bidirectional Forwarding Detection (RFC 5880) in asynchronous mode, over UDP single hop
//! (RFC 5881) and multihop (RFC 5883): the protocol core, sans-IO.
//!
//! - `packet`: the Control packet codec and the §6.8.6 checks about the packet alone.
//! - `session`: one session's state machine. Like the BGP FSM (`fsm`), it never touches a
//!   socket or a clock: `handle(now, Input, &mut Vec<Action>)`, `on_timer(now, ..)`,
//!   `next_deadline()`, and the transmit jitter comes from a seeded generator, so tests
//!   run minutes of timers in microseconds and replay the same schedule.
//! - `encap`: the UDP ports and the TTL rule of the two encapsulations.
//!
//! The session states (§6.2; every transition also sets bfd.LocalDiag):
//!
//! ```text
//!                              +--+
//!                              |  | UP, ADMIN DOWN, TIMER
//!                              |  V
//!                      DOWN  +------+  INIT
//!               +------------|      |------------+
//!               |            | DOWN |            |
//!               |  +-------->|      |<--------+  |
//!               |  |         +------+         |  |
//!               |  |                          |  |
//!               |  |               ADMIN DOWN,|  |
//!               |  |ADMIN DOWN,          DOWN,|  |
//!               |  |TIMER                TIMER|  |
//!               V  |                          |  V
//!             +------+                      +------+
//!        +----|      |                      |      |----+
//!    DOWN|    | INIT |--------------------->|  UP  |    |INIT, UP
//!        +--->|      | INIT, UP             |      |<---+
//!             +------+                      +------+
//! ```
//!
//! Edges are the state of the peer's packet (ADMIN DOWN, DOWN, INIT, UP) or TIMER, the
//! Detection Time passing without a packet (diag 1). A peer going down or AdminDown takes
//! an Init or Up session Down with diag 3. Our own AdminDown (`Input::AdminDown`, diag 7)
//! is entered from any state and left only by `Input::AdminUp`, into Down.
//!
//! Timers (§6.8.2–§6.8.4, §6.8.7): we send every max(our Desired Min TX, the peer's
//! Required Min RX), less a random 0–25 % (10–25 % with a multiplier of 1); while not Up
//! our Desired Min TX is at least 1 s. The session fails when no packet arrives for the
//! peer's multiplier × max(our Required Min RX, the peer's Desired Min TX). A change of
//! either interval while Up runs a poll sequence (§6.5): our packets carry P until one
//! with F comes back, and only then does a slower transmit interval or a faster receive
//! interval take effect, so neither side's detection fires on the other's old timing. A
//! packet with P is answered at once with F. A passive session (§6.1) sends nothing until
//! the peer's first packet, and goes quiet again when the peer is forgotten after a
//! Detection Time.
//!
//! What the IO task does with it: decode (`ControlPacket::decode`; drop on error), check
//! the TTL (`encap::accept_ttl`), find the session (`ControlPacket::demux`: by Your
//! Discriminator, else by source address and interface), `handle(now, Input::Packet)`;
//! sleep until `next_deadline()` and call `on_timer`; send each `Action::Send` from the
//! session's source port with TTL 255; hand each `Action::StateChanged` to the BGP
//! coupling.
//!
//! Not implemented:
//! - Echo mode (§6.4): our Required Min Echo RX is always 0, which tells the peer not to
//!   send echoes; the peer's echo interval is ignored.
//! - Demand mode (§6.6): we never set D and ignore the peer's D bit, so both sides keep
//!   sending periodic packets. A peer that asks for no packets at all (Required Min RX 0)
//!   gets none, per §6.8.7.
//! - Authentication (§6.7): the decoder does not parse the Authentication Section;
//!   serval configures no authentication, so a packet with the A bit set is discarded
//!   (§6.8.6). On a single hop the TTL 255 rule (RFC 5881 §5) keeps off-link senders out.
//! - Point-to-multipoint (M bit): packets with it are discarded, as §6.8.6 requires.
//!
//! Departures from the letter of the RFC, each for a reason:
//! - A poll sequence is run only while Up. Outside Up no detection depends on our timing,
//!   so a new interval takes effect at once; the poll the RFC asks for on every change
//!   would only delay it.
//! - A change of the intervals during a poll sequence does not start a second one at
//!   once (only one may be outstanding): the running one is marked, and its F starts the
//!   next, whose F then confirms the latest values. The first F may answer a packet with
//!   the older values, so it alone does not prove the peer has seen the new ones.
//! - Going AdminDown sends a packet at once rather than at the next transmit time, so
//!   the peer learns it even when the session is removed right after (a BGP peer
//!   deconfigured). AdminDown packets keep going at the idle interval after that.
//! - A change of the detect multiplier alone starts no poll sequence: the peer applies it
//!   from the next packet, and no detection is timed on the old value.

pub mod encap;
pub(crate) mod io;
pub mod packet;
pub mod session;
pub mod table;
#[cfg(test)]
mod tests;

pub use encap::{accept_ttl, Hop, HopChoice};
pub use packet::{ControlPacket, Demux, Diag, PacketError, State};
pub use session::{
    Action, ConfigError, Input, Session, SessionConfig, SessionStats, Timers, IDLE_TX,
};
