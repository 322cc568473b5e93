//! LoadBalancer addresses on the `kubernetes` datastore, against a real kube-apiserver
//! with serval's CRDs and the chart's ServiceAccount, RBAC and admission policy, three
//! agents and a BIRD top-of-rack router (the shape of `kube_services.rs`).
//!
//! An IPPool `lb` (198.51.100.0/24, `allowedUses: [LoadBalancer]`) inside
//! `serviceLoadBalancerIPs`, aggregation `Disabled`, and an IPv6 one `lb6`; the API server
//! is dual-stack:
//!
//! 1. a LoadBalancer Service gets an address of `lb`, its status shows it and the ToR
//!    has it as a /32 from every node; a Service of another `loadBalancerClass` gets
//!    nothing;
//! 2. an address asked for with `serval.dev/loadBalancerIPs` is the one given;
//! 3. deleting the Service releases its address (its IPAM handle goes) and the ToR
//!    withdraws the /32; a Service changed to `ClusterIP` loses its address and its
//!    status stops showing it; so does one that stops asking (its pool annotation, a
//!    CIDR, removed) under `loadBalancerAssignIPs: RequestedServicesOnly`; a Service asking for an address outside every
//!    LoadBalancer pool is a problem in the Lease holder's `serval node status` (JSON and
//!    text) until it is deleted; a `RequireDualStack` Service gets one address of `lb`
//!    and one of `lb6`, both in its status, and deleting it frees both;
//! 4. Services are created while the allocator's node (the collector's Lease holder) is
//!    killed and another takes the Lease, one is deleted and one deleted and created
//!    again under its name meanwhile: every Service ends with an address, earlier ones
//!    keep theirs, the deleted one's is released by the new allocator (it adopts what the
//!    IPAM holds), the recreated one's handle carries its new UID (the old object's
//!    handle is released), no address is given twice, and each status matches the IPAM;
//! 5. a node that does not hold the Lease may not write a Service's status (the chart's
//!    admission policy).

mod kube_support;
mod node_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use node_support::three_nodes;
use serval_integration::kube::ApiServer;
use serval_integration::{
    scenario, tools, wait_for, wait_until, Asn, BgpDaemon, Bird, Error, NeighborSpec, Netns, Poll,
    Result, RouterSpec,
};

const NAMESPACE: &str = "kube-system";
const SERVICE_ACCOUNT: &str = "serval";
const API_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const TOR_AS: u32 = 65000;
const NODE_AS: u32 = 64512;
const LOG_LEVEL: &str = "info,serval=debug";
const LB_POOL: &str = "198.51.100.0/24";
const LB6_POOL: &str = "2001:db8:5::/120";
/// Outside every LoadBalancer pool.
const OUTSIDE: &str = "10.0.0.5";
const REQUESTED: &str = "198.51.100.200";
const LEASE: &str = "serval-node-gc";
/// Services created before and after the allocator's node is killed.
const BATCH: usize = 5;

fn addr(s: &str) -> Result<IpAddr> {
    s.parse().map_err(|_| Error::InvalidSpec(s.into()))
}

const NODES: &str = "\
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {rack: a}}
---
apiVersion: v1
kind: Node
metadata: {name: n2, labels: {rack: a}}
---
apiVersion: v1
kind: Node
metadata: {name: n3, labels: {rack: b}}
";

const INTERNAL_IPS: [(&str, &str); 3] = [
    ("n1", "192.0.2.11"),
    ("n2", "192.0.2.12"),
    ("n3", "198.18.1.13"),
];

fn cluster_yaml() -> String {
    format!(
        "\
apiVersion: serval.dev/v1
kind: IPPool
metadata: {{name: pods}}
spec: {{cidr: 10.65.0.0/16, blockSize: 26, vxlanMode: CrossSubnet, ipipMode: Never}}
---
apiVersion: serval.dev/v1
kind: IPPool
metadata: {{name: lb}}
spec: {{cidr: {LB_POOL}, blockSize: 28, allowedUses: [LoadBalancer]}}
---
apiVersion: serval.dev/v1
kind: IPPool
metadata: {{name: lb6}}
spec: {{cidr: '{LB6_POOL}', blockSize: 124, allowedUses: [LoadBalancer]}}
---
apiVersion: serval.dev/v1
kind: BGPConfiguration
metadata: {{name: default}}
spec:
  serviceLoadBalancerIPs: [{{cidr: {LB_POOL}}}]
  serviceLoadBalancerAggregation: Disabled
---
apiVersion: serval.dev/v1
kind: BGPPeer
metadata: {{name: tor-rack-a}}
spec: {{nodeSelector: rack == 'a', peerIP: 192.0.2.1, asNumber: {TOR_AS}}}
---
apiVersion: serval.dev/v1
kind: BGPPeer
metadata: {{name: tor-rack-b}}
spec: {{nodeSelector: rack == 'b', peerIP: 198.18.1.1, asNumber: {TOR_AS}}}
"
    )
}

