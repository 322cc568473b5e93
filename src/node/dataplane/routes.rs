//! The route programmer: makes serval's routes in one kernel table match
//! [`DesiredRoutes`], over rtnetlink.
//!
//! Serval's routes carry their own protocol number, [`SERVAL_PROTOCOL`]: a sync dumps
//! the table, takes the routes of that protocol as serval's, and adds, replaces or
//! deletes only those. Routes of every other protocol are never written: a desired
//! prefix that another protocol already holds is reported as a [`Conflict`] and left
//! as it is. Routes that are already right are not rewritten, so an agent restart (whose
//! first sync sees its previous routes) removes only what is no longer desired and
//! leaves pods reachable throughout.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHop,
    RouteNextHopFlags, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::Netlink;
use super::plan::{self, Conflict, Hop, Installed};
use super::spec::{DesiredRoutes, NextHop, RouteDiff, RouteTarget};
use super::tunnel::{IPIP_DEVICE, VXLAN_DEVICE, VXLAN_V6_DEVICE};
use super::{links, Error};

/// Serval's route protocol number (`rtm_protocol`). 83 (ASCII `S`) is neither in the
/// kernel's `RTPROT_*` list nor in iproute2's `rt_protos`, nor among the numbers FRR
/// (186–197), BIRD (12) or Calico's Felix (80) use. [`write_rt_protos_entry`] lets
/// `ip route show proto serval` work.
pub const SERVAL_PROTOCOL: u8 = 83;

/// The main routing table.
pub const MAIN_TABLE: u32 = 254;

/// Which table and protocol serval's routes live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteConfig {
    /// Kernel routing table id (default: main, 254).
    pub table: u32,
    /// Route protocol number marking serval's routes (default: [`SERVAL_PROTOCOL`]).
    pub protocol: u8,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            table: MAIN_TABLE,
            protocol: SERVAL_PROTOCOL,
        }
    }
}

/// A route that could not be programmed; the rest of the sync went ahead.
#[derive(Debug)]
pub struct RouteFailure {
    /// The prefix.
    pub prefix: IpNet,
    /// Why, naming the route.
    pub error: Error,
}

/// What a sync or an incremental apply did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Prefixes added.
    pub added: Vec<IpNet>,
    /// Prefixes whose route was replaced.
    pub replaced: Vec<IpNet>,
    /// Prefixes removed.
    pub deleted: Vec<IpNet>,
    /// Routes already right, left untouched.
    pub unchanged: usize,
    /// Desired prefixes another protocol holds; not touched.
    pub conflicts: Vec<Conflict>,
    /// Routes the kernel refused.
    pub failures: Vec<RouteFailure>,
}

impl SyncReport {
    /// Whether every desired route is in place (no conflict, no failure).
    pub fn is_clean(&self) -> bool {
        self.conflicts.is_empty() && self.failures.is_empty()
    }
}

/// Serval's routes and the prefixes of other protocols, as dumped from one table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableSnapshot {
    /// Routes of serval's protocol.
    pub ours: BTreeMap<IpNet, Installed>,
    /// Prefix → protocol of every other route of the table.
    pub others: BTreeMap<IpNet, u8>,
}

/// Programs serval's routes in one table.
#[derive(Debug)]
pub struct RouteProgrammer {
    nl: Netlink,
    config: RouteConfig,
    /// Serval's routes as last seen or written; lets `apply_changes` tell a replace
    /// from an add without dumping the table.
    installed: BTreeMap<IpNet, Installed>,
}

/// What one netlink write is for, to name it in errors and sort its outcome.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Delete,
}

impl RouteProgrammer {
    /// A programmer for `config`'s table over `nl`.
    pub fn new(nl: Netlink, config: RouteConfig) -> Self {
        RouteProgrammer {
            nl,
            config,
            installed: BTreeMap::new(),
        }
    }

    /// The table and protocol in use.
    pub fn config(&self) -> RouteConfig {
        self.config
    }

