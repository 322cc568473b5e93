//! The speaker's configuration: what `serval bgp --config FILE` reads (TOML) and what the
//! node agent builds in code. Parsed into typed values at the edge; an error names the
//! field and the bad value.
//!
//! ```toml
//! asn = 65001
//! router-id = "10.0.0.1"
//! listen = ["0.0.0.0:179", "[::]:179"]
//!
//! [graceful-restart]
//! restart-time = 120
//!
//! [policy.from-tor]
//! default = "reject"
//! [[policy.from-tor.rules]]
//! match = { prefix = [{ prefix = "0.0.0.0/0" }] }
//! then = { action = "accept" }
//!
//! [bfd]                 # BFD for every peer (RFC 5880/5881/5883), these timers
//! min-rx = 300           # milliseconds
//! min-tx = 300
//! multiplier = 3
//!
//! [[peer]]
//! address = "10.0.0.254"
//! asn = 65000
//! password = "s3cret"
//! import = "from-tor"
//! bfd = { min-rx = 100, min-tx = 100 }   # this peer's own; `bfd = false`: none
//!
//! [[announce]]
//! prefix = "10.244.1.0/26"
//! communities = ["65001:100"]
//! ```

use crate::policy::{CommunityValue, LargeCommunityValue, Policy};
use crate::rib::{MaxPrefix, NextHopMode};
use crate::types::{Asn, Family, RouterId};
use crate::wire::attr::Origin;
use crate::wire::open::AddPathMode;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0}")]
    Syntax(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole speaker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SpeakerConfig {
    pub asn: Asn,
    pub router_id: RouterId,
    /// Addresses to accept sessions on; empty: only connect out.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Defaults for every peer.
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    #[serde(default = "default_connect_retry")]
    pub connect_retry: u16,
    /// RFC 4456 cluster id when reflecting routes; defaults to the router id.
    #[serde(default)]
    pub cluster_id: Option<Ipv4Addr>,
    /// ECMP: install up to this many equal paths per prefix (1: best only).
    #[serde(default = "one")]
    pub max_paths: u8,
    /// Accept multipath across different neighbour ASes.
    #[serde(default)]
    pub multipath_relax: bool,
    #[serde(default)]
    pub always_compare_med: bool,
    #[serde(default)]
    pub graceful_restart: GracefulRestartConfig,
    /// Where the speaker remembers that it stopped for a graceful restart.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Named policies that peers refer to by name.
    #[serde(default, rename = "policy")]
    pub policies: BTreeMap<String, Policy>,
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerConfig>,
    /// Prefixes this speaker originates.
    #[serde(default, rename = "announce")]
    pub announce: Vec<Announcement>,
    /// BFD for every peer that does not say otherwise (`bfd = false`, or its own
    /// settings), with these settings.
    #[serde(default)]
    pub bfd: Option<BfdConfig>,
}

/// BFD on a BGP session (RFC 5880 asynchronous mode; RFC 5882 coupling): intervals in
/// milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BfdConfig {
    /// The fastest we accept the peer's packets (Required Min RX Interval).
    #[serde(default = "bfd_interval")]
    pub min_rx: u32,
    /// How often we would like to send (Desired Min TX Interval).
    #[serde(default = "bfd_interval")]
    pub min_tx: u32,
    /// The peer declares the session down after this many intervals without a packet.
    #[serde(default = "bfd_multiplier")]
    pub multiplier: u8,
    /// Send nothing until the peer has sent (RFC 5880 §6.1 passive role).
    #[serde(default)]
    pub passive: bool,
}

fn bfd_interval() -> u32 {
    300
}
fn bfd_multiplier() -> u8 {
    3
}

impl Default for BfdConfig {
    /// 300 ms × 3, what `serval bgp --bfd` turns on.
    fn default() -> Self {
        BfdConfig {
            min_rx: bfd_interval(),
            min_tx: bfd_interval(),
            multiplier: bfd_multiplier(),
            passive: false,
        }
    }
}

impl BfdConfig {
    pub fn timers(&self) -> crate::bfd::Timers {
        crate::bfd::Timers {
            desired_min_tx: std::time::Duration::from_millis(u64::from(self.min_tx)),
            required_min_rx: std::time::Duration::from_millis(u64::from(self.min_rx)),
            detect_mult: self.multiplier,
        }
    }

    fn check(&self, field: &str) -> Result<(), ConfigError> {
        for (name, v) in [("min-rx", self.min_rx), ("min-tx", self.min_tx)] {
            if v == 0 || v > 3_600_000 {
                return Err(invalid(
                    format!("{field}.{name}"),
                    format!("{v} ms: must be between 1 ms and one hour"),
                ));
            }
        }
        if self.multiplier == 0 {
            return Err(invalid(format!("{field}.multiplier"), "must be at least 1"));
        }
        Ok(())
    }
}

/// Some BFD settings: the rest come from `[bfd]`, else the defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BfdSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rx: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tx: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<bool>,
}

impl BfdSettings {
    /// These settings over `base`.
    pub fn over(&self, base: BfdConfig) -> BfdConfig {
        BfdConfig {
            min_rx: self.min_rx.unwrap_or(base.min_rx),
            min_tx: self.min_tx.unwrap_or(base.min_tx),
            multiplier: self.multiplier.unwrap_or(base.multiplier),
            passive: self.passive.unwrap_or(base.passive),
        }
    }
}

impl From<BfdConfig> for BfdSettings {
    fn from(c: BfdConfig) -> Self {
        BfdSettings {
            min_rx: Some(c.min_rx),
            min_tx: Some(c.min_tx),
            multiplier: Some(c.multiplier),
            passive: Some(c.passive),
        }
    }
}

