//! Services over BGP on the `kubernetes` datastore, against a real kube-apiserver with
//! serval's CRDs and the chart's ServiceAccount and RBAC (the agents speak with tokens
//! the server issued for it), three agents and a BIRD top-of-rack router.
//!
//! ```text
//!   n1 ───┬── n2     cp  .2          tor (BIRD) ─── n3      AS 64512 (mesh),
//!  .11    │  .12     │     .1 ┌──────┘  .1 198.18.1.0/24 .13   eBGP to the ToR
//!         └──────────┴────────┘
//!                 192.0.2.0/24
//! ```
//!
//! The BGPConfiguration advertises the API server's Service range (10.254.0.0/24). The
//! test plays the EndpointSlice controller: it writes the slice of a Service with
//! `internalTrafficPolicy: Local` and moves its one ready endpoint between nodes.
//!
//! 1. the range from every node;
//! 2. the Service's /32 only from the node whose slice holds a ready endpoint;
//! 3. the endpoint moves n1 → n2 → n3 → n1 …: the /32 follows, each move timed from the
//!    EndpointSlice write (returned by the API server) to BIRD's table showing the /32
//!    from the new node only;
//! 4. the endpoint turns not ready: the /32 is withdrawn; ready again: back;
//! 5. the API server is stopped for 5 s: the /32 stays where it is; once it is back
//!    the watch lists again and the /32 follows the next move;
//! 6. the Service is deleted: the /32 is withdrawn, the range stays;
//! 7. a LoadBalancer Service (`externalTrafficPolicy: Cluster`) whose status names an
//!    address inside `serviceLoadBalancerIPs` and one outside it: with
//!    `serviceLoadBalancerAggregation: Disabled` the first is advertised as a /32 from
//!    every node, the range and the address outside it from none;
//!
//! and through all of it no BGP session resets (BIRD's sessions keep their start
//! time, the agents count no flap).

mod kube_support;
mod node_support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use node_support::{has_problem, three_nodes, wait_until_fast, Node};
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
/// The API server's Service range (`integration/src/kube.rs`).
const SERVICE_RANGE: &str = "10.254.0.0/24";
const CLUSTER_IP: &str = "10.254.0.50";
const HOST: &str = "10.254.0.50/32";
/// The LoadBalancer addresses the administrator opened, one address inside and one
/// outside.
const LB_RANGE: &str = "198.51.100.0/24";
const LB_IP: &str = "198.51.100.7";
const LB_OUTSIDE: &str = "203.0.113.9";
/// How many times the endpoint moves.
const MOVES: usize = 9;
/// How long the API server stays away.
const OUTAGE: Duration = Duration::from_secs(5);
/// The target from an EndpointSlice write to the ToR's change.
const TARGET: Duration = Duration::from_millis(200);

fn addr(s: &str) -> Result<IpAddr> {
    s.parse().map_err(|_| Error::InvalidSpec(s.into()))
}

fn secs(t: Instant) -> String {
    format!("{:.1}s", t.elapsed().as_secs_f64())
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
kind: BGPConfiguration
metadata: {{name: default}}
spec:
  serviceClusterIPs: [{{cidr: {SERVICE_RANGE}}}]
  serviceLoadBalancerIPs: [{{cidr: {LB_RANGE}}}]
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
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: {CLUSTER_IP}
  internalTrafficPolicy: Local
  ports: [{{port: 80, protocol: TCP}}]
"
    )
}

/// The EndpointSlice of `default/web` with one endpoint on `node`.
fn slice(node: &str, ready: bool) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "ports": [{"port": 80, "protocol": "TCP"}],
        "endpoints": [{
            "addresses": ["10.65.7.7"],
            "nodeName": node,
            "conditions": {"ready": ready},
        }],
    })
}

/// The nodes BIRD has `prefix` from (`birdc show route PREFIX`: one path per
/// `[sv_nI …]` protocol, the I-th neighbour: n1, n2, n3).
fn tor_sources(bird: &Bird, prefix: &str) -> Result<BTreeSet<String>> {
    let out = match bird.birdc(&["show", "route", prefix]) {
        Ok(out) => out,
        // birdc fails when the table holds no route for the prefix.
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

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Waits (polling every 10 ms) until BIRD has `prefix` from exactly `from`; the time
/// it took.
fn wait_tor(bird: &Bird, prefix: &str, from: &[&str], within: Duration) -> Result<Duration> {
    let want = names(from);
    let t0 = Instant::now();
    wait_until_fast(
        within,
        &format!("BIRD: {prefix} from {want:?}"),
        || match tor_sources(bird, prefix) {
            Ok(s) if s == want => Poll::Ready(t0.elapsed()),
            Ok(s) => Poll::Pending(format!("from {s:?}")),
            Err(e) => Poll::Pending(e.to_string()),
        },
    )
}

/// BIRD's sessions and when each came up (`show protocols`: name, state, since).
fn tor_sessions(bird: &Bird) -> Result<Vec<(String, String, String)>> {
    let out = bird.birdc(&["show", "protocols"])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c.len() >= 6 && c[1] == "BGP")
                .then(|| (c[0].to_owned(), c[5].to_owned(), c[4].to_owned()))
        })
        .collect())
}

