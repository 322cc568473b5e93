//! Replays of recorded speaker inputs (`bgp/tests/replay/*.replay`) through
//! `SpeakerState`, each input at its time, checked against the effects written under it.
//!
//! A replay file reads top to bottom:
//!
//! ```text
//! # what the scenario shows
//! speaker asn=65001 router-id=10.0.0.1 stale-time=30   # first line: the configuration
//!   > remove-restart-marker                            # and what start-up does
//! at 0 add-peer 10.0.0.2 asn=65002                     # an input at t0 + 0 s …
//!   > md5 10.0.0.2 none                                # … and every effect, in order
//!   > spawn 10.0.0.2
//!   > start 10.0.0.2
//!   > ok
//! at 5 timers                                          # no `>` lines: no effect
//! ```
//!
//! BFD: a peer added with `bfd` (300 ms × 3), `bfd=MS` (both intervals) or `bfd-passive`
//! has a BFD session; the input `bfd PEER up|down|admin-down [cpi]` is its session's
//! change (`down`: the detection time passed; `admin-down`: the peer's AdminDown; `cpi`:
//! the peer's packets had the C bit set).
//!
//! Inputs are the state's events in a few words (see `event`), plus the queries `routes`,
//! `peers`, `deadline`, `exports PEER` (what the IO loop would send now) and `best` (the
//! best-path changes a subscriber would get now), whose answers are lines like effects.
//! A mismatch names the file and line and shows every effect the input had.

use super::state::{restarting, Effect, Event, Order, Reply, SpeakerState};
use crate::bfd::table::{Change, Order as BfdOrder};
use crate::bfd::{Diag, Hop, HopChoice, State as BfdState};
use crate::config::{
    BfdSettings, MaxPrefixAction, MaxPrefixConfig, PeerBfd, PeerConfig, PolicyRef, SpeakerConfig,
};
use crate::fsm::DownReason;
use crate::negotiate::{negotiate, NegotiationPolicy};
use crate::policy::Policy;
use crate::rib::OutBody;
use crate::session::SessionReport;
use crate::speaker::RouteQuery;
use crate::types::{Asn, Family, RouterId};
use crate::wire::attr::{AsPath, NextHop, PathAttrs};
use crate::wire::open::{Capability, GracefulRestartFamily, Open};
use crate::wire::route_refresh::{RefreshSubtype, RouteRefresh};
use crate::wire::update::{Nlri, Update};
use crate::wire::{Message, Notification};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

struct Replay {
    state: SpeakerState,
    cfg: SpeakerConfig,
    t0: Instant,
    /// Each peer's configuration as last given, to build its session's OPENs.
    peers: HashMap<IpAddr, PeerConfig>,
}

fn kv(args: &[&str]) -> Result<HashMap<String, String>, String> {
    let mut m = HashMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) => m.insert(k.to_string(), v.to_string()),
            None => m.insert(a.to_string(), String::new()),
        };
    }
    Ok(m)
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| format!("{what} {s:?}: {e}"))
}

fn addr(args: &[&str], i: usize) -> Result<IpAddr, String> {
    parse("address", args.get(i).ok_or("an address is missing")?)
}

fn speaker(args: &[&str]) -> Result<(SpeakerConfig, bool), String> {
    let m = kv(args)?;
    let asn = Asn(parse("asn", m.get("asn").ok_or("speaker: asn missing")?)?);
    let id = RouterId(parse(
        "router-id",
        m.get("router-id").ok_or("speaker: router-id missing")?,
    )?);
    let mut cfg = SpeakerConfig::new(asn, id);
    cfg.listen.clear();
    cfg.state_dir = Some("/var/lib/serval".into());
    for (k, v) in &m {
        match k.as_str() {
            "asn" | "router-id" | "restarting" | "marker" => {}
            "stale-time" => cfg.graceful_restart.stale_time = parse(k, v)?,
            "deferral" => cfg.graceful_restart.selection_deferral = parse(k, v)?,
            "restart-time" => cfg.graceful_restart.restart_time = parse(k, v)?,
            "gr" if v == "off" => cfg.graceful_restart.enabled = false,
            "bfd" => cfg.bfd = Some(crate::config::BfdConfig::default()),
            _ => return Err(format!("speaker: unknown setting {k}")),
        }
    }
    // `marker=SECS`: the restart marker holds a stop SECS seconds before start-up.
    let restarting = match m.get("marker") {
        Some(ago) => {
            let stopped = 1_000_000 - parse::<u64>("marker", ago)?;
            restarting(&cfg, Some(&stopped.to_string()), 1_000_000)
        }
        None => false,
    };
    Ok((cfg, restarting))
}

