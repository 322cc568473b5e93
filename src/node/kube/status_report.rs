//! The `status` of this node's ServalNodeStatus: built from the agent's [`NodeStatus`]
//! (pure, [`build`]), written with server-side apply on the status subresource under
//! the field manager `serval-agent` ([`apply_body`], [`write`]), and no more often than
//! [`Limiter`] allows: once per `updatePeriodSeconds` (default 10 s), and at once when
//! a session comes up or goes down, but never twice within a second.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};

use crate::node::desired::PeerType;
use crate::node::status::{BfdRow, NodeStatus};
use crate::resources::node_status::{
    AgentState, AgentStatus, BfdSessionState, BfdSessionStatus, BgpPeerStatus, BgpPeerType,
    BgpSessionState, BgpStatus, NodeStatusClass, RouteSource, RouteSourceType, RouteStatus,
    RouteTable, RoutesStatus, ServalNodeStatus, ServalNodeStatusSpec, ServalNodeStatusStatus,
};
use bgp::status::{BfdState, SessionState};

/// The field manager of the agent's writes.
pub const FIELD_MANAGER: &str = "serval-agent";
/// `updatePeriodSeconds` when the object does not set it (Calico's default).
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
/// The least time between two writes, even for a session change.
pub const MIN_GAP: Duration = Duration::from_secs(1);

fn session_state(s: SessionState) -> BgpSessionState {
    match s {
        SessionState::Established => BgpSessionState::Established,
        SessionState::Connect => BgpSessionState::Connect,
        SessionState::Active => BgpSessionState::Active,
        SessionState::OpenSent => BgpSessionState::OpenSent,
        SessionState::OpenConfirm => BgpSessionState::OpenConfirm,
        SessionState::Shutdown => BgpSessionState::Close,
        SessionState::Idle | SessionState::Unknown => BgpSessionState::Idle,
    }
}

fn bfd_session(b: &BfdRow) -> BfdSessionStatus {
    BfdSessionStatus {
        state: match b.state {
            BfdState::AdminDown => BfdSessionState::AdminDown,
            BfdState::Down => BfdSessionState::Down,
            BfdState::Init => BfdSessionState::Init,
            BfdState::Up => BfdSessionState::Up,
            BfdState::Unknown => BfdSessionState::Unknown,
        },
        multihop: b.multihop,
        transmit_interval: b.tx_interval_ms,
        receive_interval: b.rx_interval_ms,
        detect_multiplier: b.multiplier,
        detection_time: b.detection_time_ms,
        last_diagnostic: b.local_diag.clone(),
        remote_diagnostic: b.remote_diag.clone(),
        failures: b.failures,
    }
}

fn peer_type(t: PeerType) -> BgpPeerType {
    match t {
        PeerType::Mesh => BgpPeerType::NodeMesh,
        PeerType::Global => BgpPeerType::GlobalPeer,
        _ => BgpPeerType::NodePeer,
    }
}

/// The status for `classes` from the agent's status at wall time `now`; `booted`: when
/// the agent started.
pub fn build(
    s: &NodeStatus,
    classes: &[NodeStatusClass],
    now: Timestamp,
    booted: Option<Timestamp>,
    version: &str,
) -> ServalNodeStatusStatus {
    let all = classes.is_empty();
    let wants = |c| all || classes.contains(&c);
    let mut out = ServalNodeStatusStatus {
        last_updated: Some(Time(now)),
        ..ServalNodeStatusStatus::default()
    };
    if wants(NodeStatusClass::Agent) {
        out.agent = Some(AgentStatus {
            state: if s.ready {
                AgentState::Ready
            } else {
                AgentState::NotReady
            },
            version: Some(version.to_owned()),
            router_id: s.router_id,
            last_boot_time: booted.map(Time),
            last_reconfiguration_time: s
                .last_reconcile_unix
                .and_then(|t| Timestamp::from_second(i64::try_from(t).ok()?).ok())
                .map(Time),
        });
    }
    if wants(NodeStatusClass::Bgp) {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for p in &s.peers {
            let state = session_state(p.state);
            let since = p
                .uptime_secs
                .filter(|_| state == BgpSessionState::Established)
                .and_then(|u| {
                    now.checked_sub(SignedDuration::from_secs(i64::try_from(u).ok()?))
                        .ok()
                })
                .map(Time);
            let row = BgpPeerStatus {
                peer_ip: p.address,
                peer_type: peer_type(p.peer_type),
                state,
                since,
                as_number: Some(p.asn),
                prefixes_received: Some(p.prefixes_accepted),
                prefixes_advertised: Some(p.prefixes_sent),
                last_error: p.last_error.clone(),
                bfd: p.bfd.as_ref().map(bfd_session),
            };
            if p.address.is_ipv4() {
                v4.push(row);
            } else {
                v6.push(row);
            }
        }
        out.bgp = Some(BgpStatus::from_peers(v4, v6));
    }
    if wants(NodeStatusClass::Routes) {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for r in &s.routes {
            let gateway: Option<IpAddr> = r
                .via
                .as_deref()
                .and_then(|v| v.split(", ").next())
                .and_then(|v| v.parse().ok());
            let learned_from = if r.kind == "blackhole" {
                Some(RouteSource {
                    source_type: RouteSourceType::Static,
                    peer_ip: None,
                })
            } else {
                gateway.map(|g| RouteSource {
                    source_type: RouteSourceType::NodeMesh,
                    peer_ip: Some(g),
                })
            };
            let row = RouteStatus {
                route_type: RouteTable::FIB,
                destination: r.prefix,
                gateway,
                interface: if r.kind == "blackhole" {
                    Some("blackhole".into())
                } else {
                    r.device.clone()
                },
                learned_from,
            };
            if r.prefix.addr().is_ipv4() {
                v4.push(row);
            } else {
                v6.push(row);
            }
        }
        out.routes = Some(RoutesStatus {
            routes_v4: v4,
            routes_v6: v6,
        });
    }
    out
}

