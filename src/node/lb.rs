//! Which Services get LoadBalancer addresses, and from where: the decision of the
//! LoadBalancer address allocator (its IO, on the node collector's Lease holder, is
//! [`crate::node::kube::lb`]).
//!
//! ```text
//!   Service ──Seen::from_k8s──▶ UID, status; ours? which addresses, pools, families ─┐
//!   IPAM allocations under serval-lb.<namespace>.<name>.<uid> ────────────────────────┤ plan()
//!   BGPConfiguration loadBalancerAssignIPs, pools (name → CIDR) ───────────────────────┤
//!                                                                                      ▼
//!                                       Release / Allocate / Status / Problem, per Service
//! ```
//!
//! * A Service is ours when its type is `LoadBalancer` and it has no
//!   `loadBalancerClass` or [`LB_CLASS`].
//! * It asks for specific addresses with the annotation `serval.dev/loadBalancerIPs`
//!   (or Calico's `projectcalico.org/loadBalancerIPs`), a JSON list, else with
//!   `spec.loadBalancerIP`; for pools by name with `serval.dev/ipv4pools` and
//!   `serval.dev/ipv6pools` (or Calico's `projectcalico.org/…`), JSON lists of IPPool
//!   names or CIDRs (as Calico: an entry that parses as a CIDR names the LoadBalancer
//!   pool of exactly that CIDR). The serval.dev annotation wins when both are set.
//! * Without specific addresses it gets one address of each family in `spec.ipFamilies`
//!   (the API server fills it from `ipFamilyPolicy`), from the named pools or else from
//!   the `Automatic` LoadBalancer pools.
//! * With [`AssignIps::RequestedServicesOnly`] only Services that ask (addresses or
//!   pools) get one; with `AllServices` (the default) every Service of ours does.
//! * An allocation is kept while it still answers what its Service asks for; it is
//!   released when the Service goes, stops being ours (type or class changed), stops
//!   asking under `RequestedServicesOnly`, or asks for something else (then allocated
//!   anew). `status.loadBalancer.ingress` is written to the allocation; a Service that
//!   is still there but loses its allocation first has serval's addresses taken out of
//!   its status (before the release, so a failure in between leaves something to retry).
//! * An allocation belongs to one Service object: its handle carries the Service's UID,
//!   so a Service deleted and created again under the same name while no allocator ran
//!   does not inherit the old address (the old handle is released, a new one allocated).
//!
//! The addresses themselves come from the block IPAM: a Service's handle
//! ([`Owner::handle`]) is idempotent, and an address has one owner, so one address never
//! goes to two Services, whichever allocator wrote it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipam::model::{Family, HandleId, PoolName};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service as K8sService;

pub use crate::node::services::ObjectKey;
pub use crate::resources::bgp_configuration::AssignIps;

/// The `loadBalancerClass` serval answers to (besides none).
pub const LB_CLASS: &str = "serval.dev/lb";
/// The prefix of the IPAM handles of Services' addresses:
/// `serval-lb.<namespace>.<name>.<uid>`.
pub const HANDLE_PREFIX: &str = ipam::model::LOAD_BALANCER_HANDLE_PREFIX;
/// The node the IPAM records LoadBalancer addresses under: no real node, so collecting a
/// deleted node never takes them.
pub const LB_NODE: &str = "load-balancer.serval.dev";

const ANNOTATION_IPS: [&str; 2] = [
    "serval.dev/loadBalancerIPs",
    "projectcalico.org/loadBalancerIPs",
];
const ANNOTATION_V4_POOLS: [&str; 2] = ["serval.dev/ipv4pools", "projectcalico.org/ipv4pools"];
const ANNOTATION_V6_POOLS: [&str; 2] = ["serval.dev/ipv6pools", "projectcalico.org/ipv6pools"];

/// A Service's `metadata.uid`.
pub type Uid = String;

/// A Service as the allocator keeps it: which object it is, what its status shows, and
/// what it asks for if it is ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub uid: Uid,
    /// `status.loadBalancer.ingress[].ip`, sorted.
    pub status_ips: Vec<IpAddr>,
    /// `None`: not a Service serval allocates for (not `LoadBalancer`, or another class).
    pub ours: Option<Result<LbService, Invalid>>,
}

impl Seen {
    pub fn from_k8s(svc: &K8sService) -> Seen {
        let status_ips = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .map(|i| {
                let mut v: Vec<IpAddr> = i
                    .iter()
                    .filter_map(|i| i.ip.as_deref().and_then(|s| s.parse().ok()))
                    .collect();
                v.sort();
                v
            })
            .unwrap_or_default();
        Seen {
            uid: svc.metadata.uid.clone().unwrap_or_default(),
            status_ips,
            ours: LbService::from_k8s(svc),
        }
    }

