//! `ServalNodeStatus`: the live state of one node's agent, BGP sessions and routes,
//! Calico's `CalicoNodeStatus` with its field names. A user creates one object per node
//! they want to watch, naming the node and the classes of state to report; the node's
//! agent fills `status` every `updatePeriodSeconds` (through the status subresource, with
//! server-side apply), so `kubectl get servalnodestatus NAME -o yaml` shows what
//! `serval bgp peers` shows on the node.
//!
//! Calico splits sessions and routes by address family (its BIRD runs once per family);
//! serval keeps the split in the field names (`peersV4`, `routesV6`, …) so that tools
//! written against CalicoNodeStatus read these objects unchanged.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which node to report on and what to report.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serval.dev",
    version = "v1",
    kind = "ServalNodeStatus",
    plural = "servalnodestatuses",
    status = "ServalNodeStatusStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Agent","type":"string","jsonPath":".status.agent.state"}"#,
    printcolumn = r#"{"name":"Established-V4","type":"integer","jsonPath":".status.bgp.numberEstablishedV4"}"#,
    printcolumn = r#"{"name":"Established-V6","type":"integer","jsonPath":".status.bgp.numberEstablishedV6"}"#,
    printcolumn = r#"{"name":"Updated","type":"date","jsonPath":".status.lastUpdated"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServalNodeStatusSpec {
    /// The node whose agent writes the status.
    pub node: String,
    /// What to report; each class fills one part of `status`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<NodeStatusClass>,
    /// How often the agent refreshes the status, in seconds; 0 stops the updates
    /// (Calico's default is 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_period_seconds: Option<u32>,
}

/// A class of state the agent reports.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum NodeStatusClass {
    /// `status.agent`: the agent's own state.
    Agent,
    /// `status.bgp`: every BGP session.
    #[serde(rename = "BGP")]
    Bgp,
    /// `status.routes`: the routes the agent learned or programmed.
    Routes,
}

/// What the agent last saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServalNodeStatusStatus {
    /// When the agent last wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<Time>,
    /// The agent's state (class `Agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentStatus>,
    /// The BGP sessions (class `BGP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpStatus>,
    /// The routes (class `Routes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<RoutesStatus>,
}

/// The agent's own state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentStatus {
    /// Ready once the speaker runs and the dataplane is programmed.
    pub state: AgentState,
    /// The agent's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The speaker's BGP identifier.
    #[serde(default, rename = "routerID", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub router_id: Option<std::net::Ipv4Addr>,
    /// When the agent started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_boot_time: Option<Time>,
    /// When the agent last applied a configuration change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconfiguration_time: Option<Time>,
}

/// Whether the agent is ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AgentState {
    Ready,
    #[default]
    NotReady,
}

/// Counts and list of the BGP sessions, per address family of the peer address.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpStatus {
    /// IPv4 sessions in state Established.
    #[serde(default, rename = "numberEstablishedV4")]
    pub number_established_v4: u32,
    /// IPv4 sessions in any other state.
    #[serde(default, rename = "numberNotEstablishedV4")]
    pub number_not_established_v4: u32,
    /// IPv6 sessions in state Established.
    #[serde(default, rename = "numberEstablishedV6")]
    pub number_established_v6: u32,
    /// IPv6 sessions in any other state.
    #[serde(default, rename = "numberNotEstablishedV6")]
    pub number_not_established_v6: u32,
    /// The IPv4 sessions.
    #[serde(default, rename = "peersV4", skip_serializing_if = "Vec::is_empty")]
    pub peers_v4: Vec<BgpPeerStatus>,
    /// The IPv6 sessions.
    #[serde(default, rename = "peersV6", skip_serializing_if = "Vec::is_empty")]
    pub peers_v6: Vec<BgpPeerStatus>,
}

impl BgpStatus {
    /// The status of these sessions with the counts computed from them, so that the
    /// counts and the lists cannot disagree.
    pub fn from_peers(peers_v4: Vec<BgpPeerStatus>, peers_v6: Vec<BgpPeerStatus>) -> BgpStatus {
        let established = |ps: &[BgpPeerStatus]| {
            let n = ps
                .iter()
                .filter(|p| p.state == BgpSessionState::Established)
                .count();
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            let total = u32::try_from(ps.len()).unwrap_or(u32::MAX);
            (n, total - n)
        };
        let (e4, n4) = established(&peers_v4);
        let (e6, n6) = established(&peers_v6);
        BgpStatus {
            number_established_v4: e4,
            number_not_established_v4: n4,
            number_established_v6: e6,
            number_not_established_v6: n6,
            peers_v4,
            peers_v6,
        }
    }
}

