//! ExaBGP, which has no RIB to query: a helper process (named in its config) appends
//! every JSON message ExaBGP hands it — session state changes and parsed UPDATEs — to
//! `received.jsonl`, and forwards lines written to the FIFO `commands` to ExaBGP as
//! API commands. Received routes are rebuilt by replaying that file.
//!
//! ExaBGP connects out to active neighbours and listens for passive ones. Its
//! `incoming-ttl` (IP_MINTTL) applies only to connections it accepts, and it also sets
//! the TTL of those connections to the same value: so GTSM is enforced for passive
//! neighbours only, and with more than one hop only ExaBGP's outgoing connections are
//! usable (the peer would see TTL 255 - hops - 1 on the accepted ones).

use super::{numbers, BgpDaemon, Instance};
use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::observed::{parse_prefix, Route, SessionStatus};
use crate::spec::{Announcement, Asn, Community, Family, LargeCommunity, RouterSpec, TtlMode};
use crate::tools;
use crate::workdir::TestDir;
use ipnet::IpNet;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const KIND: &str = "exabgp";
const RECEIVED: &str = "received.jsonl";
const COMMANDS: &str = "commands";

/// The helper ExaBGP runs. It must keep reading stdin: ExaBGP restarts a helper that
/// exits only five times, then stops.
const HELPER: &str = r#"import os, sys, threading
received, fifo = sys.argv[1], sys.argv[2]

def forward():
    # Opened read-write, the FIFO never reports end-of-file between writers.
    with os.fdopen(os.open(fifo, os.O_RDWR), "r") as commands:
        for line in commands:
            sys.stdout.write(line if line.endswith("\n") else line + "\n")
            sys.stdout.flush()

threading.Thread(target=forward, daemon=True).start()
with open(received, "a", buffering=1) as out:
    for line in sys.stdin:
        out.write(line)
"#;

/// Starts ExaBGP (the script given as first argument) with `socket.IP_MINTTL` defined:
/// Python before 3.12 lacks the constant and ExaBGP then skips IP_MINTTL without a
/// word, so `incoming-ttl` would do nothing. 21 is IP_MINTTL in <linux/in.h>.
const LAUNCHER: &str = r#"import runpy, socket, sys
if not hasattr(socket, "IP_MINTTL"):
    socket.IP_MINTTL = 21
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"#;

#[derive(Debug)]
pub struct ExaBgp {
    spec: RouterSpec,
    inst: Instance,
}

impl ExaBgp {
    fn launch(&mut self) -> Result<()> {
        let helper = self.inst.write("helper.py", HELPER)?;
        let launcher = self.inst.write("launch.py", LAUNCHER)?;
        let exabgp = tools::require("exabgp")?;
        let received = self.inst.path(RECEIVED);
        let commands = self.inst.path(COMMANDS);
        // A restart starts from an empty history, as ExaBGP itself does.
        std::fs::write(&received, "").map_err(|e| Error::io("truncating", &received, e))?;
        if !commands.exists() {
            mkfifo(&commands)?;
        }
        let python = interpreter(&exabgp);
        let config = render(&self.spec, &python, &helper, &received, &commands)?;
        let conf = self
            .inst
            .write("exabgp.conf", &config)?
            .to_string_lossy()
            .into_owned();
        let mut argv = vec![
            "env".to_string(),
            "exabgp.daemon.user=root".into(),
            "exabgp.api.cli=false".into(),
            "exabgp.api.ack=false".into(),
        ];
        let bind = listen_addresses(&self.spec);
        if !bind.is_empty() {
            argv.push(format!("exabgp.tcp.bind={}", bind.join(" ")));
            argv.push("exabgp.tcp.port=179".into());
        }
        argv.extend([
            python,
            launcher.to_string_lossy().into_owned(),
            exabgp.to_string_lossy().into_owned(),
            conf,
        ]);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.inst.spawn(&refs)?;
        // Ready when the helper holds the FIFO open.
        self.inst.wait_ready("its helper's command FIFO", |_| {
            open_fifo(&commands).map(drop)
        })
    }