/// A LoadBalancer Service in `default`, with extra `metadata` and `spec` lines.
fn service(name: &str, metadata: &str, spec: &str) -> String {
    format!(
        "\
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
{metadata}spec:
  type: LoadBalancer
  ports: [{{port: 80, protocol: TCP}}]
{spec}"
    )
}

/// Every LoadBalancer Service's `status.loadBalancer.ingress` addresses.
fn ingress(api: &ApiServer) -> Result<BTreeMap<String, Vec<String>>> {
    let out = api.kubectl(&["get", "services", "-n", "default", "-o", "json"])?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| Error::Check(format!("services JSON: {e}")))?;
    let mut m = BTreeMap::new();
    for s in v["items"].as_array().cloned().unwrap_or_default() {
        if s["spec"]["type"] != "LoadBalancer" {
            continue;
        }
        let ips: Vec<String> = s["status"]["loadBalancer"]["ingress"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i["ip"].as_str().map(str::to_owned))
            .collect();
        m.insert(s["metadata"]["name"].as_str().unwrap_or("").to_owned(), ips);
    }
    Ok(m)
}

/// The addresses IPAM blocks hold under Service handles: address → handle.
fn ipam_lb(api: &ApiServer) -> Result<BTreeMap<IpAddr, String>> {
    let out = api.kubectl(&["get", "ipamblocks", "-o", "json"])?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| Error::Check(format!("blocks JSON: {e}")))?;
    let mut m = BTreeMap::new();
    for b in v["items"].as_array().cloned().unwrap_or_default() {
        let spec = &b["spec"];
        let cidr: IpNet = spec["cidr"]
            .as_str()
            .unwrap_or("")
            .parse()
            .map_err(|_| Error::Check(format!("block cidr {}", spec["cidr"])))?;
        let attrs = spec["attributes"].as_array().cloned().unwrap_or_default();
        for (i, a) in spec["allocations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let Some(at) = a.as_u64() else { continue };
            let handle = attrs
                .get(at as usize)
                .and_then(|x| x["handleId"].as_str())
                .unwrap_or("")
                .to_owned();
            if !handle.starts_with("serval-lb.") {
                continue;
            }
            let ip = match cidr {
                IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + i as u32)),
                IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + i as u128)),
            };
            m.insert(ip, handle);
        }
    }
    Ok(m)
}

/// Every Service's `metadata.uid`, by name.
fn uids(api: &ApiServer) -> Result<BTreeMap<String, String>> {
    let out = api.kubectl(&["get", "services", "-n", "default", "-o", "json"])?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| Error::Check(format!("services JSON: {e}")))?;
    Ok(v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                s["metadata"]["uid"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect())
}

/// The IPAM handle of Service `name` with UID `uid`.
fn handle(name: &str, uid: &str) -> String {
    format!("serval-lb.default.{name}.{uid}")
}

/// Service `name`'s `status.loadBalancer.ingress` addresses, whatever its type.
fn ingress_of(api: &ApiServer, name: &str) -> Result<Vec<String>> {
    let out = api.kubectl(&[
        "get",
        "service",
        name,
        "-n",
        "default",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[*].ip}",
    ])?;
    Ok(out.split_whitespace().map(str::to_owned).collect())
}

/// `serval node status` as text.
fn status_text(n: &node_support::Node) -> Result<String> {
    node_support::run(
        std::process::Command::new(node_support::serval_bin()).args([
            "node",
            "status",
            "--socket",
            &n.socket().display().to_string(),
        ]),
    )
}