/// One BGP session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerStatus {
    /// The peer's address.
    #[serde(rename = "peerIP")]
    #[schemars(with = "String")]
    pub peer_ip: std::net::IpAddr,
    /// Where the session comes from.
    #[serde(rename = "type")]
    pub peer_type: BgpPeerType,
    /// The session's RFC 4271 §8 state.
    pub state: BgpSessionState,
    /// When the session entered `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The peer's AS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// Prefixes accepted from the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefixes_received: Option<u32>,
    /// Prefixes advertised to the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefixes_advertised: Option<u32>,
    /// Why the session last went down (a NOTIFICATION, a connection error, or
    /// `BFD down: <diagnostic>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The session's BFD (RFC 5880), when it runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdSessionStatus>,
}

/// A BGP session's BFD session: its state, the intervals in use (milliseconds, named as
/// in `BFDProfile`) and why it last changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BfdSessionStatus {
    /// The RFC 5880 state.
    pub state: BfdSessionState,
    /// RFC 5883 multihop (UDP 4784) rather than single hop (RFC 5881, UDP 3784).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub multihop: bool,
    /// The negotiated transmit interval, before jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmit_interval: Option<u32>,
    /// The negotiated receive interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_interval: Option<u32>,
    /// This side's detect multiplier.
    pub detect_multiplier: u8,
    /// How long without a packet before the session fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection_time: Option<u32>,
    /// Why this side last changed state (RFC 5880 §4.1 diagnostic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_diagnostic: Option<String>,
    /// The peer's last diagnostic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_diagnostic: Option<String>,
    /// Times BFD went down from Up.
    #[serde(default)]
    pub failures: u64,
}

/// The states of a BFD session (RFC 5880 §4.1); `Unknown` when the speaker's BFD task
/// did not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BfdSessionState {
    AdminDown,
    Down,
    Init,
    Up,
    Unknown,
}

/// Where a session comes from, as Calico names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BgpPeerType {
    /// The node-to-node mesh.
    NodeMesh,
    /// A BGPPeer with `node` or `nodeSelector`.
    NodePeer,
    /// A BGPPeer for every node.
    GlobalPeer,
}

/// The states of the BGP finite state machine (RFC 4271 §8.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BgpSessionState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
    /// The session is administratively shut down.
    Close,
}

/// The routes, per family.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutesStatus {
    /// IPv4 routes.
    #[serde(default, rename = "routesV4", skip_serializing_if = "Vec::is_empty")]
    pub routes_v4: Vec<RouteStatus>,
    /// IPv6 routes.
    #[serde(default, rename = "routesV6", skip_serializing_if = "Vec::is_empty")]
    pub routes_v6: Vec<RouteStatus>,
}

/// One route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteStatus {
    /// FIB: programmed in the kernel; RIB: known to the speaker.
    #[serde(rename = "type")]
    pub route_type: RouteTable,
    /// The destination prefix.
    #[schemars(with = "String")]
    pub destination: ipnet::IpNet,
    /// The next hop; absent for directly connected routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub gateway: Option<std::net::IpAddr>,
    /// The outgoing interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Where the route came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned_from: Option<RouteSource>,
}

/// Which table a route is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum RouteTable {
    /// The kernel's forwarding table.
    FIB,
    /// The speaker's routing table.
    RIB,
}

/// Where a route was learned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSource {
    /// The kind of source.
    pub source_type: RouteSourceType,
    /// The BGP peer, for `NodeMesh` and `BGPPeer`.
    #[serde(default, rename = "peerIP", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub peer_ip: Option<std::net::IpAddr>,
}

/// The kinds of route source, as Calico names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RouteSourceType {
    Kernel,
    Static,
    Direct,
    NodeMesh,
    #[serde(rename = "BGPPeer")]
    BgpPeer,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    const CALICO_SHAPED: &str = r#"
apiVersion: serval.dev/v1
kind: ServalNodeStatus
metadata:
  name: node-1
spec:
  node: node-1
  classes: [Agent, BGP, Routes]
  updatePeriodSeconds: 10
