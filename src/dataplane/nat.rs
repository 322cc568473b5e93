//! natOutgoing through nftables: serval's own tables `ip serval` and `ip6 serval`, each
//! with a `postrouting` NAT chain, a set of every pool CIDR (`pools`), a set of the
//! natOutgoing pool CIDRs (`masq-pools`) and one rule: source in `masq-pools` and
//! destination outside `pools` → masquerade. Traffic between pods, on this node or
//! another, keeps its source address.
//!
//! A sync is one `nft -j -f -` run, one netlink transaction: the table is created (so
//! that deleting it cannot fail), deleted and rebuilt from the desired pools. The
//! kernel swaps in the whole new table at commit, so there is no moment without the
//! rule, and re-running it with the same pools gives the same ruleset. A family with
//! no natOutgoing pool has no serval table. Nothing outside these tables is touched.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use nftables::batch::Batch;
use nftables::expr::{Expression, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{
    Chain, Element, NfListObject, Rule, Set, SetFlag, SetType, SetTypeValue, Table,
};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainType, NfFamily, NfHook};

use super::desired::NatPool;
use super::Error;

/// Serval's table name, in both families.
pub const TABLE: &str = "serval";
/// The NAT chain.
pub const CHAIN: &str = "postrouting";
/// The set of every pool CIDR.
pub const ALL_POOLS: &str = "pools";
/// The set of natOutgoing pool CIDRs.
pub const MASQ_POOLS: &str = "masq-pools";
/// Where Debian's nftables package puts the binary.
pub const DEFAULT_NFT: &str = "/usr/sbin/nft";

/// Programs serval's NAT tables through the `nft` binary.
#[derive(Debug, Clone)]
pub struct NatProgrammer {
    nft: PathBuf,
}

/// What a NAT sync left in place, per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatReport {
    /// Whether `ip serval` exists after the sync.
    pub ipv4_table: bool,
    /// Whether `ip6 serval` exists after the sync.
    pub ipv6_table: bool,
}

impl NatProgrammer {
    /// Finds `nft` at [`DEFAULT_NFT`] or in `PATH`; fails naming the package if absent.
    pub fn new() -> Result<Self, Error> {
        Self::with_binary(Path::new(DEFAULT_NFT))
    }

    /// Uses the `nft` at `path`, or the one in `PATH` when `path` does not exist.
    pub fn with_binary(path: &Path) -> Result<Self, Error> {
        Self::locate(path, std::env::var_os("PATH").as_deref())
    }

    fn locate(path: &Path, search: Option<&OsStr>) -> Result<Self, Error> {
        if path.is_file() {
            return Ok(NatProgrammer {
                nft: path.to_owned(),
            });
        }
        let in_path = search.and_then(|paths| {
            std::env::split_paths(paths)
                .map(|dir| dir.join("nft"))
                .find(|candidate| candidate.is_file())
        });
        in_path
            .map(|nft| NatProgrammer { nft })
            .ok_or_else(|| Error::NftMissing(path.display().to_string()))
    }

    /// Makes serval's tables match `pools`, in one transaction.
    pub async fn sync(&self, pools: &[NatPool]) -> Result<NatReport, Error> {
        let batch = ruleset(pools);
        let report = NatReport {
            ipv4_table: masq_cidrs(pools, true).next().is_some(),
            ipv6_table: masq_cidrs(pools, false).next().is_some(),
        };
        let nftables = batch.to_nftables();
        nftables::helper::apply_ruleset_with_args_async(
            &nftables,
            Some(&self.nft),
            std::iter::empty::<&str>(),
        )
        .await
        .map_err(|e| Error::Nft {
            doing: format!(
                "applying serval's NAT tables for {} pool(s) with {}",
                pools.len(),
                self.nft.display()
            ),
            detail: describe(&e),
        })?;
        Ok(report)
    }
}

fn describe(e: &nftables::helper::NftablesError) -> String {
    match e {
        nftables::helper::NftablesError::NftFailed { stderr, .. } => {
            format!("{e}: {}", stderr.trim())
        }
        other => other.to_string(),
    }
}

fn masq_cidrs(pools: &[NatPool], ipv4: bool) -> impl Iterator<Item = IpNet> + '_ {
    pools
        .iter()
        .filter(move |p| p.nat_outgoing && p.cidr.addr().is_ipv4() == ipv4)
        .map(|p| p.cidr.trunc())
}

