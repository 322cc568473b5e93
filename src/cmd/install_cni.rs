//! `serval install-cni`: what the DaemonSet's init container runs. It copies the CNI
//! plugin into the host's CNI bin directory as `serval`, writes the network
//! configuration list (serval first, then the reference plugins it chains) into the
//! host's CNI config directory, and for the Kubernetes datastore a kubeconfig made from
//! the pod's service account. Every file is written atomically (temporary file, fsync,
//! rename), only when its content changes, and files of other plugins are left alone.
//! With `--watch` it keeps checking (service account tokens rotate) and rewrites what
//! changed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use serde_json::{json, Value};

/// The plugin is installed under this name: the `type` in the configuration.
pub const PLUGIN_NAME: &str = "serval";

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The host's CNI bin directory, as mounted in this container.
    #[arg(long, env = "SERVAL_CNI_BIN_DIR", default_value = "/host/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// The host's CNI config directory, as mounted in this container.
    #[arg(
        long,
        env = "SERVAL_CNI_CONF_DIR",
        default_value = "/host/etc/cni/net.d"
    )]
    pub conf_dir: PathBuf,
    /// The same directory as the host sees it (paths written into the configuration).
    #[arg(
        long,
        env = "SERVAL_CNI_HOST_CONF_DIR",
        default_value = "/etc/cni/net.d"
    )]
    pub host_conf_dir: PathBuf,
    /// File name of the configuration list; runtimes use the first in lexical order.
    #[arg(
        long,
        env = "SERVAL_CNI_CONFLIST_NAME",
        default_value = "10-serval.conflist"
    )]
    pub conflist_name: String,
    /// The plugin binary to install [default: serval-cni next to this executable].
    #[arg(long, env = "SERVAL_CNI_PLUGIN")]
    pub plugin: Option<PathBuf>,
    /// Network name: part of every IPAM handle of the network's pods.
    #[arg(
        long,
        env = "SERVAL_CNI_NETWORK_NAME",
        default_value = "k8s-pod-network"
    )]
    pub network_name: String,
    /// CNI version of the list (1.0.0 for runtimes that do not know 1.1.0 yet).
    #[arg(long, env = "SERVAL_CNI_VERSION", default_value = "1.1.0")]
    pub cni_version: String,
    /// Datastore the plugin allocates from: file:PATH, etcd:ENDPOINTS or kubernetes.
    #[arg(
        long,
        env = "SERVAL_DATASTORE",
        default_value = "file:/var/lib/serval/ipam.json"
    )]
    pub datastore: String,
    /// The node's name [default: the plugin reads the agent's nodename file].
    #[arg(long, env = "KUBERNETES_NODE_NAME")]
    pub node_name: Option<String>,
    /// Pod MTU; 0 lets the plugin use the agent's /var/lib/serval/mtu.
    #[arg(long, env = "SERVAL_CNI_MTU", default_value_t = 0)]
    pub mtu: u32,
    #[arg(long, env = "SERVAL_CNI_ASSIGN_IPV4", default_value_t = true, action = clap::ArgAction::Set)]
    pub assign_ipv4: bool,
    #[arg(long, env = "SERVAL_CNI_ASSIGN_IPV6", default_value_t = false, action = clap::ArgAction::Set)]
    pub assign_ipv6: bool,
    /// Pools (names or CIDRs) pods take IPv4 addresses from [default: any].
    #[arg(long, env = "SERVAL_CNI_IPV4_POOLS", value_delimiter = ',')]
    pub ipv4_pools: Vec<String>,
    /// Pools (names or CIDRs) pods take IPv6 addresses from [default: any].
    #[arg(long, env = "SERVAL_CNI_IPV6_POOLS", value_delimiter = ',')]
    pub ipv6_pools: Vec<String>,
    /// The plugin's log on the host.
    #[arg(
        long,
        env = "SERVAL_CNI_LOG_FILE",
        default_value = "/var/log/serval/cni.log"
    )]
    pub log_file: PathBuf,
    #[arg(long, env = "SERVAL_CNI_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Reference plugins chained after serval, in order: portmap, bandwidth, tuning.
    #[arg(
        long,
        env = "SERVAL_CNI_CHAIN",
        value_delimiter = ',',
        default_value = "portmap,bandwidth"
    )]
    pub chain: Vec<String>,
    /// The service account of this pod (Kubernetes datastore: the kubeconfig's token).
    #[arg(long, default_value = "/var/run/secrets/kubernetes.io/serviceaccount")]
    pub service_account_dir: PathBuf,
    /// The API server [default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT].
    #[arg(long, env = "SERVAL_KUBE_API_SERVER")]
    pub api_server: Option<String>,
    /// Keep running and rewrite whatever changes.
    #[arg(long)]
    pub watch: bool,
    /// How often `--watch` looks.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: unit must be ms, s or m")),
    }
}

