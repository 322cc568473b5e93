//! serval's own speaker (`serval bgp`) as a test-bed daemon: configured from the same
//! [`RouterSpec`] as the other daemons, so a scenario reads the same whichever daemon
//! plays which side.
//!
//! The spec becomes a [`SpeakerConfig`] (the speaker's own typed configuration), which a
//! test may adjust before start or change later ([`Serval::reconfigure`], applied with
//! `serval bgp reload`); it is written as the TOML file `serval bgp --config` reads.
//! Queries go through `serval bgp status/routes --json` on the control socket and are
//! read into the speaker's own status types.
//!
//! Stopping comes in the three forms a restart test needs: [`BgpDaemon::stop`] is
//! `serval bgp shutdown` (Cease to every peer, routes withdrawn), [`Serval::stop_graceful`]
//! is SIGTERM (sessions closed without a NOTIFICATION, a marker in the state directory so
//! the next start is a graceful restart), [`BgpDaemon::kill`] is SIGKILL.

use crate::daemons::BgpDaemon;
use crate::error::{Error, Result};
use crate::netns::{self, Netns, NsChild, NsHandle};
use crate::observed::{Route, SessionStatus};
use crate::spec::{Announcement, Asn, Community, LargeCommunity, RouterSpec, TtlMode};
use crate::wait::wait_for;
use crate::workdir::TestDir;
use bgp::config::{AddPathConfig, PeerConfig, SpeakerConfig};
use bgp::policy::{CommunityValue, LargeCommunityValue};
use bgp::status::{PathEntry, PeerStatus, RouteEntry};
use ipnet::IpNet;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Overrides where the binary is looked for.
pub const BIN_ENV: &str = "SERVAL_BIN";

const KIND: &str = "serval";

/// How long a stop may take before the process is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// How long a freshly started speaker may take to answer on its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `serval` binary: `$SERVAL_BIN`, else `$CARGO_TARGET_DIR/debug/serval`, else the
/// target directory holding this test executable (`target/debug/deps/x` →
/// `target/debug/serval`).
pub fn binary() -> Result<PathBuf> {
    let exe =
        std::env::current_exe().map_err(|e| Error::io("locating", "the test executable", e))?;
    let candidates = candidates(
        std::env::var_os(BIN_ENV),
        std::env::var_os("CARGO_TARGET_DIR"),
        &exe,
    );
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            Error::InvalidSpec(format!(
                "no serval binary at {candidates:?}: run `cargo build -p serval` or set {BIN_ENV}"
            ))
        })
}

/// Where to look, in order.
fn candidates(bin: Option<OsString>, target_dir: Option<OsString>, exe: &Path) -> Vec<PathBuf> {
    if let Some(bin) = bin {
        // An explicit choice is the only candidate: never silently test another build.
        return vec![PathBuf::from(bin)];
    }
    let mut out = Vec::new();
    if let Some(dir) = target_dir {
        out.push(Path::new(&dir).join("debug").join("serval"));
    }
    // target/debug/deps/<test> → target/debug/serval
    if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
        out.push(profile_dir.join("serval"));
    }
    out
}

