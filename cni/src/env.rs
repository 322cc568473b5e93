//! The `CNI_*` environment variables, parsed into a typed command (spec "Section 2:
//! Execution Protocol", "Parameters").
//!
//! | variable          | ADD | DEL      | CHECK | VERSION | STATUS | GC |
//! |-------------------|-----|----------|-------|---------|--------|----|
//! | `CNI_COMMAND`     | yes | yes      | yes   | yes     | yes    | yes|
//! | `CNI_CONTAINERID` | yes | yes      | yes   |         |        |    |
//! | `CNI_NETNS`       | yes | optional | yes   |         |        |    |
//! | `CNI_IFNAME`      | yes | yes      | yes   |         |        |    |
//! | `CNI_ARGS`        | optional, `K=V;K=V` (Kubernetes: `K8S_POD_NAMESPACE`, …)     |
//! | `CNI_PATH`        | passed by runtimes; serval delegates to no plugin and ignores it |
//!
//! Every problem here is error code 4 and names the variable.

use std::fmt;
use std::path::PathBuf;

use crate::spec::{CniError, ErrorCode};

/// A container id: starts with a letter or digit, then letters, digits, `_`, `.`, `-`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerId(String);

impl ContainerId {
    pub fn new(s: &str) -> Result<Self, String> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if first_ok && rest_ok {
            Ok(ContainerId(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a container id: it must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An interface name the kernel accepts: 1 to 15 bytes, not `.` or `..`, no `/`, `:` or
/// whitespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

/// The kernel's limit (IFNAMSIZ less the terminating NUL).
pub const IFNAME_MAX: usize = 15;

impl IfName {
    pub fn new(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= IFNAME_MAX
            && s != "."
            && s != ".."
            && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
        if ok {
            Ok(IfName(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not an interface name: 1 to {IFNAME_MAX} bytes, not \".\" or \"..\", without '/', ':' or spaces"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One attachment: the spec's key for per-container state within a network.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attachment {
    pub container_id: ContainerId,
    pub ifname: IfName,
}

/// What `CNI_ARGS` says about the pod (the Kubernetes keys), and fixed addresses (`IP`,
/// the convention host-local and static use).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub infra_container_id: Option<String>,
    pub pod_uid: Option<String>,
    pub ips: Vec<std::net::IpAddr>,
}

impl CniArgs {
    /// Parses `K=V;K=V`. Unknown keys are refused unless `IgnoreUnknown` is true, as the
    /// CNI conventions ask (Kubernetes always sets it).
    pub fn parse(s: &str) -> Result<CniArgs, String> {
        let mut args = CniArgs::default();
        let mut unknown = Vec::new();
        let mut ignore_unknown = false;
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(format!("{pair:?} is not KEY=VALUE"));
            };
            let value = || (!v.is_empty()).then(|| v.to_owned());
            match k {
                "K8S_POD_NAMESPACE" => args.pod_namespace = value(),
                "K8S_POD_NAME" => args.pod_name = value(),
                "K8S_POD_INFRA_CONTAINER_ID" => args.infra_container_id = value(),
                "K8S_POD_UID" => args.pod_uid = value(),
                "IgnoreUnknown" => {
                    ignore_unknown = matches!(v.to_ascii_lowercase().as_str(), "1" | "true")
                }
                "IP" => {
                    for ip in v.split(',').filter(|x| !x.is_empty()) {
                        // host-local accepts an address with or without a prefix length.
                        let addr = ip.split('/').next().unwrap_or(ip);
                        args.ips.push(
                            addr.parse()
                                .map_err(|_| format!("IP={ip:?} is not an address"))?,
                        );
                    }
                }
                "" => return Err(format!("{pair:?} has an empty key")),
                other => unknown.push(other.to_owned()),
            }
        }
        if !unknown.is_empty() && !ignore_unknown {
            return Err(format!(
                "unknown keys {unknown:?} (set IgnoreUnknown=1 to pass keys for other plugins)"
            ));
        }
        Ok(args)
    }

    /// The pod, when the runtime is Kubernetes.
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((self.pod_namespace.as_deref()?, self.pod_name.as_deref()?))
    }
}

/// A command on one attachment whose network namespace must exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub attachment: Attachment,
    pub netns: PathBuf,
    pub args: CniArgs,
}

/// DEL: the namespace may be gone or not given at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelTarget {
    pub attachment: Attachment,
    pub netns: Option<PathBuf>,
    pub args: CniArgs,
}

/// What the runtime asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Add(Target),
    Del(DelTarget),
    Check(Target),
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Add(_) => "ADD",
            Command::Del(_) => "DEL",
            Command::Check(_) => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    /// Parses the environment through `var` (the process environment, or a table in
    /// tests).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Command, CniError> {
        let bad = |var: &str, why: String| {
            CniError::new(ErrorCode::InvalidEnvironment, format!("{var} is invalid")).details(why)
        };
        let missing = |var: &str, verb: &str| {
            CniError::new(ErrorCode::InvalidEnvironment, format!("{var} is not set"))
                .details(format!("{verb} needs {var}"))
        };
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        let Some(verb) = get("CNI_COMMAND") else {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                "CNI_COMMAND is not set",
            )
            .details("the plugin is run by a container runtime with CNI_COMMAND=ADD|DEL|CHECK|VERSION|STATUS|GC"));
        };
        let attachment = |verb: &str| -> Result<(Attachment, CniArgs), CniError> {
            let cid = get("CNI_CONTAINERID").ok_or_else(|| missing("CNI_CONTAINERID", verb))?;
            let container_id = ContainerId::new(&cid).map_err(|e| bad("CNI_CONTAINERID", e))?;
            let ifname = get("CNI_IFNAME").ok_or_else(|| missing("CNI_IFNAME", verb))?;
            let ifname = IfName::new(&ifname).map_err(|e| bad("CNI_IFNAME", e))?;
            let args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())
                .map_err(|e| bad("CNI_ARGS", e))?;
            Ok((
                Attachment {
                    container_id,
                    ifname,
                },
                args,
            ))
        };
        match verb.as_str() {
            "ADD" | "CHECK" => {
                let (attachment, args) = attachment(&verb)?;
                let netns = get("CNI_NETNS").ok_or_else(|| missing("CNI_NETNS", &verb))?;
                let target = Target {
                    attachment,
                    netns: PathBuf::from(netns),
                    args,
                };
                Ok(if verb == "ADD" {
                    Command::Add(target)
                } else {
                    Command::Check(target)
                })
            }
            "DEL" => {
                let (attachment, args) = attachment(&verb)?;
                Ok(Command::Del(DelTarget {
                    attachment,
                    netns: get("CNI_NETNS").map(PathBuf::from),
                    args,
                }))
            }
            "VERSION" => Ok(Command::Version),
            "STATUS" => Ok(Command::Status),
            "GC" => Ok(Command::Gc),
            other => Err(bad(
                "CNI_COMMAND",
                format!("{other:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Command, CniError> {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Command::from_env(|k| map.get(k).cloned())
    }

    const K8S: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1";

    #[test]
    fn add_with_kubernetes_args() {
        let cmd = parse(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", K8S),
            ("CNI_PATH", "/opt/cni/bin"),
        ])
        .unwrap();
        let Command::Add(t) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(t.attachment.container_id.as_str(), "abc");
        assert_eq!(t.args.pod(), Some(("default", "web-0")));
        assert_eq!(t.args.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(t.netns, PathBuf::from("/var/run/netns/x"));
    }

    /// Which variables each verb needs, and the code every failure gets.
    #[test]
    fn environment_table() {
        let base = [
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/n"),
            ("CNI_IFNAME", "eth0"),
        ];
        let cases: &[(&str, &[&str], bool)] = &[
            ("ADD", &[], true),
            ("ADD", &["CNI_NETNS"], false),
            ("ADD", &["CNI_CONTAINERID"], false),
            ("ADD", &["CNI_IFNAME"], false),
            ("CHECK", &["CNI_NETNS"], false),
            ("DEL", &["CNI_NETNS"], true),
            ("DEL", &["CNI_IFNAME"], false),
            (
                "VERSION",
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
                true,
            ),
            (
                "STATUS",
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
                true,
            ),
            ("GC", &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"], true),
            ("", &[], false),
            ("ADDX", &[], false),
        ];
        for (verb, drop, ok) in cases {
            let mut vars: Vec<(&str, &str)> = base
                .iter()
                .filter(|(k, _)| !drop.contains(k))
                .copied()
                .collect();
            vars.push(("CNI_COMMAND", verb));
            match parse(&vars) {
                Ok(c) => assert!(ok, "{verb} without {drop:?} parsed as {c:?}"),
                Err(e) => {
                    assert!(!ok, "{verb} without {drop:?}: {e}");
                    assert_eq!(e.code, ErrorCode::InvalidEnvironment);
                    let named =
                        drop.iter().any(|d| e.msg.contains(d)) || e.msg.contains("CNI_COMMAND");
                    assert!(named, "{verb}: error must name the variable: {e}");
                }
            }
        }
    }

    #[test]
    fn names_are_checked() {
        for (cid, ok) in [
            ("abc_1.x-Y", true),
            ("_abc", false),
            ("a b", false),
            ("a/b", false),
        ] {
            assert_eq!(ContainerId::new(cid).is_ok(), ok, "{cid}");
        }
        for (name, ok) in [
            ("eth0", true),
            ("net1", true),
            ("123456789012345", true),
            ("1234567890123456", false),
            (".", false),
            ("..", false),
            ("a:b", false),
            ("a/b", false),
            ("a b", false),
            ("", false),
        ] {
            assert_eq!(IfName::new(name).is_ok(), ok, "{name}");
        }
        let e = parse(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/n"),
            ("CNI_IFNAME", "this-is-too-long0"),
        ])
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEnvironment);
        assert!(e.msg.contains("CNI_IFNAME"), "{e}");
    }

    #[test]
    fn cni_args_table() {
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        let a = CniArgs::parse("IP=10.0.0.5/24,fd00::5").unwrap();
        assert_eq!(
            a.ips,
            vec![
                "10.0.0.5".parse::<std::net::IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert!(CniArgs::parse("FOO=1").is_err());
        assert!(CniArgs::parse("FOO=1;IgnoreUnknown=true").is_ok());
        assert!(CniArgs::parse("IgnoreUnknown=1;FOO").is_err());
        assert!(CniArgs::parse("=x;IgnoreUnknown=1").is_err());
        assert!(CniArgs::parse("IP=nonsense").is_err());
        assert_eq!(CniArgs::parse("K8S_POD_NAME=p").unwrap().pod(), None);
    }
}
