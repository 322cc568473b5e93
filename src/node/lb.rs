//! Which Services get LoadBalancer addresses, and from where: the decision of the
//! LoadBalancer address allocator (its IO, on the node collector's Lease holder, is
//! [`crate::node::kube::lb`]).
//!
//! ```text
//!   Service ──LbService::from_k8s──▶ ours? which addresses, pools, families ─┐
//!   IPAM allocations under serval-lb.<namespace>.<name> ──────────────────────┤ plan()
//!   BGPConfiguration loadBalancerAssignIPs, pools (name → CIDR) ───────────────┤
//!                                                                              ▼
//!                               Release / Allocate / Status / Problem, per Service
//! ```
//!
//! * A Service is ours when its type is `LoadBalancer` and it has no
//!   `loadBalancerClass` or [`LB_CLASS`].
//! * It asks for specific addresses with the annotation `serval.dev/loadBalancerIPs`
//!   (or Calico's `projectcalico.org/loadBalancerIPs`), a JSON list, else with
//!   `spec.loadBalancerIP`; for pools by name with `serval.dev/ipv4pools` and
//!   `serval.dev/ipv6pools` (or Calico's `projectcalico.org/…`), JSON lists of IPPool
//!   names. The serval.dev annotation wins when both are set.
//! * Without specific addresses it gets one address of each family in `spec.ipFamilies`
//!   (the API server fills it from `ipFamilyPolicy`), from the named pools or else from
//!   the `Automatic` LoadBalancer pools.
//! * With [`AssignIps::RequestedServicesOnly`] only Services that ask (addresses or
//!   pools) get one; with `AllServices` (the default) every Service of ours does.
//! * An allocation is kept while it still answers what its Service asks for; it is
//!   released when the Service goes, stops being ours (type or class changed), stops
//!   asking under `RequestedServicesOnly`, or asks for something else (then allocated
//!   anew). `status.loadBalancer.ingress` is written to the allocation.
//!
//! The addresses themselves come from the block IPAM: a Service's handle
//! ([`handle_of`]) is idempotent, and an address has one owner, so one address never
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
/// The prefix of the IPAM handles of Services' addresses: `serval-lb.<namespace>.<name>`.
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

/// What a LoadBalancer Service of ours asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbService {
    /// Specific addresses (annotation or `spec.loadBalancerIP`), sorted.
    pub requested_ips: Vec<IpAddr>,
    pub v4_pools: Vec<PoolName>,
    pub v6_pools: Vec<PoolName>,
    /// `spec.ipFamilies` (IPv4 when unset).
    pub v4: bool,
    pub v6: bool,
    /// `status.loadBalancer.ingress[].ip`, sorted.
    pub status_ips: Vec<IpAddr>,
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
        Some(Self::parse(
            ann,
            spec.load_balancer_ip.as_deref(),
            spec.ip_families.as_deref().unwrap_or_default(),
            status_ips,
        ))
    }

    fn parse(
        ann: &BTreeMap<String, String>,
        load_balancer_ip: Option<&str>,
        ip_families: &[String],
        status_ips: Vec<IpAddr>,
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
        let pools = |names: [&str; 2]| -> Result<Vec<PoolName>, Invalid> {
            list(names)?
                .into_iter()
                .map(|n| PoolName::new(n.trim()).map_err(|e| format!("{}: {e}", names[0])))
                .collect()
        };
        let v4_pools = pools(ANNOTATION_V4_POOLS)?;
        let v6_pools = pools(ANNOTATION_V6_POOLS)?;
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
            status_ips,
        })
    }

    /// Whether it asks for addresses or pools (what `RequestedServicesOnly` serves).
    pub fn requests(&self) -> bool {
        !(self.requested_ips.is_empty() && self.v4_pools.is_empty() && self.v6_pools.is_empty())
    }

    /// What to allocate for it.
    pub fn want(&self) -> Want {
        if self.requested_ips.is_empty() {
            Want::Auto {
                v4: self.v4,
                v6: self.v6,
                v4_pools: self.v4_pools.clone(),
                v6_pools: self.v6_pools.clone(),
            }
        } else {
            Want::Addresses(self.requested_ips.clone())
        }
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

/// One step for the IO to carry out, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Release the Service's handle (every address under it).
    Release(ObjectKey),
    /// Allocate under the Service's handle (idempotent: tops up what it holds), then write
    /// its status.
    Allocate(ObjectKey, Want),
    /// Write `status.loadBalancer.ingress` to these addresses.
    Status(ObjectKey, Vec<IpAddr>),
    /// The Service's request cannot be read; its allocation, if any, is kept.
    Problem(ObjectKey, Invalid),
}

/// The decision. `services`: every Service of ours (see [`LbService::from_k8s`]);
/// `allocations`: the addresses under each Service handle in the IPAM, sorted; `pools`:
/// the CIDR of each IPPool whose `allowedUses` is `LoadBalancer`, by name. A requested
/// address outside those pools is a problem, never allocated.
pub fn plan(
    services: &BTreeMap<ObjectKey, Result<LbService, Invalid>>,
    allocations: &BTreeMap<ObjectKey, Vec<IpAddr>>,
    pools: &BTreeMap<PoolName, IpNet>,
    mode: AssignIps,
) -> Vec<Action> {
    let mut out = Vec::new();
    for key in allocations.keys() {
        let wanted = match services.get(key) {
            None => false,
            Some(Err(_)) => true,
            Some(Ok(s)) => mode == AssignIps::AllServices || s.requests(),
        };
        if !wanted {
            out.push(Action::Release(key.clone()));
        }
    }
    for (key, svc) in services {
        let svc = match svc {
            Err(e) => {
                out.push(Action::Problem(key.clone(), e.clone()));
                continue;
            }
            Ok(s) if mode == AssignIps::RequestedServicesOnly && !s.requests() => continue,
            Ok(s) => s,
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
        let want = svc.want();
        let held = allocations.get(key).map(Vec::as_slice).unwrap_or_default();
        match fit(held, &want, pools) {
            Fit::Done => {
                if svc.status_ips != held {
                    out.push(Action::Status(key.clone(), held.to_vec()));
                }
            }
            Fit::Missing => out.push(Action::Allocate(key.clone(), want)),
            Fit::Wrong => {
                out.push(Action::Release(key.clone()));
                out.push(Action::Allocate(key.clone(), want));
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

/// The IPAM handle of a Service's addresses: `serval-lb.<namespace>.<name>` (namespaces
/// and Service names are DNS labels, so the handle names one Service).
pub fn handle_of(key: &ObjectKey) -> Result<HandleId, ipam::ModelError> {
    HandleId::new(format!("{HANDLE_PREFIX}{}.{}", key.namespace, key.name))
}

/// The Service a handle belongs to; `None` for other handles.
pub fn key_of(handle: &HandleId) -> Option<ObjectKey> {
    let rest = handle.as_str().strip_prefix(HANDLE_PREFIX)?;
    let (ns, name) = rest.split_once('.')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('.')).then(|| ObjectKey::new(ns, name))
}

#[cfg(test)]
mod tests;