    /// Every JSON message of `kind` ("open", "notification", "update", "state"…) the
    /// helper recorded, oldest first: what ExaBGP received, since it has no RIB to ask.
    pub fn messages(&self, kind: &str) -> Result<Vec<Value>> {
        let path = self.inst.path(RECEIVED);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("type").and_then(Value::as_str) == Some(kind))
            .collect())
    }

    /// Sends API commands (`neighbor 192.0.2.1 announce route-refresh ipv4 unicast`…).
    pub fn api(&self, lines: &[String]) -> Result<()> {
        self.command(lines)
    }

    /// Sends API command lines through the helper.
    fn command(&self, lines: &[String]) -> Result<()> {
        let path = self.inst.path(COMMANDS);
        let mut fifo = open_fifo(&path)?;
        let mut text = lines.join("\n");
        text.push('\n');
        fifo.write_all(text.as_bytes())
            .map_err(|e| Error::io("writing to", &path, e))
    }

    fn history(&self) -> Result<History> {
        let path = self.inst.path(RECEIVED);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
        Ok(History::replay(&text))
    }

    /// The neighbours a prefix of `family` goes to.
    fn targets(&self, family: Family) -> Vec<IpAddr> {
        self.spec
            .neighbors
            .iter()
            .filter(|n| n.carries(family))
            .map(|n| n.address)
            .collect()
    }
}

impl BgpDaemon for ExaBgp {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn start(ns: &Netns, dir: &TestDir, spec: RouterSpec) -> Result<Self> {
        tools::require("exabgp")?;
        let inst = Instance::new(KIND, ns, dir, &spec)?;
        let mut e = ExaBgp { spec, inst };
        e.launch()?;
        Ok(e)
    }

    fn spec(&self) -> &RouterSpec {
        &self.spec
    }

    fn sessions(&self) -> Result<Vec<SessionStatus>> {
        let history = self.history()?;
        Ok(self
            .spec
            .neighbors
            .iter()
            .map(|n| {
                let state = history
                    .states
                    .get(&n.address)
                    .cloned()
                    .unwrap_or_else(|| "not connected yet".into());
                SessionStatus {
                    neighbor: n.address,
                    established: state == "up",
                    state,
                }
            })
            .collect())
    }

    fn received_routes(&self, neighbor: IpAddr) -> Result<Vec<Route>> {
        if self.spec.find_neighbor(neighbor).is_none() {
            return Err(Error::InvalidSpec(format!(
                "exabgp has no neighbor {neighbor}"
            )));
        }
        let mut history = self.history()?;
        Ok(history
            .routes
            .remove(&neighbor)
            .map(|m| m.into_values().collect())
            .unwrap_or_default())
    }

    /// ExaBGP keeps no Loc-RIB: this is every route received from any neighbour.
    fn rib(&self) -> Result<Vec<Route>> {
        let history = self.history()?;
        Ok(history
            .routes
            .into_values()
            .flat_map(|m| m.into_values())
            .collect())
    }

    fn announce(&mut self, a: Announcement) -> Result<()> {
        let route = route_words(&a);
        let lines: Vec<String> = self
            .targets(a.family())
            .iter()
            .map(|n| format!("neighbor {n} announce {route}"))
            .collect();
        self.command(&lines)?;
        self.spec.upsert_announcement(a);
        Ok(())
    }

    fn withdraw(&mut self, prefix: IpNet) -> Result<()> {
        let prefix = prefix.trunc();
        let lines: Vec<String> = self
            .targets(Family::of(&prefix))
            .iter()
            .map(|n| format!("neighbor {n} withdraw route {prefix} next-hop self"))
            .collect();
        self.command(&lines)?;
        self.spec.remove_announcement(prefix);
        Ok(())
    }

    instance_lifecycle!();
}

/// Addresses ExaBGP listens on for every neighbour (`exabgp.tcp.bind`). Passive
/// neighbours get a listener of their own instead (`listen 179;`): only that one
/// carries the neighbour's MD5 key and minimum TTL.
fn listen_addresses(spec: &RouterSpec) -> Vec<String> {
    spec.listen.iter().map(|a| a.to_string()).collect()
}

/// `route P next-hop self community [..] …`, as in the static block and the API.
fn route_words(a: &Announcement) -> String {
    let mut s = format!("route {} next-hop self", a.prefix);
    if !a.communities.is_empty() {
        let list: Vec<String> = a.communities.iter().map(|c| c.to_string()).collect();
        let _ = write!(s, " community [ {} ]", list.join(" "));
    }
    if !a.large_communities.is_empty() {
        let list: Vec<String> = a.large_communities.iter().map(|c| c.to_string()).collect();
        let _ = write!(s, " large-community [ {} ]", list.join(" "));
    }
    if let Some(med) = a.med {
        let _ = write!(s, " med {med}");
    }
    if let Some(lp) = a.local_pref {
        let _ = write!(s, " local-preference {lp}");
    }
    s
}

