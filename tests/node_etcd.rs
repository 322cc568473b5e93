//! The node agent on etcd: two nodes on one subnet, etcd in a third namespace on the
//! same segment, the agents watching it. Blocks claimed after the agents started are
//! announced and routed through the etcd watch. Then etcd is killed: the agents keep
//! their sessions and routes and report the problem, and once etcd is back a new block
//! is routed again.

mod node_support;

use std::time::Duration;

use node_support::{block_of, has_problem, ping, serval_in, Node};
use serval_integration::{
    scenario, tools, wait_for, wait_until, Bridge, Error, Netns, NsChild, Poll, TestDir,
};

/// Two nodes and a namespace for etcd on one segment, 192.0.2.0/24: n1 .11, n2 .12,
/// etcd .2 (not started).
struct Segment {
    nodes: Vec<Node>,
    db: Netns,
    _br: Bridge,
}

const DS: &str = "etcd:http://192.0.2.2:2379";

fn segment(test: &TestDir) -> Result<Segment, Error> {
    let nodes = vec![Node::new("n1", test)?, Node::new("n2", test)?];
    let db = Netns::new()?;
    let mut br = Bridge::new()?;
    br.connect(&nodes[0].ns, "eth0")?;
    br.connect(&nodes[1].ns, "eth0")?;
    br.connect(&db, "eth0")?;
    let net = |s: &str| s.parse().map_err(|_| Error::InvalidSpec(s.into()));
    nodes[0].ns.add_addr("eth0", net("192.0.2.11/24")?)?;
    nodes[1].ns.add_addr("eth0", net("192.0.2.12/24")?)?;
    db.add_addr("eth0", net("192.0.2.2/24")?)?;
    Ok(Segment { nodes, db, _br: br })
}

/// Starts etcd in `db` with its data under the test's directory (`log`: its log's name).
fn start_etcd(test: &TestDir, db: &Netns, log: &str) -> Result<NsChild, Error> {
    let data = test.subdir("etcd-data")?.display().to_string();
    db.spawn(
        &[
            "etcd",
            "--data-dir",
            &data,
            "--listen-client-urls",
            "http://192.0.2.2:2379",
            "--advertise-client-urls",
            "http://192.0.2.2:2379",
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
        ],
        Some(&test.path().join(log)),
    )
}

#[test]
fn agents_on_etcd_mesh_and_route_new_blocks() {
    scenario("node-etcd", |test| {
        tools::require_all(&["ip", "ping", "etcd"])?;
        let Segment { mut nodes, db, _br } = segment(test)?;
        let mut etcd = start_etcd(test, &db, "etcd.log")?;
        let ds = DS;
        wait_until(Duration::from_secs(30), "etcd answers", || match serval_in(
            &nodes[0].ns,
            ds,
            &["pool", "list"],
        ) {
            Ok(_) => Poll::Ready(()),
            Err(e) => Poll::Pending(e.to_string()),
        })?;
        serval_in(
            &nodes[0].ns,
            ds,
            &[
                "pool",
                "add",
                "10.65.0.0/16",
                "--name",
                "pods",
                "--vxlan-mode",
                "cross-subnet",
            ],
        )?;
        // Two other ways to name the node address than first-found.
        nodes[0].extra = vec![
            "--ip-autodetection-method".into(),
            "can-reach=192.0.2.2".into(),
        ];
        nodes[1].extra = vec!["--ip".into(), "192.0.2.12".into()];
        for n in nodes.iter_mut() {
            n.start(ds)?;
        }
        for n in &nodes {
            let s = wait_for(
                Duration::from_secs(30),
                &format!("{}: mesh established over etcd", n.name),
                || n.status(),
                |s| {
                    s["ready"] == true
                        && s["peers"].as_array().is_some_and(|p| {
                            p.len() == 1 && p[0]["state"] == "Established" && p[0]["type"] == "mesh"
                        })
                },
            )?;
            assert_eq!(s["datastore"], ds);
            assert!(
                s["ipv4_address"]
                    .as_str()
                    .is_some_and(|a| a.ends_with("/24")),
                "address with the interface's prefix length: {}",
                s["ipv4_address"]
            );
        }
        let mut blocks = Vec::new();
        for n in nodes.iter_mut() {
            let ip = n.add_pod(ds)?;
            blocks.push(block_of(ip));
        }
        for (at, owner, gw) in [(0, 1, "192.0.2.12"), (1, 0, "192.0.2.11")] {
            let n = &nodes[at];
            let block = &blocks[owner];
            wait_until(
                Duration::from_secs(20),
                &format!("{}: direct route for {block}", n.name),
                || match n.routes() {
                    Ok(r)
                        if r.iter().any(|(d, g, dev)| {
                            d == block && g.as_deref() == Some(gw) && dev.as_deref() == Some("eth0")
                        }) =>
                    {
                        Poll::Ready(())
                    }
                    Ok(r) => Poll::Pending(format!("{r:?}")),
                    Err(e) => Poll::Pending(e.to_string()),
                },
            )?;
        }
        let to = nodes[1]
            .pod_ip
            .ok_or_else(|| Error::InvalidSpec("no pod on n2".into()))?;
        let out = ping(&nodes[0].pod, to)?;
        assert!(out.contains(" 0% packet loss"), "n1 → n2 over etcd: {out}");

        // etcd goes away: the agents keep their sessions and kernel routes and say what
        // is wrong; when it is back they carry on from where they were.
        let routes_before = [nodes[0].routes()?, nodes[1].routes()?];
        etcd.kill();
        for n in &nodes {
            let s = wait_for(
                Duration::from_secs(40),
                &format!("{}: the datastore problem in its status", n.name),
                || n.status(),
                |s| has_problem(s, "datastore"),
            )?;
            eprintln!("{} with etcd away: {}", n.name, s["problems"]);
        }
        std::thread::sleep(Duration::from_secs(3));
        for (n, before) in nodes.iter().zip(&routes_before) {
            assert_eq!(
                &n.routes()?,
                before,
                "{}: routes kept while etcd is away",
                n.name
            );
            let s = n.status()?;
            assert!(
                s["peers"]
                    .as_array()
                    .is_some_and(|p| p.iter().all(|p| p["state"] == "Established")),
                "{}: sessions kept while etcd is away: {s}",
                n.name
            );
        }
        let out = ping(&nodes[0].pod, to)?;
        assert!(
            out.contains(" 0% packet loss"),
            "n1 → n2 with etcd away: {out}"
        );

        let _etcd = start_etcd(test, &db, "etcd-2.log")?;
        // A block claimed on n2 once etcd is back reaches n1 through the resumed watch.
        wait_until(
            Duration::from_secs(30),
            "etcd answers again",
            || match serval_in(
                &nodes[1].ns,
                ds,
                &[
                    "ipam",
                    "assign",
                    "--node",
                    "n2",
                    "--handle",
                    "after-outage",
                    "--ip",
                    "10.65.99.1",
                ],
            ) {
                Ok(_) => Poll::Ready(()),
                Err(e) => Poll::Pending(e.to_string()),
            },
        )?;
        wait_until(
            Duration::from_secs(30),
            "n1: route for the block claimed after the outage",
            || match nodes[0].routes() {
                Ok(r)
                    if r.iter().any(|(d, g, _)| {
                        d == "10.65.99.0/26" && g.as_deref() == Some("192.0.2.12")
                    }) =>
                {
                    Poll::Ready(())
                }
                Ok(r) => Poll::Pending(format!("{r:?}")),
                Err(e) => Poll::Pending(e.to_string()),
            },
        )?;
        for n in &nodes {
            wait_for(
                Duration::from_secs(30),
                &format!("{}: datastore problem cleared", n.name),
                || n.status(),
                |s| !has_problem(s, "datastore"),
            )?;
        }
        Ok(())
    });
}

