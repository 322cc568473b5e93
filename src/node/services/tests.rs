//! Table tests of which Service prefixes a node advertises.

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn nets(v: &[&str]) -> BTreeSet<IpNet> {
    v.iter().map(|s| net(s)).collect()
}

fn blocks(v: &[&str]) -> Vec<CidrBlock> {
    v.iter().map(|s| CidrBlock { cidr: net(s) }).collect()
}

/// Cluster IPs in 10.96.0.0/12 and fd00:96::/108, external IPs in 192.0.2.0/24, LoadBalancer
/// addresses in 198.51.100.0/24.
fn config(aggregation: Option<Aggregation>) -> BGPConfigurationSpec {
    BGPConfigurationSpec {
        service_cluster_ips: blocks(&["10.96.0.0/12", "fd00:96::/108"]),
        service_external_ips: blocks(&["192.0.2.0/24"]),
        service_load_balancer_ips: blocks(&["198.51.100.0/24"]),
        service_load_balancer_aggregation: aggregation,
        ..BGPConfigurationSpec::default()
    }
}

const RANGES: [&str; 4] = [
    "10.96.0.0/12",
    "fd00:96::/108",
    "192.0.2.0/24",
    "198.51.100.0/24",
];

/// A Kubernetes Service as the API server returns it.
#[derive(Clone, Copy)]
struct Svc {
    kind: &'static str,
    cluster: &'static [&'static str],
    external: &'static [&'static str],
    lb: &'static [&'static str],
    etp: &'static str,
    itp: &'static str,
}

const SVC: Svc = Svc {
    kind: "ClusterIP",
    cluster: &["10.96.0.10"],
    external: &[],
    lb: &[],
    etp: "Cluster",
    itp: "Cluster",
};

fn k8s(s: &Svc) -> K8sService {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    K8sService {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some("web".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(s.kind.into()),
            cluster_ip: s.cluster.first().map(|s| s.to_string()),
            cluster_ips: Some(strings(s.cluster)),
            external_ips: Some(strings(s.external)),
            external_traffic_policy: Some(s.etp.into()),
            internal_traffic_policy: Some(s.itp.into()),
            ..ServiceSpec::default()
        }),
        status: Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    s.lb.iter()
                        .map(|ip| LoadBalancerIngress {
                            ip: Some(ip.to_string()),
                            ..LoadBalancerIngress::default()
                        })
                        .collect(),
                ),
            }),
            ..ServiceStatus::default()
        }),
    }
}

/// An EndpointSlice of `default/web` with endpoints on (node, ready) pairs; `None` is
/// an unset `ready` condition.
fn slice(endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some("web-abcde".into()),
            labels: Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into()),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(
            endpoints
                .iter()
                .map(|(node, ready)| Endpoint {
                    addresses: vec!["10.244.0.5".into()],
                    node_name: Some(node.to_string()),
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
        ),
        ports: None,
    }
}

/// What node `n1` advertises with one Service and its EndpointSlice.
fn on_n1(
    cfg: &BGPConfigurationSpec,
    svc: &Svc,
    endpoints: &[(&str, Option<bool>)],
) -> BTreeSet<IpNet> {
    let mut table = ServiceTable::default();
    let key = ObjectKey::new("default", "web");
    if let Some(s) = Service::from_k8s(&k8s(svc)) {
        table.apply(ServiceChange::Service(key, Some(s)));
    }
    let sl = slice(endpoints);
    table.apply(ServiceChange::Slice(
        ObjectKey::new("default", "web-abcde"),
        local_service_of(&sl, "n1"),
    ));
    advertised(cfg, &table)
}

/// A table row: name, configuration, Service, its endpoints (node, ready), and the
/// single addresses n1 advertises besides the ranges.
type Case<'a> = (
    &'a str,
    &'a BGPConfigurationSpec,
    Svc,
    &'a [(&'a str, Option<bool>)],
    &'a [&'a str],
);

