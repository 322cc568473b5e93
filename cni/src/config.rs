//! serval's network configuration: the JSON on stdin, parsed into typed settings.
//!
//! Keys follow Calico's CNI configuration where Calico has one, so a Calico user's
//! configuration mostly carries over (`nodename`, `nodename_file`, `mtu`, `datastore_type`,
//! `etcd_endpoints`, `log_file_path`, `ipam.assign_ipv4`, `ipam.ipv4_pools`,
//! `kubernetes.kubeconfig`, `container_settings.allow_ip_forwarding`, …). Every key is
//! documented in `cni/README.md`. Unknown keys are refused with error code 2, naming the
//! key: a typo must not silently change what a pod gets.
//!
//! ```json
//! {
//!   "cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "serval",
//!   "datastore": "kubernetes",
//!   "mtu": 0,
//!   "ipam": { "type": "serval-ipam", "assign_ipv4": true, "assign_ipv6": false },
//!   "kubernetes": { "kubeconfig": "/etc/cni/net.d/serval-kubeconfig" }
//! }
//! ```

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipam::model::PoolName;
use ipam::store::select::{Datastore, EtcdConfig, EtcdTls};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use crate::env::{Attachment, ContainerId, IfName};
use crate::spec::{CniError, CniResult, ErrorCode, Version};

/// Where the agent writes the node name it registered as (Calico: /var/lib/calico/nodename).
pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/serval/nodename";
/// Where the agent writes the pod MTU it computed from the underlay and the encapsulation.
pub const DEFAULT_MTU_FILE: &str = "/var/lib/serval/mtu";
/// The file the agent creates when it is ready to route pods (STATUS reads it).
pub const DEFAULT_READY_FILE: &str = "/run/serval/ready";
/// The node-wide lock that serializes IPAM calls of concurrent plugin invocations.
pub const DEFAULT_IPAM_LOCK_FILE: &str = "/run/serval/ipam.lock";
/// The plugin's log.
pub const DEFAULT_LOG_FILE: &str = "/var/log/serval/cni.log";

/// A pool named in the configuration or an annotation: by name or by CIDR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolRef {
    Name(PoolName),
    Cidr(IpNet),
}

impl PoolRef {
    pub fn parse(s: &str) -> Result<PoolRef, String> {
        if s.contains('/') {
            s.parse::<IpNet>()
                .map(|n| PoolRef::Cidr(n.trunc()))
                .map_err(|e| format!("{s:?}: {e}"))
        } else {
            PoolName::new(s)
                .map(PoolRef::Name)
                .map_err(|e| e.to_string())
        }
    }
}

/// Where the node name comes from: the configuration, else the agent's file, else the
/// host name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSource {
    pub explicit: Option<String>,
    pub file: PathBuf,
    /// Fall back to the host name when the file is missing (Calico's
    /// `nodename_file_optional`); otherwise a missing file is an error, because it means
    /// the agent has not registered the node yet.
    pub file_optional: bool,
}

/// Where the pod MTU comes from: `mtu` when set and not 0, else the agent's file, else
/// 1500 less the encapsulation overhead of the pool the address came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MtuSource {
    pub explicit: Option<u32>,
    pub file: PathBuf,
}

/// The plugin's file log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    pub path: PathBuf,
    /// tracing's filter syntax: `info`, `debug`, …
    pub level: String,
    /// Rotate when the file reaches this many bytes.
    pub max_size: u64,
    /// Rotated files kept.
    pub max_count: u32,
    /// Rotated files older than this are removed.
    pub max_age: Duration,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            path: DEFAULT_LOG_FILE.into(),
            level: "info".into(),
            max_size: 100 << 20,
            max_count: 10,
            max_age: Duration::from_secs(30 * 86400),
        }
    }
}

/// What addresses a pod gets when nothing more specific (annotations, runtime
/// arguments) says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamSettings {
    pub assign_ipv4: bool,
    pub assign_ipv6: bool,
    pub ipv4_pools: Vec<PoolRef>,
    pub ipv6_pools: Vec<PoolRef>,
}

