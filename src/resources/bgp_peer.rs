//! `BGPPeer`: a BGP session of some nodes with a router or with other nodes, Calico's
//! resource of the same name with its field names.
//!
//! - No `node` and no `nodeSelector`: a global peer, for every node.
//! - `node: NAME`: for that node only; `nodeSelector`: for the nodes it selects.
//! - `peerIP` + `asNumber`: one remote router. `peerSelector` instead: every node it
//!   selects (route reflector topologies: a node with `routeReflectorClusterID` peers with
//!   the nodes the selector picks as its clients).
//! - `maxPrefix` (serval's addition to Calico's fields): how many prefixes the peer may
//!   send. A peering with `peerIP` without it gets [`MaxPrefix::DEFAULT`], so no router
//!   can fill a node's memory by accident or on purpose.
//! - `bfdProfile` (MetalLB's field): BFD on this peering's sessions with the timers of
//!   that `BFDProfile`. `failureDetectionMode: BFDIfDirectlyConnected` (Calico
//!   Enterprise's field): BFD only on sessions whose peer is on a subnet of one of the
//!   node's interfaces, with `bfdProfile`'s timers or 300 ms × 3. A profile that does not
//!   exist leaves the sessions running without BFD and says so in the node's status.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use bgp::config::MaxPrefixConfig;

use super::common::{BgpPassword, GoDuration, PeerAddress};
use ipam::model::Selector;

/// A BGP peering.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serval.dev",
    version = "v1",
    kind = "BGPPeer",
    plural = "bgppeers"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPPeerSpec {
    /// The one node this peering applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The nodes this peering applies to (Kubernetes or Calico selector syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub node_selector: Option<Selector>,
    /// The remote router: `IP`, `IP:PORT` or `[IPv6]:PORT`.
    #[serde(default, rename = "peerIP", skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<PeerAddress>,
    /// The remote router's AS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// The AS this node's sessions of this peering open with, instead of the node's own
    /// (with `peerIP` only: other serval nodes expect a node's own AS).
    #[serde(
        default,
        rename = "localASNumber",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_as_number: Option<u32>,
    /// Peer with every node this selects instead of one router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub peer_selector: Option<Selector>,
    /// TCP MD5 password (RFC 2385).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BgpPassword>,
    /// Send routes with their original next hop instead of this node (eBGP). The older
    /// spelling of `nextHopMode: Keep`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_original_next_hop: bool,
    /// The next hop of routes sent on this peering: `Auto` (default: this node towards
    /// eBGP peers, unchanged towards iBGP peers), `Self` (always this node) or `Keep`
    /// (never changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<NextHopMode>,
    /// With `peerSelector`: `Auto` (default) makes the selected nodes peer back with the
    /// nodes this peering applies to; `Manual` leaves that to another BGPPeer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_peering: Option<ReversePeering>,
    /// `UseNodeIP` (default): the session's source is the node address; `None`: the
    /// kernel picks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<SourceAddress>,
    /// RFC 5082 GTSM: the peer is at most this many hops away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    /// How long the peer keeps our routes while we restart (graceful restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<GoDuration>,
    /// How many times our own AS may appear in received AS paths (allowas-in).
    #[serde(
        default,
        rename = "numAllowedLocalASNumbers",
        skip_serializing_if = "Option::is_none"
    )]
    pub num_allowed_local_as_numbers: Option<u8>,
    /// Names of BGPFilter objects applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// The peer is reachable through this gateway (multihop towards it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub reachable_by: Option<std::net::IpAddr>,
    /// Keepalive interval; the hold time is three times it. Calico spells it
    /// `keepaliveTime`, which is read too.
    #[serde(
        default,
        alias = "keepaliveTime",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_alive_time: Option<GoDuration>,
    /// The most prefixes the peer may send per address family, and what happens beyond
    /// (serval's addition to Calico's fields). A peering with `peerIP` without it has
    /// `{limit: 100000, action: Shutdown, restartAfter: 5m}`; one with `peerSelector`
    /// (other nodes) has no limit unless given here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prefix: Option<MaxPrefix>,
    /// The `BFDProfile` of this peering's sessions: BFD on with its timers (MetalLB's
    /// field). With `failureDetectionMode: BFDIfDirectlyConnected`, only on sessions
    /// with a directly connected peer.
    #[serde(
        default,
        rename = "bfdProfile",
        skip_serializing_if = "Option::is_none"
    )]
    pub bfd_profile: Option<String>,
    /// Calico Enterprise's switch: `None` (default: BFD as `bfdProfile` says) or
    /// `BFDIfDirectlyConnected` (BFD where the peer is on a subnet of one of the node's
    /// interfaces, else none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_detection_mode: Option<FailureDetectionMode>,
}