/// The kubeconfig's file name in the config directory.
pub const KUBECONFIG_NAME: &str = "serval-kubeconfig";

/// What one pass wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub plugin: bool,
    pub conflist: bool,
    pub kubeconfig: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    watch(&args, &AtomicBool::new(false))
}

/// One pass, then (with `--watch`) a pass every `--interval` until `stop` is set. The
/// first pass must succeed (an init container that cannot install must fail the pod);
/// a later failure is reported and retried, so a sidecar survives a passing problem.
pub fn watch(args: &Args, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut first = true;
    loop {
        match install(args) {
            Ok(w) => {
                if w != Written::default() || first {
                    println!(
                        "serval install-cni: plugin {}, {} {}, kubeconfig {}",
                        if w.plugin { "installed" } else { "unchanged" },
                        args.conflist_name,
                        if w.conflist { "written" } else { "unchanged" },
                        if w.kubeconfig { "written" } else { "unchanged" },
                    );
                }
            }
            Err(e) if first => return Err(e),
            Err(e) => eprintln!("serval install-cni: {e:#}; trying again"),
        }
        first = false;
        if !args.watch || stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        std::thread::sleep(args.interval);
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
    }
}

fn is_kubernetes(args: &Args) -> bool {
    args.datastore.trim() == "kubernetes"
}

/// One pass: everything is rendered and checked first, then written.
pub fn install(args: &Args) -> anyhow::Result<Written> {
    let conflist = render_conflist(args)?;
    let kubeconfig = if is_kubernetes(args) {
        Some(render_kubeconfig(args)?)
    } else {
        None
    };
    let plugin = plugin_source(args)?;
    let binary = std::fs::read(&plugin)
        .with_context(|| format!("reading the plugin binary {}", plugin.display()))?;
    let mut w = Written {
        plugin: write_if_changed(&args.bin_dir.join(PLUGIN_NAME), &binary, 0o755)?,
        ..Written::default()
    };
    // The kubeconfig before the configuration: a runtime that sees the configuration
    // must find the file it names.
    if let Some(k) = kubeconfig {
        w.kubeconfig = write_if_changed(&args.conf_dir.join(KUBECONFIG_NAME), k.as_bytes(), 0o600)?;
    }
    w.conflist = write_if_changed(
        &args.conf_dir.join(&args.conflist_name),
        conflist.as_bytes(),
        0o644,
    )?;
    Ok(w)
}

