//! The five reflectors with one equivalent configuration each: AS 64512, every client a
//! route-reflector client in cluster 224.0.0.1, passive towards the clients (they
//! connect), hold time 90 s and keepalive 30 s, IPv4 unicast, each daemon's own
//! graceful-restart default, nothing filtered, no kernel routes except the node agent
//! (a reflector node programs the routes it learns, as in a real cluster).
//!
//! - `serval bgp`: a configuration file with one `[[peer]]` per client.
//! - `serval node run`: an embedded file store holding one `ServalNode` per client, the
//!   reflector's own `ServalNode` (label `route-reflector`, `routeReflectorClusterID`),
//!   `nodeToNodeMeshEnabled: false` and one `BGPPeer` the Calico way
//!   (`nodeSelector: !has(route-reflector)`, `peerSelector: has(route-reflector)`, whose
//!   reverse peering makes the reflector peer with every client).
//! - BIRD: one `protocol bgp` per client from a template with `rr client` and `rr
//!   cluster id`, as Calico's BIRD configuration has it.
//! - FRR: bgpd without zebra (`-Z -n`), the clients in one peer-group with
//!   `route-reflector-client`.
//! - GoBGP: one `[[neighbors]]` per client with `route-reflector-client` and the cluster id.

use super::clients::{client_addr, client_block, CLUSTER_AS, REFLECTOR, SUBNET_LEN};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

pub const CLUSTER_ID: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);
/// The pool of the clients' blocks in the node agent's datastore.
pub const POOL: &str = "10.64.0.0/16";

/// A reflector in the race.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reflector {
    Serval,
    ServalNode,
    Bird,
    Frr,
    Gobgp,
}

impl Reflector {
    pub const ALL: [Reflector; 5] = [
        Reflector::Serval,
        Reflector::ServalNode,
        Reflector::Bird,
        Reflector::Frr,
        Reflector::Gobgp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reflector::Serval => "serval",
            Reflector::ServalNode => "serval-node",
            Reflector::Bird => "bird",
            Reflector::Frr => "frr",
            Reflector::Gobgp => "gobgp",
        }
    }

    pub fn parse(s: &str) -> Option<Reflector> {
        Reflector::ALL.into_iter().find(|r| r.name() == s)
    }

    pub fn is_serval(self) -> bool {
        matches!(self, Reflector::Serval | Reflector::ServalNode)
    }

    /// The programs it needs besides serval's own binary.
    pub fn tools(self) -> &'static [&'static str] {
        match self {
            Reflector::Serval | Reflector::ServalNode => &[],
            Reflector::Bird => &["bird", "birdc"],
            Reflector::Gobgp => &["gobgpd", "gobgp"],
            Reflector::Frr => &["/usr/lib/frr/bgpd", "vtysh"],
        }
    }
}

/// How to run one reflector in its directory.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Files to write first: (name in the directory, contents).
    pub files: Vec<(String, String)>,
    /// `serval` commands to run (in the host's namespace) after the files are written
    /// and before the daemon starts: the node agent's datastore.
    pub setup: Vec<Vec<String>>,
    /// The daemon's command line; it stays in the foreground, so its pid is the child's.
    pub argv: Vec<String>,
    /// A query that succeeds once the daemon answers (run in the host's namespace).
    pub ready_argv: Vec<String>,
}

fn s(v: &str) -> String {
    v.to_string()
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_string_lossy().into_owned()
}