/// Every session's flap count on every node, and whether all are Established.
fn node_flaps(nodes: &[&Node]) -> Result<(u64, bool)> {
    let mut flaps = 0;
    let mut up = true;
    for n in nodes {
        let s = n.status()?;
        for p in s["peers"].as_array().cloned().unwrap_or_default() {
            flaps += p["flaps"].as_u64().unwrap_or(0);
            up &= p["state"] == "Established";
        }
    }
    Ok((flaps, up))
}

/// Writes EndpointSlices from inside the control plane's namespace (where the API
/// server's address is reachable) with one kube client kept across writes, so that a
/// write costs one request; answers with the instant the write was sent.
struct SliceWriter {
    tx: Option<mpsc::Sender<serde_json::Value>>,
    done: mpsc::Receiver<std::result::Result<Instant, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SliceWriter {
    fn start(cp: &Netns, kubeconfig: PathBuf) -> SliceWriter {
        let (tx, rx) = mpsc::channel::<serde_json::Value>();
        let (done_tx, done) = mpsc::channel();
        let ns = cp.handle();
        let thread = std::thread::spawn(move || {
            let r = ns.in_thread(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = done_tx.send(Err(format!("tokio runtime: {e}")));
                        return;
                    }
                };
                let client = match rt.block_on(client(&kubeconfig)) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = done_tx.send(Err(e));
                        return;
                    }
                };
                let api: Api<EndpointSlice> = Api::namespaced(client, "default");
                let params = PatchParams::apply("serval-test").force();
                for body in rx {
                    let sent = Instant::now();
                    let r = rt
                        .block_on(api.patch("web-1", &params, &Patch::Apply(&body)))
                        .map(|_| sent)
                        .map_err(|e| format!("EndpointSlice write: {e}"));
                    if done_tx.send(r).is_err() {
                        return;
                    }
                }
            });
            if let Err(e) = r {
                eprintln!("slice writer: {e}");
            }
        });
        SliceWriter {
            tx: Some(tx),
            done,
            thread: Some(thread),
        }
    }

    /// Writes `body`; the instant the request was sent, once the server answered.
    fn write(&self, body: serde_json::Value) -> Result<Instant> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Check("slice writer stopped".into()))?;
        tx.send(body)
            .map_err(|_| Error::Check("slice writer stopped".into()))?;
        self.done
            .recv_timeout(Duration::from_secs(30))
            .map_err(|e| Error::Check(format!("slice writer: {e}")))?
            .map_err(Error::Check)
    }
}

impl Drop for SliceWriter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn client(kubeconfig: &std::path::Path) -> std::result::Result<kube::Client, String> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| e.to_string())?;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