/// The speaker configuration for `spec`: one `[[peer]]` per neighbour, graceful restart
/// with the longest restart time any neighbour asks for (the speaker has one), quick
/// connection retries.
pub fn speaker_config(spec: &RouterSpec) -> Result<SpeakerConfig> {
    spec.validate()?;
    let mut cfg = SpeakerConfig::new(bgp::Asn(spec.asn.0), bgp::RouterId(spec.router_id));
    if !spec.listen.is_empty() {
        cfg.listen = spec
            .listen
            .iter()
            .map(|a| SocketAddr::new(*a, bgp::transport::BGP_PORT))
            .collect();
    }
    cfg.connect_retry = 1;
    let restart = spec
        .neighbors
        .iter()
        .filter_map(|n| n.graceful_restart)
        .max();
    cfg.graceful_restart.enabled = restart.is_some();
    if let Some(t) = restart {
        let secs = u16::try_from(t.as_secs()).unwrap_or(u16::MAX);
        cfg.graceful_restart.restart_time = secs;
        // A restarted peer's End-of-RIB is waited for as long as it may take to come
        // back; our own selection deferral is bounded by the same.
        cfg.graceful_restart.stale_time = u32::from(secs);
        cfg.graceful_restart.selection_deferral = u32::from(secs);
    }
    for n in &spec.neighbors {
        if !n.route_refresh {
            return Err(Error::Unsupported {
                daemon: KIND,
                feature: "turning route refresh off".into(),
            });
        }
        let mut p = PeerConfig::new(n.address, bgp::Asn(n.asn.0));
        p.passive = n.passive;
        p.password = n.password.as_ref().map(|pw| pw.as_str().to_string());
        p.hold_time = n.hold_time;
        match n.ttl {
            TtlMode::Direct => {}
            TtlMode::Multihop { ttl } => p.multihop = Some(ttl),
            TtlMode::Gtsm { hops } => p.ttl_security = Some(hops),
        }
        p.source_address = n.local_address;
        p.route_reflector_client = n.rr_client;
        p.graceful_restart = n.graceful_restart.is_some();
        p.families = n
            .families
            .iter()
            .map(|f| match f {
                crate::spec::Family::Ipv4Unicast => bgp::Family::Ipv4Unicast,
                crate::spec::Family::Ipv6Unicast => bgp::Family::Ipv6Unicast,
            })
            .collect();
        if n.add_path {
            p.add_path = Some(AddPathConfig::Both);
        }
        p.bfd = n.bfd.map(|b| {
            bgp::config::PeerBfd::On(bgp::config::BfdSettings {
                min_rx: Some(b.min_rx_ms),
                min_tx: Some(b.min_tx_ms),
                multiplier: Some(b.multiplier),
                passive: None,
            })
        });
        cfg.peers.push(p);
    }
    cfg.announce = spec.announce.iter().map(announcement).collect();
    cfg.validate()
        .map_err(|e| Error::InvalidSpec(format!("serval config: {e}")))?;
    Ok(cfg)
}

/// The speaker's form of an announcement.
pub fn announcement(a: &Announcement) -> bgp::config::Announcement {
    let mut out = bgp::config::Announcement::new(a.prefix);
    out.med = a.med;
    out.local_pref = a.local_pref;
    out.communities = a
        .communities
        .iter()
        .map(|c| {
            CommunityValue(bgp::wire::attr::Community(
                (u32::from(c.asn) << 16) | u32::from(c.value),
            ))
        })
        .collect();
    out.large_communities = a
        .large_communities
        .iter()
        .map(|c| {
            LargeCommunityValue(bgp::wire::attr::LargeCommunity {
                global: c.global,
                local1: c.local1,
                local2: c.local2,
            })
        })
        .collect();
    out
}

/// The TOML file for `cfg`. Passwords are not serialized by the speaker's types (status
/// output must not show them), so they are written in here.
pub fn render(cfg: &SpeakerConfig) -> Result<String> {
    let bad = |e: &dyn std::fmt::Display| Error::InvalidSpec(format!("serval config: {e}"));
    let mut table = toml::Table::try_from(cfg).map_err(|e| bad(&e))?;
    if let Some(toml::Value::Array(peers)) = table.get_mut("peer") {
        for (value, p) in peers.iter_mut().zip(&cfg.peers) {
            if let (toml::Value::Table(t), Some(pw)) = (value, &p.password) {
                t.insert("password".into(), toml::Value::String(pw.clone()));
            }
        }
    }
    toml::to_string(&table).map_err(|e| bad(&e))
}

/// A `serval bgp` speaker running in a namespace.
#[derive(Debug)]
pub struct Serval {
    spec: RouterSpec,
    config: SpeakerConfig,
    ns: NsHandle,
    config_path: PathBuf,
    socket: PathBuf,
    state_dir: PathBuf,
    log: PathBuf,
    child: Option<NsChild>,
}