    /// Whether the allocator needs to keep it: ours, or showing addresses it may have to
    /// take back out of the status.
    pub fn relevant(&self) -> bool {
        self.ours.is_some() || !self.status_ips.is_empty()
    }
}

/// A pool named in an annotation: by name, or (as Calico takes them) by CIDR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolRef {
    Name(PoolName),
    Cidr(IpNet),
}

/// What a LoadBalancer Service of ours asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbService {
    /// Specific addresses (annotation or `spec.loadBalancerIP`), sorted.
    pub requested_ips: Vec<IpAddr>,
    pub v4_pools: Vec<PoolRef>,
    pub v6_pools: Vec<PoolRef>,
    /// `spec.ipFamilies` (IPv4 when unset).
    pub v4: bool,
    pub v6: bool,
}

/// A Service of ours whose request cannot be read.
pub type Invalid = String;

impl LbService {
    /// `None`: not a Service serval allocates for (not `LoadBalancer`, or another class).
    pub fn from_k8s(svc: &K8sService) -> Option<Result<LbService, Invalid>> {
        let spec = svc.spec.as_ref()?;
        if spec.type_.as_deref() != Some("LoadBalancer") {
            return None;
        }
        if spec
            .load_balancer_class
            .as_deref()
            .is_some_and(|c| c != LB_CLASS)
        {
            return None;
        }
        let empty = BTreeMap::new();
        let ann = svc.metadata.annotations.as_ref().unwrap_or(&empty);
        Some(Self::parse(
            ann,
            spec.load_balancer_ip.as_deref(),
            spec.ip_families.as_deref().unwrap_or_default(),
        ))
    }

    fn parse(
        ann: &BTreeMap<String, String>,
        load_balancer_ip: Option<&str>,
        ip_families: &[String],
    ) -> Result<LbService, Invalid> {
        let first = |names: [&str; 2]| names.into_iter().find_map(|n| ann.get_key_value(n));
        let list = |names: [&str; 2]| -> Result<Vec<String>, Invalid> {
            match first(names) {
                None => Ok(Vec::new()),
                Some((k, v)) => serde_json::from_str::<Vec<String>>(v).map_err(|e| {
                    format!("annotation {k}: {v:?} is not a JSON list of strings: {e}")
                }),
            }
        };
        let mut requested_ips = Vec::new();
        let ips = list(ANNOTATION_IPS)?;
        let (what, raw) = if ips.is_empty() {
            (
                "spec.loadBalancerIP".to_owned(),
                load_balancer_ip
                    .filter(|s| !s.is_empty())
                    .map(|s| vec![s.to_owned()])
                    .unwrap_or_default(),
            )
        } else {
            let k = first(ANNOTATION_IPS).map_or("", |(k, _)| k.as_str());
            (format!("annotation {k}"), ips)
        };
        for s in raw {
            let ip: IpAddr = s
                .trim()
                .parse()
                .map_err(|_| format!("{what}: {s:?} is not an IP address"))?;
            requested_ips.push(ip);
        }
        requested_ips.sort();
        requested_ips.dedup();
        for fam in [Family::V4, Family::V6] {
            if requested_ips
                .iter()
                .filter(|ip| Family::of_addr(ip) == fam)
                .count()
                > 1
            {
                return Err(format!("{what}: more than one {fam} address"));
            }
        }
        // As Calico: an entry that parses as a CIDR is one, else it is a pool's name.
        let pools = |names: [&str; 2], fam: Family| -> Result<Vec<PoolRef>, Invalid> {
            let k = first(names).map_or(names[0], |(k, _)| k.as_str());
            list(names)?
                .into_iter()
                .map(|n| {
                    let n = n.trim();
                    match n.parse::<IpNet>() {
                        Ok(c) if Family::of_addr(&c.addr()) != fam => {
                            Err(format!("annotation {k}: {n} is not an {fam} CIDR"))
                        }
                        Ok(c) => Ok(PoolRef::Cidr(c.trunc())),
                        Err(_) => PoolName::new(n)
                            .map(PoolRef::Name)
                            .map_err(|e| format!("annotation {k}: {e}")),
                    }
                })
                .collect()
        };
        let v4_pools = pools(ANNOTATION_V4_POOLS, Family::V4)?;
        let v6_pools = pools(ANNOTATION_V6_POOLS, Family::V6)?;
        let has = |f: &str| ip_families.iter().any(|x| x == f);
        let (v4, v6) = if ip_families.is_empty() {
            (true, false)
        } else {
            (has("IPv4"), has("IPv6"))
        };
        Ok(LbService {
            requested_ips,
            v4_pools,
            v6_pools,
            v4,
            v6,
        })
    }