    /// Dumps the table (IPv4 and IPv6).
    pub async fn snapshot(&self) -> Result<TableSnapshot, Error> {
        let mut snap = TableSnapshot::default();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut request = RouteMessage::default();
            request.header.address_family = family;
            set_table(&mut request, self.config.table);
            let answers = match self.nl.dump(RouteNetlinkMessage::GetRoute(request)).await {
                Ok(answers) => answers,
                // The family has no such table yet: no routes in it.
                Err(e) if e.errno() == Some(libc::ENOENT) => Vec::new(),
                Err(e) => {
                    return Err(Error::netlink(
                        format!("dumping {family:?} routes of table {}", self.config.table),
                        e,
                    ))
                }
            };
            for answer in answers {
                let RouteNetlinkMessage::NewRoute(route) = answer else {
                    continue;
                };
                let Some((prefix, table, protocol)) = identity(&route) else {
                    continue;
                };
                if table != self.config.table || route.header.flags.contains(RouteFlags::Cloned) {
                    continue;
                }
                if protocol == self.config.protocol {
                    snap.ours
                        .entry(prefix)
                        .or_insert_with(|| installed_form(&route));
                } else {
                    snap.others.entry(prefix).or_insert(protocol);
                }
            }
        }
        Ok(snap)
    }

    /// Takes serval's routes now in the table (a previous run's) as installed without
    /// changing any, so that incremental changes replace them in place instead of
    /// failing as duplicates. A restarted agent adopts, applies what it learns, and
    /// removes what nobody wants only at its first full [`RouteProgrammer::sync`].
    /// Returns the routes adopted.
    pub async fn adopt(&mut self) -> Result<BTreeMap<IpNet, Installed>, Error> {
        let snap = self.snapshot().await?;
        self.installed = snap.ours.clone();
        Ok(snap.ours)
    }

    /// Makes serval's routes equal `desired`: dump, diff, then one pipelined stream of
    /// deletes, replaces and adds. Per-route refusals land in the report; an `Err` means
    /// the table could not be read at all.
    pub async fn sync(&mut self, desired: &DesiredRoutes) -> Result<SyncReport, Error> {
        let devices = links::indices(&self.nl).await?;
        let snap = self.snapshot().await?;
        let mut report = SyncReport::default();
        let resolved = self.resolve_all(&desired.routes, &devices, &mut report);
        let plan = plan::plan(&resolved, &snap.ours, &snap.others);
        report.unchanged = plan.unchanged;
        report.conflicts = plan.conflicts;
        self.installed = snap.ours;
        let mut writes =
            Vec::with_capacity(plan.add.len() + plan.replace.len() + plan.delete.len());
        writes.extend(plan.delete.into_iter().map(|p| (Op::Delete, p)));
        writes.extend(plan.replace.into_iter().map(|p| (Op::Replace, p)));
        writes.extend(plan.add.into_iter().map(|p| (Op::Add, p)));
        self.write(writes, &resolved, &mut report).await?;
        Ok(report)
    }

    /// Applies an incremental change (e.g. from BGP) without dumping the table: an
    /// upsert replaces serval's route where serval has one and adds exclusively where
    /// it has none (another protocol's route there makes it a conflict); a withdraw
    /// deletes serval's route only (the kernel matches the protocol).
    pub async fn apply_changes(&mut self, diff: &RouteDiff) -> Result<SyncReport, Error> {
        let devices = links::indices(&self.nl).await?;
        let mut report = SyncReport::default();
        let resolved = self.resolve_all(&diff.upsert, &devices, &mut report);
        let mut writes = Vec::new();
        for prefix in &diff.withdraw {
            if !diff.upsert.contains_key(prefix) {
                writes.push((Op::Delete, *prefix));
            }
        }
        for (prefix, want) in &resolved {
            match self.installed.get(prefix) {
                Some(have) if want.satisfied_by(have) => report.unchanged += 1,
                Some(_) => writes.push((Op::Replace, *prefix)),
                None => writes.push((Op::Add, *prefix)),
            }
        }
        self.write(writes, &resolved, &mut report).await?;
        Ok(report)
    }

    fn resolve_all(
        &self,
        routes: &BTreeMap<IpNet, RouteTarget>,
        devices: &BTreeMap<String, u32>,
        report: &mut SyncReport,
    ) -> BTreeMap<IpNet, Installed> {
        let mut resolved = BTreeMap::new();
        for (prefix, target) in routes {
            match resolve(*prefix, target, devices) {
                Ok(r) => {
                    resolved.insert(*prefix, r);
                }
                Err(error) => report.failures.push(RouteFailure {
                    prefix: *prefix,
                    error,
                }),
            }
        }
        resolved
    }

    async fn write(
        &mut self,
        writes: Vec<(Op, IpNet)>,
        resolved: &BTreeMap<IpNet, Installed>,
        report: &mut SyncReport,
    ) -> Result<(), Error> {
        // Adds and replaces are planned from `resolved`, so each has its route there.
        let writes: Vec<(Op, IpNet)> = writes
            .into_iter()
            .filter(|(op, prefix)| *op == Op::Delete || resolved.contains_key(prefix))
            .collect();
        let messages = writes
            .iter()
            .map(|(op, prefix)| match (op, resolved.get(prefix)) {
                (Op::Add, Some(r)) => (
                    RouteNetlinkMessage::NewRoute(route_message(&self.config, *prefix, r)),
                    NLM_F_CREATE | NLM_F_EXCL,
                ),
                (Op::Replace, Some(r)) => (
                    RouteNetlinkMessage::NewRoute(route_message(&self.config, *prefix, r)),
                    NLM_F_CREATE | NLM_F_REPLACE,
                ),
                _ => (
                    RouteNetlinkMessage::DelRoute(delete_message(&self.config, *prefix)),
                    0,
                ),
            })
            .collect();
        let outcomes = self
            .nl
            .ack_many(messages)
            .await
            .map_err(|e| Error::netlink(format!("writing {} routes", writes.len()), e))?;
        let mut raced = Vec::new();
        for ((op, prefix), outcome) in writes.into_iter().zip(outcomes) {
            match (op, outcome) {
                (Op::Add, Ok(())) => {
                    report.added.push(prefix);
                    self.remember(prefix, resolved);
                }
                (Op::Replace, Ok(())) => {
                    report.replaced.push(prefix);
                    self.remember(prefix, resolved);
                }
                (Op::Delete, Ok(())) => {
                    report.deleted.push(prefix);
                    self.installed.remove(&prefix);
                }
                // Gone already: that is what a delete wants.
                (Op::Delete, Err(e))
                    if e.errno() == Some(libc::ESRCH) || e.errno() == Some(libc::ENOENT) =>
                {
                    self.installed.remove(&prefix);
                }
                // Someone else's route appeared at the prefix since the dump (or, for an
                // incremental add, was there all along): leave it.
                (Op::Add, Err(e)) if e.errno() == Some(libc::EEXIST) => raced.push(prefix),
                (op, Err(e)) => report.failures.push(RouteFailure {
                    prefix,
                    error: Error::netlink(self.describe(op, prefix, resolved.get(&prefix)), e),
                }),
            }
        }
        if !raced.is_empty() {
            // One dump names the protocols of every route found in the way.
            let others = self.snapshot().await.map(|s| s.others).unwrap_or_default();
            report
                .conflicts
                .extend(raced.into_iter().map(|prefix| Conflict {
                    prefix,
                    protocol: others.get(&prefix).copied().unwrap_or(0),
                }));
        }
        Ok(())
    }

    fn remember(&mut self, prefix: IpNet, resolved: &BTreeMap<IpNet, Installed>) {
        if let Some(r) = resolved.get(&prefix) {
            self.installed.insert(prefix, r.clone());
        }
    }

    fn describe(&self, op: Op, prefix: IpNet, route: Option<&Installed>) -> String {
        let verb = match op {
            Op::Add => "adding",
            Op::Replace => "replacing",
            Op::Delete => "deleting",
        };
        let what = match (op, route) {
            (Op::Delete, _) | (_, None) => String::new(),
            (_, Some(r)) => format!(" {}", DisplayInstalled(r)),
        };
        format!(
            "{verb} route {prefix}{what} (proto {}, table {})",
            self.config.protocol, self.config.table
        )
    }
}