impl Serval {
    /// Starts serval for `spec` after `adjust` changed what the spec cannot say (a
    /// maximum-prefix limit, an export policy…).
    pub fn start_with(
        ns: &Netns,
        dir: &TestDir,
        spec: RouterSpec,
        adjust: impl FnOnce(&mut SpeakerConfig),
    ) -> Result<Serval> {
        let mut config = speaker_config(&spec)?;
        adjust(&mut config);
        config
            .validate()
            .map_err(|e| Error::InvalidSpec(format!("serval config: {e}")))?;
        let sub = dir.subdir(&format!("serval-{}", spec.router_id))?;
        let mut s = Serval {
            spec,
            config,
            ns: ns.handle(),
            config_path: sub.join("serval.toml"),
            socket: sub.join("serval.sock"),
            state_dir: sub.join("state"),
            log: sub.join("serval.log"),
            child: None,
        };
        s.launch()?;
        Ok(s)
    }

    fn write_config(&self) -> Result<()> {
        let text = render(&self.config)?;
        std::fs::write(&self.config_path, text)
            .map_err(|e| Error::io("writing", &self.config_path, e))
    }

    /// Starts the process with the current configuration and waits until it answers.
    pub fn launch(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err(Error::InvalidSpec("serval is already running".into()));
        }
        self.write_config()?;
        let bin = binary()?;
        let argv = [
            bin.to_string_lossy().into_owned(),
            "bgp".into(),
            "--config".into(),
            self.config_path.to_string_lossy().into_owned(),
            "--socket".into(),
            self.socket.to_string_lossy().into_owned(),
            "--state-dir".into(),
            self.state_dir.to_string_lossy().into_owned(),
            "--log-level".into(),
            "info,bgp=debug".into(),
        ];
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.child = Some(self.ns.spawn(&refs, Some(&self.log))?);
        let mut died = None;
        let ready = wait_for(
            READY_TIMEOUT,
            "serval to answer on its control socket",
            || {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    died = Some(status);
                    return Ok(());
                }
                self.status().map(drop)
            },
            |_| true,
        );
        if let Some(status) = died {
            self.child = None;
            return Err(Error::Command {
                command: "serval bgp".into(),
                status: format!("exited early, {status}"),
                stdout: String::new(),
                stderr: self.log(),
            });
        }
        ready.map(drop)
    }

    /// Runs `serval bgp ARGS… --socket S` (the control socket needs no namespace).
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let bin = binary()?;
        let mut cmd = Command::new(bin);
        cmd.arg("bgp")
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .env("SERVAL_LOG", "warn");
        netns::run(&mut cmd)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let out = self.cli(args)?;
        serde_json::from_str(&out)
            .map_err(|e| Error::parse(KIND, format!("serval bgp {}", args.join(" ")), e, &out))
    }

    /// `serval bgp status --json`.
    pub fn status(&self) -> Result<Vec<PeerStatus>> {
        self.json(&["status", "--json"])
    }

    /// The status of one peer.
    pub fn peer_status(&self, peer: IpAddr) -> Result<PeerStatus> {
        self.status()?
            .into_iter()
            .find(|p| p.address == peer)
            .ok_or_else(|| Error::InvalidSpec(format!("serval has no peer {peer}")))
    }

    /// `serval bgp routes --json`: the Loc-RIB with every path.
    pub fn routes(&self) -> Result<Vec<RouteEntry>> {
        self.json(&["routes", "--json"])
    }

    /// `serval bgp refresh PEER`: ask the peer to send its routes again.
    pub fn refresh(&self, peer: IpAddr) -> Result<()> {
        self.cli(&["refresh", &peer.to_string()]).map(drop)
    }

    /// `serval bgp reset PEER`.
    pub fn reset(&self, peer: IpAddr) -> Result<()> {
        self.cli(&["reset", &peer.to_string()]).map(drop)
    }

    /// Waits until the session with `peer` is no longer established.
    pub fn wait_until_down(&self, peer: IpAddr) -> Result<PeerStatus> {
        wait_for(
            READY_TIMEOUT,
            &format!("serval's session with {peer} to go down"),
            || self.peer_status(peer),
            |p| !p.state.is_established(),
        )
    }

    /// The configuration serval runs with (as last written).
    pub fn config(&self) -> &SpeakerConfig {
        &self.config
    }

    /// Changes the configuration file and, while running, applies it with `serval bgp
    /// reload`; returns what the reload reported.
    pub fn reconfigure(&mut self, change: impl FnOnce(&mut SpeakerConfig)) -> Result<String> {
        change(&mut self.config);
        self.config
            .validate()
            .map_err(|e| Error::InvalidSpec(format!("serval config: {e}")))?;
        self.write_config()?;
        if self.child.is_some() {
            self.cli(&["reload"])
        } else {
            Ok(String::new())
        }
    }

    /// Like [`Serval::reconfigure`], but applied with SIGHUP (the daemon's reload signal)
    /// instead of the control socket.
    pub fn reconfigure_by_signal(&mut self, change: impl FnOnce(&mut SpeakerConfig)) -> Result<()> {
        change(&mut self.config);
        self.config
            .validate()
            .map_err(|e| Error::InvalidSpec(format!("serval config: {e}")))?;
        self.write_config()?;
        let Some(child) = &self.child else {
            return Ok(());
        };
        let pid = i32::try_from(child.pid())
            .map_err(|_| Error::InvalidSpec(format!("pid {} out of range", child.pid())))?;
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            return Err(Error::io(
                "signalling",
                "serval",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// SIGTERM: a stop for a graceful restart. Peers get no NOTIFICATION and keep our
    /// routes; the state directory remembers it for the next start.
    pub fn stop_graceful(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.terminate(STOP_GRACE)?;
        }
        Ok(())
    }

    /// Whether the process runs.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn update_config_announcements(&mut self) {
        self.config.announce = self.spec.announce.iter().map(announcement).collect();
    }
}

