//! Preconditions a test checks first: the tools it drives and root. A missing tool fails
//! the test with the Debian package to install; nothing is ever skipped.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Which Debian package provides each tool the test bed runs.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("sysctl", "procps"),
    ("bird", "bird2"),
    ("birdc", "bird2"),
    ("bgpd", "openbgpd"),
    ("bgpctl", "openbgpd"),
    ("vtysh", "frr"),
    ("/usr/lib/frr/bgpd", "frr"),
    ("gobgpd", "gobgpd"),
    ("gobgp", "gobgpd"),
    ("exabgp", "exabgp"),
    ("python3", "python3"),
    ("linux.uml", "user-mode-linux"),
    ("modprobe", "kmod"),
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
    ("nft", "nftables"),
    ("tcpdump", "tcpdump"),
];

/// Directories searched besides `PATH`: daemons live in sbin, which a non-login root
/// shell may not have on its `PATH`.
const EXTRA_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The Debian package that provides `tool`, when the test bed knows it.
pub fn package_for(tool: &str) -> Option<&'static str> {
    PACKAGES.iter().find(|(t, _)| *t == tool).map(|(_, p)| *p)
}

/// Finds `tool` (a name on `PATH`, or an absolute path) or fails naming its package.
pub fn require(tool: &str) -> Result<PathBuf> {
    find(tool).ok_or_else(|| Error::MissingTool {
        tool: tool.to_string(),
        package: package_for(tool)
            .unwrap_or("the package that provides it")
            .to_string(),
    })
}

/// Like [`require`] for several tools at once; fails on the first missing one.
pub fn require_all(tools: &[&str]) -> Result<()> {
    for tool in tools {
        require(tool)?;
    }
    Ok(())
}

/// Fails unless the process runs with effective uid 0.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        Ok(())
    } else {
        Err(Error::NotRoot { euid })
    }
}

fn find(tool: &str) -> Option<PathBuf> {
    let path = Path::new(tool);
    if path.is_absolute() {
        return is_executable(path).then(|| path.to_path_buf());
    }
    let from_env = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    from_env
        .into_iter()
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_tool_that_exists() {
        assert!(require("sh").is_ok());
    }

    #[test]
    fn missing_tool_names_its_package() {
        let err = require("linux.uml.not-here").unwrap_err().to_string();
        assert!(err.contains("linux.uml.not-here"), "{err}");
        assert!(err.contains("apt-get install"), "{err}");
    }

    #[test]
    fn known_tools_map_to_packages() {
        assert_eq!(package_for("bird"), Some("bird2"));
        assert_eq!(package_for("gobgp"), Some("gobgpd"));
        assert_eq!(package_for("linux.uml"), Some("user-mode-linux"));
        assert_eq!(package_for("no-such-tool"), None);
    }

    #[test]
    fn absolute_paths_are_checked_directly() {
        assert!(require("/bin/sh").is_ok());
        let err = require("/nonexistent/frr/bgpd").unwrap_err();
        assert!(matches!(err, Error::MissingTool { .. }));
    }
}