/// The configuration and command lines of `r` for `n` clients, files in `dir`.
pub fn launch(r: Reflector, n: usize, dir: &Path, serval_bin: &Path) -> Launch {
    let bin = serval_bin.to_string_lossy().into_owned();
    match r {
        Reflector::Serval => {
            let sock = path(dir, "serval.sock");
            Launch {
                files: vec![(s("serval.toml"), serval_config(n))],
                setup: Vec::new(),
                argv: vec![
                    bin.clone(),
                    s("bgp"),
                    s("--config"),
                    path(dir, "serval.toml"),
                    s("--socket"),
                    sock.clone(),
                    s("--state-dir"),
                    path(dir, "state"),
                    s("--log-level"),
                    s("warn"),
                ],
                ready_argv: vec![bin, s("bgp"), s("status"), s("--json"), s("--socket"), sock],
            }
        }
        Reflector::ServalNode => {
            let store = format!("file:{}", path(dir, "store.json"));
            let d = |f: &str| path(dir, f);
            let mut argv = vec![
                bin.clone(),
                s("node"),
                s("run"),
                s("--node"),
                s("rr"),
                s("--datastore"),
                store.clone(),
            ];
            for (flag, file) in [
                ("--state-dir", "state"),
                ("--socket", "node.sock"),
                ("--bgp-socket", "bgp.sock"),
                ("--ready-file", "ready"),
                ("--mtu-file", "mtu"),
                ("--nodename-file", "nodename"),
            ] {
                argv.push(s(flag));
                argv.push(d(file));
            }
            argv.extend([s("--log-level"), s("warn")]);
            Launch {
                files: vec![(s("resources.yaml"), node_resources(n))],
                setup: vec![
                    vec![
                        bin.clone(),
                        s("pool"),
                        s("add"),
                        s(POOL),
                        s("--name"),
                        s("clients"),
                        s("--block-size"),
                        s("26"),
                        s("--datastore"),
                        store.clone(),
                    ],
                    vec![
                        bin.clone(),
                        s("apply"),
                        s("-f"),
                        d("resources.yaml"),
                        s("--datastore"),
                        store,
                    ],
                ],
                argv,
                ready_argv: vec![
                    bin,
                    s("bgp"),
                    s("status"),
                    s("--json"),
                    s("--socket"),
                    d("bgp.sock"),
                ],
            }
        }
        Reflector::Bird => {
            let sock = path(dir, "bird.ctl");
            Launch {
                files: vec![(s("bird.conf"), bird_config(n))],
                setup: Vec::new(),
                argv: vec![
                    s("bird"),
                    s("-f"),
                    s("-c"),
                    path(dir, "bird.conf"),
                    s("-s"),
                    sock.clone(),
                    s("-P"),
                    path(dir, "bird.pid"),
                ],
                ready_argv: vec![s("birdc"), s("-s"), sock, s("show"), s("status")],
            }
        }
        Reflector::Gobgp => {
            let target = format!("unix://{}", path(dir, "gobgp.sock"));
            Launch {
                files: vec![(s("gobgpd.toml"), gobgp_config(n))],
                setup: Vec::new(),
                argv: vec![
                    s("gobgpd"),
                    s("-f"),
                    path(dir, "gobgpd.toml"),
                    s("--api-hosts"),
                    target.clone(),
                    s("--pprof-disable"),
                    s("-l"),
                    s("warn"),
                ],
                ready_argv: vec![s("gobgp"), s("--target"), target, s("global")],
            }
        }
        Reflector::Frr => {
            let vty = dir.to_string_lossy().into_owned();
            Launch {
                files: vec![(s("bgpd.conf"), frr_config(n))],
                setup: Vec::new(),
                argv: vec![
                    s("/usr/lib/frr/bgpd"),
                    s("-Z"),
                    s("-S"),
                    s("-n"),
                    s("-f"),
                    path(dir, "bgpd.conf"),
                    s("-i"),
                    path(dir, "bgpd.pid"),
                    s("--vty_socket"),
                    vty.clone(),
                    s("-l"),
                    REFLECTOR.to_string(),
                    s("--log"),
                    s("stdout"),
                    s("--log-level"),
                    s("warnings"),
                ],
                ready_argv: vec![
                    s("vtysh"),
                    s("--vty_socket"),
                    vty,
                    s("-c"),
                    s("show bgp ipv4 unicast summary json"),
                ],
            }
        }
    }
}

