//! Runs a real etcd (Debian's `etcd-server`) on loopback for tests: free ports, a temp
//! data dir, and stop / kill -9 / pause / restart on the same data dir. The process is
//! killed when the handle is dropped, also when a test panics.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) etcd member.
pub struct Etcd {
    bin: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    paused: bool,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on loopback");
    l.local_addr().expect("local addr").port()
}

/// The etcd binary, or a panic that names the package to install.
pub fn etcd_binary() -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/local/bin"])
    {
        let p = Path::new(dir).join("etcd");
        if p.is_file() {
            return p;
        }
    }
    panic!("the etcd binary is missing: install Debian's `etcd-server` package (apt-get install etcd-server)");
}

impl Etcd {
    /// Starts etcd and waits until it reports healthy.
    pub fn start() -> Etcd {
        let mut e = Etcd {
            bin: etcd_binary(),
            dir: tempfile::tempdir().expect("temp dir"),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
            paused: false,
        };
        e.spawn();
        e
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The datastore string for this member.
    pub fn datastore(&self) -> String {
        format!("etcd:{}", self.endpoint())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log file");
        let child = Command::new(&self.bin)
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.paused = false;
        self.wait_healthy(Duration::from_secs(30));
    }

    /// Waits until `GET /health` answers `"health":"true"`, or panics with etcd's log.
    pub fn wait_healthy(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("etcd exited with {status}:\n{}", self.log_tail());
                }
            }
            if self.healthy() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "etcd did not become healthy within {within:?}:\n{}",
            self.log_tail()
        );
    }

    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.client_port).into(),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.contains("\"health\":\"true\"")
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// SIGSTOP: etcd keeps its sockets but answers nothing.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// SIGCONT after [`Etcd::pause`].
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    /// A clean stop (SIGTERM), waiting for the process to exit.
    pub fn stop(&mut self) {
        if self.paused {
            self.resume();
        }
        self.signal(libc::SIGTERM);
        self.reap();
    }

    /// kill -9, waiting for the process to be gone.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.reap();
    }

    fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Starts again on the same data dir and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: etcd is still running");
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
