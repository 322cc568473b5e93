//! The plugin's decisions, without IO: names, IPAM handles, which addresses to ask for,
//! what ADD must build, what it reports, and what CHECK must find.
//!
//! The wiring of a pod (what [`Wiring`] describes and `veth.rs` builds):
//!
//! ```text
//!   host netns                                  pod netns
//!   sv0123456789abc  <──────── veth ────────>   eth0  10.65.0.5/32, fd00::5/128
//!   ee:ee:ee:ee:ee:ee, no address (IPv4)        169.254.1.1 dev eth0 scope link
//!   fe80::1/64 (IPv6 gateway)                   default via 169.254.1.1 dev eth0
//!   proxy_arp=1, forwarding=1                   default via fe80::1 dev eth0
//!   10.65.0.5/32 dev sv… (and fd00::5/128)      neigh 169.254.1.1, fe80::1 → ee:ee:…
//! ```
//!
//! The pod sends everything to a gateway address that exists nowhere (169.254.1.1, as
//! Calico does); its permanent neighbour entry points at the host veth's fixed MAC, and
//! proxy ARP answers anything else it may ask. The host reaches the pod by a /32 (/128)
//! route through the veth. Nothing depends on the host's own addresses, so the same
//! wiring works on every node.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipam::model::{HandleId, IpPool, PoolName};
use ipnet::IpNet;

use crate::config::{IpamSettings, PoolRef};
use crate::env::{Attachment, CniArgs, IfName};
use crate::spec::{CniError, CniResult, ErrorCode, Interface, IpConfig, Route};

/// The pod's IPv4 gateway: link-local, never on the wire as a real host.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pod's IPv6 gateway, put on the host side of every veth.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The host veth's MAC: fixed, so the pod's neighbour entry for the gateway stays right
/// whatever veth serves it.
pub const HOST_MAC: [u8; 6] = [0xee; 6];
/// Host veth names start with this.
pub const HOST_PREFIX: &str = "sv";
/// Host veth aliases start with this; the rest names the attachment (for GC and DEL).
pub const ALIAS_PREFIX: &str = "serval/";
/// The MTU assumed for the underlay when neither the configuration nor the agent says.
pub const DEFAULT_UNDERLAY_MTU: u32 = 1500;

fn fnv(parts: &[&str]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    for p in parts {
        h.write(p.as_bytes());
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        h.write_u8(0);
    }
    h.finish()
}

/// The host-side veth: `sv` + 13 hex digits of a hash of the pod (namespace, name,
/// interface) when the runtime is Kubernetes, else of the container id and interface.
/// Stable across sandbox restarts of one pod, 15 characters (the kernel's limit).
pub fn host_veth_name(attachment: &Attachment, args: &CniArgs) -> String {
    let ifname = attachment.ifname.as_str();
    let h = match args.pod() {
        Some((ns, pod)) => fnv(&["pod", ns, pod, ifname]),
        None => fnv(&["container", attachment.container_id.as_str(), ifname]),
    };
    let hex = format!("{h:016x}");
    format!("{HOST_PREFIX}{}", &hex[..13])
}

/// The veth alias that ties a host veth to its attachment: `serval/<cid>/<ifname>/<net>`
/// (container ids and interface names hold no `/`). Cut to the kernel's 255 bytes.
pub fn veth_alias(network: &str, attachment: &Attachment) -> String {
    let mut a = format!(
        "{ALIAS_PREFIX}{}/{}/{network}",
        attachment.container_id, attachment.ifname
    );
    if a.len() > 255 {
        let mut cut = 255;
        while !a.is_char_boundary(cut) {
            cut -= 1;
        }
        a.truncate(cut);
    }
    a
}

/// Whether a host veth alias belongs to `network`, and if so its attachment key
/// (`cid/ifname`).
pub fn alias_attachment<'a>(alias: &'a str, network: &str) -> Option<(&'a str, &'a str)> {
    let rest = alias.strip_prefix(ALIAS_PREFIX)?;
    let mut parts = rest.splitn(3, '/');
    let (cid, ifname, net) = (parts.next()?, parts.next()?, parts.next()?);
    let full = format!("{ALIAS_PREFIX}{cid}/{ifname}/{network}");
    // A long network name was cut: compare what fits.
    let want = &full[..full.len().min(255)];
    (alias == want && !net.is_empty()).then_some((cid, ifname))
}

/// A string as one lowercase DNS label: kept when it already is one, else its invalid
/// characters become `-` and a hash of the original is appended, so that different
/// inputs stay different.
fn label(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-');
    if clean == s && !s.is_empty() && s.len() <= max {
        return s.to_owned();
    }
    let suffix = format!("{:08x}", fnv(&[s]) as u32);
    let keep = max.saturating_sub(suffix.len() + 1);
    let head: String = clean.chars().take(keep).collect();
    let head = head.trim_matches('-');
    if head.is_empty() {
        format!("x{suffix}")
    } else {
        format!("{head}-{suffix}")
    }
}

