//! An agent that cannot turn IP forwarding on says so.
//!
//! The agent runs in a mount namespace where `/proc/sys` is mounted read-only, as in an
//! unprivileged container: its write of `net.ipv4.ip_forward` fails for real. The node
//! is then not ready, `/readyz` and `serval node status` name the sysctl, `/healthz`
//! stays 200 (a restart would not help), and once the host sets the sysctl the node
//! becomes ready without a restart.
//!
//! Needs util-linux's `unshare` and `mount`, and `curl`.

mod hostile_support;
mod node_support;

use std::time::Duration;

use hostile_support::{one_node, open_dir};
use node_support::{agent_lab, has_problem, http, serval_bin, store_with_pool};
use serval_integration::{scenario, tools, wait_for, Error};

#[test]
fn read_only_proc_sys_makes_the_node_not_ready_and_says_why() {
    scenario("hostile-forwarding", |test| {
        tools::require_all(&["unshare", "mount", "sh"])?;
        open_dir(test.path())?;
        let store = store_with_pool(test, &[])?;
        let mut n1 = one_node(test, "n1")?;
        // A fresh network namespace starts with forwarding off.
        let before = n1.ns.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"])?;
        if before.trim() != "0" {
            return Err(Error::InvalidSpec(format!(
                "a new namespace should start with ip_forward 0, has {before:?}"
            )));
        }

        let agent = agent_lab::agent_argv(
            &serval_bin(),
            &n1.name,
            &store,
            &n1.dir,
            "info,serval=debug",
        );
        // A private mount namespace with /proc/sys read-only, then the agent itself (exec:
        // the pid stays the agent's, which the namespace's drop ends).
        let script = "mount --bind /proc/sys /proc/sys && \
                      mount -o remount,bind,ro /proc/sys && exec \"$@\"";
        let mut argv = vec![
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ];
        argv.extend(agent.iter().map(String::as_str));
        n1.agent = Some(n1.ns.spawn(&argv, Some(&n1.dir.join("agent.log")))?);

        let status = wait_for(
            Duration::from_secs(30),
            "the node status to report that forwarding is off",
            || n1.status(),
            |s| s["ready"] == false && has_problem(s, "net.ipv4.ip_forward"),
        )?;
        if !has_problem(&status, "Read-only file system") {
            return Err(Error::InvalidSpec(format!(
                "the problem should say why the sysctl cannot be set: {}",
                status["problems"]
            )));
        }
        let (code, body) = http(&n1.ns, "/readyz")?;
        if code != 503 || !body.contains("net.ipv4.ip_forward") {
            return Err(Error::InvalidSpec(format!(
                "/readyz should be 503 naming net.ipv4.ip_forward, got {code}: {body}"
            )));
        }
        let (code, body) = http(&n1.ns, "/healthz")?;
        if code != 200 {
            return Err(Error::InvalidSpec(format!(
                "/healthz should stay 200 (the loop runs), got {code}: {body}"
            )));
        }
        let text = std::process::Command::new(serval_bin())
            .args(["node", "status", "--socket"])
            .arg(n1.socket())
            .output()
            .map_err(|e| Error::InvalidSpec(format!("serval node status: {e}")))?;
        let text = String::from_utf8_lossy(&text.stdout);
        if !text.contains("IP forwarding is off") {
            return Err(Error::InvalidSpec(format!(
                "`serval node status` should say forwarding is off:\n{text}"
            )));
        }

        // The host turns it on: the agent sees it on its tick.
        n1.ns.sysctl("net.ipv4.ip_forward", "1")?;
        wait_for(
            Duration::from_secs(10),
            "/readyz to answer 200 once the host turned forwarding on",
            || http(&n1.ns, "/readyz"),
            |(code, _)| *code == 200,
        )?;
        Ok(())
    });
}
