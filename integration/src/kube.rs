//! A real Kubernetes control plane for tests: etcd and kube-apiserver, built from the Go
//! modules pinned in `integration/k8s/go.mod` by `integration/k8s/build.sh` (which
//! `scripts/setup.sh` runs), started on loopback or inside a network namespace.
//!
//! [`ApiServer::start`] gives a server that authorises with RBAC, signs service-account
//! tokens and serves the TokenRequest API; the test talks to it as cluster admin through
//! [`ApiServer::admin_kubeconfig`] (an x509 client certificate in `system:masters`) and
//! gets a kubeconfig for any ServiceAccount with a token the server itself issued
//! ([`ApiServer::service_account_kubeconfig`]), so RBAC is what is tested. Certificates
//! come from `openssl`. Everything — both processes, their data — goes when the value is
//! dropped, also when the test panics. When the binaries are missing the test fails,
//! naming the command that builds them.
//!
//! ```no_run
//! use serval_integration::kube::ApiServer;
//! use serval_integration::scenario;
//!
//! scenario("crds", |dir| {
//!     let api = ApiServer::start(dir.path())?;
//!     api.kubectl(&["apply", "--server-side", "-f", "crds/"])?;
//!     Ok(())
//! });
//! ```

use crate::error::{Error, Result};
use crate::netns::{run, spawn_here, NsChild, NsHandle};
use crate::tools;
use crate::wait::{wait_until, Poll};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long the API server may take to answer `/readyz` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the built binaries are: what `integration/k8s/build.sh --where` prints.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub kubectl: PathBuf,
    pub etcd: PathBuf,
}

impl Binaries {
    /// The binaries `integration/k8s/build.sh` built for the pinned versions, or an error
    /// that says how to build them.
    pub fn find() -> Result<Binaries> {
        let script = build_script();
        let out = Command::new("sh")
            .arg(&script)
            .arg("--where")
            .output()
            .map_err(|source| Error::Spawn {
                command: format!("sh {} --where", script.display()),
                source,
            })?;
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let bins = Binaries {
            kube_apiserver: dir.join("kube-apiserver"),
            kubectl: dir.join("kubectl"),
            etcd: dir.join("etcd"),
        };
        if !out.status.success()
            || ![&bins.kube_apiserver, &bins.kubectl, &bins.etcd]
                .iter()
                .all(|b| b.is_file())
        {
            return Err(Error::MissingTool {
                tool: format!(
                    "kube-apiserver, kubectl and etcd in {} ({})",
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                package: format!(
                    "nothing: build them with `sh {}` (scripts/setup.sh does)",
                    script.display()
                ),
            });
        }
        Ok(bins)
    }
}

fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("k8s")
        .join("build.sh")
}

/// Who a kubeconfig speaks as.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// An x509 client certificate and its key (PEM files).
    Certificate { cert: PathBuf, key: PathBuf },
    /// A bearer token.
    Token(String),
}

/// A running etcd + kube-apiserver pair.
#[derive(Debug)]
pub struct ApiServer {
    dir: PathBuf,
    ns: Option<NsHandle>,
    bins: Binaries,
    url: String,
    etcd_url: String,
    ca: PathBuf,
    admin: PathBuf,
    apiserver_argv: Vec<String>,
    // Dropped in this order: the API server before its etcd.
    apiserver: Option<NsChild>,
    etcd: Option<NsChild>,
}

impl ApiServer {
    /// Starts etcd and kube-apiserver on free loopback ports of the test process's own
    /// namespace: for tests that talk to the server from the test itself.
    pub fn start(dir: &Path) -> Result<ApiServer> {
        let [api, client, peer] = free_ports()?;
        ApiServer::launch(
            dir,
            None,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            [api, client, peer],
        )
    }

    /// Starts them inside `ns`, the API server listening on `addr` (an address of the
    /// namespace, port 6443) so that processes in other namespaces reach it over the
    /// test's links; etcd stays on the namespace's loopback.
    pub fn start_in(ns: &NsHandle, addr: IpAddr, dir: &Path) -> Result<ApiServer> {
        ApiServer::launch(dir, Some(ns.clone()), addr, [6443, 2379, 2380])
    }

