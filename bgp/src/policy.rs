//! Import and export policy: the filters a network engineer writes per peer in the config
//! file.
//!
//! A [`Policy`] is an ordered list of rules, each with match conditions (all must hold) and
//! actions; the first rule whose conditions hold decides, and when none does the policy's
//! `default` verdict applies. The config form deserializes with serde (kebab-case, unknown
//! fields rejected) and is compiled once into a [`CompiledPolicy`]: prefix lists become one
//! hash set per prefix length, community lists sorted vectors, the AS path expression an
//! automaton.
//!
//! Evaluation is split in two so that the RIB can cache work across the many prefixes that
//! share one attribute set: [`CompiledPolicy::evaluate`] decides which rule matches a route
//! (the only part that looks at the prefix), [`CompiledPolicy::apply`] performs that rule's
//! actions on an attribute set (which depends on the rule and the attributes only).
//!
//! ```toml
//! default = "reject"
//! [[rules]]
//! name = "customers"
//! match = { prefix = [{ prefix = "10.0.0.0/8", le = 24 }], community-any = ["65000:100"] }
//! then = { action = "accept", set-local-pref = 200, add-communities = ["65000:1"] }
//! ```

use crate::types::Asn;
use crate::wire::attr::{Community, ExtCommunity, LargeCommunity, NextHop, PathAttrs};
use ipnet::IpNet;
use regex_automata::meta::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("rule {rule}: prefix {prefix}: ge {ge} / le {le} out of range for its length")]
    BadPrefixRange {
        rule: String,
        prefix: IpNet,
        ge: u8,
        le: u8,
    },
    #[error("rule {rule}: as-path-regex {pattern:?}: {reason}")]
    BadRegex {
        rule: String,
        pattern: String,
        reason: String,
    },
    #[error("rule {rule}: as-path-length min {min} is greater than max {max}")]
    BadLengthRange { rule: String, min: u32, max: u32 },
    #[error("rule {rule}: replace-communities cannot be combined with add- or remove-communities")]
    ConflictingCommunityActions { rule: String },
}

/// Accept or reject a route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    #[default]
    Accept,
    Reject,
}

/// A policy as written in the config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Policy {
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Applies when no rule matches.
    #[serde(default)]
    pub default: Verdict,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rule {
    /// Shown in errors and in the status output.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: Match,
    #[serde(default)]
    pub then: Actions,
}

/// Conditions of a rule; every condition given must hold. An empty `Match` matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Match {
    /// The route's prefix is in this list (IPv4 and IPv6 entries may be mixed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix: Vec<PrefixEntry>,
    /// The AS path contains any of these ASes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub as_path_contains: Vec<Asn>,
    /// The route was originated by one of these ASes (last AS of the path).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origin_as: Vec<Asn>,
    /// The route was received from one of these neighbouring ASes (first AS of the path).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbor_as: Vec<Asn>,
    /// The AS path length (as counted by the decision process) is in this range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_path_length: Option<LengthRange>,
    /// A regular expression over the AS path written as text ("65001 65002 {65003,65004}"),
    /// with `_` standing for a boundary (start, end, space, brace or comma) as in Cisco
    /// and FRR as-path access lists: `^65001_` matches paths received from AS 65001.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_path_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub community_any: Vec<CommunityValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub community_all: Vec<CommunityValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub large_community_any: Vec<LargeCommunityValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub large_community_all: Vec<LargeCommunityValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ext_community_any: Vec<ExtCommunityValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ext_community_all: Vec<ExtCommunityValue>,
    /// The route's next hop (global address) is inside one of these prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next_hop_in: Vec<IpNet>,
    /// The peer the route is received from (import) or sent to (export) is inside one of
    /// these prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_address: Vec<IpNet>,
    /// The route was learned from a peer whose address is inside one of these prefixes.
    /// On export this is where the route came from, not where it goes (BIRD's `from`);
    /// a route this speaker originates never matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learned_from: Vec<IpNet>,
    /// `true`: the route is one this speaker originates; `false`: it was learned from a
    /// peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_origin: Option<bool>,
}

/// One prefix list entry: `prefix` itself, or with `ge`/`le` any more specific prefix
/// inside it whose length is in `ge..=le` (as in Cisco/FRR prefix lists; `le` alone means
/// `prefix.len..=le`, `ge` alone means `ge..=max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PrefixEntry {
    pub prefix: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ge: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub le: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LengthRange {
    #[serde(default)]
    pub min: u32,
    #[serde(default = "u32_max")]
    pub max: u32,
}

fn u32_max() -> u32 {
    u32::MAX
}

/// What a matching rule does. Attribute actions apply only when the verdict is accept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Actions {
    #[serde(default)]
    pub action: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_local_pref: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_med: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_communities: Vec<CommunityValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_communities: Vec<CommunityValue>,
    /// Replaces the whole COMMUNITIES attribute (an empty list is written `[]` and
    /// removes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_communities: Option<Vec<CommunityValue>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_large_communities: Vec<LargeCommunityValue>,
    /// Prepend the local AS this many more times.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prepend: u8,
    #[serde(default, skip_serializing_if = "is_false")]
    pub next_hop_self: bool,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// A standard community written `ASN:VALUE` or by its well-known name (`no-export`,
