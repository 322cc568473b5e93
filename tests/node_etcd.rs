//! The node agent on etcd: two nodes on one subnet, etcd in a third namespace on the
//! same segment, the agents watching it. Blocks claimed after the agents started are
//! announced and routed through the etcd watch.

mod node_support;

use std::time::Duration;

use node_support::{block_of, ping, serval_in, Node};
use serval_integration::{scenario, tools, wait_for, wait_until, Bridge, Error, Netns, Poll};

#[test]
fn agents_on_etcd_mesh_and_route_new_blocks() {
    scenario("node-etcd", |test| {
        tools::require_all(&["ip", "ping", "etcd"])?;
        let mut nodes = vec![Node::new("n1", test)?, Node::new("n2", test)?];
        let db = Netns::new()?;
        let mut br = Bridge::new()?;
        br.connect(&nodes[0].ns, "eth0")?;
        br.connect(&nodes[1].ns, "eth0")?;
        br.connect(&db, "eth0")?;
        let net = |s: &str| s.parse().map_err(|_| Error::InvalidSpec(s.into()));
        nodes[0].ns.add_addr("eth0", net("192.0.2.11/24")?)?;
        nodes[1].ns.add_addr("eth0", net("192.0.2.12/24")?)?;
        db.add_addr("eth0", net("192.0.2.2/24")?)?;
        let data = test.subdir("etcd-data")?;
        let data = data.display().to_string();
        let _etcd = db.spawn(
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
            Some(&test.path().join("etcd.log")),
        )?;
        let ds = "etcd:http://192.0.2.2:2379";
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
        Ok(())
    });
}