/// The server-side apply body: only `status`, with the identifying fields apply needs.
pub fn apply_body(name: &str, status: &ServalNodeStatusStatus) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": crate::resources::API_VERSION,
        "kind": "ServalNodeStatus",
        "metadata": { "name": name },
        "status": status,
    })
}

/// Which sessions are Established, to notice a session coming up or going down.
pub fn established(s: &NodeStatus) -> BTreeMap<IpAddr, bool> {
    s.peers
        .iter()
        .map(|p| (p.address, p.state.is_established()))
        .collect()
}

/// When the status may be written; pure, time is an input.
#[derive(Clone, Debug, Default)]
pub struct Limiter {
    last_write: Option<Instant>,
    last_up: Option<BTreeMap<IpAddr, bool>>,
}

impl Limiter {
    /// When the next write is due, given the period and the sessions' state now;
    /// `None`: never (period 0 stops the updates).
    pub fn due(
        &self,
        now: Instant,
        period: Duration,
        up: &BTreeMap<IpAddr, bool>,
    ) -> Option<Instant> {
        if period.is_zero() {
            return None;
        }
        let Some(last) = self.last_write else {
            return Some(now);
        };
        if self.last_up.as_ref() != Some(up) {
            Some(last + MIN_GAP)
        } else {
            Some(last + period)
        }
    }

    /// Whether to write at `now`.
    pub fn should_write(
        &self,
        now: Instant,
        period: Duration,
        up: &BTreeMap<IpAddr, bool>,
    ) -> bool {
        self.due(now, period, up).is_some_and(|t| now >= t)
    }

    /// A write was made at `now` with these sessions.
    pub fn wrote(&mut self, now: Instant, up: BTreeMap<IpAddr, bool>) {
        self.last_write = Some(now);
        self.last_up = Some(up);
    }
}

/// The period an object asks for.
pub fn period(spec: &ServalNodeStatusSpec) -> Duration {
    spec.update_period_seconds
        .map_or(DEFAULT_PERIOD, |s| Duration::from_secs(u64::from(s)))
}

