//! BFD in the lab, measured: `serval lab up --tors 2 --bfd` (two BIRD ToRs on one switch,
//! every node peering with both, the outside host running BIRD with a multipath route
//! through both; BFD 100 ms × 3 on the node-to-node mesh, the nodes' sessions to the ToRs
//! and the ToRs' sessions to the outside host).
//!
//! - A node cut off from the network (nftables in its namespace drops everything on its
//!   links; nothing is closed, no link goes down) is noticed by both ToRs and by the other
//!   nodes, and its pod blocks leave every kernel (the ToRs', the other nodes', the
//!   outside host's), within a second. Each observer's times are printed.
//! - A pod pings the outside host every 10 ms while one ToR, then the other, is cut off
//!   the same way: fewer than 100 replies may be lost per cut. The counts are printed.
//!
//! Needs root, bird2, iproute2, nftables, iputils-ping and the CNI plugin built beside
//! serval (`cargo build --bins`). The lab's namespaces have fixed names, so these tests
//! run one at a time (and never beside `tests/lab.rs`, which cargo runs as another
//! binary, one after the other).

mod lab_support;

use lab_support::{routes, serval, Lab};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_LAB: Mutex<()> = Mutex::new(());

/// The target of the issue: noticed, and routes gone everywhere, within a second.
const DETECTION_TARGET: Duration = Duration::from_secs(1);
/// Lost replies of a 10 ms ping while one ToR is cut off.
const LOSS_TARGET: u64 = 100;

const NODE3: &str = "svlab-node3";
const NODE3_ADDR: &str = "10.10.2.11";
const TORS: [&str; 2] = ["svlab-tor", "svlab-tor2"];
const EXT: &str = "svlab-ext";
const EXT_ADDR: &str = "10.10.99.10";

fn tool(name: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "{name} is needed: apt-get install {package}");
}

fn tools() {
    for (name, package) in [
        ("bird", "bird2"),
        ("birdc", "bird2"),
        ("nft", "nftables"),
        ("ping", "iputils-ping"),
        ("ip", "iproute2"),
    ] {
        tool(name, package);
    }
}

/// Everything on the namespace's links dropped, in and out and through; loopback spared.
/// Nothing is closed and every link stays up: to the rest of the lab the namespace has
/// gone silent, as a hung or unplugged machine does.
fn cut(netns: &str) {
    let rules = "table inet svlab_cut {\n\
         chain input { type filter hook input priority -400; policy drop; iifname \"lo\" accept; }\n\
         chain forward { type filter hook forward priority -400; policy drop; }\n\
         chain output { type filter hook output priority -400; policy drop; oifname \"lo\" accept; }\n\
         }\n";
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft (nftables)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .expect("writing the rules");
    assert!(
        child.wait().expect("nft").success(),
        "nft in {netns} failed"
    );
}

fn restore(netns: &str) {
    let ok = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "nft",
            "delete",
            "table",
            "inet",
            "svlab_cut",
        ])
        .status()
        .expect("nft");
    assert!(ok.success(), "removing the cut in {netns} failed");
}

fn output(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn bird_ctl(lab: &Lab, netns: &str) -> String {
    let sub = match netns {
        "svlab-tor" => "tor",
        "svlab-tor2" => "tor2",
        _ => "ext",
    };
    lab.path()
        .join(sub)
        .join("bird.ctl")
        .to_string_lossy()
        .into_owned()
}

/// BIRD's state of one BGP protocol (`Established`, `Active`, …).
fn bird_session(lab: &Lab, netns: &str, protocol: &str) -> String {
    let ctl = bird_ctl(lab, netns);
    let text = output(&[
        "ip",
        "netns",
        "exec",
        netns,
        "birdc",
        "-s",
        &ctl,
        "show",
        "protocols",
        protocol,
    ]);
    text.lines()
        .find(|l| l.starts_with(protocol))
        .and_then(|l| l.split_whitespace().nth(5))
        .unwrap_or("")
        .to_string()
}

fn bird_all_established(lab: &Lab, netns: &str) -> bool {
    let ctl = bird_ctl(lab, netns);
    let text = output(&[
        "ip",
        "netns",
        "exec",
        netns,
        "birdc",
        "-s",
        &ctl,
        "show",
        "protocols",
    ]);
    let bgp: Vec<&str> = text.lines().filter(|l| l.contains(" BGP ")).collect();
    !bgp.is_empty() && bgp.iter().all(|l| l.contains("Established"))
}

/// Destinations of the kernel routes in `netns` (all protocols), with their next hops.
fn kernel_routes(netns: &str) -> Vec<(String, usize)> {
    let text = output(&["ip", "-n", netns, "-j", "route", "show"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::json!([]));
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] != "blackhole")
        .map(|r| {
            let hops = r["nexthops"].as_array().map_or(1, Vec::len);
            (r["dst"].as_str().unwrap_or_default().to_string(), hops)
        })
        .collect()
}

