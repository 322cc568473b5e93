//! The container image as `scripts/image.sh` builds it from this build's binaries: the
//! OCI archive is an image layout whose index, manifest, config and layer all match
//! their digests and sizes; two builds give the same bytes; and the layer's root
//! filesystem is self-contained: `serval`, the CNI plugin and `nft` run from it under
//! `chroot` with only the image's own files and libraries, serval's NAT ruleset goes
//! through the image's `nft -j -f -` into a kernel (in a scratch network namespace), and
//! `serval install-cni` as the DaemonSet's init container runs it installs the plugin.
//!
//! The chart's default image and the Containerfile name the same image and version.
//!
//! Needs root (chroot, mounts, network namespaces) and tar, gzip, sha256sum, chroot,
//! unshare, mount, ip, nft and ldd; a missing one fails the test naming its package.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ipnet::IpNet;
use serde_json::Value;
use serval::node::dataplane::spec::NatPool;
use serval_integration::netns::{Netns, NsHandle};
use serval_integration::tools;

/// Any fixed time: builds must not depend on when they run.
const EPOCH: &str = "1700000000";
const EPOCH_RFC3339: &str = "2023-11-14T22:13:20Z";
const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const REPOSITORY: &str = "docker.io/serval/serval";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put `serval` for this test, and where `serval-cni` must be beside it.
fn bin_dir() -> PathBuf {
    let serval = PathBuf::from(env!("CARGO_BIN_EXE_serval"));
    let dir = serval.parent().expect("serval has a directory").to_owned();
    assert!(
        dir.join("serval-cni").is_file(),
        "no serval-cni beside {}: build the workspace's binaries first \
         (cargo build --workspace --bins)",
        serval.display()
    );
    dir
}

fn require(tools_needed: &[(&str, &str)]) {
    tools::require_root().unwrap_or_else(|e| panic!("{e}"));
    for (tool, package) in tools_needed {
        if tools::require(tool).is_err() {
            panic!("{tool} is missing: apt-get install {package}");
        }
    }
}

/// Runs `cmd`, fails the test with its output unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `scripts/image.sh` on this build's binaries, into `dir`, with its temporary files in
/// `tmp`; returns the archive.
fn build_image(dir: &Path, tmp: &Path) -> PathBuf {
    let archive = dir.join(format!("serval-{VERSION}.oci.tar"));
    let out = run(Command::new("sh")
        .arg(root().join("scripts/image.sh"))
        .arg("--profile=dev")
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--output")
        .arg(&archive)
        .args(["--revision", REVISION])
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("TMPDIR", tmp));
    assert_eq!(
        stdout(&out).trim(),
        archive.to_str().unwrap(),
        "image.sh prints the archive's path"
    );
    archive
}

fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    stdout(&out)
        .split_whitespace()
        .next()
        .expect("sha256sum prints a digest")
        .to_owned()
}

/// An unpacked OCI image layout.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn json(&self, path: &Path) -> Value {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The blob a descriptor points to, after checking its digest, size and media type.
    fn blob(&self, descriptor: &Value, media_type: &str) -> PathBuf {
        assert_eq!(descriptor["mediaType"], media_type, "{descriptor}");
        let digest = descriptor["digest"].as_str().expect("a digest");
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("{digest} is not a sha256 digest"));
        let path = self.dir.join("blobs/sha256").join(hex);
        let len = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("blob {digest}: {e}"))
            .len();
        assert_eq!(Some(len), descriptor["size"].as_u64(), "size of {digest}");
        assert_eq!(sha256(&path), hex, "content of {digest}");
        path
    }
}

/// The root filesystem of an unpacked image, run with `chroot` in a private mount
/// namespace that has /proc mounted (as a container runtime does) and nothing of the
/// host's files.
struct Rootfs {
    dir: PathBuf,
    /// The image config's environment (its PATH finds `serval` as the DaemonSet's
    /// commands name it).
    env: Vec<(String, String)>,
}