/// When a peering's sessions run BFD (Calico Enterprise's `failureDetectionMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailureDetectionMode {
    /// BFD only as `bfdProfile` asks; with no profile, none.
    #[default]
    None,
    /// BFD on the sessions whose peer is on a directly connected subnet.
    BFDIfDirectlyConnected,
}

/// A per-peer maximum-prefix limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaxPrefix {
    /// The most prefixes per address family. Every prefix received counts, also those a
    /// BGPFilter rejects: the speaker keeps them too (a route refresh can bring them in).
    pub limit: u32,
    /// `Shutdown` (default): close the session with Cease / Maximum Number of Prefixes
    /// Reached (RFC 4486); `Warn`: log and keep the routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<MaxPrefixAction>,
    /// After a shutdown, connect again this long after; without it the session stays
    /// down until reset (`serval bgp reset PEER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_after: Option<GoDuration>,
}

/// What happens when a peer sends more than `maxPrefix.limit` prefixes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MaxPrefixAction {
    /// Close the session with a NOTIFICATION (Cease, subcode 1).
    #[default]
    Shutdown,
    /// Log it and count it; the session and its routes stay.
    Warn,
}

/// The longest `restartAfter`: a day.
const MAX_RESTART_AFTER_SECS: u64 = 86_400;

impl MaxPrefix {
    /// The limit of a peering with a router (`peerIP`) that sets none: larger than every
    /// node's blocks of a big cluster learned through a top-of-rack router (100,000
    /// blocks of /26 are 6.4 million pod addresses), small enough that the table costs
    /// a few tens of MiB at most. Retried after 5 minutes, so a peer that sent too much
    /// once is back without an operator, and one that keeps doing it costs one table
    /// per 5 minutes.
    pub const DEFAULT: MaxPrefix = MaxPrefix {
        limit: 100_000,
        action: Some(MaxPrefixAction::Shutdown),
        restart_after: Some(GoDuration(std::time::Duration::from_secs(300))),
    };

    /// The speaker's form. Received prefixes count, filtered or not.
    pub fn to_config(self) -> MaxPrefixConfig {
        MaxPrefixConfig {
            limit: self.limit,
            action: match self.action.unwrap_or_default() {
                MaxPrefixAction::Shutdown => bgp::config::MaxPrefixAction::Shutdown,
                MaxPrefixAction::Warn => bgp::config::MaxPrefixAction::Warn,
            },
            count_filtered: true,
            restart_after: self.restart_after.map(|d| {
                u32::try_from(d.0.as_secs().clamp(1, MAX_RESTART_AFTER_SECS)).unwrap_or(u32::MAX)
            }),
        }
    }

    fn check(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.limit == 0 {
            errors.push((
                "maxPrefix.limit".into(),
                "at least 1 (leave maxPrefix out on a peerSelector peering for no limit)".into(),
            ));
        }
        if let Some(r) = self.restart_after {
            if !(1..=MAX_RESTART_AFTER_SECS).contains(&r.0.as_secs()) {
                errors.push(("maxPrefix.restartAfter".into(), format!("{r}: 1s to 24h")));
            }
            if self.action == Some(MaxPrefixAction::Warn) {
                errors.push((
                    "maxPrefix.restartAfter".into(),
                    "only with action Shutdown (Warn never closes the session)".into(),
                ));
            }
        }
        errors
    }
}

/// How the next hop of routes sent to a peer is set (Calico's `nextHopMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NextHopMode {
    /// This node towards eBGP peers, unchanged towards iBGP peers (RFC 4271 §5.1.3).
    #[default]
    Auto,
    /// Always this node (next-hop-self), also towards iBGP peers; reflected routes
    /// excepted (RFC 4456 §10).
    #[serde(rename = "Self")]
    SelfAlways,
    /// Never changed, also towards eBGP peers.
    Keep,
}