/// `no-advertise`, `no-export-subconfed`, `no-peer`, `graceful-shutdown`, `blackhole`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommunityValue(pub Community);

/// A large community written `GLOBAL:LOCAL1:LOCAL2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunityValue(pub LargeCommunity);

/// An extended community written `rt:ASN:N`, `rt:A.B.C.D:N`, `soo:ASN:N`, `soo:A.B.C.D:N`
/// or as 16 hex digits `0x0002fde800000064`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtCommunityValue(pub ExtCommunity);

const WELL_KNOWN: [(&str, Community); 6] = [
    ("no-export", Community::NO_EXPORT),
    ("no-advertise", Community::NO_ADVERTISE),
    ("no-export-subconfed", Community::NO_EXPORT_SUBCONFED),
    ("no-peer", Community::NO_PEER),
    ("graceful-shutdown", Community::GRACEFUL_SHUTDOWN),
    // RFC 7999.
    ("blackhole", Community(0xFFFF_029A)),
];

impl FromStr for CommunityValue {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((_, c)) = WELL_KNOWN.iter().find(|(n, _)| *n == s) {
            return Ok(CommunityValue(*c));
        }
        let (a, v) = s
            .split_once(':')
            .ok_or_else(|| format!("community {s:?}: expected ASN:VALUE"))?;
        let a: u16 = a
            .parse()
            .map_err(|_| format!("community {s:?}: {a:?} is not a 16-bit number"))?;
        let v: u16 = v
            .parse()
            .map_err(|_| format!("community {s:?}: {v:?} is not a 16-bit number"))?;
        Ok(CommunityValue(Community::new(a, v)))
    }
}

impl fmt::Display for CommunityValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((n, _)) = WELL_KNOWN.iter().find(|(_, c)| *c == self.0) {
            return f.write_str(n);
        }
        write!(f, "{}:{}", self.0 .0 >> 16, self.0 .0 & 0xFFFF)
    }
}

impl FromStr for LargeCommunityValue {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let n = |p: &str| {
            p.parse::<u32>()
                .map_err(|_| format!("large community {s:?}: {p:?} is not a 32-bit number"))
        };
        match parts.as_slice() {
            [g, l1, l2] => Ok(LargeCommunityValue(LargeCommunity {
                global: n(g)?,
                local1: n(l1)?,
                local2: n(l2)?,
            })),
            _ => Err(format!(
                "large community {s:?}: expected GLOBAL:LOCAL1:LOCAL2"
            )),
        }
    }
}

impl fmt::Display for LargeCommunityValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.0.global, self.0.local1, self.0.local2)
    }
}

impl FromStr for ExtCommunityValue {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(hex) = s.strip_prefix("0x") {
            let v = u64::from_str_radix(hex, 16)
                .ok()
                .filter(|_| hex.len() == 16)
                .ok_or_else(|| format!("extended community {s:?}: expected 16 hex digits"))?;
            return Ok(ExtCommunityValue(ExtCommunity(v.to_be_bytes())));
        }
        let mut it = s.splitn(3, ':');
        let (kind, admin, local) = match (it.next(), it.next(), it.next()) {
            (Some(k), Some(a), Some(l)) => (k, a, l),
            _ => {
                return Err(format!(
                    "extended community {s:?}: expected rt:ADMIN:VALUE or soo:ADMIN:VALUE"
                ))
            }
        };
        // RFC 4360 §4 (two-octet AS specific), §4 IPv4 address specific, RFC 5668 (four-octet
        // AS specific); sub-type 0x02 route target, 0x03 route origin.
        let sub = match kind {
            "rt" => 0x02,
            "soo" => 0x03,
            _ => {
                return Err(format!(
                    "extended community {s:?}: kind {kind:?} is not rt or soo"
                ))
            }
        };
        let mut b = [0u8; 8];
        b[1] = sub;
        if let Ok(ip) = admin.parse::<std::net::Ipv4Addr>() {
            let v: u16 = local.parse().map_err(|_| {
                format!("extended community {s:?}: {local:?} is not a 16-bit number")
            })?;
            b[0] = 0x01;
            b[2..6].copy_from_slice(&ip.octets());
            b[6..8].copy_from_slice(&v.to_be_bytes());
        } else {
            let asn: u32 = admin.parse().map_err(|_| {
                format!("extended community {s:?}: {admin:?} is not an AS or address")
            })?;
            if let Ok(a16) = u16::try_from(asn) {
                let v: u32 = local.parse().map_err(|_| {
                    format!("extended community {s:?}: {local:?} is not a 32-bit number")
                })?;
                b[0] = 0x00;
                b[2..4].copy_from_slice(&a16.to_be_bytes());
                b[4..8].copy_from_slice(&v.to_be_bytes());
            } else {
                let v: u16 = local.parse().map_err(|_| {
                    format!("extended community {s:?}: {local:?} is not a 16-bit number")
                })?;
                b[0] = 0x02;
                b[2..6].copy_from_slice(&asn.to_be_bytes());
                b[6..8].copy_from_slice(&v.to_be_bytes());
            }
        }
        Ok(ExtCommunityValue(ExtCommunity(b)))
    }
}