fn header(config: &RouteConfig, prefix: IpNet) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = family_of(prefix.addr());
    message.header.destination_prefix_length = prefix.prefix_len();
    message.header.protocol = RouteProtocol::from(config.protocol);
    set_table(&mut message, config.table);
    message
        .attributes
        .push(RouteAttribute::Destination(route_address(prefix.network())));
    message
}

fn route_message(config: &RouteConfig, prefix: IpNet, route: &Installed) -> RouteMessage {
    let mut message = header(config, prefix);
    message.header.scope = RouteScope::Universe;
    match route {
        // `resolve` never yields `Foreign`; were it asked to, dropping is the safe side.
        Installed::Blackhole | Installed::Foreign => {
            message.header.kind = RouteType::BlackHole;
        }
        Installed::Via(hops) => {
            message.header.kind = RouteType::Unicast;
            if let [hop] = hops.iter().collect::<Vec<_>>()[..] {
                message
                    .attributes
                    .push(RouteAttribute::Gateway(route_address(hop.gateway)));
                if let Some(index) = hop.ifindex {
                    message.attributes.push(RouteAttribute::Oif(index));
                }
                if hop.onlink {
                    message.header.flags.insert(RouteFlags::Onlink);
                }
            } else {
                let next_hops = hops
                    .iter()
                    .map(|hop| {
                        let mut nh = RouteNextHop::default();
                        nh.interface_index = hop.ifindex.unwrap_or(0);
                        if hop.onlink {
                            nh.flags.insert(RouteNextHopFlags::Onlink);
                        }
                        nh.attributes
                            .push(RouteAttribute::Gateway(route_address(hop.gateway)));
                        nh
                    })
                    .collect();
                message
                    .attributes
                    .push(RouteAttribute::MultiPath(next_hops));
            }
        }
    }
    message
}

