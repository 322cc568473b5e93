//! A pod tries to take over its node's BGP sessions, in `serval lab` (three nodes: node1
//! and node2 on 10.10.1.0/24, node3 on 10.10.2.0/24, natOutgoing on the pool).
//!
//! The attack: from a pod's network namespace, a TCP connection to node2's BGP port (the
//! node masquerades it, so node2 would see the pod's node), an OPEN as that node (AS
//! 64512, its router id) with the Graceful Restart capability's Restart State bit, then a
//! route of the attacker's and an End-of-RIB. A speaker that believed the restart bit
//! would replace the real session with the pod's, keep the node's routes as stale, and
//! drop them at the End-of-RIB: node2 would lose the node's pod block while the pod held
//! the session. The attack is made from a pod on node1 (same subnet as node2) and from a
//! pod on node3 (another subnet, reached through the ToR).
//!
//! What stops it, in order: serval's nftables table on the pod's node drops pool traffic
//! to the node's BGP peers' ports (and to its own); GTSM on the node1–node2 mesh session
//! (one L2 subnet) refuses a connection that arrives with TTL below 255, as a masqueraded
//! pod's does after one forward; and node2's FSM replaces an Established session only when
//! the old connection fails its probe. With all three the guard stops both attacks before
//! a TCP connection exists; without it, GTSM alone stops the pod on node1, and the FSM
//! alone stops both (the impostor gets Cease/Connection Collision Resolution). Throughout
//! each attack node2 keeps the node's block route, the session with the node stays
//! Established without a flap, and the attacker's route never appears.
//!
//! Needs root, bird2, iproute2, nftables and the CNI plugin built beside serval
//! (`cargo build --bins`). The lab's namespaces have fixed names: one lab at a time.

mod lab_support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bgp::wire::attr::NextHop;
use bgp::wire::open::GracefulRestartFamily;
use bgp::wire::update::{Nlri, Update};
use bgp::wire::{encode_message, Capability, CodecParams, Message, Open, PathAttrs};
use bgp::{AfiSafi, Asn, Family, RouterId};
use serval_integration::netns::NsHandle;

use lab_support::{routes, Lab};

const NODE_AS: u32 = 64512;
const NODE1: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 11);
const NODE2: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 12);
const NODE3: Ipv4Addr = Ipv4Addr::new(10, 10, 2, 11);
/// What the attacker announces: it must never reach node2's kernel.
const ATTACKER_PREFIX: &str = "10.99.99.0/24";
/// How long each attack goes on while node2 is watched.
const ATTACK_WINDOW: Duration = Duration::from_secs(12);

/// serval's routes in a node's kernel: (destination, type).
fn kernel_routes(netns: &str) -> Vec<(String, String)> {
    routes(netns)
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["dst"].as_str().unwrap_or_default().to_string(),
                r["type"].as_str().unwrap_or("unicast").to_string(),
            )
        })
        .collect()
}

/// The blocks a node holds itself (its blackhole routes).
fn own_blocks(node: &str) -> Vec<String> {
    kernel_routes(&format!("svlab-{node}"))
        .into_iter()
        .filter(|(_, t)| t == "blackhole")
        .map(|(d, _)| d)
        .collect()
}

/// Node2's session with `peer`: (state, flaps, uptime in seconds).
fn session(status: &serde_json::Value, peer: Ipv4Addr) -> (String, u64, u64) {
    let p = status["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["address"] == peer.to_string())
        .unwrap_or_else(|| panic!("node2 has no session with {peer}: {status}"));
    (
        p["state"].as_str().unwrap_or_default().to_string(),
        p["flaps"].as_u64().unwrap_or_default(),
        p["uptime_secs"].as_u64().unwrap_or_default(),
    )
}

fn encode(msg: &Message) -> Vec<u8> {
    let params = CodecParams {
        four_octet_asn: true,
        ..CodecParams::default()
    };
    let mut out = Default::default();
    encode_message(msg, &params, &mut out).expect("encodes");
    out.to_vec()
}

/// The OPEN of a node that says it just restarted: its AS and router id, IPv4 unicast,
/// and the Graceful Restart capability with the Restart State bit.
fn restarting_open(router_id: Ipv4Addr) -> Message {
    let v4 = AfiSafi::new(1, 1);
    Message::Open(Open {
        version: 4,
        asn: Asn(NODE_AS),
        hold_time: 90,
        router_id: RouterId(router_id),
        capabilities: vec![
            Capability::Multiprotocol(v4),
            Capability::RouteRefresh,
            Capability::FourOctetAsn(Asn(NODE_AS)),
            Capability::GracefulRestart {
                restart_state: true,
                notification: false,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    afi_safi: v4,
                    forwarding_preserved: true,
                }],
            },
        ],
    })
}

fn attacker_route(next_hop: Ipv4Addr) -> Message {
    Message::Update(Update {
        attrs: Some(PathAttrs {
            next_hop: Some(NextHop::V4(next_hop)),
            local_pref: Some(100),
            ..PathAttrs::default()
        }),
        nlri: vec![Nlri::new(ATTACKER_PREFIX.parse().unwrap())],
        ..Update::default()
    })
}

/// How far an attack got.
#[derive(Debug, Default)]
struct Outcome {
    connected: bool,
    /// node2 answered the OPEN with its own: the session went ahead.
    got_open: bool,
    /// The End-of-RIB went out on an established session.
    sent_end_of_rib: bool,
    notification: Option<(u8, u8)>,
}

