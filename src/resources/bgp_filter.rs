//! `BGPFilter`: route filters that BGPPeers name in `filters`, Calico's resource with
//! its field names. Each list is ordered; the first rule whose match holds decides;
//! a route that no rule matches is accepted.
//!
//! A rule matches on the prefix (`cidr`, `matchOperator`, `prefixLength`) and, when
//! given, on `source: RemotePeers` (learned over BGP, not the node's own), `peerType`
//! (`eBGP`/`iBGP`: the session the filter is applied on), `communities.values` (the
//! route carries every one), `asPathPrefix` (the AS path starts with these ASes) and
//! `interface` (the kernel interface the route was taken from: serval's speaker takes no
//! routes from kernel interfaces, so such a rule matches nothing). Its `operations`
//! (`addCommunity`, `prependASPath`) change accepted routes. Calico's `priority` and
//! `setPriority` (the kernel route metric) are refused: serval programs its routes with
//! one priority of its own.

use ipnet::IpNet;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Import and export rules per address family.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serval.dev",
    version = "v1",
    kind = "BGPFilter",
    plural = "bgpfilters"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPFilterSpec {
    /// Rules for IPv4 routes sent to the peer.
    #[serde(default, rename = "exportV4", skip_serializing_if = "Vec::is_empty")]
    pub export_v4: Vec<BGPFilterRule>,
    /// Rules for IPv4 routes received from the peer.
    #[serde(default, rename = "importV4", skip_serializing_if = "Vec::is_empty")]
    pub import_v4: Vec<BGPFilterRule>,
    /// Rules for IPv6 routes sent to the peer.
    #[serde(default, rename = "exportV6", skip_serializing_if = "Vec::is_empty")]
    pub export_v6: Vec<BGPFilterRule>,
    /// Rules for IPv6 routes received from the peer.
    #[serde(default, rename = "importV6", skip_serializing_if = "Vec::is_empty")]
    pub import_v6: Vec<BGPFilterRule>,
}

/// One rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPFilterRule {
    /// Accept or Reject.
    pub action: FilterAction,
    /// How `cidr` is compared with the route's prefix; required with `cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_operator: Option<MatchOperator>,
    /// The CIDR the route's prefix is compared with; absent: every route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub cidr: Option<IpNet>,
    /// With `In`: only prefixes whose length is within this range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<PrefixLength>,
    /// `RemotePeers`: only routes learned from BGP peers (not the node's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RouteSource>,
    /// Routes taken from this kernel interface. serval's speaker takes none from kernel
    /// interfaces, so a rule with `interface` matches no route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Only on sessions of this type: `eBGP` or `iBGP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_type: Option<FilterPeerType>,
    /// Routes that carry every one of these communities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<CommunityMatch>,
    /// Routes whose AS path starts with these ASes, in order.
    #[serde(
        default,
        rename = "asPathPrefix",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub as_path_prefix: Vec<u32>,
    /// Changes made to a route the rule accepts, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<FilterOperation>,
}

/// Where a route comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RouteSource {
    /// Learned from a BGP peer.
    RemotePeers,
}

/// The type of the session a filter applies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FilterPeerType {
    #[serde(rename = "eBGP")]
    Ebgp,
    #[serde(rename = "iBGP")]
    Ibgp,
}

/// Community values a route must carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommunityMatch {
    /// `AS:VALUE` (standard, or a well-known name) or `AS:V1:V2` (large).
    pub values: Vec<String>,
}

/// One change to an accepted route; exactly one field is given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterOperation {
    /// Adds a community (standard or large).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_community: Option<AddCommunity>,
    /// Prepends ASes to the AS path (sent routes). serval prepends its own AS only: every
    /// AS listed must be the session's local AS.
    #[serde(
        default,
        rename = "prependASPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub prepend_as_path: Option<PrependAsPath>,
}

/// `addCommunity`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddCommunity {
    pub value: String,
}

