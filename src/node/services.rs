//! Which Service addresses this node advertises, with Calico's semantics.
//!
//! ```text
//!   Service ──Service::from_k8s──▶ kind, addresses, traffic policies ─┐
//!   EndpointSlice ──local_service_of(node)──▶ a ready endpoint here? ─┤ ServiceTable
//!                                                                     ▼
//!   BGPConfiguration ranges ─────────────────────────────▶ advertised() ──▶ prefixes
//! ```
//!
//! * Every node advertises each `serviceClusterIPs` and `serviceExternalIPs` range, and
//!   each `serviceLoadBalancerIPs` range unless `serviceLoadBalancerAggregation` is
//!   `Disabled`.
//! * A Service with `externalTrafficPolicy: Local` has each of its cluster IPs, external
//!   IPs and LoadBalancer ingress IPs advertised as a single address (/32, /128) only
//!   from the nodes that hold a ready endpoint of it, so the router sends its traffic
//!   only there (the more specific route wins over the range every node advertises).
//!   `internalTrafficPolicy: Local` does the same for its cluster IPs.
//! * With aggregation `Disabled`, the LoadBalancer ingress IPs of the other Services are
//!   advertised as single addresses from every node.
//! * An address outside every configured range of its kind is never advertised.
//!
//! Nothing here does IO. The table keeps only what the decision needs: per Service its
//! type, addresses and policies, and per EndpointSlice only whether it holds a ready
//! endpoint on this node (slices that do not are not kept).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::resources::bgp_configuration::{Aggregation, CidrBlock};
use crate::resources::BGPConfigurationSpec;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A namespaced object's name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The Service types that have addresses to advertise (`ExternalName` has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

/// What the decision needs of one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub kind: ServiceType,
    /// `spec.clusterIPs` (or `spec.clusterIP`); empty for a headless Service.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
}

impl Service {
    /// The fields of a Kubernetes Service; `None` for a Service this node never
    /// advertises a single address of (an `ExternalName`, or one whose addresses are
    /// only ever covered by the configured ranges: both policies `Cluster` and not a
    /// LoadBalancer), so the table does not keep it. Addresses that do not parse are
    /// left out (the API server validates them; this only guards the agent).
    pub fn from_k8s(svc: &K8sService) -> Option<Service> {
        let spec = svc.spec.as_ref()?;
        let kind = match spec.type_.as_deref() {
            None | Some("ClusterIP") => ServiceType::ClusterIp,
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => ServiceType::LoadBalancer,
            Some(_) => return None,
        };
        let parse = |v: &[String]| -> Vec<IpAddr> {
            let mut out: Vec<IpAddr> = v.iter().filter_map(|s| s.parse().ok()).collect();
            out.sort();
            out.dedup();
            out
        };
        let mut cluster: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
        if let Some(ip) = &spec.cluster_ip {
            cluster.push(ip.clone());
        }
        let lb: Vec<String> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .map(|i| i.iter().filter_map(|i| i.ip.clone()).collect())
            .unwrap_or_default();
        let s = Service {
            kind,
            // "None" (headless) does not parse and is left out.
            cluster_ips: parse(&cluster),
            external_ips: parse(spec.external_ips.as_deref().unwrap_or_default()),
            load_balancer_ips: if kind == ServiceType::LoadBalancer {
                parse(&lb)
            } else {
                Vec::new()
            },
            external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        };
        let may_matter =
            s.external_local || s.internal_local || s.kind == ServiceType::LoadBalancer;
        let has_addresses = !(s.cluster_ips.is_empty()
            && s.external_ips.is_empty()
            && s.load_balancer_ips.is_empty());
        (may_matter && has_addresses).then_some(s)
    }
}

/// The Service an EndpointSlice belongs to, when the slice holds a ready endpoint on
/// `node` (`conditions.ready` unset counts as ready, as the API documents).
pub fn local_service_of(slice: &EndpointSlice, node: &str) -> Option<ObjectKey> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let namespace = slice.metadata.namespace.as_ref()?;
    let ready_here = slice.endpoints.iter().flatten().any(|e| {
        e.node_name.as_deref() == Some(node)
            && e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
    });
    ready_here.then(|| ObjectKey::new(namespace.clone(), service.clone()))
}

