//! serval's nftables tables `ip serval` and `ip6 serval`: natOutgoing, and the guard
//! that keeps pods off the node's BGP sessions.
//!
//! natOutgoing: a `postrouting` NAT chain, a set of every pool CIDR (`pools`), a set of
//! the natOutgoing pool CIDRs (`masq-pools`) and one rule: source in `masq-pools` and
//! destination outside `pools` → masquerade. Traffic between pods, on this node or
//! another, keeps its source address.
//!
//! The BGP guard: a pod is not the node, but what it sends to a peer leaves the node
//! masqueraded as the node's own address, and what it sends to the node's own BGP port
//! comes from a local-looking neighbour. Either way a pod could open a session as its
//! node (and, with a graceful-restart OPEN, try to replace the real one). So traffic from
//! pool addresses is dropped on its way to the speaker's listen port on this node
//! (`bgp-input`, the input hook: every address of the node) and to the address and port
//! of each of the node's BGP peers (`bgp-forward`, the forward hook, before the
//! masquerade; the `bgp-peers` set of address . port, which the agent keeps current as
//! peers come and go). Every other port on those addresses stays open to pods.
//!
//! A sync is one `nft -j -f -` run, one netlink transaction: the table is created (so
//! that deleting it cannot fail), deleted and rebuilt from the desired pools and peers.
//! The kernel swaps in the whole new table at commit, so there is no moment without the
//! rules, and re-running it with the same input gives the same ruleset. A family with no
//! pool has no serval table (nothing there comes from a pool). Nothing outside these
//! tables is touched.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use nftables::batch::Batch;
use nftables::expr::{Expression, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{
    Chain, Element, NfListObject, Rule, Set, SetFlag, SetType, SetTypeValue, Table,
};
use nftables::stmt::{Counter, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::spec::NatPool;
use super::Error;

/// Serval's table name, in both families.
pub const TABLE: &str = "serval";
/// The NAT chain.
pub const CHAIN: &str = "postrouting";
/// The set of every pool CIDR.
pub const ALL_POOLS: &str = "pools";
/// The set of natOutgoing pool CIDRs.
pub const MASQ_POOLS: &str = "masq-pools";
/// The chain that drops pool traffic to this node's BGP port.
pub const GUARD_INPUT: &str = "bgp-input";
/// The chain that drops pool traffic to the BGP peers' ports.
pub const GUARD_FORWARD: &str = "bgp-forward";
/// The set of `address . port` of every BGP peer of the node.
pub const BGP_PEERS: &str = "bgp-peers";
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
    /// Whether `ip serval` exists after the sync (there is an IPv4 pool).
    pub ipv4_table: bool,
    /// Whether `ip6 serval` exists after the sync (there is an IPv6 pool).
    pub ipv6_table: bool,
}

/// The node's BGP endpoints that pool addresses must not reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct BgpGuard {
    /// The port the node's speaker listens on, on every address of the node.
    pub listen_port: Option<u16>,
    /// The node's BGP peers: the address and port each session connects to.
    pub peers: BTreeSet<SocketAddr>,
}

impl BgpGuard {
    pub fn new(listen_port: u16, peers: impl IntoIterator<Item = SocketAddr>) -> Self {
        BgpGuard {
            listen_port: Some(listen_port),
            peers: peers.into_iter().collect(),
        }
    }
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