#[test]
fn which_prefixes_a_node_advertises() {
    let here = &[("n1", Some(true))][..];
    let elsewhere = &[("n2", Some(true))][..];
    let not_ready = &[("n1", Some(false)), ("n2", Some(true))][..];
    let unset_ready = &[("n1", None)][..];
    let enabled = config(None);
    let disabled = config(Some(Aggregation::Disabled));
    let lb_local = Svc {
        kind: "LoadBalancer",
        external: &["192.0.2.7"],
        lb: &["198.51.100.5"],
        etp: "Local",
        ..SVC
    };
    let lb_cluster = Svc {
        kind: "LoadBalancer",
        lb: &["198.51.100.5", "203.0.113.9"],
        ..SVC
    };
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("a Cluster ClusterIP Service: the ranges only",
            &enabled, SVC, here, &[]),
        ("internalTrafficPolicy Local, ready endpoint here: its /32",
            &enabled, Svc { itp: "Local", ..SVC }, here, &["10.96.0.10/32"]),
        ("internalTrafficPolicy Local, endpoint elsewhere: nothing more",
            &enabled, Svc { itp: "Local", ..SVC }, elsewhere, &[]),
        ("internalTrafficPolicy Local, endpoint here not ready: nothing more",
            &enabled, Svc { itp: "Local", ..SVC }, not_ready, &[]),
        ("ready unset counts as ready",
            &enabled, Svc { itp: "Local", ..SVC }, unset_ready, &["10.96.0.10/32"]),
        ("externalTrafficPolicy Local: cluster IP too, as Calico does",
            &enabled, Svc { kind: "NodePort", etp: "Local", ..SVC }, here, &["10.96.0.10/32"]),
        ("dual stack: a /128 for the IPv6 cluster IP",
            &enabled, Svc { cluster: &["10.96.0.10", "fd00:96::a"], itp: "Local", ..SVC }, here,
            &["10.96.0.10/32", "fd00:96::a/128"]),
        ("a cluster IP outside serviceClusterIPs: not advertised",
            &enabled, Svc { cluster: &["10.200.0.1"], itp: "Local", ..SVC }, here, &[]),
        ("headless: nothing",
            &enabled, Svc { cluster: &["None"], itp: "Local", ..SVC }, here, &[]),
        ("Local LoadBalancer, endpoint here: cluster, external and ingress /32s",
            &enabled, lb_local, here, &["10.96.0.10/32", "192.0.2.7/32", "198.51.100.5/32"]),
        ("Local LoadBalancer, endpoint elsewhere: the ranges only",
            &enabled, lb_local, elsewhere, &[]),
        ("Local LoadBalancer with aggregation Disabled, endpoint elsewhere: nothing",
            &disabled, lb_local, elsewhere, &[]),
        ("Cluster LoadBalancer, aggregation Enabled: the range covers it",
            &enabled, lb_cluster, elsewhere, &[]),
        ("Cluster LoadBalancer, aggregation Disabled: each ingress IP in range from every node",
            &disabled, lb_cluster, elsewhere, &["198.51.100.5/32"]),
        ("Local external IP outside serviceExternalIPs: not advertised",
            &enabled, Svc { kind: "NodePort", external: &["203.0.113.1"], etp: "Local", ..SVC }, here,
            &["10.96.0.10/32"]),
        ("a Cluster Service's external IP: the range covers it",
            &enabled, Svc { external: &["192.0.2.8"], ..SVC }, here, &[]),
        ("ExternalName: nothing",
            &enabled, Svc { kind: "ExternalName", cluster: &[], itp: "Local", ..SVC }, here, &[]),
    ];
    for (name, cfg, svc, endpoints, extra) in cases {
        let mut want = nets(extra);
        for r in RANGES {
            if r != "198.51.100.0/24" || cfg.service_load_balancer_aggregation.is_none() {
                want.insert(net(r));
            }
        }
        assert_eq!(on_n1(cfg, &svc, endpoints), want, "{name}");
    }
}

#[test]
fn no_configured_ranges_no_service_prefixes() {
    let svc = Svc {
        kind: "LoadBalancer",
        lb: &["198.51.100.5"],
        etp: "Local",
        ..SVC
    };
    let cfg = BGPConfigurationSpec::default();
    assert!(on_n1(&cfg, &svc, &[("n1", Some(true))]).is_empty());
}