impl fmt::Display for ExtCommunityValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 .0;
        let kind = match b[1] {
            0x02 => "rt",
            0x03 => "soo",
            _ => return write!(f, "0x{:016x}", u64::from_be_bytes(b)),
        };
        match b[0] {
            0x00 => write!(
                f,
                "{kind}:{}:{}",
                u16::from_be_bytes([b[2], b[3]]),
                u32::from_be_bytes([b[4], b[5], b[6], b[7]])
            ),
            0x01 => write!(
                f,
                "{kind}:{}.{}.{}.{}:{}",
                b[2],
                b[3],
                b[4],
                b[5],
                u16::from_be_bytes([b[6], b[7]])
            ),
            0x02 => write!(
                f,
                "{kind}:{}:{}",
                u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
                u16::from_be_bytes([b[6], b[7]])
            ),
            _ => write!(f, "0x{:016x}", u64::from_be_bytes(b)),
        }
    }
}

macro_rules! string_serde {
    ($t:ty, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_serde!(CommunityValue, "community");
string_serde!(LargeCommunityValue, "large community");
string_serde!(ExtCommunityValue, "extended community");

/// What a route is evaluated against.
#[derive(Clone, Copy, Debug)]
pub struct RouteCtx<'a> {
    pub prefix: IpNet,
    pub attrs: &'a PathAttrs,
    /// The peer the route comes from (import) or goes to (export); `None` for locally
    /// originated routes on import.
    pub peer_address: Option<IpAddr>,
    /// The peer the route was learned from (on import the same as `peer_address`);
    /// `None` for a route this speaker originates.
    pub learned_from: Option<IpAddr>,
}

/// Values some actions need from the session.
#[derive(Clone, Copy, Debug)]
pub struct ActionEnv {
    /// The AS that `prepend` repeats.
    pub local_as: Asn,
    /// The next hop `next-hop-self` writes; `None` leaves the next hop as it is.
    pub self_next_hop: Option<NextHop>,
}

/// The outcome of evaluating a policy on a route: which rule matched (`None`: the
/// default) and the verdict. Together with the attributes it determines the result of
/// [`CompiledPolicy::apply`], so it serves as a cache key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Outcome {
    pub rule: Option<u32>,
    pub verdict: Verdict,
}

impl Outcome {
    pub fn accepted(self) -> bool {
        self.verdict == Verdict::Accept
    }
}

/// A prefix list compiled into one hash set per (family, prefix length): membership of a
/// prefix of length L costs one look-up per distinct entry length ≤ L.
#[derive(Clone, Debug, Default)]
struct PrefixSet {
    /// Per family (0 IPv4, 1 IPv6), sorted by entry length.
    by_len: [Vec<EntriesOfLen>; 2],
}

/// The entries of one prefix length: network bits → allowed (ge, le) ranges.
type EntriesOfLen = (u8, HashMap<u128, Vec<(u8, u8)>>);

fn net_bits(p: &IpNet) -> (usize, u128, u8) {
    match p {
        IpNet::V4(n) => (0, u128::from(u32::from(n.network())) << 96, n.prefix_len()),
        IpNet::V6(n) => (1, u128::from(n.network()), n.prefix_len()),
    }
}

fn mask(bits: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(len)))
    }
}

impl PrefixSet {
    fn compile(entries: &[PrefixEntry], rule: &str) -> Result<Self, PolicyError> {
        let mut set = PrefixSet::default();
        for e in entries {
            let (fam, bits, len) = net_bits(&e.prefix.trunc());
            let max = if fam == 0 { 32 } else { 128 };
            let (ge, le) = match (e.ge, e.le) {
                (None, None) => (len, len),
                (Some(ge), None) => (ge, max),
                (None, Some(le)) => (len, le),
                (Some(ge), Some(le)) => (ge, le),
            };
            if ge < len || le < ge || le > max {
                return Err(PolicyError::BadPrefixRange {
                    rule: rule.to_string(),
                    prefix: e.prefix,
                    ge,
                    le,
                });
            }
            let list = &mut set.by_len[fam];
            let idx = match list.iter().position(|(l, _)| *l == len) {
                Some(i) => i,
                None => {
                    list.push((len, HashMap::new()));
                    list.len() - 1
                }
            };
            list[idx].1.entry(bits).or_default().push((ge, le));
        }
        for list in &mut set.by_len {
            list.sort_by_key(|(l, _)| *l);
        }
        Ok(set)
    }

    fn contains(&self, p: &IpNet) -> bool {
        let (fam, bits, len) = net_bits(p);
        for (elen, map) in &self.by_len[fam] {
            if *elen > len {
                break;
            }
            if let Some(ranges) = map.get(&mask(bits, *elen)) {
                if ranges.iter().any(|(ge, le)| (*ge..=*le).contains(&len)) {
                    return true;
                }
            }
        }
        false
    }
}

#[derive(Debug, Clone)]
struct CompiledMatch {
    prefix: Option<PrefixSet>,
    as_path_contains: Vec<Asn>,
    origin_as: Vec<Asn>,
    neighbor_as: Vec<Asn>,
    as_path_length: Option<(u32, u32)>,
    as_path_regex: Option<Regex>,
    community_any: Vec<Community>,
    community_all: Vec<Community>,
    large_any: Vec<LargeCommunity>,
    large_all: Vec<LargeCommunity>,
    ext_any: Vec<ExtCommunity>,
    ext_all: Vec<ExtCommunity>,
    next_hop_in: Vec<IpNet>,
    peer_address: Vec<IpNet>,
    learned_from: Vec<IpNet>,
    local_origin: Option<bool>,
}