/// Agents started before their etcd (a cluster booting, etcd restarting with it): they
/// stay up — live, not ready, saying what they wait for — and carry on once etcd answers,
/// instead of exiting and leaving their restart to a supervisor.
#[test]
fn agents_started_before_etcd_wait_for_it() {
    scenario("node-etcd-late", |test| {
        tools::require_all(&["ip", "etcd", "curl"])?;
        let Segment { mut nodes, db, _br } = segment(test)?;
        let ds = DS;
        for n in nodes.iter_mut() {
            n.start(ds)?;
        }
        for n in &nodes {
            let s = wait_for(
                Duration::from_secs(20),
                &format!("{}: waiting for etcd in its status", n.name),
                || n.status(),
                |s| has_problem(s, "waiting for datastore etcd:http://192.0.2.2:2379"),
            )?;
            assert_eq!(
                s["ready"], false,
                "{}: ready without a datastore: {s}",
                n.name
            );
        }
        // Long enough for several tries (0.5 s, 1 s, 2 s, 4 s pauses).
        std::thread::sleep(Duration::from_secs(6));
        for n in nodes.iter_mut() {
            let agent = n.agent.as_mut().expect("started");
            assert!(
                agent.try_wait()?.is_none(),
                "{}: the agent exited while etcd was not there:\n{}",
                n.name,
                std::fs::read_to_string(n.dir.join("agent.log")).unwrap_or_default()
            );
            let (live, body) = node_support::http(&n.ns, "/healthz")?;
            assert_eq!(live, 200, "{}: not live while waiting: {body}", n.name);
            let (ready, body) = node_support::http(&n.ns, "/readyz")?;
            assert_ne!(ready, 200, "{}: ready while waiting: {body}", n.name);
            assert!(
                body.contains("datastore"),
                "{}: /readyz says {body}",
                n.name
            );
            let s = n.status()?;
            assert!(
                has_problem(&s, "try ") && has_problem(&s, "next in"),
                "{}: the status names the try and the next: {s}",
                n.name
            );
        }

        let _etcd = start_etcd(test, &db, "etcd.log")?;
        wait_until(Duration::from_secs(30), "etcd answers", || match serval_in(
            &nodes[0].ns,
            ds,
            &["pool", "add", "10.65.0.0/16", "--name", "pods"],
        ) {
            Ok(_) => Poll::Ready(()),
            Err(e) => Poll::Pending(e.to_string()),
        })?;
        // The longest pause before a try is 30 s; these tried within the first 10 s,
        // so the next try comes within 8 s of etcd starting.
        for n in &nodes {
            wait_for(
                Duration::from_secs(40),
                &format!("{}: ready and meshed once etcd answers", n.name),
                || n.status(),
                |s| {
                    s["ready"] == true
                        && !has_problem(s, "waiting")
                        && s["peers"]
                            .as_array()
                            .is_some_and(|p| p.len() == 1 && p[0]["state"] == "Established")
                },
            )?;
        }
        let (ready, body) = node_support::http(&nodes[0].ns, "/readyz")?;
        assert_eq!(ready, 200, "n1 /readyz once etcd answers: {body}");
        Ok(())
    });
}
