//! A local user against serval's files and sockets.
//!
//! - The file datastore and its lock, the CNI plugin's node lock and its log are the
//!   owner's alone (0600): an unprivileged process can neither read the BGP passwords
//!   in the store nor open a lock file to hold it. A directory serval creates is 0700.
//! - A lock held anyway (by root here: a stuck process; no other user can open it any
//!   more) ends a CNI ADD with error 11 ("try again later") within the lock's bound, and
//!   the agent's writes fail with an error naming the lock instead of blocking its loop:
//!   `/healthz` stays 200 for longer than the liveness limit, `serval node status`
//!   reports the busy lock, and everything resumes once it is released.
//! - The agent's control sockets (`serval node status`, `serval bgp status`) refuse an
//!   unprivileged user.
//! - No `Debug` output of a type that holds a BGP password shows it.
//!
//! Acting as an unprivileged user needs util-linux's `setpriv` (or `runuser`).

mod hostile_support;
mod node_support;

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hostile_support::{expect_mode, one_node, open_dir, refused_to_nobody};
use node_support::{apply, cni_plugin, has_problem, http, serval, store_with_pool, Node};
use serval_integration::{holds_for, scenario, wait_for, Error, Netns, Result};

/// A BGP password as an operator writes it into a BGPPeer.
const PASSWORD: &str = "hunter2-tor-md5";

fn peer_yaml() -> String {
    format!(
        "apiVersion: serval.dev/v1\nkind: BGPPeer\nmetadata: {{name: tor}}\n\
         spec: {{peerIP: 192.0.2.1, asNumber: 65000, password: {{value: {PASSWORD}}}}}\n"
    )
}

#[test]
fn unprivileged_user_cannot_read_or_lock_the_file_store() {
    scenario("hostile-store-files", |test| {
        // As the DaemonSet's hostPath leaves /var/lib/serval: 0755, root's.
        let dir = test.subdir("var-lib-serval")?;
        open_dir(test.path())?;
        open_dir(&dir)?;
        let path = dir.join("ipam.json");
        let store = format!("file:{}", path.display());
        serval(&store, &["pool", "add", "10.65.0.0/16", "--name", "pods"])?;
        apply(&store, test, "peer.yaml", &peer_yaml())?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::InvalidSpec(format!("{}: {e}", path.display())))?;
        if !text.contains(PASSWORD) {
            return Err(Error::InvalidSpec(
                "the store should hold the BGPPeer's password".into(),
            ));
        }
        let lock = dir.join("ipam.json.lock");
        expect_mode(&path, 0o600)?;
        expect_mode(&lock, 0o600)?;
        let (path_s, lock_s) = (path.display().to_string(), lock.display().to_string());
        refused_to_nobody(&["cat", &path_s], "read the store and its BGP passwords")?;
        refused_to_nobody(
            &["flock", "-n", "-x", &lock_s, "true"],
            "hold the store's lock",
        )?;
        refused_to_nobody(
            &["flock", "-n", "-s", &lock_s, "true"],
            "hold the store's lock",
        )?;

        // A directory serval makes for its store is 0700, parents included.
        let fresh = test.path().join("fresh");
        let nested = fresh.join("state/ipam.json");
        serval(
            &format!("file:{}", nested.display()),
            &["pool", "add", "10.66.0.0/16", "--name", "pods"],
        )?;
        expect_mode(&fresh, 0o700)?;
        expect_mode(&fresh.join("state"), 0o700)?;
        expect_mode(&nested, 0o600)?;
        Ok(())
    });
}

/// The network configuration of `n`'s pods, with the plugin's lock and log in the
/// node's directory (0755, like /run/serval and /var/log/serval on a node).
fn cni_config(store: &str, n: &Node) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "serval",
        "datastore": store,
        "nodename": n.name,
        "mtu_file": n.dir.join("mtu"),
        "ready_file": n.dir.join("ready"),
        "ipam_lock_file": n.dir.join("ipam.lock"),
        "log_file_path": n.dir.join("cni.log"),
        "ipam": {"type": "serval-ipam", "assign_ipv4": true, "assign_ipv6": false},
    })
}

/// What one CNI ADD ended with: its exit status, what it printed, how long it took.
struct Add {
    ok: bool,
    result: serde_json::Value,
    took: Duration,
}