/// A peer's `bfd`: `false` (none, whatever `[bfd]` says), `true` (on, with `[bfd]`'s
/// settings or the defaults) or a table of its own settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerBfd {
    Off,
    On(BfdSettings),
}

impl Serialize for PeerBfd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PeerBfd::Off => s.serialize_bool(false),
            PeerBfd::On(settings) => settings.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for PeerBfd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PeerBfd;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or a table { min-rx, min-tx, multiplier, passive }")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<PeerBfd, E> {
                Ok(if v {
                    PeerBfd::On(BfdSettings::default())
                } else {
                    PeerBfd::Off
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<PeerBfd, A::Error> {
                BfdSettings::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(PeerBfd::On)
            }
        }
        d.deserialize_any(V)
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec![
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            crate::transport::BGP_PORT,
        ),
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            crate::transport::BGP_PORT,
        ),
    ]
}
fn default_hold_time() -> u16 {
    90
}
fn default_connect_retry() -> u16 {
    5
}
fn one() -> u8 {
    1
}
fn yes() -> bool {
    true
}
fn bgp_port() -> u16 {
    crate::transport::BGP_PORT
}

/// RFC 4724 graceful restart, both as restarting speaker and as helper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GracefulRestartConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds peers keep our routes while we restart (the capability's Restart Time).
    #[serde(default = "default_restart_time")]
    pub restart_time: u16,
    /// Seconds we keep a restarted peer's stale routes once its session is back, waiting
    /// for its End-of-RIB.
    #[serde(default = "default_stale_time")]
    pub stale_time: u32,
    /// Seconds a restarting speaker waits for its peers' End-of-RIB before it selects
    /// and advertises routes (RFC 4724 §4.1 selection deferral).
    #[serde(default = "default_deferral")]
    pub selection_deferral: u32,
    /// RFC 8538: NOTIFICATIONs other than Hard Reset also end sessions gracefully.
    #[serde(default = "yes")]
    pub notification: bool,
}

fn default_restart_time() -> u16 {
    120
}
fn default_stale_time() -> u32 {
    360
}
fn default_deferral() -> u32 {
    60
}

impl Default for GracefulRestartConfig {
    fn default() -> Self {
        GracefulRestartConfig {
            enabled: true,
            restart_time: default_restart_time(),
            stale_time: default_stale_time(),
            selection_deferral: default_deferral(),
            notification: true,
        }
    }
}

/// A policy given inline or by the name of a `[policy.NAME]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PolicyRef {
    Named(String),
    Inline(Policy),
}

/// What happens when a peer sends more prefixes than `limit`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaxPrefixAction {
    /// Cease / Maximum Number of Prefixes Reached; the session stays down until
    /// `restart-after` seconds passed (if given) or an operator restarts it.
    #[default]
    Shutdown,
    /// Log and count only.
    Warn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MaxPrefixConfig {
    pub limit: u32,
    #[serde(default)]
    pub action: MaxPrefixAction,
    /// Count every prefix received, also those the import policy rejects.
    #[serde(default)]
    pub count_filtered: bool,
    #[serde(default)]
    pub restart_after: Option<u32>,
}

