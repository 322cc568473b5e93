//! What `serval node status` reports: the node, its BGP peers with how each came to be
//! configured, the routes serval programmed, tunnels, NAT pools and the last reconcile,
//! as `calicoctl node status` and `birdc show protocols` do. Serializable: the text
//! view and `--json` print the same data.
//!
//! JSON field names are snake_case and stable: scripts and the lab read them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use bgp::status::{BfdState, BfdStatus, PeerStatus};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::node::dataplane::{NextHop, RouteTarget, IPIP_DEVICE, VXLAN_DEVICE, VXLAN_V6_DEVICE};
use crate::node::desired::PeerType;

/// The whole report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// `file:…`, `etcd:…` or `kubernetes`.
    pub datastore: String,
    pub ipv4_address: Option<IpNet>,
    pub ipv6_address: Option<IpNet>,
    pub asn: u32,
    pub router_id: Option<Ipv4Addr>,
    /// Set when this node is a route reflector.
    pub cluster_id: Option<Ipv4Addr>,
    /// Ready: speaker running, datastore reachable, first reconcile applied.
    pub ready: bool,
    /// Why the node is not ready, or what it could not honour.
    pub problems: Vec<String>,
    pub datastore_ok: bool,
    /// The first full route sync after start (stale routes removed) has happened.
    pub bgp_initial_sync_done: bool,
    pub peers: Vec<PeerRow>,
    /// Number of routes serval holds in the kernel (blackholes included).
    pub routes_programmed: usize,
    pub routes: Vec<RouteRow>,
    pub tunnels: Vec<TunnelRow>,
    /// Pools whose traffic to the outside is masqueraded.
    pub nat_pools: Vec<IpNet>,
    /// The pod MTU written for the CNI plugin.
    pub mtu: Option<u32>,
    /// Seconds since the Unix epoch of the last reconcile.
    pub last_reconcile_unix: Option<u64>,
    /// How long it took, in milliseconds.
    pub last_reconcile_ms: Option<f64>,
    /// Errors of the last reconcile.
    pub last_reconcile_errors: Vec<String>,
}

/// One BGP peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerRow {
    pub address: IpAddr,
    /// The node or BGPPeer it comes from.
    pub name: Option<String>,
    /// `mesh`, `global`, `node-specific`, `rr-client`, `node-peer`.
    #[serde(rename = "type")]
    pub peer_type: PeerType,
    pub asn: u32,
    /// RFC 4271 state name.
    pub state: bgp::status::SessionState,
    /// Seconds in Established.
    pub uptime_secs: Option<u64>,
    pub prefixes_received: u32,
    pub prefixes_accepted: u32,
    pub prefixes_sent: u32,
    pub flaps: u64,
    pub last_error: Option<String>,
    /// The session's BFD (RFC 5880), when it runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdRow>,
}

/// A session's BFD: its state, the intervals in use and why it last changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdRow {
    pub state: BfdState,
    /// RFC 5883 multihop rather than RFC 5881 single hop.
    pub multihop: bool,
    /// The negotiated transmit interval (before jitter) and receive interval, once the
    /// peer has been heard.
    pub tx_interval_ms: Option<u32>,
    pub rx_interval_ms: Option<u32>,
    /// How long without a packet before the session fails.
    pub detection_time_ms: Option<u32>,
    /// This side's multiplier, as configured.
    pub multiplier: u8,
    /// Why this side last changed state and the peer's (RFC 5880 §4.1 names).
    pub local_diag: Option<String>,
    pub remote_diag: Option<String>,
    /// Times BFD went down from Up.
    pub failures: u64,
    /// Seconds BGP stays held down after BFD failures in a row.
    pub hold_down_secs: Option<u64>,
}

impl BfdRow {
    pub fn from_status(b: &BfdStatus) -> BfdRow {
        BfdRow {
            state: b.state,
            multihop: b.multihop,
            tx_interval_ms: b.tx_interval_ms,
            rx_interval_ms: b.rx_interval_ms,
            detection_time_ms: b.detection_time_ms,
            multiplier: b.multiplier,
            local_diag: b.local_diag.clone(),
            remote_diag: b.remote_diag.clone(),
            failures: b.failures,
            hold_down_secs: b.hold_down_secs,
        }
    }

    /// The state as a number for the metrics (RFC 5880 §4.1 codes: AdminDown 0, Down 1,
    /// Init 2, Up 3); `None` for `Unknown`.
    pub fn state_code(&self) -> Option<u8> {
        self.state.code()
    }

    /// The last diagnostic worth showing: ours, else the peer's.
    pub fn last_diag(&self) -> Option<&str> {
        self.local_diag.as_deref().or(self.remote_diag.as_deref())
    }

    /// One cell of the text table: `Up 300/300ms ×3` or `Down (Control Detection
    /// Time Expired)`.
    pub fn summary(&self) -> String {
        let mut out = self.state.to_string();
        if let (Some(tx), Some(rx)) = (self.tx_interval_ms, self.rx_interval_ms) {
            out.push_str(&format!(" tx {tx}ms rx {rx}ms x{}", self.multiplier));
        }
        if self.state != BfdState::Up {
            if let Some(d) = self.last_diag() {
                out.push_str(&format!(" ({d})"));
            }
        }
        out
    }
}

