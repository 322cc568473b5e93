//! `serval lab` end to end, as the README runs it: nodes in namespaces on two subnets, one
//! agent each on an embedded store, a real BIRD or FRR top-of-rack router, pods wired by
//! the CNI plugin. VXLAN across subnets on this machine's kernel (no ipip); IP-in-IP
//! inside the project's User-Mode Linux runner; and the same lab on a real kube-apiserver
//! (`--datastore kubernetes`).
//!
//! Needs root, bird2, frr, iproute2, nftables, openssl, the CNI plugin built beside serval
//! (`cargo build --bins`) and the control plane `integration/k8s/build.sh` builds. The
//! lab's namespaces have fixed names, so these tests run one at a time.

mod lab_support;

use lab_support::{cni_plugin_built, lab_namespaces, routes, serval, Lab};
use serval_integration::uml::Uml;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

static ONE_LAB: Mutex<()> = Mutex::new(());

/// The devices serval's routes in `netns` use for destinations other than blackholes.
fn route_devices(netns: &str) -> Vec<(String, String)> {
    routes(netns)
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] != "blackhole")
        .map(|r| {
            (
                r["dst"].as_str().unwrap_or_default().to_string(),
                r["dev"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Processes whose command line mentions `dir` (agents, BIRD, etcd, kube-apiserver).
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// The `kubectl: …` command line the report prints, split into its words.
fn printed_kubectl(text: &str) -> Vec<String> {
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("kubectl: "))
        .unwrap_or_else(|| panic!("the report names no kubectl command:\n{text}"));
    line.split_whitespace().map(str::to_string).collect()
}

fn check_report(text: &str) {
    assert!(text.contains("all checks passed"), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    assert!(text.contains("same subnet, direct"), "{text}");
}

#[test]
fn lab_with_bird_tor_crosses_subnets_over_vxlan() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, text) = Lab::up(&[]);
    check_report(&text);
    assert!(
        text.contains("no IP-in-IP (ipip) support"),
        "the lab must say why it uses VXLAN: {text}"
    );
    assert!(text.contains("across subnets, VXLAN"), "{text}");
    assert!(
        text.contains("masqueraded"),
        "egress through natOutgoing: {text}"
    );
    // node1 and node2 share 10.10.1.0/24: direct routes on eth0, no tunnel device;
    // node3 is on 10.10.2.0/24: through the VXLAN device.
    let devs = route_devices("svlab-node1");
    assert!(
        devs.iter().any(|(_, d)| d == "eth0"),
        "node1 has no direct route: {devs:?}"
    );
    assert!(
        devs.iter().any(|(_, d)| d.starts_with("vxlan")),
        "node1 has no VXLAN route: {devs:?}"
    );
    // The ToR learned every node's blocks with the node as next hop (one of the paths
    // BIRD holds for the block), and installed a route for each in its kernel.
    let ctl = lab.dir().join("lab/tor/bird.ctl");
    let tor_kernel = Command::new("ip")
        .args([
            "-n",
            "svlab-tor",
            "-j",
            "route",
            "show",
            "root",
            "10.244.0.0/16",
        ])
        .output()
        .expect("ip route on the ToR");
    let tor_kernel: serde_json::Value = serde_json::from_slice(&tor_kernel.stdout).expect("json");
    for (node, addr) in [
        ("svlab-node1", "10.10.1.11"),
        ("svlab-node2", "10.10.1.12"),
        ("svlab-node3", "10.10.2.11"),
    ] {
        let blocks: Vec<String> = routes(node)
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["type"] == "blackhole")
            .filter_map(|r| r["dst"].as_str().map(str::to_string))
            .collect();
        assert!(!blocks.is_empty(), "{node} has no block of its own");
        for block in blocks {
            let shown = Command::new("ip")
                .args(["netns", "exec", "svlab-tor", "birdc", "-s"])
                .arg(&ctl)
                .args(["show", "route", &block])
                .output()
                .expect("birdc");
            let shown = String::from_utf8_lossy(&shown.stdout);
            assert!(
                shown.contains(&format!("via {addr} ")),
                "the ToR has no path for {node}'s block {block} via {addr}:\n{shown}"
            );
            assert!(
                tor_kernel
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["dst"] == block.as_str()),
                "the ToR's kernel has no route for {block}: {tor_kernel}"
            );
        }
    }
    // `lab status` prints the same report again.
    let status = Command::new(serval())
        .args(["lab", "status", "--dir"])
        .arg(lab.dir().join("lab"))
        .output()
        .expect("lab status");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    check_report(&String::from_utf8_lossy(&status.stdout));
}

