//! serval's cluster resources: group `serval.dev`, version `v1`, cluster-scoped, with
//! Calico's v3 field names so that Calico users recognise them.
//!
//! | kind               | what                                                      |
//! |--------------------|-----------------------------------------------------------|
//! | `BGPConfiguration` | mesh on/off, default AS, communities, service CIDRs       |
//! | `BGPPeer`          | global, per-node and route-reflector peerings             |
//! | `BGPFilter`        | prefix filters peers refer to                             |
//! | `BFDProfile`       | BFD timers peers and the mesh refer to (MetalLB's)        |
//! | `IPReservation`    | addresses the IPAM never hands out                        |
//! | `ServalNode`       | one node's address, AS, tunnel addresses, labels          |
//!
//! On the file and etcd datastores they are stored as opaque IPAM resources
//! ([`ipam::store::Resource`]: kind, name, labels, spec JSON); on Kubernetes they are the
//! CRDs derived here. Every spec deserializes with unknown fields rejected, then passes
//! the checks serde cannot make; an error names the field path and the value.

pub mod bfd_profile;
pub mod bgp_configuration;
pub mod bgp_filter;
pub mod bgp_peer;
pub mod common;
pub mod document;
pub mod ip_reservation;
pub mod node_status;
pub mod serval_node;

use std::collections::BTreeMap;
use std::fmt;

use bgp::policy::{CommunityValue, LargeCommunityValue};
use ipam::store::ResourceName;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use bfd_profile::BFDProfileSpec;
pub use bgp_configuration::BGPConfigurationSpec;
pub use bgp_filter::BGPFilterSpec;
pub use bgp_peer::BGPPeerSpec;
pub use ip_reservation::IPReservationSpec;
pub use serval_node::ServalNodeSpec;

/// The apiVersion of every serval resource.
pub const API_VERSION: &str = "serval.dev/v1";

/// The kinds of cluster resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    BgpConfiguration,
    BgpPeer,
    BgpFilter,
    ServalNode,
    IpReservation,
    BfdProfile,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 6] = [
        ResourceKind::BgpConfiguration,
        ResourceKind::BgpPeer,
        ResourceKind::BgpFilter,
        ResourceKind::ServalNode,
        ResourceKind::IpReservation,
        ResourceKind::BfdProfile,
    ];

    /// The kind as the datastore keys it.
    pub fn stored(self) -> ipam::store::ResourceKind {
        ipam::store::ResourceKind::from_static(self.as_str())
    }

    /// The kind as written in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::BgpConfiguration => "BGPConfiguration",
            ResourceKind::BgpPeer => "BGPPeer",
            ResourceKind::BgpFilter => "BGPFilter",
            ResourceKind::ServalNode => "ServalNode",
            ResourceKind::IpReservation => "IPReservation",
            ResourceKind::BfdProfile => "BFDProfile",
        }
    }

    /// The kind from its name, case-insensitively, also in the plural and the short
    /// forms `kubectl` and `calicoctl` users type (`bgppeers`, `node`, `nodes`).
    pub fn parse(s: &str) -> Option<ResourceKind> {
        let l = s.to_ascii_lowercase();
        let l = l.strip_suffix('s').unwrap_or(&l);
        match l {
            "bgpconfiguration" | "bgpconfig" => Some(ResourceKind::BgpConfiguration),
            "bgppeer" => Some(ResourceKind::BgpPeer),
            "bgpfilter" => Some(ResourceKind::BgpFilter),
            "servalnode" | "node" => Some(ResourceKind::ServalNode),
            "ipreservation" => Some(ResourceKind::IpReservation),
            "bfdprofile" => Some(ResourceKind::BfdProfile),
            _ => None,
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The typed spec of a resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    BgpConfiguration(BGPConfigurationSpec),
    BgpPeer(BGPPeerSpec),
    BgpFilter(BGPFilterSpec),
    ServalNode(ServalNodeSpec),
    IpReservation(IPReservationSpec),
    BfdProfile(BFDProfileSpec),
}

/// A resource: name, labels and typed spec.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterResource {
    pub name: ResourceName,
    pub labels: BTreeMap<String, String>,
    pub spec: Spec,
}

/// A field that is wrong: its path from the document's root and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// E.g. `spec.peerIP`, `metadata.name`.
    pub path: String,
    /// What is wrong, with the bad value.
    pub message: String,
}

impl FieldError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A stored resource that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("stored {kind} {name}: {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct StoredResourceError {
    pub kind: String,
    pub name: String,
    pub errors: Vec<FieldError>,
}

fn decode_spec<T: DeserializeOwned>(spec: serde_json::Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "spec".to_owned()
        } else {
            format!("spec.{path}")
        };
        FieldError::new(path, e.into_inner().to_string())
    })
}

