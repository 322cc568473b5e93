//! The CNI protocol as the spec (1.1.0) defines it: versions, the result each version
//! prints, and the error object with its well-known codes.
//!
//! serval speaks 1.1.0 and accepts configurations of 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0,
//! answering in the format of the configuration's version (spec "Section 5: Result
//! types"): before 1.0.0 every `ips[]` entry carries `"version": "4"|"6"`; 1.1.0 adds
//! `mtu`/`socketPath`/`pciID` to interfaces and `mtu`/`advmss`/`priority`/`table`/`scope`
//! to routes. Results are built once, version-neutral ([`CniResult`]), and rendered per
//! version at the edge; a `prevResult` of any version parses back into the same type.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// A CNI spec version serval accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    /// Every version serval accepts, oldest first (what VERSION reports).
    pub const SUPPORTED: [Version; 5] = [
        Version::V0_3_0,
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];
    /// The version serval implements.
    pub const LATEST: Version = Version::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Parses a `cniVersion`; versions serval does not accept are error code 1.
    pub fn parse(s: &str) -> Result<Version, CniError> {
        Version::SUPPORTED
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                CniError::new(
                    ErrorCode::IncompatibleVersion,
                    format!("CNI version {s:?} is not supported"),
                )
                .details(format!(
                    "serval accepts {}",
                    Version::SUPPORTED.map(Version::as_str).join(", ")
                ))
            })
    }

    /// CHECK exists from 0.4.0 on.
    pub fn has_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// STATUS and GC exist from 1.1.0 on.
    pub fn has_status_and_gc(self) -> bool {
        self >= Version::V1_1_0
    }

    /// Before 1.0.0 each `ips[]` entry names its IP version.
    fn ips_carry_version(self) -> bool {
        self < Version::V1_0_0
    }

    /// 1.1.0 added interface MTU and the route attributes.
    fn has_11_fields(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The spec's well-known error codes (0–99) and serval's own (100 and up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: incompatible CNI version.
    IncompatibleVersion,
    /// 2: unsupported field in the network configuration; the message names the key.
    UnsupportedField,
    /// 3: the container is unknown or does not exist; the runtime need not clean up.
    UnknownContainer,
    /// 4: invalid necessary environment variables (`CNI_*`).
    InvalidEnvironment,
    /// 5: I/O failure (reading stdin).
    Io,
    /// 6: failed to decode content (the configuration is not JSON).
    Decode,
    /// 7: invalid network configuration.
    InvalidConfig,
    /// 11: try again later (the datastore is unreachable, a lock is busy).
    TryAgainLater,
    /// 50: the plugin is not available (STATUS).
    NotAvailable,
    /// 100: no address is available for the pod (pools full, none for the node).
    NoAddress,
    /// 101: the IPAM datastore failed or refused a request.
    Datastore,
    /// 102: configuring the kernel (veth, addresses, routes, sysctls) failed.
    Dataplane,
    /// 103: CHECK found the pod's networking not as ADD left it.
    CheckFailed,
    /// 104: the Kubernetes API (pod annotations, node labels) failed.
    Kubernetes,
    /// 105: a requested fixed address belongs to someone else or lies in no pool.
    AddressUnavailable,
}

impl ErrorCode {
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::Io => 5,
            ErrorCode::Decode => 6,
            ErrorCode::InvalidConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::NotAvailable => 50,
            ErrorCode::NoAddress => 100,
            ErrorCode::Datastore => 101,
            ErrorCode::Dataplane => 102,
            ErrorCode::CheckFailed => 103,
            ErrorCode::Kubernetes => 104,
            ErrorCode::AddressUnavailable => 105,
        }
    }
}

