//! `IPReservation`: addresses the IPAM never hands out, Calico's resource of the same
//! name with its field name (`reservedCIDRs`: CIDRs or single addresses).
//!
//! A reservation keeps new allocations away, from the blocks a node already has and from
//! those it claims (a block inside a reservation is not claimed at all); an address
//! allocated before it was reserved stays with its owner, and `serval ipam check`
//! reports it. The IPAM reads the reservations with the pools on every allocation
//! ([`ipam::reservation`]), through every datastore.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Reserved addresses.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serval.dev",
    version = "v1",
    kind = "IPReservation",
    plural = "ipreservations"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPReservationSpec {
    /// CIDRs (`10.65.0.0/29`) and single addresses (`10.65.0.1`, `fd00::1`) that no pod
    /// or tunnel gets.
    #[serde(default, rename = "reservedCIDRs")]
    pub reserved_cidrs: Vec<String>,
}

impl IPReservationSpec {
    /// Checks serde cannot make, each error as (field path under `spec`, message).
    pub fn check(&self) -> Vec<(String, String)> {
        self.reserved_cidrs
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                ipam::reservation::parse_entry(c)
                    .err()
                    .map(|e| (format!("reservedCIDRs[{i}]"), e))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_by_the_ipams_own_parser() {
        let spec: IPReservationSpec = serde_json::from_value(
            serde_json::json!({"reservedCIDRs": ["10.65.0.0/29", "10.65.1.7", "fd00::1", "bad"]}),
        )
        .unwrap();
        let errors = spec.check();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "reservedCIDRs[3]");
        assert!(serde_json::from_value::<IPReservationSpec>(
            serde_json::json!({"reservedCidrs": ["10.0.0.1"]})
        )
        .is_err());
    }
}
