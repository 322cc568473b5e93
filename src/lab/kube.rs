//! The lab on the `kubernetes` datastore: a real etcd and kube-apiserver in `svlab-kube`
//! (behind the ToR, reached by the nodes through their default route), serval's CRDs,
//! the Nodes as kubelets would register them, the pool and BGP resources applied with
//! kubectl the way an administrator does; the agents and the CNI plugin then keep their
//! state in the API server, where `kubectl get servalnodes,ippools,ipamblocks` shows it.
//!
//! The control plane is started by `serval_integration::kube::ApiServer`, the launcher
//! the Kubernetes tests use, rather than a second one here: the certificates, flags,
//! readiness check and kubeconfigs stay in one place. The lab detaches it so that it
//! outlives `serval lab up`; `serval lab down` ends it with the namespace and removes its
//! data with the lab's directory.
//!
//! The agents speak as the cluster admin (the kubeconfig the lab prints): the chart's
//! least-privilege RBAC is a Helm template, and `tests/kube_agent.rs` runs the agents
//! under it.

use super::pods::{Pod, StoreAccess};
use super::topology::{LabNode, KUBE, KUBE_ADDR};
use super::POOL_NAME;
use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serval_integration::kube::{ApiServer, Binaries};
use serval_integration::NsHandle;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The agents' namespace: their Lease (and password Secrets) live there, as with the
/// chart installed in kube-system.
pub const NAMESPACE: &str = "kube-system";

/// What the lab shows with kubectl: what the agents wrote.
pub const SHOWN: &str = "servalnodes,ippools,ipamblocks";

/// The running control plane, as `up` leaves it for `status` and `down`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControlPlane {
    /// `https://10.10.100.10:6443`.
    pub url: String,
    /// kube-apiserver's `gitVersion`.
    pub version: String,
    /// A cluster admin's kubeconfig.
    pub kubeconfig: PathBuf,
    /// The kubectl of the same release.
    pub kubectl: PathBuf,
    /// Certificates, logs and etcd's data.
    pub dir: PathBuf,
}