#[derive(Debug, Clone)]
struct CompiledActions {
    verdict: Verdict,
    set_local_pref: Option<u32>,
    set_med: Option<u32>,
    add_communities: Vec<Community>,
    remove_communities: HashSet<Community>,
    replace_communities: Option<Vec<Community>>,
    add_large: Vec<LargeCommunity>,
    prepend: u8,
    next_hop_self: bool,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    matches: CompiledMatch,
    actions: CompiledActions,
}

/// A policy ready for evaluation. `CompiledPolicy::default()` accepts everything unchanged.
#[derive(Debug, Clone, Default)]
pub struct CompiledPolicy {
    rules: Vec<CompiledRule>,
    default: Verdict,
    prefix_dependent: bool,
}

/// Translates the Cisco/FRR as-path regular expression dialect into the regex crate's:
/// `_` is a boundary between AS numbers.
fn translate_as_path_regex(pattern: &str) -> String {
    pattern.replace('_', "(?:^|$|[ {},])")
}

/// The AS path as text for regular expressions: sequences space separated, sets in braces.
pub fn as_path_text(attrs: &PathAttrs) -> String {
    use crate::wire::attr::SegmentType;
    let mut out = String::new();
    for seg in &attrs.as_path.segments {
        let (open, close, sep) = match seg.kind {
            SegmentType::Sequence => ("", "", " "),
            SegmentType::Set => ("{", "}", ","),
            SegmentType::ConfedSequence => ("(", ")", " "),
            SegmentType::ConfedSet => ("[", "]", ","),
        };
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(open);
        for (i, a) in seg.asns.iter().enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            out.push_str(&a.0.to_string());
        }
        out.push_str(close);
    }
    out
}

impl Policy {
    /// A policy that accepts every route unchanged.
    pub fn accept_all() -> Self {
        Policy::default()
    }

    /// A policy that rejects every route.
    pub fn reject_all() -> Self {
        Policy {
            rules: Vec::new(),
            default: Verdict::Reject,
        }
    }

    pub fn compile(&self) -> Result<CompiledPolicy, PolicyError> {
        let mut rules = Vec::with_capacity(self.rules.len());
        let mut prefix_dependent = false;
        for (i, r) in self.rules.iter().enumerate() {
            let name = r.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
            let m = &r.matches;
            let prefix = if m.prefix.is_empty() {
                None
            } else {
                prefix_dependent = true;
                Some(PrefixSet::compile(&m.prefix, &name)?)
            };
            let as_path_length = match m.as_path_length {
                Some(LengthRange { min, max }) if min > max => {
                    return Err(PolicyError::BadLengthRange {
                        rule: name,
                        min,
                        max,
                    })
                }
                Some(r) => Some((r.min, r.max)),
                None => None,
            };
            let as_path_regex = match &m.as_path_regex {
                Some(p) => Some(Regex::new(&translate_as_path_regex(p)).map_err(|e| {
                    PolicyError::BadRegex {
                        rule: name.clone(),
                        pattern: p.clone(),
                        reason: e.to_string(),
                    }
                })?),
                None => None,
            };
            let a = &r.then;
            if a.replace_communities.is_some()
                && !(a.add_communities.is_empty() && a.remove_communities.is_empty())
            {
                return Err(PolicyError::ConflictingCommunityActions { rule: name });
            }
            let comms = |v: &[CommunityValue]| v.iter().map(|c| c.0).collect::<Vec<_>>();
            let larges = |v: &[LargeCommunityValue]| v.iter().map(|c| c.0).collect::<Vec<_>>();
            let exts = |v: &[ExtCommunityValue]| v.iter().map(|c| c.0).collect::<Vec<_>>();
            rules.push(CompiledRule {
                matches: CompiledMatch {
                    prefix,
                    as_path_contains: m.as_path_contains.clone(),
                    origin_as: m.origin_as.clone(),
                    neighbor_as: m.neighbor_as.clone(),
                    as_path_length,
                    as_path_regex,
                    community_any: comms(&m.community_any),
                    community_all: comms(&m.community_all),
                    large_any: larges(&m.large_community_any),
                    large_all: larges(&m.large_community_all),
                    ext_any: exts(&m.ext_community_any),
                    ext_all: exts(&m.ext_community_all),
                    next_hop_in: m.next_hop_in.clone(),
                    peer_address: m.peer_address.clone(),
                    learned_from: m.learned_from.clone(),
                    local_origin: m.local_origin,
                },
                actions: CompiledActions {
                    verdict: a.action,
                    set_local_pref: a.set_local_pref,
                    set_med: a.set_med,
                    add_communities: comms(&a.add_communities),
                    remove_communities: a.remove_communities.iter().map(|c| c.0).collect(),
                    replace_communities: a.replace_communities.as_deref().map(comms),
                    add_large: larges(&a.add_large_communities),
                    prepend: a.prepend,
                    next_hop_self: a.next_hop_self,
                },
            });
        }
        Ok(CompiledPolicy {
            rules,
            default: self.default,
            prefix_dependent,
        })
    }
}