fn holder(api: &ApiServer) -> Result<String> {
    api.kubectl(&[
        "-n",
        NAMESPACE,
        "get",
        "lease",
        LEASE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .map(|s| s.trim().to_owned())
}

/// Waits until Service `name` shows exactly one ingress address; that address.
fn wait_address(api: &ApiServer, name: &str, within: Duration) -> Result<String> {
    wait_until(
        within,
        &format!("{name}: an ingress address"),
        || match ingress(api).map(|m| m.get(name).cloned()) {
            Ok(Some(v)) if v.len() == 1 => Poll::Ready(v[0].clone()),
            Ok(v) => Poll::Pending(format!("{v:?}")),
            Err(e) => Poll::Pending(e.to_string()),
        },
    )
}

/// The nodes BIRD has `prefix` from (see `kube_services.rs`).
fn tor_sources(bird: &Bird, prefix: &str) -> Result<BTreeSet<String>> {
    let out = match bird.birdc(&["show", "route", prefix]) {
        Ok(out) => out,
        Err(Error::Command { stdout, .. }) if stdout.contains("Network not found") => stdout,
        Err(e) => return Err(e),
    };
    Ok(out
        .split("[sv_n")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .filter_map(|i| i.parse::<usize>().ok())
        .map(|i| format!("n{}", i + 1))
        .collect())
}

fn wait_tor(bird: &Bird, prefix: &str, from: &[&str], within: Duration) -> Result<()> {
    let want: BTreeSet<String> = from.iter().map(|s| s.to_string()).collect();
    wait_until(
        within,
        &format!("BIRD: {prefix} from {want:?}"),
        || match tor_sources(bird, prefix) {
            Ok(s) if s == want => Poll::Ready(()),
            Ok(s) => Poll::Pending(format!("from {s:?}")),
            Err(e) => Poll::Pending(e.to_string()),
        },
    )
}

/// A merge patch of `default/name`'s status with the credentials of `kubeconfig` (the
/// agent's RBAC grants `patch` on `services/status` and nothing to read it back, so not
/// through kubectl, which reads first); the server's refusal as the error.
fn patch_status_as(
    cp: &Netns,
    kubeconfig: &std::path::Path,
    name: &str,
    body: &serde_json::Value,
) -> Result<std::result::Result<(), String>> {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, Patch, PatchParams};
    cp.in_thread(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
            let config = kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
            let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
            let api: Api<Service> = Api::namespaced(client, "default");
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(body))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })
}