/// The whole transaction for `pools`.
pub fn ruleset(pools: &[NatPool]) -> Batch<'static> {
    let mut batch = Batch::new();
    for (family, ipv4) in [(NfFamily::IP, true), (NfFamily::IP6, false)] {
        let table = Table {
            family,
            name: TABLE.into(),
            handle: None,
        };
        // add + delete: removes the table whether or not it existed, inside the
        // transaction.
        batch.add(NfListObject::Table(table.clone()));
        batch.delete(NfListObject::Table(table.clone()));
        let masq: Vec<IpNet> = IpNet::aggregate(&masq_cidrs(pools, ipv4).collect());
        if masq.is_empty() {
            continue;
        }
        let all: Vec<IpNet> = IpNet::aggregate(
            &pools
                .iter()
                .filter(|p| p.cidr.addr().is_ipv4() == ipv4)
                .map(|p| p.cidr.trunc())
                .collect(),
        );
        batch.add(NfListObject::Table(table));
        batch.add(NfListObject::Chain(Chain {
            family,
            table: TABLE.into(),
            name: CHAIN.into(),
            _type: Some(NfChainType::NAT),
            hook: Some(NfHook::Postrouting),
            // srcnat
            prio: Some(100),
            ..Chain::default()
        }));
        let set_type = if ipv4 {
            SetType::Ipv4Addr
        } else {
            SetType::Ipv6Addr
        };
        for (name, cidrs) in [(ALL_POOLS, &all), (MASQ_POOLS, &masq)] {
            batch.add(NfListObject::Set(Box::new(Set {
                family,
                table: TABLE.into(),
                name: name.into(),
                handle: None,
                set_type: SetTypeValue::Single(set_type),
                policy: None,
                flags: Some(HashSet::from([SetFlag::Interval])),
                elem: None,
                timeout: None,
                gc_interval: None,
                size: None,
                comment: None,
            })));
            batch.add(NfListObject::Element(Element {
                family,
                table: TABLE.into(),
                name: name.into(),
                elem: Cow::Owned(cidrs.iter().map(prefix).collect()),
            }));
        }
        let proto = if ipv4 { "ip" } else { "ip6" };
        let field = |f: &'static str| {
            Expression::Named(NamedExpression::Payload(Payload::PayloadField(
                PayloadField {
                    protocol: proto.into(),
                    field: f.into(),
                },
            )))
        };
        batch.add(NfListObject::Rule(Rule {
            family,
            table: TABLE.into(),
            chain: CHAIN.into(),
            expr: Cow::Owned(vec![
                Statement::Match(Match {
                    left: field("saddr"),
                    right: Expression::String(format!("@{MASQ_POOLS}").into()),
                    op: Operator::IN,
                }),
                Statement::Match(Match {
                    left: field("daddr"),
                    right: Expression::String(format!("@{ALL_POOLS}").into()),
                    op: Operator::NEQ,
                }),
                Statement::Masquerade(None),
            ]),
            comment: Some("serval natOutgoing".into()),
            ..Rule::default()
        }));
    }
    batch
}

fn prefix(net: &IpNet) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(net.network().to_string().into())),
        len: u32::from(net.prefix_len()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str, nat_outgoing: bool) -> NatPool {
        NatPool {
            cidr: cidr.parse().unwrap(),
            nat_outgoing,
        }
    }

    fn json(pools: &[NatPool]) -> serde_json::Value {
        serde_json::to_value(ruleset(pools).to_nftables()).unwrap()
    }

    #[test]
    fn no_masq_pool_only_removes_tables() {
        let v = json(&[pool("10.0.0.0/16", false)]);
        let cmds = v["nftables"].as_array().unwrap();
        assert_eq!(cmds.len(), 4, "{v}");
        assert!(cmds.iter().all(|c| c
            .get("add")
            .or(c.get("delete"))
            .unwrap()
            .get("table")
            .is_some()));
    }

    #[test]
    fn masq_pool_builds_sets_and_rule_per_family() {
        let v = json(&[
            pool("10.0.0.0/16", true),
            pool("10.1.0.0/16", false),
            pool("fd00::/48", false),
        ]);
        let text = v.to_string();
        assert!(text.contains(r#""masquerade""#), "{text}");
        assert!(
            text.contains(r#""@masq-pools""#) && text.contains(r#""@pools""#),
            "{text}"
        );
        // IPv6 has no natOutgoing pool: only add + delete of its table.
        let ip6_objects = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c.to_string().contains(r#""family":"ip6""#))
            .count();
        assert_eq!(ip6_objects, 2, "{text}");
    }

    #[test]
    fn overlapping_pools_are_aggregated() {
        let v = json(&[
            pool("10.0.0.0/16", true),
            pool("10.0.1.0/24", true),
            pool("10.0.0.5/16", false),
        ]);
        let elements: Vec<_> = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"].get("element"))
            .collect();
        assert_eq!(elements.len(), 2);
        for e in elements {
            assert_eq!(e["elem"].as_array().unwrap().len(), 1, "{e}");
        }
    }

    #[test]
    fn missing_nft_names_the_package() {
        let err = NatProgrammer::locate(Path::new("/nonexistent/nft"), None).unwrap_err();
        assert!(matches!(err, Error::NftMissing(_)));
        let text = err.to_string();
        assert!(
            text.contains("nftables") && text.contains("/nonexistent/nft"),
            "{text}"
        );
        let err = NatProgrammer::locate(
            Path::new("/nonexistent/nft"),
            Some(OsStr::new("/nonexistent")),
        )
        .unwrap_err();
        assert!(matches!(err, Error::NftMissing(_)));
    }
}