fn spec_json<T: Serialize>(spec: &T) -> serde_json::Value {
    // The spec types hold no maps with non-string keys: serialization cannot fail.
    serde_json::to_value(spec).unwrap_or(serde_json::Value::Null)
}

impl ClusterResource {
    pub fn kind(&self) -> ResourceKind {
        match self.spec {
            Spec::BgpConfiguration(_) => ResourceKind::BgpConfiguration,
            Spec::BgpPeer(_) => ResourceKind::BgpPeer,
            Spec::BgpFilter(_) => ResourceKind::BgpFilter,
            Spec::ServalNode(_) => ResourceKind::ServalNode,
            Spec::IpReservation(_) => ResourceKind::IpReservation,
            Spec::BfdProfile(_) => ResourceKind::BfdProfile,
        }
    }

    /// Builds a typed resource from its parts, running every check; errors carry paths
    /// from the document root (`metadata.name`, `spec.peerIP`).
    pub fn from_parts(
        kind: ResourceKind,
        name: &str,
        labels: BTreeMap<String, String>,
        spec: serde_json::Value,
    ) -> Result<ClusterResource, Vec<FieldError>> {
        let mut errors = Vec::new();
        let checked_name = ResourceName::new(name)
            .map_err(|e| errors.push(FieldError::new("metadata.name", e.to_string())))
            .ok();
        if kind == ResourceKind::BgpConfiguration {
            if let Err(e) = bgp_configuration::check_name(name) {
                errors.push(FieldError::new("metadata.name", e));
            }
        }
        let checked = |e: Vec<(String, String)>| {
            e.into_iter()
                .map(|(p, m)| FieldError::new(format!("spec.{p}"), m))
                .collect::<Vec<_>>()
        };
        let spec = match kind {
            ResourceKind::BgpConfiguration => decode_spec::<BGPConfigurationSpec>(spec)
                .map(|s| (checked(s.check()), Spec::BgpConfiguration(s))),
            ResourceKind::BgpPeer => {
                decode_spec::<BGPPeerSpec>(spec).map(|s| (checked(s.check()), Spec::BgpPeer(s)))
            }
            ResourceKind::BgpFilter => {
                decode_spec::<BGPFilterSpec>(spec).map(|s| (checked(s.check()), Spec::BgpFilter(s)))
            }
            ResourceKind::ServalNode => decode_spec::<ServalNodeSpec>(spec)
                .map(|s| (checked(s.check()), Spec::ServalNode(s))),
            ResourceKind::IpReservation => decode_spec::<IPReservationSpec>(spec)
                .map(|s| (checked(s.check()), Spec::IpReservation(s))),
            ResourceKind::BfdProfile => decode_spec::<BFDProfileSpec>(spec)
                .map(|s| (checked(s.check()), Spec::BfdProfile(s))),
        };
        match spec {
            Ok((problems, spec)) => {
                errors.extend(problems);
                match checked_name {
                    Some(name) if errors.is_empty() => Ok(ClusterResource { name, labels, spec }),
                    _ => Err(errors),
                }
            }
            Err(e) => {
                errors.push(e);
                Err(errors)
            }
        }
    }

    /// The spec as JSON.
    pub fn spec_json(&self) -> serde_json::Value {
        match &self.spec {
            Spec::BgpConfiguration(s) => spec_json(s),
            Spec::BgpPeer(s) => spec_json(s),
            Spec::BgpFilter(s) => spec_json(s),
            Spec::ServalNode(s) => spec_json(s),
            Spec::IpReservation(s) => spec_json(s),
            Spec::BfdProfile(s) => spec_json(s),
        }
    }

    /// As the IPAM store keeps it.
    pub fn to_stored(&self) -> ipam::store::Resource {
        ipam::store::Resource {
            kind: self.kind().stored(),
            name: self.name.clone(),
            labels: self.labels.clone(),
            spec: self.spec_json(),
        }
    }

    /// From the IPAM store; `None` for kinds that are not serval's.
    pub fn from_stored(
        r: &ipam::store::Resource,
    ) -> Option<Result<ClusterResource, StoredResourceError>> {
        let kind = ResourceKind::ALL
            .into_iter()
            .find(|k| r.kind == k.as_str())?;
        Some(
            ClusterResource::from_parts(kind, r.name.as_str(), r.labels.clone(), r.spec.clone())
                .map_err(|errors| StoredResourceError {
                    kind: r.kind.to_string(),
                    name: r.name.to_string(),
                    errors,
                }),
        )
    }

    /// The document form: apiVersion, kind, metadata, spec.
    pub fn to_document(&self) -> serde_json::Value {
        let mut metadata = serde_json::json!({ "name": self.name });
        if !self.labels.is_empty() {
            metadata["labels"] = serde_json::json!(self.labels);
        }
        serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": self.kind().as_str(),
            "metadata": metadata,
            "spec": self.spec_json(),
        })
    }
}

