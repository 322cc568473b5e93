//! `BGPFilter`: prefix filters that BGPPeers name in `filters`, Calico's resource with
//! its field names. Each list is ordered; the first rule whose match holds decides;
//! a route that no rule matches is accepted.

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FilterAction {
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
