//! The BFD Control packet (RFC 5880 §4.1) and the reception checks of §6.8.6 that are
//! about the packet itself. Checks that need a session (the Your Discriminator lookup,
//! what the state fields mean) live in `session.rs`.

use bytes::{BufMut, BytesMut};
use nom::number::complete::{be_u32, be_u8};
use nom::IResult;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// RFC 5880 §4.1: the protocol version this codec speaks.
pub const VERSION: u8 = 1;
/// The mandatory section; also the whole packet when the A bit is clear.
pub const PACKET_LEN: usize = 24;
/// §6.8.6: the shortest packet that can carry an Authentication Section.
const MIN_AUTH_LEN: u8 = 26;

const FLAG_POLL: u8 = 0x20;
const FLAG_FINAL: u8 = 0x10;
const FLAG_CPI: u8 = 0x08;
const FLAG_AUTH: u8 = 0x04;
const FLAG_DEMAND: u8 = 0x02;
const FLAG_MULTIPOINT: u8 = 0x01;

/// Diagnostic codes (RFC 5880 §4.1): why the sender's session last changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Diag {
    #[default]
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    /// 9–31, reserved: kept so a packet re-encodes as it came.
    Reserved(u8),
}

impl Diag {
    /// The 5-bit field's value.
    pub fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledSessionDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Reserved(c) => c & 0x1f,
        }
    }

    /// From the 5-bit field (the upper bits of `code` are ignored).
    pub fn from_code(code: u8) -> Self {
        match code & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            c => Diag::Reserved(c),
        }
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diag::None => f.write_str("no diagnostic"),
            Diag::ControlDetectionTimeExpired => f.write_str("control detection time expired"),
            Diag::EchoFunctionFailed => f.write_str("echo function failed"),
            Diag::NeighborSignaledSessionDown => f.write_str("neighbor signaled session down"),
            Diag::ForwardingPlaneReset => f.write_str("forwarding plane reset"),
            Diag::PathDown => f.write_str("path down"),
            Diag::ConcatenatedPathDown => f.write_str("concatenated path down"),
            Diag::AdministrativelyDown => f.write_str("administratively down"),
            Diag::ReverseConcatenatedPathDown => f.write_str("reverse concatenated path down"),
            Diag::Reserved(c) => write!(f, "reserved diagnostic {c}"),
        }
    }
}

/// Session states (RFC 5880 §4.1, §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    AdminDown,
    Down,
    Init,
    Up,
}

impl State {
    pub fn code(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }

    /// From the 2-bit field (the upper bits of `code` are ignored).
    pub fn from_code(code: u8) -> Self {
        match code & 0x03 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        })
    }
}

/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                       My Discriminator                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                      Your Discriminator                       |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    Desired Min TX Interval                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                   Required Min RX Interval                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                 Required Min Echo RX Interval                 |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// The version is always 1, and the A (authentication) and M (multipoint) bits are always
/// clear: the decoder rejects packets with either set. The intervals travel in
/// microseconds; the encoder saturates a longer one at `u32::MAX` µs (71 minutes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ControlPacket {
    pub diag: Diag,
    pub state: State,
    /// P: the sender asks for a packet with F set (a poll sequence, §6.5).
    pub poll: bool,
    /// F: the answer to a poll.
    pub final_: bool,
    /// C: the sender's BFD does not share fate with its control plane.
    pub control_plane_independent: bool,
    /// D: the sender wishes to run in demand mode.
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discriminator: NonZeroU32,
    /// Zero when the sender does not know ours yet (allowed in Down and AdminDown only).
    pub your_discriminator: u32,
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub required_min_echo_rx: Duration,
}

