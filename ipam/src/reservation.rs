//! Address reservations: Calico's `IPReservation` (`spec.reservedCIDRs`, CIDRs or single
//! addresses) that the IPAM never hands out.
//!
//! A reservation is stored as a cluster [`Resource`] of kind `IPReservation` (on
//! Kubernetes the `serval.dev/v1` object of that kind, on the file and etcd stores an
//! opaque resource record); the allocator reads every reservation with the pools and
//! skips reserved addresses when it allocates, in the blocks a node already has and in
//! the blocks it claims. As in Calico, a reservation blocks new allocations only: an
//! address allocated before it was reserved stays with its owner, and `ipam check`
//! reports it.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::store::{Resource, ResourceKind};

/// The resource kind reservations are stored as.
pub const KIND: ResourceKind = ResourceKind::from_static("IPReservation");

/// One reserved range and the reservation that names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reserved {
    /// The IPReservation's name.
    pub name: String,
    /// The range (a single address is a /32 or /128).
    pub cidr: IpNet,
}

/// A `reservedCIDRs` entry: a CIDR (host bits are ignored, as Calico does) or one address.
pub fn parse_entry(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{s:?} is neither a CIDR nor an IP address"))
}

/// The ranges a stored IPReservation reserves; the error names the entry that is wrong.
pub fn of_resource(r: &Resource) -> Result<Vec<Reserved>, String> {
    let entries = match r.spec.get("reservedCIDRs") {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Array(a)) => a,
        Some(other) => {
            return Err(format!(
                "IPReservation {}: spec.reservedCIDRs is not a list: {other}",
                r.name
            ))
        }
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let s = e.as_str().ok_or_else(|| {
                format!(
                    "IPReservation {}: spec.reservedCIDRs[{i}]: {e} is not a string",
                    r.name
                )
            })?;
            parse_entry(s)
                .map(|cidr| Reserved {
                    name: r.name.to_string(),
                    cidr,
                })
                .map_err(|e| format!("IPReservation {}: spec.reservedCIDRs[{i}]: {e}", r.name))
        })
        .collect()
}

/// The reservation that holds `ip`, if one does.
pub fn holding<'a>(reserved: &'a [Reserved], ip: &IpAddr) -> Option<&'a Reserved> {
    reserved.iter().find(|r| r.cidr.contains(ip))
}

/// Whether every address of `net` is reserved (by a single reservation that covers it).
pub fn covers(reserved: &[Reserved], net: &IpNet) -> bool {
    reserved.iter().any(|r| r.cidr.contains(net))
}

/// Whether some reserved range overlaps `net`.
pub fn overlaps(reserved: &[Reserved], net: &IpNet) -> bool {
    reserved
        .iter()
        .any(|r| r.cidr.contains(net) || net.contains(&r.cidr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ResourceName;

    fn res(spec: serde_json::Value) -> Resource {
        Resource {
            kind: KIND,
            name: ResourceName::new("gateways").unwrap(),
            labels: Default::default(),
            spec,
        }
    }

    #[test]
    fn entries_are_cidrs_or_addresses() {
        for (s, want) in [
            ("10.65.0.0/30", "10.65.0.0/30"),
            ("10.65.0.7", "10.65.0.7/32"),
            ("10.65.0.9/30", "10.65.0.8/30"),
            ("fd00::1", "fd00::1/128"),
            (" fd00::/120 ", "fd00::/120"),
        ] {
            assert_eq!(parse_entry(s), Ok(want.parse().unwrap()), "{s}");
        }
        for bad in ["", "10.65.0.300", "gateway", "10.0.0.0/33"] {
            assert!(parse_entry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stored_reservation_names_its_bad_entry() {
        let ok = of_resource(&res(
            serde_json::json!({"reservedCIDRs": ["10.65.0.1", "10.65.1.0/28"]}),
        ))
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].name, "gateways");
        assert!(holding(&ok, &"10.65.1.15".parse().unwrap()).is_some());
        assert!(holding(&ok, &"10.65.1.16".parse().unwrap()).is_none());
        assert!(covers(&ok, &"10.65.1.0/29".parse().unwrap()));
        assert!(!covers(&ok, &"10.65.1.0/26".parse().unwrap()));
        assert!(overlaps(&ok, &"10.65.1.0/26".parse().unwrap()));
        assert!(!overlaps(&ok, &"10.65.2.0/26".parse().unwrap()));
        let e = of_resource(&res(
            serde_json::json!({"reservedCIDRs": ["10.65.0.1", "nope"]}),
        ))
        .unwrap_err();
        assert!(e.contains("reservedCIDRs[1]") && e.contains("nope"), "{e}");
        assert!(of_resource(&res(serde_json::json!({}))).unwrap().is_empty());
    }
}