impl BgpDaemon for Serval {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn start(ns: &Netns, dir: &TestDir, spec: RouterSpec) -> Result<Self> {
        Serval::start_with(ns, dir, spec, |_| {})
    }

    fn spec(&self) -> &RouterSpec {
        &self.spec
    }

    fn sessions(&self) -> Result<Vec<SessionStatus>> {
        Ok(self
            .status()?
            .into_iter()
            .map(|p| SessionStatus {
                neighbor: p.address,
                established: p.state.is_established(),
                state: match &p.last_error {
                    Some(e) if !p.state.is_established() => format!("{} ({e})", p.state),
                    _ => p.state.to_string(),
                },
            })
            .collect())
    }

    fn received_routes(&self, neighbor: IpAddr) -> Result<Vec<Route>> {
        Ok(self
            .routes()?
            .iter()
            .flat_map(|r| {
                r.paths
                    .iter()
                    .filter(|p| p.peer == Some(neighbor) && !p.filtered)
                    .map(|p| route_of(r.prefix, p))
            })
            .collect())
    }

    fn rib(&self) -> Result<Vec<Route>> {
        Ok(self
            .routes()?
            .iter()
            .flat_map(|r| {
                r.paths
                    .iter()
                    .filter(|p| !p.filtered)
                    .map(|p| route_of(r.prefix, p))
            })
            .collect())
    }

