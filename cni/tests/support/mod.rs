//! A container runtime in miniature: runs the built plugin exactly as a runtime does
//! (environment variables + configuration on stdin, inside the node's namespace), with
//! a "node" namespace standing for the host and one namespace per pod.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ipam::model::{IpPool, PoolName};
use ipam::store::file::FileStore;
use ipam::Ipam;
use serde_json::{json, Value};
use serval_integration::{wait_until, Netns, Poll};

pub const NETWORK: &str = "k8s-pod-network";
pub const NODE: &str = "node-1";
/// The node's own address (on its loopback), which pods ping as "the host".
pub const HOST_V4: &str = "192.0.2.1";
pub const HOST_V6: &str = "2001:db8::1";

/// The plugin binary cargo built for these tests.
pub fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_serval-cni"))
}

/// A reference plugin from Debian's containernetworking-plugins.
pub fn reference(name: &str) -> PathBuf {
    let p = Path::new("/usr/lib/cni").join(name);
    assert!(
        p.is_file(),
        "{} is missing: apt-get install containernetworking-plugins",
        p.display()
    );
    p
}

/// What one plugin run returned.
#[derive(Debug)]
pub struct Reply {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts success and returns the parsed result (Null when there is none).
    pub fn ok(&self) -> Value {
        assert_eq!(self.code, 0, "plugin failed: {self:?}");
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts failure with the CNI error `code` and returns the error object.
    pub fn err(&self, code: u64) -> Value {
        assert_ne!(self.code, 0, "plugin should have failed: {self:?}");
        let v = self.json();
        assert_eq!(v["code"], code, "wrong error code: {self:?}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }
}

/// One pod: its namespace and its container id.
pub struct Pod {
    pub ns: Netns,
    pub id: String,
    pub name: String,
}

impl Pod {
    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.ns.name())
    }

    pub fn args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=uid-{}",
            self.name, self.id, self.name
        )
    }

    /// `ip -n POD …`
    pub fn ip(&self, args: &[&str]) -> String {
        self.ns.ip(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Pings `to` from inside the pod, one packet, with a deadline.
    pub fn ping(&self, to: &str) -> Result<(), String> {
        let out = self
            .ns
            .handle()
            .command("ping")
            .args(["-c", "1", "-W", "2", to])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ping {to} from {}: {}{}",
                self.ns.name(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// A node: its namespace (the "host"), a scratch directory with the datastore, the
/// log, the lock and the agent's files.
pub struct Node {
    pub ns: Netns,
    pub dir: tempfile::TempDir,
    next_pod: std::sync::atomic::AtomicU32,
}

impl Node {
    /// A node whose namespace forwards, with the host addresses on loopback, and a file
    /// datastore holding `pools`.
    pub fn new(pools: &[(&str, &str, u8)]) -> Node {
        serval_integration::tools::require_all(&["ip", "ping", "sysctl"])
            .unwrap_or_else(|e| panic!("{e}"));
        let ns = Netns::new().unwrap_or_else(|e| panic!("{e}"));
        ns.enable_forwarding().unwrap_or_else(|e| panic!("{e}"));
        ns.ip(&["addr", "add", &format!("{HOST_V4}/32"), "dev", "lo"])
            .unwrap();
        ns.ip(&[
            "addr",
            "add",
            &format!("{HOST_V6}/128"),
            "dev",
            "lo",
            "nodad",
        ])
        .unwrap();
        let dir = tempfile::Builder::new()
            .prefix("serval-cni-")
            .tempdir()
            .unwrap();
        let node = Node {
            ns,
            dir,
            next_pod: Default::default(),
        };
        let ipam = node.ipam();
        block_on(async {
            for (name, cidr, block) in pools {
                let mut p = IpPool::new(PoolName::new(*name).unwrap(), cidr.parse().unwrap());
                p.block_size = *block;
                ipam.add_pool(p).await.unwrap();
            }
        });
        node
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("ipam.json")
    }

    pub fn ipam(&self) -> Ipam {
        Ipam::new(Arc::new(FileStore::new(self.store_path())))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("log/cni.log")
    }

    /// The plugin configuration for this node at `version`, with serval's files in the
    /// scratch directory.
    pub fn conf(&self, version: &str) -> Value {
        let d = self.dir.path();
        json!({
            "cniVersion": version,
            "name": NETWORK,
            "type": "serval",
            "datastore": format!("file:{}", self.store_path().display()),
            "nodename": NODE,
            "mtu_file": d.join("mtu"),
            "ready_file": d.join("ready"),
            "ipam_lock_file": d.join("ipam.lock"),
            "log_file_path": self.log_path(),
            "log_level": "debug",
            "ipam": {"type": "serval-ipam", "assign_ipv4": true, "assign_ipv6": false},
        })
    }

    pub fn dual_stack(&self, version: &str) -> Value {
        let mut c = self.conf(version);
        c["ipam"]["assign_ipv6"] = json!(true);
        c
    }

    pub fn pod(&self) -> Pod {
        let n = self
            .next_pod
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Pod {
            ns: Netns::new().unwrap_or_else(|e| panic!("{e}")),
            id: format!("{:064x}", 0xc0ffee_u64 * 1000 + u64::from(n)),
            name: format!("pod-{n}"),
        }
    }

    /// Starts `bin` inside the node's namespace with exactly `env` and `stdin`.
    pub fn spawn(&self, bin: &Path, env: &[(&str, String)], stdin: &Value) -> Child {
        let mut cmd = self.ns.handle().command(&bin.to_string_lossy());
        cmd.env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {bin:?}: {e}"));
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.to_string().as_bytes()).unwrap();
        drop(input);
        child
    }

    pub fn run(&self, bin: &Path, env: &[(&str, String)], stdin: &Value) -> Reply {
        finish(self.spawn(bin, env, stdin))
    }

    /// Like [`Node::run`] with raw bytes on stdin.
    pub fn run_raw(&self, bin: &Path, env: &[(&str, String)], stdin: &[u8]) -> Reply {
        let mut cmd = self.ns.handle().command(&bin.to_string_lossy());
        cmd.env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {bin:?}: {e}"));
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        finish(child)
    }

    /// Runs the serval plugin for `verb` on `pod` (or no pod: STATUS, GC, VERSION).
    pub fn cni(&self, verb: &str, pod: Option<&Pod>, conf: &Value) -> Reply {
        self.run(&plugin(), &env(verb, pod, "eth0"), conf)
    }

    /// The host-side veths (name → alias) of the node.
    pub fn host_veths(&self) -> BTreeMap<String, String> {
        let out = self.ns.ip(&["-o", "link", "show"]).unwrap();
        let mut map = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in out.lines() {
            // "5: sv0123456789abc@if2: <…> … \    alias serval/…"
            let name = line
                .split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n).to_string());
            if let Some(n) = name.filter(|n| n.starts_with("sv")) {
                let alias = line
                    .split("alias ")
                    .nth(1)
                    .map(|a| a.trim().to_string())
                    .unwrap_or_default();
                map.insert(n.clone(), alias);
                current = Some(n);
            }
        }
        let _ = current;
        map
    }

    /// Every allocated address in the store, with its handle.
    pub fn allocations(&self) -> BTreeMap<IpAddr, String> {
        let ipam = self.ipam();
        block_on(async {
            let snap = ipam::ops::full_snapshot(ipam.store().as_ref())
                .await
                .unwrap();
            snap.blocks
                .values()
                .flatten()
                .flat_map(|b| {
                    b.value
                        .allocated()
                        .map(|(ip, a)| (ip, a.handle_id.to_string()))
                        .collect::<Vec<_>>()
                })
                .collect()
        })
    }

    /// Handle records in the store.
    pub fn handles(&self) -> Vec<String> {
        let ipam = self.ipam();
        block_on(async {
            let snap = ipam::ops::full_snapshot(ipam.store().as_ref())
                .await
                .unwrap();
            snap.handles
                .values()
                .flatten()
                .map(|h| h.value.handle_id.to_string())
                .collect()
        })
    }
}

/// The environment a runtime passes.
pub fn env(verb: &str, pod: Option<&Pod>, ifname: &str) -> Vec<(&'static str, String)> {
    // Runtimes pass their own environment along (libcni appends the CNI_* variables to
    // it); the reference plugins find iptables through PATH.
    let mut e = vec![
        ("CNI_COMMAND", verb.to_string()),
        ("CNI_PATH", "/usr/lib/cni".to_string()),
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin".to_string()),
    ];
    if let Some(p) = pod {
        e.push(("CNI_CONTAINERID", p.id.clone()));
        e.push(("CNI_NETNS", p.netns_path()));
        e.push(("CNI_IFNAME", ifname.to_string()));
        e.push(("CNI_ARGS", p.args()));
    }
    e
}

pub fn finish(child: Child) -> Reply {
    let out = child.wait_with_output().unwrap();
    Reply {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The pod's address of `family` (4 or 6) from an ADD result.
pub fn address(result: &Value, family: u8) -> IpAddr {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse::<IpAddr>().ok())
        .find(|a| (family == 4) == a.is_ipv4())
        .unwrap_or_else(|| panic!("no IPv{family} address in {result}"))
}

/// Waits for a file to exist (a plugin stopped at a fault point writes one).
pub fn wait_for_file(path: &Path) {
    wait_until(
        Duration::from_secs(30),
        &format!("{}", path.display()),
        || {
            if path.exists() {
                Poll::Ready(())
            } else {
                Poll::Pending("not yet".into())
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
}