/// Connects from inside `netns` (a thread only enters it) with a deadline.
fn connect_from(netns: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    NsHandle::named(netns)
        .in_thread(|| TcpStream::connect_timeout(&to, Duration::from_secs(3)))
        .map_err(std::io::Error::other)?
}

/// One message from `stream` (type, body), `None` on timeout or close.
fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    until: Instant,
) -> Option<(u8, Vec<u8>)> {
    loop {
        if buf.len() >= 19 {
            let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
            if len >= 19 && buf.len() >= len {
                let msg: Vec<u8> = buf.drain(..len).collect();
                return Some((msg[18], msg[19..].to_vec()));
            }
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).ok()?;
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The attack from `pod_netns` against node2, as the node at `as_node`, for `window`:
/// OPEN with the restart bit; on node2's OPEN a KEEPALIVE; once node2 confirms, the
/// attacker's route and an End-of-RIB; KEEPALIVEs answered until the window ends.
fn attack(pod_netns: &str, as_node: Ipv4Addr, window: Duration) -> Outcome {
    let mut outcome = Outcome::default();
    let Ok(mut stream) = connect_from(pod_netns, SocketAddr::from((NODE2, 179))) else {
        return outcome;
    };
    outcome.connected = true;
    let end = Instant::now() + window;
    let keepalive = encode(&Message::Keepalive);
    if stream
        .write_all(&encode(&restarting_open(as_node)))
        .is_err()
    {
        return outcome;
    }
    let mut buf = Vec::new();
    while let Some((kind, body)) = read_message(&mut stream, &mut buf, end) {
        match kind {
            1 => {
                outcome.got_open = true;
                let _ = stream.write_all(&keepalive);
            }
            4 if outcome.got_open && !outcome.sent_end_of_rib => {
                let mut burst = encode(&attacker_route(as_node));
                burst.extend(encode(&Message::Update(Update::end_of_rib(
                    Family::Ipv4Unicast,
                ))));
                if stream.write_all(&burst).is_ok() {
                    outcome.sent_end_of_rib = true;
                }
            }
            4 => {
                let _ = stream.write_all(&keepalive);
            }
            3 => {
                outcome.notification = Some((
                    body.first().copied().unwrap_or_default(),
                    body.get(1).copied().unwrap_or_default(),
                ));
                break;
            }
            _ => {}
        }
    }
    // Held open to the end of the window, as an attacker would.
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    outcome
}

/// Runs the attack from `pod` as `victim` and watches node2 all the while: the victim's
/// blocks stay routed, its session stays up without a flap, the attacker's route never
/// shows.
fn attack_and_watch(lab: &Lab, pod: &str, victim: &str, victim_addr: Ipv4Addr) -> Outcome {
    let blocks = own_blocks(victim);
    assert!(!blocks.is_empty(), "{victim} holds no block");
    let before = session(&lab.status("node2"), victim_addr);
    assert_eq!(before.0, "Established", "before the attack: {before:?}");
    for b in &blocks {
        assert!(
            kernel_routes("svlab-node2").iter().any(|(d, _)| d == b),
            "before the attack node2 has no route for {victim}'s block {b}"
        );
    }

    let pod_netns = pod.to_string();
    let attacker = std::thread::spawn(move || attack(&pod_netns, victim_addr, ATTACK_WINDOW));
    // Watched past the window, for what an End-of-RIB or a stale timer would do late.
    let watch_until = Instant::now() + ATTACK_WINDOW + Duration::from_secs(3);
    let mut checks = 0u32;
    let mut last_uptime = before.2;
    while Instant::now() < watch_until {
        let routes = kernel_routes("svlab-node2");
        for b in &blocks {
            assert!(
                routes.iter().any(|(d, _)| d == b),
                "during the attack from {pod}, node2 lost the route for {victim}'s block {b}: \
                 {routes:?}\n{}",
                lab.logs()
            );
        }
        assert!(
            !routes.iter().any(|(d, _)| d == ATTACKER_PREFIX),
            "node2 installed the attacker's route from {pod}: {routes:?}"
        );
        let now = session(&lab.status("node2"), victim_addr);
        assert!(
            now.0 == "Established" && now.1 == before.1 && now.2 >= last_uptime,
            "node2's session with {victim} went from {before:?} to {now:?} during the attack \
             from {pod}\n{}",
            lab.logs()
        );
        last_uptime = now.2;
        checks += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(checks >= 10, "node2 was looked at only {checks} times");
    attacker.join().expect("the attacker thread panicked")
}

#[test]
fn a_pod_cannot_take_over_its_nodes_bgp_sessions() {
    let (lab, _) = Lab::up(&["--pods", "1"]);
    // The attacker claims the router ids the nodes have: their addresses.
    // From a pod on node1, node2's neighbour on the same subnet.
    let out = attack_and_watch(&lab, "svlab-node1-pod1", "node1", NODE1);
    assert!(!out.sent_end_of_rib, "from node1's pod: {out:?}");
    eprintln!("attack from node1's pod: {out:?}");
    // From a pod on node3, across the ToR.
    let out = attack_and_watch(&lab, "svlab-node3-pod1", "node3", NODE3);
    assert!(!out.sent_end_of_rib, "from node3's pod: {out:?}");
    eprintln!("attack from node3's pod: {out:?}");
    drop(lab);
}