fn peer_config(args: &[&str]) -> Result<PeerConfig, String> {
    let address = addr(args, 0)?;
    let m = kv(&args[1..])?;
    let asn = Asn(parse("asn", m.get("asn").ok_or("peer: asn missing")?)?);
    let mut p = PeerConfig::new(address, asn);
    let reject = || Some(PolicyRef::Inline(Policy::reject_all()));
    for (k, v) in &m {
        match k.as_str() {
            "asn" => {}
            "max-prefix" => {
                p.max_prefix = Some(MaxPrefixConfig {
                    limit: parse(k, v)?,
                    action: MaxPrefixAction::Shutdown,
                    count_filtered: false,
                    restart_after: None,
                })
            }
            // Read below, once `max-prefix` is.
            "warn-only" | "restart-after" => {}
            "import" if v == "reject" => p.import = reject(),
            "export" if v == "reject" => p.export = reject(),
            "hold-time" => p.hold_time = Some(parse(k, v)?),
            "password" => p.password = Some(v.clone()),
            "name" => p.name = Some(v.clone()),
            "shutdown" => p.shutdown = true,
            "no-gr" => p.graceful_restart = false,
            "multihop" => p.multihop = Some(parse(k, v)?),
            "bfd" | "bfd-passive" => {
                let mut b = match p.bfd {
                    Some(PeerBfd::On(b)) => b,
                    _ => BfdSettings::default(),
                };
                if k == "bfd-passive" {
                    b.passive = Some(true);
                } else if !v.is_empty() {
                    b.min_rx = Some(parse(k, v)?);
                    b.min_tx = b.min_rx;
                }
                p.bfd = Some(PeerBfd::On(b));
            }
            "no-bfd" => p.bfd = Some(PeerBfd::Off),
            _ => return Err(format!("peer: unknown setting {k}")),
        }
    }
    if let Some(mp) = p.max_prefix.as_mut() {
        if m.contains_key("warn-only") {
            mp.action = MaxPrefixAction::Warn;
        }
        if let Some(v) = m.get("restart-after") {
            mp.restart_after = Some(parse("restart-after", v)?);
        }
    }
    Ok(p)
}

fn family(s: Option<&&str>) -> Result<Family, String> {
    match s.copied() {
        None | Some("ipv4-unicast") => Ok(Family::Ipv4Unicast),
        Some("ipv6-unicast") => Ok(Family::Ipv6Unicast),
        Some(x) => Err(format!("unknown family {x}")),
    }
}

fn nlri(args: &[&str]) -> Result<Vec<Nlri>, String> {
    args.iter()
        .map(|p| parse::<IpNet>("prefix", p).map(Nlri::new))
        .collect()
}

impl Replay {
    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    fn peer(&self, a: IpAddr) -> Result<&PeerConfig, String> {
        self.peers.get(&a).ok_or(format!("{a} was never added"))
    }