/// The handle prefix of a network: every handle of the network starts with it.
pub fn handle_prefix(network: &str) -> String {
    format!("{}.", label(network, 100))
}

/// The IPAM handle of an attachment: `<network>.<container id>.<ifname>`, each part a
/// DNS label (the spec's state key is exactly this triple).
pub fn handle_id(network: &str, attachment: &Attachment) -> HandleId {
    let id = format!(
        "{}{}.{}",
        handle_prefix(network),
        label(attachment.container_id.as_str(), 128),
        label(attachment.ifname.as_str(), 20)
    );
    // Every part is a non-empty label of lowercase letters, digits and inner '-', joined
    // by dots, at most 250 characters: a valid DNS subdomain by construction.
    HandleId::new(id.clone()).unwrap_or_else(|_| unreachable_handle(&id))
}

#[cold]
fn unreachable_handle(id: &str) -> HandleId {
    // Not reachable (see handle_id); a hash keeps the plugin going if it ever were.
    HandleId::new(format!("h{:016x}", fnv(&[id]))).unwrap_or_else(|_| unreachable!())
}

/// What a pod asked for in its annotations (Kubernetes store only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotations {
    pub ipv4_pools: Option<Vec<PoolRef>>,
    pub ipv6_pools: Option<Vec<PoolRef>>,
    pub ip_addrs: Option<Vec<IpAddr>>,
}

/// serval's annotation names; Calico's are read too, so annotated pods move over as
/// they are.
pub const ANNOTATION_IPV4_POOLS: [&str; 2] =
    ["serval.dev/ipv4pools", "cni.projectcalico.org/ipv4pools"];
pub const ANNOTATION_IPV6_POOLS: [&str; 2] =
    ["serval.dev/ipv6pools", "cni.projectcalico.org/ipv6pools"];
pub const ANNOTATION_IP_ADDRS: [&str; 2] = ["serval.dev/ipAddrs", "cni.projectcalico.org/ipAddrs"];

impl Annotations {
    /// Reads the annotations of a pod or namespace; each value is a JSON list of
    /// strings. `what` names the object for errors.
    pub fn parse(map: &BTreeMap<String, String>, what: &str) -> Result<Annotations, CniError> {
        let list = |keys: [&str; 2]| -> Result<Option<(String, Vec<String>)>, CniError> {
            let Some((k, v)) = keys.iter().find_map(|k| map.get(*k).map(|v| (*k, v))) else {
                return Ok(None);
            };
            let items: Vec<String> = serde_json::from_str(v).map_err(|e| {
                CniError::new(
                    ErrorCode::InvalidConfig,
                    format!("annotation {k} of {what} is not a JSON list of strings"),
                )
                .details(format!("{v:?}: {e}"))
            })?;
            Ok(Some((k.to_owned(), items)))
        };
        let pools = |keys| -> Result<Option<Vec<PoolRef>>, CniError> {
            list(keys)?
                .map(|(k, items)| {
                    items
                        .iter()
                        .map(|s| {
                            PoolRef::parse(s).map_err(|e| {
                                CniError::new(
                                    ErrorCode::InvalidConfig,
                                    format!("annotation {k} of {what} names a bad pool"),
                                )
                                .details(e)
                            })
                        })
                        .collect()
                })
                .transpose()
        };
        let ip_addrs = list(ANNOTATION_IP_ADDRS)?
            .map(|(k, items)| {
                items
                    .iter()
                    .map(|s| {
                        s.split('/')
                            .next()
                            .unwrap_or_default()
                            .parse()
                            .map_err(|_| {
                                CniError::new(
                                    ErrorCode::InvalidConfig,
                                    format!("annotation {k} of {what} holds {s:?}, not an address"),
                                )
                            })
                    })
                    .collect::<Result<Vec<IpAddr>, CniError>>()
            })
            .transpose()?;
        Ok(Annotations {
            ipv4_pools: pools(ANNOTATION_IPV4_POOLS)?,
            ipv6_pools: pools(ANNOTATION_IPV6_POOLS)?,
            ip_addrs,
        })
    }
}

/// The addresses to ask IPAM for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressRequest {
    /// One address of each wanted family (`Some`), from the listed pools of that family
    /// (empty: any pool the node may use).
    Auto {
        v4: Option<Vec<PoolName>>,
        v6: Option<Vec<PoolName>>,
    },
    /// These addresses exactly.
    Fixed(Vec<IpAddr>),
}

