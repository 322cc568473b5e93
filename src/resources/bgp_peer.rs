//! `BGPPeer`: a BGP session of some nodes with a router or with other nodes, Calico's
//! resource of the same name with its field names.
//!
//! - No `node` and no `nodeSelector`: a global peer, for every node.
//! - `node: NAME`: for that node only; `nodeSelector`: for the nodes it selects.
//! - `peerIP` + `asNumber`: one remote router. `peerSelector` instead: every node it
//!   selects (route reflector topologies: a node with `routeReflectorClusterID` peers with
//!   the nodes the selector picks as its clients).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    /// Peer with every node this selects instead of one router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub peer_selector: Option<Selector>,
    /// TCP MD5 password (RFC 2385).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BgpPassword>,
    /// Send routes with their original next hop instead of this node (eBGP).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_original_next_hop: bool,
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
    /// Checks serde cannot make, each error as (field path under `spec`, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
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
}