    /// Whether it asks for addresses or pools (what `RequestedServicesOnly` serves).
    pub fn requests(&self) -> bool {
        !(self.requested_ips.is_empty() && self.v4_pools.is_empty() && self.v6_pools.is_empty())
    }

    /// What to allocate for it; a pool named by a CIDR that is no LoadBalancer pool's is a
    /// problem.
    pub fn want(&self, pools: &BTreeMap<PoolName, IpNet>) -> Result<Want, Invalid> {
        if !self.requested_ips.is_empty() {
            return Ok(Want::Addresses(self.requested_ips.clone()));
        }
        let resolve = |refs: &[PoolRef]| -> Result<Vec<PoolName>, Invalid> {
            refs.iter()
                .map(|r| match r {
                    PoolRef::Name(n) => Ok(n.clone()),
                    PoolRef::Cidr(c) => pools
                        .iter()
                        .find(|(_, p)| p.trunc() == *c)
                        .map(|(n, _)| n.clone())
                        .ok_or_else(|| format!("no LoadBalancer IPPool has the CIDR {c}")),
                })
                .collect()
        };
        Ok(Want::Auto {
            v4: self.v4,
            v6: self.v6,
            v4_pools: resolve(&self.v4_pools)?,
            v6_pools: resolve(&self.v6_pools)?,
        })
    }
}

/// What a Service's allocation must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// Exactly these addresses.
    Addresses(Vec<IpAddr>),
    /// One address of each family asked for, from the named pools (none named: the
    /// `Automatic` LoadBalancer pools).
    Auto {
        v4: bool,
        v6: bool,
        v4_pools: Vec<PoolName>,
        v6_pools: Vec<PoolName>,
    },
}

/// Whose an allocation is: one Service object, its name and UID (the IPAM handle).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub key: ObjectKey,
    /// Empty for a handle without one (written before serval recorded the UID): it is
    /// carried over to the Service of that name whose status shows its addresses, and
    /// released otherwise.
    pub uid: Uid,
}

impl Owner {
    pub fn new(key: ObjectKey, uid: impl Into<Uid>) -> Owner {
        Owner {
            key,
            uid: uid.into(),
        }
    }

    /// The IPAM handle: `serval-lb.<namespace>.<name>.<uid>` (namespaces and Service
    /// names are DNS labels, UIDs lowercase hex and dashes, so it names one Service).
    pub fn handle(&self) -> Result<HandleId, ipam::ModelError> {
        let base = format!("{HANDLE_PREFIX}{}.{}", self.key.namespace, self.key.name);
        HandleId::new(if self.uid.is_empty() {
            base
        } else {
            format!("{base}.{}", self.uid)
        })
    }

    /// The owner of a handle; `None` for other handles.
    pub fn of_handle(handle: &HandleId) -> Option<Owner> {
        let rest = handle.as_str().strip_prefix(HANDLE_PREFIX)?;
        let mut parts = rest.splitn(3, '.');
        let (ns, name) = (parts.next()?, parts.next()?);
        let uid = parts.next().unwrap_or_default();
        (!ns.is_empty() && !name.is_empty() && !uid.contains('.'))
            .then(|| Owner::new(ObjectKey::new(ns, name), uid))
    }
}

/// One step for the IO to carry out, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Release the handle (every address under it).
    Release(Owner),
    /// Allocate under the handle (idempotent: tops up what it holds), then write the
    /// Service's status.
    Allocate(Owner, Want),
    /// Write `status.loadBalancer.ingress` to these addresses.
    Status(ObjectKey, Vec<IpAddr>),
    /// The Service's request cannot be met as it stands (unreadable, or asking for what
    /// no LoadBalancer pool has); its allocation, if any, is kept.
    Problem(ObjectKey, Invalid),
}