/// `prependASPath`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrependAsPath {
    pub prefix: Vec<u32>,
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FilterAction {
    #[default]
    Accept,
    Reject,
}

/// How the rule's CIDR is compared with a route's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MatchOperator {
    /// The prefix is the CIDR.
    Equal,
    /// The prefix is not the CIDR.
    NotEqual,
    /// The prefix is the CIDR or inside it.
    In,
    /// The prefix is outside the CIDR.
    NotIn,
}

/// A prefix length range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixLength {
    /// Shortest length matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u8>,
    /// Longest length matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u8>,
}

impl BGPFilterSpec {
    /// The rule lists with their field names and families (IPv4: true).
    pub fn lists(&self) -> [(&'static str, bool, &[BGPFilterRule]); 4] {
        [
            ("exportV4", true, &self.export_v4),
            ("importV4", true, &self.import_v4),
            ("exportV6", false, &self.export_v6),
            ("importV6", false, &self.import_v6),
        ]
    }

    /// Checks serde cannot make, each error as (field path under `spec`, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (list, v4, rules) in self.lists() {
            for (i, r) in rules.iter().enumerate() {
                let at = |f: &str| format!("{list}[{i}].{f}");
                match (&r.cidr, r.match_operator) {
                    (Some(_), None) => {
                        errors.push((at("matchOperator"), "required with cidr".into()))
                    }
                    (None, Some(_)) => {
                        errors.push((at("cidr"), "required with matchOperator".into()))
                    }
                    _ => {}
                }
                if let Some(c) = r.cidr {
                    if c.addr().is_ipv4() != v4 {
                        errors.push((
                            at("cidr"),
                            format!("{c} is not an {} CIDR", if v4 { "IPv4" } else { "IPv6" }),
                        ));
                    }
                    if c != c.trunc() {
                        errors.push((at("cidr"), format!("{c} has host bits set")));
                    }
                }
                if let Some(c) = &r.communities {
                    if c.values.is_empty() {
                        errors.push((at("communities.values"), "give at least one".into()));
                    }
                    for (j, v) in c.values.iter().enumerate() {
                        if let Err(e) = super::parse_community(v) {
                            errors.push((at(&format!("communities.values[{j}]")), e));
                        }
                    }
                }
                if r.as_path_prefix.contains(&0) {
                    errors.push((at("asPathPrefix"), "AS 0 is reserved".into()));
                }
                if r.interface.as_deref() == Some("") {
                    errors.push((at("interface"), "empty".into()));
                }
                for (j, op) in r.operations.iter().enumerate() {
                    let path = at(&format!("operations[{j}]"));
                    match (&op.add_community, &op.prepend_as_path) {
                        (Some(_), Some(_)) | (None, None) => errors.push((
                            path.clone(),
                            "give exactly one of addCommunity, prependASPath".into(),
                        )),
                        (Some(c), None) => {
                            if let Err(e) = super::parse_community(&c.value) {
                                errors.push((format!("{path}.addCommunity.value"), e));
                            }
                        }
                        (None, Some(p)) => {
                            if p.prefix.is_empty() || p.prefix.len() > 16 {
                                errors.push((
                                    format!("{path}.prependASPath.prefix"),
                                    "1 to 16 ASes".into(),
                                ));
                            }
                        }
                    }
                    if r.action == FilterAction::Reject {
                        errors.push((path, "operations apply to accepted routes only".into()));
                    }
                }
                if let Some(pl) = r.prefix_length {
                    let max = if v4 { 32 } else { 128 };
                    let (lo, hi) = (pl.min.unwrap_or(0), pl.max.unwrap_or(max));
                    if lo > hi || hi > max {
                        errors.push((
                            at("prefixLength"),
                            format!("min {lo} / max {hi} out of range 0..={max}"),
                        ));
                    }
                    if r.match_operator != Some(MatchOperator::In) {
                        errors.push((at("prefixLength"), "only with matchOperator In".into()));
                    }
                }
            }
        }
        errors
    }
}