    /// `serval bgp announce` while running; otherwise only the configuration changes,
    /// for the next start.
    fn announce(&mut self, a: Announcement) -> Result<()> {
        if self.child.is_some() {
            let prefix = a.prefix.to_string();
            let mut args = vec!["announce".to_string(), prefix];
            for c in &a.communities {
                args.extend(["--community".into(), c.to_string()]);
            }
            for c in &a.large_communities {
                args.extend(["--large-community".into(), c.to_string()]);
            }
            if let Some(med) = a.med {
                args.extend(["--med".into(), med.to_string()]);
            }
            if let Some(lp) = a.local_pref {
                args.extend(["--local-pref".into(), lp.to_string()]);
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            self.cli(&refs)?;
        }
        self.spec.upsert_announcement(a);
        self.update_config_announcements();
        self.write_config()
    }

    /// `serval bgp withdraw` while running; otherwise only the configuration changes.
    fn withdraw(&mut self, prefix: IpNet) -> Result<()> {
        if self.child.is_some() {
            self.cli(&["withdraw", &prefix.trunc().to_string()])?;
        }
        self.spec.remove_announcement(prefix);
        self.update_config_announcements();
        self.write_config()
    }

    /// `serval bgp shutdown`: Cease to every peer, routes withdrawn, no restart marker.
    fn stop(&mut self) -> Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        // If the request fails the process is gone or stuck; terminate handles both.
        let _ = self.cli(&["shutdown"]);
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while std::time::Instant::now() < deadline {
            if c.try_wait()?.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c.terminate(Duration::from_secs(1)).map(drop)
    }

    fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
        Ok(())
    }