/// One change the Service watch reports, already reduced to what the table keeps.
#[derive(Clone, Debug, PartialEq)]
pub enum ServiceChange {
    /// Every Service, listed afresh (at start and after each re-list).
    ServicesListed(Vec<(ObjectKey, Service)>),
    /// One Service added or changed (`Some`), or deleted or no longer relevant (`None`).
    Service(ObjectKey, Option<Service>),
    /// Every EndpointSlice with a ready endpoint here, with its Service, listed afresh.
    SlicesListed(Vec<(ObjectKey, ObjectKey)>),
    /// One EndpointSlice: its Service when it holds a ready endpoint here, else `None`.
    Slice(ObjectKey, Option<ObjectKey>),
    /// The watch of one kind (`Service`, `EndpointSlice`) failed (`Some`: why) or
    /// delivers again (`None`).
    WatchError(String, Option<String>),
}

/// The Services and local endpoints as the watch reports them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceTable {
    services: BTreeMap<ObjectKey, Service>,
    /// EndpointSlices holding a ready endpoint on this node → their Service.
    local_slices: BTreeMap<ObjectKey, ObjectKey>,
    /// The last error of each kind's watch, until it delivers again.
    watch_errors: BTreeMap<String, String>,
}

impl ServiceTable {
    /// Applies one change; whether the table changed.
    pub fn apply(&mut self, change: ServiceChange) -> bool {
        match change {
            ServiceChange::ServicesListed(all) => {
                let all: BTreeMap<_, _> = all.into_iter().collect();
                let changed = all != self.services;
                self.services = all;
                changed
            }
            ServiceChange::Service(k, Some(s)) => self.services.insert(k, s.clone()) != Some(s),
            ServiceChange::Service(k, None) => self.services.remove(&k).is_some(),
            ServiceChange::SlicesListed(all) => {
                let all: BTreeMap<_, _> = all.into_iter().collect();
                let changed = all != self.local_slices;
                self.local_slices = all;
                changed
            }
            ServiceChange::Slice(k, Some(svc)) => {
                self.local_slices.insert(k, svc.clone()) != Some(svc)
            }
            ServiceChange::Slice(k, None) => self.local_slices.remove(&k).is_some(),
            ServiceChange::WatchError(kind, Some(e)) => {
                self.watch_errors.insert(kind, e.clone()) != Some(e)
            }
            ServiceChange::WatchError(kind, None) => self.watch_errors.remove(&kind).is_some(),
        }
    }

    /// What the agent reports while a watch fails (it keeps advertising what it last
    /// decided meanwhile).
    pub fn problems(&self) -> impl Iterator<Item = String> + '_ {
        self.watch_errors.iter().map(|(kind, e)| {
            format!("{kind} watch: {e}; the Service addresses stay as last decided")
        })
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    fn locally_ready(&self) -> BTreeSet<&ObjectKey> {
        self.local_slices.values().collect()
    }
}

/// The prefixes this node advertises for Services (see the module docs).
pub fn advertised(config: &BGPConfigurationSpec, table: &ServiceTable) -> BTreeSet<IpNet> {
    let aggregate = config.service_load_balancer_aggregation != Some(Aggregation::Disabled);
    let mut out: BTreeSet<IpNet> = BTreeSet::new();
    let ranges = |v: &[CidrBlock]| -> Vec<IpNet> { v.iter().map(|c| c.cidr.trunc()).collect() };
    let cluster = ranges(&config.service_cluster_ips);
    let external = ranges(&config.service_external_ips);
    let lb = ranges(&config.service_load_balancer_ips);
    out.extend(&cluster);
    out.extend(&external);
    if aggregate {
        out.extend(&lb);
    }
    let ready = table.locally_ready();
    for (key, s) in &table.services {
        let here = ready.contains(key);
        let mut single = |ips: &[IpAddr], within: &[IpNet]| {
            out.extend(
                ips.iter()
                    .filter(|ip| within.iter().any(|r| r.contains(*ip)))
                    .map(|ip| IpNet::from(*ip)),
            );
        };
        if (s.external_local || s.internal_local) && here {
            single(&s.cluster_ips, &cluster);
        }
        if s.external_local && here {
            single(&s.external_ips, &external);
        }
        if s.kind == ServiceType::LoadBalancer
            && ((s.external_local && here) || (!s.external_local && !aggregate))
        {
            single(&s.load_balancer_ips, &lb);
        }
    }
    out
}

#[cfg(test)]
mod tests;