fn delete_message(config: &RouteConfig, prefix: IpNet) -> RouteMessage {
    let mut message = header(config, prefix);
    // As `ip route del`: any scope, any type; the protocol in the header makes the
    // kernel delete only a route of serval's protocol.
    message.header.scope = RouteScope::NoWhere;
    message.header.kind = RouteType::Unspec;
    message
}

/// Resolves a desired target to the form the kernel will report, with device indices.
fn resolve(
    prefix: IpNet,
    target: &RouteTarget,
    devices: &BTreeMap<String, u32>,
) -> Result<Installed, Error> {
    let hops = match target {
        RouteTarget::Blackhole => return Ok(Installed::Blackhole),
        RouteTarget::Unicast(hop) => vec![hop],
        RouteTarget::Multipath(hops) => hops.iter().collect(),
    };
    let device = |name: &str, purpose: &str| {
        devices
            .get(name)
            .copied()
            .ok_or_else(|| Error::NoSuchDevice {
                name: name.to_owned(),
                purpose: format!("{purpose} of the route to {prefix}"),
            })
    };
    let mut out = std::collections::BTreeSet::new();
    for hop in hops {
        let hop = match hop {
            NextHop::Direct { gateway, dev } => Hop {
                gateway: *gateway,
                ifindex: dev
                    .as_deref()
                    .map(|d| device(d, "the output device"))
                    .transpose()?,
                onlink: false,
            },
            NextHop::Ipip { gateway } => Hop {
                gateway: IpAddr::V4(*gateway),
                ifindex: Some(device(IPIP_DEVICE, "the IP-in-IP tunnel")?),
                onlink: true,
            },
            NextHop::Vxlan(peer) => Hop {
                gateway: peer.vtep_addr,
                ifindex: Some(match peer.vtep_addr {
                    IpAddr::V4(_) => device(VXLAN_DEVICE, "the VXLAN tunnel")?,
                    IpAddr::V6(_) => device(VXLAN_V6_DEVICE, "the IPv6 VXLAN tunnel")?,
                }),
                onlink: true,
            },
        };
        if hop.gateway.is_ipv4() != prefix.addr().is_ipv4() {
            return Err(Error::WrongFamily {
                what: format!("gateway of the route to {prefix}"),
                addr: hop.gateway,
                expected: if prefix.addr().is_ipv4() {
                    "IPv4"
                } else {
                    "IPv6"
                },
            });
        }
        out.insert(hop);
    }
    Ok(Installed::Via(out))
}

