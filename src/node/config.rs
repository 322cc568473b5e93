//! The agent's configuration: flags, else environment variables, else a TOML file,
//! else defaults. Everything is checked before anything starts; every error names its
//! field, and start-up stops on the first bad configuration with all of them listed.
//!
//! ```toml
//! node-name = "node-1"
//! datastore = "file:/var/lib/serval/ipam.json"
//! as-number = 64512
//! router-id = "192.0.2.10"
//! ip = "autodetect"                        # or an address with its prefix length
//! ip-autodetection-method = "can-reach=192.0.2.1"
//! ip6 = "none"                             # "autodetect", "none" or an address
//! labels = { rack = "r1" }
//! socket = "/run/serval/node.sock"       # `serval node status`
//! bgp-socket = "/run/serval/bgp.sock"     # `serval bgp status|routes`
//! metrics-addr = "127.0.0.1:9099"         # or "none"
//! state-dir = "/var/lib/serval/node-1"    # default /var/lib/serval/<node-name>
//! ready-file = "/run/serval/ready"
//! mtu-file = "/var/lib/serval/mtu"
//! nodename-file = "/var/lib/serval/nodename"
//! log-format = "text"                     # or "json"
//! log-level = "info"
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipam::model::NodeName;
use ipnet::IpNet;
use serde::Deserialize;

use super::autodetect::Method;

/// Where the node's address of one family comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum AddressSource {
    /// Detected with a method.
    Autodetect(Method),
    /// Given: the address with its subnet's prefix length.
    Fixed(IpNet),
    /// Given without a prefix length: taken from the interface that carries it.
    Address(IpAddr),
    /// This family is not used.
    None,
}

/// The checked configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_name: NodeName,
    /// `file:PATH`, `etcd:URLS` or `kubernetes`; `None`: `SERVAL_DATASTORE` or the default.
    pub datastore: Option<String>,
    /// The AS written into this node's ServalNode (else BGPConfiguration's or 64512).
    pub as_number: Option<u32>,
    /// The BGP identifier; default the node's IPv4 address.
    pub router_id: Option<Ipv4Addr>,
    pub ip: AddressSource,
    pub ip6: AddressSource,
    /// Whether `ip` (or its autodetection method) was given rather than defaulted: on the
    /// kubernetes datastore an address from the Kubernetes Node replaces only a default.
    pub ip_explicit: bool,
    /// The same for `ip6`.
    pub ip6_explicit: bool,
    /// Labels written into this node's ServalNode.
    pub labels: BTreeMap<String, String>,
    /// The node control socket (`serval node status`).
    pub socket: PathBuf,
    /// The embedded speaker's control socket (`serval bgp status --socket`).
    pub bgp_socket: PathBuf,
    /// Health, readiness and metrics; `None`: no HTTP server.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the speaker remembers a graceful stop.
    pub state_dir: PathBuf,
    /// Written when the node is ready, removed when the agent stops.
    pub ready_file: PathBuf,
    /// The pod MTU, for the CNI plugin.
    pub mtu_file: PathBuf,
    /// The node name, for the CNI plugin.
    pub nodename_file: PathBuf,
    /// `text` or `json`.
    pub log_format: String,
    /// tracing's env-filter syntax.
    pub log_level: String,
    /// How long a restarted agent keeps its previous routes while sessions come back,
    /// before it removes routes nobody announces any more.
    pub initial_sync_timeout: Duration,
}

/// The file form: every key optional, kebab-case.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// `node-name`, or `node` as the flag is spelled.
    #[serde(alias = "node")]
    pub node_name: Option<String>,
    pub datastore: Option<String>,
    pub as_number: Option<u32>,
    pub router_id: Option<String>,
    pub ip: Option<String>,
    pub ip_autodetection_method: Option<String>,
    pub ip6: Option<String>,
    pub ip6_autodetection_method: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub socket: Option<PathBuf>,
    pub bgp_socket: Option<PathBuf>,
    pub metrics_addr: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub ready_file: Option<PathBuf>,
    pub mtu_file: Option<PathBuf>,
    pub nodename_file: Option<PathBuf>,
    pub initial_sync_timeout_secs: Option<u64>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
}

pub const DEFAULT_SOCKET: &str = "/run/serval/node.sock";
pub const DEFAULT_BGP_SOCKET: &str = "/run/serval/bgp.sock";
pub const DEFAULT_READY_FILE: &str = "/run/serval/ready";
pub const DEFAULT_MTU_FILE: &str = "/var/lib/serval/mtu";
pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/serval/nodename";
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9099";
pub const DEFAULT_INITIAL_SYNC_SECS: u64 = 30;