    /// A graceful restart: SIGTERM, then start again with the same configuration and
    /// state directory.
    fn restart(&mut self) -> Result<()> {
        self.stop_graceful()?;
        self.launch()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One path of `serval bgp routes --json` in the test bed's form.
pub fn route_of(prefix: IpNet, p: &PathEntry) -> Route {
    let mut r = Route::new(prefix);
    if let Some(nh) = &p.next_hop {
        // "2001:db8::1 (fe80::1)": global, then link-local in parentheses.
        let mut words = nh.split_whitespace();
        r.next_hop = words.next().and_then(|w| w.parse().ok());
        r.link_local_next_hop = words
            .next()
            .map(|w| w.trim_matches(|c| c == '(' || c == ')'))
            .and_then(|w| w.parse::<Ipv6Addr>().ok());
    }
    r.as_path = crate::daemons::numbers(&p.as_path)
        .into_iter()
        .map(|n| Asn(n as u32))
        .collect();
    r.communities = p
        .communities
        .iter()
        .map(|c| Community::from_u32(c.0 .0))
        .collect();
    r.large_communities = p
        .large_communities
        .iter()
        .map(|c| LargeCommunity::new(c.0.global, c.0.local1, c.0.local2))
        .collect();
    r.med = p.med;
    r.local_pref = p.local_pref;
    r.stale = Some(p.stale);
    r.from = p.peer;
    r.originator_id = p.originator_id.as_deref().and_then(|s| s.parse().ok());
    r.cluster_list = p
        .cluster_list
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{NeighborSpec, Password};
    use std::net::Ipv4Addr;

    #[test]
    fn explicit_binary_wins_alone() {
        let c = candidates(
            Some("/opt/serval".into()),
            Some("/t".into()),
            Path::new("/x/debug/deps/t"),
        );
        assert_eq!(c, vec![PathBuf::from("/opt/serval")]);
    }

    #[test]
    fn target_dir_then_next_to_the_test_executable() {
        let c = candidates(
            None,
            Some("/t".into()),
            Path::new("/w/target/debug/deps/testbed-1"),
        );
        assert_eq!(
            c,
            vec![
                PathBuf::from("/t/debug/serval"),
                PathBuf::from("/w/target/debug/serval")
            ]
        );
    }

    fn spec() -> RouterSpec {
        RouterSpec::new(Asn(65001), Ipv4Addr::new(192, 0, 2, 1))
            .neighbor(
                NeighborSpec::new("192.0.2.2".parse().unwrap(), Asn(65002))
                    .local("192.0.2.1".parse().unwrap())
                    .password(Password::new("s3cret").unwrap())
                    .ttl(TtlMode::Gtsm { hops: 2 })
                    .hold_time(9)
                    .graceful_restart(Duration::from_secs(30))
                    .passive(),
            )
            .neighbor(NeighborSpec::new("2001:db8::2".parse().unwrap(), Asn(65001)).rr_client())
            .announce(
                Announcement::new("203.0.113.0/24".parse().unwrap())
                    .community(Community::new(65001, 10))
                    .large_community(LargeCommunity::new(65001, 1, 2))
                    .med(42)
                    .local_pref(200),
            )
    }

    /// The file the runner writes is one the speaker reads back to the same value,
    /// password included.
    #[test]
    fn rendered_config_reads_back_as_the_same_speaker_config() {
        let cfg = speaker_config(&spec()).unwrap();
        let text = render(&cfg).unwrap();
        let back = SpeakerConfig::from_toml(&text).unwrap();
        assert_eq!(back, cfg, "{text}");
        assert_eq!(back.peers[0].password.as_deref(), Some("s3cret"), "{text}");
    }

    #[test]
    fn spec_maps_onto_peers_and_announcements() {
        let cfg = speaker_config(&spec()).unwrap();
        let p = &cfg.peers[0];
        assert!(p.passive);
        assert_eq!(p.ttl_security, Some(2));
        assert_eq!(p.hold_time, Some(9));
        assert_eq!(p.source_address, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(p.families, vec![bgp::Family::Ipv4Unicast]);
        assert!(p.graceful_restart);
        assert!(cfg.peers[1].route_reflector_client);
        assert!(!cfg.peers[1].graceful_restart);
        assert_eq!(cfg.graceful_restart.restart_time, 30);
        assert!(cfg.graceful_restart.enabled);
        let a = &cfg.announce[0];
        assert_eq!(a.med, Some(42));
        assert_eq!(a.local_pref, Some(200));
        assert_eq!(a.communities[0].to_string(), "65001:10");
        assert_eq!(a.large_communities[0].to_string(), "65001:1:2");
    }

    #[test]
    fn no_graceful_restart_unless_a_neighbour_asks() {
        let spec = RouterSpec::new(Asn(65001), Ipv4Addr::new(192, 0, 2, 1))
            .neighbor(NeighborSpec::new("192.0.2.2".parse().unwrap(), Asn(65002)));
        assert!(!speaker_config(&spec).unwrap().graceful_restart.enabled);
        let off = spec.clone().neighbor(
            NeighborSpec::new("192.0.2.3".parse().unwrap(), Asn(65002)).no_route_refresh(),
        );
        assert!(matches!(
            speaker_config(&off),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn paths_read_into_routes() {
        let p: PathEntry = serde_json::from_value(serde_json::json!({
            "peer": "2001:db8::2", "path-id": 0, "best": true, "multipath": true,
            "stale": true, "filtered": false,
            "next-hop": "2001:db8::2 (fe80::2)", "as-path": "65002 65010",
            "origin": "igp", "med": 7, "local-pref": null,
            "communities": ["65002:20", "no-export"], "large-communities": ["65002:5:6"],
            "ext-communities": [], "atomic-aggregate": false, "aggregator": null,
            "originator-id": "192.0.2.9", "cluster-list": ["192.0.2.1"],
            "unknown-attributes": []
        }))
        .unwrap();
        let r = route_of("2001:db8:f2::/48".parse().unwrap(), &p);
        assert_eq!(r.next_hop, Some("2001:db8::2".parse().unwrap()));
        assert_eq!(r.link_local_next_hop, Some("fe80::2".parse().unwrap()));
        assert_eq!(r.as_path, vec![Asn(65002), Asn(65010)]);
        assert_eq!(
            r.communities,
            vec![Community::new(65002, 20), Community::new(0xffff, 0xff01)]
        );
        assert_eq!(r.large_communities, vec![LargeCommunity::new(65002, 5, 6)]);
        assert_eq!(r.med, Some(7));
        assert_eq!(r.stale, Some(true));
        assert_eq!(r.originator_id, Some("192.0.2.9".parse().unwrap()));
        assert_eq!(
            r.cluster_list,
            vec!["192.0.2.1".parse::<Ipv4Addr>().unwrap()]
        );
    }
}
