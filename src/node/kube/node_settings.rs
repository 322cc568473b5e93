//! What the Kubernetes `Node` says about this node: its addresses, AS and labels.
//!
//! Pure: [`from_node`] reads a `Node` object, [`merge`] lays the result under what the
//! agent was told explicitly. The addresses come, first found, from
//!
//! 1. the annotations `serval.dev/ipv4-address`, `serval.dev/ipv6-address`;
//! 2. Calico's `projectcalico.org/IPv4Address`, `projectcalico.org/IPv6Address`, so that
//!    nodes moved over from Calico keep the addresses their BGP peers know;
//! 3. the Node's `status.addresses` of type `InternalIP` (without a prefix length: the
//!    agent takes it from the interface that carries the address).
//!
//! The AS from `serval.dev/as-number`, else `projectcalico.org/ASNumber`. Labels are
//! the Node's labels, for the selectors of BGPPeers and IP pools.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;

use crate::node::config::AddressSource;

pub const ANNOTATION_IPV4: &str = "serval.dev/ipv4-address";
pub const ANNOTATION_IPV6: &str = "serval.dev/ipv6-address";
pub const ANNOTATION_AS: &str = "serval.dev/as-number";
pub const CALICO_IPV4: &str = "projectcalico.org/IPv4Address";
pub const CALICO_IPV6: &str = "projectcalico.org/IPv6Address";
pub const CALICO_AS: &str = "projectcalico.org/ASNumber";

/// One address as the Node gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeAddress {
    /// With its subnet's prefix length (an annotation written `ADDR/LEN`).
    Net(IpNet),
    /// Without one (`status.addresses`, or an annotation written `ADDR`).
    Addr(IpAddr),
}

impl NodeAddress {
    fn source(self) -> AddressSource {
        match self {
            NodeAddress::Net(n) => AddressSource::Fixed(n),
            NodeAddress::Addr(a) => AddressSource::Address(a),
        }
    }
}

/// What the Node says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSettings {
    pub v4: Option<NodeAddress>,
    pub v6: Option<NodeAddress>,
    pub as_number: Option<u32>,
    pub labels: BTreeMap<String, String>,
    /// Annotations that could not be read, each naming the annotation and its value.
    pub problems: Vec<String>,
}

fn parse_addr(text: &str, v4: bool) -> Option<NodeAddress> {
    let text = text.trim();
    if let Ok(n) = text.parse::<IpNet>() {
        return (n.addr().is_ipv4() == v4).then_some(NodeAddress::Net(n));
    }
    match text.parse::<IpAddr>() {
        Ok(a) if a.is_ipv4() == v4 => Some(NodeAddress::Addr(a)),
        _ => None,
    }
}

/// Reads the Node; every annotation that is present but wrong is a problem and is
/// passed over for the next source.
pub fn from_node(node: &Node) -> NodeSettings {
    let mut out = NodeSettings::default();
    let empty = BTreeMap::new();
    let ann = node.metadata.annotations.as_ref().unwrap_or(&empty);
    out.labels = node.metadata.labels.clone().unwrap_or_default();
    let internal: Vec<IpAddr> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            a.iter()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for (v4, names) in [
        (true, [ANNOTATION_IPV4, CALICO_IPV4]),
        (false, [ANNOTATION_IPV6, CALICO_IPV6]),
    ] {
        let mut found = None;
        for name in names {
            let Some(text) = ann.get(name) else { continue };
            match parse_addr(text, v4) {
                Some(a) => {
                    found = Some(a);
                    break;
                }
                None => out.problems.push(format!(
                    "Node annotation {name}: {text:?} is not an {} address",
                    if v4 { "IPv4" } else { "IPv6" }
                )),
            }
        }
        let found = found.or_else(|| {
            internal
                .iter()
                .find(|a| a.is_ipv4() == v4)
                .map(|a| NodeAddress::Addr(*a))
        });
        if v4 {
            out.v4 = found;
        } else {
            out.v6 = found;
        }
    }
    for name in [ANNOTATION_AS, CALICO_AS] {
        let Some(text) = ann.get(name) else { continue };
        match text.trim().parse::<u32>() {
            Ok(n) if n != 0 => {
                out.as_number = Some(n);
                break;
            }
            _ => out.problems.push(format!(
                "Node annotation {name}: {text:?} is not an AS number (1 to 4294967295)"
            )),
        }
    }
    out
}

/// What the agent was told, and whether it was told explicitly.
#[derive(Clone, Debug, PartialEq)]
pub struct Given {
    pub ip: AddressSource,
    pub ip_explicit: bool,
    pub ip6: AddressSource,
    pub ip6_explicit: bool,
    pub as_number: Option<u32>,
    pub labels: BTreeMap<String, String>,
}