/// Merges `flags` (flags and environment, already merged by the CLI) over `file` and
/// checks the result. `hostname` is the default node name.
pub fn build(
    flags: FileConfig,
    file: FileConfig,
    hostname: Option<String>,
) -> Result<NodeConfig, Vec<String>> {
    let mut errors = Vec::new();
    macro_rules! pick {
        ($f:ident) => {
            flags.$f.clone().or_else(|| file.$f.clone())
        };
    }
    let name_text = pick!(node_name).or(hostname);
    let node_name = match name_text {
        Some(n) => match NodeName::new(n.trim()) {
            Ok(n) => Some(n),
            Err(e) => {
                errors.push(format!("node-name: {e}"));
                None
            }
        },
        None => {
            errors.push("node-name: not given and the hostname is unknown".into());
            None
        }
    };
    let datastore = pick!(datastore);
    if let Some(ds) = &datastore {
        if let Err(e) = ds.parse::<ipam::store::select::Datastore>() {
            errors.push(format!("datastore: {e}"));
        }
    }
    let as_number = pick!(as_number);
    if as_number == Some(0) {
        errors.push("as-number: AS 0 is reserved (RFC 7607)".into());
    }
    let router_id = match pick!(router_id) {
        None => None,
        Some(r) => match r.parse::<Ipv4Addr>() {
            Ok(a) if !a.is_unspecified() => Some(a),
            _ => {
                errors.push(format!("router-id: {r:?} is not a non-zero IPv4 address"));
                None
            }
        },
    };
    let source = |field: &str,
                  value: Option<String>,
                  method_field: &str,
                  method: Option<String>,
                  default: &str,
                  errors: &mut Vec<String>| {
        let value = value.unwrap_or_else(|| default.to_owned());
        match value.as_str() {
            "none" => {
                if method.is_some() {
                    errors.push(format!("{method_field}: given, but {field} is \"none\""));
                }
                AddressSource::None
            }
            "autodetect" => {
                let m = method.unwrap_or_else(|| "first-found".into());
                match m.parse::<Method>() {
                    Ok(m) => AddressSource::Autodetect(m),
                    Err(e) => {
                        errors.push(format!("{method_field}: {e}"));
                        AddressSource::None
                    }
                }
            }
            addr => match (addr.parse::<IpNet>(), addr.parse::<IpAddr>()) {
                (Ok(n), _) if n.addr().is_ipv4() == (field == "ip") => AddressSource::Fixed(n),
                (_, Ok(a)) if a.is_ipv4() == (field == "ip") => AddressSource::Address(a),
                _ => {
                    errors.push(format!(
                        "{field}: {addr:?} is not \"autodetect\", \"none\" or an {} address (with or without its prefix length)",
                        if field == "ip" { "IPv4" } else { "IPv6" }
                    ));
                    AddressSource::None
                }
            },
        }
    };
    let ip_explicit = pick!(ip).is_some() || pick!(ip_autodetection_method).is_some();
    let ip6_explicit = pick!(ip6).is_some() || pick!(ip6_autodetection_method).is_some();
    let ip = source(
        "ip",
        pick!(ip),
        "ip-autodetection-method",
        pick!(ip_autodetection_method),
        "autodetect",
        &mut errors,
    );
    let ip6 = source(
        "ip6",
        pick!(ip6),
        "ip6-autodetection-method",
        pick!(ip6_autodetection_method),
        "none",
        &mut errors,
    );
    if ip == AddressSource::None && ip6 == AddressSource::None {
        errors.push(
            "ip: the node needs an IPv4 or an IPv6 address (ip and ip6 are both \"none\")".into(),
        );
    }
    if ip == AddressSource::None && router_id.is_none() {
        errors.push("router-id: required when the node has no IPv4 address (ip = \"none\")".into());
    }
    let mut labels = file.labels.clone();
    labels.extend(flags.labels.clone());
    for k in labels.keys() {
        if k.is_empty() || k.len() > 253 || k.contains(char::is_whitespace) {
            errors.push(format!("labels: {k:?} is not a label key"));
        }
    }
    let metrics_text = pick!(metrics_addr).unwrap_or_else(|| DEFAULT_METRICS_ADDR.into());
    let metrics_addr = match metrics_text.as_str() {
        "none" => Some(None),
        text => match text.parse::<SocketAddr>() {
            Ok(a) => Some(Some(a)),
            Err(_) => {
                errors.push(format!(
                    "metrics-addr: {metrics_text:?} is not ADDRESS:PORT or \"none\""
                ));
                None
            }
        },
    };
    let socket = pick!(socket).unwrap_or_else(|| DEFAULT_SOCKET.into());
    let initial = pick!(initial_sync_timeout_secs).unwrap_or(DEFAULT_INITIAL_SYNC_SECS);
    let log_level = pick!(log_level).unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        errors.push(format!("log-level: {log_level:?} is not a log filter"));
    }
    let log_format = pick!(log_format).unwrap_or_else(|| "text".into());
    if log_format != "text" && log_format != "json" {
        errors.push(format!("log-format: {log_format:?} is not text or json"));
    }
    match (node_name, metrics_addr) {
        (Some(node_name), Some(metrics_addr)) if errors.is_empty() => {
            let state_dir = pick!(state_dir)
                .unwrap_or_else(|| PathBuf::from("/var/lib/serval").join(node_name.as_str()));
            Ok(NodeConfig {
                node_name,
                datastore,
                as_number,
                router_id,
                ip,
                ip6,
                ip_explicit,
                ip6_explicit,
                labels,
                socket,
                bgp_socket: pick!(bgp_socket).unwrap_or_else(|| DEFAULT_BGP_SOCKET.into()),
                metrics_addr,
                state_dir,
                ready_file: pick!(ready_file).unwrap_or_else(|| DEFAULT_READY_FILE.into()),
                mtu_file: pick!(mtu_file).unwrap_or_else(|| DEFAULT_MTU_FILE.into()),
                nodename_file: pick!(nodename_file).unwrap_or_else(|| DEFAULT_NODENAME_FILE.into()),
                log_format,
                log_level,
                initial_sync_timeout: Duration::from_secs(initial),
            })
        }
        _ => Err(errors),
    }
}