    fn launch(
        dir: &Path,
        ns: Option<NsHandle>,
        addr: IpAddr,
        [api_port, client_port, peer_port]: [u16; 3],
    ) -> Result<ApiServer> {
        tools::require("openssl")?;
        let bins = Binaries::find()?;
        let dir = dir.join("kube");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        let pki = Pki::generate(&dir, addr)?;
        let host = match addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let url = format!("https://{host}:{api_port}");
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let data = dir.join("etcd-data");
        let etcd_argv: Vec<String> = vec![
            bins.etcd.display().to_string(),
            "--data-dir".into(),
            data.display().to_string(),
            "--listen-client-urls".into(),
            etcd_url.clone(),
            "--advertise-client-urls".into(),
            etcd_url.clone(),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{peer_port}"),
            "--log-level".into(),
            "warn".into(),
            // A throwaway control plane: its durability is not under test.
            "--unsafe-no-fsync".into(),
        ];
        let apiserver_argv: Vec<String> = vec![
            bins.kube_apiserver.display().to_string(),
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={addr}"),
            format!("--advertise-address={addr}"),
            // No `kubernetes` Service endpoints: the server may sit on loopback, which
            // the endpoint reconciler refuses, and nothing here uses them.
            "--endpoint-reconciler-type=none".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", pki.server_cert.display()),
            format!("--tls-private-key-file={}", pki.server_key.display()),
            format!("--client-ca-file={}", pki.ca.display()),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", pki.sa_pub.display()),
            format!(
                "--service-account-signing-key-file={}",
                pki.sa_key.display()
            ),
            // Only the API server's own bookkeeping: nothing routes to these ranges. Both
            // families, so dual-stack Services (`ipFamilyPolicy: RequireDualStack`) exist;
            // IPv4 first, so a Service that names no family stays IPv4-only.
            "--service-cluster-ip-range=10.254.0.0/24,fd00:10:254::/112".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ];
        let mut server = ApiServer {
            admin: dir.join("admin.kubeconfig"),
            dir,
            ns,
            bins,
            url,
            etcd_url,
            ca: pki.ca.clone(),
            apiserver_argv,
            apiserver: None,
            etcd: None,
        };
        server.write_kubeconfig(
            &server.admin,
            &Credentials::Certificate {
                cert: pki.admin_cert,
                key: pki.admin_key,
            },
        )?;
        let etcd_log = server.dir.join("etcd.log");
        let argv: Vec<&str> = etcd_argv.iter().map(String::as_str).collect();
        server.etcd = Some(server.spawn(&argv, &etcd_log)?);
        server.start_apiserver()?;
        Ok(server)
    }

    fn spawn(&self, argv: &[&str], log: &Path) -> Result<NsChild> {
        match &self.ns {
            Some(ns) => ns.spawn(argv, Some(log)),
            None => spawn_here(argv, Some(log)),
        }
    }

    /// Starts the API server (again, after [`ApiServer::stop_apiserver`]) on the same
    /// etcd and address, and waits until it is ready.
    pub fn start_apiserver(&mut self) -> Result<()> {
        if self.apiserver.is_some() {
            return Ok(());
        }
        let log = self.dir.join("kube-apiserver.log");
        let argv: Vec<&str> = self.apiserver_argv.iter().map(String::as_str).collect();
        self.apiserver = Some(self.spawn(&argv, &log)?);
        self.wait_ready(START_TIMEOUT)
    }