    /// Makes serval's tables match `pools` and `guard`, in one transaction.
    pub async fn sync(&self, pools: &[NatPool], guard: &BgpGuard) -> Result<NatReport, Error> {
        let batch = ruleset(pools, guard);
        let report = NatReport {
            ipv4_table: pools.iter().any(|p| p.cidr.addr().is_ipv4()),
            ipv6_table: pools.iter().any(|p| p.cidr.addr().is_ipv6()),
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
                "applying serval's nftables tables (natOutgoing, BGP guard) for {} pool(s) \
                 and {} BGP peer(s) with {}",
                pools.len(),
                guard.peers.len(),
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

/// The whole transaction for `pools` and `guard`.
pub fn ruleset(pools: &[NatPool], guard: &BgpGuard) -> Batch<'static> {
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
        let all: Vec<IpNet> = IpNet::aggregate(
            &pools
                .iter()
                .filter(|p| p.cidr.addr().is_ipv4() == ipv4)
                .map(|p| p.cidr.trunc())
                .collect(),
        );
        if all.is_empty() {
            continue;
        }
        let masq: Vec<IpNet> = IpNet::aggregate(&masq_cidrs(pools, ipv4).collect());
        batch.add(NfListObject::Table(table));
        let set_type = if ipv4 {
            SetType::Ipv4Addr
        } else {
            SetType::Ipv6Addr
        };
        let mut sets = vec![(ALL_POOLS, &all)];
        if !masq.is_empty() {
            sets.push((MASQ_POOLS, &masq));
        }
        for (name, cidrs) in sets {
            batch.add(NfListObject::Set(Box::new(set(
                family,
                name,
                SetTypeValue::Single(set_type),
                true,
            ))));
            batch.add(NfListObject::Element(Element {
                family,
                table: TABLE.into(),
                name: name.into(),
                elem: Cow::Owned(cidrs.iter().map(prefix).collect()),
            }));
        }
        let proto = if ipv4 { "ip" } else { "ip6" };
        let field = |f: &'static str| payload(proto, f);
        let from_pools = || {
            Statement::Match(Match {
                left: field("saddr"),
                right: Expression::String(format!("@{ALL_POOLS}").into()),
                op: Operator::IN,
            })
        };
        if !masq.is_empty() {
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

        // The BGP guard.
        for (name, hook) in [
            (GUARD_INPUT, NfHook::Input),
            (GUARD_FORWARD, NfHook::Forward),
        ] {
            batch.add(NfListObject::Chain(Chain {
                family,
                table: TABLE.into(),
                name: name.into(),
                _type: Some(NfChainType::Filter),
                hook: Some(hook),
                prio: Some(0),
                policy: Some(NfChainPolicy::Accept),
                ..Chain::default()
            }));
        }
        if let Some(port) = guard.listen_port {
            batch.add(NfListObject::Rule(Rule {
                family,
                table: TABLE.into(),
                chain: GUARD_INPUT.into(),
                expr: Cow::Owned(vec![
                    from_pools(),
                    Statement::Match(Match {
                        left: payload("tcp", "dport"),
                        right: Expression::Number(u32::from(port)),
                        op: Operator::EQ,
                    }),
                    Statement::Counter(Counter::Anonymous(None)),
                    Statement::Drop(None),
                ]),
                comment: Some("serval: pods never reach the node's BGP port".into()),
                ..Rule::default()
            }));
        }
        batch.add(NfListObject::Set(Box::new(set(
            family,
            BGP_PEERS,
            SetTypeValue::Concatenated(Cow::Owned(vec![set_type, SetType::InetService])),
            false,
        ))));
        let peers: Vec<Expression<'static>> = guard
            .peers
            .iter()
            .filter(|p| p.is_ipv4() == ipv4)
            .map(|p| {
                Expression::Named(NamedExpression::Concat(vec![
                    Expression::String(p.ip().to_string().into()),
                    Expression::Number(u32::from(p.port())),
                ]))
            })
            .collect();
        if !peers.is_empty() {
            batch.add(NfListObject::Element(Element {
                family,
                table: TABLE.into(),
                name: BGP_PEERS.into(),
                elem: Cow::Owned(peers),
            }));
        }
        batch.add(NfListObject::Rule(Rule {
            family,
            table: TABLE.into(),
            chain: GUARD_FORWARD.into(),
            expr: Cow::Owned(vec![
                from_pools(),
                Statement::Match(Match {
                    left: Expression::Named(NamedExpression::Concat(vec![
                        field("daddr"),
                        payload("tcp", "dport"),
                    ])),
                    right: Expression::String(format!("@{BGP_PEERS}").into()),
                    op: Operator::IN,
                }),
                Statement::Counter(Counter::Anonymous(None)),
                Statement::Drop(None),
            ]),
            comment: Some("serval: pods never reach the node's BGP peers as the node".into()),
            ..Rule::default()
        }));
    }
    batch
}

fn set(
    family: NfFamily,
    name: &'static str,
    set_type: SetTypeValue<'static>,
    interval: bool,
) -> Set<'static> {
    Set {
        family,
        table: TABLE.into(),
        name: name.into(),
        handle: None,
        set_type,
        policy: None,
        flags: interval.then(|| HashSet::from([SetFlag::Interval])),
        elem: None,
        timeout: None,
        gc_interval: None,
        size: None,
        comment: None,
    }
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
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
        json_guarded(pools, &BgpGuard::default())
    }