/// Server-side applies `status` of ServalNodeStatus `name` (forcing: the agent owns
/// the status of its node).
pub async fn write(
    api: &Api<ServalNodeStatus>,
    name: &str,
    status: &ServalNodeStatusStatus,
) -> Result<(), kube::Error> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &pp, &Patch::Apply(apply_body(name, status)))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::status::{PeerRow, RouteRow};

    fn peer(addr: &str, t: PeerType, state: SessionState, up: Option<u64>) -> PeerRow {
        PeerRow {
            address: addr.parse().unwrap(),
            name: None,
            peer_type: t,
            asn: 64512,
            state,
            uptime_secs: up,
            prefixes_received: 3,
            prefixes_accepted: 2,
            prefixes_sent: 1,
            flaps: 0,
            last_error: None,
            bfd: None,
        }
    }

    fn sample() -> NodeStatus {
        NodeStatus {
            node: "n1".into(),
            ready: true,
            router_id: Some("192.0.2.10".parse().unwrap()),
            peers: vec![
                PeerRow {
                    bfd: Some(BfdRow {
                        state: BfdState::Up,
                        multihop: false,
                        tx_interval_ms: Some(100),
                        rx_interval_ms: Some(150),
                        detection_time_ms: Some(450),
                        multiplier: 3,
                        local_diag: None,
                        remote_diag: Some("neighbor signaled session down".into()),
                        failures: 1,
                        hold_down_secs: None,
                    }),
                    ..peer(
                        "192.0.2.11",
                        PeerType::Mesh,
                        SessionState::Established,
                        Some(60),
                    )
                },
                peer("192.0.2.254", PeerType::Global, SessionState::Active, None),
                peer(
                    "2001:db8::1",
                    PeerType::NodeSpecific,
                    SessionState::Established,
                    Some(5),
                ),
            ],
            routes: vec![
                RouteRow {
                    prefix: "10.65.1.0/26".parse().unwrap(),
                    kind: "direct".into(),
                    via: Some("192.0.2.11".into()),
                    device: Some("eth0".into()),
                    paths: 1,
                    error: None,
                },
                RouteRow {
                    prefix: "10.65.0.0/26".parse().unwrap(),
                    kind: "blackhole".into(),
                    via: None,
                    device: None,
                    paths: 0,
                    error: None,
                },
            ],
            ..NodeStatus::default()
        }
    }

    #[test]
    fn status_from_the_agents_view() {
        let now: Timestamp = "2024-05-01T10:00:00Z".parse().unwrap();
        let st = build(&sample(), &[], now, None, "0.1.0");
        let bgp = st.bgp.as_ref().unwrap();
        assert_eq!(
            (bgp.number_established_v4, bgp.number_not_established_v4),
            (1, 1)
        );
        assert_eq!(bgp.number_established_v6, 1);
        assert_eq!(bgp.peers_v4[0].peer_type, BgpPeerType::NodeMesh);
        assert_eq!(bgp.peers_v4[1].peer_type, BgpPeerType::GlobalPeer);
        assert_eq!(bgp.peers_v4[1].state, BgpSessionState::Active);
        assert_eq!(bgp.peers_v6[0].peer_type, BgpPeerType::NodePeer);
        assert_eq!(
            bgp.peers_v4[0].since,
            Some(Time("2024-05-01T09:59:00Z".parse().unwrap())),
            "up for 60 s"
        );
        assert_eq!(bgp.peers_v4[1].since, None);
        assert!(bgp.peers_v4[1].bfd.is_none(), "no BFD on that session");
        let mesh_bfd = bgp.peers_v4[0].bfd.as_ref().unwrap();
        assert_eq!(
            (
                mesh_bfd.state,
                mesh_bfd.transmit_interval,
                mesh_bfd.receive_interval,
                mesh_bfd.detect_multiplier,
                mesh_bfd.detection_time
            ),
            (BfdSessionState::Up, Some(100), Some(150), 3, Some(450))
        );
        assert_eq!(
            mesh_bfd.remote_diagnostic.as_deref(),
            Some("neighbor signaled session down")
        );
        let routes = &st.routes.as_ref().unwrap().routes_v4;
        assert_eq!(routes[0].gateway, Some("192.0.2.11".parse().unwrap()));
        assert_eq!(routes[1].interface.as_deref(), Some("blackhole"));
        assert_eq!(st.agent.as_ref().unwrap().state, AgentState::Ready);
        // Only the classes asked for.
        let st = build(&sample(), &[NodeStatusClass::Bgp], now, None, "0.1.0");
        assert!(st.agent.is_none() && st.routes.is_none() && st.bgp.is_some());
    }

    #[test]
    fn the_apply_body_is_status_only_and_passes_the_crd_types() {
        let now: Timestamp = "2024-05-01T10:00:00Z".parse().unwrap();
        let st = build(
            &sample(),
            &[NodeStatusClass::Agent, NodeStatusClass::Bgp],
            now,
            None,
            "0.1.0",
        );
        let body = apply_body("n1", &st);
        assert_eq!(body["apiVersion"], "serval.dev/v1");
        assert_eq!(body["kind"], "ServalNodeStatus");
        assert_eq!(body["metadata"], serde_json::json!({"name": "n1"}));
        assert!(body.get("spec").is_none(), "the agent never touches spec");
        assert_eq!(body["status"]["bgp"]["numberEstablishedV4"], 1);
        assert_eq!(body["status"]["bgp"]["peersV4"][0]["peerIP"], "192.0.2.11");
        assert_eq!(body["status"]["lastUpdated"], "2024-05-01T10:00:00Z");
        // The body reads back as the CRD type (with a spec added, as the server has).
        let mut obj = body.clone();
        obj["spec"] = serde_json::json!({"node": "n1"});
        let back: ServalNodeStatus = serde_json::from_value(obj).unwrap();
        assert_eq!(back.status.as_ref(), Some(&st));
    }

    #[test]
    fn writes_are_rate_limited() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let period = DEFAULT_PERIOD;
        let mut l = Limiter::default();
        let mut status = sample();
        let up = established(&status);
        assert!(l.should_write(t0, period, &up), "first write at once");
        l.wrote(t0, up.clone());
        assert!(!l.should_write(t0 + s(5), period, &up), "nothing changed");
        assert!(l.should_write(t0 + s(10), period, &up), "the period passed");
        l.wrote(t0 + s(10), up.clone());
        // A session goes down: at once, but not within a second of the last write.
        status.peers[0].state = SessionState::Idle;
        let down = established(&status);
        assert!(!l.should_write(t0 + s(10) + Duration::from_millis(500), period, &down));
        assert!(l.should_write(t0 + s(11), period, &down));
        assert_eq!(l.due(t0, period, &down), Some(t0 + s(11)));
        l.wrote(t0 + s(11), down.clone());
        // Other changes (counters) wait for the period.
        status.peers[0].prefixes_sent = 9;
        assert!(!l.should_write(t0 + s(12), period, &established(&status)));
        assert_eq!(l.due(t0, period, &down), Some(t0 + s(21)));
        assert!(
            !l.should_write(t0 + s(100), Duration::ZERO, &down),
            "period 0: never"
        );
        assert_eq!(l.due(t0, Duration::ZERO, &down), None);
    }
}