fn next_hop_addr(nh: &NextHop) -> IpAddr {
    match nh {
        NextHop::V4(a) => IpAddr::V4(*a),
        NextHop::V6 { global, .. } => IpAddr::V6(*global),
    }
}

impl CompiledMatch {
    fn matches(&self, ctx: &RouteCtx<'_>) -> bool {
        let a = ctx.attrs;
        if let Some(set) = &self.prefix {
            if !set.contains(&ctx.prefix) {
                return false;
            }
        }
        if !self.as_path_contains.is_empty()
            && !self.as_path_contains.iter().any(|x| a.as_path.contains(*x))
        {
            return false;
        }
        if !self.origin_as.is_empty()
            && !a
                .as_path
                .origin_as()
                .is_some_and(|o| self.origin_as.contains(&o))
        {
            return false;
        }
        if !self.neighbor_as.is_empty()
            && !a
                .as_path
                .neighbor_as()
                .is_some_and(|o| self.neighbor_as.contains(&o))
        {
            return false;
        }
        if let Some((min, max)) = self.as_path_length {
            let len = u32::try_from(a.as_path.decision_len()).unwrap_or(u32::MAX);
            if len < min || len > max {
                return false;
            }
        }
        if !any_all(&a.communities, &self.community_any, &self.community_all)
            || !any_all(&a.large_communities, &self.large_any, &self.large_all)
            || !any_all(&a.ext_communities, &self.ext_any, &self.ext_all)
        {
            return false;
        }
        if !self.next_hop_in.is_empty() {
            match &a.next_hop {
                Some(nh) => {
                    let addr = next_hop_addr(nh);
                    if !self.next_hop_in.iter().any(|n| n.contains(&addr)) {
                        return false;
                    }
                }
                None => return false,
            }
        }
        if !self.peer_address.is_empty() {
            match ctx.peer_address {
                Some(addr) if self.peer_address.iter().any(|n| n.contains(&addr)) => {}
                _ => return false,
            }
        }
        if !self.learned_from.is_empty() {
            match ctx.learned_from {
                Some(addr) if self.learned_from.iter().any(|n| n.contains(&addr)) => {}
                _ => return false,
            }
        }
        if let Some(local) = self.local_origin {
            if local != ctx.learned_from.is_none() {
                return false;
            }
        }
        if let Some(re) = &self.as_path_regex {
            if !re.is_match(&as_path_text(a)) {
                return false;
            }
        }
        true
    }
}

fn any_all<T: PartialEq>(have: &[T], any: &[T], all: &[T]) -> bool {
    (any.is_empty() || any.iter().any(|x| have.contains(x))) && all.iter().all(|x| have.contains(x))
}

impl CompiledPolicy {
    /// Whether evaluation looks at the prefix; when it does not, the outcome for one
    /// attribute set holds for every prefix that carries it.
    pub fn prefix_dependent(&self) -> bool {
        self.prefix_dependent
    }

    /// True for a policy without rules that accepts: evaluation can be skipped.
    pub fn is_accept_all(&self) -> bool {
        self.rules.is_empty() && self.default == Verdict::Accept
    }

    /// Which rule decides for this route, first match wins.
    pub fn evaluate(&self, ctx: &RouteCtx<'_>) -> Outcome {
        for (i, r) in self.rules.iter().enumerate() {
            if r.matches.matches(ctx) {
                return Outcome {
                    rule: Some(i as u32),
                    verdict: r.actions.verdict,
                };
            }
        }
        Outcome {
            rule: None,
            verdict: self.default,
        }
    }

    /// Performs the actions of the rule in `outcome` on `attrs`. Returns false when the
    /// outcome rejects (attributes untouched).
    pub fn apply(&self, outcome: Outcome, attrs: &mut PathAttrs, env: &ActionEnv) -> bool {
        if !outcome.accepted() {
            return false;
        }
        let Some(rule) = outcome.rule.and_then(|i| self.rules.get(i as usize)) else {
            return true;
        };
        let a = &rule.actions;
        if let Some(lp) = a.set_local_pref {
            attrs.local_pref = Some(lp);
        }
        if let Some(med) = a.set_med {
            attrs.med = Some(med);
        }
        if let Some(list) = &a.replace_communities {
            attrs.communities = list.iter().copied().collect();
            attrs.communities.sort_unstable();
            attrs.communities.dedup();
        }
        if !a.remove_communities.is_empty() {
            attrs
                .communities
                .retain(|c| !a.remove_communities.contains(c));
        }
        for c in &a.add_communities {
            if !attrs.communities.contains(c) {
                attrs.communities.push(*c);
            }
        }
        for c in &a.add_large {
            if !attrs.large_communities.contains(c) {
                attrs.large_communities.push(*c);
            }
        }
        if a.prepend > 0 {
            attrs.as_path.prepend(env.local_as, usize::from(a.prepend));
        }
        if a.next_hop_self {
            if let Some(nh) = env.self_next_hop {
                attrs.next_hop = Some(nh);
            }
        }
        true
    }