    /// The peer's session as it comes up: our OPEN from the state's capabilities, the
    /// peer's from the words after its address.
    fn established(&self, args: &[&str]) -> Result<Event, String> {
        let peer = addr(args, 0)?;
        let p = self.peer(peer)?;
        let m = kv(&args[1..])?;
        let local_as = p.local_asn.unwrap_or(self.cfg.asn);
        let ours = Open::new(
            local_as,
            self.cfg.hold_time,
            self.cfg.router_id,
            self.state.capabilities(p),
        );
        let mut caps: Vec<Capability> = p
            .families
            .iter()
            .map(|f| Capability::Multiprotocol(f.afi_safi()))
            .collect();
        caps.push(Capability::FourOctetAsn(p.asn));
        if !m.contains_key("no-route-refresh") {
            caps.push(Capability::RouteRefresh);
            if !m.contains_key("no-enhanced-refresh") {
                caps.push(Capability::EnhancedRouteRefresh);
            }
        }
        // gr=preserved (F bit set), gr=not-preserved, or no capability at all.
        if let Some(gr) = m.get("gr") {
            caps.push(Capability::GracefulRestart {
                restart_state: m.contains_key("restarting"),
                notification: false,
                restart_time: 120,
                families: p
                    .families
                    .iter()
                    .map(|f| GracefulRestartFamily {
                        afi_safi: f.afi_safi(),
                        forwarding_preserved: gr == "preserved",
                    })
                    .collect(),
            });
        }
        let id = match peer {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => Ipv4Addr::new(10, 255, 0, 1),
        };
        let theirs = Open::new(p.asn, 90, RouterId(id), caps);
        let negotiated = negotiate(
            &ours,
            &theirs,
            &NegotiationPolicy {
                peer_asn: Some(p.asn),
                keepalive: None,
            },
        )
        .map_err(|n| format!("the OPENs do not agree: {}/{}", n.code, n.subcode))?;
        let local: IpAddr = match peer {
            IpAddr::V4(_) => "10.0.0.1".parse().map_err(|_| "local")?,
            IpAddr::V6(_) => "fd00::1".parse().map_err(|_| "local")?,
        };
        Ok(Event::Established {
            peer,
            negotiated: Box::new(negotiated),
            local: SocketAddr::new(local, 179),
            remote: SocketAddr::new(peer, 40000),
            iface: None,
        })
    }

