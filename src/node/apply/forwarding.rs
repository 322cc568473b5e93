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
//!
//! [`ForwardingApplier`] keeps the problems of the last look: once every knob is on it
//! does not look again.

use std::path::Path;

use tracing::{error, info};

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

/// How the forwarding applier reaches the sysctls.
pub(crate) trait ForwardingIo {
    /// Turns every knob on; see [`ensure`].
    fn ensure(&mut self, v6: bool) -> Vec<(&'static str, Outcome)>;
}

/// The sysctl tree under a root ([`SYSCTL_ROOT`] but in tests).
pub struct Sysctls<'a>(pub &'a Path);

impl ForwardingIo for Sysctls<'_> {
    fn ensure(&mut self, v6: bool) -> Vec<(&'static str, Outcome)> {
        ensure(self.0, v6)
    }
}

/// The knobs that could not be set at the last look.
#[derive(Debug)]
pub struct ForwardingApplier {
    v6: bool,
    looked: bool,
    errors: Vec<String>,
}

impl ForwardingApplier {
    /// For a node with (`v6`) or without an IPv6 address.
    pub fn new(v6: bool) -> Self {
        ForwardingApplier {
            v6,
            looked: false,
            errors: Vec::new(),
        }
    }

    /// Whether a look is due: never looked, or a knob was off.
    pub fn due(&self) -> bool {
        !self.looked || !self.errors.is_empty()
    }

    /// Looks and turns forwarding on when due; returns true when forwarding was off at
    /// the previous look and is on now. A problem is logged when it first appears.
    pub(crate) fn apply(&mut self, io: &mut impl ForwardingIo) -> bool {
        if !self.due() {
            return false;
        }
        let outcomes = io.ensure(self.v6);
        for (k, o) in &outcomes {
            if *o == Outcome::Enabled {
                info!(sysctl = k, "forwarding enabled");
            }
        }
        let problems = problems(&outcomes);
        if problems != self.errors {
            for p in &problems {
                error!(problem = %p, "forwarding");
            }
        }
        let fixed = self.looked && !self.errors.is_empty() && problems.is_empty();
        self.looked = true;
        self.errors = problems;
        fixed
    }

    /// The readiness problems.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers with `failing` knobs failed, counting the looks.
    struct Fake {
        looks: usize,
        failing: bool,
    }

    impl ForwardingIo for Fake {
        fn ensure(&mut self, v6: bool) -> Vec<(&'static str, Outcome)> {
            self.looks += 1;
            assert!(v6);
            let o = if self.failing {
                Outcome::Failed("read-only".into())
            } else {
                Outcome::On
            };
            vec![("net.ipv4.ip_forward", o)]
        }
    }

    #[test]
    fn on_is_looked_at_once() {
        let mut a = ForwardingApplier::new(true);
        let mut io = Fake {
            looks: 0,
            failing: false,
        };
        assert!(!a.apply(&mut io), "on from the start is no change");
        assert!(!a.due());
        assert!(!a.apply(&mut io));
        assert_eq!(io.looks, 1);
    }

    #[test]
    fn off_is_looked_at_again_until_on() {
        let mut a = ForwardingApplier::new(true);
        let mut io = Fake {
            looks: 0,
            failing: true,
        };
        assert!(!a.apply(&mut io));
        assert_eq!(a.errors(), ["read-only".to_owned()]);
        assert!(!a.apply(&mut io));
        assert_eq!(io.looks, 2);
        io.failing = false;
        assert!(a.apply(&mut io), "the host set it: forwarding is on now");
        assert!(a.errors().is_empty());
        assert!(!a.apply(&mut io));
        assert_eq!(io.looks, 3);
    }

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