fn plugin_source(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.plugin {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    Ok(exe.with_file_name("serval-cni"))
}

/// The configuration list, checked by the plugin's own parser before it is written.
pub fn render_conflist(args: &Args) -> anyhow::Result<String> {
    let mut serval = json!({
        "type": PLUGIN_NAME,
        "datastore": args.datastore,
        "mtu": args.mtu,
        "log_file_path": args.log_file,
        "log_level": args.log_level,
        "ipam": {
            "type": "serval-ipam",
            "assign_ipv4": args.assign_ipv4,
            "assign_ipv6": args.assign_ipv6,
        },
    });
    if let Some(n) = &args.node_name {
        serval["nodename"] = json!(n);
    }
    if !args.ipv4_pools.is_empty() {
        serval["ipam"]["ipv4_pools"] = json!(args.ipv4_pools);
    }
    if !args.ipv6_pools.is_empty() {
        serval["ipam"]["ipv6_pools"] = json!(args.ipv6_pools);
    }
    if is_kubernetes(args) {
        serval["kubernetes"] = json!({"kubeconfig": args.host_conf_dir.join(KUBECONFIG_NAME)});
    }
    // What the runtime will hand the plugin: the plugin's entry plus name and version.
    let mut as_run = serval.clone();
    as_run["name"] = json!(args.network_name);
    as_run["cniVersion"] = json!(args.cni_version);
    cni::config::NetConf::parse(&as_run, None)
        .map_err(|e| anyhow::anyhow!("the plugin would refuse this configuration: {e}"))?;
    let mut plugins = vec![serval];
    for p in &args.chain {
        plugins.push(match p.as_str() {
            "portmap" => {
                json!({"type": "portmap", "snat": true, "capabilities": {"portMappings": true}})
            }
            "bandwidth" => json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
            "tuning" => json!({"type": "tuning"}),
            "" => continue,
            other => bail!("--chain: {other:?} is not one of portmap, bandwidth, tuning"),
        });
    }
    let list = json!({
        "name": args.network_name,
        "cniVersion": args.cni_version,
        "plugins": plugins,
    });
    Ok(format!("{}\n", serde_json::to_string_pretty(&list)?))
}

/// A kubeconfig (JSON, which every YAML reader takes) with the pod's service account
/// token and CA, for the plugin on the host.
pub fn render_kubeconfig(args: &Args) -> anyhow::Result<String> {
    let read = |name: &str| {
        let p = args.service_account_dir.join(name);
        std::fs::read(&p).with_context(|| format!("reading the service account's {}", p.display()))
    };
    let token =
        String::from_utf8(read("token")?).context("the service account token is not text")?;
    let ca = read("ca.crt")?;
    let server = match &args.api_server {
        Some(s) => s.clone(),
        None => {
            let host = std::env::var("KUBERNETES_SERVICE_HOST")
                .context("KUBERNETES_SERVICE_HOST is not set (or pass --api-server)")?;
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            format!("https://{host}:{port}")
        }
    };
    let kc: Value = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server,
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca),
        }}],
        "users": [{"name": "serval-cni", "user": {"token": token.trim()}}],
        "contexts": [{"name": "serval", "context": {"cluster": "local", "user": "serval-cni"}}],
        "current-context": "serval",
    });
    Ok(format!("{}\n", serde_json::to_string_pretty(&kc)?))
}