impl Rootfs {
    /// `argv` inside the image, in `netns` or the test's own network namespace, with
    /// `env` added to the image's environment and `stdin` on standard input.
    fn run(
        &self,
        netns: Option<&NsHandle>,
        env: &[(&str, &str)],
        argv: &[&str],
        stdin: &[u8],
    ) -> Output {
        // A runtime gives /dev/stdin (nft -f - opens it) and /proc (which /dev/stdin
        // points into, and where serval finds its own path); the mount namespace takes
        // the /proc mount away with it.
        const LAUNCH: &str = "set -e; mount -t proc proc \"$0/proc\"; exec chroot \"$0\" \"$@\"";
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = ns.command("unshare");
                c.args(["--mount", "--propagation", "private"]);
                c
            }
            None => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private"]);
                c
            }
        };
        cmd.args(["sh", "-c", LAUNCH])
            .arg(&self.dir)
            .args(argv)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(stdin)
            .unwrap_or_else(|e| panic!("writing to {argv:?}: {e}"));
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {argv:?}: {e}"));
        assert!(
            out.status.success(),
            "{argv:?} in the image failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

#[test]
fn image_is_a_reproducible_self_contained_oci_archive() {
    require(&[
        ("tar", "tar"),
        ("gzip", "gzip"),
        ("sha256sum", "coreutils"),
        ("chroot", "coreutils"),
        ("unshare", "util-linux"),
        ("mount", "mount"),
        ("ldd", "libc-bin"),
        ("nft", "nftables"),
        ("ip", "iproute2"),
    ]);
    let work = tempfile::tempdir().expect("a temporary directory");
    let (first, second) = (work.path().join("first"), work.path().join("second"));
    let (tmp1, tmp2) = (work.path().join("tmp1"), work.path().join("tmp2"));
    for d in [&first, &second, &tmp1, &tmp2] {
        std::fs::create_dir_all(d).unwrap();
    }

    // Two builds of the same binaries at once, with different scratch directories: same
    // bytes.
    let (archive, again) = std::thread::scope(|s| {
        let other = s.spawn(|| build_image(&second, &tmp2));
        let archive = build_image(&first, &tmp1);
        (archive, other.join().expect("the second build"))
    });
    assert_eq!(
        sha256(&archive),
        sha256(&again),
        "two builds of the same binaries differ: the archive is not reproducible"
    );
    // The script cleans up its scratch directories.
    for tmp in [&tmp1, &tmp2] {
        let left: Vec<_> = std::fs::read_dir(tmp).unwrap().collect();
        assert!(
            left.is_empty(),
            "image.sh left {left:?} in {}",
            tmp.display()
        );
    }
    std::fs::remove_dir_all(&second).unwrap();

    // The layout: oci-layout, index.json → manifest → config and layer.
    let layout = Layout {
        dir: work.path().join("layout"),
    };
    std::fs::create_dir_all(&layout.dir).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout.dir));
    assert_eq!(
        layout.json(&layout.dir.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let index = layout.json(&layout.dir.join("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().expect("index.manifests");
    assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
    let reference = format!("{REPOSITORY}:{VERSION}");
    let annotations = &manifests[0]["annotations"];
    assert_eq!(annotations["org.opencontainers.image.ref.name"], *reference);
    assert_eq!(annotations["io.containerd.image.name"], *reference);
    let manifest =
        layout.json(&layout.blob(&manifests[0], "application/vnd.oci.image.manifest.v1+json"));
    assert_eq!(manifest["schemaVersion"], 2);
    let config = layout.json(&layout.blob(
        &manifest["config"],
        "application/vnd.oci.image.config.v1+json",
    ));
    let layers = manifest["layers"].as_array().expect("manifest.layers");
    assert_eq!(layers.len(), 1, "{manifest}");
    let layer_gz = layout.blob(&layers[0], "application/vnd.oci.image.layer.v1.tar+gzip");

    // The config: platform, the command the DaemonSet overrides, labels, the layer's
    // uncompressed digest.
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["architecture"],
        manifests[0]["platform"]["architecture"]
    );
    assert_eq!(config["created"], EPOCH_RFC3339);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/serval"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["node", "run"]));
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert_eq!(labels["org.opencontainers.image.revision"], REVISION);
    assert_eq!(labels["org.opencontainers.image.created"], EPOCH_RFC3339);
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(labels["dev.serval.build-profile"], "dev");
    let layer_tar = work.path().join("layer.tar");
    let tar_file = std::fs::File::create(&layer_tar).unwrap();
    run(Command::new("gzip")
        .arg("-dc")
        .arg(&layer_gz)
        .stdout(tar_file));
    assert_eq!(
        config["rootfs"],
        serde_json::json!({"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&layer_tar))]})
    );

    // Every entry is root's and carries the fixed time.
    let listing = stdout(&run(Command::new("tar")
        .args([
            "--list",
            "--verbose",
            "--numeric-owner",
            "--full-time",
            "--file",
        ])
        .arg(&layer_tar)
        .env("TZ", "UTC")));
    for line in listing.lines() {
        assert!(
            line.contains(" 0/0 ") && line.contains("2023-11-14 22:13:20"),
            "layer entry not owned by 0/0 at SOURCE_DATE_EPOCH: {line}"
        );
    }

    // The root filesystem.
    let env: Vec<(String, String)> = config["config"]["Env"]
        .as_array()
        .expect("config.Env")
        .iter()
        .map(|kv| {
            let kv = kv.as_str().expect("Env entries are strings");
            let (k, v) = kv.split_once('=').expect("Env entries are KEY=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let image = Rootfs {
        dir: work.path().join("rootfs"),
        env,
    };
    std::fs::create_dir_all(&image.dir).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&layer_tar)
        .arg("-C")
        .arg(&image.dir));
    for f in [
        "usr/local/bin/serval",
        "usr/local/bin/serval-cni",
        "usr/sbin/nft",
    ] {
        assert!(image.dir.join(f).is_file(), "the image has no /{f}");
    }
    assert!(
        !image.dir.join("bin/sh").exists() && !image.dir.join("usr/bin").exists(),
        "the image holds programs serval does not run"
    );
    // What a runtime provides: mount points for /proc and /dev, /dev/stdin.
    std::fs::create_dir_all(image.dir.join("proc")).unwrap();
    std::fs::create_dir_all(image.dir.join("dev")).unwrap();
    std::os::unix::fs::symlink("/proc/self/fd/0", image.dir.join("dev/stdin")).unwrap();

    // serval, found on the image's PATH as the DaemonSet names it.
    let out = image.run(None, &[], &["serval", "--version"], b"");
    assert_eq!(stdout(&out).trim(), format!("serval {VERSION}"));

    // The CNI plugin answers VERSION (CNI spec: environment in, JSON out).
    let out = image.run(
        None,
        &[("CNI_COMMAND", "VERSION")],
        &["/usr/local/bin/serval-cni"],
        br#"{"cniVersion":"1.1.0"}"#,
    );
    let version: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("serval-cni VERSION printed no JSON ({e}): {}", stdout(&out)));
    assert_eq!(version, cni::spec::version_info());

    let out = image.run(None, &[], &["nft", "--version"], b"");
    assert!(stdout(&out).starts_with("nftables v"), "{}", stdout(&out));

    // serval's NAT ruleset, as the agent hands it to nft (`nft -j -f -`), applied by the
    // image's nft in a scratch network namespace and read back.
    let ns = Netns::new().unwrap_or_else(|e| panic!("{e}"));
    let pools = [
        NatPool {
            cidr: "10.244.0.0/16".parse::<IpNet>().unwrap(),
            nat_outgoing: true,
        },
        NatPool {
            cidr: "fd00:244::/48".parse::<IpNet>().unwrap(),
            nat_outgoing: true,
        },
    ];
    let guard = serval::node::dataplane::BgpGuard::new(
        179,
        [
            "192.0.2.1:179".parse().unwrap(),
            "[2001:db8::1]:179".parse().unwrap(),
        ],
    );
    let ruleset =
        serde_json::to_vec(&serval::node::dataplane::nat::ruleset(&pools, &guard).to_nftables())
            .expect("the ruleset serializes");
    image.run(Some(&ns.handle()), &[], &["nft", "-j", "-f", "-"], &ruleset);
    for family in ["ip", "ip6"] {
        let out = image.run(
            Some(&ns.handle()),
            &[],
            &["nft", "-j", "list", "table", family, "serval"],
            b"",
        );
        let text = stdout(&out);
        assert!(text.contains("masquerade"), "{family} serval: {text}");
        assert!(text.contains("bgp-peers"), "{family} serval: {text}");
    }
    drop(ns);

    // The init container's command: the plugin next to serval goes to the host's CNI
    // bin directory as `serval`, with the configuration beside it.
    image.run(
        None,
        &[
            ("SERVAL_DATASTORE", "file:/var/lib/serval/ipam.json"),
            ("KUBERNETES_NODE_NAME", "node-1"),
        ],
        &[
            "serval",
            "install-cni",
            "--bin-dir",
            "/host/opt/cni/bin",
            "--conf-dir",
            "/host/etc/cni/net.d",
        ],
        b"",
    );
    let installed = std::fs::read(image.dir.join("host/opt/cni/bin/serval")).unwrap();
    let plugin = std::fs::read(image.dir.join("usr/local/bin/serval-cni")).unwrap();
    assert!(
        installed == plugin,
        "install-cni did not install /usr/local/bin/serval-cni"
    );
    assert!(image
        .dir
        .join("host/etc/cni/net.d/10-serval.conflist")
        .is_file());
}

/// `image.repository` and the appVersion in the chart, the Containerfile's version and
/// command: all the image this workspace builds.
#[test]
fn chart_and_containerfile_name_this_image() {
    let read = |p: &str| {
        std::fs::read_to_string(root().join(p)).unwrap_or_else(|e| panic!("reading {p}: {e}"))
    };
    let chart: BTreeMap<String, serde_yaml::Value> =
        serde_yaml::from_str(&read("charts/serval/Chart.yaml")).expect("Chart.yaml");
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(VERSION),
        "the chart's appVersion is the workspace's version"
    );
    let values: serde_yaml::Value =
        serde_yaml::from_str(&read("charts/serval/values.yaml")).expect("values.yaml");
    let repository = values["image"]["repository"]
        .as_str()
        .expect("image.repository");
    assert_eq!(
        format!("docker.io/{repository}"),
        REPOSITORY,
        "the chart pulls the repository scripts/image.sh names"
    );
    assert_eq!(
        values["image"]["tag"].as_str(),
        Some(""),
        "the tag defaults to the appVersion"
    );

    let containerfile = read("Containerfile");
    let line = |keyword: &str| {
        containerfile
            .lines()
            .find_map(|l| l.strip_prefix(keyword))
            .unwrap_or_else(|| panic!("the Containerfile has no {keyword}line"))
            .trim()
            .to_owned()
    };
    assert_eq!(line("ARG VERSION="), VERSION);
    let exec_form = |keyword: &str| -> Value {
        serde_json::from_str(&line(keyword))
            .unwrap_or_else(|e| panic!("the Containerfile's {keyword}is not a JSON array: {e}"))
    };
    assert_eq!(
        exec_form("ENTRYPOINT "),
        serde_json::json!(["/usr/local/bin/serval"])
    );
    assert_eq!(exec_form("CMD "), serde_json::json!(["node", "run"]));
    assert!(
        containerfile.contains("scripts/image.sh --profile release --rootfs"),
        "the Containerfile assembles its root filesystem with scripts/image.sh"
    );
}