impl MaxPrefixConfig {
    pub fn to_rib(self) -> MaxPrefix {
        MaxPrefix {
            limit: self.limit,
            count_received: self.count_filtered,
            warn_only: self.action == MaxPrefixAction::Warn,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddPathConfig {
    Receive,
    Send,
    Both,
}

impl AddPathConfig {
    pub fn mode(self) -> AddPathMode {
        match self {
            AddPathConfig::Receive => AddPathMode::Receive,
            AddPathConfig::Send => AddPathMode::Send,
            AddPathConfig::Both => AddPathMode::Both,
        }
    }
}

/// One neighbour.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PeerConfig {
    pub address: IpAddr,
    pub asn: Asn,
    #[serde(default = "bgp_port")]
    pub port: u16,
    /// Shown by the status command.
    #[serde(default)]
    pub name: Option<String>,
    /// Only accept the peer's connection, never connect out.
    #[serde(default)]
    pub passive: bool,
    /// RFC 2385 TCP MD5 password.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    #[serde(default)]
    pub hold_time: Option<u16>,
    #[serde(default)]
    pub keepalive: Option<u16>,
    #[serde(default)]
    pub connect_retry: Option<u16>,
    /// eBGP multihop: the TTL of our packets.
    #[serde(default)]
    pub multihop: Option<u8>,
    /// RFC 5082 GTSM: the peer is at most this many hops away.
    #[serde(default)]
    pub ttl_security: Option<u8>,
    #[serde(default)]
    pub source_address: Option<IpAddr>,
    /// Our AS on this session when it differs from the speaker's.
    #[serde(default)]
    pub local_asn: Option<Asn>,
    #[serde(default)]
    pub route_reflector_client: bool,
    #[serde(default)]
    pub next_hop: NextHopMode,
    #[serde(default)]
    pub allowas_in: u8,
    #[serde(default = "default_families")]
    pub families: Vec<Family>,
    #[serde(default)]
    pub add_path: Option<AddPathConfig>,
    /// With add-path send, how many paths per prefix to advertise.
    #[serde(default)]
    pub add_path_send_max: Option<u8>,
    #[serde(default)]
    pub max_prefix: Option<MaxPrefixConfig>,
    #[serde(default)]
    pub import: Option<PolicyRef>,
    #[serde(default)]
    pub export: Option<PolicyRef>,
    /// Take part in graceful restart with this peer.
    #[serde(default = "yes")]
    pub graceful_restart: bool,
    /// The Restart Time we advertise to this peer, in seconds, instead of
    /// `[graceful-restart] restart-time`: how long it keeps our routes while we restart.
    /// 0 asks it to keep nothing.
    #[serde(default)]
    pub restart_time: Option<u16>,
    /// With RFC 8538 negotiated, whether this peer's routes stay (stale) when its hold
    /// timer expires. Off means a peer that goes silent loses its routes with the hold
    /// time, while one whose connection closes (a process restart) keeps them.
    #[serde(default = "yes")]
    pub graceful_on_hold_expiry: bool,
    /// Our IPv6 address for the next hop of IPv6 routes sent over an IPv4 session.
    #[serde(default)]
    pub local_ipv6: Option<Ipv6Addr>,
    /// Configured but administratively down.
    #[serde(default)]
    pub shutdown: bool,
    /// BFD on this session; unset: as `[bfd]` says (see `SpeakerConfig::bfd_of`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<PeerBfd>,
}

/// Shows every field but the password, which is only said to be set: configurations
/// end up in logs and error messages.
impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so that a new field cannot be left out (or leak) unnoticed.
        let PeerConfig {
            address,
            asn,
            port,
            name,
            passive,
            password,
            hold_time,
            keepalive,
            connect_retry,
            multihop,
            ttl_security,
            source_address,
            local_asn,
            route_reflector_client,
            next_hop,
            allowas_in,
            families,
            add_path,
            add_path_send_max,
            max_prefix,
            import,
            export,
            graceful_restart,
            restart_time,
            graceful_on_hold_expiry,
            local_ipv6,
            shutdown,
            bfd,
        } = self;
        f.debug_struct("PeerConfig")
            .field("address", address)
            .field("asn", asn)
            .field("port", port)
            .field("name", name)
            .field("passive", passive)
            .field("password", &password.as_ref().map(|_| Redacted))
            .field("hold_time", hold_time)
            .field("keepalive", keepalive)
            .field("connect_retry", connect_retry)
            .field("multihop", multihop)
            .field("ttl_security", ttl_security)
            .field("source_address", source_address)
            .field("local_asn", local_asn)
            .field("route_reflector_client", route_reflector_client)
            .field("next_hop", next_hop)
            .field("allowas_in", allowas_in)
            .field("families", families)
            .field("add_path", add_path)
            .field("add_path_send_max", add_path_send_max)
            .field("max_prefix", max_prefix)
            .field("import", import)
            .field("export", export)
            .field("graceful_restart", graceful_restart)
            .field("restart_time", restart_time)
            .field("graceful_on_hold_expiry", graceful_on_hold_expiry)
            .field("local_ipv6", local_ipv6)
            .field("shutdown", shutdown)
            .field("bfd", bfd)
            .finish()
    }
}

/// Stands for a secret in `Debug` output.
pub struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

fn default_families() -> Vec<Family> {
    vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
}

impl PeerConfig {
    /// A peer with every default: active, both families, accept everything.
    pub fn new(address: IpAddr, asn: Asn) -> Self {
        PeerConfig {
            address,
            asn,
            port: bgp_port(),
            name: None,
            passive: false,
            password: None,
            hold_time: None,
            keepalive: None,
            connect_retry: None,
            multihop: None,
            ttl_security: None,
            source_address: None,
            local_asn: None,
            route_reflector_client: false,
            next_hop: NextHopMode::Auto,
            allowas_in: 0,
            families: default_families(),
            add_path: None,
            add_path_send_max: None,
            max_prefix: None,
            import: None,
            export: None,
            graceful_restart: true,
            restart_time: None,
            graceful_on_hold_expiry: true,
            local_ipv6: None,
            shutdown: false,
            bfd: None,
        }
    }

    /// What the status command calls this peer.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.address.to_string())
    }
}

/// A prefix the speaker originates, with the attributes it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Announcement {
    pub prefix: IpNet,
    #[serde(default = "igp")]
    pub origin: Origin,
    #[serde(default)]
    pub med: Option<u32>,
    #[serde(default)]
    pub local_pref: Option<u32>,
    #[serde(default)]
    pub communities: Vec<CommunityValue>,
    #[serde(default)]
    pub large_communities: Vec<LargeCommunityValue>,
    /// Next hop to announce instead of ourselves.
    #[serde(default)]
    pub next_hop: Option<IpAddr>,
}

fn igp() -> Origin {
    Origin::Igp
}

impl Announcement {
    pub fn new(prefix: IpNet) -> Self {
        Announcement {
            prefix,
            origin: Origin::Igp,
            med: None,
            local_pref: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
            next_hop: None,
        }
    }
}

impl SpeakerConfig {
    /// A speaker with defaults and no peers.
    pub fn new(asn: Asn, router_id: RouterId) -> Self {
        SpeakerConfig {
            asn,
            router_id,
            listen: default_listen(),
            hold_time: default_hold_time(),
            connect_retry: default_connect_retry(),
            cluster_id: None,
            max_paths: 1,
            multipath_relax: false,
            always_compare_med: false,
            graceful_restart: GracefulRestartConfig::default(),
            state_dir: None,
            policies: BTreeMap::new(),
            peers: Vec::new(),
            announce: Vec::new(),
            bfd: None,
        }
    }