/// One route serval programmed (or tried to).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRow {
    pub prefix: IpNet,
    /// `direct`, `ipip`, `vxlan`, `blackhole`, or `mixed` for ECMP over several kinds.
    pub kind: String,
    /// The next hop (`, `-separated for ECMP); none for a blackhole.
    pub via: Option<String>,
    /// The tunnel device, or for a direct route the interface of the next hop's subnet.
    pub device: Option<String>,
    /// Number of next hops (ECMP when more than one).
    pub paths: usize,
    /// Why the kernel does not hold it, if it does not.
    pub error: Option<String>,
}

/// One tunnel device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRow {
    pub device: String,
    /// The node's address on it.
    pub address: Option<IpAddr>,
    pub mtu: Option<u32>,
    /// The pools that asked for it.
    pub pools: String,
    pub error: Option<String>,
}

/// The rows of the peers, joining the speaker's view with how each peer was configured.
pub fn peer_rows(peers: &[PeerStatus], types: &BTreeMap<IpAddr, PeerType>) -> Vec<PeerRow> {
    peers
        .iter()
        .map(|p| {
            let (mut rcv, mut acc, mut sent) = (0, 0, 0);
            for f in &p.families {
                rcv += f.received;
                acc += f.accepted;
                sent += f.sent;
            }
            PeerRow {
                address: p.address,
                name: p.name.clone(),
                peer_type: types.get(&p.address).copied().unwrap_or(PeerType::Global),
                asn: p.asn.0,
                state: p.state,
                uptime_secs: p.uptime_secs,
                prefixes_received: rcv,
                prefixes_accepted: acc,
                prefixes_sent: sent,
                flaps: p.flaps,
                last_error: p.last_error.clone(),
                bfd: p.bfd.as_ref().map(BfdRow::from_status),
            }
        })
        .collect()
}

fn hop_kind(h: &NextHop) -> &'static str {
    match h {
        NextHop::Direct { .. } => "direct",
        NextHop::Ipip { .. } => "ipip",
        NextHop::Vxlan(_) => "vxlan",
    }
}

fn hop_via(h: &NextHop) -> String {
    match h {
        NextHop::Direct { gateway, .. } => gateway.to_string(),
        NextHop::Ipip { gateway } => gateway.to_string(),
        NextHop::Vxlan(p) => p.vtep_addr.to_string(),
    }
}