/// Whether the ready query's output says the daemon is ready for `n` clients. The node
/// agent lists its peers once it has read the datastore; the others have them from
/// their configuration file before they answer.
pub fn ready(r: Reflector, out: &str, n: usize) -> bool {
    match r {
        Reflector::Serval => serde_json::from_str::<serde_json::Value>(out).is_ok(),
        Reflector::ServalNode => serde_json::from_str::<serde_json::Value>(out)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .is_some_and(|peers| peers >= n),
        Reflector::Bird => out.contains("Daemon is up and running"),
        Reflector::Gobgp => out.contains("AS:"),
        Reflector::Frr => serde_json::from_str::<serde_json::Value>(out).is_ok(),
    }
}

pub fn serval_config(n: usize) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "asn = {CLUSTER_AS}");
    let _ = writeln!(c, "router-id = \"{REFLECTOR}\"");
    let _ = writeln!(c, "listen = [\"{REFLECTOR}:179\"]");
    c.push_str("hold-time = 90\n");
    let _ = writeln!(c, "cluster-id = \"{CLUSTER_ID}\"");
    for i in 0..n {
        c.push_str("\n[[peer]]\n");
        let _ = writeln!(c, "address = \"{}\"", client_addr(i));
        let _ = writeln!(c, "asn = {CLUSTER_AS}");
        c.push_str("passive = true\nkeepalive = 30\nfamilies = [\"ipv4-unicast\"]\n");
        c.push_str("route-reflector-client = true\n");
    }
    c
}

/// The node agent's resources (the pool is added by `serval pool add`): the cluster's BGP settings, the reflector's
/// node, one node per client and the one BGPPeer that ties them together.
pub fn node_resources(n: usize) -> String {
    let mut c = String::new();
    let _ = write!(
        c,
        "apiVersion: serval.dev/v1\nkind: BGPConfiguration\nmetadata: {{name: default}}\n\
         spec: {{nodeToNodeMeshEnabled: false, asNumber: {CLUSTER_AS}}}\n\
         ---\napiVersion: serval.dev/v1\nkind: BGPPeer\nmetadata: {{name: clients-to-rr}}\n\
         spec: {{nodeSelector: \"!has(route-reflector)\", peerSelector: has(route-reflector)}}\n\
         ---\napiVersion: serval.dev/v1\nkind: ServalNode\n\
         metadata: {{name: rr, labels: {{route-reflector: \"true\"}}}}\n\
         spec: {{bgp: {{ipv4Address: {REFLECTOR}/{SUBNET_LEN}, routeReflectorClusterID: {CLUSTER_ID}}}}}\n"
    );
    for i in 0..n {
        let _ = write!(
            c,
            "---\napiVersion: serval.dev/v1\nkind: ServalNode\nmetadata: {{name: client-{i}}}\n\
             spec: {{bgp: {{ipv4Address: {}/{SUBNET_LEN}}}}}\n",
            client_addr(i)
        );
    }
    c
}

pub fn bird_config(n: usize) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "router id {REFLECTOR};");
    c.push_str("log stderr { warning, error, fatal };\n");
    c.push_str("protocol device {}\n\n");
    c.push_str("template bgp rrclient {\n");
    let _ = writeln!(c, "  local {REFLECTOR} as {CLUSTER_AS};");
    // On the link: next hops need no IGP table to resolve in (BIRD's default for iBGP).
    c.push_str("  direct;\n  passive on;\n  rr client;\n");
    let _ = writeln!(c, "  rr cluster id {CLUSTER_ID};");
    c.push_str("  hold time 90;\n  keepalive time 30;\n");
    c.push_str("  ipv4 { import all; export all; };\n}\n");
    for i in 0..n {
        let _ = writeln!(
            c,
            "protocol bgp c{i} from rrclient {{ neighbor {} as {CLUSTER_AS}; }}",
            client_addr(i)
        );
    }
    c
}