    /// Stops the API server (SIGTERM, then SIGKILL) and leaves etcd running: an outage
    /// of the control plane as a node sees it.
    pub fn stop_apiserver(&mut self) -> Result<()> {
        if let Some(mut child) = self.apiserver.take() {
            child.terminate(Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Waits until `/readyz` answers ok, failing early when a process died.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        wait_until(timeout, "kube-apiserver /readyz", || {
            for (name, child) in [
                ("etcd", &mut self.etcd),
                ("kube-apiserver", &mut self.apiserver),
            ] {
                if let Some(c) = child {
                    match c.try_wait() {
                        Ok(Some(status)) => {
                            return Poll::Ready(Err(Error::Check(format!(
                                "{name} exited ({status}) while starting; see {}",
                                self.dir.display()
                            ))))
                        }
                        Ok(None) => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
            match self.kubectl(&["get", "--raw", "/readyz"]) {
                Ok(out) if out.trim() == "ok" => Poll::Ready(Ok(())),
                Ok(out) => Poll::Pending(out),
                Err(e) => Poll::Pending(e.to_string()),
            }
        })?
    }

    /// `https://ADDRESS:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// etcd's client URL (on the loopback of the server's namespace).
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The CA that signed the server's certificate (PEM).
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// A kubeconfig for a cluster admin (`system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin
    }

    /// The directory with the server's logs, certificates and kubeconfigs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache directory kubectl (and helm) should use with this server
    /// (`KUBECACHEDIR`).
    pub fn kubectl_cache(&self) -> PathBuf {
        self.dir.join("kubectl-cache")
    }

    /// The real kubectl of the same release.
    pub fn kubectl_path(&self) -> &Path {
        &self.bins.kubectl
    }

    /// The binaries in use.
    pub fn binaries(&self) -> &Binaries {
        &self.bins
    }

    /// The server's `gitVersion`, e.g. `v1.37.2`.
    pub fn version(&self) -> Result<String> {
        let out = self.kubectl(&["get", "--raw", "/version"])?;
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| Error::Parse {
            daemon: "kube-apiserver",
            what: "/version".into(),
            detail: e.to_string(),
            output: out.clone(),
        })?;
        Ok(v["gitVersion"].as_str().unwrap_or_default().to_owned())
    }

    /// Writes a kubeconfig for this server with `credentials` to `path`.
    pub fn write_kubeconfig(&self, path: &Path, credentials: &Credentials) -> Result<()> {
        let user = match credentials {
            Credentials::Certificate { cert, key } => serde_json::json!({
                "client-certificate": cert, "client-key": key,
            }),
            Credentials::Token(token) => serde_json::json!({ "token": token }),
        };
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "serval-test", "cluster": {
                "server": self.url, "certificate-authority": self.ca,
            }}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "serval-test", "context": {"cluster": "serval-test", "user": "user"}}],
            "current-context": "serval-test",
        });
        write_private(path, config.to_string().as_bytes())
    }

    /// A token for ServiceAccount `namespace/name`, issued by the server through the
    /// TokenRequest API, valid for `lifetime` (the server allows 10 minutes at least).
    pub fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        lifetime: Duration,
    ) -> Result<String> {
        let duration = format!("--duration={}s", lifetime.as_secs());
        let token = self.kubectl(&["-n", namespace, "create", "token", name, &duration])?;
        Ok(token.trim().to_owned())
    }

    /// A kubeconfig at `dir/<namespace>-<name>.kubeconfig` that speaks as ServiceAccount
    /// `namespace/name` with a token the server issued (valid for `lifetime`).
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        lifetime: Duration,
    ) -> Result<PathBuf> {
        let token = self.service_account_token(namespace, name, lifetime)?;
        let path = self.dir.join(format!("{namespace}-{name}.kubeconfig"));
        self.write_kubeconfig(&path, &Credentials::Token(token))?;
        Ok(path)
    }

    /// A Pod `namespace/pod` of ServiceAccount `service_account` on Node `node`, as the
    /// scheduler leaves it (no kubelet runs it); the Node is registered if it is not yet.
    /// Tokens bound to this pod carry the node's name, as a kubelet's projected token
    /// does; deleting the pod revokes them.
    pub fn pod_on_node(
        &self,
        namespace: &str,
        service_account: &str,
        pod: &str,
        node: &str,
    ) -> Result<()> {
        if self.kubectl(&["get", "node", node, "-o", "name"]).is_err() {
            let obj =
                serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}});
            self.kubectl_stdin(&["create", "-f", "-"], &obj.to_string())?;
        }
        let obj = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": namespace},
            "spec": {
                "nodeName": node,
                "serviceAccountName": service_account,
                "containers": [{"name": "agent", "image": "serval"}],
            },
        });
        self.kubectl_stdin(&["apply", "-f", "-"], &obj.to_string())?;
        Ok(())
    }

    /// A token for the ServiceAccount of Pod `namespace/pod` (see [`Self::pod_on_node`]),
    /// bound to that pod, valid for `lifetime`: the server authenticates it with the
    /// pod's node name (`authentication.kubernetes.io/node-name`).
    pub fn pod_token(
        &self,
        namespace: &str,
        service_account: &str,
        pod: &str,
        lifetime: Duration,
    ) -> Result<String> {
        let duration = format!("--duration={}s", lifetime.as_secs());
        let token = self.kubectl(&[
            "-n",
            namespace,
            "create",
            "token",
            service_account,
            "--bound-object-kind=Pod",
            &format!("--bound-object-name={pod}"),
            &duration,
        ])?;
        Ok(token.trim().to_owned())
    }

    /// A kubeconfig at `dir/<namespace>-<pod>.kubeconfig` that speaks as the agent on
    /// `node` does: ServiceAccount `namespace/service_account` with a token bound to a
    /// pod on that node (created by [`Self::pod_on_node`] as `<service_account>-<node>`).
    pub fn node_agent_kubeconfig(
        &self,
        namespace: &str,
        service_account: &str,
        node: &str,
        lifetime: Duration,
    ) -> Result<PathBuf> {
        let pod = format!("{service_account}-{node}");
        self.pod_on_node(namespace, service_account, &pod, node)?;
        let token = self.pod_token(namespace, service_account, &pod, lifetime)?;
        let path = self.dir.join(format!("{namespace}-{pod}.kubeconfig"));
        self.write_kubeconfig(&path, &Credentials::Token(token))?;
        Ok(path)
    }

    /// The user name the server authenticates `kubeconfig` as (`kubectl auth whoami`).
    pub fn whoami(&self, kubeconfig: &Path) -> Result<String> {
        self.kubectl_as(
            kubeconfig,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
            None,
        )
    }

    /// kubectl as cluster admin; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_as(&self.admin, args, None)
    }

    /// kubectl as cluster admin with `input` on stdin (`apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Result<String> {
        self.kubectl_as(&self.admin, args, Some(input))
    }

    /// kubectl with the given kubeconfig; returns stdout, or an error with stderr (the
    /// server's message for a rejected request).
    pub fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String> {
        let mut cmd = match &self.ns {
            Some(ns) => ns.command(&self.bins.kubectl.display().to_string()),
            None => Command::new(&self.bins.kubectl),
        };
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            // kubectl's discovery and OpenAPI caches stay with this server: in ~/.kube
            // they pile up, and a later server on the same port would read them.
            .env("KUBECACHEDIR", self.kubectl_cache());
        match input {
            None => run(&mut cmd),
            Some(text) => run_with_input(&mut cmd, text),
        }
    }

    /// Compacts etcd's history up to its current revision, so that a watch from an older
    /// resourceVersion is answered `410 Gone` and clients must list again. Returns the
    /// revision compacted to.
    pub fn compact_etcd(&self) -> Result<u64> {
        tools::require("curl")?;
        let post = |path: &str, body: &str| -> Result<serde_json::Value> {
            let url = format!("{}{path}", self.etcd_url);
            let argv = [
                "curl",
                "-sS",
                "--fail",
                "-X",
                "POST",
                "-d",
                body,
                url.as_str(),
            ];
            let out = match &self.ns {
                Some(ns) => ns.exec(&argv),
                None => run(Command::new(argv[0]).args(&argv[1..])),
            }?;
            serde_json::from_str(&out).map_err(|e| Error::Parse {
                daemon: "etcd",
                what: path.to_owned(),
                detail: e.to_string(),
                output: out.clone(),
            })
        };
        // A range over one (absent) key answers with the store's current revision.
        let head = post("/v3/kv/range", r#"{"key":"AA=="}"#)?;
        let revision: u64 = head["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| Error::Check(format!("no revision in etcd's answer {head}")))?;
        post(
            "/v3/kv/compaction",
            &format!(r#"{{"revision":"{revision}","physical":true}}"#),
        )?;
        Ok(revision)
    }
}

impl ApiServer {
    /// From now on dropping this value leaves etcd and the API server running: for a
    /// control plane that outlives the process that started it (`serval lab up`), whose
    /// owner removes it with the namespace it runs in. Stopping and restarting the API
    /// server are no longer possible through this value.
    pub fn detach(&mut self) {
        // NsChild kills its process group on drop; forgetting it keeps both running.
        std::mem::forget(self.apiserver.take());
        std::mem::forget(self.etcd.take());
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // The API server first, so that it does not log a storm of etcd errors.
        drop(self.apiserver.take());
        drop(self.etcd.take());
    }
}

/// The certificates and keys of one control plane.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
}

impl Pki {
    fn generate(dir: &Path, addr: IpAddr) -> Result<Pki> {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        let openssl = |args: &[&str]| -> Result<()> {
            run(Command::new("openssl").args(args).current_dir(&dir)).map(drop)
        };
        let ec_key = |name: &str| {
            openssl(&[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                name,
            ])
        };
        ec_key("ca.key")?;
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=serval-test-ca",
        ])?;
        let sign = |name: &str, subject: &str, ext: &str| -> Result<()> {
            ec_key(&format!("{name}.key"))?;
            let ext_file = format!("{name}.ext");
            write_private(&dir.join(&ext_file), ext.as_bytes())?;
            openssl(&[
                "req",
                "-new",
                "-key",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                subject,
            ])?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &ext_file,
            ])
        };
        sign(
            "server",
            "/CN=kube-apiserver",
            &format!(
                "subjectAltName=IP:{addr},IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n\
                 extendedKeyUsage=serverAuth\n"
            ),
        )?;
        sign(
            "admin",
            "/O=system:masters/CN=serval-test-admin",
            "extendedKeyUsage=clientAuth\n",
        )?;
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "sa.key",
        ])?;
        openssl(&["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
        Ok(Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            admin_cert: dir.join("admin.pem"),
            admin_key: dir.join("admin.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        })
    }
}

/// Three distinct free TCP ports on loopback (bound together, then released).
fn free_ports() -> Result<[u16; 3]> {
    let bind = || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| Ok((l.local_addr()?.port(), l)))
            .map_err(|e| Error::io("binding a free port on", "127.0.0.1", e))
    };
    let (a, _la) = bind()?;
    let (b, _lb) = bind()?;
    let (c, _lc) = bind()?;
    Ok([a, b, c])
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("writing", path, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("writing", path, e))
}

fn run_with_input(cmd: &mut Command, input: &str) -> Result<String> {
    let command = crate::netns::describe(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| Error::io("writing stdin of", &command, e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("waiting for", &command, e))?;
    if !out.status.success() {
        return Err(Error::Command {
            command,
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
