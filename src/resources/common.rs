//! Value types the resources share: a BGP password source, a Go-style duration, a peer
//! address with optional port, and a MAC address, each parsed at the edge so that a bad
//! value is an error naming its field.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bgp::config::MAX_RESTART_TIME;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::node::dataplane::Mac;

/// Where a BGP (TCP MD5) password comes from. Exactly one source: a Kubernetes secret
/// (the only choice with the kubernetes datastore), or on file and etcd datastores an
/// inline value or a file on the node. `Debug` shows where it comes from, never the
/// value itself.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPassword {
    /// A key of a Secret in the agent's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// The password itself (file and etcd datastores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A file on the node holding the password (file and etcd datastores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl fmt::Debug for BgpPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let BgpPassword {
            secret_key_ref,
            value,
            file,
        } = self;
        f.debug_struct("BgpPassword")
            .field("secret_key_ref", secret_key_ref)
            .field("value", &value.as_ref().map(|_| bgp::config::Redacted))
            .field("file", file)
            .finish()
    }
}

/// A key of a Kubernetes Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key inside the Secret.
    pub key: String,
    /// Whether a missing Secret or key is tolerated (the session runs without password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

impl BgpPassword {
    /// The checks serde cannot make; the error says what is wrong, the caller adds
    /// the field path.
    pub fn check(&self) -> Result<(), String> {
        let sources = [
            self.secret_key_ref.is_some(),
            self.value.is_some(),
            self.file.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if sources != 1 {
            return Err(format!(
                "give exactly one of secretKeyRef, value, file (found {sources})"
            ));
        }
        if let Some(v) = &self.value {
            if v.is_empty() || v.len() > 80 {
                return Err("value: a TCP MD5 key is 1 to 80 bytes".into());
            }
        }
        Ok(())
    }
}

/// A duration written as Go and Kubernetes write them: `90s`, `2m`, `1h30m`, `500ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[schemars(with = "String")]
pub struct GoDuration(pub Duration);

impl FromStr for GoDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a duration (e.g. 90s, 2m, 1h30m)");
        if s == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total += Duration::try_from_secs_f64(value * unit).map_err(|_| bad())?;
        }
        Ok(GoDuration(total))
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl GoDuration {
    /// A graceful-restart time: whole seconds, at most 4095 (the capability's 12 bits).
    pub fn check_restart_time(self) -> Result<u16, String> {
        match u16::try_from(self.0.as_secs()) {
            Ok(s) if s <= MAX_RESTART_TIME => Ok(s),
            _ => Err(format!(
                "{self}: at most {MAX_RESTART_TIME}s, the most a graceful-restart capability carries"
            )),
        }
    }

    /// As a graceful-restart time, whole seconds capped at 4095 (what
    /// [`GoDuration::check_restart_time`] lets through unchanged).
    pub fn restart_secs(self) -> u16 {
        self.secs_u16().min(MAX_RESTART_TIME)
    }

    /// Whole seconds, saturated to `u16` (BGP timers are 16-bit).
    pub fn secs_u16(self) -> u16 {
        u16::try_from(self.0.as_secs()).unwrap_or(u16::MAX)
    }
}

/// A peer's address, `10.0.0.1`, `10.0.0.1:1790`, `fd00::1` or `[fd00::1]:1790` as
/// Calico's `peerIP` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[schemars(with = "String")]
pub struct PeerAddress {
    /// The address.
    pub ip: IpAddr,
    /// The TCP port, when not 179.
    pub port: Option<u16>,
}

impl FromStr for PeerAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IP address, IP:PORT or [IPv6]:PORT");
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(PeerAddress { ip, port: None });
        }
        let sa: std::net::SocketAddr = s.parse().map_err(|_| bad())?;
        Ok(PeerAddress {
            ip: sa.ip(),
            port: Some(sa.port()),
        })
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (ip, None) => write!(f, "{ip}"),
            (IpAddr::V4(ip), Some(p)) => write!(f, "{ip}:{p}"),
            (IpAddr::V6(ip), Some(p)) => write!(f, "[{ip}]:{p}"),
        }
    }
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[schemars(with = "String")]
pub struct MacAddr(pub Mac);

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)");
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(MacAddr(Mac(out)))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Serde through `Display` / `FromStr`, for the string-shaped values above.
macro_rules! serde_as_string {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_as_string!(GoDuration, PeerAddress, MacAddr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, secs) in [
            ("90s", 90.0),
            ("2m", 120.0),
            ("1h30m", 5400.0),
            ("500ms", 0.5),
            ("1.5s", 1.5),
            ("0", 0.0),
        ] {
            let d: GoDuration = text.parse().unwrap();
            assert_eq!(d.0.as_secs_f64(), secs, "{text}");
        }
        for bad in ["", "s", "10", "10x", "-1s", "1h-3m"] {
            assert!(bad.parse::<GoDuration>().is_err(), "{bad}");
        }
        assert_eq!("2m".parse::<GoDuration>().unwrap().to_string(), "120s");
    }

    #[test]
    fn peer_addresses() {
        let cases = [
            ("10.0.0.1", "10.0.0.1", None),
            ("10.0.0.1:1790", "10.0.0.1", Some(1790)),
            ("fd00::1", "fd00::1", None),
            ("[fd00::1]:50", "fd00::1", Some(50)),
        ];
        for (text, ip, port) in cases {
            let p: PeerAddress = text.parse().unwrap();
            assert_eq!((p.ip, p.port), (ip.parse().unwrap(), port), "{text}");
            assert_eq!(p.to_string(), text);
        }
        for bad in ["10.0.0.300", "host:179", "[fd00::1]", "10.0.0.1:99999"] {
            assert!(bad.parse::<PeerAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn macs_and_passwords() {
        let m: MacAddr = "66:cf:00:0a:bc:01".parse().unwrap();
        assert_eq!(m.to_string(), "66:cf:00:0a:bc:01");
        for bad in ["66:cf:00:0a:bc", "66:cf:00:0a:bc:0g", "66cf000abc01"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        let mut p = BgpPassword::default();
        assert!(p.check().is_err(), "no source");
        p.value = Some("s3cret".into());
        assert!(p.check().is_ok());
        p.file = Some("/etc/pw".into());
        assert!(p.check().is_err(), "two sources");
    }
}