pub fn frr_config(n: usize) -> String {
    let mut c = String::new();
    c.push_str("hostname rr\n");
    let _ = writeln!(c, "router bgp {CLUSTER_AS}");
    let _ = writeln!(c, " bgp router-id {REFLECTOR}");
    let _ = writeln!(c, " bgp cluster-id {CLUSTER_ID}");
    c.push_str(" no bgp default ipv4-unicast\n timers bgp 30 90\n");
    c.push_str(" neighbor CLIENTS peer-group\n");
    let _ = writeln!(c, " neighbor CLIENTS remote-as {CLUSTER_AS}");
    c.push_str(" neighbor CLIENTS passive\n");
    for i in 0..n {
        let _ = writeln!(c, " neighbor {} peer-group CLIENTS", client_addr(i));
    }
    c.push_str(" address-family ipv4 unicast\n");
    c.push_str("  neighbor CLIENTS activate\n  neighbor CLIENTS route-reflector-client\n");
    c.push_str(" exit-address-family\nexit\n");
    c
}

pub fn gobgp_config(n: usize) -> String {
    let mut c = String::new();
    c.push_str("[global.config]\n");
    let _ = writeln!(c, "  as = {CLUSTER_AS}");
    let _ = writeln!(c, "  router-id = \"{REFLECTOR}\"");
    let _ = writeln!(c, "  local-address-list = [\"{REFLECTOR}\"]");
    for i in 0..n {
        c.push_str("\n[[neighbors]]\n  [neighbors.config]\n");
        let _ = writeln!(c, "    neighbor-address = \"{}\"", client_addr(i));
        let _ = writeln!(c, "    peer-as = {CLUSTER_AS}");
        c.push_str(
            "  [neighbors.timers.config]\n    hold-time = 90\n    keepalive-interval = 30\n",
        );
        c.push_str("  [neighbors.transport.config]\n    passive-mode = true\n");
        let _ = writeln!(c, "    local-address = \"{REFLECTOR}\"");
        c.push_str("  [neighbors.route-reflector.config]\n    route-reflector-client = true\n");
        let _ = writeln!(c, "    route-reflector-cluster-id = \"{CLUSTER_ID}\"");
        c.push_str("  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n");
    }
    c
}

/// The clients' blocks as the agent's kernel routes should list them (for the check
/// after the cold start).
pub fn blocks(n: usize) -> impl Iterator<Item = String> {
    (0..n).map(|i| client_block(i).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serval_config_makes_every_client_a_passive_reflector_client() {
        let cfg = bgp::config::SpeakerConfig::from_toml(&serval_config(3)).unwrap();
        assert_eq!(cfg.peers.len(), 3);
        assert!(cfg
            .peers
            .iter()
            .all(|p| p.passive && p.route_reflector_client));
        assert_eq!(cfg.cluster_id, Some(CLUSTER_ID));
    }

    #[test]
    fn daemon_configs_name_every_client() {
        let b = bird_config(3);
        assert!(b.contains("rr client;") && b.contains("rr cluster id 224.0.0.1;"));
        assert_eq!(b.matches("from rrclient").count(), 3);
        assert!(b.contains("neighbor 198.18.0.3 as 64512;"));
        let f = frr_config(3);
        assert!(f.contains("neighbor CLIENTS route-reflector-client"));
        assert!(f.contains("neighbor 198.18.0.2 peer-group CLIENTS"));
        assert!(f.contains("bgp cluster-id 224.0.0.1"));
        let g = gobgp_config(3);
        assert_eq!(g.matches("route-reflector-client = true").count(), 3);
        assert_eq!(g.matches("passive-mode = true").count(), 3);
    }

    #[test]
    fn node_resources_make_one_reflector_and_n_clients() {
        let r = node_resources(2);
        assert_eq!(r.matches("kind: ServalNode").count(), 3);
        assert!(r.contains("routeReflectorClusterID: 224.0.0.1"));
        assert!(r.contains("nodeToNodeMeshEnabled: false"));
        assert!(r.contains("ipv4Address: 198.18.0.2/16"));
    }

    #[test]
    fn readiness() {
        assert!(ready(Reflector::ServalNode, "[{},{}]", 2));
        assert!(!ready(Reflector::ServalNode, "[{}]", 2));
        assert!(ready(
            Reflector::Bird,
            "BIRD 2.0.12\nDaemon is up and running\n",
            9
        ));
        assert!(!ready(Reflector::Frr, "", 9));
    }
}
