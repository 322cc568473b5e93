//! Running a command — typically this very test binary, filtered to one test — inside
//! User-Mode Linux through `integration/uml/run`, for kernel features the host kernel
//! lacks (ipip, gre, dummy, vrf). The guest sees the host's files, so the test binary
//! runs there unchanged; [`inside`] tells a test which side it is on.

use crate::error::{Error, Result};
use crate::netns::describe;
use crate::tools;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set to `1` by the runner inside the guest.
pub const IN_UML_ENV: &str = "SERVAL_IN_UML";

/// Names the kernel binary for the runner (default `linux.uml` on `PATH`).
pub const KERNEL_ENV: &str = "SERVAL_UML_KERNEL";

/// Whether this process runs inside the User-Mode Linux guest.
pub fn inside() -> bool {
    std::env::var_os(IN_UML_ENV).is_some_and(|v| v == "1")
}

/// The runner script shipped with this crate.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("uml")
        .join("run")
}

/// What a guest run produced.
#[derive(Debug, Clone)]
pub struct UmlRun {
    /// The command's exit code inside the guest; 125 when the guest died first.
    pub status: i32,
    /// Everything the guest console printed (the command's stdout and stderr).
    pub output: String,
}

impl UmlRun {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// A configured runner.
#[derive(Debug, Clone)]
pub struct Uml {
    kernel: String,
    mem: String,
    modules: Option<String>,
    timeout: Duration,
    echo: bool,
}

impl Uml {
    /// Checks the kernel, kmod and the runner script are present.
    pub fn new() -> Result<Uml> {
        let kernel = std::env::var(KERNEL_ENV).unwrap_or_else(|_| "linux.uml".into());
        Uml::with_kernel(&kernel)
    }

    /// A runner booting `kernel` (a name on `PATH` or a path) instead of `linux.uml`.
    pub fn with_kernel(kernel: &str) -> Result<Uml> {
        tools::require(kernel).map_err(|_| {
            Error::Uml(format!(
                "the kernel `{kernel}` is missing: apt-get install user-mode-linux \
                 (it provides linux.uml and the modules in /usr/lib/uml/modules)"
            ))
        })?;
        tools::require("modprobe")?;
        let script = script();
        if !script.is_file() {
            return Err(Error::Uml(format!(
                "runner {} is missing",
                script.display()
            )));
        }
        Ok(Uml {
            kernel: kernel.to_string(),
            mem: "1G".into(),
            modules: None,
            timeout: Duration::from_secs(600),
            echo: true,
        })
    }

    /// Guest memory, e.g. `"512M"`.
    pub fn mem(mut self, mem: &str) -> Self {
        self.mem = mem.to_string();
        self
    }

    /// Modules to load instead of the runner's default list.
    pub fn modules(mut self, modules: &[&str]) -> Self {
        self.modules = Some(modules.join(" "));
        self
    }

    /// The guest is killed when the command takes longer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether guest output is echoed to stderr as it arrives (default on).
    pub fn echo(mut self, echo: bool) -> Self {
        self.echo = echo;
        self
    }

    /// Boots the guest, runs `argv` in the current directory and returns its status
    /// and output. Fails only when the guest could not run the command at all.
    pub fn run(&self, argv: &[&str]) -> Result<UmlRun> {
        let mut cmd = Command::new(script());
        cmd.env(KERNEL_ENV, &self.kernel).args(["--mem", &self.mem]);
        if let Some(m) = &self.modules {
            cmd.args(["--modules", m]);
        }
        cmd.arg("--").args(argv);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let command = describe(&cmd);
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
        let echo = self.echo;
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|stream| {
            std::thread::spawn(move || {
                let mut text = String::new();
                for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
                    if echo {
                        eprintln!("[uml] {line}");
                    }
                    text.push_str(&line);
                    text.push('\n');
                }
                text
            })
        })
        .collect();

        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    // SAFETY: kill(2) on our own child's process group.
                    unsafe {
                        libc::kill(-(child.id() as i32), libc::SIGKILL);
                    }
                    let _ = child.wait();
                    return Err(Error::Uml(format!(
                        "`{command}` still running after {:?}; killed",
                        self.timeout
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(Error::io("waiting for", &command, e)),
            }
        };
        let output: String = readers
            .into_iter()
            .filter_map(|r| r.join().ok())
            .collect::<Vec<_>>()
            .join("");
        let status = status.code().unwrap_or(125);
        if status == 2 && output.contains("run: ") && output.contains("missing") {
            return Err(Error::Uml(output.trim().to_string()));
        }
        Ok(UmlRun { status, output })
    }

    /// Runs one test of a test binary (`--exact NAME`) inside the guest.
    pub fn run_test(&self, binary: &Path, test: &str) -> Result<UmlRun> {
        let binary = binary.to_string_lossy();
        self.run(&[&binary, "--exact", test, "--nocapture", "--test-threads=1"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_kernel_fails_with_package_name() {
        let err = Uml::with_kernel("/nonexistent/linux.uml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/linux.uml"), "{err}");
        assert!(err.contains("apt-get install user-mode-linux"), "{err}");
    }

    #[test]
    fn runner_script_ships_with_the_crate() {
        assert!(script().is_file(), "{}", script().display());
    }

    #[test]
    fn inside_reads_the_marker() {
        // The unit tests themselves run on the host.
        assert_eq!(inside(), std::env::var(IN_UML_ENV).as_deref() == Ok("1"));
    }
}