/// The built control plane, or an error naming the command that builds it.
pub fn binaries() -> anyhow::Result<Binaries> {
    Binaries::find().map_err(|e| {
        anyhow!(
            "the lab on the kubernetes datastore runs kube-apiserver, etcd and kubectl, which \
             are not built: run `sh integration/k8s/build.sh` (scripts/setup.sh does), or set \
             SERVAL_K8S_DIR to a directory holding them\n({e})"
        )
    })
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver in `svlab-kube` (which must exist) with their files
    /// under `lab_dir/kube`, and leaves them running.
    pub fn start(lab_dir: &Path) -> anyhow::Result<ControlPlane> {
        let mut api = ApiServer::start_in(&NsHandle::named(KUBE), IpAddr::V4(KUBE_ADDR), lab_dir)
            .context("starting etcd and kube-apiserver")?;
        api.detach();
        Ok(ControlPlane {
            url: api.url().to_owned(),
            version: api.version().context("asking kube-apiserver its version")?,
            kubeconfig: api.admin_kubeconfig().to_owned(),
            kubectl: api.kubectl_path().to_owned(),
            dir: api.dir().to_owned(),
        })
    }

    /// How the agents and the CNI plugin reach it.
    pub fn store_access(&self) -> StoreAccess {
        StoreAccess {
            datastore: "kubernetes".into(),
            kubeconfig: Some(self.kubeconfig.clone()),
        }
    }

    /// kubectl with `args` against the lab's API server, as a command line: run inside the
    /// control plane's namespace (where its address is reachable), as the cluster admin,
    /// with kubectl's discovery cache in the lab's directory rather than in ~/.kube, so
    /// that `serval lab down` leaves nothing behind.
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv: Vec<String> = ["ip", "netns", "exec", KUBE].map(String::from).to_vec();
        argv.push(self.kubectl.display().to_string());
        argv.push("--kubeconfig".into());
        argv.push(self.kubeconfig.display().to_string());
        argv.push("--cache-dir".into());
        argv.push(self.dir.join("kubectl-cache").display().to_string());
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// kubectl as the cluster admin, with `input` on stdin; returns stdout.
    pub fn kubectl(&self, args: &[&str], input: Option<&str>) -> anyhow::Result<String> {
        let argv = self.argv(args);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running kubectl {}", args.join(" ")))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// serval's CRDs, generated from the types this binary was built with, applied and
    /// Established.
    pub fn install_crds(&self) -> anyhow::Result<()> {
        let files = serval::crds::files().map_err(|e| anyhow!("generating the CRDs: {e}"))?;
        let yaml: String = files.iter().map(|f| f.text.as_str()).collect();
        self.kubectl(
            &[
                "apply",
                "--server-side",
                "--field-manager=serval-lab",
                "-f",
                "-",
            ],
            Some(&yaml),
        )?;
        self.kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd",
                "--all",
            ],
            None,
        )
        .map(drop)
    }

    /// The Nodes, as each node's kubelet registers them: a hostname label and the node's
    /// address as its InternalIP (from which the agent takes its BGP address).
    pub fn register_nodes(&self, nodes: &[LabNode]) -> anyhow::Result<()> {
        self.kubectl(&["apply", "-f", "-"], Some(&nodes_yaml(nodes)))?;
        for n in nodes {
            let status = serde_json::json!({"status": {"addresses": [
                {"type": "InternalIP", "address": n.address.to_string()},
                {"type": "Hostname", "address": n.name},
            ]}});
            self.kubectl(
                &[
                    "patch",
                    "node",
                    &n.name,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &status.to_string(),
                ],
                None,
            )?;
        }
        Ok(())
    }

    /// Applies YAML documents as the administrator.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        self.kubectl(&["apply", "-f", "-"], Some(yaml)).map(drop)
    }

    /// `kubectl get servalnodes,ippools,ipamblocks -o json`.
    pub fn shown_objects(&self) -> anyhow::Result<Value> {
        let out = self.kubectl(&["get", SHOWN, "-o", "json"], None)?;
        serde_json::from_str(&out).context("kubectl get -o json")
    }
}

