//! Small protocol types shared by the codec, the FSM and the RIB.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// An autonomous system number; always held as 4 octets (RFC 6793).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Asn(pub u32);

impl Asn {
    /// RFC 6793 §9: stands in for a 4-octet AS where only 2 octets fit.
    pub const TRANS: Asn = Asn(23456);

    /// True when the number fits the OPEN message's 2-octet My Autonomous System field.
    pub fn is_two_octet(self) -> bool {
        self.0 <= u32::from(u16::MAX)
    }
}

impl fmt::Display for Asn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The BGP Identifier (RFC 4271 §4.2, RFC 6286).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RouterId(pub Ipv4Addr);

impl fmt::Display for RouterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Address Family Identifier as carried on the wire (IANA registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Afi(pub u16);

impl Afi {
    pub const IPV4: Afi = Afi(1);
    pub const IPV6: Afi = Afi(2);
}

/// Subsequent Address Family Identifier as carried on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Safi(pub u8);

impl Safi {
    pub const UNICAST: Safi = Safi(1);
    pub const MULTICAST: Safi = Safi(2);
}

/// Any (AFI, SAFI) pair seen on the wire, supported or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AfiSafi {
    pub afi: Afi,
    pub safi: Safi,
}

impl AfiSafi {
    pub const fn new(afi: u16, safi: u8) -> Self {
        AfiSafi {
            afi: Afi(afi),
            safi: Safi(safi),
        }
    }

    /// The supported family this pair names, if any.
    pub fn family(self) -> Option<Family> {
        match (self.afi, self.safi) {
            (Afi::IPV4, Safi::UNICAST) => Some(Family::Ipv4Unicast),
            (Afi::IPV6, Safi::UNICAST) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }
}

impl fmt::Display for AfiSafi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.family() {
            Some(fam) => fam.fmt(f),
            None => write!(f, "afi {} safi {}", self.afi.0, self.safi.0),
        }
    }
}

/// The address families this speaker carries routes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    #[serde(rename = "ipv4-unicast")]
    Ipv4Unicast,
    #[serde(rename = "ipv6-unicast")]
    Ipv6Unicast,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];

    pub fn afi_safi(self) -> AfiSafi {
        match self {
            Family::Ipv4Unicast => AfiSafi {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
            },
            Family::Ipv6Unicast => AfiSafi {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
            },
        }
    }

    /// Index into per-family arrays (`[T; 2]`).
    pub fn index(self) -> usize {
        match self {
            Family::Ipv4Unicast => 0,
            Family::Ipv6Unicast => 1,
        }
    }

    pub fn of_prefix(prefix: &ipnet::IpNet) -> Family {
        match prefix {
            ipnet::IpNet::V4(_) => Family::Ipv4Unicast,
            ipnet::IpNet::V6(_) => Family::Ipv6Unicast,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4Unicast => "ipv4-unicast",
            Family::Ipv6Unicast => "ipv6-unicast",
        })
    }
}