    fn json_guarded(pools: &[NatPool], guard: &BgpGuard) -> serde_json::Value {
        serde_json::to_value(ruleset(pools, guard).to_nftables()).unwrap()
    }

    fn adds<'a>(v: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"].get(kind))
            .collect()
    }

    #[test]
    fn no_pool_only_removes_tables() {
        let v = json(&[]);
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
        // IPv6 has no natOutgoing pool: no NAT chain and no masq-pools set there.
        let chains = adds(&v, "chain");
        assert!(
            !chains
                .iter()
                .any(|c| c["family"] == "ip6" && c["name"] == CHAIN),
            "{text}"
        );
        assert!(
            !adds(&v, "set")
                .iter()
                .any(|s| s["family"] == "ip6" && s["name"] == MASQ_POOLS),
            "{text}"
        );
    }

    #[test]
    fn overlapping_pools_are_aggregated() {
        let v = json(&[
            pool("10.0.0.0/16", true),
            pool("10.0.1.0/24", true),
            pool("10.0.0.5/16", false),
        ]);
        let elements = adds(&v, "element");
        assert_eq!(elements.len(), 2);
        for e in elements {
            assert_eq!(e["elem"].as_array().unwrap().len(), 1, "{e}");
        }
    }

    /// Pool sources are dropped on their way to the listen port (input) and to each
    /// peer's address and port (forward), per family, with natOutgoing or without.
    #[test]
    fn bgp_guard_drops_pool_traffic_to_the_listen_port_and_the_peers() {
        let guard = BgpGuard::new(
            1790,
            [
                "192.0.2.2:1790".parse().unwrap(),
                "198.51.100.1:179".parse().unwrap(),
                "[2001:db8::2]:1790".parse().unwrap(),
            ],
        );
        for nat in [true, false] {
            let v = json_guarded(
                &[pool("10.0.0.0/16", nat), pool("fd00::/48", false)],
                &guard,
            );
            let text = v.to_string();
            for family in ["ip", "ip6"] {
                let chains = adds(&v, "chain");
                for (name, hook) in [(GUARD_INPUT, "input"), (GUARD_FORWARD, "forward")] {
                    assert!(
                        chains.iter().any(|c| c["family"] == family
                            && c["name"] == name
                            && c["hook"] == hook
                            && c["type"] == "filter"
                            && c["policy"] == "accept"),
                        "{family} {name}: {text}"
                    );
                }
                let rules: Vec<String> = adds(&v, "rule")
                    .into_iter()
                    .filter(|r| r["family"] == family)
                    .map(|r| r.to_string())
                    .collect();
                let input = rules
                    .iter()
                    .find(|r| r.contains(GUARD_INPUT))
                    .unwrap_or_else(|| panic!("{family}: no input rule: {text}"));
                assert!(
                    input.contains(r#""@pools""#)
                        && input.contains(r#""right":1790"#)
                        && input.contains(r#"{"drop":null}"#),
                    "{input}"
                );
                let forward = rules
                    .iter()
                    .find(|r| r.contains(GUARD_FORWARD))
                    .unwrap_or_else(|| panic!("{family}: no forward rule: {text}"));
                assert!(
                    forward.contains(r#""@pools""#)
                        && forward.contains(r#""@bgp-peers""#)
                        && forward.contains(r#""concat""#)
                        && forward.contains(r#"{"drop":null}"#),
                    "{forward}"
                );
            }
            let peers: Vec<(String, String)> = adds(&v, "element")
                .into_iter()
                .filter(|e| e["name"] == BGP_PEERS)
                .flat_map(|e| {
                    let family = e["family"].as_str().unwrap().to_string();
                    e["elem"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(move |x| (family.clone(), x.to_string()))
                })
                .collect();
            assert_eq!(
                peers,
                [
                    ("ip".into(), r#"{"concat":["192.0.2.2",1790]}"#.into()),
                    ("ip".into(), r#"{"concat":["198.51.100.1",179]}"#.into()),
                    ("ip6".into(), r#"{"concat":["2001:db8::2",1790]}"#.into()),
                ],
                "{text}"
            );
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