status:
  lastUpdated: "2024-05-01T10:00:00Z"
  agent:
    state: Ready
    version: v0.1.0
    routerID: 192.0.2.10
    lastBootTime: "2024-05-01T09:00:00Z"
  bgp:
    numberEstablishedV4: 1
    numberNotEstablishedV4: 1
    numberEstablishedV6: 0
    numberNotEstablishedV6: 0
    peersV4:
      - peerIP: 192.0.2.11
        type: NodeMesh
        state: Established
        since: "2024-05-01T09:00:05Z"
      - peerIP: 192.0.2.254
        type: GlobalPeer
        state: Active
        lastError: "BFD down: control detection time expired"
        bfd:
          state: Down
          multihop: true
          transmitInterval: 300
          receiveInterval: 300
          detectMultiplier: 3
          detectionTime: 900
          lastDiagnostic: control detection time expired
          failures: 2
  routes:
    routesV4:
      - type: FIB
        destination: 10.65.1.0/26
        gateway: 192.0.2.11
        interface: eth0
        learnedFrom: {sourceType: NodeMesh, peerIP: 192.0.2.11}
      - type: RIB
        destination: 10.65.0.0/26
        interface: blackhole
        learnedFrom: {sourceType: Static}
"#;

    #[test]
    fn calico_shaped_status_round_trips() {
        let s: ServalNodeStatus = serde_yaml::from_str(CALICO_SHAPED).unwrap();
        assert_eq!(
            s.spec.classes,
            [
                NodeStatusClass::Agent,
                NodeStatusClass::Bgp,
                NodeStatusClass::Routes
            ]
        );
        let status = s.status.as_ref().unwrap();
        let bgp = status.bgp.as_ref().unwrap();
        assert_eq!(bgp.peers_v4[1].state, BgpSessionState::Active);
        let bfd = bgp.peers_v4[1].bfd.as_ref().unwrap();
        assert_eq!(
            (bfd.state, bfd.transmit_interval, bfd.detection_time),
            (BfdSessionState::Down, Some(300), Some(900))
        );
        assert!(bgp.peers_v4[0].bfd.is_none());
        let routes = &status.routes.as_ref().unwrap().routes_v4;
        assert_eq!(routes[0].route_type, RouteTable::FIB);
        assert_eq!(
            routes[0].learned_from.as_ref().unwrap().source_type,
            RouteSourceType::NodeMesh
        );
        let again: ServalNodeStatus =
            serde_yaml::from_str(&serde_yaml::to_string(&s).unwrap()).unwrap();
        assert_eq!(again.spec, s.spec);
        assert_eq!(again.status, s.status);
    }

    #[test]
    fn wrong_values_are_rejected() {
        for (from, to) in [
            ("classes: [Agent, BGP, Routes]", "classes: [Agent, Bgp]"),
            ("state: Established", "state: Up"),
            ("type: FIB", "type: Kernel"),
            ("peerIP: 192.0.2.254", "peerIP: tor-1"),
            ("destination: 10.65.0.0/26", "destination: 10.65.0.0"),
            ("updatePeriodSeconds: 10", "updatePeriodSeconds: -1"),
            ("numberEstablishedV4: 1", "numberEstablishedIPv4: 1"),
            ("state: Down", "state: Failed"),
            ("detectionTime: 900", "detectionTimeMs: 900"),
        ] {
            let text = CALICO_SHAPED.replace(from, to);
            assert_ne!(text, CALICO_SHAPED, "{from} not in the sample");
            assert!(
                serde_yaml::from_str::<ServalNodeStatus>(&text).is_err(),
                "{to} accepted"
            );
        }
    }

    #[test]
    fn counts_follow_the_sessions() {
        let peer = |ip: &str, state| BgpPeerStatus {
            peer_ip: ip.parse().unwrap(),
            peer_type: BgpPeerType::NodeMesh,
            state,
            since: None,
            as_number: None,
            prefixes_received: None,
            prefixes_advertised: None,
            last_error: None,
            bfd: None,
        };
        let s = BgpStatus::from_peers(
            vec![
                peer("192.0.2.1", BgpSessionState::Established),
                peer("192.0.2.2", BgpSessionState::OpenSent),
                peer("192.0.2.3", BgpSessionState::Established),
            ],
            vec![peer("fd00::1", BgpSessionState::Idle)],
        );
        assert_eq!(
            (
                s.number_established_v4,
                s.number_not_established_v4,
                s.number_established_v6,
                s.number_not_established_v6
            ),
            (2, 1, 0, 1)
        );
    }

    #[test]
    fn crd_has_a_status_subresource_and_calico_names() {
        let crd = ServalNodeStatus::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.plural, "servalnodestatuses");
        let v = &crd.spec.versions[0];
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "no status subresource: the agent could not write status alone"
        );
        let text = serde_json::to_string(&crd).unwrap();
        for field in [
            "updatePeriodSeconds",
            "numberNotEstablishedV6",
            "peersV4",
            "routesV6",
            "learnedFrom",
            "lastBootTime",
            "detectMultiplier",
            "lastDiagnostic",
            "transmitInterval",
        ] {
            assert!(text.contains(field), "{field} missing");
        }
    }
}