/// Prefix, table and protocol of a dumped route.
fn identity(route: &RouteMessage) -> Option<(IpNet, u32, u8)> {
    let len = route.header.destination_prefix_length;
    let addr = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(d) => ip_of(d),
            _ => None,
        })
        .or(match route.header.address_family {
            AddressFamily::Inet => Some(IpAddr::from([0u8; 4])),
            AddressFamily::Inet6 => Some(IpAddr::from([0u8; 16])),
            _ => None,
        })?;
    let prefix = IpNet::new(addr, len).ok()?;
    let table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table));
    Some((prefix, table, u8::from(route.header.protocol)))
}

/// The comparable form of a dumped route.
fn installed_form(route: &RouteMessage) -> Installed {
    match route.header.kind {
        RouteType::BlackHole => return Installed::Blackhole,
        RouteType::Unicast => {}
        _ => return Installed::Foreign,
    }
    let mut hops = std::collections::BTreeSet::new();
    for attribute in &route.attributes {
        if let RouteAttribute::MultiPath(next_hops) = attribute {
            for nh in next_hops {
                let Some(gateway) = gateway_of(&nh.attributes) else {
                    return Installed::Foreign;
                };
                hops.insert(Hop {
                    gateway,
                    ifindex: Some(nh.interface_index).filter(|i| *i != 0),
                    onlink: nh.flags.contains(RouteNextHopFlags::Onlink),
                });
            }
        }
    }
    if hops.is_empty() {
        let Some(gateway) = gateway_of(&route.attributes) else {
            return Installed::Foreign;
        };
        let ifindex = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        hops.insert(Hop {
            gateway,
            ifindex,
            onlink: route.header.flags.contains(RouteFlags::Onlink),
        });
    }
    Installed::Via(hops)
}

fn gateway_of(attributes: &[RouteAttribute]) -> Option<IpAddr> {
    attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => ip_of(g),
        _ => None,
    })
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// As iproute2: ids up to 255 in the header, larger ones in `RTA_TABLE` with the
/// header's table `RT_TABLE_UNSPEC`.
fn set_table(message: &mut RouteMessage, table: u32) {
    match u8::try_from(table) {
        Ok(t) => message.header.table = t,
        Err(_) => {
            message.header.table = RouteHeader::RT_TABLE_UNSPEC;
            message.attributes.push(RouteAttribute::Table(table));
        }
    }
}

struct DisplayInstalled<'a>(&'a Installed);