#[test]
fn service_addresses_follow_ready_endpoints_without_session_resets() {
    scenario("kube-services", |test| {
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
        let mut api = ApiServer::start_in(&cp.handle(), IpAddr::V4(API_ADDR), test.path())?;
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
        let writer = SliceWriter::start(&cp, api.admin_kubeconfig().to_path_buf());

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
        }
        let nodes = [&n1, &n2, &n3];
        for a in ["192.0.2.11", "192.0.2.12", "198.18.1.13"] {
            bird.wait_established(addr(a)?, Duration::from_secs(60))?;
        }
        wait_for(
            Duration::from_secs(60),
            "every session Established on every node",
            || node_flaps(&nodes),
            |(_, up)| *up,
        )?;

        // 1. The range from every node.
        wait_tor(
            &bird,
            SERVICE_RANGE,
            &["n1", "n2", "n3"],
            Duration::from_secs(30),
        )?;
        let sessions = tor_sessions(&bird)?;
        let (flaps, _) = node_flaps(&nodes)?;
        eprintln!(
            "phase 1: {SERVICE_RANGE} from n1, n2, n3 after {}; BIRD sessions {sessions:?}",
            secs(started)
        );

        // 2. The /32 only from the node with the ready endpoint.
        writer.write(slice("n1", true))?;
        wait_tor(&bird, HOST, &["n1"], Duration::from_secs(30))?;
        eprintln!(
            "phase 2: {HOST} from n1 only:\n{}",
            bird.birdc(&["show", "route", HOST, "all"])?
        );

        // 3. The endpoint moves; each move timed from the write to the ToR's change.
        let mut times = Vec::new();
        let order = ["n2", "n3", "n1"];
        for i in 0..MOVES {
            let to = order[i % order.len()];
            let sent = writer.write(slice(to, true))?;
            wait_tor(&bird, HOST, &[to], Duration::from_secs(10))?;
            times.push(sent.elapsed());
        }
        let mut sorted = times.clone();
        sorted.sort();
        let median = sorted[sorted.len() / 2];
        let max = sorted[sorted.len() - 1];
        eprintln!(
            "phase 3: {MOVES} moves, EndpointSlice write to BIRD's change: median {median:.0?}, max {max:.0?} (each: {times:.0?}; target {TARGET:?})"
        );

        // 4. Not ready: withdrawn from everywhere; ready again: back.
        writer.write(slice("n1", false))?;
        wait_tor(&bird, HOST, &[], Duration::from_secs(10))?;
        writer.write(slice("n1", true))?;
        wait_tor(&bird, HOST, &["n1"], Duration::from_secs(10))?;
        eprintln!("phase 4: not ready withdraws {HOST}, ready again brings it back");

        // 5. The API server away: the /32 stays; back: the watch follows the next move.
        api.stop_apiserver()?;
        let down = Instant::now();
        let s = wait_for(
            OUTAGE,
            "n1: the Service watch's failure in its status",
            || n1.status(),
            |s| has_problem(s, "Service watch") || has_problem(s, "EndpointSlice watch"),
        )?;
        eprintln!("n1 with the API server away: {}", s["problems"]);
        while down.elapsed() < OUTAGE {
            let from = tor_sources(&bird, HOST)?;
            assert_eq!(from, names(&["n1"]), "{HOST} kept during the outage");
            std::thread::sleep(Duration::from_millis(200));
        }
        api.start_apiserver()?;
        let back = Instant::now();
        wait_until(
            Duration::from_secs(30),
            "the EndpointSlice written again",
            || match writer.write(slice("n2", true)) {
                Ok(_) => Poll::Ready(()),
                Err(e) => Poll::Pending(e.to_string()),
            },
        )?;
        let moved = wait_until(
            Duration::from_secs(60),
            &format!("BIRD: {HOST} from n2 after the outage"),
            || match tor_sources(&bird, HOST) {
                Ok(s) if s == names(&["n2"]) => Poll::Ready(back.elapsed()),
                Ok(s) => Poll::Pending(format!("from {s:?}")),
                Err(e) => Poll::Pending(e.to_string()),
            },
        )?;
        eprintln!(
            "phase 5: {HOST} kept through a {OUTAGE:?} outage; moved to n2 {moved:.1?} after the restart"
        );

        // 6. Deleting the Service withdraws the /32; the range stays.
        api.kubectl(&["delete", "service", "web", "-n", "default"])?;
        wait_tor(&bird, HOST, &[], Duration::from_secs(10))?;
        wait_tor(
            &bird,
            SERVICE_RANGE,
            &["n1", "n2", "n3"],
            Duration::from_secs(1),
        )?;
        eprintln!("phase 6: the Service deleted, {HOST} withdrawn, {SERVICE_RANGE} kept");

        // 7. LoadBalancer addresses one by one, only inside the configured range.
        let lb = "\
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  ports: [{port: 80, protocol: TCP}]
";
        api.kubectl_stdin(&["apply", "-f", "-"], lb)?;
        let ingress = serde_json::json!({"status": {"loadBalancer": {"ingress": [
            {"ip": LB_IP}, {"ip": LB_OUTSIDE}]}}});
        api.kubectl(&[
            "patch",
            "service",
            "lb",
            "-n",
            "default",
            "--subresource=status",
            "--type=merge",
            "-p",
            &ingress.to_string(),
        ])?;
        let lb_host = format!("{LB_IP}/32");
        wait_tor(
            &bird,
            &lb_host,
            &["n1", "n2", "n3"],
            Duration::from_secs(10),
        )?;
        for absent in [LB_RANGE.to_string(), format!("{LB_OUTSIDE}/32")] {
            let from = tor_sources(&bird, &absent)?;
            assert!(from.is_empty(), "{absent} advertised by {from:?}");
        }
        eprintln!(
            "phase 7: LoadBalancer {lb_host} from every node; {LB_RANGE} (aggregation Disabled) and {LB_OUTSIDE} (outside the range) from none"
        );

        // No session reset through any of it.
        let after = tor_sessions(&bird)?;
        let (flaps_after, up) = node_flaps(&nodes)?;
        assert_eq!(after, sessions, "BIRD's sessions kept their start time");
        assert_eq!(flaps_after, flaps, "no flap counted by the agents");
        assert!(up, "every session still Established");
        // A watch that met the restarted server before its RBAC was loaded (403) retries
        // after its back-off: every problem clears.
        for n in nodes {
            wait_for(
                Duration::from_secs(60),
                &format!("{}: no problem left", n.name),
                || n.status(),
                |s| s["problems"].as_array().is_none_or(Vec::is_empty),
            )?;
        }
        assert!(
            median <= TARGET,
            "EndpointSlice write to the ToR's change: median {median:?} over the target {TARGET:?}: {times:?}"
        );
        eprintln!(
            "no session reset ({} BIRD sessions with the same start, {flaps_after} flaps on the agents); done after {}",
            after.len(),
            secs(started)
        );
        drop(writer);
        Ok(())
    });
}