/// Writes `path` atomically when its content differs; returns whether it wrote.
pub fn write_if_changed(path: &Path, content: &[u8], mode: u32) -> anyhow::Result<bool> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if let Ok(old) = std::fs::read(path) {
        let same_mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777 == mode)
            .unwrap_or(false);
        if old == content && same_mode {
            return Ok(false);
        }
    }
    let dir = path
        .parent()
        .with_context(|| format!("{} has no directory", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dot file: runtimes skip it while it is being written.
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(content)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(dir: &Path, extra: &[&str]) -> Args {
        let plugin = dir.join("serval-cni");
        if !plugin.exists() {
            std::fs::write(&plugin, b"\x7fELF plugin v1").unwrap();
        }
        let mut argv = vec![
            "install-cni".to_string(),
            format!("--bin-dir={}", dir.join("bin").display()),
            format!("--conf-dir={}", dir.join("net.d").display()),
            format!("--plugin={}", plugin.display()),
            format!("--service-account-dir={}", dir.join("sa").display()),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn installs_then_leaves_unchanged_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        let conf_dir = dir.path().join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::write(conf_dir.join("05-other.conflist"), "{}").unwrap();
        let a = args(dir.path(), &["--node-name=node-1"]);
        let w = install(&a).unwrap();
        assert_eq!(
            w,
            Written {
                plugin: true,
                conflist: true,
                kubeconfig: false
            }
        );
        let bin = dir.path().join("bin/serval");
        assert_eq!(std::fs::read(&bin).unwrap(), b"\x7fELF plugin v1");
        assert_eq!(std::fs::metadata(&bin).unwrap().mode() & 0o777, 0o755);
        let list: Value = serde_json::from_str(
            &std::fs::read_to_string(conf_dir.join("10-serval.conflist")).unwrap(),
        )
        .unwrap();
        assert_eq!(list["cniVersion"], "1.1.0");
        assert_eq!(list["plugins"][0]["type"], "serval");
        assert_eq!(list["plugins"][0]["nodename"], "node-1");
        assert_eq!(list["plugins"][1]["type"], "portmap");
        assert_eq!(list["plugins"][2]["type"], "bandwidth");
        let inode = std::fs::metadata(conf_dir.join("10-serval.conflist"))
            .unwrap()
            .ino();
        // Nothing changed: nothing is rewritten.
        assert_eq!(install(&a).unwrap(), Written::default());
        assert_eq!(
            std::fs::metadata(conf_dir.join("10-serval.conflist"))
                .unwrap()
                .ino(),
            inode
        );
        // Other plugins' files stay, and no temporary file is left.
        let names: Vec<String> = std::fs::read_dir(&conf_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(&"05-other.conflist".to_string()));
        // A changed setting or a new binary is written again.
        let a2 = args(dir.path(), &["--node-name=node-1", "--mtu=1400"]);
        assert_eq!(
            install(&a2).unwrap(),
            Written {
                conflist: true,
                ..Written::default()
            }
        );
        std::fs::write(dir.path().join("serval-cni"), b"\x7fELF plugin v2").unwrap();
        assert_eq!(
            install(&a2).unwrap(),
            Written {
                plugin: true,
                ..Written::default()
            }
        );
    }

    #[test]
    fn kubernetes_datastore_gets_a_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let sa = dir.path().join("sa");
        std::fs::create_dir_all(&sa).unwrap();
        std::fs::write(sa.join("token"), "tok-1\n").unwrap();
        std::fs::write(sa.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        let a = args(
            dir.path(),
            &[
                "--datastore=kubernetes",
                "--api-server=https://10.96.0.1:443",
            ],
        );
        let w = install(&a).unwrap();
        assert!(w.kubeconfig && w.conflist);
        let kc_path = dir.path().join("net.d").join(KUBECONFIG_NAME);
        assert_eq!(std::fs::metadata(&kc_path).unwrap().mode() & 0o777, 0o600);
        let kc: Value = serde_json::from_str(&std::fs::read_to_string(&kc_path).unwrap()).unwrap();
        assert_eq!(kc["users"][0]["user"]["token"], "tok-1");
        assert_eq!(
            kc["clusters"][0]["cluster"]["server"],
            "https://10.96.0.1:443"
        );
        let list: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("net.d/10-serval.conflist")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            list["plugins"][0]["kubernetes"]["kubeconfig"],
            "/etc/cni/net.d/serval-kubeconfig"
        );
        // The token rotates: only the kubeconfig is rewritten.
        std::fs::write(sa.join("token"), "tok-2\n").unwrap();
        assert_eq!(
            install(&a).unwrap(),
            Written {
                kubeconfig: true,
                ..Written::default()
            }
        );
    }

    #[test]
    fn bad_settings_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for extra in [
            &["--datastore=consul:x"][..],
            &["--ipv4-pools=Not_A_Pool"],
            &["--chain=flannel"],
            &["--assign-ipv4=false"],
            &["--cni-version=0.2.0"],
        ] {
            let a = args(dir.path(), extra);
            assert!(install(&a).is_err(), "{extra:?}");
            assert!(!dir.path().join("net.d").exists(), "{extra:?}");
            assert!(!dir.path().join("bin").exists(), "{extra:?}");
        }
        // Kubernetes without a service account.
        let a = args(
            dir.path(),
            &["--datastore=kubernetes", "--api-server=https://x"],
        );
        let e = install(&a).unwrap_err();
        assert!(format!("{e:#}").contains("token"), "{e:#}");
    }

    /// Polls `cond` until it holds or the deadline passes.
    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn watch_rewrites_what_changes_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let sa = dir.path().join("sa");
        std::fs::create_dir_all(&sa).unwrap();
        std::fs::write(sa.join("token"), "tok-1\n").unwrap();
        std::fs::write(sa.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        let a = args(
            dir.path(),
            &[
                "--datastore=kubernetes",
                "--api-server=https://10.96.0.1:443",
                "--watch",
                "--interval=20ms",
            ],
        );
        assert!(a.watch);
        assert_eq!(a.interval, Duration::from_millis(20));
        let conflist = dir.path().join("net.d/10-serval.conflist");
        let kubeconfig = dir.path().join("net.d").join(KUBECONFIG_NAME);
        let bin = dir.path().join("bin/serval");
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (a, stop) = (a.clone(), stop.clone());
            std::thread::spawn(move || watch(&a, &stop))
        };
        wait_for("the first pass", || {
            conflist.exists() && kubeconfig.exists()
        });
        let want = std::fs::read_to_string(&conflist).unwrap();
        // Someone overwrites the configuration, removes the binary, the token rotates:
        // each is put right by a later pass.
        std::fs::write(&conflist, "{}").unwrap();
        wait_for("the conflist to be restored", || {
            std::fs::read_to_string(&conflist).is_ok_and(|c| c == want)
        });
        std::fs::remove_file(&bin).unwrap();
        wait_for("the plugin to be reinstalled", || bin.exists());
        std::fs::write(sa.join("token"), "tok-2\n").unwrap();
        wait_for("the new token", || {
            std::fs::read_to_string(&kubeconfig).is_ok_and(|k| k.contains("tok-2"))
        });
        // A passing failure (the token is briefly missing) does not end the watch.
        std::fs::remove_file(sa.join("token")).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            !worker.is_finished(),
            "a later failure must not end --watch"
        );
        std::fs::write(sa.join("token"), "tok-3\n").unwrap();
        wait_for("the token after the failure", || {
            std::fs::read_to_string(&kubeconfig).is_ok_and(|k| k.contains("tok-3"))
        });
        stop.store(true, Ordering::Relaxed);
        wait_for("the watch to stop", || worker.is_finished());
        worker.join().unwrap().unwrap();
        // No temporary file is left behind by any pass.
        let leftovers: Vec<String> = std::fs::read_dir(dir.path().join("net.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn first_pass_failure_ends_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(
            dir.path(),
            &[
                "--datastore=kubernetes",
                "--api-server=https://x",
                "--watch",
            ],
        );
        let e = watch(&a, &AtomicBool::new(false)).unwrap_err();
        assert!(format!("{e:#}").contains("token"), "{e:#}");
    }

    #[test]
    fn readers_never_see_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.d/10-serval.conflist");
        // Large enough that a non-atomic write would be seen half-done.
        let versions: Vec<Vec<u8>> = (b'a'..=b'b').map(|c| vec![c; 1 << 20]).collect();
        write_if_changed(&path, &versions[0], 0o644).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, done, versions) = (path.clone(), done.clone(), versions.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) {
                    let got = std::fs::read(&path).expect("the file is always there");
                    assert!(
                        versions.contains(&got),
                        "a read saw {} bytes of a mix",
                        got.len()
                    );
                    reads += 1;
                }
                reads
            })
        };
        for i in 1..=40 {
            assert!(write_if_changed(&path, &versions[i % 2], 0o644).unwrap());
        }
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let conf_dir = dir.path().join("net.d");
        // The target is a directory: the final rename fails after the temporary exists.
        std::fs::create_dir_all(conf_dir.join("10-serval.conflist/x")).unwrap();
        let e = write_if_changed(&conf_dir.join("10-serval.conflist"), b"{}", 0o644).unwrap_err();
        assert!(format!("{e:#}").contains("renaming"), "{e:#}");
        let names: Vec<String> = std::fs::read_dir(&conf_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-serval.conflist"]);
        // Mode changes alone are written too.
        let f = conf_dir.join("other");
        assert!(write_if_changed(&f, b"x", 0o600).unwrap());
        assert!(!write_if_changed(&f, b"x", 0o600).unwrap());
        assert!(write_if_changed(&f, b"x", 0o644).unwrap());
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o644);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