    fn event(&mut self, words: &[&str], out: &mut Vec<String>) -> Result<Option<Event>, String> {
        let (cmd, args) = words.split_first().ok_or("an input is missing")?;
        Ok(Some(match *cmd {
            "add-peer" | "update-peer" => {
                let p = peer_config(args)?;
                self.peers.insert(p.address, p.clone());
                if *cmd == "add-peer" {
                    Event::AddPeer(Box::new(p))
                } else {
                    Event::UpdatePeer(Box::new(p))
                }
            }
            "remove-peer" => Event::RemovePeer(addr(args, 0)?),
            "announce" => Event::Announce(Box::new(crate::config::Announcement::new(parse(
                "prefix",
                args.first().ok_or("a prefix is missing")?,
            )?))),
            "withdraw" => {
                Event::Withdraw(parse("prefix", args.first().ok_or("a prefix is missing")?)?)
            }
            "established" => self.established(args)?,
            // update PEER PREFIX… : the peer announces them, AS_PATH its AS.
            "update" => {
                let peer = addr(args, 0)?;
                let asn = self.peer(peer)?.asn;
                let next_hop = match peer {
                    IpAddr::V4(v4) => NextHop::V4(v4),
                    IpAddr::V6(v6) => NextHop::V6 {
                        global: v6,
                        link_local: None,
                    },
                };
                let attrs = PathAttrs {
                    as_path: AsPath::from_sequence([asn]),
                    next_hop: Some(next_hop),
                    ..PathAttrs::default()
                };
                Event::Session(SessionReport::Updates {
                    peer,
                    updates: vec![Update {
                        withdrawn: Vec::new(),
                        attrs: Some(attrs),
                        nlri: nlri(&args[1..])?,
                        mp_reach: None,
                        mp_unreach: None,
                    }],
                })
            }
            "unreach" => Event::Session(SessionReport::Updates {
                peer: addr(args, 0)?,
                updates: vec![Update {
                    withdrawn: nlri(&args[1..])?,
                    attrs: None,
                    nlri: Vec::new(),
                    mp_reach: None,
                    mp_unreach: None,
                }],
            }),
            "eor" => Event::Session(SessionReport::Updates {
                peer: addr(args, 0)?,
                updates: vec![Update::end_of_rib(family(args.get(1))?)],
            }),
            // route-refresh PEER request|begin|end: the peer's ROUTE-REFRESH.
            "route-refresh" => Event::Session(SessionReport::RouteRefresh {
                peer: addr(args, 0)?,
                refresh: RouteRefresh {
                    afi_safi: Family::Ipv4Unicast.afi_safi(),
                    subtype: match args.get(1).copied() {
                        Some("request") => RefreshSubtype::Request,
                        Some("begin") => RefreshSubtype::Begin,
                        Some("end") => RefreshSubtype::End,
                        x => return Err(format!("route-refresh: subtype {x:?}")),
                    },
                },
            }),
            "down" => Event::Session(SessionReport::Down {
                peer: addr(args, 0)?,
                reason: DownReason::ConnectionClosed,
                graceful: args.get(1) == Some(&"graceful"),
            }),
            "restart-time-expired" => Event::Session(SessionReport::RestartTimeExpired {
                peer: addr(args, 0)?,
            }),
            "accepted" => Event::Accepted(parse(
                "address",
                args.first().ok_or("accepted: from where?")?,
            )?),
            "timers" => Event::Timers,
            "bfd" => {
                let peer = addr(args, 0)?;
                let (from, to, diag, admin) = match args.get(1).copied() {
                    Some("up") => (BfdState::Init, BfdState::Up, Diag::None, false),
                    Some("down") => (
                        BfdState::Up,
                        BfdState::Down,
                        Diag::ControlDetectionTimeExpired,
                        false,
                    ),
                    Some("admin-down") => (
                        BfdState::Up,
                        BfdState::Down,
                        Diag::NeighborSignaledSessionDown,
                        true,
                    ),
                    x => return Err(format!("bfd: up, down or admin-down, not {x:?}")),
                };
                Event::Bfd(Change {
                    peer,
                    from,
                    to,
                    diag,
                    peer_admin_down: admin,
                    control_plane_independent: args.get(2) == Some(&"cpi"),
                })
            }
            "refresh" => Event::Refresh(addr(args, 0)?, None),
            "reset" => Event::Reset(addr(args, 0)?),
            "shutdown" => Event::Shutdown {
                graceful: args.first() == Some(&"graceful"),
            },
            "routes" => Event::Routes(RouteQuery::default()),
            "peers" => Event::Peers,
            "subscribe" => Event::Subscribe,
            "deadline" => {
                out.push(match self.state.next_deadline() {
                    Some(t) => format!("deadline {}", t.duration_since(self.t0).as_secs_f64()),
                    None => "deadline none".into(),
                });
                return Ok(None);
            }
            "exports" => {
                let peer = addr(args, 0)?;
                if self.state.deferring() {
                    out.push("held: deferring".into());
                    return Ok(None);
                }
                for f in self.state.export_families(peer) {
                    for u in self.state.drain_export(peer, f, usize::MAX) {
                        out.push(match u.body {
                            OutBody::Announce { nlri, .. } => {
                                format!("send {f} announce {}", prefixes(&nlri))
                            }
                            OutBody::Withdraw { nlri } => {
                                format!("send {f} withdraw {}", prefixes(&nlri))
                            }
                            OutBody::EndOfRib => format!("send {f} end-of-rib"),
                            OutBody::EndOfRefresh => format!("send {f} end-of-refresh"),
                        });
                    }
                }
                return Ok(None);
            }
            // In prefix order: the order of a batch means nothing.
            "best" => {
                let mut changes = self.state.take_best_changes();
                changes.sort_by_key(|c| c.prefix);
                for c in changes {
                    out.push(match c.route {
                        Some(r) => format!(
                            "best {} via {}",
                            c.prefix,
                            r.paths
                                .iter()
                                .map(|p| p.peer_address.map_or("local".into(), |a| a.to_string()))
                                .collect::<Vec<_>>()
                                .join(",")
                        ),
                        None => format!("best {} none", c.prefix),
                    });
                }
                return Ok(None);
            }
            x => return Err(format!("unknown input {x}")),
        }))
    }
}