impl NextHopMode {
    /// The speaker's setting.
    pub fn to_config(self) -> bgp::rib::NextHopMode {
        match self {
            NextHopMode::Auto => bgp::rib::NextHopMode::Auto,
            NextHopMode::SelfAlways => bgp::rib::NextHopMode::SelfAlways,
            NextHopMode::Keep => bgp::rib::NextHopMode::KeepOriginal,
        }
    }
}

/// Whether a `peerSelector` peering is also made from the selected nodes' side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReversePeering {
    /// The selected nodes peer back with the nodes the peering applies to.
    #[default]
    Auto,
    /// Only the nodes the peering applies to configure it; the other side needs its own
    /// BGPPeer.
    Manual,
}

/// Which source address the session uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SourceAddress {
    /// The node's address (Calico's default).
    #[default]
    UseNodeIP,
    /// Whatever the kernel picks.
    None,
}

impl BGPPeerSpec {
    /// The speaker's maximum-prefix setting of the sessions this peering makes: what
    /// `maxPrefix` says, else [`MaxPrefix::DEFAULT`] towards a router (`peerIP`) and no
    /// limit towards other nodes (`peerSelector`): their routes are the cluster's own
    /// blocks (a node passes no route learned from a router on to other nodes).
    pub fn max_prefix_config(&self) -> Option<MaxPrefixConfig> {
        match (self.max_prefix, &self.peer_ip) {
            (Some(m), _) => Some(m.to_config()),
            (None, Some(_)) => Some(MaxPrefix::DEFAULT.to_config()),
            (None, None) => None,
        }
    }

    /// The speaker's next-hop setting: `nextHopMode`, else `keepOriginalNextHop`.
    pub fn next_hop(&self) -> bgp::rib::NextHopMode {
        match (self.next_hop_mode, self.keep_original_next_hop) {
            (Some(m), _) => m.to_config(),
            (None, true) => bgp::rib::NextHopMode::KeepOriginal,
            (None, false) => bgp::rib::NextHopMode::Auto,
        }
    }

