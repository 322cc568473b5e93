//! What the interop scenarios ask of a peer daemon beyond [`BgpDaemon`]: how it saw
//! serval's OPEN, how it asks for a route refresh, what it says the last error was,
//! and which features it lacks — each with the reason the matrix prints.
//!
//! Capabilities are reported in serval's own names (`4-octet-as`, `route-refresh`,
//! `enhanced-route-refresh`, `graceful-restart`, `ipv4-unicast`, `ipv6-unicast`) so a
//! scenario compares both sides' views directly.

use crate::daemons::{BgpDaemon, Bird, ExaBgp, Frr, GoBgp, OpenBgpd};
use crate::error::{Error, Result};
use crate::spec::Family;
use serde_json::Value;
use std::net::IpAddr;

/// The per-peer columns of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    Session,
    Routes,
    Md5,
    /// serval stops gracefully and comes back; the peer is the helper.
    GrServalRestarts,
    /// The peer restarts; serval is the helper.
    GrPeerRestarts,
    /// serval sends ROUTE-REFRESH.
    RefreshServalAsks,
    /// The peer sends ROUTE-REFRESH.
    RefreshPeerAsks,
    MaxPrefix,
    Gtsm,
    /// IPv4 and IPv6 unicast over one IPv4 session.
    DualStack,
}

impl Feature {
    pub const ALL: [Feature; 10] = [
        Feature::Session,
        Feature::Routes,
        Feature::Md5,
        Feature::GrServalRestarts,
        Feature::GrPeerRestarts,
        Feature::RefreshServalAsks,
        Feature::RefreshPeerAsks,
        Feature::MaxPrefix,
        Feature::Gtsm,
        Feature::DualStack,
    ];

    /// The column heading.
    pub fn column(self) -> &'static str {
        match self {
            Feature::Session => "session",
            Feature::Routes => "routes both ways",
            Feature::Md5 => "md5",
            Feature::GrServalRestarts => "GR: serval restarts",
            Feature::GrPeerRestarts => "GR: peer restarts",
            Feature::RefreshServalAsks => "refresh: serval asks",
            Feature::RefreshPeerAsks => "refresh: peer asks",
            Feature::MaxPrefix => "max-prefix",
            Feature::Gtsm => "multihop + GTSM",
            Feature::DualStack => "IPv6 over an IPv4 session",
        }
    }
}

/// A peer daemon as the interop scenarios drive it.
pub trait InteropPeer: BgpDaemon + Sized + 'static {
    /// The row of the matrix.
    const NAME: &'static str;

    /// Whether the daemon sends and shows the link-local half of an IPv6 next hop
    /// (RFC 2545 §3): the routes scenario then puts link-local addresses on the link and
    /// checks them both ways.
    const LINK_LOCAL_NEXT_HOP: bool = false;

    /// Whether the daemon announces enhanced route refresh (RFC 7313).
    const ENHANCED_ROUTE_REFRESH: bool;

    /// Why the daemon cannot take part in `feature`, or `None` when it can.
    fn cannot(feature: Feature) -> Option<&'static str> {
        let _ = feature;
        None
    }

    /// The capabilities `neighbor` (serval) announced, as this daemon saw them.
    fn seen_capabilities(&self, neighbor: IpAddr) -> Result<Vec<String>>;

    /// Asks `neighbor` to send its routes again, with the daemon's own command.
    fn request_refresh(&self, neighbor: IpAddr) -> Result<()>;

    /// The daemon's account of the last error on the session with `neighbor`.
    fn last_error(&self, neighbor: IpAddr) -> Result<String>;

    /// Whether the daemon marks routes kept over a graceful restart as stale in what it
    /// shows (otherwise the scenario checks that they outlive the hold time).
    const SHOWS_STALE: bool;

    /// Begin- and End-of-Route-Refresh messages (RFC 7313) received from `neighbor`, for
    /// daemons that count them.
    fn refresh_markers_received(&self, neighbor: IpAddr) -> Result<Option<(u64, u64)>> {
        let _ = neighbor;
        Ok(None)
    }
}