/// The whole `exabgp.conf`.
pub fn render(
    spec: &RouterSpec,
    python: &str,
    helper: &Path,
    received: &Path,
    commands: &Path,
) -> Result<String> {
    let mut c = String::new();
    let _ = writeln!(
        c,
        "process sv-helper {{\n  run {python} {} {} {};\n  encoder json;\n}}",
        helper.display(),
        received.display(),
        commands.display()
    );
    for n in &spec.neighbors {
        if n.rr_client {
            return Err(Error::Unsupported {
                daemon: KIND,
                feature: "route-reflector clients (ExaBGP does not reflect)".into(),
            });
        }
        let local = n.local_address.ok_or_else(|| Error::Unsupported {
            daemon: KIND,
            feature: format!("neighbor {} without a local address", n.address),
        })?;
        let _ = writeln!(c, "neighbor {} {{", n.address);
        let _ = writeln!(c, "  router-id {};", spec.router_id);
        let _ = writeln!(c, "  local-address {local};");
        let _ = writeln!(c, "  local-as {};\n  peer-as {};", spec.asn, n.asn);
        if n.passive {
            c.push_str("  passive true;\n  listen 179;\n");
        }
        if let Some(h) = n.hold_time {
            let _ = writeln!(c, "  hold-time {h};");
        }
        if let Some(pw) = &n.password {
            let _ = writeln!(c, "  md5-password \"{}\";", pw.as_str());
        }
        match n.ttl {
            TtlMode::Direct => {}
            TtlMode::Multihop { ttl } => {
                let _ = writeln!(c, "  outgoing-ttl {ttl};");
            }
            TtlMode::Gtsm { hops } => {
                let _ = writeln!(
                    c,
                    "  outgoing-ttl 255;\n  incoming-ttl {};",
                    256 - u16::from(hops)
                );
            }
        }
        c.push_str("  capability {\n");
        if let Some(t) = n.graceful_restart {
            let _ = writeln!(c, "    graceful-restart {};", t.as_secs());
        }
        if n.route_refresh {
            c.push_str("    route-refresh;\n");
        }
        if n.add_path {
            c.push_str("    add-path send/receive;\n");
        }
        c.push_str("  }\n  family {\n");
        for f in &n.families {
            c.push_str(match f {
                Family::Ipv4Unicast => "    ipv4 unicast;\n",
                Family::Ipv6Unicast => "    ipv6 unicast;\n",
            });
        }
        c.push_str("  }\n");
        c.push_str("  api {\n    processes [ sv-helper ];\n    neighbor-changes;\n    receive { parsed; update; open; notification; }\n  }\n");
        let statics: Vec<&Announcement> = spec
            .announce
            .iter()
            .filter(|a| n.carries(a.family()))
            .collect();
        if !statics.is_empty() {
            c.push_str("  static {\n");
            for a in statics {
                let _ = writeln!(c, "    {};", route_words(a));
            }
            c.push_str("  }\n");
        }
        c.push_str("}\n");
    }
    Ok(c)
}

/// What the helper recorded, replayed: the last state and current routes per peer.
#[derive(Debug, Default)]
struct History {
    states: BTreeMap<IpAddr, String>,
    routes: BTreeMap<IpAddr, BTreeMap<IpNet, Route>>,
}

impl History {
    fn replay(text: &str) -> History {
        let mut h = History::default();
        // Lines that are not JSON (acknowledgements) carry nothing to replay.
        for v in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        {
            let Some(peer) = v
                .pointer("/neighbor/address/peer")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<IpAddr>().ok())
            else {
                continue;
            };
            match v.get("type").and_then(Value::as_str) {
                Some("state") => {
                    let state = v
                        .pointer("/neighbor/state")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_string();
                    if state != "up" {
                        h.routes.remove(&peer);
                    }
                    h.states.insert(peer, state);
                }
                Some("update") => {
                    if let Some(update) = v.pointer("/neighbor/message/update") {
                        h.apply(peer, update);
                    }
                }
                _ => {}
            }
        }
        h
    }

    fn apply(&mut self, peer: IpAddr, update: &Value) {
        let table = self.routes.entry(peer).or_default();
        for (_family, nlris) in update
            .get("withdraw")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            for nlri in nlris.as_array().into_iter().flatten() {
                if let Some(prefix) = nlri_prefix(nlri) {
                    table.remove(&prefix);
                }
            }
        }
        let attrs = update.get("attribute");
        for (_family, by_next_hop) in update
            .get("announce")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            for (next_hop, nlris) in by_next_hop.as_object().into_iter().flatten() {
                for nlri in nlris.as_array().into_iter().flatten() {
                    let Some(prefix) = nlri_prefix(nlri) else {
                        continue;
                    };
                    let mut r = Route::new(prefix);
                    r.from = Some(peer);
                    r.next_hop = next_hop.parse().ok();
                    if let Some(a) = attrs {
                        fill_attributes(&mut r, a);
                    }
                    table.insert(prefix, r);
                }
            }
        }
    }
}