#[test]
fn the_last_local_endpoint_going_withdraws_the_address() {
    let cfg = config(None);
    let svc = Service::from_k8s(&k8s(&Svc {
        itp: "Local",
        ..SVC
    }))
    .unwrap();
    let web = ObjectKey::new("default", "web");
    let (a, b) = (
        ObjectKey::new("default", "web-a"),
        ObjectKey::new("default", "web-b"),
    );
    let host = net("10.96.0.10/32");
    let mut t = ServiceTable::default();
    t.apply(ServiceChange::ServicesListed(vec![(web.clone(), svc)]));
    t.apply(ServiceChange::SlicesListed(vec![
        (a.clone(), web.clone()),
        (b.clone(), web.clone()),
    ]));
    assert!(advertised(&cfg, &t).contains(&host));
    t.apply(ServiceChange::Slice(a, None));
    assert!(
        advertised(&cfg, &t).contains(&host),
        "one slice still holds one"
    );
    t.apply(ServiceChange::Slice(b, None));
    assert!(!advertised(&cfg, &t).contains(&host));
    // A re-list without the Service drops it.
    t.apply(ServiceChange::SlicesListed(vec![(
        ObjectKey::new("default", "web-c"),
        web.clone(),
    )]));
    assert!(advertised(&cfg, &t).contains(&host));
    t.apply(ServiceChange::ServicesListed(vec![]));
    assert!(!advertised(&cfg, &t).contains(&host));
}

#[test]
fn the_table_keeps_only_services_that_can_have_single_addresses() {
    assert_eq!(Service::from_k8s(&k8s(&SVC)), None);
    assert_eq!(
        Service::from_k8s(&k8s(&Svc {
            kind: "NodePort",
            ..SVC
        })),
        None
    );
    let lb = Service::from_k8s(&k8s(&Svc {
        kind: "LoadBalancer",
        lb: &["198.51.100.5", "not-an-address"],
        ..SVC
    }))
    .unwrap();
    assert_eq!(
        lb.load_balancer_ips,
        vec!["198.51.100.5".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        lb.cluster_ips,
        vec!["10.96.0.10".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn a_slice_without_its_service_label_is_nobody_s() {
    let mut s = slice(&[("n1", Some(true))]);
    assert_eq!(
        local_service_of(&s, "n1"),
        Some(ObjectKey::new("default", "web"))
    );
    assert_eq!(local_service_of(&s, "n2"), None);
    s.metadata.labels = None;
    assert_eq!(local_service_of(&s, "n1"), None);
}

#[test]
fn desired_announces_them_with_the_communities_of_their_range() {
    use crate::node::desired::{desired, Snapshot};
    use crate::resources::bgp_configuration::PrefixAdvertisement;

    let mut cfg = config(Some(Aggregation::Disabled));
    cfg.prefix_advertisements = vec![PrefixAdvertisement {
        cidr: net("198.51.100.0/24"),
        communities: vec!["65000:100".into()],
    }];
    let mut table = ServiceTable::default();
    let svc = Service::from_k8s(&k8s(&Svc {
        kind: "LoadBalancer",
        lb: &["198.51.100.5"],
        ..SVC
    }))
    .unwrap();
    table.apply(ServiceChange::Service(
        ObjectKey::new("default", "web"),
        Some(svc),
    ));
    let snap = Snapshot {
        node: "n1".into(),
        config: cfg,
        services: std::sync::Arc::new(table),
        ..Snapshot::default()
    };
    let d = desired(&snap);
    let host = &d.announcements[&net("198.51.100.5/32")];
    assert_eq!(host.communities.len(), 1, "{host:?}");
    assert!(d.announcements.contains_key(&net("10.96.0.0/12")));
    assert!(
        !d.announcements.contains_key(&net("198.51.100.0/24")),
        "aggregation Disabled: no LoadBalancer range"
    );
}

#[test]
fn a_failing_watch_is_reported_until_it_delivers_again() {
    let mut t = ServiceTable::default();
    let e = Some("endpointslices is forbidden".to_string());
    assert!(t.apply(ServiceChange::WatchError("EndpointSlice".into(), e.clone())));
    assert!(!t.apply(ServiceChange::WatchError("EndpointSlice".into(), e)));
    let p: Vec<String> = t.problems().collect();
    assert!(
        p.len() == 1 && p[0].contains("EndpointSlice") && p[0].contains("forbidden"),
        "{p:?}"
    );
    assert!(t.apply(ServiceChange::WatchError("EndpointSlice".into(), None)));
    assert_eq!(t.problems().count(), 0);
}