/// The parsed configuration.
#[derive(Clone, Debug)]
pub struct NetConf {
    pub version: Version,
    /// The network name: part of every IPAM handle, so GC touches only this network.
    pub name: String,
    pub datastore: Datastore,
    pub node: NodeSource,
    pub mtu: MtuSource,
    pub ready_file: PathBuf,
    pub ipam_lock_file: PathBuf,
    pub log: LogSettings,
    pub ipam: IpamSettings,
    /// For the Kubernetes datastore and pod annotations: a kubeconfig file (else the
    /// in-cluster configuration or `KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// Let the pod forward IP traffic (`net.ipv4.ip_forward=1` inside it).
    pub allow_ip_forwarding: bool,
    /// Fixed addresses from the runtime (`runtimeConfig.ips`, `args.cni.ips`).
    pub runtime_ips: Vec<IpAddr>,
    pub prev_result: Option<CniResult>,
    /// GC: the attachments that must be kept.
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// A boolean that Calico's configurations write as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Text(String),
}

impl Flag {
    fn value(&self, key: &str) -> Result<bool, CniError> {
        match self {
            Flag::Bool(b) => Ok(*b),
            Flag::Text(t) if t == "true" => Ok(true),
            Flag::Text(t) if t == "false" => Ok(false),
            Flag::Text(t) => Err(invalid(format!("{key}: {t:?} is not true or false"))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIpam {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    assign_ipv4: Option<Flag>,
    #[serde(default)]
    assign_ipv6: Option<Flag>,
    #[serde(default)]
    ipv4_pools: Vec<String>,
    #[serde(default)]
    ipv6_pools: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    #[serde(default)]
    kubeconfig: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainerSettings {
    #[serde(default)]
    allow_ip_forwarding: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetConf {
    #[serde(rename = "cniVersion")]
    _cni_version: String,
    name: String,
    #[serde(rename = "type")]
    _kind: String,
    // serval's own keys.
    #[serde(default)]
    datastore: Option<String>,
    #[serde(default)]
    mtu_file: Option<PathBuf>,
    #[serde(default)]
    ready_file: Option<PathBuf>,
    #[serde(default)]
    ipam_lock_file: Option<PathBuf>,
    // Calico's keys.
    #[serde(default)]
    datastore_type: Option<String>,
    #[serde(default)]
    etcd_endpoints: Option<String>,
    #[serde(default)]
    etcd_key_file: Option<PathBuf>,
    #[serde(default)]
    etcd_cert_file: Option<PathBuf>,
    #[serde(default)]
    etcd_ca_cert_file: Option<PathBuf>,
    #[serde(default)]
    nodename: Option<String>,
    #[serde(default)]
    nodename_file: Option<PathBuf>,
    #[serde(default)]
    nodename_file_optional: bool,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    log_level: Option<String>,
    #[serde(default)]
    log_file_path: Option<PathBuf>,
    /// Megabytes.
    #[serde(default)]
    log_file_max_size: Option<u64>,
    /// Days.
    #[serde(default)]
    log_file_max_age: Option<u32>,
    #[serde(default)]
    log_file_max_count: Option<u32>,
    #[serde(default)]
    ipam: Option<RawIpam>,
    #[serde(default)]
    kubernetes: Option<RawKubernetes>,
    #[serde(default)]
    container_settings: Option<RawContainerSettings>,
    // What runtimes add (spec "Section 3", conventions).
    #[serde(default)]
    args: Option<Value>,
    #[serde(default, rename = "runtimeConfig")]
    runtime_config: Option<Value>,
    #[serde(default)]
    capabilities: Option<Value>,
    #[serde(default, rename = "prevResult")]
    prev_result: Option<Value>,
    #[serde(default)]
    dns: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<RawAttachment>>,
    /// libcni sends the same list under this older name too.
    #[serde(default, rename = "cni.dev/attachments")]
    attachments: Option<Vec<RawAttachment>>,
}

fn invalid(detail: String) -> CniError {
    CniError::new(ErrorCode::InvalidConfig, "invalid network configuration").details(detail)
}

/// Reads only `cniVersion`, so that a configuration of an unsupported version is
/// reported as such (code 1) before anything else about it.
pub fn version_of(doc: &Value) -> Result<Version, CniError> {
    match doc.get("cniVersion") {
        Some(Value::String(s)) => Version::parse(s),
        Some(other) => Err(invalid(format!("cniVersion: {other} is not a string"))),
        None => Err(invalid("cniVersion is missing".into())),
    }
}

/// Parses stdin into JSON: not JSON is code 6.
pub fn parse_json(stdin: &[u8]) -> Result<Value, CniError> {
    let doc: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            ErrorCode::Decode,
            "the network configuration on stdin is not JSON",
        )
        .details(e.to_string())
    })?;
    if !doc.is_object() {
        return Err(CniError::new(
            ErrorCode::Decode,
            "the network configuration on stdin is not a JSON object",
        ));
    }
    Ok(doc)
}

impl NetConf {
    /// Parses the configuration. `env_datastore` is `SERVAL_DATASTORE`, used when the
    /// configuration names none.
    pub fn parse(doc: &Value, env_datastore: Option<&str>) -> Result<NetConf, CniError> {
        let version = version_of(doc)?;
        let raw: RawNetConf = serde_path_to_error::deserialize(doc).map_err(|e| {
            let path = e.path().to_string();
            let msg = e.inner().to_string();
            if let Some(field) = unknown_field(&msg) {
                let key = if path == "." || path.is_empty() {
                    field.to_owned()
                } else {
                    format!("{path}.{field}")
                };
                let value = lookup(doc, &key).map(|v| v.to_string()).unwrap_or_default();
                CniError::new(
                    ErrorCode::UnsupportedField,
                    format!("unsupported field {key:?} in the network configuration"),
                )
                .details(format!("{key} = {value}; {msg}"))
            } else {
                invalid(format!("{path}: {msg}"))
            }
        })?;
        if raw.name.trim().is_empty() {
            return Err(invalid("name: the network needs a name".into()));
        }
        let datastore = datastore(&raw, env_datastore)?;
        let ipam = match &raw.ipam {
            None => IpamSettings {
                assign_ipv4: true,
                assign_ipv6: false,
                ipv4_pools: Vec::new(),
                ipv6_pools: Vec::new(),
            },
            Some(i) => {
                if i.kind != "serval-ipam" && i.kind != "calico-ipam" {
                    return Err(invalid(format!(
                        "ipam.type: {:?} — serval allocates from its own IPAM: use \"serval-ipam\"",
                        i.kind
                    )));
                }
                let pools = |key: &str, list: &[String]| -> Result<Vec<PoolRef>, CniError> {
                    list.iter()
                        .enumerate()
                        .map(|(n, s)| {
                            PoolRef::parse(s).map_err(|e| invalid(format!("ipam.{key}[{n}]: {e}")))
                        })
                        .collect()
                };
                IpamSettings {
                    assign_ipv4: i
                        .assign_ipv4
                        .as_ref()
                        .map(|f| f.value("ipam.assign_ipv4"))
                        .transpose()?
                        .unwrap_or(true),
                    assign_ipv6: i
                        .assign_ipv6
                        .as_ref()
                        .map(|f| f.value("ipam.assign_ipv6"))
                        .transpose()?
                        .unwrap_or(false),
                    ipv4_pools: pools("ipv4_pools", &i.ipv4_pools)?,
                    ipv6_pools: pools("ipv6_pools", &i.ipv6_pools)?,
                }
            }
        };
        if !ipam.assign_ipv4 && !ipam.assign_ipv6 {
            return Err(invalid(
                "ipam: assign_ipv4 and assign_ipv6 are both false; a pod needs an address".into(),
            ));
        }
        let wrong_family = |list: &[PoolRef], v4: bool| {
            list.iter()
                .find(|p| matches!(p, PoolRef::Cidr(c) if c.addr().is_ipv4() != v4))
                .cloned()
        };
        if let Some(bad) =
            wrong_family(&ipam.ipv4_pools, true).or_else(|| wrong_family(&ipam.ipv6_pools, false))
        {
            return Err(invalid(format!(
                "ipam: pool {bad:?} is listed under the other address family"
            )));
        }
        let defaults = LogSettings::default();
        let log = LogSettings {
            path: raw.log_file_path.clone().unwrap_or(defaults.path),
            level: raw.log_level.clone().unwrap_or(defaults.level),
            max_size: raw
                .log_file_max_size
                .map(|mb| mb.saturating_mul(1 << 20))
                .unwrap_or(defaults.max_size),
            max_count: raw.log_file_max_count.unwrap_or(defaults.max_count),
            max_age: raw
                .log_file_max_age
                .map(|d| Duration::from_secs(u64::from(d) * 86400))
                .unwrap_or(defaults.max_age),
        };
        if log.max_size == 0 {
            return Err(invalid("log_file_max_size: must be at least 1 (MB)".into()));
        }
        let runtime_ips = runtime_ips(raw.runtime_config.as_ref(), raw.args.as_ref())?;
        let prev_result = raw
            .prev_result
            .as_ref()
            .map(CniResult::from_json)
            .transpose()?;
        let valid_attachments = match raw.valid_attachments.as_ref().or(raw.attachments.as_ref()) {
            None => None,
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(n, a)| {
                        let at =
                            |e: String| invalid(format!("cni.dev/valid-attachments[{n}]: {e}"));
                        Ok(Attachment {
                            container_id: ContainerId::new(&a.container_id).map_err(at)?,
                            ifname: IfName::new(&a.ifname).map_err(at)?,
                        })
                    })
                    .collect::<Result<Vec<_>, CniError>>()?,
            ),
        };
        let _ = (&raw.capabilities, &raw.dns);
        Ok(NetConf {
            version,
            name: raw.name.clone(),
            datastore,
            node: NodeSource {
                explicit: raw.nodename.clone().filter(|n| !n.is_empty()),
                file: raw
                    .nodename_file
                    .clone()
                    .unwrap_or_else(|| DEFAULT_NODENAME_FILE.into()),
                file_optional: raw.nodename_file_optional,
            },
            mtu: MtuSource {
                explicit: raw.mtu.filter(|m| *m != 0),
                file: raw
                    .mtu_file
                    .clone()
                    .unwrap_or_else(|| DEFAULT_MTU_FILE.into()),
            },
            ready_file: raw
                .ready_file
                .clone()
                .unwrap_or_else(|| DEFAULT_READY_FILE.into()),
            ipam_lock_file: raw
                .ipam_lock_file
                .clone()
                .unwrap_or_else(|| DEFAULT_IPAM_LOCK_FILE.into()),
            log,
            ipam,
            kubeconfig: raw.kubernetes.as_ref().and_then(|k| k.kubeconfig.clone()),
            allow_ip_forwarding: raw
                .container_settings
                .as_ref()
                .is_some_and(|c| c.allow_ip_forwarding),
            runtime_ips,
            prev_result,
            valid_attachments,
        })
    }

    /// The log settings alone, for logging failures of the rest of the parse.
    pub fn log_settings(doc: &Value) -> LogSettings {
        let mut log = LogSettings::default();
        if let Some(Value::String(p)) = doc.get("log_file_path") {
            log.path = p.into();
        }
        if let Some(Value::String(l)) = doc.get("log_level") {
            log.level = l.clone();
        }
        log
    }
}

/// The datastore: `datastore`, else Calico's `datastore_type` (+ `etcd_*`), else
/// `SERVAL_DATASTORE`, else the embedded file.
fn datastore(raw: &RawNetConf, env: Option<&str>) -> Result<Datastore, CniError> {
    let named = |s: &str, key: &str| {
        s.parse::<Datastore>()
            .map_err(|e| invalid(format!("{key}: {e}")))
    };
    let ds = match (&raw.datastore, &raw.datastore_type) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "datastore and datastore_type are both set; use datastore".into(),
            ))
        }
        (Some(s), None) => named(s, "datastore")?,
        (None, Some(t)) => match t.as_str() {
            "kubernetes" => Datastore::Kubernetes,
            "etcdv3" => {
                let endpoints = raw.etcd_endpoints.as_deref().unwrap_or_default();
                named(&format!("etcd:{endpoints}"), "etcd_endpoints")?
            }
            other => {
                return Err(invalid(format!(
                    "datastore_type: {other:?} is not \"kubernetes\" or \"etcdv3\""
                )))
            }
        },
        (None, None) => match env.filter(|e| !e.trim().is_empty()) {
            Some(e) => named(e, "SERVAL_DATASTORE")?,
            None => Datastore::File(ipam::store::file::DEFAULT_PATH.into()),
        },
    };
    let has_etcd_files = raw.etcd_ca_cert_file.is_some()
        || raw.etcd_cert_file.is_some()
        || raw.etcd_key_file.is_some();
    Ok(match ds {
        Datastore::Etcd(c) => {
            let mut c: EtcdConfig = c.with_env().map_err(|e| invalid(format!("etcd: {e}")))?;
            if has_etcd_files {
                c.tls = EtcdTls {
                    ca_file: raw.etcd_ca_cert_file.clone(),
                    cert_file: raw.etcd_cert_file.clone(),
                    key_file: raw.etcd_key_file.clone(),
                };
            }
            c.validate().map_err(|e| invalid(e.to_string()))?;
            Datastore::Etcd(c)
        }
        other if has_etcd_files => {
            return Err(invalid(format!(
                "etcd_*_file keys are set but the datastore is {other}"
            )))
        }
        other => other,
    })
}

