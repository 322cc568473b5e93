//! Network namespaces for the dataplane tests: the test bed's [`Netns`] (created per
//! test, removed on drop, also when the test panics) with calls that fail the test
//! instead of returning errors, and [`NetNs::run`] to run a test body inside, so that the
//! netlink socket, `nft` and `ping` all act inside the namespace.

#![allow(dead_code)]

use serval_integration::{tools, Netns};
use std::future::Future;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A network namespace of the test bed. `tag` only names it in failure messages.
pub struct NetNs {
    ns: Netns,
    tag: String,
}

impl NetNs {
    /// Creates the namespace and brings its loopback up.
    pub fn new(tag: &str) -> NetNs {
        let ns = Netns::new().unwrap_or_else(|e| panic!("namespace {tag}: {e}"));
        NetNs {
            ns,
            tag: tag.to_owned(),
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// `ip -n NAME ARGS…`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        self.ns
            .ip(args)
            .unwrap_or_else(|e| panic!("in namespace {}: {e}", self.tag))
    }

    /// `ip -n NAME -j ARGS…` parsed as JSON.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let text = self.ip(&[&["-j"], args].concat());
        if text.trim().is_empty() {
            return serde_json::Value::Array(Vec::new());
        }
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {text}"))
    }

    /// Runs `program ARGS…` inside the namespace; returns its output whatever its status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        require_tool(program);
        self.ns
            .handle()
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {program}: {e}", self.name()))
    }

    /// Like [`NetNs::exec`], which must succeed; returns stdout.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.exec(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} in {} failed: {}",
            self.tag,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sysctl -w KEY=VALUE` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec_ok("sysctl", &["-qw", &format!("{key}={value}")]);
    }

    /// Runs `body` on a thread that has entered the namespace, with a current-thread
    /// tokio runtime; a panic in `body` fails the caller.
    pub fn run<T, F, Fut>(&self, body: F) -> T
    where
        T: Send,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
    {
        self.ns
            .in_thread(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime")
                    .block_on(body())
            })
            .unwrap_or_else(|e| panic!("in namespace {}: {e}", self.tag))
    }
}

/// A veth pair with one end in each namespace (the same namespace twice is fine), both
/// up, each with its addresses (`nodad` for IPv6, so they are usable at once).
pub fn veth(a: &NetNs, a_if: &str, a_addrs: &[&str], b: &NetNs, b_if: &str, b_addrs: &[&str]) {
    run_ok(Command::new("ip").args([
        "-n",
        a.name(),
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]));
    for (ns, ifname, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
        for addr in addrs {
            if addr.contains(':') {
                ns.ip(&["addr", "add", addr, "dev", ifname, "nodad"]);
            } else {
                ns.ip(&["addr", "add", addr, "dev", ifname]);
            }
        }
        ns.ip(&["link", "set", ifname, "up"]);
    }
}

/// Fails, naming the tool and its package, when `tool` is not installed.
pub fn require_tool(tool: &str) {
    if let Err(e) = tools::require(tool) {
        panic!("{e}");
    }
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `check` until it returns `Some` or `deadline` passes.
pub fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pings `target` from the namespace (optionally from `source`), `count` echoes with a
/// one-second deadline each; true when every one was answered.
pub fn ping(ns: &NetNs, source: Option<&str>, target: &str, count: u32) -> bool {
    let count = count.to_string();
    let mut args = vec!["-c", &count, "-W", "1", "-i", "0.2", "-n", "-q"];
    if let Some(source) = source {
        args.extend(["-I", source]);
    }
    args.push(target);
    ns.exec("ping", &args).status.success()
}
