//! IP forwarding: routing pods is the node's job, so the agent turns IPv4 (and, with an
//! IPv6 address, IPv6) forwarding on, and says so when it cannot.
//!
//! A container whose `/proc/sys` is mounted read-only (an unprivileged pod, or a
//! runtime's default) cannot write the sysctls: the agent then keeps running, its BGP
//! sessions come up and routes are announced to this node, but the kernel drops every
//! packet it should forward. That must not pass silently: each knob that is off and
//! cannot be set is a readiness problem, which `/readyz` and `serval node status` show,
//! and the agent looks again on its tick, so a host that sets the sysctl itself makes
//! the node ready without a restart.

use std::path::Path;

/// Where the kernel's sysctls are.
pub const SYSCTL_ROOT: &str = "/proc/sys";

/// The forwarding sysctls (relative to the sysctl root) the node needs.
fn knobs(v6: bool) -> Vec<(&'static str, &'static str)> {
    let mut k = vec![("net.ipv4.ip_forward", "net/ipv4/ip_forward")];
    if v6 {
        k.push((
            "net.ipv6.conf.all.forwarding",
            "net/ipv6/conf/all/forwarding",
        ));
    }
    k
}

/// What one look at a knob found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It was on already.
    On,
    /// It was off and is on now.
    Enabled,
    /// It is off (or unreadable) and could not be set: the readiness problem.
    Failed(String),
}

/// Turns every forwarding knob on under `root` (the sysctl tree, [`SYSCTL_ROOT`] but in
/// tests), returning for each its sysctl name and what happened.
pub fn ensure(root: &Path, v6: bool) -> Vec<(&'static str, Outcome)> {
    knobs(v6)
        .into_iter()
        .map(|(name, rel)| (name, ensure_one(name, &root.join(rel))))
        .collect()
}

fn ensure_one(name: &str, path: &Path) -> Outcome {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Outcome::On;
    }
    match std::fs::write(path, "1") {
        Ok(()) => Outcome::Enabled,
        Err(e) => Outcome::Failed(format!(
            "IP forwarding is off: {name} cannot be set ({}: {e}); pods on this node are \
             not routed until it is 1 (a container needs a writable /proc/sys, or the \
             host sets it)",
            path.display()
        )),
    }
}

/// The readiness problems among `outcomes`.
pub fn problems(outcomes: &[(&'static str, Outcome)]) -> Vec<String> {
    outcomes
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::Failed(why) => Some(why.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(ipv4: Option<&str>, ipv6: Option<&str>) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (rel, v) in [
            ("net/ipv4/ip_forward", ipv4),
            ("net/ipv6/conf/all/forwarding", ipv6),
        ] {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            if let Some(v) = v {
                std::fs::write(&p, v).unwrap();
            }
        }
        d
    }

    #[test]
    fn on_stays_on_off_is_turned_on() {
        let d = tree(Some("1\n"), Some("0\n"));
        let out = ensure(d.path(), true);
        assert_eq!(
            out,
            vec![
                ("net.ipv4.ip_forward", Outcome::On),
                ("net.ipv6.conf.all.forwarding", Outcome::Enabled),
            ]
        );
        let v6 = std::fs::read_to_string(d.path().join("net/ipv6/conf/all/forwarding")).unwrap();
        assert_eq!(v6.trim(), "1");
        assert!(problems(&out).is_empty());
    }

    #[test]
    fn ipv6_only_when_asked() {
        let d = tree(Some("1"), Some("0"));
        assert_eq!(ensure(d.path(), false).len(), 1);
    }

    #[test]
    fn a_knob_that_cannot_be_written_is_a_problem_naming_it() {
        // A sysctl tree where the knob's directory is missing: the write fails, as it
        // does on a read-only /proc/sys (the end-to-end test has the real one).
        let d = tempfile::tempdir().unwrap();
        let out = ensure(d.path(), false);
        let p = problems(&out);
        assert_eq!(p.len(), 1, "{out:?}");
        assert!(p[0].contains("net.ipv4.ip_forward"), "{}", p[0]);
        assert!(p[0].contains("IP forwarding is off"), "{}", p[0]);
    }
}