/// Chooses what to ask for. Fixed addresses win (pod annotation, then the runtime's
/// `ips`, then `CNI_ARGS` `IP=`); pools come from the pod's annotation, else its
/// namespace's, else the configuration. Pools named by CIDR are looked up in `pools`.
pub fn address_request(
    settings: &IpamSettings,
    runtime_ips: &[IpAddr],
    args: &CniArgs,
    pod: &Annotations,
    namespace: &Annotations,
    pools: &[IpPool],
) -> Result<AddressRequest, CniError> {
    let fixed = pod
        .ip_addrs
        .clone()
        .filter(|l| !l.is_empty())
        .or_else(|| (!runtime_ips.is_empty()).then(|| runtime_ips.to_vec()))
        .or_else(|| (!args.ips.is_empty()).then(|| args.ips.clone()));
    if let Some(ips) = fixed {
        let v4 = ips.iter().filter(|i| i.is_ipv4()).count();
        if v4 > 1 || ips.len() - v4 > 1 {
            return Err(CniError::new(
                ErrorCode::InvalidConfig,
                "at most one IPv4 and one IPv6 fixed address per interface",
            )
            .details(format!("asked for {ips:?}")));
        }
        return Ok(AddressRequest::Fixed(ips));
    }
    let v4_refs = pod
        .ipv4_pools
        .as_ref()
        .or(namespace.ipv4_pools.as_ref())
        .unwrap_or(&settings.ipv4_pools);
    let v6_refs = pod
        .ipv6_pools
        .as_ref()
        .or(namespace.ipv6_pools.as_ref())
        .unwrap_or(&settings.ipv6_pools);
    let (mut chosen_v4, mut chosen_v6) = (Vec::new(), Vec::new());
    for (names, refs, v4) in [
        (&mut chosen_v4, v4_refs, true),
        (&mut chosen_v6, v6_refs, false),
    ] {
        for r in refs {
            let pool = match r {
                PoolRef::Name(n) => pools.iter().find(|p| &p.name == n),
                PoolRef::Cidr(c) => pools.iter().find(|p| &p.cidr == c),
            };
            let Some(pool) = pool else {
                return Err(CniError::new(
                    ErrorCode::InvalidConfig,
                    format!("no IP pool {}", describe_ref(r)),
                )
                .details(format!(
                    "pools: {}",
                    pools
                        .iter()
                        .map(|p| format!("{} ({})", p.name, p.cidr))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            if pool.cidr.addr().is_ipv4() != v4 {
                return Err(CniError::new(
                    ErrorCode::InvalidConfig,
                    format!(
                        "pool {} ({}) is listed as an IPv{} pool",
                        pool.name,
                        pool.cidr,
                        if v4 { 4 } else { 6 }
                    ),
                ));
            }
            names.push(pool.name.clone());
        }
    }
    Ok(AddressRequest::Auto {
        v4: settings.assign_ipv4.then_some(chosen_v4),
        v6: settings.assign_ipv6.then_some(chosen_v6),
    })
}

fn describe_ref(r: &PoolRef) -> String {
    match r {
        PoolRef::Name(n) => format!("named {n}"),
        PoolRef::Cidr(c) => format!("with CIDR {c}"),
    }
}

/// The pod MTU: the configuration's, else the agent's file, else the underlay default
/// less the overhead of the encapsulation the address's pool uses (the agent's rule,
/// [`ipam::encap::pod_mtu`], over that pool).
pub fn mtu(explicit: Option<u32>, agent_file: Option<&str>, pool: Option<&IpPool>) -> u32 {
    if let Some(m) = explicit {
        return m;
    }
    if let Some(m) = agent_file.and_then(|t| t.trim().parse::<u32>().ok()) {
        if m >= 68 {
            return m;
        }
    }
    pool.map_or(DEFAULT_UNDERLAY_MTU, |p| {
        ipam::encap::pod_mtu(DEFAULT_UNDERLAY_MTU, std::slice::from_ref(p))
    })
}

/// A sysctl under /proc/sys, by its path there (`net/ipv4/conf/X/proxy_arp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctl {
    pub path: String,
    pub value: &'static str,
}

fn sysctl(path: String, value: &'static str) -> Sysctl {
    Sysctl { path, value }
}

/// A route inside the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRoute {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

/// The host side of the veth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSide {
    pub name: String,
    pub alias: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Routes to the pod's addresses through the veth.
    pub routes: Vec<IpNet>,
    /// fe80::1/64 when the pod has IPv6.
    pub addresses: Vec<IpNet>,
    /// Set after the veth exists and before it comes up.
    pub sysctls: Vec<Sysctl>,
}

/// The pod side of the veth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSide {
    pub ifname: IfName,
    pub mtu: u32,
    pub addresses: Vec<IpNet>,
    /// Gateways with permanent neighbour entries pointing at [`HOST_MAC`].
    pub neighbors: Vec<IpAddr>,
    /// In order: the link route to the IPv4 gateway comes before the default through it.
    pub routes: Vec<PodRoute>,
    pub sysctls: Vec<Sysctl>,
}

/// Everything ADD builds for one attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wiring {
    pub host: HostSide,
    pub pod: PodSide,
}