/// The lab's Nodes as YAML.
pub fn nodes_yaml(nodes: &[LabNode]) -> String {
    nodes
        .iter()
        .map(|n| {
            format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    \
                 kubernetes.io/hostname: {name}\n",
                name = n.name,
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// One line per object of a `kubectl get … -o json` list, for the report.
pub fn describe(list: &Value) -> Vec<String> {
    items(list)
        .map(|o| {
            let name = o["metadata"]["name"].as_str().unwrap_or("?");
            let spec = &o["spec"];
            match o["kind"].as_str().unwrap_or("?") {
                "ServalNode" => format!(
                    "ServalNode {name:<10} address {}, VXLAN tunnel {}",
                    spec["bgp"]["ipv4Address"].as_str().unwrap_or("-"),
                    spec["ipv4VXLANTunnelAddr"].as_str().unwrap_or("-"),
                ),
                "IPPool" => format!(
                    "IPPool     {name:<10} {} blocks of /{}, ipipMode {}, vxlanMode {}, natOutgoing {}",
                    spec["cidr"].as_str().unwrap_or("?"),
                    spec["blockSize"],
                    spec["ipipMode"].as_str().unwrap_or("Never"),
                    spec["vxlanMode"].as_str().unwrap_or("Never"),
                    spec["natOutgoing"].as_bool().unwrap_or(false),
                ),
                "IPAMBlock" => format!(
                    "IPAMBlock  {:<18} {}, {} address(es) in use",
                    spec["cidr"].as_str().unwrap_or("?"),
                    spec["affinity"]
                        .as_str()
                        .map_or("no affinity".to_string(), |n| format!("affine to {n}")),
                    in_use(spec),
                ),
                other => format!("{other} {name}"),
            }
        })
        .collect()
}

fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list["items"].as_array().into_iter().flatten()
}

fn in_use(block_spec: &Value) -> usize {
    block_spec["allocations"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|x| !x.is_null()).count())
}

/// What the API server should hold once the lab is up, and does not: a ServalNode per
/// node, the lab's pool, and for each pod a block affine to its node that holds it.
pub fn missing(list: &Value, nodes: &[LabNode], pods: &[Pod]) -> Vec<String> {
    let of_kind = |kind: &'static str| items(list).filter(move |o| o["kind"] == kind);
    let mut out = Vec::new();
    let registered: BTreeSet<&str> = of_kind("ServalNode")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    for n in nodes {
        if !registered.contains(n.name.as_str()) {
            out.push(format!("no ServalNode {}", n.name));
        }
    }
    if !of_kind("IPPool").any(|o| o["metadata"]["name"] == POOL_NAME) {
        out.push(format!("no IPPool {POOL_NAME}"));
    }
    for pod in pods {
        let held = of_kind("IPAMBlock").any(|b| {
            let spec = &b["spec"];
            let affine = spec["affinity"] == pod.node.as_str();
            let contains = spec["cidr"]
                .as_str()
                .and_then(|c| c.parse::<ipnet::IpNet>().ok())
                .is_some_and(|c| c.contains(&pod.ip));
            let named = spec["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["pod"] == pod.name.as_str());
            affine && contains && named && in_use(spec) > 0
        });
        if !held {
            out.push(format!(
                "no IPAMBlock affine to {} holding {} ({})",
                pod.node, pod.name, pod.ip
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, ip: &str) -> Pod {
        Pod {
            name: name.into(),
            node: node.into(),
            netns: format!("svlab-{name}"),
            ip: ip.parse().unwrap(),
            container_id: "c".into(),
        }
    }

    fn block(cidr: &str, node: &str, pod: &str) -> Value {
        json!({"kind": "IPAMBlock", "metadata": {"name": cidr.replace(['.', '/'], "-")},
               "spec": {"cidr": cidr, "affinity": node,
                        "allocations": [0, null], "unallocated": [1],
                        "attributes": [{"handleId": "h", "pod": pod, "node": node}]}})
    }

    #[test]
    fn missing_names_what_the_agents_did_not_write() {
        let nodes = super::super::topology::plan(2, 1).unwrap();
        let pods = [
            pod("node1-pod1", "node1", "10.244.0.1"),
            pod("node2-pod1", "node2", "10.244.0.65"),
        ];
        let full = json!({"items": [
            {"kind": "ServalNode", "metadata": {"name": "node1"}, "spec": {}},
            {"kind": "ServalNode", "metadata": {"name": "node2"}, "spec": {}},
            {"kind": "IPPool", "metadata": {"name": POOL_NAME}, "spec": {"cidr": "10.244.0.0/16"}},
            block("10.244.0.0/26", "node1", "node1-pod1"),
            block("10.244.0.64/26", "node2", "node2-pod1"),
        ]});
        assert_eq!(missing(&full, &nodes, &pods), Vec::<String>::new());
        assert_eq!(describe(&full).len(), 5);

        // node2's pod in a block affine to node1, node2 not registered, no pool.
        let wrong = json!({"items": [
            {"kind": "ServalNode", "metadata": {"name": "node1"}, "spec": {}},
            block("10.244.0.0/26", "node1", "node1-pod1"),
            block("10.244.0.64/26", "node1", "node2-pod1"),
        ]});
        assert_eq!(
            missing(&wrong, &nodes, &pods),
            vec![
                "no ServalNode node2".to_string(),
                format!("no IPPool {POOL_NAME}"),
                "no IPAMBlock affine to node2 holding node2-pod1 (10.244.0.65)".to_string(),
            ]
        );
    }

    #[test]
    fn nodes_yaml_has_one_document_per_node() {
        let nodes = super::super::topology::plan(3, 2).unwrap();
        let y = nodes_yaml(&nodes);
        assert_eq!(y.matches("kind: Node\n").count(), 3);
        assert!(y.contains("name: node3\n"), "{y}");
    }
}
