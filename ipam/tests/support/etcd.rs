//! Runs a real etcd (Debian's `etcd-server`) on loopback for tests: free ports, a temp
//! data dir, and stop / kill -9 / pause / restart on the same data dir. The process is
//! killed when the handle is dropped, also when a test panics.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Certificates for a TLS etcd: a CA, the server's and a client's (PEM files).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// Makes a throwaway CA and certificates for 127.0.0.1 with `openssl`.
    pub fn generate(dir: &Path) -> TlsFiles {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl is missing: install Debian's `openssl` package");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=serval-test-ca",
        ]);
        for who in ["server", "client"] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={who}"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
            ]);
        }
        TlsFiles {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

/// A running (or stopped) etcd member.
pub struct Etcd {
    tls: Option<TlsFiles>,
    bin: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    paused: bool,
    cert_dir: Option<tempfile::TempDir>,
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
        Etcd::start_with(None)
    }

    /// Starts etcd serving clients over TLS and requiring client certificates.
    pub fn start_tls() -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = TlsFiles::generate(dir.path());
        let mut e = Etcd::start_with(Some(tls));
        e.cert_dir = Some(dir);
        e
    }

    fn start_with(tls: Option<TlsFiles>) -> Etcd {
        let mut e = Etcd {
            tls,
            cert_dir: None,
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
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
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
        let mut cmd = Command::new(&self.bin);
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cert-file={}", t.server_cert.display()))
                .arg(format!("--key-file={}", t.server_key.display()))
                .arg(format!("--trusted-ca-file={}", t.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = cmd
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
        if let Some(t) = &self.tls {
            // Over TLS, ask etcdctl (Debian's `etcd-client`), which speaks it.
            return Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", self.endpoint()))
                .arg(format!("--cacert={}", t.ca.display()))
                .arg(format!("--cert={}", t.client_cert.display()))
                .arg(format!("--key={}", t.client_key.display()))
                .args(["endpoint", "health"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
        }
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

    /// A function that says how long etcd's disk writes took so far (from its metrics),
    /// to tell a slow disk from a slow client when a test is slow. Over TLS it says
    /// nothing.
    pub fn disk_reporter(&self) -> impl Fn() -> String + Send + 'static {
        let port = self.client_port;
        let tls = self.tls.is_some();
        move || {
            if tls {
                return String::new();
            }
            disk_report(port).unwrap_or_else(|| "etcd's metrics did not answer".into())
        }
    }

    /// The sum of the samples of metric `name` in etcd's `/metrics` whose labels contain
    /// every one of `labels` (e.g. `grpc_method="Watch"`). Panics if etcd does not answer
    /// or exposes no such sample: a test counting on it would prove nothing.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        assert!(self.tls.is_none(), "metrics are read over plain HTTP only");
        let text = scrape(self.client_port)
            .unwrap_or_else(|| panic!("etcd's /metrics did not answer:\n{}", self.log_tail()));
        let mut found = false;
        let mut sum = 0.0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let (labels_part, value) = match rest.strip_prefix('{') {
                Some(r) => match r.split_once("} ") {
                    Some((l, v)) => (l, v),
                    None => continue,
                },
                None => match rest.strip_prefix(' ') {
                    Some(v) => ("", v),
                    None => continue,
                },
            };
            if labels.iter().all(|want| labels_part.contains(want)) {
                if let Ok(v) = value.trim().parse::<f64>() {
                    found = true;
                    sum += v;
                }
            }
        }
        assert!(found, "etcd exposes no metric {name} with {labels:?}");
        sum
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
    ///
    /// kill(2) only queues the signal; this returns once every etcd thread shows as
    /// stopped in /proc, so a request sent afterwards cannot be answered.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
        let Some(pid) = self.child.as_ref().map(|c| c.id()) else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "etcd (pid {pid}) did not stop within 10 s of SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
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

/// True when every thread of `pid` is in the stopped state ("T" in /proc/…/stat).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut seen = false;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // The state follows the parenthesised command name.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if !matches!(state, Some('T') | Some('t')) {
            return false;
        }
        seen = true;
    }
    seen
}

/// WAL fsyncs and backend commits, counted and timed, from etcd's `/metrics`.
fn disk_report(port: u16) -> Option<String> {
    let text = scrape(port)?;
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    let mut parts = Vec::new();
    for (what, metric) in [
        ("WAL fsyncs", "etcd_disk_wal_fsync_duration_seconds"),
        (
            "backend commits",
            "etcd_disk_backend_commit_duration_seconds",
        ),
    ] {
        let count = value(&format!("{metric}_count"))?;
        let sum = value(&format!("{metric}_sum"))?;
        parts.push(format!(
            "{count} {what}, {:.2} ms each",
            sum * 1000.0 / count.max(1.0)
        ));
    }
    Some(format!("etcd since its start: {}", parts.join(", ")))
}

/// etcd's `/metrics` text.
fn scrape(port: u16) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.contains("\r\n\r\n").then_some(text)
}