impl fmt::Display for DisplayInstalled<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Installed::Blackhole | Installed::Foreign => write!(f, "blackhole"),
            Installed::Via(hops) => {
                for (i, hop) in hops.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "via {}", hop.gateway)?;
                    if let Some(index) = hop.ifindex {
                        write!(f, " dev #{index}")?;
                    }
                    if hop.onlink {
                        write!(f, " onlink")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The `rt_protos.d` line naming serval's protocol, so iproute2 prints
/// `proto serval` and accepts `ip route show proto serval`.
pub fn rt_protos_entry(protocol: u8) -> String {
    format!("# routes programmed by the serval node agent\n{protocol}\tserval\n")
}

/// Writes `serval.conf` into `dir` (normally `/etc/iproute2/rt_protos.d`).
pub fn write_rt_protos_entry(dir: &Path, protocol: u8) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("serval.conf"), rt_protos_entry(protocol))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::dataplane::spec::{Mac, VxlanPeer};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn devices() -> BTreeMap<String, u32> {
        [
            ("eth0".to_owned(), 2),
            (IPIP_DEVICE.to_owned(), 5),
            (VXLAN_DEVICE.to_owned(), 6),
        ]
        .into()
    }

    #[test]
    fn resolve_table() {
        let peer = VxlanPeer {
            vtep_addr: "10.0.1.0".parse().unwrap(),
            vtep_mac: Mac([2, 0, 0, 0, 0, 1]),
            node_addr: "192.0.2.2".parse().unwrap(),
        };
        let hop = |gw: &str, ifindex, onlink| Hop {
            gateway: gw.parse().unwrap(),
            ifindex,
            onlink,
        };
        let cases = [
            (RouteTarget::Blackhole, Installed::Blackhole),
            (
                RouteTarget::direct("192.0.2.2".parse().unwrap()),
                Installed::Via([hop("192.0.2.2", None, false)].into()),
            ),
            (
                RouteTarget::Unicast(NextHop::Direct {
                    gateway: "192.0.2.2".parse().unwrap(),
                    dev: Some("eth0".into()),
                }),
                Installed::Via([hop("192.0.2.2", Some(2), false)].into()),
            ),
            (
                RouteTarget::ipip("192.0.2.2".parse().unwrap()),
                Installed::Via([hop("192.0.2.2", Some(5), true)].into()),
            ),
            (
                RouteTarget::vxlan(peer),
                Installed::Via([hop("10.0.1.0", Some(6), true)].into()),
            ),
        ];
        for (target, expected) in cases {
            assert_eq!(
                resolve(net("10.0.1.0/26"), &target, &devices()).unwrap(),
                expected,
                "{target:?}"
            );
        }
    }

    #[test]
    fn resolve_names_missing_device_and_route() {
        let target = RouteTarget::Unicast(NextHop::Direct {
            gateway: "192.0.2.2".parse().unwrap(),
            dev: Some("eth9".into()),
        });
        let err = resolve(net("10.0.1.0/26"), &target, &devices())
            .unwrap_err()
            .to_string();
        assert!(err.contains("eth9") && err.contains("10.0.1.0/26"), "{err}");
        let v6 = RouteTarget::Unicast(NextHop::Vxlan(VxlanPeer {
            vtep_addr: "fd00::1".parse().unwrap(),
            vtep_mac: Mac([2, 0, 0, 0, 0, 1]),
            node_addr: "fd01::2".parse().unwrap(),
        }));
        let err = resolve(net("fd10::/122"), &v6, &devices())
            .unwrap_err()
            .to_string();
        assert!(err.contains(VXLAN_V6_DEVICE), "{err}");
    }

    #[test]
    fn resolve_rejects_mixed_families() {
        let err = resolve(
            net("fd10::/122"),
            &RouteTarget::direct("192.0.2.2".parse().unwrap()),
            &devices(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not an IPv6 address"), "{err}");
    }

    #[test]
    fn messages_round_trip_through_the_dumped_form() {
        let hop = |gw: &str, ifindex, onlink| Hop {
            gateway: gw.parse().unwrap(),
            ifindex,
            onlink,
        };
        for route in [
            Installed::Blackhole,
            Installed::Via([hop("192.0.2.2", Some(5), true)].into()),
            Installed::Via(
                [
                    hop("192.0.2.2", Some(2), false),
                    hop("192.0.2.3", Some(2), false),
                ]
                .into(),
            ),
        ] {
            let message = route_message(&RouteConfig::default(), net("10.0.1.0/26"), &route);
            assert_eq!(
                identity(&message),
                Some((net("10.0.1.0/26"), MAIN_TABLE, SERVAL_PROTOCOL))
            );
            assert_eq!(installed_form(&message), route);
        }
    }

    #[test]
    fn large_table_ids_go_into_rta_table() {
        let mut message = RouteMessage::default();
        set_table(&mut message, 1000);
        message.header.address_family = AddressFamily::Inet;
        assert_eq!(message.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert_eq!(identity(&message).map(|(_, t, _)| t), Some(1000));
    }

    #[test]
    fn rt_protos_entry_names_the_protocol() {
        let dir = std::env::temp_dir().join(format!("serval-rt-protos-{}", std::process::id()));
        write_rt_protos_entry(&dir, SERVAL_PROTOCOL).unwrap();
        let text = std::fs::read_to_string(dir.join("serval.conf")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(text.lines().any(|l| l == "83\tserval"), "{text}");
    }
}