/// Why a received packet is discarded (RFC 5880 §6.8.6).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("{0} octets, shorter than a control packet")]
    Truncated(usize),
    #[error("unsupported version {0}")]
    Version(u8),
    #[error(
        "length field {length} is not between the minimum {min} and the {received} octets received"
    )]
    Length {
        length: u8,
        min: u8,
        received: usize,
    },
    #[error("detect multiplier is zero")]
    ZeroDetectMult,
    #[error("multipoint bit set")]
    Multipoint,
    #[error("my discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("your discriminator is zero in state {0}")]
    ZeroYourDiscriminator(State),
    /// serval configures no authentication, so an authenticated packet is discarded.
    #[error("authentication section present, and no authentication is configured")]
    Authenticated,
}

/// Where the IO task looks for the session a valid packet belongs to (§6.8.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Demux {
    /// By our local discriminator; no session with it means the packet is discarded.
    Discriminator(NonZeroU32),
    /// Your Discriminator is zero (the sender is Down or AdminDown): by the source
    /// address, the interface and the hop mode.
    Address,
}

/// nom with the unit error: a short read costs nothing and the caller names the error.
fn u8(i: &[u8]) -> IResult<&[u8], u8, ()> {
    be_u8(i)
}

fn u32(i: &[u8]) -> IResult<&[u8], u32, ()> {
    be_u32(i)
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl ControlPacket {
    /// Decodes one UDP payload. Everything after the Length field's end is ignored.
    pub fn decode(buf: &[u8]) -> Result<Self, PacketError> {
        let short = |_| PacketError::Truncated(buf.len());
        let (rest, vers_diag) = u8(buf).map_err(short)?;
        let (rest, sta_flags) = u8(rest).map_err(short)?;
        let (rest, detect_mult) = u8(rest).map_err(short)?;
        let (rest, length) = u8(rest).map_err(short)?;
        let version = vers_diag >> 5;
        if version != VERSION {
            return Err(PacketError::Version(version));
        }
        let auth = sta_flags & FLAG_AUTH != 0;
        let min = if auth { MIN_AUTH_LEN } else { PACKET_LEN as u8 };
        if length < min || usize::from(length) > buf.len() {
            return Err(PacketError::Length {
                length,
                min,
                received: buf.len(),
            });
        }
        let (rest, my) = u32(rest).map_err(short)?;
        let (rest, your) = u32(rest).map_err(short)?;
        let (rest, tx) = u32(rest).map_err(short)?;
        let (rest, rx) = u32(rest).map_err(short)?;
        let (_, echo) = u32(rest).map_err(short)?;
        if detect_mult == 0 {
            return Err(PacketError::ZeroDetectMult);
        }
        if sta_flags & FLAG_MULTIPOINT != 0 {
            return Err(PacketError::Multipoint);
        }
        let my_discriminator = NonZeroU32::new(my).ok_or(PacketError::ZeroMyDiscriminator)?;
        let state = State::from_code(sta_flags >> 6);
        if your == 0 && !matches!(state, State::Down | State::AdminDown) {
            return Err(PacketError::ZeroYourDiscriminator(state));
        }
        if auth {
            return Err(PacketError::Authenticated);
        }
        Ok(ControlPacket {
            diag: Diag::from_code(vers_diag),
            state,
            poll: sta_flags & FLAG_POLL != 0,
            final_: sta_flags & FLAG_FINAL != 0,
            control_plane_independent: sta_flags & FLAG_CPI != 0,
            demand: sta_flags & FLAG_DEMAND != 0,
            detect_mult,
            my_discriminator,
            your_discriminator: your,
            desired_min_tx: Duration::from_micros(tx.into()),
            required_min_rx: Duration::from_micros(rx.into()),
            required_min_echo_rx: Duration::from_micros(echo.into()),
        })
    }

    /// Appends the 24 octets of the packet.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(PACKET_LEN);
        out.put_u8(VERSION << 5 | self.diag.code());
        let mut flags = self.state.code() << 6;
        for (set, bit) in [
            (self.poll, FLAG_POLL),
            (self.final_, FLAG_FINAL),
            (self.control_plane_independent, FLAG_CPI),
            (self.demand, FLAG_DEMAND),
        ] {
            if set {
                flags |= bit;
            }
        }
        out.put_u8(flags);
        out.put_u8(self.detect_mult);
        out.put_u8(PACKET_LEN as u8);
        out.put_u32(self.my_discriminator.get());
        out.put_u32(self.your_discriminator);
        out.put_u32(micros(self.desired_min_tx));
        out.put_u32(micros(self.required_min_rx));
        out.put_u32(micros(self.required_min_echo_rx));
    }

    /// How the IO task finds the session this packet is for.
    pub fn demux(&self) -> Demux {
        match NonZeroU32::new(self.your_discriminator) {
            Some(d) => Demux::Discriminator(d),
            None => Demux::Address,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disc(n: u32) -> NonZeroU32 {
        match NonZeroU32::new(n) {
            Some(d) => d,
            None => panic!("zero discriminator in a test"),
        }
    }

    fn encode(p: &ControlPacket) -> Vec<u8> {
        let mut b = BytesMut::new();
        p.encode(&mut b);
        b.to_vec()
    }

    /// Shaped like the first packet of BIRD's `protocol bfd` with its defaults: Down, no
    /// remote discriminator yet, the 1 s idle interval, 10 ms receive, multiplier 5.
    const BIRD_DOWN: [u8; 24] = [
        0x20, 0x40, 0x05, 0x18, // v1, diag 0, Down, mult 5, len 24
        0x1d, 0x6a, 0x3c, 0x01, // my discriminator
        0x00, 0x00, 0x00, 0x00, // your discriminator
        0x00, 0x0f, 0x42, 0x40, // desired min TX 1 000 000 µs
        0x00, 0x00, 0x27, 0x10, // required min RX 10 000 µs
        0x00, 0x00, 0x00, 0x00, // required min echo RX 0
    ];

    /// Shaped like FRR bfdd's defaults, Up and polling: 300 ms timers, multiplier 3,
    /// echo receive 50 ms.
    const FRR_UP_POLL: [u8; 24] = [
        0x20, 0xe0, 0x03, 0x18, // v1, diag 0, Up, P, mult 3, len 24
        0x00, 0x00, 0x00, 0x02, // my discriminator 2
        0x1d, 0x6a, 0x3c, 0x01, // your discriminator
        0x00, 0x04, 0x93, 0xe0, // desired min TX 300 000 µs
        0x00, 0x04, 0x93, 0xe0, // required min RX 300 000 µs
        0x00, 0x00, 0xc3, 0x50, // required min echo RX 50 000 µs
    ];

    #[test]
    fn bird_down_packet_decodes_and_round_trips() {
        let p = match ControlPacket::decode(&BIRD_DOWN) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            p,
            ControlPacket {
                diag: Diag::None,
                state: State::Down,
                poll: false,
                final_: false,
                control_plane_independent: false,
                demand: false,
                detect_mult: 5,
                my_discriminator: disc(0x1d6a_3c01),
                your_discriminator: 0,
                desired_min_tx: Duration::from_secs(1),
                required_min_rx: Duration::from_millis(10),
                required_min_echo_rx: Duration::ZERO,
            }
        );
        assert_eq!(p.demux(), Demux::Address);
        assert_eq!(encode(&p), BIRD_DOWN);
    }

    #[test]
    fn frr_poll_decodes_and_round_trips() {
        let p = match ControlPacket::decode(&FRR_UP_POLL) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(p.state, State::Up);
        assert!(p.poll && !p.final_);
        assert_eq!(p.detect_mult, 3);
        assert_eq!(p.desired_min_tx, Duration::from_millis(300));
        assert_eq!(p.required_min_echo_rx, Duration::from_millis(50));
        assert_eq!(p.demux(), Demux::Discriminator(disc(0x1d6a_3c01)));
        assert_eq!(encode(&p), FRR_UP_POLL);
    }

    #[test]
    fn every_field_and_flag_round_trips() {
        for state in [State::AdminDown, State::Down, State::Init, State::Up] {
            for code in 0..32 {
                for flags in 0..16u8 {
                    let p = ControlPacket {
                        diag: Diag::from_code(code),
                        state,
                        poll: flags & 1 != 0,
                        final_: flags & 2 != 0,
                        control_plane_independent: flags & 4 != 0,
                        demand: flags & 8 != 0,
                        detect_mult: 255,
                        my_discriminator: disc(u32::MAX),
                        your_discriminator: 7,
                        desired_min_tx: Duration::from_micros(u32::MAX.into()),
                        required_min_rx: Duration::ZERO,
                        required_min_echo_rx: Duration::from_micros(1),
                    };
                    let bytes = encode(&p);
                    assert_eq!(bytes.len(), PACKET_LEN);
                    assert_eq!(ControlPacket::decode(&bytes), Ok(p));
                    assert_eq!(Diag::from_code(code).code(), code);
                }
            }
        }
    }

    #[test]
    fn an_interval_too_long_for_the_field_saturates() {
        let mut p = match ControlPacket::decode(&BIRD_DOWN) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        p.desired_min_tx = Duration::from_secs(100_000);
        let bytes = encode(&p);
        assert_eq!(bytes[12..16], [0xff; 4]);
    }

    /// BIRD_DOWN with one octet changed.
    fn with(at: usize, value: u8) -> Vec<u8> {
        let mut b = BIRD_DOWN.to_vec();
        b[at] = value;
        b
    }

    #[test]
    fn reception_checks_of_6_8_6() {
        let cases: Vec<(&str, Vec<u8>, PacketError)> = vec![
            ("empty", vec![], PacketError::Truncated(0)),
            ("23 octets", BIRD_DOWN[..23].to_vec(), {
                // The Length field (24) is checked against the size first.
                PacketError::Length {
                    length: 24,
                    min: 24,
                    received: 23,
                }
            }),
            ("version 0", with(0, 0x00), PacketError::Version(0)),
            ("version 2", with(0, 0x40), PacketError::Version(2)),
            (
                "length below 24",
                with(3, 20),
                PacketError::Length {
                    length: 20,
                    min: 24,
                    received: 24,
                },
            ),
            (
                "length beyond the datagram",
                with(3, 28),
                PacketError::Length {
                    length: 28,
                    min: 24,
                    received: 24,
                },
            ),
            ("detect mult 0", with(2, 0), PacketError::ZeroDetectMult),
            ("multipoint", with(1, 0x41), PacketError::Multipoint),
            (
                "my discriminator 0",
                {
                    let mut b = BIRD_DOWN.to_vec();
                    b[4..8].fill(0);
                    b
                },
                PacketError::ZeroMyDiscriminator,
            ),
            (
                "your discriminator 0 in Init",
                with(1, 0x80),
                PacketError::ZeroYourDiscriminator(State::Init),
            ),
            (
                "your discriminator 0 in Up",
                with(1, 0xc0),
                PacketError::ZeroYourDiscriminator(State::Up),
            ),
            (
                "A bit, 24 octets: too short for an auth section",
                with(1, 0x44),
                PacketError::Length {
                    length: 24,
                    min: 26,
                    received: 24,
                },
            ),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(ControlPacket::decode(&bytes), Err(want), "{name}");
        }
    }

    #[test]
    fn an_authenticated_packet_is_discarded() {
        // Simple password (type 1), length 7, key id 1, "pw" + padding: 31 octets.
        let mut b = BIRD_DOWN.to_vec();
        b[1] |= FLAG_AUTH;
        b[3] = 31;
        b.extend_from_slice(&[1, 7, 1, b'p', b'w', 0, 0]);
        assert_eq!(ControlPacket::decode(&b), Err(PacketError::Authenticated));
    }

    #[test]
    fn your_discriminator_zero_is_fine_in_down_and_admin_down() {
        for sta in [0x00, 0x40] {
            assert!(ControlPacket::decode(&with(1, sta)).is_ok());
        }
    }

    #[test]
    fn octets_after_the_length_are_ignored() {
        let mut b = BIRD_DOWN.to_vec();
        b.extend_from_slice(&[0xde, 0xad]);
        assert_eq!(ControlPacket::decode(&b), ControlPacket::decode(&BIRD_DOWN));
    }
}
