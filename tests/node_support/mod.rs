//! Helpers the node agent tests share: a node namespace with its pod namespace and its
//! agent, the CLI, kernel routes, HTTP and ping.

#![allow(dead_code)]

pub mod agent_lab;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use std::net::IpAddr;

use serval_integration::{Bridge, Error, Netns, NsChild, Poll, Result, TestDir};

pub fn serval_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_serval"))
}

pub fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| Error::InvalidSpec(format!("{shown}: {e}")))?;
    if !out.status.success() {
        return Err(Error::InvalidSpec(format!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `serval ARGS --datastore DATASTORE` on the host.
pub fn serval(datastore: &str, args: &[&str]) -> Result<String> {
    run(Command::new(serval_bin())
        .args(args)
        .arg("--datastore")
        .arg(datastore)
        .env_remove("SERVAL_DATASTORE"))
}

/// `serval ARGS --datastore DATASTORE` inside `ns` (an etcd in a namespace is reached
/// from namespaces only).
pub fn serval_in(ns: &Netns, datastore: &str, args: &[&str]) -> Result<String> {
    let bin = serval_bin();
    let mut argv = vec![bin.to_str().unwrap_or("serval")];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--datastore", datastore]);
    ns.exec(&argv)
}

/// A kernel route as `ip -j route` shows it: (destination, gateway, device).
pub type KernelRoute = (String, Option<String>, Option<String>);

/// One node: its namespace, its pod namespace and its agent.
pub struct Node {
    pub name: String,
    pub ns: Netns,
    pub pod: Netns,
    pub dir: PathBuf,
    pub agent: Option<NsChild>,
    pub pod_ip: Option<Ipv4Addr>,
    /// More `node run` flags.
    pub extra: Vec<String>,
}

impl Node {
    pub fn new(name: &str, test: &TestDir) -> Result<Node> {
        Ok(Node {
            name: name.to_owned(),
            ns: Netns::new()?,
            pod: Netns::new()?,
            dir: test.subdir(name)?,
            agent: None,
            pod_ip: None,
            extra: Vec::new(),
        })
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("node.sock")
    }

    pub fn start(&mut self, store: &str) -> Result<()> {
        self.start_with_env(store, &[], "info,serval=debug")
    }

    /// Starts the agent with `env` set (e.g. `KUBECONFIG`) and `log_level`.
    pub fn start_with_env(
        &mut self,
        store: &str,
        env: &[(&str, &str)],
        log_level: &str,
    ) -> Result<()> {
        let agent = agent_lab::agent_argv(&serval_bin(), &self.name, store, &self.dir, log_level);
        let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut argv: Vec<&str> = Vec::new();
        if !vars.is_empty() {
            argv.push("env");
            argv.extend(vars.iter().map(String::as_str));
        }
        argv.extend(agent.iter().map(String::as_str));
        argv.extend(self.extra.iter().map(String::as_str));
        let log = self.dir.join("agent.log");
        self.agent = Some(self.ns.spawn(&argv, Some(&log))?);
        Ok(())
    }

    pub fn status(&self) -> Result<serde_json::Value> {
        let text = run(Command::new(serval_bin()).args([
            "node",
            "status",
            "--json",
            "--routes",
            "--socket",
            &self.socket().display().to_string(),
        ]))?;
        serde_json::from_str(&text).map_err(|e| Error::InvalidSpec(format!("status JSON: {e}")))
    }

    /// Serval's kernel routes: destination → (gateway, device).
    pub fn routes(&self) -> Result<Vec<KernelRoute>> {
        let text = self.ns.ip(&["-j", "route", "show", "proto", "83"])?;
        let v: serde_json::Value =
            serde_json::from_str(if text.trim().is_empty() { "[]" } else { &text })
                .map_err(|e| Error::InvalidSpec(format!("ip -j route: {e}")))?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        let s = |k: &str| r.get(k).and_then(|x| x.as_str()).map(str::to_owned);
                        (s("dst").unwrap_or_default(), s("gateway"), s("dev"))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// A pod: an address from IPAM on a veth into the pod namespace, routed like a
    /// CNI plugin does (a /32 to the veth, proxy ARP for the pod's default route).
    pub fn add_pod(&mut self, store: &str) -> Result<Ipv4Addr> {
        let handle = format!("pod-{}", self.name);
        let out = serval_in(
            &self.ns,
            store,
            &["ipam", "assign", "--node", &self.name, "--handle", &handle],
        )?;
        let ip: Ipv4Addr = out
            .trim()
            .parse()
            .map_err(|_| Error::InvalidSpec(format!("ipam assign printed {out:?}")))?;
        self.ns.veth("cali-pod", &self.pod, "eth0")?;
        self.pod
            .ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        self.pod.ip(&["route", "add", "default", "dev", "eth0"])?;
        self.ns
            .ip(&["route", "add", &format!("{ip}/32"), "dev", "cali-pod"])?;
        self.ns.sysctl("net.ipv4.conf.cali-pod.proxy_arp", "1")?;
        self.ns.sysctl("net.ipv4.neigh.cali-pod.proxy_delay", "0")?;
        self.pod_ip = Some(ip);
        Ok(ip)
    }
}

impl Node {
    /// A pod wired by the CNI plugin: ADD with `config` for pod `default/POD` in this
    /// node's pod namespace; returns its IPv4 address.
    pub fn add_pod_cni(&mut self, config: &serde_json::Value, pod: &str) -> Result<Ipv4Addr> {
        let out = cni(
            &self.ns,
            "ADD",
            &format!("ctr-{pod}"),
            &self.pod,
            ("default", pod),
            config,
        )?;
        let ip = cni_ipv4(&out.result).filter(|_| out.ok).ok_or_else(|| {
            Error::InvalidSpec(format!(
                "{}: CNI ADD of {pod} failed: {} {}",
                self.name, out.result, out.stderr
            ))
        })?;
        self.pod_ip = Some(ip);
        Ok(ip)
    }
}

/// The block of the pool holding `ip`.
pub fn block_of(ip: Ipv4Addr) -> String {
    let n = u32::from(ip) & !0x3f;
    format!("{}/26", Ipv4Addr::from(n))
}

/// GET `path` from the agent's HTTP server inside `ns`: (status, body).
pub fn http(ns: &Netns, path: &str) -> Result<(u16, String)> {
    let out = ns.exec(&[
        "curl",
        "-s",
        "-w",
        "\n%{http_code}",
        &format!("http://127.0.0.1:9099{path}"),
    ])?;
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    let code = code
        .trim()
        .parse()
        .map_err(|_| Error::InvalidSpec(format!("curl printed {out:?}")))?;
    Ok((code, format!("{body}\n").replace("\n\n", "\n")))
}

pub fn ping(from: &Netns, to: Ipv4Addr) -> Result<String> {
    from.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &to.to_string()])
}

/// n1 and n2 on 192.0.2.0/24 (a bridge), n3 on 198.18.1.0/24 behind the router `r`
/// (.1 on both); default routes through `r`. The router and the bridge namespaces are
/// returned to be kept alive.
pub fn three_nodes(test: &TestDir) -> Result<([Node; 3], Netns, Bridge)> {
    let n1 = Node::new("n1", test)?;
    let n2 = Node::new("n2", test)?;
    let n3 = Node::new("n3", test)?;
    let r = Netns::new()?;
    let mut br = Bridge::new()?;
    br.connect(&n1.ns, "eth0")?;
    br.connect(&n2.ns, "eth0")?;
    br.connect(&r, "eth0")?;
    r.veth("eth1", &n3.ns, "eth0")?;
    for (ns, addr) in [
        (&n1.ns, "192.0.2.11/24"),
        (&n2.ns, "192.0.2.12/24"),
        (&r, "192.0.2.1/24"),
        (&r, "198.18.1.1/24"),
        (&n3.ns, "198.18.1.13/24"),
    ] {
        let dev = if addr.starts_with("198.18.1.1/") {
            "eth1"
        } else {
            "eth0"
        };
        ns.add_addr(
            dev,
            addr.parse().map_err(|_| Error::InvalidSpec(addr.into()))?,
        )?;
    }
    r.enable_forwarding()?;
    let gw_a: IpAddr = "192.0.2.1"
        .parse()
        .map_err(|_| Error::InvalidSpec("gw".into()))?;
    let gw_b: IpAddr = "198.18.1.1"
        .parse()
        .map_err(|_| Error::InvalidSpec("gw".into()))?;
    n1.ns.add_default_route(gw_a)?;
    n2.ns.add_default_route(gw_a)?;
    n3.ns.add_default_route(gw_b)?;
    Ok(([n1, n2, n3], r, br))
}

/// `serval apply -f` of `yaml`, written to `name` in the test directory.
pub fn apply(store: &str, test: &TestDir, name: &str, yaml: &str) -> Result<String> {
    let path = test.path().join(name);
    std::fs::write(&path, yaml)
        .map_err(|e| Error::InvalidSpec(format!("writing {}: {e}", path.display())))?;
    serval(store, &["apply", "-f", &path.display().to_string()])
}

/// Whether `n` has a serval route for `prefix`, and through what.
pub fn route_of(n: &Node, prefix: &str) -> Result<Option<KernelRoute>> {
    Ok(n.routes()?.into_iter().find(|(d, _, _)| d == prefix))
}

/// Polls `n`'s kernel routes every few milliseconds until `prefix` is there (`present`)
/// or gone (`!present`), at most until `t0 + within`; returns the time since `t0`.
/// Polls `ip -j route` (a few ms each), so the figure is an upper bound by one poll.
pub fn wait_route(
    n: &Node,
    prefix: &str,
    present: bool,
    t0: Instant,
    within: Duration,
) -> Result<Duration> {
    let what = format!(
        "{}: route for {prefix} {}",
        n.name,
        if present { "installed" } else { "withdrawn" }
    );
    let left = (t0 + within).saturating_duration_since(Instant::now());
    wait_until_fast(left, &what, || match n.routes() {
        Err(e) => Poll::Pending(e.to_string()),
        Ok(r) if r.iter().any(|(d, _, _)| d == prefix) == present => Poll::Ready(t0.elapsed()),
        Ok(r) => Poll::Pending(format!("{r:?}")),
    })
}

/// As [`serval_integration::wait_until`] but at a fixed 10 ms interval: for timings,
/// where the library's growing backoff (up to 500 ms) would blur the figure.
pub fn wait_until_fast<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Poll<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        let last = match check() {
            Poll::Ready(v) => return Ok(v),
            Poll::Pending(s) => s,
        };
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: what.to_owned(),
                waited: start.elapsed(),
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pods' pool of the three-node tests.
pub const POOL: &str = "10.65.0.0/16";

/// An embedded file store in the test's directory holding [`POOL`] as pool `pods` with
/// `vxlanMode: CrossSubnet`, and `extra` flags of `serval pool add`.
pub fn store_with_pool(test: &TestDir, extra: &[&str]) -> Result<String> {
    let store = format!("file:{}", test.path().join("ipam.json").display());
    let mut args = vec![
        "pool",
        "add",
        POOL,
        "--name",
        "pods",
        "--vxlan-mode",
        "cross-subnet",
    ];
    args.extend_from_slice(extra);
    serval(&store, &args)?;
    Ok(store)
}

/// Whether one of the problems in a `serval node status --json` mentions `text`.
pub fn has_problem(status: &serde_json::Value, text: &str) -> bool {
    status["problems"].as_array().is_some_and(|p| {
        p.iter()
            .any(|p| p.as_str().is_some_and(|p| p.contains(text)))
    })
}

/// The peers of `n`'s embedded speaker as `serval bgp status --json` reports them.
pub fn bgp_peers(n: &Node) -> Result<Vec<serde_json::Value>> {
    let text = run(Command::new(serval_bin()).args([
        "bgp",
        "status",
        "--json",
        "--socket",
        &n.dir.join("bgp.sock").display().to_string(),
    ]))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::InvalidSpec(format!("bgp status JSON: {e}: {text}")))?;
    Ok(match v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(mut o) => o
            .remove("peers")
            .and_then(|p| p.as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    })
}

/// The CNI plugin built beside `serval` (`cargo build --bins`, which `cargo test
/// --workspace` does).
pub fn cni_plugin() -> Result<PathBuf> {
    let p = serval_bin().with_file_name("serval-cni");
    if !p.is_file() {
        return Err(Error::InvalidSpec(format!(
            "the CNI plugin {} is missing: run `cargo build --bins` first",
            p.display()
        )));
    }
    Ok(p)
}

/// What one CNI invocation answered: its exit status and the JSON it printed.
#[derive(Debug)]
pub struct CniOutcome {
    pub ok: bool,
    pub result: serde_json::Value,
    pub stderr: String,
}

/// Runs the CNI plugin inside `node` the way a container runtime does: `command` for
/// the container `container_id` of pod `namespace/pod`, whose network namespace is
/// `pod_ns`, with the network configuration `config` on stdin.
pub fn cni(
    node: &Netns,
    command: &str,
    container_id: &str,
    pod_ns: &Netns,
    (namespace, pod): (&str, &str),
    config: &serde_json::Value,
) -> Result<CniOutcome> {
    use std::io::Write as _;
    let plugin = cni_plugin()?;
    let mut child = node
        .handle()
        .command(&plugin.display().to_string())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", format!("/run/netns/{}", pod_ns.name()))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni:/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!(
                "K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={container_id}"
            ),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::InvalidSpec(format!("running {}: {e}", plugin.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(config.to_string().as_bytes())
            .map_err(|e| Error::InvalidSpec(format!("CNI stdin: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::InvalidSpec(format!("waiting for the CNI plugin: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let result = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text)
            .map_err(|e| Error::InvalidSpec(format!("CNI {command} printed {text:?}: {e}")))?
    };
    Ok(CniOutcome {
        ok: out.status.success(),
        result,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The first IPv4 address of a CNI ADD result.
pub fn cni_ipv4(result: &serde_json::Value) -> Option<Ipv4Addr> {
    result["ips"]
        .as_array()?
        .iter()
        .filter_map(|i| i["address"].as_str()?.split('/').next()?.parse().ok())
        .next()
}