fn nlri_prefix(nlri: &Value) -> Option<IpNet> {
    let s = match nlri {
        Value::String(s) => s.as_str(),
        other => other.get("nlri")?.as_str()?,
    };
    parse_prefix(s)
}

fn fill_attributes(r: &mut Route, a: &Value) {
    let flat = |key: &str| -> Vec<u64> {
        a.get(key)
            .map(|v| numbers(&v.to_string()))
            .unwrap_or_default()
    };
    r.as_path = flat("as-path").into_iter().map(|n| Asn(n as u32)).collect();
    r.communities = flat("community")
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| Community::new(c[0] as u16, c[1] as u16))
        .collect();
    r.large_communities = flat("large-community")
        .chunks(3)
        .filter(|c| c.len() == 3)
        .map(|c| LargeCommunity::new(c[0] as u32, c[1] as u32, c[2] as u32))
        .collect();
    r.med = a.get("med").and_then(Value::as_u64).map(|n| n as u32);
    r.local_pref = a
        .get("local-preference")
        .and_then(Value::as_u64)
        .map(|n| n as u32);
}

/// The Python that ExaBGP's script names in its `#!` line: the one its modules are
/// installed for, which need not be the first `python3` on `PATH`.
fn interpreter(script: &Path) -> String {
    std::fs::read_to_string(script)
        .ok()
        .and_then(|text| {
            let first = text.lines().next()?.strip_prefix("#!")?.trim().to_string();
            // `#!/usr/bin/env python3` names the program after env.
            let mut words = first.split_whitespace();
            let program = words.next()?;
            match program.ends_with("/env") {
                true => words.next().map(str::to_string),
                false => Some(program.to_string()),
            }
        })
        .unwrap_or_else(|| "/usr/bin/python3".into())
}

fn mkfifo(path: &Path) -> Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::InvalidSpec(format!("NUL in path {}", path.display())))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::io(
            "creating the FIFO",
            path,
            std::io::Error::last_os_error(),
        ))
    }
}