/// What ADD must build for these addresses.
pub fn wiring(
    network: &str,
    attachment: &Attachment,
    host_name: &str,
    addresses: &[IpAddr],
    mtu: u32,
    allow_ip_forwarding: bool,
) -> Wiring {
    let v4 = addresses.iter().any(IpAddr::is_ipv4);
    let v6 = addresses.iter().any(IpAddr::is_ipv6);
    let host_nets: Vec<IpNet> = addresses.iter().map(|a| IpNet::from(*a)).collect();
    let mut host_sysctls = Vec::new();
    let mut pod_sysctls = Vec::new();
    let mut neighbors = Vec::new();
    let mut routes = Vec::new();
    let mut host_addresses = Vec::new();
    if v4 {
        for (key, value) in [("proxy_arp", "1"), ("forwarding", "1")] {
            host_sysctls.push(sysctl(format!("net/ipv4/conf/{host_name}/{key}"), value));
        }
        // Proxy ARP answers after a random delay of up to 80 ms unless told otherwise.
        host_sysctls.push(sysctl(
            format!("net/ipv4/neigh/{host_name}/proxy_delay"),
            "0",
        ));
        neighbors.push(IpAddr::V4(GATEWAY_V4));
        routes.push(PodRoute {
            dst: IpNet::from(IpAddr::V4(GATEWAY_V4)),
            gw: None,
        });
        routes.push(PodRoute {
            dst: "0.0.0.0/0"
                .parse()
                .unwrap_or(IpNet::from(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
            gw: Some(IpAddr::V4(GATEWAY_V4)),
        });
        if allow_ip_forwarding {
            pod_sysctls.push(sysctl("net/ipv4/ip_forward".into(), "1"));
        }
    }
    if v6 {
        for (key, value) in [
            ("disable_ipv6", "0"),
            ("accept_ra", "0"),
            ("proxy_ndp", "1"),
            ("forwarding", "1"),
        ] {
            host_sysctls.push(sysctl(format!("net/ipv6/conf/{host_name}/{key}"), value));
        }
        host_addresses.push(
            IpNet::new(IpAddr::V6(GATEWAY_V6), 64).unwrap_or(IpNet::from(IpAddr::V6(GATEWAY_V6))),
        );
        pod_sysctls.push(sysctl("net/ipv6/conf/all/disable_ipv6".into(), "0"));
        pod_sysctls.push(sysctl(
            format!("net/ipv6/conf/{}/disable_ipv6", attachment.ifname),
            "0",
        ));
        neighbors.push(IpAddr::V6(GATEWAY_V6));
        routes.push(PodRoute {
            dst: "::/0"
                .parse()
                .unwrap_or(IpNet::from(IpAddr::V6(Ipv6Addr::UNSPECIFIED))),
            gw: Some(IpAddr::V6(GATEWAY_V6)),
        });
        if allow_ip_forwarding {
            pod_sysctls.push(sysctl("net/ipv6/conf/all/forwarding".into(), "1"));
        }
    }
    Wiring {
        host: HostSide {
            name: host_name.to_owned(),
            alias: veth_alias(network, attachment),
            mac: HOST_MAC,
            mtu,
            routes: host_nets.clone(),
            addresses: host_addresses,
            sysctls: host_sysctls,
        },
        pod: PodSide {
            ifname: attachment.ifname.clone(),
            mtu,
            addresses: host_nets,
            neighbors,
            routes,
            sysctls: pod_sysctls,
        },
    }
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The result of ADD: the host interface, the pod interface, its addresses (with the
/// gateway each uses) and the routes through a gateway that this ADD installed.
pub fn result(wiring: &Wiring, installed: &[PodRoute], pod_mac: &str, netns: &str) -> CniResult {
    let interfaces = vec![
        Interface {
            name: wiring.host.name.clone(),
            mac: Some(format_mac(&wiring.host.mac)),
            ..Interface::default()
        },
        Interface {
            name: wiring.pod.ifname.to_string(),
            mac: Some(pod_mac.to_owned()),
            mtu: Some(wiring.pod.mtu),
            sandbox: Some(netns.to_owned()),
            ..Interface::default()
        },
    ];
    let ips = wiring
        .pod
        .addresses
        .iter()
        .map(|a| IpConfig {
            address: *a,
            gateway: Some(match a {
                IpNet::V4(_) => IpAddr::V4(GATEWAY_V4),
                IpNet::V6(_) => IpAddr::V6(GATEWAY_V6),
            }),
            interface: Some(1),
        })
        .collect();
    let routes = installed
        .iter()
        .filter(|r| r.gw.is_some())
        .map(|r| Route::new(r.dst, r.gw))
        .collect();
    CniResult {
        interfaces,
        ips,
        routes,
        dns: Default::default(),
    }
}

/// Adds serval's result to what earlier plugins of a chain returned (serval usually
/// comes first and gets none): interfaces are appended and addresses re-indexed.
pub fn merge(prev: Option<&CniResult>, ours: CniResult) -> CniResult {
    let Some(prev) = prev else { return ours };
    let mut out = prev.clone();
    let offset = out.interfaces.len();
    out.interfaces.extend(ours.interfaces);
    out.ips.extend(ours.ips.into_iter().map(|mut ip| {
        ip.interface = ip.interface.map(|i| i + offset);
        ip
    }));
    for r in ours.routes {
        if !out.routes.contains(&r) {
            out.routes.push(r);
        }
    }
    out
}

/// A link as CHECK sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkState {
    pub up: bool,
    pub mac: String,
    pub mtu: u32,
    pub alias: Option<String>,
    pub is_veth: bool,
}

/// What CHECK found on the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub pod_link: Option<LinkState>,
    pub pod_addresses: Vec<IpNet>,
    /// Routes in the pod's main table through the pod interface: (destination, gateway).
    pub pod_routes: Vec<(IpNet, Option<IpAddr>)>,
    pub host_link: Option<LinkState>,
    /// Destinations routed through the host veth in the main table.
    pub host_routes: Vec<IpNet>,
    /// `proxy_arp` of the host veth, when it has IPv4 addresses to serve.
    pub host_proxy_arp: Option<bool>,
    /// The addresses IPAM holds for the attachment's handle.
    pub held: Vec<IpAddr>,
}

/// What CHECK expects, from `prevResult` and the attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub pod_ifname: String,
    pub pod_mac: Option<String>,
    pub pod_mtu: Option<u32>,
    pub host_name: String,
    pub host_alias: String,
    pub addresses: Vec<IpNet>,
    pub routes: Vec<(IpNet, Option<IpAddr>)>,
}

/// Reads what serval's ADD reported out of `prevResult` (possibly extended by later
/// plugins of the chain).
pub fn expected(
    prev: &CniResult,
    network: &str,
    attachment: &Attachment,
    host_name: &str,
    netns: &str,
) -> Result<Expected, CniError> {
    let ifname = attachment.ifname.as_str();
    let not_ours = |why: String| {
        CniError::new(
            ErrorCode::CheckFailed,
            format!("prevResult does not describe {ifname} of this container"),
        )
        .details(why)
    };
    let idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.as_deref().is_none_or(|s| s == netns))
        .ok_or_else(|| not_ours(format!("no interface {ifname} in sandbox {netns}")))?;
    let pod = &prev.interfaces[idx];
    let addresses: Vec<IpNet> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(idx))
        .map(|ip| ip.address)
        .collect();
    if addresses.is_empty() {
        return Err(not_ours(format!(
            "no address on interface {idx} ({ifname})"
        )));
    }
    let gateways = [IpAddr::V4(GATEWAY_V4), IpAddr::V6(GATEWAY_V6)];
    // The routes through serval's gateways are serval's (a chained plugin may add
    // others, which are not ours to check).
    let routes: Vec<(IpNet, Option<IpAddr>)> = prev
        .routes
        .iter()
        .filter(|r| r.gw.is_some_and(|g| gateways.contains(&g)))
        .map(|r| (r.dst, r.gw))
        .collect();
    Ok(Expected {
        pod_ifname: ifname.to_owned(),
        pod_mac: pod.mac.clone(),
        pod_mtu: pod.mtu,
        host_name: host_name.to_owned(),
        host_alias: veth_alias(network, attachment),
        addresses,
        routes,
    })
}