/// Fixed addresses a runtime passes: `runtimeConfig.ips` (the `ips` capability) and the
/// `args.cni.ips` convention; either holds addresses with or without a prefix length.
fn runtime_ips(runtime: Option<&Value>, args: Option<&Value>) -> Result<Vec<IpAddr>, CniError> {
    let mut out = Vec::new();
    let lists = [
        ("runtimeConfig.ips", runtime.and_then(|r| r.get("ips"))),
        (
            "args.cni.ips",
            args.and_then(|a| a.get("cni")).and_then(|c| c.get("ips")),
        ),
    ];
    for (key, list) in lists {
        let Some(list) = list else { continue };
        let Some(items) = list.as_array() else {
            return Err(invalid(format!("{key}: {list} is not a list")));
        };
        for (n, item) in items.iter().enumerate() {
            let text = item.as_str().unwrap_or_default();
            let addr = text.split('/').next().unwrap_or_default();
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| invalid(format!("{key}[{n}]: {item} is not an address")))?;
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

/// `unknown field `x`, expected …` → `x`.
fn unknown_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn lookup<'a>(doc: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .split('.')
        .try_fold(doc, |v, k| v.get(k))
        .or_else(|| doc.get(dotted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(v: Value) -> Result<NetConf, CniError> {
        NetConf::parse(&v, None)
    }

    fn base() -> Value {
        json!({"cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "serval"})
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = conf(base()).unwrap();
        assert_eq!(c.version, Version::V1_1_0);
        assert_eq!(
            c.datastore,
            Datastore::File(ipam::store::file::DEFAULT_PATH.into())
        );
        assert!(c.ipam.assign_ipv4 && !c.ipam.assign_ipv6);
        assert_eq!(c.mtu.explicit, None);
        assert_eq!(c.ready_file, PathBuf::from(DEFAULT_READY_FILE));
        assert_eq!(c.log.path, PathBuf::from(DEFAULT_LOG_FILE));
    }

    #[test]
    fn calico_configuration_carries_over() {
        let c = conf(json!({
            "cniVersion": "0.3.1", "name": "k8s-pod-network", "type": "serval",
            "log_level": "debug", "log_file_path": "/var/log/x.log", "log_file_max_size": 10,
            "log_file_max_age": 3, "log_file_max_count": 2,
            "datastore_type": "kubernetes", "nodename": "node-1", "mtu": 0,
            "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "true",
                     "ipv4_pools": ["10.65.0.0/16", "default-ipv4"], "ipv6_pools": ["fd00::/48"]},
            "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"},
            "container_settings": {"allow_ip_forwarding": true},
            "capabilities": {"portMappings": true}
        }))
        .unwrap();
        assert_eq!(c.datastore, Datastore::Kubernetes);
        assert_eq!(c.node.explicit.as_deref(), Some("node-1"));
        assert_eq!(c.mtu.explicit, None, "mtu 0 means: ask the agent");
        assert!(c.ipam.assign_ipv6);
        assert_eq!(c.ipam.ipv4_pools.len(), 2);
        assert_eq!(c.log.max_size, 10 << 20);
        assert_eq!(c.log.max_count, 2);
        assert!(c.allow_ip_forwarding);
        assert_eq!(
            c.kubeconfig,
            Some(PathBuf::from("/etc/cni/net.d/calico-kubeconfig"))
        );
    }

    #[test]
    fn datastore_choices() {
        let mut v = base();
        v["datastore"] = json!("etcd:127.0.0.1:2379");
        assert!(
            matches!(conf(v).unwrap().datastore, Datastore::Etcd(c) if c.endpoints == vec!["http://127.0.0.1:2379"])
        );
        let mut v = base();
        v["datastore_type"] = json!("etcdv3");
        v["etcd_endpoints"] = json!("http://10.0.0.1:2379,http://10.0.0.2:2379");
        v["etcd_ca_cert_file"] = json!("/ca.pem");
        match conf(v).unwrap().datastore {
            Datastore::Etcd(c) => {
                assert_eq!(c.endpoints.len(), 2);
                assert_eq!(c.tls.ca_file, Some(PathBuf::from("/ca.pem")));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            NetConf::parse(&base(), Some("file:/tmp/x.json"))
                .unwrap()
                .datastore,
            Datastore::File("/tmp/x.json".into())
        );
        for (k, v) in [
            ("datastore", json!("consul:x")),
            ("datastore_type", json!("zookeeper")),
        ] {
            let mut doc = base();
            doc[k] = v;
            let e = conf(doc).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidConfig, "{e}");
            assert!(e.details.contains(k), "{e}");
        }
        let e = NetConf::parse(&base(), Some("nonsense")).unwrap_err();
        assert!(e.details.contains("SERVAL_DATASTORE"), "{e}");
    }

    /// Each bad configuration gets its code and names what is wrong.
    #[test]
    fn bad_configurations_table() {
        let cases: Vec<(Value, ErrorCode, &str)> = vec![
            (
                json!({"name": "n", "type": "serval"}),
                ErrorCode::InvalidConfig,
                "cniVersion",
            ),
            (
                json!({"cniVersion": "0.2.0", "name": "n", "type": "serval"}),
                ErrorCode::IncompatibleVersion,
                "0.2.0",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "serval", "bogus": 1}),
                ErrorCode::UnsupportedField,
                "bogus",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "serval", "ipam": {"type": "serval-ipam", "subnet": "x"}}),
                ErrorCode::UnsupportedField,
                "ipam.subnet",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "serval", "mtu": "big"}),
                ErrorCode::InvalidConfig,
                "mtu",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "", "type": "serval"}),
                ErrorCode::InvalidConfig,
                "name",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "serval", "ipam": {"type": "host-local"}}),
                ErrorCode::InvalidConfig,
                "ipam.type",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "serval", "ipam": {"type": "serval-ipam", "assign_ipv4": "yes"}}),
                ErrorCode::InvalidConfig,
                "assign_ipv4",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "serval", "ipam": {"type": "serval-ipam", "assign_ipv4": false}}),
                ErrorCode::InvalidConfig,
                "assign_ipv6",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "serval", "ipam": {"type": "serval-ipam", "ipv4_pools": ["Bad_Name"]}}),
                ErrorCode::InvalidConfig,
                "ipv4_pools[0]",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "serval", "ipam": {"type": "serval-ipam", "ipv4_pools": ["fd00::/64"]}}),
                ErrorCode::InvalidConfig,
                "other address family",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "serval", "runtimeConfig": {"ips": ["x"]}}),
                ErrorCode::InvalidConfig,
                "runtimeConfig.ips[0]",
            ),
            (
                json!({"cniVersion": "1.1.0", "name": "n", "type": "serval", "cni.dev/valid-attachments": [{"containerID": "_x", "ifname": "eth0"}]}),
                ErrorCode::InvalidConfig,
                "valid-attachments[0]",
            ),
            (
                json!({"cniVersion": "1.1.0", "name": "n", "type": "serval", "datastore": "kubernetes", "etcd_key_file": "/k"}),
                ErrorCode::InvalidConfig,
                "etcd_",
            ),
        ];
        for (doc, code, needle) in cases {
            let e = conf(doc.clone()).unwrap_err();
            assert_eq!(e.code, code, "{doc}: {e}");
            assert!(
                e.to_string().contains(needle),
                "{doc}: {e} should name {needle}"
            );
        }
    }

    #[test]
    fn runtime_inserted_keys_are_read() {
        let mut v = base();
        v["runtimeConfig"] = json!({"ips": ["10.65.0.9/32"], "portMappings": []});
        v["args"] = json!({"cni": {"ips": ["fd00::9"]}});
        v["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
        v["prevResult"] = json!({"cniVersion": "1.1.0", "interfaces": [], "ips": []});
        let c = conf(v).unwrap();
        assert_eq!(c.runtime_ips.len(), 2);
        assert_eq!(c.valid_attachments.unwrap().len(), 1);
        assert!(c.prev_result.is_some());
    }

    #[test]
    fn json_errors() {
        assert_eq!(parse_json(b"{").unwrap_err().code, ErrorCode::Decode);
        assert_eq!(parse_json(b"[1]").unwrap_err().code, ErrorCode::Decode);
        assert!(parse_json(b"{}").is_ok());
    }
}