#[test]
fn load_balancer_addresses_from_the_pool_survive_a_new_allocator() {
    scenario("kube-lb", |test| {
        tools::require_all(&["ip", "bird", "birdc", "openssl"])?;
        let started = Instant::now();
        let (nodes, tor, mut segment) = three_nodes(test)?;
        let [mut n1, mut n2, mut n3] = nodes;
        let cp = Netns::new()?;
        segment.connect(&cp, "eth0")?;
        cp.add_addr(
            "eth0",
            "192.0.2.2/24"
                .parse()
                .map_err(|_| Error::InvalidSpec("cp".into()))?,
        )?;
        cp.add_default_route(addr("192.0.2.1")?)?;
        let api = ApiServer::start_in(&cp.handle(), IpAddr::V4(API_ADDR), test.path())?;
        kube_support::install_crds(&api)?;
        api.kubectl_stdin(
            &["apply", "-f", "-"],
            &kube_support::chart_rbac(&api, NAMESPACE, &[])?,
        )?;

        let mut spec = RouterSpec::new(Asn(TOR_AS), Ipv4Addr::new(192, 0, 2, 1));
        for (node, local) in [
            ("192.0.2.11", "192.0.2.1"),
            ("192.0.2.12", "192.0.2.1"),
            ("198.18.1.13", "198.18.1.1"),
        ] {
            spec = spec.neighbor(NeighborSpec::new(addr(node)?, Asn(NODE_AS)).local(addr(local)?));
        }
        let bird = Bird::start(&tor, test, spec)?;

        api.kubectl_stdin(&["apply", "-f", "-"], NODES)?;
        for (node, ip) in INTERNAL_IPS {
            let status = serde_json::json!({"status": {"addresses": [
                {"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": node}]}});
            api.kubectl(&[
                "patch",
                "node",
                node,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ])?;
        }
        api.kubectl_stdin(&["apply", "-f", "-"], &cluster_yaml())?;
        let mut kubeconfigs = BTreeMap::new();
        for n in [&mut n1, &mut n2, &mut n3] {
            let kubeconfig = api.node_agent_kubeconfig(
                NAMESPACE,
                SERVICE_ACCOUNT,
                &n.name,
                Duration::from_secs(3600),
            )?;
            let kc = kubeconfig.display().to_string();
            let env = [("KUBECONFIG", kc.as_str()), ("SERVAL_NAMESPACE", NAMESPACE)];
            n.start_with_env("kubernetes", &env, LOG_LEVEL)?;
            kubeconfigs.insert(n.name.clone(), kubeconfig);
        }
        for a in ["192.0.2.11", "192.0.2.12", "198.18.1.13"] {
            bird.wait_established(addr(a)?, Duration::from_secs(60))?;
        }
        let pool: IpNet = LB_POOL
            .parse()
            .map_err(|_| Error::InvalidSpec(LB_POOL.into()))?;

        // 1. An address from the pool, in the status, routed by the ToR from every node.
        api.kubectl_stdin(&["apply", "-f", "-"], &service("web", "", ""))?;
        api.kubectl_stdin(
            &["apply", "-f", "-"],
            &service("other", "", "  loadBalancerClass: example.com/other\n"),
        )?;
        let web = wait_address(&api, "web", Duration::from_secs(60))?;
        assert!(pool.contains(&addr(&web)?), "{web} inside {LB_POOL}");
        let web_host = format!("{web}/32");
        wait_tor(
            &bird,
            &web_host,
            &["n1", "n2", "n3"],
            Duration::from_secs(30),
        )?;
        eprintln!(
            "phase 1: web got {web}, routed by the ToR from n1, n2, n3 after {:.1?}",
            started.elapsed()
        );

        // 2. A requested address.
        let ann = format!("  annotations: {{serval.dev/loadBalancerIPs: '[\"{REQUESTED}\"]'}}\n");
        api.kubectl_stdin(&["apply", "-f", "-"], &service("fixed", &ann, ""))?;
        let fixed = wait_address(&api, "fixed", Duration::from_secs(30))?;
        assert_eq!(fixed, REQUESTED, "the requested address");
        assert_eq!(
            ingress(&api)?.get("other"),
            Some(&vec![]),
            "a Service of another class gets nothing"
        );
        eprintln!("phase 2: fixed got the requested {fixed}; other (another class) nothing");

        // 3. Deleting the Service releases its address and withdraws the route.
        api.kubectl(&["delete", "service", "web", "-n", "default"])?;
        wait_for(
            Duration::from_secs(30),
            "web's address released in the IPAM",
            || ipam_lb(&api),
            |m| !m.values().any(|h| h.starts_with("serval-lb.default.web.")),
        )?;
        wait_tor(&bird, &web_host, &[], Duration::from_secs(30))?;
        eprintln!("phase 3: web deleted, {web} released and withdrawn");

        // 3b. A type change to ClusterIP releases the address and clears the status.
        api.kubectl_stdin(&["apply", "-f", "-"], &service("typed", "", ""))?;
        let typed = wait_address(&api, "typed", Duration::from_secs(30))?;
        let typed_uid = uids(&api)?.get("typed").cloned().unwrap_or_default();
        api.kubectl(&[
            "patch",
            "service",
            "typed",
            "-n",
            "default",
            "--type=merge",
            "-p",
            r#"{"spec":{"type":"ClusterIP"}}"#,
        ])?;
        wait_for(
            Duration::from_secs(30),
            "typed (now ClusterIP): no address in its status",
            || ingress_of(&api, "typed"),
            |v| v.is_empty(),
        )?;
        wait_for(
            Duration::from_secs(30),
            "typed's address released in the IPAM",
            || ipam_lb(&api),
            |m| !m.values().any(|h| *h == handle("typed", &typed_uid)),
        )?;
        api.kubectl(&["delete", "service", "typed", "-n", "default"])?;
        eprintln!("phase 3b: typed changed to ClusterIP: {typed} released, status cleared");

        // 3c. Under RequestedServicesOnly a Service that stops asking (its pool annotation,
        // a CIDR as Calico takes it, removed) is still a LoadBalancer: serval takes its
        // address back out of the status before releasing it.
        let assign_ips = |mode: &str| {
            api.kubectl(&[
                "patch",
                "bgpconfiguration",
                "default",
                "--type=merge",
                "-p",
                &format!(r#"{{"spec":{{"loadBalancerAssignIPs":{mode}}}}}"#),
            ])
        };
        assign_ips(r#""RequestedServicesOnly""#)?;
        let ann = format!("  annotations: {{projectcalico.org/ipv4pools: '[\"{LB_POOL}\"]'}}\n");
        api.kubectl_stdin(&["apply", "-f", "-"], &service("asking", &ann, ""))?;
        let asking = wait_address(&api, "asking", Duration::from_secs(30))?;
        assert!(pool.contains(&addr(&asking)?), "{asking} inside {LB_POOL}");
        let asking_uid = uids(&api)?.get("asking").cloned().unwrap_or_default();
        api.kubectl(&[
            "annotate",
            "service",
            "asking",
            "-n",
            "default",
            "projectcalico.org/ipv4pools-",
        ])?;
        wait_for(
            Duration::from_secs(30),
            "asking (no longer asking): no address in its status",
            || ingress_of(&api, "asking"),
            |v| v.is_empty(),
        )?;
        wait_for(
            Duration::from_secs(30),
            "asking's address released in the IPAM",
            || ipam_lb(&api),
            |m| !m.values().any(|h| *h == handle("asking", &asking_uid)),
        )?;
        assign_ips("null")?;
        api.kubectl(&["delete", "service", "asking", "-n", "default"])?;
        eprintln!(
            "phase 3c: asking got {asking} from its pool named by CIDR; once it stopped asking, \
             released and out of its status"
        );

        // 3d. A request serval cannot meet shows in the Lease holder's node status.
        let leader = holder(&api)?;
        let leader_node = [&n1, &n2, &n3]
            .into_iter()
            .find(|n| n.name == leader)
            .ok_or_else(|| Error::Check(format!("Lease holder {leader:?}")))?;
        let ann = format!("  annotations: {{serval.dev/loadBalancerIPs: '[\"{OUTSIDE}\"]'}}\n");
        api.kubectl_stdin(&["apply", "-f", "-"], &service("outside", &ann, ""))?;
        let problem =
            format!("LoadBalancer Service default/outside: {OUTSIDE} is in no LoadBalancer IPPool");
        wait_for(
            Duration::from_secs(30),
            "the Lease holder's status names the Service it cannot serve",
            || leader_node.status(),
            |s| node_support::has_problem(s, &problem),
        )?;
        let text = status_text(leader_node)?;
        assert!(text.contains(&problem), "{text}");
        api.kubectl(&["delete", "service", "outside", "-n", "default"])?;
        wait_for(
            Duration::from_secs(30),
            "the problem gone with the Service",
            || leader_node.status(),
            |s| !node_support::has_problem(s, "default/outside"),
        )?;
        eprintln!("phase 3d: {OUTSIDE} refused, shown in {leader}'s node status until deleted");

        // 3e. Dual-stack: one address of each LoadBalancer pool, both shown, both freed.
        api.kubectl_stdin(
            &["apply", "-f", "-"],
            &service("dual", "", "  ipFamilyPolicy: RequireDualStack\n"),
        )?;
        let dual = wait_for(
            Duration::from_secs(30),
            "dual: an IPv4 and an IPv6 address in its status",
            || ingress_of(&api, "dual"),
            |v| v.len() == 2,
        )?;
        let pool6: IpNet = LB6_POOL
            .parse()
            .map_err(|_| Error::InvalidSpec(LB6_POOL.into()))?;
        let dual_ips: Vec<IpAddr> = dual.iter().map(|s| addr(s)).collect::<Result<_>>()?;
        assert!(
            dual_ips.iter().any(|ip| pool.contains(ip))
                && dual_ips.iter().any(|ip| pool6.contains(ip)),
            "dual: one of {LB_POOL} and one of {LB6_POOL}: {dual:?}"
        );
        let dual_handle = handle(
            "dual",
            &uids(&api)?.get("dual").cloned().unwrap_or_default(),
        );
        let held = ipam_lb(&api)?;
        for ip in &dual_ips {
            assert_eq!(held.get(ip), Some(&dual_handle), "{ip} in the IPAM");
        }
        api.kubectl(&["delete", "service", "dual", "-n", "default"])?;
        wait_for(
            Duration::from_secs(30),
            "both of dual's addresses released",
            || ipam_lb(&api),
            |m| dual_ips.iter().all(|ip| !m.contains_key(ip)),
        )?;
        eprintln!("phase 3e: dual got {dual:?}, freed both on delete");

        // 4. Services created while the allocator's node is killed and another takes over.
        let before_names: Vec<String> = (0..BATCH).map(|i| format!("before-{i}")).collect();
        for n in &before_names {
            api.kubectl_stdin(&["apply", "-f", "-"], &service(n, "", ""))?;
        }
        for n in &before_names {
            wait_address(&api, n, Duration::from_secs(30))?;
        }
        let kept = ingress(&api)?;
        let old = holder(&api)?;
        let killed = Instant::now();
        match old.as_str() {
            "n1" => n1.agent = None,
            "n2" => n2.agent = None,
            "n3" => n3.agent = None,
            other => return Err(Error::Check(format!("Lease holder {other:?}"))),
        }
        // Deleted while no allocator leads: the next one finds the address in the IPAM.
        api.kubectl(&["delete", "service", "before-0", "-n", "default"])?;
        // Deleted and created again under its name: a new object, which must not inherit
        // the old one's allocation.
        let old_uid = uids(&api)?.get("before-1").cloned().unwrap_or_default();
        api.kubectl(&["delete", "service", "before-1", "-n", "default"])?;
        api.kubectl_stdin(&["apply", "-f", "-"], &service("before-1", "", ""))?;
        let after_names: Vec<String> = (0..BATCH).map(|i| format!("after-{i}")).collect();
        for n in &after_names {
            api.kubectl_stdin(&["apply", "-f", "-"], &service(n, "", ""))?;
        }
        let new = wait_until(
            Duration::from_secs(60),
            "a new Lease holder",
            || match holder(&api) {
                Ok(h) if !h.is_empty() && h != old => Poll::Ready(h),
                Ok(h) => Poll::Pending(h),
                Err(e) => Poll::Pending(e.to_string()),
            },
        )?;
        for n in &after_names {
            wait_address(&api, n, Duration::from_secs(60))?;
        }
        eprintln!(
            "phase 4: {old} killed, {new} took the Lease; the later Services had addresses {:.1?} after the kill",
            killed.elapsed()
        );
        wait_for(
            Duration::from_secs(30),
            "before-0's address released by the new allocator",
            || ipam_lb(&api),
            |m| {
                !m.values()
                    .any(|h| h.starts_with("serval-lb.default.before-0."))
            },
        )?;
        let now_uids = uids(&api)?;
        let new_uid = now_uids.get("before-1").cloned().unwrap_or_default();
        assert_ne!(old_uid, new_uid, "before-1 is a new object");
        wait_address(&api, "before-1", Duration::from_secs(30))?;
        wait_for(
            Duration::from_secs(30),
            "before-1's address under its new UID, the old object's released",
            || ipam_lb(&api),
            |m| {
                m.values().any(|h| *h == handle("before-1", &new_uid))
                    && !m.values().any(|h| *h == handle("before-1", &old_uid))
            },
        )?;
        let all = ingress(&api)?;
        for (name, ips) in kept
            .iter()
            .filter(|(n, _)| *n != "before-0" && *n != "before-1")
        {
            assert_eq!(all.get(name), Some(ips), "{name} kept its address");
        }
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (name, ips) in &all {
            for ip in ips {
                if let Some(first) = seen.insert(ip.clone(), name.clone()) {
                    panic!("{ip} given to both {first} and {name}: {all:?}");
                }
            }
        }
        let held = ipam_lb(&api)?;
        for (name, ips) in &all {
            for ip in ips {
                let uid = now_uids.get(name).cloned().unwrap_or_default();
                assert_eq!(
                    held.get(&addr(ip)?),
                    Some(&handle(name, &uid)),
                    "{name}'s {ip} in the IPAM"
                );
            }
        }
        // 5. Only the Lease holder writes a Service's status with serval's credentials.
        let bystander = ["n1", "n2", "n3"]
            .into_iter()
            .find(|n| *n != old && *n != new)
            .ok_or_else(|| Error::Check("no third node".into()))?;
        let kc = kubeconfigs
            .get(bystander)
            .ok_or_else(|| Error::Check(format!("{bystander}: no kubeconfig")))?;
        let forged =
            serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.66"}]}}});
        let said = match patch_status_as(&cp, kc, "fixed", &forged)? {
            Ok(()) => panic!("{bystander} wrote a Service's status without the Lease"),
            Err(e) => e,
        };
        assert!(
            said.contains("ValidatingAdmissionPolicy 'serval-node-writes'")
                && said.contains("only while it holds the collector Lease"),
            "{said}"
        );
        eprintln!("phase 5: {bystander} (not the Lease holder) may not write a Service's status");
        let with: usize = all.values().filter(|v| !v.is_empty()).count();
        assert_eq!(
            with,
            2 * BATCH,
            "every Service of ours has an address: {all:?}"
        );
        assert_eq!(
            held.len(),
            with,
            "the IPAM holds no other address: {held:?}"
        );
        eprintln!(
            "{with} Services, {} distinct addresses, each the IPAM's; done after {:.1?}",
            seen.len(),
            started.elapsed()
        );
        Ok(())
    });
}