fn prefixes(nlri: &[Nlri]) -> String {
    nlri.iter()
        .map(|n| n.prefix.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn notification(n: &Option<Notification>) -> String {
    match n {
        Some(n) => format!(" notification {}/{}", n.code, n.subcode),
        None => String::new(),
    }
}

/// One effect as the replay files write it.
fn render(e: &Effect, out: &mut Vec<String>) {
    out.push(match e {
        Effect::Spawn { peer, .. } => format!("spawn {peer}"),
        Effect::Session(p, o) => match o {
            Order::Start => format!("start {p}"),
            Order::Stop(n) => format!("stop {p}{}", notification(n)),
            Order::Shutdown { silent } => {
                format!("shutdown {p}{}", if *silent { " silent" } else { "" })
            }
            Order::SetCapabilities(caps) => {
                let gr = caps.iter().find_map(|c| match c {
                    Capability::GracefulRestart { restart_state, .. } => Some(*restart_state),
                    _ => None,
                });
                match gr {
                    Some(true) => format!("capabilities {p} restart-bit"),
                    Some(false) => format!("capabilities {p} no-restart-bit"),
                    None => format!("capabilities {p} no-gr"),
                }
            }
            Order::SendRefresh(f, t) => format!("ask {p} route-refresh {f} {t:?}"),
        },
        Effect::Forget(p) => format!("forget {p}"),
        Effect::Md5 { peer, key } => {
            format!("md5 {peer} {}", if key.is_some() { "key" } else { "none" })
        }
        Effect::Send(p, m) => match &**m {
            Message::RouteRefresh(rr) => format!(
                "send {p} route-refresh {:?} {:?}",
                rr.afi_safi.family(),
                rr.subtype
            ),
            m => format!("send {p} {m:?}"),
        },
        Effect::HandOver(p) => format!("hand-over {p}"),
        Effect::Bfd(BfdOrder::Add {
            peer,
            timers,
            passive,
            hop,
            ..
        }) => format!(
            "bfd-add {peer} tx={}ms rx={}ms x{} {}{}",
            timers.desired_min_tx.as_millis(),
            timers.required_min_rx.as_millis(),
            timers.detect_mult,
            match hop {
                HopChoice::Fixed(Hop::Single) => "single-hop".to_string(),
                HopChoice::Fixed(Hop::Multi { min_ttl }) => format!("multihop min-ttl={min_ttl}"),
                HopChoice::Connected => "single-hop-if-on-link".to_string(),
            },
            if *passive { " passive" } else { "" }
        ),
        Effect::Bfd(BfdOrder::Remove(p)) => format!("bfd-remove {p}"),
        Effect::WriteRestartMarker { .. } => "write-restart-marker".into(),
        Effect::RemoveRestartMarker { .. } => "remove-restart-marker".into(),
        Effect::Exit { silent } => format!("exit{}", if *silent { " silent" } else { "" }),
        Effect::Reply(r) => match r {
            Reply::Done(Ok(())) => "ok".into(),
            Reply::Done(Err(e)) => format!("error: {e}"),
            Reply::Withdrawn(r) => format!("withdrawn {r:?}"),
            Reply::Table(t) => format!("table of {} routes", t.len()),
            Reply::Routes(routes) => {
                for r in routes {
                    for p in &r.paths {
                        let mut line = format!(
                            "route {} from {}",
                            r.prefix,
                            p.peer.map_or("local".into(), |a| a.to_string())
                        );
                        for (set, word) in [
                            (p.best, "best"),
                            (p.stale, "stale"),
                            (p.filtered, "filtered"),
                        ] {
                            if set {
                                line.push(' ');
                                line.push_str(word);
                            }
                        }
                        out.push(line);
                    }
                }
                return;
            }
            Reply::Peers(rows) => {
                for row in rows {
                    let fams: Vec<String> = row
                        .families
                        .iter()
                        .map(|f| {
                            format!(
                                "{} received={} accepted={} stale={}",
                                f.family, f.received, f.accepted, f.stale
                            )
                        })
                        .collect();
                    let mut line = format!("peer {} {}", row.config.address, fams.join(" "));
                    if let Some(n) = &row.note {
                        line.push_str(&format!(" note={n:?}"));
                    }
                    out.push(line);
                }
                return;
            }
        },
    });
}

/// Runs one file; the mismatches, each naming its line.
fn run(path: &Path) -> Vec<String> {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let mut failures = Vec::new();
    // (line number, input words, expected lines)
    let mut steps: Vec<(usize, Vec<String>, Vec<String>)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(effect) = line.strip_prefix('>') {
            match steps.last_mut() {
                Some(s) => s.2.push(effect.trim().to_string()),
                None => failures.push(format!("{name}:{}: an effect before any input", i + 1)),
            }
        } else {
            steps.push((
                i + 1,
                line.split_whitespace().map(String::from).collect(),
                Vec::new(),
            ));
        }
    }
    let Some(((line, first, want), rest)) = steps.split_first() else {
        return vec![format!("{name}: empty")];
    };
    let words: Vec<&str> = first.iter().map(String::as_str).collect();
    if words.first() != Some(&"speaker") {
        return vec![format!("{name}:{line}: the first line is `speaker …`")];
    }
    let (cfg, restarting) = match speaker(&words[1..]) {
        Ok(c) => c,
        Err(e) => return vec![format!("{name}:{line}: {e}")],
    };
    let t0 = Instant::now();
    let mut effects = Vec::new();
    let state = match SpeakerState::new(cfg.clone(), restarting, t0, &mut effects) {
        Ok(s) => s,
        Err(e) => return vec![format!("{name}:{line}: {e}")],
    };
    let mut got = Vec::new();
    for e in &effects {
        render(e, &mut got);
    }
    check(&name, *line, "start-up", want, &got, &mut failures);
    let mut r = Replay {
        state,
        cfg,
        t0,
        peers: HashMap::new(),
    };
    for (line, words, want) in rest {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let (secs, input) = match words.as_slice() {
            ["at", t, input @ ..] => match t.parse::<f64>() {
                Ok(s) => (s, input),
                Err(_) => {
                    failures.push(format!("{name}:{line}: `at SECONDS input`"));
                    continue;
                }
            },
            _ => {
                failures.push(format!("{name}:{line}: `at SECONDS input`"));
                continue;
            }
        };
        let mut got = Vec::new();
        match r.event(input, &mut got) {
            Err(e) => {
                failures.push(format!("{name}:{line}: {e}"));
                continue;
            }
            Ok(Some(ev)) => {
                let mut effects = Vec::new();
                r.state.handle(r.at(secs), ev, &mut effects);
                for e in &effects {
                    render(e, &mut got);
                }
            }
            Ok(None) => {}
        }
        check(&name, *line, &input.join(" "), want, &got, &mut failures);
    }
    failures
}

fn check(
    name: &str,
    line: usize,
    input: &str,
    want: &[String],
    got: &[String],
    failures: &mut Vec<String>,
) {
    if want != got {
        failures.push(format!(
            "{name}:{line}: {input}\n  expected:\n{}\n  got:\n{}",
            want.iter()
                .map(|l| format!("    > {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
            got.iter()
                .map(|l| format!("    > {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ));
    }
}

#[test]
fn recorded_inputs_give_the_recorded_effects() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "replay"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no replay files in {}", dir.display());
    let failures: Vec<String> = files.iter().flat_map(|f| run(f)).collect();
    assert!(
        failures.is_empty(),
        "{} mismatches in {} replays:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