#[test]
fn lab_with_frr_tor() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let (_lab, text) = Lab::up(&["--tor", "frr", "--pods", "1"]);
    check_report(&text);
    assert!(text.contains("across subnets, VXLAN"), "{text}");
}

/// Inside a kernel with ipip: the same lab with IP-in-IP across subnets. The guest's
/// nftables lacks the ip family, so masquerading is left to the host-kernel test.
#[test]
fn lab_crosses_subnets_over_ipip_inside_uml() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    cni_plugin_built();
    let dir = tempfile::Builder::new()
        .prefix("serval-lab-uml")
        .tempdir()
        .expect("temp dir");
    let labdir = dir.path().join("lab");
    let labdir = labdir.to_string_lossy();
    let exe = serval();
    let exe = exe.to_string_lossy();
    let script = format!(
        "{exe} lab up --dir {labdir} --encap ipip --no-nat --pods 1; rc=$?; {exe} lab down --dir {labdir} >/dev/null; exit $rc"
    );
    let run = Uml::new()
        .unwrap_or_else(|e| panic!("{e}"))
        .mem("1G")
        .timeout(std::time::Duration::from_secs(240))
        .run(&["sh", "-c", &script])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        run.success(),
        "lab inside UML (status {}):\n{}",
        run.status,
        run.output
    );
    check_report(&run.output);
    assert!(
        run.output.contains("across subnets, IP-in-IP"),
        "{}",
        run.output
    );
}

/// The lab on a real kube-apiserver: the same pings, and what the agents and the CNI
/// plugin did is in the API server, where the printed kubectl command shows it; `lab
/// down` leaves no namespace, process or file behind.
#[test]
fn lab_on_kubernetes_datastore() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let started = std::time::Instant::now();
    let (mut lab, text) = Lab::up(&["--datastore", "kubernetes", "--pods", "1"]);
    let up = started.elapsed();
    check_report(&text);
    assert!(text.contains("across subnets, VXLAN"), "{text}");
    assert!(text.contains("masqueraded"), "{text}");
    let labdir = lab.dir().join("lab");
    let kubeconfig = labdir.join("kube/admin.kubeconfig");
    assert!(
        text.contains(&format!(
            "kubeconfig (cluster admin): {}",
            kubeconfig.display()
        )),
        "{text}"
    );

    // The printed command, with -o json: every node registered, the pool, and each
    // node's block holding its pod.
    let mut argv = printed_kubectl(&text);
    assert!(
        argv.contains(&"servalnodes,ippools,ipamblocks".to_string()),
        "{argv:?}"
    );
    argv.extend(["-o".into(), "json".into()]);
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .expect("running the printed kubectl command");
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("kubectl json");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let of_kind = |kind: &str| -> Vec<serde_json::Value> {
        items
            .iter()
            .filter(|o| o["kind"] == kind)
            .cloned()
            .collect()
    };
    let mut nodes: Vec<String> = of_kind("ServalNode")
        .iter()
        .map(|n| {
            n["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["node1", "node2", "node3"], "{list}");
    for n in of_kind("ServalNode") {
        // From the Node's InternalIP, with the prefix of the interface that holds it.
        let addr = n["spec"]["bgp"]["ipv4Address"].as_str().unwrap_or_default();
        assert!(addr.starts_with("10.10.") && addr.ends_with("/24"), "{n}");
    }
    let pools = of_kind("IPPool");
    assert_eq!(pools.len(), 1, "{list}");
    assert_eq!(pools[0]["metadata"]["name"], "lab-pool");
    assert_eq!(pools[0]["spec"]["cidr"], "10.244.0.0/16");
    assert_eq!(pools[0]["spec"]["vxlanMode"], "CrossSubnet");
    for node in ["node1", "node2", "node3"] {
        let in_use = of_kind("IPAMBlock").into_iter().any(|b| {
            b["spec"]["affinity"] == node
                && b["spec"]["allocations"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| !x.is_null()))
                && b["spec"]["attributes"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|x| x["pod"] == format!("{node}-pod1").as_str())
                })
        });
        assert!(in_use, "no block of {node} holds its pod: {list}");
        // The node's own block in its kernel is the one in the API server.
        let blackholes: Vec<String> = routes(&format!("svlab-{node}"))
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["type"] == "blackhole")
            .filter_map(|r| r["dst"].as_str().map(str::to_string))
            .collect();
        for b in &blackholes {
            assert!(
                of_kind("IPAMBlock")
                    .iter()
                    .any(|x| x["spec"]["cidr"] == b.as_str() && x["spec"]["affinity"] == node),
                "{node}'s block {b} is not in the API server: {list}"
            );
        }
    }

    // `lab status` prints the report again, the API server's part included.
    let status = Command::new(serval())
        .args(["lab", "status", "--dir"])
        .arg(&labdir)
        .output()
        .expect("lab status");
    let status_text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{status_text}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    check_report(&status_text);
    assert!(status_text.contains("IPAMBlock"), "{status_text}");

    // Down: no namespace, no process of the lab (agents, BIRD, etcd, kube-apiserver),
    // no file.
    let t = std::time::Instant::now();
    lab.down();
    let down = t.elapsed();
    assert_eq!(lab_namespaces(), Vec::<String>::new());
    assert_eq!(processes_using(&labdir), Vec::<String>::new());
    assert!(!labdir.exists(), "{} is left", labdir.display());
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let kubectl_cache = Path::new(&home).join(".kube/cache/discovery/10.10.100.10_6443");
    assert!(
        !kubectl_cache.exists(),
        "kubectl cached the lab's API server in {}",
        kubectl_cache.display()
    );
    eprintln!(
        "lab on kubernetes: up and checked in {:.1} s, down in {:.1} s",
        up.as_secs_f64(),
        down.as_secs_f64()
    );
}