fn families_of<D: BgpDaemon>(d: &D, neighbor: IpAddr) -> Result<Vec<Family>> {
    d.spec()
        .find_neighbor(neighbor)
        .map(|n| n.families.clone())
        .ok_or_else(|| Error::InvalidSpec(format!("{} has no neighbor {neighbor}", d.kind())))
}

fn afi(f: Family) -> &'static str {
    match f {
        Family::Ipv4Unicast => "ipv4",
        Family::Ipv6Unicast => "ipv6",
    }
}

// ---- BIRD ----

impl InteropPeer for Bird {
    const NAME: &'static str = "bird";
    const LINK_LOCAL_NEXT_HOP: bool = true;
    const ENHANCED_ROUTE_REFRESH: bool = true;
    const SHOWS_STALE: bool = false;

    fn seen_capabilities(&self, neighbor: IpAddr) -> Result<Vec<String>> {
        let out = self.birdc(&["show", "protocols", "all", &self.protocol(neighbor)?])?;
        let caps = bird_neighbor_caps(&out);
        if caps.is_empty() {
            return Err(Error::parse(
                "bird",
                "neighbor capabilities",
                "no `Neighbor capabilities` block",
                &out,
            ));
        }
        Ok(caps)
    }

    fn request_refresh(&self, neighbor: IpAddr) -> Result<()> {
        self.birdc(&["reload", "in", &self.protocol(neighbor)?])
            .map(drop)
    }