    /// Parse a TOML file's text and check it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: SpeakerConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The checks serde cannot make: every error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.router_id.0.is_unspecified() {
            return Err(invalid(
                "router-id",
                "0.0.0.0 is not a valid BGP identifier",
            ));
        }
        if self.asn.0 == 0 || self.asn == Asn::TRANS {
            return Err(invalid(
                "asn",
                format!("{} cannot be used as a local AS", self.asn),
            ));
        }
        check_hold("hold-time", self.hold_time)?;
        check_restart_time(
            "graceful-restart.restart-time",
            self.graceful_restart.restart_time,
        )?;
        if self.max_paths == 0 {
            return Err(invalid("max-paths", "must be at least 1"));
        }
        for (name, policy) in &self.policies {
            policy
                .compile()
                .map_err(|e| invalid(format!("policy.{name}"), e.to_string()))?;
        }
        if let Some(b) = &self.bfd {
            b.check("bfd")?;
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            let field = |f: &str| format!("peer[{i}] ({}).{f}", p.address);
            if let Some(PeerBfd::On(_)) = p.bfd {
                if let Some(b) = self.bfd_of(p) {
                    b.check(&field("bfd"))?;
                }
            }
            if !seen.insert(p.address) {
                return Err(invalid(field("address"), "configured twice"));
            }
            if p.address.is_unspecified() || p.address.is_multicast() {
                return Err(invalid(field("address"), "not a unicast address"));
            }
            if p.asn.0 == 0 {
                return Err(invalid(field("asn"), "AS 0 is reserved (RFC 7607)"));
            }
            if let Some(h) = p.hold_time {
                check_hold(&field("hold-time"), h)?;
            }
            if let (Some(k), hold) = (p.keepalive, p.hold_time.unwrap_or(self.hold_time)) {
                if k == 0 || (hold > 0 && k >= hold) {
                    return Err(invalid(
                        field("keepalive"),
                        format!("{k} must be between 1 and the hold time {hold}"),
                    ));
                }
            }
            if let Some(t) = p.restart_time {
                check_restart_time(&field("restart-time"), t)?;
            }
            if let Some(pw) = &p.password {
                if pw.is_empty() || pw.len() > crate::transport::MD5_MAX_KEY_LEN {
                    return Err(invalid(
                        field("password"),
                        "must be 1 to 80 bytes (TCP MD5 key)",
                    ));
                }
            }
            if p.multihop.is_some() && p.ttl_security.is_some() {
                return Err(invalid(
                    field("ttl-security"),
                    "cannot be combined with multihop (GTSM sends TTL 255)",
                ));
            }
            if p.multihop == Some(0) || p.ttl_security == Some(0) {
                return Err(invalid(field("multihop"), "hop counts start at 1"));
            }
            if let Some(src) = p.source_address {
                if src.is_ipv4() != p.address.is_ipv4() {
                    return Err(invalid(
                        field("source-address"),
                        "must be of the peer address's family",
                    ));
                }
            }
            if p.families.is_empty() {
                return Err(invalid(field("families"), "at least one family"));
            }
            if p.max_prefix.is_some_and(|m| m.limit == 0) {
                return Err(invalid(field("max-prefix.limit"), "must be at least 1"));
            }
            for (which, r) in [("import", &p.import), ("export", &p.export)] {
                match r {
                    Some(PolicyRef::Named(n)) if !self.policies.contains_key(n) => {
                        return Err(invalid(field(which), format!("no [policy.{n}] is defined")));
                    }
                    Some(PolicyRef::Inline(policy)) => {
                        policy
                            .compile()
                            .map_err(|e| invalid(field(which), e.to_string()))?;
                    }
                    _ => {}
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in self.announce.iter().enumerate() {
            if a.prefix != a.prefix.trunc() {
                return Err(invalid(
                    format!("announce[{i}].prefix"),
                    format!(
                        "{} has host bits set; did you mean {}?",
                        a.prefix,
                        a.prefix.trunc()
                    ),
                ));
            }
            if !seen.insert(a.prefix) {
                return Err(invalid(
                    format!("announce[{i}].prefix"),
                    format!("{} announced twice", a.prefix),
                ));
            }
        }
        Ok(())
    }

    /// The BFD settings of a peer's session, `None` without BFD: its own `bfd` over
    /// `[bfd]` over the defaults; unset, as `[bfd]` says.
    pub fn bfd_of(&self, p: &PeerConfig) -> Option<BfdConfig> {
        match p.bfd {
            Some(PeerBfd::Off) => None,
            Some(PeerBfd::On(s)) => Some(s.over(self.bfd.unwrap_or_default())),
            None => self.bfd,
        }
    }

    /// The policy a peer's `import`/`export` names, accept-all when absent.
    pub fn resolve(&self, r: &Option<PolicyRef>) -> Policy {
        match r {
            None => Policy::accept_all(),
            Some(PolicyRef::Inline(p)) => p.clone(),
            Some(PolicyRef::Named(n)) => self
                .policies
                .get(n)
                .cloned()
                .unwrap_or_else(Policy::accept_all),
        }
    }
}

/// What a reload of the configuration file changes in a running speaker: the peers to
/// add, change and remove, and the prefixes to originate and to stop originating. Peers
/// carry their policies inline, so a change to a named `[policy.NAME]` reaches every
/// peer that uses it (and only those).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReloadPlan {
    pub add_peers: Vec<PeerConfig>,
    pub update_peers: Vec<PeerConfig>,
    pub remove_peers: Vec<IpAddr>,
    pub announce: Vec<Announcement>,
    pub withdraw: Vec<IpNet>,
}

impl ReloadPlan {
    pub fn is_empty(&self) -> bool {
        *self == ReloadPlan::default()
    }
}