    /// Checks serde cannot make, each error as (field path under `spec`, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.keep_original_next_hop && self.next_hop_mode.is_some_and(|m| m != NextHopMode::Keep)
        {
            errors.push((
                "nextHopMode".into(),
                "keepOriginalNextHop: true means nextHopMode Keep: give one of them".into(),
            ));
        }
        match self.local_as_number {
            Some(0) => errors.push(("localASNumber".into(), "AS 0 is reserved".into())),
            Some(_) if self.peer_ip.is_none() => errors.push((
                "localASNumber".into(),
                "only with peerIP (other serval nodes expect a node's own AS)".into(),
            )),
            _ => {}
        }
        if self.reverse_peering.is_some() && self.peer_selector.is_none() {
            errors.push((
                "reversePeering".into(),
                "only with peerSelector (a router named by peerIP configures its own side)".into(),
            ));
        }
        match (&self.peer_ip, &self.peer_selector) {
            (Some(_), Some(_)) => errors.push((
                "peerSelector".into(),
                "give peerIP (one router) or peerSelector (nodes), not both".into(),
            )),
            (None, None) => errors.push((
                "peerIP".into(),
                "give peerIP (one router) or peerSelector (nodes)".into(),
            )),
            (Some(ip), None) => {
                if ip.ip.is_unspecified() || ip.ip.is_multicast() {
                    errors.push(("peerIP".into(), format!("{ip} is not a unicast address")));
                }
                match self.as_number {
                    None => errors.push(("asNumber".into(), "required with peerIP".into())),
                    Some(0) => errors.push(("asNumber".into(), "AS 0 is reserved".into())),
                    Some(_) => {}
                }
            }
            (None, Some(_)) => {
                if self.as_number.is_some() {
                    errors.push((
                        "asNumber".into(),
                        "with peerSelector the selected nodes' own AS numbers apply".into(),
                    ));
                }
            }
        }
        if self.node.is_some() && self.node_selector.is_some() {
            errors.push((
                "nodeSelector".into(),
                "give node or nodeSelector, not both".into(),
            ));
        }
        if self.ttl_security == Some(0) {
            errors.push(("ttlSecurity".into(), "hop counts start at 1".into()));
        }
        if let Some(k) = self.keep_alive_time {
            let secs = k.0.as_secs();
            if !(1..=21845).contains(&secs) {
                errors.push((
                    "keepAliveTime".into(),
                    format!("{k}: 1s to 21845s (the hold time, 3 × keepalive, is 16-bit)"),
                ));
            }
        }
        if let Some(p) = &self.password {
            if let Err(e) = p.check() {
                errors.push(("password".into(), e));
            }
        }
        if let Some(Err(e)) = self.max_restart_time.map(GoDuration::check_restart_time) {
            errors.push(("maxRestartTime".into(), e));
        }
        if let Some(m) = &self.max_prefix {
            errors.extend(m.check());
        }
        if let Some(name) = &self.bfd_profile {
            if let Err(e) = ipam::store::ResourceName::new(name.as_str()) {
                errors.push(("bfdProfile".into(), format!("{name:?}: {e}")));
            }
            if self.failure_detection_mode == Some(FailureDetectionMode::None) {
                errors.push((
                    "failureDetectionMode".into(),
                    "None turns BFD off, and bfdProfile asks for it: give one of them".into(),
                ));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calicos_keepalive_spelling_is_read() {
        for key in ["keepAliveTime", "keepaliveTime"] {
            let spec: BGPPeerSpec = serde_json::from_value(
                serde_json::json!({"peerIP": "192.0.2.1", "asNumber": 65000, key: "10s"}),
            )
            .unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(
                spec.keep_alive_time.map(|d| d.0),
                Some(std::time::Duration::from_secs(10)),
                "{key}"
            );
            // Written back in serval's spelling.
            assert!(serde_json::to_value(&spec)
                .unwrap()
                .get("keepAliveTime")
                .is_some());
        }
    }

    #[test]
    fn max_restart_time_fits_the_capability() {
        let spec = |t: &str| -> BGPPeerSpec {
            serde_json::from_value(serde_json::json!(
                {"peerIP": "192.0.2.1", "asNumber": 65000, "maxRestartTime": t}
            ))
            .unwrap()
        };
        assert!(spec("4095s").check().is_empty());
        assert!(spec("0s").check().is_empty());
        let errors = spec("2h").check();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "maxRestartTime");
        assert!(errors[0].1.contains("4095"), "{errors:?}");
    }

    fn peer(extra: serde_json::Value) -> BGPPeerSpec {
        let mut v = serde_json::json!({"peerIP": "192.0.2.1", "asNumber": 65000});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn max_prefix_defaults_towards_routers_only() {
        use bgp::config::MaxPrefixAction as Speaker;
        let d = peer(serde_json::json!({})).max_prefix_config().unwrap();
        assert_eq!(
            (d.limit, d.action, d.count_filtered, d.restart_after),
            (100_000, Speaker::Shutdown, true, Some(300))
        );
        let given = peer(serde_json::json!(
            {"maxPrefix": {"limit": 500, "action": "Warn"}}
        ));
        assert!(given.check().is_empty(), "{:?}", given.check());
        let c = given.max_prefix_config().unwrap();
        assert_eq!(
            (c.limit, c.action, c.count_filtered, c.restart_after),
            (500, Speaker::Warn, true, None)
        );
        let shut = peer(serde_json::json!({"maxPrefix": {"limit": 10, "restartAfter": "1m30s"}}))
            .max_prefix_config()
            .unwrap();
        assert_eq!(
            (shut.action, shut.restart_after),
            (Speaker::Shutdown, Some(90))
        );
        // Towards other nodes only when asked.
        let mut nodes: BGPPeerSpec =
            serde_json::from_value(serde_json::json!({"peerSelector": "all()"})).unwrap();
        assert_eq!(nodes.max_prefix_config(), None);
        nodes.max_prefix = Some(MaxPrefix {
            limit: 7,
            action: None,
            restart_after: None,
        });
        assert_eq!(nodes.max_prefix_config().map(|c| c.limit), Some(7));
    }

    #[test]
    fn calicos_newer_fields_in_its_spelling_and_their_checks() {
        let p = peer(serde_json::json!({"localASNumber": 65010, "nextHopMode": "Self"}));
        assert!(p.check().is_empty(), "{:?}", p.check());
        assert_eq!(p.local_as_number, Some(65010));
        assert_eq!(p.next_hop(), bgp::rib::NextHopMode::SelfAlways);
        let keep = peer(serde_json::json!({"keepOriginalNextHop": true}));
        assert_eq!(keep.next_hop(), bgp::rib::NextHopMode::KeepOriginal);
        let both = peer(serde_json::json!({"keepOriginalNextHop": true, "nextHopMode": "Keep"}));
        assert!(both.check().is_empty());
        let errors = |v: serde_json::Value| -> Vec<String> {
            let p: BGPPeerSpec = serde_json::from_value(v).unwrap();
            p.check().into_iter().map(|(f, _)| f).collect()
        };
        assert_eq!(
            errors(serde_json::json!({"peerIP": "192.0.2.1", "asNumber": 1,
                "keepOriginalNextHop": true, "nextHopMode": "Auto"})),
            ["nextHopMode"]
        );
        assert_eq!(
            errors(serde_json::json!({"peerIP": "192.0.2.1", "asNumber": 1, "localASNumber": 0})),
            ["localASNumber"]
        );
        assert_eq!(
            errors(serde_json::json!({"peerSelector": "all()", "localASNumber": 65010})),
            ["localASNumber"]
        );
        assert_eq!(
            errors(serde_json::json!({"peerIP": "192.0.2.1", "asNumber": 1,
                "reversePeering": "Manual"})),
            ["reversePeering"]
        );
        assert!(
            errors(serde_json::json!({"peerSelector": "all()", "reversePeering": "Manual"}))
                .is_empty()
        );
        // The serval-only spelling is not Calico's and is refused.
        assert!(serde_json::from_value::<BGPPeerSpec>(serde_json::json!(
            {"peerIP": "192.0.2.1", "asNumber": 1, "localAsNumber": 65010}
        ))
        .is_err());
    }

    #[test]
    fn bfd_fields_in_metallb_and_calico_spelling() {
        let p = peer(serde_json::json!({"bfdProfile": "fast",
            "failureDetectionMode": "BFDIfDirectlyConnected"}));
        assert!(p.check().is_empty(), "{:?}", p.check());
        assert_eq!(p.bfd_profile.as_deref(), Some("fast"));
        assert_eq!(
            p.failure_detection_mode,
            Some(FailureDetectionMode::BFDIfDirectlyConnected)
        );
        let both = peer(serde_json::json!({"bfdProfile": "fast", "failureDetectionMode": "None"}));
        let errors: Vec<String> = both.check().into_iter().map(|(f, _)| f).collect();
        assert_eq!(errors, ["failureDetectionMode"]);
        let bad = peer(serde_json::json!({"bfdProfile": "Not A Name"}));
        let errors: Vec<String> = bad.check().into_iter().map(|(f, _)| f).collect();
        assert_eq!(errors, ["bfdProfile"]);
        assert!(serde_json::from_value::<BGPPeerSpec>(serde_json::json!(
            {"peerIP": "192.0.2.1", "asNumber": 1, "failureDetectionMode": "BFD"}
        ))
        .is_err());
    }

    #[test]
    fn max_prefix_checks() {
        let errors = |m: serde_json::Value| -> Vec<String> {
            peer(serde_json::json!({ "maxPrefix": m }))
                .check()
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        };
        assert_eq!(errors(serde_json::json!({"limit": 0})), ["maxPrefix.limit"]);
        assert_eq!(
            errors(serde_json::json!({"limit": 5, "restartAfter": "48h"})),
            ["maxPrefix.restartAfter"]
        );
        assert_eq!(
            errors(serde_json::json!({"limit": 5, "action": "Warn", "restartAfter": "1m"})),
            ["maxPrefix.restartAfter"]
        );
        assert!(serde_json::from_value::<BGPPeerSpec>(serde_json::json!(
            {"peerIP": "192.0.2.1", "asNumber": 1, "maxPrefix": {"limit": 5, "action": "Drop"}}
        ))
        .is_err());
    }
}