    fn last_error(&self, neighbor: IpAddr) -> Result<String> {
        let out = self.birdc(&["show", "protocols", "all", &self.protocol(neighbor)?])?;
        Ok(out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Last error:"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default())
    }
}

/// The `Neighbor capabilities` block of `birdc show protocols all`, in serval's names.
pub fn bird_neighbor_caps(out: &str) -> Vec<String> {
    let mut caps = Vec::new();
    let mut inside: Option<usize> = None;
    for line in out.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if text == "Neighbor capabilities" {
            inside = Some(indent);
            continue;
        }
        match inside {
            Some(start) if indent > start => {}
            Some(_) => inside = None,
            None => continue,
        }
        if inside.is_none() {
            continue;
        }
        match text {
            "Route refresh" => caps.push("route-refresh".to_string()),
            "Enhanced refresh" => caps.push("enhanced-route-refresh".into()),
            "Graceful restart" => caps.push("graceful-restart".into()),
            "4-octet AS numbers" => caps.push("4-octet-as".into()),
            _ => {
                if let Some(afs) = text.strip_prefix("AF announced:") {
                    for af in afs.split_whitespace() {
                        match af {
                            "ipv4" => caps.push("ipv4-unicast".into()),
                            "ipv6" => caps.push("ipv6-unicast".into()),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    caps
}

// ---- FRR ----

impl InteropPeer for Frr {
    const NAME: &'static str = "frr";
    const ENHANCED_ROUTE_REFRESH: bool = true;
    const SHOWS_STALE: bool = true;

    fn seen_capabilities(&self, neighbor: IpAddr) -> Result<Vec<String>> {
        let cmd = format!("show bgp neighbors {neighbor} json");
        let out = self.vtysh(&[&cmd])?;
        let v: Value =
            serde_json::from_str(&out).map_err(|e| Error::parse("frr", &cmd, e, &out))?;
        let caps = v
            .pointer(&format!("/{neighbor}/neighborCapabilities"))
            .ok_or_else(|| Error::parse("frr", &cmd, "no neighborCapabilities", &out))?;
        Ok(frr_caps(caps))
    }

    fn request_refresh(&self, neighbor: IpAddr) -> Result<()> {
        for f in families_of(self, neighbor)? {
            self.vtysh(&[&format!("clear bgp {} unicast {neighbor} soft in", afi(f))])?;
        }
        Ok(())
    }

    fn last_error(&self, neighbor: IpAddr) -> Result<String> {
        let cmd = format!("show bgp neighbors {neighbor} json");
        let out = self.vtysh(&[&cmd])?;
        let v: Value =
            serde_json::from_str(&out).map_err(|e| Error::parse("frr", &cmd, e, &out))?;
        let p = v.get(neighbor.to_string()).cloned().unwrap_or(Value::Null);
        let mut parts = Vec::new();
        for key in [
            "lastNotificationReason",
            "lastResetDueTo",
            "lastErrorCodeSubcode",
        ] {
            if let Some(s) = p.get(key).and_then(Value::as_str) {
                parts.push(format!("{key}: {s}"));
            }
        }
        Ok(parts.join("; "))
    }
}

/// FRR's `neighborCapabilities`: a capability counts when its value says it was received.
pub fn frr_caps(caps: &Value) -> Vec<String> {
    let received = |v: &Value| match v {
        Value::String(s) => s.to_ascii_lowercase().contains("received"),
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k.to_ascii_lowercase().contains("received") && v != &Value::Bool(false)),
        _ => false,
    };
    let mut out = Vec::new();
    for (key, name) in [
        ("4byteAs", "4-octet-as"),
        ("routeRefresh", "route-refresh"),
        ("enhancedRouteRefresh", "enhanced-route-refresh"),
        ("gracefulRestart", "graceful-restart"),
    ] {
        if caps.get(key).is_some_and(received) {
            out.push(name.to_string());
        }
    }
    for (key, name) in [
        ("ipv4Unicast", "ipv4-unicast"),
        ("ipv6Unicast", "ipv6-unicast"),
    ] {
        if caps
            .pointer(&format!("/multiprotocolExtensions/{key}"))
            .is_some_and(received)
        {
            out.push(name.to_string());
        }
    }
    out
}

// ---- GoBGP ----

impl InteropPeer for GoBgp {
    const NAME: &'static str = "gobgp";
    const ENHANCED_ROUTE_REFRESH: bool = false;
    const SHOWS_STALE: bool = true;

    fn cannot(feature: Feature) -> Option<&'static str> {
        match feature {
            Feature::RefreshPeerAsks => Some(
                "GoBGP 3.10 has no command that sends ROUTE-REFRESH: `neighbor … softresetin` \
                 re-applies import policy to its own Adj-RIB-In (its sent-message counters \
                 show no refresh)",
            ),
            _ => None,
        }
    }

    fn seen_capabilities(&self, neighbor: IpAddr) -> Result<Vec<String>> {
        let addr = neighbor.to_string();
        let out = self.gobgp(&["neighbor", &addr, "-j"])?;
        let v: Value = serde_json::from_str(&out)
            .map_err(|e| Error::parse("gobgp", "gobgp neighbor -j", e, &out))?;
        let caps = v
            .pointer("/state/remote_cap")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                Error::parse("gobgp", "gobgp neighbor -j", "no state.remote_cap", &out)
            })?;
        let names = gobgp_caps(caps);
        if names.is_empty() {
            return Err(Error::parse(
                "gobgp",
                "state.remote_cap",
                "nothing understood",
                &out,
            ));
        }
        Ok(names)
    }

    fn request_refresh(&self, neighbor: IpAddr) -> Result<()> {
        let addr = neighbor.to_string();
        for f in families_of(self, neighbor)? {
            self.gobgp(&["neighbor", &addr, "softresetin", "-a", afi(f)])?;
        }
        Ok(())
    }

    fn last_error(&self, neighbor: IpAddr) -> Result<String> {
        // GoBGP's API keeps no last error; its log names every NOTIFICATION.
        let key = format!("Key={neighbor}");
        Ok(self
            .log()
            .lines()
            .rfind(|l| l.contains("received notification") && l.contains(&key))
            .map(gobgp_notification)
            .unwrap_or_default())
    }
}

/// `received notification Code=6 Subcode=1 Data="[0 1 1 0 0 0 3]"` out of a GoBGP log
/// line (without its timestamp).
pub fn gobgp_notification(line: &str) -> String {
    let field = |name: &str| {
        line.split_once(&format!(" {name}="))
            .map(|(_, rest)| {
                if let Some(quoted) = rest.strip_prefix('"') {
                    format!("\"{}\"", quoted.split('"').next().unwrap_or_default())
                } else {
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string()
                }
            })
            .unwrap_or_default()
    };
    format!(
        "received notification Code={} Subcode={} Data={}",
        field("Code"),
        field("Subcode"),
        field("Data")
    )
}

/// GoBGP's `remote_cap` list: protobuf `Any` values named by their type. The family
/// of a Multiprotocol capability is the protobuf encoding of `{afi, safi}`, which for
/// unicast is one of two fixed byte strings (base64 here).
pub fn gobgp_caps(caps: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for c in caps {
        let kind = c
            .get("type_url")
            .and_then(Value::as_str)
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or_default();
        let value = c.get("value").and_then(Value::as_str).unwrap_or_default();
        match (kind, value) {
            ("MultiProtocolCapability", "CgQIARAB") => out.push("ipv4-unicast".to_string()),
            ("MultiProtocolCapability", "CgQIAhAB") => out.push("ipv6-unicast".to_string()),
            ("RouteRefreshCapability", _) => out.push("route-refresh".into()),
            ("EnhancedRouteRefreshCapability", _) => out.push("enhanced-route-refresh".into()),
            ("GracefulRestartCapability", _) => out.push("graceful-restart".into()),
            ("FourOctetASNCapability", _) => out.push("4-octet-as".into()),
            _ => {}
        }
    }
    out
}

// ---- OpenBGPD ----

impl InteropPeer for OpenBgpd {
    const NAME: &'static str = "openbgpd";
    const ENHANCED_ROUTE_REFRESH: bool = true;
    const SHOWS_STALE: bool = true;

    fn cannot(feature: Feature) -> Option<&'static str> {
        match feature {
            Feature::RefreshServalAsks => Some(
                "OpenBGPD 7.7 counts but ignores every ROUTE-REFRESH it receives \
                 (`route refresh: AID IPv4 unicast not negotiated`, BIRD's request too)",
            ),
            Feature::GrPeerRestarts => Some(
                "OpenBGPD 7.7 announces graceful restart for End-of-RIB only, with no address \
                 family preserved, so a helper keeps none of its routes (RFC 4724 §4.2)",
            ),
            Feature::DualStack => Some(
                "OpenBGPD 7.7 with an IPv4 local-address sends IPv6 routes with next hop ::1, \
                 which serval refuses as RFC 4271 §6.3 asks (see the martian NEXT_HOP case)",
            ),
            _ => None,
        }
    }

    fn refresh_markers_received(&self, neighbor: IpAddr) -> Result<Option<(u64, u64)>> {
        let v = self.neighbor_json(neighbor)?;
        let count = |k: &str| {
            v.pointer(&format!("/stats/route-refresh/received/{k}"))
                .and_then(Value::as_u64)
        };
        Ok(count("borr").zip(count("eorr")))
    }

    fn seen_capabilities(&self, neighbor: IpAddr) -> Result<Vec<String>> {
        let v = self.neighbor_json(neighbor)?;
        let caps = v.pointer("/session/remote/capabilities").ok_or_else(|| {
            Error::parse(
                "openbgpd",
                "show neighbor",
                "no capabilities",
                &v.to_string(),
            )
        })?;
        Ok(openbgpd_caps(caps))
    }

    fn request_refresh(&self, neighbor: IpAddr) -> Result<()> {
        self.bgpctl(&["neighbor", &neighbor.to_string(), "refresh"])
            .map(drop)
    }

    fn last_error(&self, neighbor: IpAddr) -> Result<String> {
        let v = self.neighbor_json(neighbor)?;
        let mut parts = Vec::new();
        for key in ["last_error", "last_error_received", "last_error_sent"] {
            if let Some(s) = v.get(key).and_then(Value::as_str) {
                parts.push(format!("{key}: {s}"));
            }
        }
        if parts.is_empty() {
            parts.push(v.to_string());
        }
        Ok(parts.join("; "))
    }
}

impl OpenBgpd {
    /// `bgpctl -j show neighbor ADDR`, the entry of that neighbour.
    pub fn neighbor_json(&self, neighbor: IpAddr) -> Result<Value> {
        let out = self.bgpctl(&["-j", "show", "neighbor", &neighbor.to_string()])?;
        let v: Value = serde_json::from_str(&out)
            .map_err(|e| Error::parse("openbgpd", "bgpctl -j show neighbor", e, &out))?;
        v.pointer("/neighbors/0")
            .cloned()
            .ok_or_else(|| Error::parse("openbgpd", "bgpctl -j show neighbor", "no entry", &out))
    }
}

/// OpenBGPD's capability object in serval's names.
pub fn openbgpd_caps(caps: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let has = |k: &str| caps.get(k).is_some_and(|v| v != &Value::Bool(false));
    if has("as4byte") || has("4-byte_AS_numbers") {
        out.push("4-octet-as".to_string());
    }
    if has("route_refresh") || has("refresh") {
        out.push("route-refresh".into());
    }
    if has("enhanced_route_refresh") || has("enhanced_refresh") {
        out.push("enhanced-route-refresh".into());
    }
    if has("graceful_restart") {
        out.push("graceful-restart".into());
    }
    let mp = caps
        .get("multiprotocol")
        .map(|v| v.to_string().to_ascii_lowercase())
        .unwrap_or_default();
    if mp.contains("ipv4 unicast") {
        out.push("ipv4-unicast".into());
    }
    if mp.contains("ipv6 unicast") {
        out.push("ipv6-unicast".into());
    }
    out
}

// ---- ExaBGP ----

impl InteropPeer for ExaBgp {
    const NAME: &'static str = "exabgp";
    const ENHANCED_ROUTE_REFRESH: bool = true;
    const SHOWS_STALE: bool = false;