/// The error a plugin prints on stdout (spec "Error"): a code, a short message and
/// optional details.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The JSON printed on stdout.
    pub fn to_json(&self, version: Version) -> Value {
        let mut v = json!({
            "cniVersion": version.as_str(),
            "code": self.code.code(),
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

/// An interface in a result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// 1.1.0 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// 1.1.0 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// 1.1.0 and later.
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An address in a result: the address with its prefix length, as CIDR text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route in a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// The 1.1.0 route attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings in a result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A result, independent of the version it is printed in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// A `prevResult` as any accepted version writes it; unknown keys (other plugins' additions)
/// are ignored, the `ips[].version` of old versions too.
#[derive(Deserialize)]
struct AnyResult {
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<IpConfig>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Option<Dns>,
}

impl CniResult {
    /// The result as `version` defines it.
    pub fn to_json(&self, version: Version) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), version.as_str().into());
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut i = i.clone();
                if !version.has_11_fields() {
                    i.mtu = None;
                    i.socket_path = None;
                    i.pci_id = None;
                }
                to_value(&i)
            })
            .collect();
        out.insert("interfaces".into(), Value::Array(interfaces));
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = to_value(ip);
                if version.ips_carry_version() {
                    let family = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    if let Value::Object(m) = &mut v {
                        m.insert("version".into(), family.into());
                    }
                }
                v
            })
            .collect();
        out.insert("ips".into(), Value::Array(ips));
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if !version.has_11_fields() {
                    r.mtu = None;
                    r.advmss = None;
                    r.priority = None;
                    r.table = None;
                    r.scope = None;
                }
                to_value(&r)
            })
            .collect();
        out.insert("routes".into(), Value::Array(routes));
        out.insert("dns".into(), to_value(&self.dns));
        Value::Object(out)
    }

    /// Reads a `prevResult` of any accepted version.
    pub fn from_json(v: &Value) -> Result<CniResult, CniError> {
        let any: AnyResult = serde_path_to_error::deserialize(v).map_err(|e| {
            CniError::new(ErrorCode::InvalidConfig, "prevResult is not a CNI result")
                .details(format!("at {}: {}", e.path(), e.inner()))
        })?;
        let result = CniResult {
            interfaces: any.interfaces,
            ips: any.ips,
            routes: any.routes,
            dns: any.dns.unwrap_or_default(),
        };
        if let Some(bad) = result
            .ips
            .iter()
            .filter_map(|ip| ip.interface)
            .find(|i| *i >= result.interfaces.len())
        {
            return Err(
                CniError::new(ErrorCode::InvalidConfig, "prevResult is not a CNI result").details(
                    format!(
                        "an address names interface {bad}, the result lists {}",
                        result.interfaces.len()
                    ),
                ),
            );
        }
        Ok(result)
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    // These types hold strings, numbers and addresses only: serializing cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// What VERSION prints.
pub fn version_info() -> Value {
    json!({
        "cniVersion": Version::LATEST.as_str(),
        "supportedVersions": Version::SUPPORTED.map(Version::as_str),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "sv0123456789abc".into(),
                    mac: Some("ee:ee:ee:ee:ee:ee".into()),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:58:0a:f4:00:05".into()),
                    mtu: Some(1450),
                    sandbox: Some("/var/run/netns/pod".into()),
                    ..Interface::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.244.0.5/32".parse().unwrap(),
                    gateway: Some("169.254.1.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::5/128".parse().unwrap(),
                    gateway: Some("fe80::1".parse().unwrap()),
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                scope: Some(253),
                ..Route::new("169.254.1.1/32".parse().unwrap(), None)
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn versions_parse_and_order() {
        for v in Version::SUPPORTED {
            assert_eq!(Version::parse(v.as_str()), Ok(v));
        }
        for bad in ["0.1.0", "0.2.0", "1.2.0", "", "1.1"] {
            let e = Version::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::IncompatibleVersion, "{bad}");
            assert!(e.details.contains("1.1.0"), "{e}");
        }
        assert!(!Version::V0_3_1.has_check());
        assert!(Version::V0_4_0.has_check());
        assert!(!Version::V1_0_0.has_status_and_gc());
        assert!(Version::V1_1_0.has_status_and_gc());
    }

    /// The shape of each version's result, field by field.
    #[test]
    fn results_per_version() {
        let r = sample();
        let old = r.to_json(Version::V0_3_1);
        assert_eq!(old["cniVersion"], "0.3.1");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        assert_eq!(old["ips"][0]["address"], "10.244.0.5/32");
        assert_eq!(old["ips"][0]["interface"], 1);
        assert!(old["interfaces"][1].get("mtu").is_none());
        assert_eq!(old["interfaces"][1]["sandbox"], "/var/run/netns/pod");
        assert!(old["routes"][0].get("scope").is_none());

        let v100 = r.to_json(Version::V1_0_0);
        assert!(v100["ips"][0].get("version").is_none());
        assert!(v100["interfaces"][1].get("mtu").is_none());

        let v110 = r.to_json(Version::V1_1_0);
        assert!(v110["ips"][0].get("version").is_none());
        assert_eq!(v110["interfaces"][1]["mtu"], 1450);
        assert_eq!(v110["routes"][0]["scope"], 253);
        assert!(v110["interfaces"][0].get("sandbox").is_none());
        assert_eq!(v110["dns"], json!({}));
    }

    #[test]
    fn prev_results_of_every_version_read_back() {
        let r = sample();
        for v in Version::SUPPORTED {
            let back = CniResult::from_json(&r.to_json(v)).unwrap();
            assert_eq!(back.ips, r.ips, "{v}");
            assert_eq!(back.interfaces.len(), 2);
            assert_eq!(back.interfaces[1].sandbox, r.interfaces[1].sandbox);
        }
        // Other plugins add keys of their own; they are not ours to refuse.
        let mut extra = r.to_json(Version::V1_0_0);
        extra["interfaces"][0]["bandwidthIfb"] = json!(true);
        extra["custom"] = json!({"x": 1});
        assert!(CniResult::from_json(&extra).is_ok());
    }

    #[test]
    fn bad_prev_results_name_the_problem() {
        let e = CniResult::from_json(&json!({"ips": [{"address": "nonsense"}]})).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.details.contains("ips[0].address"), "{e}");
        let e = CniResult::from_json(
            &json!({"interfaces": [], "ips": [{"address": "10.0.0.1/32", "interface": 3}]}),
        )
        .unwrap_err();
        assert!(e.details.contains("interface 3"), "{e}");
    }

    #[test]
    fn error_json() {
        let e = CniError::new(ErrorCode::TryAgainLater, "datastore unavailable").details("etcd");
        assert_eq!(
            e.to_json(Version::V1_0_0),
            json!({"cniVersion": "1.0.0", "code": 11, "msg": "datastore unavailable", "details": "etcd"})
        );
        let bare = CniError::new(ErrorCode::InvalidConfig, "bad");
        assert!(bare.to_json(Version::V1_1_0).get("details").is_none());
        assert_eq!(version_info()["supportedVersions"][4], "1.1.0");
    }
}