fn has_route_to_any(netns: &str, blocks: &[String]) -> bool {
    kernel_routes(netns)
        .iter()
        .any(|(dst, _)| blocks.contains(dst))
}

/// Paths of the kernel route for `dst` in `netns` (0 without one).
fn paths_of(netns: &str, dst: &str) -> usize {
    kernel_routes(netns)
        .into_iter()
        .find(|(d, _)| d == dst)
        .map_or(0, |(_, n)| n)
}

/// A node's view of its session with `peer`.
fn peer_state(lab: &Lab, node: &str, peer: &str) -> String {
    let sock = lab.path().join(node).join("node.sock");
    let out = Command::new(serval())
        .args(["node", "status", "--json", "--socket"])
        .arg(&sock)
        .output()
        .expect("serval node status");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["address"] == peer)
        .map(|p| p["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn all_peers_established(lab: &Lab, node: &str) -> bool {
    let v = lab.status(node);
    let peers = v["peers"].as_array().cloned().unwrap_or_default();
    // Two other nodes and two ToRs.
    peers.len() == 4 && peers.iter().all(|p| p["state"] == "Established")
}

/// Poll `cond` every 10 ms until it holds or `limit` passes; the time since `since`.
fn first_true(since: Instant, limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let deadline = since + limit;
    loop {
        if cond() {
            return Some(since.elapsed());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    let t = Instant::now();
    assert!(
        first_true(t, limit, cond).is_some(),
        "timed out after {limit:?} waiting for {what}"
    );
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".into(), |d| format!("{} ms", d.as_millis()))
}

#[test]
fn a_node_cut_off_is_noticed_and_its_routes_gone_everywhere_within_a_second() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    tools();
    let (lab, text) = Lab::up(&["--tors", "2", "--bfd", "--pods", "1"]);
    assert!(text.contains("all checks passed"), "{text}");
    let blocks: Vec<String> = routes(NODE3)
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == "blackhole")
        .filter_map(|r| r["dst"].as_str().map(str::to_string))
        .collect();
    assert!(!blocks.is_empty(), "node3 has no block");
    let observers: Vec<&str> = vec!["svlab-tor", "svlab-tor2", "svlab-node1", "svlab-node2", EXT];
    for o in &observers {
        assert!(
            has_route_to_any(o, &blocks),
            "{o} has no route to node3's blocks {blocks:?} before the cut"
        );
    }

    let limit = Duration::from_secs(15);
    let cut_at = Instant::now();
    cut(NODE3);
    let results: BTreeMap<String, (Option<Duration>, Option<Duration>)> = std::thread::scope(|s| {
        let handles: Vec<_> = observers
            .iter()
            .map(|o| {
                let (lab, blocks) = (&lab, &blocks);
                s.spawn(move || {
                    let noticed = match *o {
                        "svlab-tor" | "svlab-tor2" => first_true(cut_at, limit, || {
                            bird_session(lab, o, "node3") != "Established"
                        }),
                        EXT => None,
                        node => {
                            let name = node.trim_start_matches("svlab-");
                            first_true(cut_at, limit, || {
                                peer_state(lab, name, NODE3_ADDR) != "Established"
                            })
                        }
                    };
                    let gone = first_true(cut_at, limit, || !has_route_to_any(o, blocks));
                    (o.to_string(), (noticed, gone))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("observer"))
            .collect()
    });
    eprintln!("node3 cut off (BFD 100 ms x 3): time from the cut");
    eprintln!(
        "  {:<12} {:>16} {:>22}",
        "observer", "session down", "node3's routes gone"
    );
    for (o, (noticed, gone)) in &results {
        eprintln!(
            "  {:<12} {:>16} {:>22}",
            o,
            if o == EXT {
                "(no session)".into()
            } else {
                ms(*noticed)
            },
            ms(*gone)
        );
    }
    for (o, (noticed, gone)) in &results {
        if o != EXT {
            assert!(
                noticed.is_some_and(|d| d <= DETECTION_TARGET),
                "{o} noticed the cut after {}, target {DETECTION_TARGET:?}",
                ms(*noticed)
            );
        }
        assert!(
            gone.is_some_and(|d| d <= DETECTION_TARGET),
            "{o} still routed to node3's blocks after {}, target {DETECTION_TARGET:?}",
            ms(*gone)
        );
    }
    restore(NODE3);
}

/// Ping the outside host from `pod` every 10 ms while `tor` is cut off: the replies lost,
/// of how many pings.
fn lost_while_cut(pod: &str, tor: &str) -> (u64, u64) {
    let ping = Command::new("ip")
        .args([
            "netns", "exec", pod, "ping", "-q", "-i", "0.01", "-c", "500", "-W", "1", EXT_ADDR,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ping (iputils-ping)");
    // A second of clean traffic, the cut, and the ToR kept off for the rest (about 4 s).
    std::thread::sleep(Duration::from_secs(1));
    cut(tor);
    let out = ping.wait_with_output().expect("ping");
    restore(tor);
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    let num = |word: &str| -> u64 {
        let words: Vec<&str> = summary
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .collect();
        words
            .iter()
            .position(|w| *w == word)
            .and_then(|i| words.get(i.wrapping_sub(1)))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no '{word}' count in {summary}"))
    };
    let sent = num("packets");
    let received = num("received");
    assert!(sent >= 400, "ping sent only {sent}: {summary}");
    (sent - received, sent)
}

/// Both ToRs carry the traffic again: their sessions, the outside host's, node1's
/// multipath route out and the outside host's multipath route back.
fn wait_both_tors(lab: &Lab) {
    let limit = Duration::from_secs(60);
    for tor in TORS {
        wait_for(&format!("{tor}'s sessions up"), limit, || {
            bird_all_established(lab, tor)
        });
    }
    wait_for("the outside host's sessions up", limit, || {
        bird_all_established(lab, EXT)
    });
    wait_for("node1's sessions up", limit, || {
        all_peers_established(lab, "node1")
    });
    wait_for("node1's route out through both ToRs", limit, || {
        paths_of("svlab-node1", "10.10.99.0/24") == 2
    });
    wait_for(
        "the outside host's route back through both ToRs",
        limit,
        || paths_of(EXT, "10.10.1.0/24") == 2,
    );
}

#[test]
fn a_pod_keeps_reaching_the_outside_host_when_a_tor_is_cut_off() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    tools();
    let (lab, text) = Lab::up(&["--tors", "2", "--bfd", "--pods", "1"]);
    assert!(text.contains("all checks passed"), "{text}");
    let pod = "svlab-node1-pod1";
    let mut lost = Vec::new();
    for tor in TORS {
        wait_both_tors(&lab);
        let (n, sent) = lost_while_cut(pod, tor);
        eprintln!("{tor} cut off: {n} of {sent} pings (every 10 ms) from {pod} to {EXT_ADDR} lost");
        lost.push((tor, n));
    }
    for (tor, n) in lost {
        assert!(
            n < LOSS_TARGET,
            "{n} replies lost while {tor} was cut off, target under {LOSS_TARGET}:\n{}",
            lab.logs()
        );
    }
}