/// `serval lab up --datastore kubernetes` killed once its API server runs (a crash: no
/// clean-up of its own): `serval lab down` still ends etcd, kube-apiserver and whatever
/// else had started, and removes every file.
#[test]
fn lab_down_after_a_crash_on_kubernetes() {
    use std::io::BufRead as _;
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    cni_plugin_built();
    let dir = tempfile::Builder::new()
        .prefix("serval-lab-crash")
        .tempdir()
        .expect("temp dir");
    let labdir = dir.path().join("lab");
    let mut lab = Lab::adopt(dir);
    let mut up = Command::new(serval())
        .args([
            "lab",
            "up",
            "--datastore",
            "kubernetes",
            "--nodes",
            "2",
            "--subnets",
            "1",
        ])
        .arg("--dir")
        .arg(&labdir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serval lab up");
    let stdout = up.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("lab up output");
        let ready = line.starts_with("kube-apiserver ") && line.contains(" ready at ");
        seen.push(line);
        if ready {
            break;
        }
    }
    up.kill().expect("killing serval lab up");
    let _ = up.wait();
    assert!(
        seen.last().is_some_and(|l| l.contains(" ready at ")),
        "lab up ended before its API server was ready:\n{}",
        seen.join("\n")
    );
    let running = processes_using(&labdir);
    assert!(
        running.iter().any(|p| p.contains("kube-apiserver"))
            && running.iter().any(|p| p.contains("etcd")),
        "the control plane is not running after the crash: {running:?}"
    );
    lab.down();
    assert_eq!(lab_namespaces(), Vec::<String>::new());
    assert_eq!(processes_using(&labdir), Vec::<String>::new());
    assert!(!labdir.exists(), "{} is left", labdir.display());
}

/// Without the control plane's binaries the lab says which command builds them, and
/// makes nothing.
#[test]
fn lab_on_kubernetes_names_the_build_when_the_binaries_are_missing() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let labdir = dir.path().join("lab");
    let out = Command::new(serval())
        .args(["lab", "up", "--datastore", "kubernetes", "--dir"])
        .arg(&labdir)
        .env("SERVAL_K8S_DIR", dir.path().join("no-such-dir"))
        .output()
        .expect("serval lab up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("sh integration/k8s/build.sh"), "{stderr}");
    assert!(stderr.contains("scripts/setup.sh"), "{stderr}");
    assert!(!labdir.exists());
    assert_eq!(lab_namespaces(), Vec::<String>::new());
}