impl SpeakerConfig {
    /// A peer as the running speaker is given it: named policies replaced by their
    /// text, so that the speaker sees a changed policy as a changed peer.
    pub fn peer_with_inline_policies(&self, p: &PeerConfig) -> PeerConfig {
        let mut p = p.clone();
        for r in [&mut p.import, &mut p.export] {
            if let Some(PolicyRef::Named(_)) = r {
                *r = Some(PolicyRef::Inline(self.resolve(r)));
            }
        }
        p
    }

    /// How to go from this (running) configuration to `new` without a restart. Settings
    /// of the whole speaker (AS, router id, listen addresses, graceful restart…) cannot
    /// change at run time: the error names the first that did.
    pub fn reload_plan(&self, new: &SpeakerConfig) -> Result<ReloadPlan, ConfigError> {
        new.validate()?;
        let fixed: [(&str, bool); 11] = [
            ("asn", self.asn != new.asn),
            ("router-id", self.router_id != new.router_id),
            ("listen", self.listen != new.listen),
            ("hold-time", self.hold_time != new.hold_time),
            ("connect-retry", self.connect_retry != new.connect_retry),
            ("cluster-id", self.cluster_id != new.cluster_id),
            ("max-paths", self.max_paths != new.max_paths),
            (
                "multipath-relax",
                self.multipath_relax != new.multipath_relax,
            ),
            (
                "always-compare-med",
                self.always_compare_med != new.always_compare_med,
            ),
            (
                "graceful-restart",
                self.graceful_restart != new.graceful_restart,
            ),
            // The peers that follow it resolve it in the running speaker.
            ("bfd", self.bfd != new.bfd),
        ];
        if let Some((field, _)) = fixed.iter().find(|(_, changed)| *changed) {
            return Err(invalid(
                *field,
                "cannot change while the speaker runs; restart it",
            ));
        }
        let mut plan = ReloadPlan::default();
        let have: Vec<PeerConfig> = self
            .peers
            .iter()
            .map(|p| self.peer_with_inline_policies(p))
            .collect();
        let want: Vec<PeerConfig> = new
            .peers
            .iter()
            .map(|p| new.peer_with_inline_policies(p))
            .collect();
        for op in diff_peers(&have, &want) {
            match op {
                PeerOp::Add(p) => plan.add_peers.push(p),
                PeerOp::Update(p, _) => plan.update_peers.push(p),
                PeerOp::Remove(a) => plan.remove_peers.push(a),
            }
        }
        for a in &new.announce {
            if !self.announce.contains(a) {
                plan.announce.push(a.clone());
            }
        }
        for old in &self.announce {
            if !new.announce.iter().any(|a| a.prefix == old.prefix) {
                plan.withdraw.push(old.prefix);
            }
        }
        Ok(plan)
    }
}

/// How one peer's configuration changed, and so what a running speaker does about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerChange {
    Unchanged,
    /// Only what the RIB applies changed (policies, maximum prefixes, name, next-hop
    /// mode, allowas-in, route-reflector client): the session stays up, our table is sent
    /// again through the new export policy and, when `import_changed`, the peer is asked
    /// for its table again.
    Policy {
        import_changed: bool,
    },
    /// Something the session negotiated or is built from changed (AS, timers, password,
    /// families, transport…): the session is reset.
    Session,
    /// Only the BFD settings changed: the BFD session takes them (new intervals by a
    /// poll sequence, RFC 5880 §6.5), the BGP session stays.
    Bfd,
}

impl PeerChange {
    pub fn of(old: &PeerConfig, new: &PeerConfig) -> PeerChange {
        if old == new {
            return PeerChange::Unchanged;
        }
        let session_part = |p: &PeerConfig| {
            let mut p = p.clone();
            p.import = None;
            p.export = None;
            p.max_prefix = None;
            p.name = None;
            p.allowas_in = 0;
            p.next_hop = NextHopMode::default();
            p.route_reflector_client = false;
            p.bfd = None;
            p
        };
        if session_part(old) != session_part(new) {
            return PeerChange::Session;
        }
        let mut old_bfd = old.clone();
        old_bfd.bfd = new.bfd;
        if old_bfd == *new {
            return PeerChange::Bfd;
        }
        PeerChange::Policy {
            import_changed: old.import != new.import || old.allowas_in != new.allowas_in,
        }
    }
}

/// One step from a running set of peers to a wanted one.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerOp {
    Add(PeerConfig),
    Update(PeerConfig, PeerChange),
    Remove(IpAddr),
}

/// The steps from the peers `have` to the peers `want`, both keyed by address: removals
/// first, in `have`'s order (a peer moving between sources is removed, then added), then
/// additions and changes in `want`'s order. Unchanged peers give no step.
pub fn diff_peers<'a>(
    have: impl IntoIterator<Item = &'a PeerConfig>,
    want: impl IntoIterator<Item = &'a PeerConfig>,
) -> Vec<PeerOp> {
    let have: Vec<&PeerConfig> = have.into_iter().collect();
    let want: Vec<&PeerConfig> = want.into_iter().collect();
    let by_addr: std::collections::HashMap<IpAddr, &PeerConfig> =
        have.iter().map(|p| (p.address, *p)).collect();
    let wanted: std::collections::HashSet<IpAddr> = want.iter().map(|p| p.address).collect();
    let mut ops: Vec<PeerOp> = have
        .iter()
        .filter(|p| !wanted.contains(&p.address))
        .map(|p| PeerOp::Remove(p.address))
        .collect();
    for p in want {
        match by_addr.get(&p.address) {
            None => ops.push(PeerOp::Add(p.clone())),
            Some(old) => match PeerChange::of(old, p) {
                PeerChange::Unchanged => {}
                change => ops.push(PeerOp::Update(p.clone(), change)),
            },
        }
    }
    ops
}