    fn cannot(feature: Feature) -> Option<&'static str> {
        match feature {
            Feature::GrServalRestarts => Some(
                "ExaBGP keeps no RIB and has no graceful-restart helper mode: nothing to keep stale",
            ),
            Feature::DualStack => Some(
                "ExaBGP's `next-hop self` on an IPv4 session puts its IPv4 address in the \
                 MP_REACH_NLRI of IPv6 routes (a 4-octet next hop for AFI 2: RFC 7606 §7.11 \
                 session reset, which serval does with 3/9)",
            ),
            _ => None,
        }
    }

    fn seen_capabilities(&self, neighbor: IpAddr) -> Result<Vec<String>> {
        let opens = self.messages("open")?;
        let open = opens
            .iter()
            .rev()
            .find(|v| {
                v.pointer("/neighbor/address/peer").and_then(Value::as_str)
                    == Some(neighbor.to_string().as_str())
                    && v.pointer("/neighbor/direction").and_then(Value::as_str) == Some("receive")
            })
            .ok_or_else(|| {
                Error::parse(
                    "exabgp",
                    "received OPEN",
                    format!("none from {neighbor}"),
                    &format!("{opens:?}"),
                )
            })?;
        let caps = open
            .pointer("/neighbor/open/capabilities")
            .ok_or_else(|| Error::parse("exabgp", "OPEN", "no capabilities", &open.to_string()))?;
        Ok(exabgp_caps(caps))
    }