/// One route's row; `subnet_device` names the interface of a direct next hop's subnet.
pub fn route_row(
    prefix: IpNet,
    target: &RouteTarget,
    subnet_device: &dyn Fn(IpAddr) -> Option<String>,
    error: Option<String>,
) -> RouteRow {
    let hops = target.next_hops();
    let mut kinds: Vec<&str> = hops.iter().map(|h| hop_kind(h)).collect();
    kinds.dedup();
    let kind = match (target, kinds.as_slice()) {
        (RouteTarget::Blackhole, _) => "blackhole",
        (_, [one]) => one,
        _ => "mixed",
    };
    let device = hops.first().and_then(|h| match h {
        NextHop::Direct { gateway, dev } => dev.clone().or_else(|| subnet_device(*gateway)),
        NextHop::Ipip { .. } => Some(IPIP_DEVICE.to_owned()),
        NextHop::Vxlan(p) if p.vtep_addr.is_ipv4() => Some(VXLAN_DEVICE.to_owned()),
        NextHop::Vxlan(_) => Some(VXLAN_V6_DEVICE.to_owned()),
    });
    let via: Vec<String> = hops.iter().map(|h| hop_via(h)).collect();
    RouteRow {
        prefix,
        kind: kind.to_owned(),
        via: (!via.is_empty()).then(|| via.join(", ")),
        device,
        paths: hops.len(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::dataplane::{Mac, VxlanPeer};

    fn speaker_bfd(state: BfdState, diag: Option<&str>) -> BfdStatus {
        BfdStatus {
            state,
            remote_state: None,
            multihop: true,
            min_rx_ms: 100,
            min_tx_ms: 100,
            multiplier: 3,
            passive: false,
            tx_interval_ms: Some(100),
            rx_interval_ms: Some(120),
            detection_time_ms: Some(360),
            local_diag: diag.map(str::to_owned),
            remote_diag: None,
            local_discriminator: Some(1),
            remote_discriminator: Some(2),
            packets_sent: 10,
            packets_received: 9,
            failures: 2,
            hold_down_secs: Some(4),
        }
    }

    #[test]
    fn bfd_rows_carry_state_intervals_and_diagnostic() {
        let up = BfdRow::from_status(&speaker_bfd(BfdState::Up, None));
        assert_eq!(
            (up.tx_interval_ms, up.rx_interval_ms, up.detection_time_ms),
            (Some(100), Some(120), Some(360))
        );
        assert!(up.multihop);
        assert_eq!((up.failures, up.hold_down_secs), (2, Some(4)));
        assert_eq!(up.summary(), "Up tx 100ms rx 120ms x3");
        assert_eq!(up.state_code(), Some(3));
        let down = BfdRow::from_status(&speaker_bfd(
            BfdState::Down,
            Some("control detection time expired"),
        ));
        assert_eq!(
            down.summary(),
            "Down tx 100ms rx 120ms x3 (control detection time expired)"
        );
        assert_eq!(down.state_code(), Some(1));
        assert_eq!(
            BfdRow::from_status(&speaker_bfd(BfdState::Unknown, None)).state_code(),
            None
        );
    }

    #[test]
    fn route_rows_name_kind_via_and_device() {
        let dev = |ip: IpAddr| (ip.to_string().starts_with("192.0.2.")).then(|| "eth0".to_owned());
        let vx = VxlanPeer {
            vtep_addr: "10.67.0.1".parse().unwrap(),
            vtep_mac: Mac([2, 0, 0, 0, 0, 1]),
            node_addr: "198.51.100.2".parse().unwrap(),
        };
        let p: IpNet = "10.65.1.0/26".parse().unwrap();
        let cases = [
            (RouteTarget::Blackhole, "blackhole", None, None, 0),
            (
                RouteTarget::direct("192.0.2.2".parse().unwrap()),
                "direct",
                Some("192.0.2.2"),
                Some("eth0"),
                1,
            ),
            (
                RouteTarget::ipip("198.51.100.2".parse().unwrap()),
                "ipip",
                Some("198.51.100.2"),
                Some("tunl0"),
                1,
            ),
            (
                RouteTarget::vxlan(vx),
                "vxlan",
                Some("10.67.0.1"),
                Some("vxlan.serval"),
                1,
            ),
            (
                RouteTarget::Multipath(
                    [
                        NextHop::Direct {
                            gateway: "192.0.2.2".parse().unwrap(),
                            dev: None,
                        },
                        NextHop::Direct {
                            gateway: "192.0.2.3".parse().unwrap(),
                            dev: None,
                        },
                    ]
                    .into(),
                ),
                "direct",
                Some("192.0.2.2, 192.0.2.3"),
                Some("eth0"),
                2,
            ),
            (
                RouteTarget::Multipath(
                    [
                        NextHop::Direct {
                            gateway: "192.0.2.2".parse().unwrap(),
                            dev: None,
                        },
                        NextHop::Vxlan(vx),
                    ]
                    .into(),
                ),
                "mixed",
                Some("192.0.2.2, 10.67.0.1"),
                Some("eth0"),
                2,
            ),
        ];
        for (t, kind, via, device, paths) in cases {
            let r = route_row(p, &t, &dev, None);
            assert_eq!(r.kind, kind, "{t:?}");
            assert_eq!(r.via.as_deref(), via, "{t:?}");
            assert_eq!(r.device.as_deref(), device, "{t:?}");
            assert_eq!(r.paths, paths, "{t:?}");
        }
    }

    #[test]
    fn json_field_names_are_stable() {
        let s = NodeStatus {
            peers: vec![PeerRow {
                address: "192.0.2.2".parse().unwrap(),
                name: Some("n2".into()),
                peer_type: PeerType::Mesh,
                asn: 64512,
                state: bgp::status::SessionState::Established,
                uptime_secs: Some(3),
                prefixes_received: 1,
                prefixes_accepted: 1,
                prefixes_sent: 2,
                flaps: 0,
                last_error: None,
                bfd: Some(BfdRow {
                    state: BfdState::Up,
                    multihop: false,
                    tx_interval_ms: Some(100),
                    rx_interval_ms: Some(100),
                    detection_time_ms: Some(300),
                    multiplier: 3,
                    local_diag: None,
                    remote_diag: Some("neighbor signaled session down".into()),
                    failures: 1,
                    hold_down_secs: None,
                }),
            }],
            ..NodeStatus::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        let p = &v["peers"][0];
        for k in [
            "state",
            "multihop",
            "tx_interval_ms",
            "rx_interval_ms",
            "detection_time_ms",
            "local_diag",
            "remote_diag",
            "failures",
        ] {
            assert!(p["bfd"].get(k).is_some(), "bfd.{k} missing in {p}");
        }
        assert_eq!(p["bfd"]["state"], "Up");
        for k in [
            "address",
            "type",
            "state",
            "uptime_secs",
            "prefixes_received",
            "prefixes_sent",
            "last_error",
        ] {
            assert!(p.get(k).is_some(), "{k} missing in {p}");
        }
        assert_eq!(p["type"], "mesh");
        for k in [
            "routes",
            "routes_programmed",
            "ready",
            "bgp_initial_sync_done",
            "tunnels",
            "nat_pools",
            "mtu",
        ] {
            assert!(v.get(k).is_some(), "{k} missing");
        }
        let back: NodeStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }
}