/// The longest Restart Time, in seconds: the capability carries it in 12 bits
/// (RFC 4724 §3).
pub const MAX_RESTART_TIME: u16 = 4095;

fn check_restart_time(field: &str, t: u16) -> Result<(), ConfigError> {
    if t > MAX_RESTART_TIME {
        return Err(invalid(
            field,
            format!("{t} s is above {MAX_RESTART_TIME} s, the most the capability holds"),
        ));
    }
    Ok(())
}

fn check_hold(field: &str, h: u16) -> Result<(), ConfigError> {
    if matches!(h, 1 | 2) {
        return Err(invalid(
            field,
            format!("{h} s: a hold time is 0 or at least 3 (RFC 4271 §4.2)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
        asn = 65001
        router-id = "10.0.0.1"
        listen = ["127.0.0.1:1179"]
        cluster-id = "10.0.0.100"
        max-paths = 4
        [graceful-restart]
        restart-time = 60
        [policy.tor-in]
        default = "reject"
        [[policy.tor-in.rules]]
        match = { prefix = [{ prefix = "10.0.0.0/8", le = 26 }] }
        then = { action = "accept", set-local-pref = 200 }
        [[peer]]
        address = "10.0.0.254"
        asn = 65000
        name = "tor1"
        password = "s3cret"
        ttl-security = 1
        import = "tor-in"
        export = { default = "accept", rules = [] }
        max-prefix = { limit = 1000, restart-after = 30 }
        families = ["ipv4-unicast"]
        [[peer]]
        address = "fd00::2"
        asn = 65001
        route-reflector-client = true
        next-hop = "self-always"
        add-path = "both"
        [[announce]]
        prefix = "10.244.1.0/26"
        communities = ["65001:100", "no-export"]
        large-communities = ["65001:1:2"]
        med = 5
    "#;

    #[test]
    fn full_file_parses() {
        let c = SpeakerConfig::from_toml(FULL).unwrap();
        assert_eq!(c.asn, Asn(65001));
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.peers[0].label(), "tor1");
        assert_eq!(c.peers[0].ttl_security, Some(1));
        assert_eq!(c.peers[0].max_prefix.unwrap().restart_after, Some(30));
        assert_eq!(c.peers[1].next_hop, NextHopMode::SelfAlways);
        assert_eq!(c.peers[1].families.len(), 2, "both families by default");
        assert_eq!(c.graceful_restart.restart_time, 60);
        assert!(c.graceful_restart.enabled);
        assert_eq!(c.announce[0].communities.len(), 2);
        assert_eq!(
            c.resolve(&c.peers[0].import).default,
            crate::policy::Verdict::Reject
        );
    }

    #[test]
    fn per_peer_restart_time_and_hold_expiry() {
        let text = r#"
            asn = 65001
            router-id = "10.0.0.1"
            [[peer]]
            address = "10.0.0.2"
            asn = 65001
            restart-time = 15
            graceful-on-hold-expiry = false
        "#;
        let c = SpeakerConfig::from_toml(text).unwrap();
        assert_eq!(c.peers[0].restart_time, Some(15));
        assert!(!c.peers[0].graceful_on_hold_expiry);
        let d = SpeakerConfig::from_toml(&text.replace("restart-time = 15", "")).unwrap();
        assert_eq!(d.peers[0].restart_time, None);
        let err = SpeakerConfig::from_toml(&text.replace("= 15", "= 5000"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("restart-time") && err.contains("4095"),
            "{err}"
        );
        let err =
            SpeakerConfig::from_toml(&FULL.replace("restart-time = 60", "restart-time = 4096"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("graceful-restart.restart-time"), "{err}");
    }

    const TWO_PEERS: &str = r#"
        asn = 65001
        router-id = "10.0.0.1"
        [policy.out]
        default = "accept"
        [[peer]]
        address = "10.0.0.2"
        asn = 65002
        export = "out"
        [[peer]]
        address = "10.0.0.3"
        asn = 65003
        [[announce]]
        prefix = "10.244.0.0/24"
    "#;

    #[test]
    fn reload_of_the_same_file_changes_nothing() {
        let c = SpeakerConfig::from_toml(TWO_PEERS).unwrap();
        assert!(c.reload_plan(&c.clone()).unwrap().is_empty());
    }

    #[test]
    fn reload_touches_only_the_peer_whose_named_policy_changed() {
        let old = SpeakerConfig::from_toml(TWO_PEERS).unwrap();
        let text = TWO_PEERS.replace(
            "default = \"accept\"",
            "default = \"accept\"\n        rules = [{ then = { action = \"accept\", add-communities = [\"65001:7\"] } }]",
        );
        let new = SpeakerConfig::from_toml(&text).unwrap();
        let plan = old.reload_plan(&new).unwrap();
        assert_eq!(plan.update_peers.len(), 1, "{plan:?}");
        let p = &plan.update_peers[0];
        assert_eq!(p.address, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert!(
            matches!(&p.export, Some(PolicyRef::Inline(pol)) if pol.rules.len() == 1),
            "the policy goes to the speaker inline: {p:?}"
        );
        assert!(plan.add_peers.is_empty() && plan.remove_peers.is_empty());
    }

    #[test]
    fn reload_adds_removes_and_reannounces() {
        let old = SpeakerConfig::from_toml(TWO_PEERS).unwrap();
        let mut new = old.clone();
        new.peers.remove(1);
        new.peers[0].hold_time = Some(9);
        new.peers
            .push(PeerConfig::new("10.0.0.4".parse().unwrap(), Asn(65004)));
        new.announce[0].med = Some(5);
        new.announce
            .push(Announcement::new("10.244.1.0/24".parse().unwrap()));
        let plan = old.reload_plan(&new).unwrap();
        assert_eq!(plan.update_peers.len(), 1);
        assert_eq!(plan.update_peers[0].hold_time, Some(9));
        assert_eq!(plan.add_peers.len(), 1);
        assert_eq!(
            plan.remove_peers,
            vec!["10.0.0.3".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(plan.announce.len(), 2, "changed and new: {plan:?}");
        assert!(plan.withdraw.is_empty());

        let mut gone = old.clone();
        gone.announce.clear();
        let plan = old.reload_plan(&gone).unwrap();
        assert_eq!(
            plan.withdraw,
            vec!["10.244.0.0/24".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn a_peer_change_is_classified_by_what_it_touches() {
        let base = PeerConfig::new("10.0.0.2".parse().unwrap(), Asn(65002));
        fn accept() -> Option<PolicyRef> {
            Some(PolicyRef::Inline(Policy::accept_all()))
        }
        type Edit = fn(&mut PeerConfig);
        let policy = |import_changed| PeerChange::Policy { import_changed };
        let cases: Vec<(&str, Edit, PeerChange)> = vec![
            ("nothing", |_| {}, PeerChange::Unchanged),
            ("import policy", |p| p.import = accept(), policy(true)),
            ("allowas-in", |p| p.allowas_in = 2, policy(true)),
            ("export policy", |p| p.export = accept(), policy(false)),
            (
                "max-prefix",
                |p| {
                    p.max_prefix = Some(MaxPrefixConfig {
                        limit: 10,
                        action: MaxPrefixAction::Shutdown,
                        count_filtered: false,
                        restart_after: None,
                    })
                },
                policy(false),
            ),
            ("name", |p| p.name = Some("tor".into()), policy(false)),
            (
                "next-hop mode",
                |p| p.next_hop = NextHopMode::SelfAlways,
                policy(false),
            ),
            (
                "rr client",
                |p| p.route_reflector_client = true,
                policy(false),
            ),
            ("asn", |p| p.asn = Asn(65009), PeerChange::Session),
            ("hold time", |p| p.hold_time = Some(9), PeerChange::Session),
            (
                "password",
                |p| p.password = Some("x".into()),
                PeerChange::Session,
            ),
            (
                "families",
                |p| p.families = vec![Family::Ipv6Unicast],
                PeerChange::Session,
            ),
            ("shutdown", |p| p.shutdown = true, PeerChange::Session),
            (
                "session and policy",
                |p| {
                    p.import = accept();
                    p.port = 1179;
                },
                PeerChange::Session,
            ),
        ];
        for (what, edit, want) in cases {
            let mut new = base.clone();
            edit(&mut new);
            assert_eq!(PeerChange::of(&base, &new), want, "{what}");
        }
    }

    #[test]
    fn a_peer_diff_removes_first_then_adds_and_changes_in_wanted_order() {
        let peer = |a: &str, asn: u32| PeerConfig::new(a.parse().unwrap(), Asn(asn));
        let have = [
            peer("10.0.0.1", 1),
            peer("10.0.0.2", 2),
            peer("10.0.0.3", 3),
        ];
        let mut named = peer("10.0.0.1", 1);
        named.name = Some("one".into());
        let want = [peer("10.0.0.4", 4), peer("10.0.0.2", 22), named.clone()];
        assert_eq!(
            diff_peers(&have, &want),
            vec![
                PeerOp::Remove("10.0.0.3".parse().unwrap()),
                PeerOp::Add(peer("10.0.0.4", 4)),
                PeerOp::Update(peer("10.0.0.2", 22), PeerChange::Session),
                PeerOp::Update(
                    named,
                    PeerChange::Policy {
                        import_changed: false
                    }
                ),
            ]
        );
        assert!(diff_peers(&have, &have).is_empty());
    }

    #[test]
    fn reload_refuses_speaker_wide_changes() {
        let old = SpeakerConfig::from_toml(TWO_PEERS).unwrap();
        let mut new = old.clone();
        new.asn = Asn(65009);
        let err = old.reload_plan(&new).unwrap_err().to_string();
        assert!(err.contains("asn"), "{err}");
        let mut new = old.clone();
        new.graceful_restart.restart_time = 5;
        let err = old.reload_plan(&new).unwrap_err().to_string();
        assert!(err.contains("graceful-restart"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("asn = 65001\nrouter-id = \"0.0.0.0\"", "router-id"),
            ("asn = 65001\nrouter-id = \"10.0.0.1\"\nhold-time = 2", "hold-time"),
            ("asn = 65001\nrouter-id = \"10.0.0.1\"\nbogus = 1", "bogus"),
            ("asn = 65001\nrouter-id = \"10.0.0.300\"", "router-id"),
            (
                "asn = 65001\nrouter-id = \"10.0.0.1\"\n[[peer]]\naddress = \"10.0.0.2\"\nasn = 1\n[[peer]]\naddress = \"10.0.0.2\"\nasn = 2",
                "peer[1] (10.0.0.2).address",
            ),
            (
                "asn = 65001\nrouter-id = \"10.0.0.1\"\n[[peer]]\naddress = \"10.0.0.2\"\nasn = 1\nimport = \"nope\"",
                "peer[0] (10.0.0.2).import",
            ),
            (
                "asn = 65001\nrouter-id = \"10.0.0.1\"\n[[peer]]\naddress = \"10.0.0.2\"\nasn = 1\nmultihop = 2\nttl-security = 1",
                "ttl-security",
            ),
            (
                "asn = 65001\nrouter-id = \"10.0.0.1\"\n[[peer]]\naddress = \"10.0.0.2\"\nasn = 1\npassword = \"\"",
                "password",
            ),
            (
                "asn = 65001\nrouter-id = \"10.0.0.1\"\n[[peer]]\naddress = \"10.0.0.2\"\nasn = 1\nsource-address = \"fd00::1\"",
                "source-address",
            ),
            ("asn = 65001\nrouter-id = \"10.0.0.1\"\n[[announce]]\nprefix = \"10.0.0.1/24\"", "announce[0].prefix"),
            (
                "asn = 65001\nrouter-id = \"10.0.0.1\"\n[[announce]]\nprefix = \"10.0.0.0/24\"\ncommunities = [\"65536:1\"]",
                "65536",
            ),
            (
                "asn = 65001\nrouter-id = \"10.0.0.1\"\n[[peer]]\naddress = \"10.0.0.2\"\nasn = 1\nkeepalive = 90",
                "keepalive",
            ),
        ];
        for (text, want) in cases {
            let err = SpeakerConfig::from_toml(text).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "config {text:?}: error {err:?} does not mention {want:?}"
            );
        }
    }

    #[test]
    fn bfd_per_peer_over_the_global_default() {
        let text = r#"
            asn = 65001
            router-id = "10.0.0.1"
            [bfd]
            min-rx = 200
            multiplier = 5
            [[peer]]
            address = "10.0.0.2"
            asn = 65002
            [[peer]]
            address = "10.0.0.3"
            asn = 65002
            bfd = false
            [[peer]]
            address = "10.0.0.4"
            asn = 65002
            bfd = { min-tx = 100, passive = true }
            [[peer]]
            address = "10.0.0.5"
            asn = 65002
            bfd = true
        "#;
        let c = SpeakerConfig::from_toml(text).unwrap();
        let global = BfdConfig {
            min_rx: 200,
            min_tx: 300,
            multiplier: 5,
            passive: false,
        };
        let got: Vec<Option<BfdConfig>> = c.peers.iter().map(|p| c.bfd_of(p)).collect();
        assert_eq!(
            got,
            [
                Some(global),
                None,
                Some(BfdConfig {
                    min_tx: 100,
                    passive: true,
                    ..global
                }),
                Some(global),
            ]
        );
        // Without [bfd], only the peers that ask have it, with 300 ms x 3.
        let text = "asn = 65001\nrouter-id = \"10.0.0.1\"\n[[peer]]\naddress = \"10.0.0.2\"\nasn = 1\n[[peer]]\naddress = \"10.0.0.3\"\nasn = 1\nbfd = {}";
        let c = SpeakerConfig::from_toml(text).unwrap();
        assert_eq!(c.bfd_of(&c.peers[0]), None);
        assert_eq!(c.bfd_of(&c.peers[1]), Some(BfdConfig::default()));
        assert_eq!(
            BfdConfig::default().timers(),
            crate::bfd::Timers::DEFAULT,
            "the defaults are the state machine's"
        );
        // It survives a round trip through TOML.
        let back = SpeakerConfig::from_toml(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn bfd_errors_name_the_field() {
        let peer =
            "asn = 65001\nrouter-id = \"10.0.0.1\"\n[[peer]]\naddress = \"10.0.0.2\"\nasn = 1\n";
        let cases = [
            (
                format!("{peer}bfd = {{ min-rx = 0 }}"),
                "peer[0] (10.0.0.2).bfd.min-rx",
            ),
            (
                format!("{peer}bfd = {{ multiplier = 0 }}"),
                "bfd.multiplier",
            ),
            (format!("{peer}bfd = {{ min-rxx = 10 }}"), "min-rxx"),
            (format!("{peer}bfd = \"fast\""), "true, false or a table"),
            (
                "asn = 65001\nrouter-id = \"10.0.0.1\"\n[bfd]\nmin-tx = 0".to_string(),
                "bfd.min-tx",
            ),
        ];
        for (text, want) in cases {
            let err = SpeakerConfig::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn a_bfd_change_alone_keeps_the_session() {
        let old = PeerConfig::new("10.0.0.2".parse().unwrap(), Asn(65002));
        let mut new = old.clone();
        new.bfd = Some(PeerBfd::On(BfdSettings {
            min_rx: Some(100),
            ..BfdSettings::default()
        }));
        assert_eq!(PeerChange::of(&old, &new), PeerChange::Bfd);
        new.name = Some("tor".into());
        assert!(matches!(
            PeerChange::of(&old, &new),
            PeerChange::Policy { .. }
        ));
        new.hold_time = Some(9);
        assert_eq!(PeerChange::of(&old, &new), PeerChange::Session);
        let mut a = SpeakerConfig::new(Asn(65001), RouterId("10.0.0.1".parse().unwrap()));
        let mut b = a.clone();
        b.bfd = Some(BfdConfig::default());
        assert!(a
            .reload_plan(&b)
            .unwrap_err()
            .to_string()
            .starts_with("bfd:"));
        a.bfd = b.bfd;
        assert!(a.reload_plan(&b).unwrap().is_empty());
    }
}
