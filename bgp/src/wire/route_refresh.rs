//! ROUTE-REFRESH message (RFC 2918 §3) with the message subtypes of RFC 7313 §3.

use crate::types::AfiSafi;

/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |              AFI              |  Subtype      |     SAFI      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi_safi: AfiSafi,
    pub subtype: RefreshSubtype,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshSubtype {
    /// A plain request (RFC 2918).
    Request,
    /// Beginning of Route Refresh (RFC 7313).
    Begin,
    /// End of Route Refresh (RFC 7313).
    End,
}