/// A community as resources write it: `AS:VALUE` or a well-known name (standard), or
/// `AS:V1:V2` (large).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Community {
    Standard(CommunityValue),
    Large(LargeCommunityValue),
}

/// Parses a community value; the error names the value.
pub fn parse_community(s: &str) -> Result<Community, String> {
    if s.matches(':').count() == 2 {
        return s
            .parse::<LargeCommunityValue>()
            .map(Community::Large)
            .map_err(|e| format!("{s:?}: {e}"));
    }
    s.parse::<CommunityValue>()
        .map(Community::Standard)
        .map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crds_are_cluster_scoped_in_our_group_with_calico_names() {
        let crds = [
            bgp_configuration::BGPConfiguration::crd(),
            bgp_peer::BGPPeer::crd(),
            bgp_filter::BGPFilter::crd(),
            serval_node::ServalNode::crd(),
            ip_reservation::IPReservation::crd(),
            bfd_profile::BFDProfile::crd(),
        ];
        for crd in &crds {
            assert_eq!(crd.spec.group, "serval.dev");
            assert_eq!(crd.spec.scope, "Cluster");
            assert_eq!(crd.spec.versions[0].name, "v1");
        }
        let text = serde_json::to_string(&crds).unwrap();
        for field in [
            "nodeToNodeMeshEnabled",
            "serviceLoadBalancerIPs",
            "prefixAdvertisements",
            "peerIP",
            "keepOriginalNextHop",
            "numAllowedLocalASNumbers",
            "routeReflectorClusterID",
            "ipv4IPIPTunnelAddr",
            "ipv4VXLANTunnelAddr",
            "vxlanTunnelMACAddr",
            "exportV4",
            "matchOperator",
            "bfdProfile",
            "nodeMeshBFDProfile",
            "failureDetectionMode",
            "receiveInterval",
            "detectMultiplier",
            "minimumTtl",
        ] {
            assert!(text.contains(field), "{field} missing from the CRDs");
        }
    }

    #[test]
    fn kinds_parse_as_people_type_them() {
        for (s, k) in [
            ("BGPPeer", ResourceKind::BgpPeer),
            ("bgppeers", ResourceKind::BgpPeer),
            ("bgpconfig", ResourceKind::BgpConfiguration),
            ("BGPConfigurations", ResourceKind::BgpConfiguration),
            ("node", ResourceKind::ServalNode),
            ("ServalNodes", ResourceKind::ServalNode),
            ("bgpfilter", ResourceKind::BgpFilter),
            ("ipreservations", ResourceKind::IpReservation),
            ("IPReservation", ResourceKind::IpReservation),
            ("bfdprofiles", ResourceKind::BfdProfile),
            ("BFDProfile", ResourceKind::BfdProfile),
        ] {
            assert_eq!(ResourceKind::parse(s), Some(k), "{s}");
        }
        assert_eq!(ResourceKind::parse("ippool"), None);
    }

    #[test]
    fn every_kind_is_a_datastore_kind() {
        for kind in ResourceKind::ALL {
            assert_eq!(kind.stored(), kind.as_str());
        }
        // The kind the IPAM reads reservations as.
        assert_eq!(
            ResourceKind::IpReservation.stored(),
            ipam::reservation::KIND
        );
    }

    #[test]
    fn stored_round_trip() {
        let spec = serde_json::json!({"peerIP": "[fd00::1]:1790", "asNumber": 65000,
            "nodeSelector": "rack == 'a'", "password": {"value": "pw"}, "keepAliveTime": "10s"});
        let r = ClusterResource::from_parts(ResourceKind::BgpPeer, "tor", BTreeMap::new(), spec)
            .unwrap();
        let stored = r.to_stored();
        assert_eq!(stored.kind, "BGPPeer");
        let back = ClusterResource::from_stored(&stored).unwrap().unwrap();
        assert_eq!(back, r);
        let other = ipam::store::Resource {
            kind: ipam::store::ResourceKind::from_static("Widget"),
            ..stored
        };
        assert!(ClusterResource::from_stored(&other).is_none());
    }

    #[test]
    fn communities() {
        assert!(matches!(
            parse_community("65000:100"),
            Ok(Community::Standard(_))
        ));
        assert!(matches!(
            parse_community("no-export"),
            Ok(Community::Standard(_))
        ));
        assert!(matches!(
            parse_community("65000:1:2"),
            Ok(Community::Large(_))
        ));
        let e = parse_community("65536:1").unwrap_err();
        assert!(e.contains("65536"), "{e}");
    }
}