/// Every way the node differs from what ADD left, in words; empty when CHECK passes.
pub fn compare(exp: &Expected, obs: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    match &obs.pod_link {
        None => out.push(format!(
            "interface {} is missing in the pod",
            exp.pod_ifname
        )),
        Some(l) => {
            if !l.is_veth {
                out.push(format!("{} in the pod is not a veth", exp.pod_ifname));
            }
            if !l.up {
                out.push(format!("{} in the pod is down", exp.pod_ifname));
            }
            if let Some(mac) = &exp.pod_mac {
                if !mac.eq_ignore_ascii_case(&l.mac) {
                    out.push(format!(
                        "{} in the pod has MAC {}, prevResult says {mac}",
                        exp.pod_ifname, l.mac
                    ));
                }
            }
            if let Some(mtu) = exp.pod_mtu {
                if mtu != l.mtu {
                    out.push(format!(
                        "{} in the pod has MTU {}, prevResult says {mtu}",
                        exp.pod_ifname, l.mtu
                    ));
                }
            }
        }
    }
    for a in &exp.addresses {
        if !obs.pod_addresses.contains(a) {
            out.push(format!(
                "address {a} is missing on {} in the pod",
                exp.pod_ifname
            ));
        }
        if !obs.held.contains(&a.addr()) {
            out.push(format!(
                "IPAM does not hold {} for this container",
                a.addr()
            ));
        }
        if !obs.host_routes.contains(&IpNet::from(a.addr())) {
            out.push(format!(
                "the host has no route to {} through {}",
                a.addr(),
                exp.host_name
            ));
        }
    }
    for (dst, gw) in &exp.routes {
        if !obs.pod_routes.contains(&(*dst, *gw)) {
            let via = gw.map(|g| format!(" via {g}")).unwrap_or_default();
            out.push(format!("route {dst}{via} is missing in the pod"));
        }
    }
    match &obs.host_link {
        None => out.push(format!("host veth {} is missing", exp.host_name)),
        Some(l) => {
            if l.alias.as_deref() != Some(exp.host_alias.as_str()) {
                out.push(format!(
                    "host veth {} belongs to {:?}, not this container",
                    exp.host_name, l.alias
                ));
            }
            if !l.up {
                out.push(format!("host veth {} is down", exp.host_name));
            }
        }
    }
    if obs.host_proxy_arp == Some(false) {
        out.push(format!("proxy ARP is off on {}", exp.host_name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::ContainerId;
    use ipam::model::EncapMode;

    fn att(cid: &str, ifname: &str) -> Attachment {
        Attachment {
            container_id: ContainerId::new(cid).unwrap(),
            ifname: IfName::new(ifname).unwrap(),
        }
    }

    fn k8s(ns: &str, pod: &str) -> CniArgs {
        CniArgs {
            pod_namespace: Some(ns.into()),
            pod_name: Some(pod.into()),
            ..CniArgs::default()
        }
    }

    #[test]
    fn host_names_are_short_stable_and_distinct() {
        let a = att("c1", "eth0");
        let n = host_veth_name(&a, &k8s("default", "web-0"));
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("sv"));
        // The same pod in a new sandbox keeps its name.
        assert_eq!(
            n,
            host_veth_name(&att("c2", "eth0"), &k8s("default", "web-0"))
        );
        // Another pod, namespace or interface does not.
        for other in [
            host_veth_name(&a, &k8s("default", "web-1")),
            host_veth_name(&a, &k8s("other", "web-0")),
            host_veth_name(&att("c1", "net1"), &k8s("default", "web-0")),
            host_veth_name(&a, &k8s("defaultw", "eb-0")),
            host_veth_name(&a, &CniArgs::default()),
        ] {
            assert_ne!(n, other);
            assert_eq!(other.len(), 15);
        }
        // Pinned: the name must not change between releases (existing pods keep theirs).
        assert_eq!(n, host_veth_name(&a, &k8s("default", "web-0")));
        assert!(n[2..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn handles_are_valid_and_scoped_by_network() {
        let cid = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let h = handle_id("k8s-pod-network", &att(cid, "eth0"));
        assert_eq!(h.as_str(), format!("k8s-pod-network.{cid}.eth0"));
        assert!(h.as_str().starts_with(&handle_prefix("k8s-pod-network")));
        // Awkward names still give valid, distinct handles.
        let odd = [
            handle_id("My_Net", &att("Abc_1.2", "eth0")),
            handle_id("my-net", &att("abc-1-2", "eth0")),
            handle_id("My_Net", &att("Abc_1.2", "Eth.0")),
            handle_id(&"n".repeat(300), &att(&"C".repeat(300), "x")),
        ];
        for (i, a) in odd.iter().enumerate() {
            assert!(a.as_str().len() <= 253, "{a}");
            for b in &odd[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(!handle_id("a.b", &att("c", "eth0"))
            .as_str()
            .starts_with(&handle_prefix("a")));
    }

    #[test]
    fn aliases_round_trip() {
        let a = att("c1", "eth0");
        let alias = veth_alias("k8s-pod-network", &a);
        assert_eq!(alias, "serval/c1/eth0/k8s-pod-network");
        assert_eq!(
            alias_attachment(&alias, "k8s-pod-network"),
            Some(("c1", "eth0"))
        );
        assert_eq!(alias_attachment(&alias, "other"), None);
        assert_eq!(alias_attachment("something else", "k8s-pod-network"), None);
        let long = "n".repeat(400);
        let alias = veth_alias(&long, &a);
        assert_eq!(alias.len(), 255);
        assert_eq!(alias_attachment(&alias, &long), Some(("c1", "eth0")));
    }

    fn pool(name: &str, cidr: &str) -> IpPool {
        IpPool::new(PoolName::new(name).unwrap(), cidr.parse().unwrap())
    }

    fn settings() -> IpamSettings {
        IpamSettings {
            assign_ipv4: true,
            assign_ipv6: false,
            ipv4_pools: vec![],
            ipv6_pools: vec![],
        }
    }

    #[test]
    fn address_request_precedence() {
        let pools = [
            pool("a", "10.1.0.0/16"),
            pool("b", "10.2.0.0/16"),
            pool("six", "fd00::/48"),
        ];
        let none = Annotations::default();
        let mut s = settings();
        assert_eq!(
            address_request(&s, &[], &CniArgs::default(), &none, &none, &pools).unwrap(),
            AddressRequest::Auto {
                v4: Some(vec![]),
                v6: None
            }
        );
        s.ipv4_pools = vec![PoolRef::Cidr("10.2.0.0/16".parse().unwrap())];
        let names = |r: AddressRequest| match r {
            AddressRequest::Auto {
                v4: Some(pools),
                v6: None,
            } => pools.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            names(address_request(&s, &[], &CniArgs::default(), &none, &none, &pools).unwrap()),
            ["b"]
        );
        let ns = Annotations {
            ipv4_pools: Some(vec![PoolRef::Name(PoolName::new("a").unwrap())]),
            ..none.clone()
        };
        assert_eq!(
            names(address_request(&s, &[], &CniArgs::default(), &none, &ns, &pools).unwrap()),
            ["a"]
        );
        let pod = Annotations {
            ipv4_pools: Some(vec![PoolRef::Cidr("10.2.0.0/16".parse().unwrap())]),
            ..none.clone()
        };
        assert_eq!(
            names(address_request(&s, &[], &CniArgs::default(), &pod, &ns, &pools).unwrap()),
            ["b"]
        );
        // Fixed addresses win over pools: annotation, then runtime, then CNI_ARGS.
        let ip: IpAddr = "10.1.0.7".parse().unwrap();
        let args = CniArgs {
            ips: vec!["10.1.0.8".parse().unwrap()],
            ..CniArgs::default()
        };
        assert_eq!(
            address_request(&s, &[], &args, &pod, &ns, &pools).unwrap(),
            AddressRequest::Fixed(args.ips.clone())
        );
        assert_eq!(
            address_request(&s, &[ip], &args, &pod, &ns, &pools).unwrap(),
            AddressRequest::Fixed(vec![ip])
        );
        let fixed = Annotations {
            ip_addrs: Some(vec!["10.2.0.9".parse().unwrap()]),
            ..none.clone()
        };
        assert_eq!(
            address_request(&s, &[ip], &args, &fixed, &ns, &pools).unwrap(),
            AddressRequest::Fixed(vec!["10.2.0.9".parse().unwrap()])
        );
        // Errors: unknown pool, wrong family, two addresses of a family.
        let bad = Annotations {
            ipv4_pools: Some(vec![PoolRef::Name(PoolName::new("zzz").unwrap())]),
            ..none.clone()
        };
        let e = address_request(&s, &[], &CniArgs::default(), &bad, &none, &pools).unwrap_err();
        assert!(
            e.msg.contains("zzz") && e.details.contains("10.1.0.0/16"),
            "{e}"
        );
        let bad = Annotations {
            ipv4_pools: Some(vec![PoolRef::Name(PoolName::new("six").unwrap())]),
            ..none.clone()
        };
        assert!(address_request(&s, &[], &CniArgs::default(), &bad, &none, &pools).is_err());
        let two = [ip, "10.1.0.9".parse().unwrap()];
        assert!(address_request(&s, &two, &CniArgs::default(), &none, &none, &pools).is_err());
    }

    #[test]
    fn annotations_parse() {
        let map: BTreeMap<String, String> = [
            (
                "cni.projectcalico.org/ipv4pools".to_string(),
                r#"["default-ipv4"]"#.to_string(),
            ),
            (
                "serval.dev/ipAddrs".to_string(),
                r#"["10.0.0.5"]"#.to_string(),
            ),
        ]
        .into();
        let a = Annotations::parse(&map, "pod default/x").unwrap();
        assert_eq!(a.ipv4_pools.unwrap().len(), 1);
        assert_eq!(
            a.ip_addrs.unwrap(),
            vec!["10.0.0.5".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(a.ipv6_pools, None);
        let bad: BTreeMap<String, String> =
            [("serval.dev/ipv4pools".to_string(), "default".to_string())].into();
        let e = Annotations::parse(&bad, "pod default/x").unwrap_err();
        assert!(
            e.msg.contains("serval.dev/ipv4pools") && e.msg.contains("pod default/x"),
            "{e}"
        );
    }

    #[test]
    fn mtu_choice() {
        let mut p = pool("a", "10.1.0.0/16");
        assert_eq!(mtu(Some(9000), Some("1400"), Some(&p)), 9000);
        assert_eq!(mtu(None, Some("1430\n"), Some(&p)), 1430);
        assert_eq!(mtu(None, Some("garbage"), Some(&p)), 1500);
        p.vxlan_mode = EncapMode::Always;
        assert_eq!(mtu(None, None, Some(&p)), 1450);
        p.vxlan_mode = EncapMode::Never;
        p.ipip_mode = EncapMode::CrossSubnet;
        assert_eq!(mtu(None, None, Some(&p)), 1480);
        assert_eq!(mtu(None, None, None), 1500);
        // VXLAN over IPv6 costs 70 bytes, as the agent counts it.
        let mut p6 = pool("b", "fd00:65::/64");
        p6.vxlan_mode = EncapMode::Always;
        assert_eq!(mtu(None, None, Some(&p6)), 1430);
    }

    fn dual() -> (Wiring, Attachment) {
        let a = att("c1", "eth0");
        let w = wiring(
            "net",
            &a,
            "sv0000000000001",
            &["10.1.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
            1450,
            false,
        );
        (w, a)
    }

    #[test]
    fn wiring_for_dual_stack() {
        let (w, _) = dual();
        assert_eq!(
            w.host.routes,
            vec![
                "10.1.0.5/32".parse::<IpNet>().unwrap(),
                "fd00::5/128".parse().unwrap()
            ]
        );
        assert_eq!(
            w.host.addresses,
            vec!["fe80::1/64".parse::<IpNet>().unwrap()]
        );
        assert!(w
            .host
            .sysctls
            .iter()
            .any(|s| s.path == "net/ipv4/conf/sv0000000000001/proxy_arp" && s.value == "1"));
        assert!(w
            .host
            .sysctls
            .iter()
            .any(|s| s.path == "net/ipv6/conf/sv0000000000001/proxy_ndp"));
        assert_eq!(w.pod.addresses.len(), 2);
        // The link route to the IPv4 gateway comes before the default route through it.
        assert_eq!(
            w.pod.routes[0],
            PodRoute {
                dst: "169.254.1.1/32".parse().unwrap(),
                gw: None
            }
        );
        assert_eq!(w.pod.routes[1].gw, Some(IpAddr::V4(GATEWAY_V4)));
        assert_eq!(w.pod.routes[2].gw, Some(IpAddr::V6(GATEWAY_V6)));
        assert_eq!(w.pod.neighbors.len(), 2);
        assert!(w.pod.sysctls.iter().all(|s| !s.path.contains("forward")));
        let v4only = wiring(
            "net",
            &att("c1", "eth0"),
            "sv0000000000001",
            &["10.1.0.5".parse().unwrap()],
            1500,
            true,
        );
        assert!(v4only.host.sysctls.iter().all(|s| !s.path.contains("ipv6")));
        assert!(v4only.host.addresses.is_empty());
        assert!(v4only
            .pod
            .sysctls
            .iter()
            .any(|s| s.path == "net/ipv4/ip_forward"));
    }

    #[test]
    fn result_then_check_round_trip() {
        let (w, a) = dual();
        let r = result(&w, &w.pod.routes, "0a:00:00:00:00:01", "/run/netns/p");
        assert_eq!(r.interfaces[0].name, "sv0000000000001");
        assert_eq!(r.interfaces[1].sandbox.as_deref(), Some("/run/netns/p"));
        assert_eq!(r.ips[0].interface, Some(1));
        assert_eq!(r.routes.len(), 2);
        let exp = expected(&r, "net", &a, "sv0000000000001", "/run/netns/p").unwrap();
        let good = Observed {
            pod_link: Some(LinkState {
                up: true,
                mac: "0A:00:00:00:00:01".into(),
                mtu: 1450,
                alias: None,
                is_veth: true,
            }),
            pod_addresses: w.pod.addresses.clone(),
            pod_routes: w.pod.routes.iter().map(|r| (r.dst, r.gw)).collect(),
            host_link: Some(LinkState {
                up: true,
                mac: format_mac(&HOST_MAC),
                mtu: 1450,
                alias: Some(w.host.alias.clone()),
                is_veth: true,
            }),
            host_routes: w.host.routes.clone(),
            host_proxy_arp: Some(true),
            held: vec!["10.1.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
        };
        assert_eq!(compare(&exp, &good), Vec::<String>::new());
        // Each kind of damage is reported on its own.
        let mut o = good.clone();
        o.pod_routes
            .retain(|(d, _)| d.prefix_len() != 0 || d.addr().is_ipv6());
        assert_eq!(
            compare(&exp, &o),
            vec!["route 0.0.0.0/0 via 169.254.1.1 is missing in the pod"]
        );
        let mut o = good.clone();
        o.host_routes.clear();
        assert_eq!(compare(&exp, &o).len(), 2);
        let mut o = good.clone();
        o.held.pop();
        assert_eq!(
            compare(&exp, &o),
            vec!["IPAM does not hold fd00::5 for this container"]
        );
        let mut o = good.clone();
        o.pod_link = None;
        o.host_link = None;
        assert_eq!(compare(&exp, &o).len(), 2);
        let mut o = good.clone();
        o.host_link.as_mut().unwrap().alias = Some("serval/other/eth0/net".into());
        assert!(compare(&exp, &o)[0].contains("belongs to"));
        // A prevResult for another container is refused.
        assert!(expected(&r, "net", &a, "sv0000000000001", "/run/netns/q").is_err());
    }

    #[test]
    fn merge_appends_after_earlier_plugins() {
        let (w, _) = dual();
        let ours = result(&w, &w.pod.routes, "0a:00:00:00:00:01", "/run/netns/p");
        let mut prev = CniResult::default();
        prev.interfaces.push(Interface {
            name: "lo".into(),
            ..Interface::default()
        });
        let m = merge(Some(&prev), ours.clone());
        assert_eq!(m.interfaces.len(), 3);
        assert_eq!(m.ips[0].interface, Some(2));
        assert_eq!(merge(None, ours.clone()), ours);
    }
}