/// Parses the TOML file; errors name the key.
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> FileConfig {
        FileConfig {
            node_name: Some("node-1".into()),
            ..FileConfig::default()
        }
    }

    #[test]
    fn defaults_and_precedence() {
        let file = parse_file(
            "node-name = \"from-file\"\nas-number = 65001\nip = \"192.0.2.10/24\"\nlabels = { rack = \"r1\" }\n",
        )
        .unwrap();
        let mut f = flags();
        f.as_number = Some(65002);
        let c = build(f, file, Some("host".into())).unwrap();
        assert_eq!(c.node_name.as_str(), "node-1", "flag over file");
        assert_eq!(c.as_number, Some(65002), "flag over file");
        assert_eq!(c.ip, AddressSource::Fixed("192.0.2.10/24".parse().unwrap()));
        assert_eq!(c.ip6, AddressSource::None);
        assert!(c.ip_explicit && !c.ip6_explicit);
        assert_eq!(c.labels["rack"], "r1");
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.bgp_socket, PathBuf::from(DEFAULT_BGP_SOCKET));
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9099".parse().unwrap()));
        assert_eq!(c.ready_file, PathBuf::from(DEFAULT_READY_FILE));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/serval/node-1"));
        let c = build(
            FileConfig::default(),
            FileConfig::default(),
            Some("host-a".into()),
        )
        .unwrap();
        assert_eq!(c.node_name.as_str(), "host-a");
        assert_eq!(c.ip, AddressSource::Autodetect(Method::FirstFound));
        assert!(!c.ip_explicit, "the default autodetection is not explicit");
        let mut f = flags();
        f.ip = Some("192.0.2.10".into());
        assert_eq!(
            build(f, FileConfig::default(), None).unwrap().ip,
            AddressSource::Address("192.0.2.10".parse().unwrap())
        );
        let mut f = flags();
        f.metrics_addr = Some("none".into());
        assert_eq!(
            build(f, FileConfig::default(), None).unwrap().metrics_addr,
            None
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases: Vec<(FileConfig, &str)> = vec![
            (
                FileConfig {
                    node_name: Some("Node_1".into()),
                    ..flags()
                },
                "node-name",
            ),
            (
                FileConfig {
                    datastore: Some("consul:x".into()),
                    ..flags()
                },
                "datastore",
            ),
            (
                FileConfig {
                    as_number: Some(0),
                    ..flags()
                },
                "as-number",
            ),
            (
                FileConfig {
                    router_id: Some("0.0.0.0".into()),
                    ..flags()
                },
                "router-id",
            ),
            (
                FileConfig {
                    router_id: Some("1.2.3".into()),
                    ..flags()
                },
                "router-id",
            ),
            (
                FileConfig {
                    ip: Some("fd00::1/64".into()),
                    ..flags()
                },
                "ip:",
            ),
            (
                FileConfig {
                    ip6: Some("192.0.2.1/24".into()),
                    ..flags()
                },
                "ip6:",
            ),
            (
                FileConfig {
                    ip_autodetection_method: Some("can-reach=nowhere".into()),
                    ..flags()
                },
                "ip-autodetection-method",
            ),
            (
                FileConfig {
                    ip: Some("none".into()),
                    ip6: Some("none".into()),
                    ..flags()
                },
                "both \"none\"",
            ),
            (
                FileConfig {
                    ip: Some("none".into()),
                    ip6: Some("autodetect".into()),
                    ..flags()
                },
                "router-id: required",
            ),
            (
                FileConfig {
                    metrics_addr: Some("localhost".into()),
                    ..flags()
                },
                "metrics-addr",
            ),
            (
                FileConfig {
                    log_format: Some("xml".into()),
                    ..flags()
                },
                "log-format",
            ),
        ];
        for (cfg, want) in cases {
            let errs = build(cfg.clone(), FileConfig::default(), None).unwrap_err();
            assert!(
                errs.iter().any(|e| e.contains(want)),
                "{cfg:?}: {errs:?} lacks {want}"
            );
        }
        assert_eq!(
            parse_file("node = \"n9\"").unwrap().node_name.as_deref(),
            Some("n9")
        );
        let e = parse_file("node-nmae = \"x\"").unwrap_err();
        assert!(e.contains("node-nmae"), "{e}");
    }
}