/// Opens the command FIFO for writing without blocking: fails (ENXIO) when the helper
/// is not holding it open.
fn open_fifo(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io("opening the command FIFO", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{NeighborSpec, Password};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    #[test]
    fn replays_state_announce_and_withdraw() {
        let log = r#"{ "type": "state", "neighbor": { "address": { "local": "192.0.2.2", "peer": "192.0.2.1" }, "state": "connected" } }
{ "type": "state", "neighbor": { "address": { "local": "192.0.2.2", "peer": "192.0.2.1" }, "state": "up" } }
{ "type": "update", "neighbor": { "address": { "local": "192.0.2.2", "peer": "192.0.2.1" }, "direction": "receive", "message": { "update": { "attribute": { "origin": "igp", "as-path": [ 65001 ], "confederation-path": [], "med": 42, "community": [ [ 65001, 10 ] ], "large-community": [ [ 65001, 1 , 2 ] ] }, "announce": { "ipv4 unicast": { "192.0.2.1": [ { "nlri": "198.18.1.0/24" }, { "nlri": "198.18.2.0/24" } ] } } } } } }
done
{ "type": "update", "neighbor": { "address": { "local": "192.0.2.2", "peer": "192.0.2.1" }, "message": { "update": { "withdraw": { "ipv4 unicast": [ { "nlri": "198.18.2.0/24" } ] } } } } }
{ "type": "update", "neighbor": { "address": { "local": "192.0.2.2", "peer": "192.0.2.1" }, "message": { "eor": { "afi" : "ipv4", "safi" : "unicast" } } } }
"#;
        let h = History::replay(log);
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(h.states.get(&peer).map(String::as_str), Some("up"));
        let routes: Vec<&Route> = h.routes[&peer].values().collect();
        assert_eq!(routes.len(), 1);
        let r = routes[0];
        assert_eq!(r.prefix.to_string(), "198.18.1.0/24");
        assert_eq!(r.next_hop, Some(peer));
        assert_eq!(r.as_path, vec![Asn(65001)]);
        assert_eq!(r.med, Some(42));
        assert_eq!(r.communities, vec![Community::new(65001, 10)]);
        assert_eq!(r.large_communities, vec![LargeCommunity::new(65001, 1, 2)]);
    }

    #[test]
    fn a_session_going_down_drops_its_routes() {
        let log = r#"{ "type": "update", "neighbor": { "address": { "peer": "192.0.2.1" }, "message": { "update": { "announce": { "ipv4 unicast": { "192.0.2.1": [ { "nlri": "198.18.1.0/24" } ] } } } } } }
{ "type": "state", "neighbor": { "address": { "peer": "192.0.2.1" }, "state": "down" } }"#;
        let h = History::replay(log);
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!h.routes.contains_key(&peer));
        assert_eq!(h.states.get(&peer).map(String::as_str), Some("down"));
    }

    #[test]
    fn renders_neighbour_with_statics_and_api() {
        let spec = RouterSpec::new(Asn(65002), Ipv4Addr::new(192, 0, 2, 2))
            .neighbor(
                NeighborSpec::new("192.0.2.1".parse().unwrap(), Asn(65001))
                    .local("192.0.2.2".parse().unwrap())
                    .password(Password::new("pw").unwrap())
                    .ttl(TtlMode::Gtsm { hops: 2 })
                    .graceful_restart(Duration::from_secs(30)),
            )
            .announce(
                Announcement::new("203.0.113.0/24".parse().unwrap())
                    .community(Community::new(65002, 20))
                    .large_community(LargeCommunity::new(65002, 5, 6))
                    .med(7),
            )
            .announce(Announcement::new("2001:db8:f::/48".parse().unwrap()));
        let c = render(
            &spec,
            "/usr/bin/python3",
            Path::new("/d/h.py"),
            Path::new("/d/r.jsonl"),
            Path::new("/d/c"),
        )
        .unwrap();
        for want in [
            "run /usr/bin/python3 /d/h.py /d/r.jsonl /d/c;",
            "local-address 192.0.2.2;",
            "md5-password \"pw\";",
            "outgoing-ttl 255;\n  incoming-ttl 254;",
            "graceful-restart 30;",
            "route 203.0.113.0/24 next-hop self community [ 65002:20 ] large-community [ 65002:5:6 ] med 7;",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
        assert!(
            !c.contains("2001:db8:f::/48"),
            "IPv6 prefix on an IPv4-only session:\n{c}"
        );
        assert!(
            !c.contains("listen 179;"),
            "an active neighbour got a listener:\n{c}"
        );
        let passive = RouterSpec {
            neighbors: vec![spec.neighbors[0].clone().passive()],
            ..spec.clone()
        };
        let c = render(
            &passive,
            "py",
            Path::new("h"),
            Path::new("r"),
            Path::new("c"),
        )
        .unwrap();
        assert!(c.contains("  passive true;\n  listen 179;"), "{c}");
    }

    #[test]
    fn interpreter_comes_from_the_shebang() {
        let dir = crate::workdir::TestDir::new("shebang").unwrap();
        let direct = dir.path().join("a");
        std::fs::write(&direct, "#!/usr/bin/python3\nprint()\n").unwrap();
        assert_eq!(interpreter(&direct), "/usr/bin/python3");
        let env = dir.path().join("b");
        std::fs::write(&env, "#!/usr/bin/env python3.11\n").unwrap();
        assert_eq!(interpreter(&env), "python3.11");
        assert_eq!(interpreter(Path::new("/nonexistent")), "/usr/bin/python3");
    }

    #[test]
    fn neighbour_without_local_address_is_unsupported() {
        let spec = RouterSpec::new(Asn(1), Ipv4Addr::new(1, 1, 1, 1))
            .neighbor(NeighborSpec::new("192.0.2.1".parse().unwrap(), Asn(2)));
        let err = render(&spec, "py", Path::new("h"), Path::new("r"), Path::new("c"));
        assert!(matches!(err, Err(Error::Unsupported { .. })));
    }
}