/// The settings the agent runs with: what it was told explicitly wins, then the Node,
/// then the defaults it was given (autodetection). Labels: the Node's, with the
/// configured ones over them.
pub fn merge(given: &Given, node: &NodeSettings) -> Given {
    let pick = |explicit: bool, given: &AddressSource, from_node: Option<NodeAddress>| match (
        explicit, from_node,
    ) {
        (false, Some(a)) => a.source(),
        _ => given.clone(),
    };
    let mut labels = node.labels.clone();
    labels.extend(given.labels.clone());
    Given {
        ip: pick(given.ip_explicit, &given.ip, node.v4),
        ip_explicit: given.ip_explicit,
        ip6: pick(given.ip6_explicit, &given.ip6, node.v6),
        ip6_explicit: given.ip6_explicit,
        as_number: given.as_number.or(node.as_number),
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::autodetect::Method;
    use k8s_openapi::api::core::v1::{NodeAddress as K8sAddress, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(ann: &[(&str, &str)], internal: &[&str]) -> Node {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                annotations: Some(map(ann)),
                labels: Some(map(&[("topology.kubernetes.io/zone", "z1")])),
                ..ObjectMeta::default()
            },
            status: Some(NodeStatus {
                addresses: Some(
                    internal
                        .iter()
                        .map(|a| K8sAddress {
                            address: (*a).into(),
                            type_: "InternalIP".into(),
                        })
                        .chain([K8sAddress {
                            address: "n1.example".into(),
                            type_: "Hostname".into(),
                        }])
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    fn net(s: &str) -> Option<NodeAddress> {
        Some(NodeAddress::Net(s.parse().unwrap()))
    }
    fn addr(s: &str) -> Option<NodeAddress> {
        Some(NodeAddress::Addr(s.parse().unwrap()))
    }

    #[test]
    fn node_to_settings_table() {
        // (what, annotations, InternalIPs, v4, v6, AS, problems)
        type Case = (
            &'static str,
            Vec<(&'static str, &'static str)>,
            Vec<&'static str>,
            Option<NodeAddress>,
            Option<NodeAddress>,
            Option<u32>,
            usize,
        );
        let cases: Vec<Case> = vec![
            ("nothing", vec![], vec![], None, None, None, 0),
            (
                "InternalIPs of both families",
                vec![],
                vec!["192.0.2.10", "2001:db8::10"],
                addr("192.0.2.10"),
                addr("2001:db8::10"),
                None,
                0,
            ),
            (
                "serval annotations win over InternalIP",
                vec![
                    (ANNOTATION_IPV4, "198.51.100.7/24"),
                    (ANNOTATION_IPV6, "2001:db8:1::7/64"),
                    (ANNOTATION_AS, "65010"),
                ],
                vec!["192.0.2.10"],
                net("198.51.100.7/24"),
                net("2001:db8:1::7/64"),
                Some(65010),
                0,
            ),
            (
                "Calico's annotations for people moving over",
                vec![(CALICO_IPV4, "10.0.0.5/16"), (CALICO_AS, "64600")],
                vec!["192.0.2.10"],
                net("10.0.0.5/16"),
                None,
                Some(64600),
                0,
            ),
            (
                "serval's over Calico's",
                vec![
                    (CALICO_IPV4, "10.0.0.5/16"),
                    (ANNOTATION_IPV4, "10.1.0.5"),
                    (CALICO_AS, "64600"),
                    (ANNOTATION_AS, "64700"),
                ],
                vec![],
                addr("10.1.0.5"),
                None,
                Some(64700),
                0,
            ),
            (
                "a wrong annotation is reported and passed over",
                vec![
                    (ANNOTATION_IPV4, "2001:db8::1/64"),
                    (ANNOTATION_AS, "0"),
                    (CALICO_AS, "sixty"),
                ],
                vec!["192.0.2.10"],
                addr("192.0.2.10"),
                None,
                None,
                3,
            ),
        ];
        for (what, ann, internal, v4, v6, asn, problems) in cases {
            let s = from_node(&node(&ann, &internal));
            assert_eq!(s.v4, v4, "{what}");
            assert_eq!(s.v6, v6, "{what}");
            assert_eq!(s.as_number, asn, "{what}");
            assert_eq!(s.problems.len(), problems, "{what}: {:?}", s.problems);
            assert_eq!(s.labels["topology.kubernetes.io/zone"], "z1", "{what}");
        }
    }

    #[test]
    fn explicit_settings_win_over_the_node() {
        let node = NodeSettings {
            v4: net("198.51.100.7/24"),
            v6: addr("2001:db8::7"),
            as_number: Some(65010),
            labels: [
                ("rack".to_owned(), "r1".to_owned()),
                ("zone".to_owned(), "a".to_owned()),
            ]
            .into(),
            problems: vec![],
        };
        let defaults = Given {
            ip: AddressSource::Autodetect(Method::FirstFound),
            ip_explicit: false,
            ip6: AddressSource::None,
            ip6_explicit: false,
            as_number: None,
            labels: [("zone".to_owned(), "b".to_owned())].into(),
        };
        let got = merge(&defaults, &node);
        assert_eq!(
            got.ip,
            AddressSource::Fixed("198.51.100.7/24".parse().unwrap())
        );
        assert_eq!(
            got.ip6,
            AddressSource::Address("2001:db8::7".parse().unwrap())
        );
        assert_eq!(got.as_number, Some(65010));
        assert_eq!(got.labels["rack"], "r1");
        assert_eq!(got.labels["zone"], "b", "configured labels win");
        let told = Given {
            ip: AddressSource::Autodetect(Method::CanReach("192.0.2.1".parse().unwrap())),
            ip_explicit: true,
            ip6: AddressSource::None,
            ip6_explicit: true,
            as_number: Some(64999),
            ..defaults.clone()
        };
        let got = merge(&told, &node);
        assert_eq!(got.ip, told.ip, "an explicit autodetection method wins");
        assert_eq!(got.ip6, AddressSource::None, "ip6 = none given explicitly");
        assert_eq!(got.as_number, Some(64999));
        let nothing = merge(&defaults, &NodeSettings::default());
        assert_eq!(nothing.ip, defaults.ip, "no Node address: autodetect");
    }
}