    fn request_refresh(&self, neighbor: IpAddr) -> Result<()> {
        let lines: Vec<String> = families_of(self, neighbor)?
            .into_iter()
            .map(|f| {
                format!(
                    "neighbor {neighbor} announce route-refresh {} unicast",
                    afi(f)
                )
            })
            .collect();
        self.api(&lines)
    }

    fn last_error(&self, neighbor: IpAddr) -> Result<String> {
        Ok(self
            .messages("notification")?
            .iter()
            .rfind(|v| {
                v.pointer("/neighbor/address/peer").and_then(Value::as_str)
                    == Some(neighbor.to_string().as_str())
            })
            .and_then(|v| v.pointer("/neighbor/notification"))
            .map(Value::to_string)
            .unwrap_or_default())
    }
}

/// The capabilities of an OPEN as ExaBGP's JSON encoder writes them, keyed by code.
pub fn exabgp_caps(caps: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(map) = caps.as_object() else {
        return out;
    };
    for (code, c) in map {
        match code.as_str() {
            "1" => {
                let text = c.to_string().to_ascii_lowercase().replace('/', " ");
                if text.contains("ipv4 unicast") {
                    out.push("ipv4-unicast".to_string());
                }
                if text.contains("ipv6 unicast") {
                    out.push("ipv6-unicast".to_string());
                }
            }
            "2" => out.push("route-refresh".into()),
            "64" => out.push("graceful-restart".into()),
            "65" => out.push("4-octet-as".into()),
            "70" => out.push("enhanced-route-refresh".into()),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bird_caps_are_read_from_the_neighbor_block_only() {
        let out = "  BGP state:          Established
    Local capabilities
      Multiprotocol
        AF announced: ipv4
      Route refresh
      Graceful restart
    Neighbor capabilities
      Multiprotocol
        AF announced: ipv4 ipv6
      Route refresh
      Enhanced refresh
      Graceful restart
        Restart time: 30
      4-octet AS numbers
    Session:          external AS4
";
        assert_eq!(
            bird_neighbor_caps(out),
            vec![
                "ipv4-unicast",
                "ipv6-unicast",
                "route-refresh",
                "enhanced-route-refresh",
                "graceful-restart",
                "4-octet-as"
            ]
        );
    }

    #[test]
    fn frr_caps_need_received() {
        let v: Value = serde_json::from_str(
            r#"{"4byteAs":"advertisedAndReceived","routeRefresh":"advertised",
                "gracefulRestart":"advertisedAndReceived",
                "multiprotocolExtensions":{"ipv4Unicast":{"advertisedAndReceived":true}}}"#,
        )
        .unwrap();
        assert_eq!(
            frr_caps(&v),
            vec!["4-octet-as", "graceful-restart", "ipv4-unicast"]
        );
    }

    #[test]
    fn gobgp_notification_without_timestamp() {
        let line = r#"time="2026-11-25T17:39:50Z" level=warning msg="received notification" Code=6 Data="[0 1 1 0 0 0 3]" Key=192.0.2.1 Subcode=1 Topic=Peer"#;
        assert_eq!(
            gobgp_notification(line),
            r#"received notification Code=6 Subcode=1 Data="[0 1 1 0 0 0 3]""#
        );
    }

    #[test]
    fn gobgp_caps_by_type() {
        let v: Value = serde_json::from_str(
            r#"[{"type_url":"type.googleapis.com/apipb.MultiProtocolCapability","value":"CgQIAhAB"},
                {"type_url":"type.googleapis.com/apipb.RouteRefreshCapability"},
                {"type_url":"type.googleapis.com/apipb.FourOctetASNCapability","value":"COn7Aw=="},
                {"type_url":"type.googleapis.com/apipb.UnknownCapability","value":"CAY="}]"#,
        )
        .unwrap();
        let caps = v.as_array().unwrap();
        assert_eq!(
            gobgp_caps(caps),
            vec!["ipv6-unicast", "route-refresh", "4-octet-as"]
        );
    }

    #[test]
    fn openbgpd_caps_by_name() {
        let v: Value = serde_json::from_str(
            r#"{"as4byte":true,"enhanced_refresh":true,"graceful_restart":{"eor":true},
                "multiprotocol":["IPv4 unicast"],"refresh":true}"#,
        )
        .unwrap();
        assert_eq!(
            openbgpd_caps(&v),
            vec![
                "4-octet-as",
                "route-refresh",
                "enhanced-route-refresh",
                "graceful-restart",
                "ipv4-unicast"
            ]
        );
    }

    #[test]
    fn exabgp_caps_by_code() {
        let v: Value = serde_json::from_str(
            r#"{"1":{"name":"multiprotocol","families":["ipv4/unicast"]},"2":{"name":"route-refresh"},"65":{"name":"asn4","asn4":65001}}"#,
        )
        .unwrap();
        assert_eq!(
            exabgp_caps(&v),
            vec!["ipv4-unicast", "route-refresh", "4-octet-as"]
        );
    }
}