/// A CNI ADD of `container` into `pod` on node `n`, killed (and failed) if it has not
/// answered within `deadline`.
fn cni_add(
    n: &Node,
    pod: &Netns,
    container: &str,
    config: &serde_json::Value,
    deadline: Duration,
) -> Result<Add> {
    let plugin = cni_plugin()?;
    let t0 = Instant::now();
    let mut child =
        n.ns.handle()
            .command(&plugin.display().to_string())
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", format!("/run/netns/{}", pod.name()))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni:/opt/cni/bin")
            .env(
                "CNI_ARGS",
                format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={container}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::InvalidSpec(format!("running {}: {e}", plugin.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(config.to_string().as_bytes())
            .map_err(|e| Error::InvalidSpec(format!("CNI stdin: {e}")))?;
    }
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if t0.elapsed() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::InvalidSpec(format!(
                    "CNI ADD of {container} did not answer within {deadline:?}: it hangs on a lock"
                )));
            }
            Err(e) => return Err(Error::InvalidSpec(format!("waiting for the plugin: {e}"))),
        }
    }
    let took = t0.elapsed();
    let out = child
        .wait_with_output()
        .map_err(|e| Error::InvalidSpec(format!("the plugin's output: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let result = serde_json::from_str(&text).map_err(|e| {
        Error::InvalidSpec(format!(
            "CNI ADD printed {text:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    })?;
    Ok(Add {
        ok: out.status.success(),
        result,
        took,
    })
}

/// The file store's bound for the assignment and the release of the partial allocation,
/// with room for a loaded machine.
const CNI_BOUND: Duration = Duration::from_secs(2 * ipam::store::file::LOCK_TIMEOUT.as_secs() + 10);

#[test]
fn a_held_store_lock_ends_in_try_again_and_the_agent_stays_healthy() {
    scenario("hostile-held-lock", |test| {
        open_dir(test.path())?;
        let store = store_with_pool(test, &[])?;
        let mut n1 = one_node(test, "n1")?;
        let pod = Netns::new()?;
        let config = cni_config(&store, &n1);

        // Held by root (a stuck process): no other user can open the lock any more.
        let lock_path = test.path().join("ipam.json.lock");
        let held = std::fs::File::options()
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::InvalidSpec(format!("{}: {e}", lock_path.display())))?;
        held.lock()
            .map_err(|e| Error::InvalidSpec(format!("locking {}: {e}", lock_path.display())))?;
        let held_since = Instant::now();

        n1.start(&store)?;
        // The agent cannot register; it says why, and its loop goes on.
        wait_for(
            Duration::from_secs(40),
            "the agent to report the busy store lock",
            || n1.status(),
            |s| has_problem(s, "stayed busy"),
        )?;

        let add = cni_add(&n1, &pod, "held-lock", &config, CNI_BOUND * 2)?;
        let code = add.result["code"].as_i64();
        if add.ok || code != Some(11) || add.took > CNI_BOUND {
            return Err(Error::InvalidSpec(format!(
                "CNI ADD under a held lock: expected error 11 within {CNI_BOUND:?}, got {} after {:?}",
                add.result, add.took
            )));
        }
        eprintln!(
            "CNI ADD under a held store lock: code 11 after {:.1?}",
            add.took
        );

        // Live for longer than the liveness limit with the lock still held.
        let live_until = held_since + serval::node::health::STUCK_AFTER + Duration::from_secs(5);
        holds_for(
            live_until.saturating_duration_since(Instant::now()),
            "/healthz to answer 200 while the store lock is held",
            || http(&n1.ns, "/healthz"),
            |(code, _)| *code == 200,
        )?;
        let status = n1.status()?;
        if !has_problem(&status, "ipam.json.lock") {
            return Err(Error::InvalidSpec(format!(
                "the status should name the busy lock: {}",
                status["problems"]
            )));
        }

        drop(held);
        let add = cni_add(&n1, &pod, "after", &config, CNI_BOUND)?;
        if !add.ok {
            return Err(Error::InvalidSpec(format!(
                "CNI ADD after the lock was released failed: {}",
                add.result
            )));
        }
        // The pod's write reaches the agent's watch, and its next reconcile registers.
        wait_for(
            Duration::from_secs(45),
            "the agent to register once the lock is free",
            || n1.status(),
            |s| !has_problem(s, "stayed busy"),
        )?;

        // The plugin's own files: root's alone.
        for f in ["ipam.lock", "cni.log"] {
            let p = n1.dir.join(f);
            expect_mode(&p, 0o600)?;
            let s = p.display().to_string();
            refused_to_nobody(&["flock", "-n", "-x", &s, "true"], &format!("open {f}"))?;
        }
        Ok(())
    });
}

#[test]
fn unprivileged_user_cannot_use_the_control_sockets() {
    scenario("hostile-sockets", |test| {
        open_dir(test.path())?;
        let store = store_with_pool(test, &[])?;
        let mut n1 = one_node(test, "n1")?;
        n1.start(&store)?;
        wait_for(
            Duration::from_secs(30),
            "the agent's status socket",
            || n1.status(),
            |_| true,
        )?;
        let bin = node_support::serval_bin().display().to_string();
        for (sock, cmd) in [("node.sock", "node"), ("bgp.sock", "bgp")] {
            let path = n1.dir.join(sock);
            expect_mode(&path, 0o600)?;
            let p = path.display().to_string();
            let said = refused_to_nobody(
                &[&bin, cmd, "status", "--socket", &p],
                &format!("talk to the agent over {sock}"),
            )?;
            if !said.contains("ermission denied") {
                return Err(Error::InvalidSpec(format!(
                    "{sock}: expected a permission error, got: {said}"
                )));
            }
        }
        Ok(())
    });
}

fn leaks(what: &str, text: &str, secret: &str) -> Option<String> {
    text.contains(secret)
        .then(|| format!("{what} shows the password: {text}"))
}

#[test]
fn passwords_stay_out_of_debug_output() {
    use bgp::config::PeerConfig;
    use bgp::transport::TransportOptions;
    use serval::node::desired::{desired, Snapshot};
    use serval::resources::common::BgpPassword;
    use serval::resources::Spec;

    let mut problems = Vec::new();
    let mut peer = PeerConfig::new("192.0.2.1".parse().unwrap(), bgp::Asn(65000));
    peer.password = Some(PASSWORD.into());
    problems.extend(leaks("PeerConfig", &format!("{peer:?}"), PASSWORD));
    problems.extend(leaks(
        "PeerConfig (pretty)",
        &format!("{peer:#?}"),
        PASSWORD,
    ));
    if !format!("{peer:?}").contains("password: Some(<redacted>)") {
        problems.push(format!("PeerConfig should say a password is set: {peer:?}"));
    }
    let transport = TransportOptions {
        md5_key: Some(PASSWORD.as_bytes().to_vec()),
        ..TransportOptions::default()
    };
    let bytes = format!("{:?}", PASSWORD.as_bytes());
    problems.extend(leaks(
        "TransportOptions",
        &format!("{transport:?}"),
        PASSWORD,
    ));
    problems.extend(leaks(
        "TransportOptions",
        &format!("{transport:?}"),
        &bytes[1..bytes.len() - 1],
    ));
    let pw = BgpPassword {
        value: Some(PASSWORD.into()),
        ..BgpPassword::default()
    };
    problems.extend(leaks("BgpPassword", &format!("{pw:?}"), PASSWORD));

    // Resources as parsed from YAML, and the agent's snapshot and decisions.
    let docs = format!(
        "{}---\napiVersion: serval.dev/v1\nkind: BGPConfiguration\nmetadata: {{name: default}}\n\
         spec: {{nodeMeshPassword: {{value: {PASSWORD}}}}}\n",
        peer_yaml()
    );
    let parsed = serval::resources::document::parse(&docs).expect("the YAML parses");
    problems.extend(leaks("ClusterResource", &format!("{parsed:?}"), PASSWORD));
    let mut snap = Snapshot {
        node: "n1".into(),
        ..Snapshot::default()
    };
    for r in parsed {
        match r.spec {
            Spec::BgpPeer(p) => {
                snap.peers.insert(r.name.to_string(), p);
            }
            Spec::BgpConfiguration(c) => snap.config = c,
            _ => {}
        }
    }
    snap.password_files
        .insert("/etc/serval/tor.password".into(), PASSWORD.into());
    problems.extend(leaks("Snapshot", &format!("{snap:?}"), PASSWORD));
    let d = desired(&snap);
    problems.extend(leaks("Desired", &format!("{d:?}"), PASSWORD));

    let mut etcd = ipam::store::select::EtcdConfig::new(vec!["http://127.0.0.1:2379".into()]);
    etcd.password = Some(PASSWORD.into());
    problems.extend(leaks("EtcdConfig", &format!("{etcd:?}"), PASSWORD));

    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