    /// Evaluate and apply in one step; `None` when rejected.
    pub fn run(&self, ctx: &RouteCtx<'_>, env: &ActionEnv) -> Option<PathAttrs> {
        let outcome = self.evaluate(ctx);
        let mut attrs = ctx.attrs.clone();
        self.apply(outcome, &mut attrs, env).then_some(attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::attr::{AsPath, AsSegment, SegmentType};
    use std::net::Ipv4Addr;

    fn attrs(path: &[u32]) -> PathAttrs {
        PathAttrs {
            as_path: AsPath::from_sequence(path.iter().map(|a| Asn(*a))),
            next_hop: Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 1))),
            ..PathAttrs::default()
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn env() -> ActionEnv {
        ActionEnv {
            local_as: Asn(64512),
            self_next_hop: Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 1))),
        }
    }

    fn parse(toml_text: &str) -> CompiledPolicy {
        let p: Policy = toml::from_str(toml_text).unwrap();
        p.compile().unwrap()
    }

    fn verdict(p: &CompiledPolicy, prefix: &str, a: &PathAttrs) -> (Option<u32>, Verdict) {
        let o = p.evaluate(&RouteCtx {
            prefix: net(prefix),
            attrs: a,
            peer_address: Some("192.0.2.1".parse().unwrap()),
            learned_from: Some("192.0.2.1".parse().unwrap()),
        });
        (o.rule, o.verdict)
    }

    #[test]
    fn prefix_list_ge_le_table() {
        let p = parse(
            r#"
            default = "reject"
            [[rules]]
            match = { prefix = [ { prefix = "10.0.0.0/8", ge = 16, le = 24 }, { prefix = "192.168.1.0/24" },
                                 { prefix = "172.16.0.0/12", le = 16 }, { prefix = "2001:db8::/32", ge = 48 } ] }
            "#,
        );
        let a = attrs(&[1]);
        let table = [
            ("10.0.0.0/8", false),
            ("10.1.0.0/16", true),
            ("10.1.2.0/24", true),
            ("10.1.2.128/25", false),
            ("11.1.0.0/16", false),
            ("192.168.1.0/24", true),
            ("192.168.1.0/25", false),
            ("192.168.0.0/16", false),
            ("172.16.0.0/12", true),
            ("172.20.0.0/16", true),
            ("172.20.1.0/24", false),
            ("2001:db8::/32", false),
            ("2001:db8:1::/48", true),
            ("2001:db8:1:2::/64", true),
            ("2001:db9::/48", false),
            ("0.0.0.0/0", false),
        ];
        for (pfx, want) in table {
            let (_, v) = verdict(&p, pfx, &a);
            assert_eq!(v == Verdict::Accept, want, "{pfx}");
        }
        assert!(p.prefix_dependent());
    }

    #[test]
    fn bad_prefix_range_is_an_error() {
        let p: Policy = toml::from_str(
            r#"rules = [ { match = { prefix = [ { prefix = "10.0.0.0/16", ge = 8 } ] } } ]"#,
        )
        .unwrap();
        assert!(matches!(
            p.compile(),
            Err(PolicyError::BadPrefixRange { .. })
        ));
        let p: Policy = toml::from_str(
            r#"rules = [ { match = { prefix = [ { prefix = "10.0.0.0/16", le = 33 } ] } } ]"#,
        )
        .unwrap();
        assert!(matches!(
            p.compile(),
            Err(PolicyError::BadPrefixRange { .. })
        ));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(toml::from_str::<Policy>(r#"rules = [ { match = { prefixes = [] } } ]"#).is_err());
        assert!(toml::from_str::<Policy>(r#"defualt = "accept""#).is_err());
        assert!(
            toml::from_str::<Policy>(r#"rules = [ { then = { set-localpref = 1 } } ]"#).is_err()
        );
    }

    #[test]
    fn as_path_matches_table() {
        let mut set_path = attrs(&[65001, 65002]);
        set_path.as_path.segments.push(AsSegment {
            kind: SegmentType::Set,
            asns: vec![Asn(65010), Asn(65011)].into(),
        });
        let cases: &[(&str, &PathAttrs, bool)] = &[
            (
                r#"as-path-contains = [65002]"#,
                &attrs(&[65001, 65002, 65003]),
                true,
            ),
            (
                r#"as-path-contains = [65009]"#,
                &attrs(&[65001, 65002, 65003]),
                false,
            ),
            (
                r#"origin-as = [65003]"#,
                &attrs(&[65001, 65002, 65003]),
                true,
            ),
            (
                r#"origin-as = [65001]"#,
                &attrs(&[65001, 65002, 65003]),
                false,
            ),
            (r#"origin-as = [65010]"#, &set_path, false),
            (r#"neighbor-as = [65001]"#, &attrs(&[65001, 65002]), true),
            (r#"neighbor-as = [65002]"#, &attrs(&[65001, 65002]), false),
            (
                r#"as-path-length = { min = 2, max = 3 }"#,
                &attrs(&[1, 2]),
                true,
            ),
            (
                r#"as-path-length = { min = 2, max = 3 }"#,
                &attrs(&[1, 2, 3, 4]),
                false,
            ),
            (r#"as-path-length = { max = 0 }"#, &attrs(&[]), true),
            (r#"as-path-length = { min = 3 }"#, &set_path, true),
            (
                r#"as-path-regex = "^65001_""#,
                &attrs(&[65001, 65002]),
                true,
            ),
            (
                r#"as-path-regex = "^65001_""#,
                &attrs(&[650012, 65002]),
                false,
            ),
            (r#"as-path-regex = "^65001_""#, &attrs(&[65001]), true),
            (
                r#"as-path-regex = "_65002$""#,
                &attrs(&[65001, 65002]),
                true,
            ),
            (
                r#"as-path-regex = "_65002$""#,
                &attrs(&[65002, 65001]),
                false,
            ),
            (r#"as-path-regex = "_6501[01]_""#, &set_path, true),
            (r#"as-path-regex = "^$""#, &attrs(&[]), true),
            (r#"as-path-regex = "^$""#, &attrs(&[1]), false),
            (
                r#"as-path-regex = "^(65001_)+65002$""#,
                &attrs(&[65001, 65001, 65002]),
                true,
            ),
        ];
        for (cond, a, want) in cases {
            let p = parse(&format!(
                "default = \"reject\"\n[[rules]]\nmatch = {{ {cond} }}\n"
            ));
            let (_, v) = verdict(&p, "10.0.0.0/24", a);
            assert_eq!(
                v == Verdict::Accept,
                *want,
                "{cond} on {:?}",
                as_path_text(a)
            );
            assert!(!p.prefix_dependent());
        }
    }

    #[test]
    fn bad_regex_is_an_error() {
        let p: Policy =
            toml::from_str(r#"rules = [ { match = { as-path-regex = "(65001" } } ]"#).unwrap();
        assert!(matches!(p.compile(), Err(PolicyError::BadRegex { .. })));
    }

    #[test]
    fn community_matches_table() {
        let mut a = attrs(&[1]);
        a.communities = vec![
            Community::new(65000, 1),
            Community::new(65000, 2),
            Community::NO_EXPORT,
        ]
        .into();
        a.large_communities = vec![LargeCommunity {
            global: 1,
            local1: 2,
            local2: 3,
        }];
        a.ext_communities = vec!["rt:65000:100".parse::<ExtCommunityValue>().unwrap().0];
        let cases = [
            (r#"community-any = ["65000:9", "65000:2"]"#, true),
            (r#"community-any = ["65000:9"]"#, false),
            (r#"community-all = ["65000:1", "no-export"]"#, true),
            (r#"community-all = ["65000:1", "no-advertise"]"#, false),
            (r#"large-community-any = ["1:2:3"]"#, true),
            (r#"large-community-all = ["1:2:3", "1:2:4"]"#, false),
            (r#"ext-community-any = ["rt:65000:100"]"#, true),
            (
                r#"ext-community-all = ["rt:65000:100", "soo:65000:100"]"#,
                false,
            ),
            (r#"next-hop-in = ["192.0.2.0/24"]"#, true),
            (r#"next-hop-in = ["198.51.100.0/24"]"#, false),
            (r#"peer-address = ["192.0.2.0/30"]"#, true),
            (r#"peer-address = ["2001:db8::/32"]"#, false),
            (
                r#"community-any = ["65000:1"], next-hop-in = ["198.51.100.0/24"]"#,
                false,
            ),
        ];
        for (cond, want) in cases {
            let p = parse(&format!(
                "default = \"reject\"\n[[rules]]\nmatch = {{ {cond} }}\n"
            ));
            let (_, v) = verdict(&p, "10.0.0.0/24", &a);
            assert_eq!(v == Verdict::Accept, want, "{cond}");
        }
    }

    #[test]
    fn learned_from_and_local_origin_table() {
        let a = attrs(&[65001]);
        let to: IpAddr = "192.0.2.9".parse().unwrap();
        let external: IpAddr = "192.0.2.1".parse().unwrap();
        let node: IpAddr = "10.0.0.2".parse().unwrap();
        // (condition, learned from, matches): on export `peer-address` is the target.
        let cases: &[(&str, Option<IpAddr>, bool)] = &[
            (r#"learned-from = ["192.0.2.1/32"]"#, Some(external), true),
            (r#"learned-from = ["192.0.2.1/32"]"#, Some(node), false),
            (r#"learned-from = ["192.0.2.1/32"]"#, None, false),
            (r#"learned-from = ["10.0.0.0/24"]"#, Some(node), true),
            (r#"learned-from = ["192.0.2.9/32"]"#, Some(external), false),
            (r#"learned-from = ["2001:db8::/32"]"#, Some(external), false),
            ("local-origin = true", None, true),
            ("local-origin = true", Some(node), false),
            ("local-origin = false", Some(node), true),
            ("local-origin = false", None, false),
            (
                r#"local-origin = false, learned-from = ["10.0.0.0/24"]"#,
                Some(node),
                true,
            ),
            (r#"peer-address = ["192.0.2.9/32"]"#, Some(external), true),
        ];
        for (cond, from, want) in cases {
            let p = parse(&format!(
                "default = \"reject\"\n[[rules]]\nmatch = {{ {cond} }}\n"
            ));
            let o = p.evaluate(&RouteCtx {
                prefix: net("198.51.100.0/24"),
                attrs: &a,
                peer_address: Some(to),
                learned_from: *from,
            });
            assert_eq!(o.accepted(), *want, "{cond} from {from:?}");
            assert!(!p.prefix_dependent(), "{cond}");
        }
    }

    #[test]
    fn first_match_wins_and_default_applies() {
        let p = parse(
            r#"
            default = "accept"
            [[rules]]
            name = "bogons"
            match = { prefix = [ { prefix = "10.0.0.0/8", le = 32 } ] }
            then = { action = "reject" }
            [[rules]]
            match = { as-path-contains = [65001] }
            then = { set-local-pref = 50 }
            "#,
        );
        assert_eq!(
            verdict(&p, "10.1.0.0/16", &attrs(&[65001])),
            (Some(0), Verdict::Reject)
        );
        assert_eq!(
            verdict(&p, "11.1.0.0/16", &attrs(&[65001])),
            (Some(1), Verdict::Accept)
        );
        assert_eq!(
            verdict(&p, "11.1.0.0/16", &attrs(&[65002])),
            (None, Verdict::Accept)
        );
    }

    #[test]
    fn actions_table() {
        let mut base = attrs(&[65001]);
        base.communities = vec![Community::new(1, 1), Community::new(1, 2)].into();
        let run = |then: &str| {
            let p = parse(&format!("[[rules]]\nthen = {{ {then} }}\n"));
            p.run(
                &RouteCtx {
                    prefix: net("10.0.0.0/24"),
                    attrs: &base,
                    peer_address: None,
                    learned_from: None,
                },
                &env(),
            )
        };
        assert_eq!(run("set-local-pref = 300").unwrap().local_pref, Some(300));
        assert_eq!(run("set-med = 7").unwrap().med, Some(7));
        assert_eq!(
            run(r#"add-communities = ["1:3", "1:1"]"#)
                .unwrap()
                .communities
                .to_vec(),
            vec![
                Community::new(1, 1),
                Community::new(1, 2),
                Community::new(1, 3)
            ]
        );
        assert_eq!(
            run(r#"remove-communities = ["1:1"]"#)
                .unwrap()
                .communities
                .to_vec(),
            vec![Community::new(1, 2)]
        );
        assert_eq!(
            run(r#"replace-communities = ["no-export"]"#)
                .unwrap()
                .communities
                .to_vec(),
            vec![Community::NO_EXPORT]
        );
        assert_eq!(
            run(r#"replace-communities = []"#)
                .unwrap()
                .communities
                .to_vec(),
            vec![]
        );
        assert_eq!(
            run(r#"add-large-communities = ["64512:1:2"]"#)
                .unwrap()
                .large_communities,
            vec![LargeCommunity {
                global: 64512,
                local1: 1,
                local2: 2
            }]
        );
        assert_eq!(
            run("prepend = 2").unwrap().as_path,
            AsPath::from_sequence([Asn(64512), Asn(64512), Asn(65001)])
        );
        assert_eq!(
            run("next-hop-self = true").unwrap().next_hop,
            Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(run(r#"action = "reject", set-med = 1"#), None);
        let p: Policy = toml::from_str(
            r#"rules = [ { then = { replace-communities = [], add-communities = ["1:1"] } } ]"#,
        )
        .unwrap();
        assert!(matches!(
            p.compile(),
            Err(PolicyError::ConflictingCommunityActions { .. })
        ));
    }

    #[test]
    fn community_text_round_trips() {
        for s in ["65000:100", "no-export", "blackhole", "0:0"] {
            assert_eq!(s.parse::<CommunityValue>().unwrap().to_string(), s);
        }
        for s in [
            "rt:65000:100",
            "soo:192.0.2.1:7",
            "rt:4200000000:5",
            "0x4300000000000001",
        ] {
            assert_eq!(s.parse::<ExtCommunityValue>().unwrap().to_string(), s);
        }
        assert_eq!(
            "1:2:3".parse::<LargeCommunityValue>().unwrap().to_string(),
            "1:2:3"
        );
        assert!("65536:1".parse::<CommunityValue>().is_err());
        assert!("1:2".parse::<LargeCommunityValue>().is_err());
        assert!("xx:1:2".parse::<ExtCommunityValue>().is_err());
    }

    #[test]
    fn serde_round_trip() {
        let text = r#"
            default = "reject"
            [[rules]]
            name = "r1"
            match = { prefix = [ { prefix = "10.0.0.0/8", le = 24 } ], community-any = ["65000:1"], large-community-all = ["1:2:3"], learned-from = ["192.0.2.0/24"], local-origin = false }
            then = { set-local-pref = 200, add-communities = ["no-export"], prepend = 1 }
        "#;
        let p: Policy = toml::from_str(text).unwrap();
        let again: Policy = toml::from_str(&toml::to_string(&p).unwrap()).unwrap();
        assert_eq!(p, again);
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"set-local-pref\":200"), "{json}");
    }

    #[test]
    fn accept_all_and_reject_all() {
        let a = attrs(&[1]);
        let p = Policy::accept_all().compile().unwrap();
        assert!(p.is_accept_all());
        assert_eq!(verdict(&p, "10.0.0.0/8", &a).1, Verdict::Accept);
        let p = Policy::reject_all().compile().unwrap();
        assert!(!p.is_accept_all());
        assert_eq!(verdict(&p, "10.0.0.0/8", &a).1, Verdict::Reject);
    }
}