/// The decision. `services`: every Service the allocator keeps (see [`Seen::relevant`]);
/// `allocations`: the addresses under each Service handle in the IPAM, sorted; `pools`:
/// the CIDR of each IPPool whose `allowedUses` is `LoadBalancer`, by name (none: serval
/// gives no Service an address). A requested address outside those pools is a problem,
/// never allocated.
pub fn plan(
    services: &BTreeMap<ObjectKey, Seen>,
    allocations: &BTreeMap<Owner, Vec<IpAddr>>,
    pools: &BTreeMap<PoolName, IpNet>,
    mode: AssignIps,
) -> Vec<Action> {
    let mut out = Vec::new();
    let keeps = |s: &Seen| match &s.ours {
        None => false,
        Some(Err(_)) => true,
        Some(Ok(l)) => mode == AssignIps::AllServices || l.requests(),
    };
    // A handle written before serval recorded the UID is the Service's of that name
    // whose status shows its addresses (only the allocator writes them there): it is
    // carried over to the handle with the UID, addresses unchanged, so an upgrade moves
    // no Service to another address.
    let adopted: BTreeMap<&ObjectKey, &Vec<IpAddr>> = allocations
        .iter()
        .filter(|(owner, ips)| {
            owner.uid.is_empty()
                && services.get(&owner.key).is_some_and(|s| {
                    !s.uid.is_empty()
                        && keeps(s)
                        && !allocations.contains_key(&Owner::new(owner.key.clone(), s.uid.clone()))
                        && ips.iter().all(|ip| s.status_ips.contains(ip))
                })
        })
        .map(|(owner, ips)| (&owner.key, ips))
        .collect();
    for (owner, ips) in allocations {
        let seen = services.get(&owner.key);
        let wanted = seen.is_some_and(|s| s.uid == owner.uid && keeps(s));
        if wanted || (owner.uid.is_empty() && adopted.contains_key(&owner.key)) {
            continue;
        }
        // Still there but losing the allocation: the status stops showing it first.
        if let Some(s) = seen.filter(|s| s.status_ips.iter().any(|ip| ips.contains(ip))) {
            let rest = s
                .status_ips
                .iter()
                .filter(|ip| !ips.contains(ip))
                .copied()
                .collect();
            out.push(Action::Status(owner.key.clone(), rest));
        }
        out.push(Action::Release(owner.clone()));
    }
    // No LoadBalancer pool: the addresses are not serval's to give (another
    // implementation may serve these Services), so nothing is allocated or reported.
    if pools.is_empty() {
        return out;
    }
    for (key, seen) in services {
        let svc = match &seen.ours {
            None => continue,
            Some(Err(e)) => {
                out.push(Action::Problem(key.clone(), e.clone()));
                continue;
            }
            Some(Ok(s)) if mode == AssignIps::RequestedServicesOnly && !s.requests() => continue,
            Some(Ok(s)) => s,
        };
        if let Some(ip) = svc
            .requested_ips
            .iter()
            .find(|ip| !pools.values().any(|c| c.contains(*ip)))
        {
            out.push(Action::Problem(
                key.clone(),
                format!("{ip} is in no LoadBalancer IPPool"),
            ));
            continue;
        }
        let want = match svc.want(pools) {
            Ok(w) => w,
            Err(e) => {
                out.push(Action::Problem(key.clone(), e));
                continue;
            }
        };
        let owner = Owner::new(key.clone(), seen.uid.clone());
        let held = match (allocations.get(&owner), adopted.get(key)) {
            (Some(h), _) => h.as_slice(),
            // The old handle's addresses move to the new one first; the fit below then
            // tops up, or replaces them if they are no longer what the Service wants.
            (None, Some(old)) => {
                out.push(Action::Release(Owner::new(key.clone(), "")));
                out.push(Action::Allocate(
                    owner.clone(),
                    Want::Addresses(old.to_vec()),
                ));
                old.as_slice()
            }
            (None, None) => &[],
        };
        match fit(held, &want, pools) {
            Fit::Done => {
                if seen.status_ips != held {
                    out.push(Action::Status(key.clone(), held.to_vec()));
                }
            }
            Fit::Missing => out.push(Action::Allocate(owner, want)),
            Fit::Wrong => {
                out.push(Action::Release(owner.clone()));
                out.push(Action::Allocate(owner, want));
            }
        }
    }
    out
}

enum Fit {
    /// The allocation is what is wanted.
    Done,
    /// It lacks an address, and what it has is right.
    Missing,
    /// It holds an address that is not wanted.
    Wrong,
}

fn fit(held: &[IpAddr], want: &Want, pools: &BTreeMap<PoolName, IpNet>) -> Fit {
    match want {
        Want::Addresses(ips) => {
            if held == ips.as_slice() {
                Fit::Done
            } else if held.iter().all(|ip| ips.contains(ip)) {
                Fit::Missing
            } else {
                Fit::Wrong
            }
        }
        Want::Auto {
            v4,
            v6,
            v4_pools,
            v6_pools,
        } => {
            let mut missing = false;
            for (fam, wanted, named) in [(Family::V4, *v4, v4_pools), (Family::V6, *v6, v6_pools)] {
                let mine: Vec<&IpAddr> = held
                    .iter()
                    .filter(|ip| Family::of_addr(ip) == fam)
                    .collect();
                let in_named = |ip: &IpAddr| {
                    named.is_empty()
                        || named
                            .iter()
                            .any(|n| pools.get(n).is_some_and(|c| c.contains(ip)))
                };
                match (wanted, mine.as_slice()) {
                    (false, []) => {}
                    (false, _) => return Fit::Wrong,
                    (true, []) => missing = true,
                    (true, [ip]) if in_named(ip) => {}
                    (true, _) => return Fit::Wrong,
                }
            }
            if missing {
                Fit::Missing
            } else {
                Fit::Done
            }
        }
    }
}

#[cfg(test)]
mod tests;
