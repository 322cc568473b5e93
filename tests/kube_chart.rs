//! The Helm chart on a real kube-apiserver, with the real helm: installed with the default
//! values and with `ci/etcd-values.yaml`, upgraded, uninstalled without leaving anything
//! but what Helm and the chart keep on purpose (the CRDs; the default IPPool and
//! BGPConfiguration, annotated `helm.sh/resource-policy: keep`). No node runs a kubelet,
//! so no pod starts: the objects are what is tested.
//!
//! Then what the agents' ServiceAccount may do, asked with `kubectl auth can-i --as`: every
//! call the agent and the CNI plugin make (they share the ServiceAccount's token) is
//! allowed, and what they do not do is denied; and a token the server issues for the
//! ServiceAccount makes one allowed and some denied calls for real.

mod kube_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use serval_integration::kube::ApiServer;
use serval_integration::{scenario, Error, Result};

use kube_support::{helm_run, rejection, root};

const NS: &str = "serval-system";
const RELEASE: &str = "serval";
/// The chart's full name for release `serval`, hence its ServiceAccount's name.
const SA: &str = "serval";
const INSTANCE_LABEL: &str = "app.kubernetes.io/instance=serval";

fn chart() -> String {
    root().join("charts/serval").display().to_string()
}

fn etcd_values() -> String {
    root()
        .join("charts/serval/ci/etcd-values.yaml")
        .display()
        .to_string()
}

/// One object helm rendered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rendered {
    /// `daemonset.apps`, `serviceaccount`, `ippool.serval.dev`: what kubectl takes.
    resource: String,
    namespace: Option<String>,
    name: String,
    kept: bool,
}

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.resource, self.name),
            None => write!(f, "{} {}", self.resource, self.name),
        }
    }
}

/// The objects of the release's manifest (`helm get manifest`).
fn release_objects(api: &ApiServer) -> Result<Vec<Rendered>> {
    let text = helm_run(api, &["get", "manifest", RELEASE, "-n", NS])?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| Error::Check(format!("helm get manifest: {e}")))?;
        if v.is_null() {
            continue;
        }
        let kind = v["kind"].as_str().unwrap_or_default().to_ascii_lowercase();
        let api_version = v["apiVersion"].as_str().unwrap_or_default();
        let resource = match api_version.split_once('/') {
            Some((group, _)) => format!("{kind}.{group}"),
            None => kind,
        };
        out.push(Rendered {
            resource,
            namespace: v["metadata"]["namespace"].as_str().map(str::to_owned),
            name: v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            kept: v["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep",
        });
    }
    out.sort();
    Ok(out)
}

impl Rendered {
    /// As `kubectl get -o name` prints it.
    fn reference(&self) -> String {
        format!("{}/{}", self.resource, self.name)
    }
}

/// Which of `objects` exist (one kubectl for all; each is in `NS` or cluster-scoped).
fn existing(api: &ApiServer, objects: &[Rendered]) -> Result<BTreeSet<String>> {
    let refs: Vec<String> = objects.iter().map(Rendered::reference).collect();
    let mut args = vec!["get", "-n", NS, "--ignore-not-found", "-o", "name"];
    args.extend(refs.iter().map(String::as_str));
    Ok(api.kubectl(&args)?.lines().map(str::to_owned).collect())
}

/// Fails naming every object of `objects` that does not exist.
fn all_exist(api: &ApiServer, objects: &[Rendered]) -> Result<()> {
    let there = existing(api, objects)?;
    let missing: Vec<String> = objects
        .iter()
        .filter(|o| !there.contains(&o.reference()))
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Check(format!("not created: {missing:?}")))
    }
}

/// Every object of every listable kind, in all namespaces and cluster-wide, that
/// `selector` selects: `resource namespace/name`.
fn labelled_anywhere(api: &ApiServer, selector: &str) -> Result<BTreeSet<String>> {
    let kinds = api.kubectl(&["api-resources", "--verbs=list", "-o", "name"])?;
    // Events are the API server's own notes, not objects anyone installed.
    let kinds: Vec<&str> = kinds
        .lines()
        .filter(|k| !k.is_empty() && !k.starts_with("events"))
        .collect();
    let out = api.kubectl(&[
        "get",
        &kinds.join(","),
        "-A",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.kind} {.metadata.namespace}/{.metadata.name}{\"\\n\"}{end}",
    ])?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// Every object in namespace `ns`, of every listable namespaced kind but events.
fn everything_in(api: &ApiServer, ns: &str) -> Result<Vec<String>> {
    let kinds = api.kubectl(&[
        "api-resources",
        "--verbs=list",
        "--namespaced",
        "-o",
        "name",
    ])?;
    let kinds: Vec<&str> = kinds
        .lines()
        .filter(|k| !k.is_empty() && !k.starts_with("events"))
        .collect();
    let out = api.kubectl(&["get", &kinds.join(","), "-n", ns, "-o", "name"])?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// One question to `kubectl auth can-i`.
struct Can {
    verb: &'static str,
    /// `pods`, `leases.coordination.k8s.io/serval-node-gc`.
    resource: &'static str,
    subresource: Option<&'static str>,
    /// None: cluster-wide (all namespaces for a namespaced kind).
    namespace: Option<&'static str>,
    allowed: bool,
    /// Where the agent makes the call, or why it must not.
    why: &'static str,
}

fn can(verb: &'static str, resource: &'static str, allowed: bool, why: &'static str) -> Can {
    Can {
        verb,
        resource,
        subresource: None,
        namespace: None,
        allowed,
        why,
    }
}

fn can_in(
    ns: &'static str,
    verb: &'static str,
    resource: &'static str,
    allowed: bool,
    why: &'static str,
) -> Can {
    Can {
        namespace: Some(ns),
        ..can(verb, resource, allowed, why)
    }
}

/// What the agent does on the kubernetes datastore (from `src/node/kube/`, the IPAM's
/// `ipam/src/store/kube.rs`, the CNI plugin's `cni/src/kube.rs` through the kubeconfig
/// `src/cmd/install_cni.rs` writes), and what it must not be able to do.
fn agent_table() -> Vec<Can> {
    const CONFIG: [&str; 8] = [
        "bgpconfigurations.serval.dev",
        "bgppeers.serval.dev",
        "bgpfilters.serval.dev",
        "bfdprofiles.serval.dev",
        "ippools.serval.dev",
        "ipamconfigs.serval.dev",
        "ipreservations.serval.dev",
        "servalnodestatuses.serval.dev",
    ];
    const OWNED: [&str; 4] = [
        "ipamblocks.serval.dev",
        "blockaffinities.serval.dev",
        "ipamhandles.serval.dev",
        "servalnodes.serval.dev",
    ];
    let mut t = Vec::new();
    for r in CONFIG.into_iter().chain(OWNED) {
        for verb in ["get", "list", "watch"] {
            t.push(can(
                verb,
                r,
                true,
                "the store reads and watches every serval kind",
            ));
        }
    }
    for r in OWNED {
        for verb in ["create", "update", "delete"] {
            t.push(can(
                verb,
                r,
                true,
                "IPAM and registration writes: POST, PUT with resourceVersion, DELETE",
            ));
        }
        t.push(can("patch", r, false, "the store never patches"));
        t.push(can(
            "deletecollection",
            r,
            false,
            "the store deletes one object at a time",
        ));
    }
    for r in CONFIG {
        for verb in ["create", "update", "patch", "delete"] {
            t.push(can(verb, r, false, "configuration is written by people"));
        }
    }
    t.push(Can {
        subresource: Some("status"),
        ..can(
            "patch",
            "servalnodestatuses.serval.dev",
            true,
            "status_report::write: server-side apply of the status",
        )
    });
    t.push(Can {
        subresource: Some("status"),
        ..can(
            "update",
            "servalnodestatuses.serval.dev",
            false,
            "only server-side apply",
        )
    });
    t.extend([
        can(
            "get",
            "nodes",
            true,
            "read_node; the CNI plugin's node labels",
        ),
        can("list", "nodes", true, "the node collector's watch"),
        can("watch", "nodes", true, "the node collector's watch"),
        can("create", "nodes", false, "the kubelet registers nodes"),
        can(
            "list",
            "services",
            true,
            "the Service watch (node/kube/services.rs)",
        ),
        can("watch", "services", true, "the Service watch"),
        can("create", "services", false, "Services are the users'"),
        can("delete", "services", false, "Services are the users'"),
        Can {
            subresource: Some("status"),
            ..can(
                "patch",
                "services",
                true,
                "the LoadBalancer allocator writes status.loadBalancer.ingress (node/kube/lb.rs)",
            )
        },
        Can {
            subresource: Some("status"),
            ..can(
                "update",
                "services",
                false,
                "only a merge patch of the status",
            )
        },
        can("patch", "services", false, "a Service's spec is the user's"),
        can(
            "list",
            "endpointslices.discovery.k8s.io",
            true,
            "the EndpointSlice watch: where the ready endpoints are",
        ),
        can(
            "watch",
            "endpointslices.discovery.k8s.io",
            true,
            "the EndpointSlice watch",
        ),
        can(
            "update",
            "endpointslices.discovery.k8s.io",
            false,
            "EndpointSlices are the controller's",
        ),
        can("update", "nodes", false, "nodes are the kubelet's"),
        can("patch", "nodes", false, "nodes are the kubelet's"),
        can("delete", "nodes", false, "nodes are the kubelet's"),
        Can {
            subresource: Some("status"),
            ..can("patch", "nodes", false, "node status is the kubelet's")
        },
        can_in(
            "default",
            "get",
            "pods",
            true,
            "the CNI plugin reads the pod's annotations",
        ),
        can("get", "pods", true, "pods of every namespace are wired"),
        can("list", "pods", false, "only the pod being wired, by name"),
        can("watch", "pods", false, "only the pod being wired, by name"),
        can_in(
            "default",
            "create",
            "pods",
            false,
            "the agent starts no pods",
        ),
        can_in(
            "default",
            "delete",
            "pods",
            false,
            "the agent stops no pods",
        ),
        Can {
            subresource: Some("exec"),
            ..can_in("default", "create", "pods", false, "no exec into pods")
        },
        can(
            "get",
            "namespaces",
            true,
            "the CNI plugin reads the namespace's annotations",
        ),
        can(
            "list",
            "namespaces",
            false,
            "only the pod's namespace, by name",
        ),
        can("create", "namespaces", false, "not the agent's"),
        can("delete", "namespaces", false, "not the agent's"),
        can_in(
            NS,
            "create",
            "leases.coordination.k8s.io",
            true,
            "the node collector's election creates its Lease",
        ),
        can_in(
            NS,
            "get",
            "leases.coordination.k8s.io/serval-node-gc",
            true,
            "read_lease",
        ),
        can_in(
            NS,
            "update",
            "leases.coordination.k8s.io/serval-node-gc",
            true,
            "write_lease replaces it",
        ),
        can_in(
            NS,
            "patch",
            "leases.coordination.k8s.io/serval-node-gc",
            false,
            "write_lease never patches",
        ),
        can_in(
            NS,
            "delete",
            "leases.coordination.k8s.io/serval-node-gc",
            false,
            "the Lease expires, it is not deleted",
        ),
        can_in(
            NS,
            "get",
            "leases.coordination.k8s.io/kube-scheduler",
            false,
            "only its own Lease",
        ),
        can_in(
            NS,
            "list",
            "leases.coordination.k8s.io",
            false,
            "only its own Lease, by name",
        ),
        can_in(
            "kube-system",
            "create",
            "leases.coordination.k8s.io",
            false,
            "only in its namespace",
        ),
        can_in(
            NS,
            "get",
            "secrets/bgp-passwords",
            true,
            "SecretCache reads bgpPasswordSecrets by name",
        ),
        can_in(
            NS,
            "get",
            "secrets/serval-etcd-tls",
            false,
            "only the Secrets the values name",
        ),
        can_in(
            NS,
            "list",
            "secrets",
            false,
            "Secrets are read by name only",
        ),
        can_in(
            NS,
            "watch",
            "secrets",
            false,
            "Secrets are read by name only",
        ),
        can("list", "secrets", false, "never Secrets cluster-wide"),
        can_in(
            "kube-system",
            "get",
            "secrets/bgp-passwords",
            false,
            "only in its own namespace",
        ),
        can_in(NS, "create", "secrets", false, "not the agent's"),
        can_in(
            NS,
            "get",
            "configmaps",
            false,
            "its configuration is a mounted file",
        ),
        can_in(NS, "patch", "daemonsets.apps", false, "not the agent's"),
        can(
            "patch",
            "clusterroles.rbac.authorization.k8s.io",
            false,
            "no privilege escalation",
        ),
        can(
            "create",
            "clusterrolebindings.rbac.authorization.k8s.io",
            false,
            "no privilege escalation",
        ),
        can_in(
            NS,
            "create",
            "rolebindings.rbac.authorization.k8s.io",
            false,
            "no privilege escalation",
        ),
        can(
            "escalate",
            "clusterroles.rbac.authorization.k8s.io",
            false,
            "no privilege escalation",
        ),
        can("impersonate", "users", false, "no impersonation"),
        Can {
            subresource: Some("token"),
            ..can_in(
                NS,
                "create",
                "serviceaccounts/serval",
                false,
                "tokens come from the kubelet",
            )
        },
        can(
            "create",
            "customresourcedefinitions.apiextensions.k8s.io",
            false,
            "CRDs come with the chart",
        ),
        can(
            "delete",
            "customresourcedefinitions.apiextensions.k8s.io",
            false,
            "CRDs come with the chart",
        ),
    ]);
    t
}

/// `kubectl auth can-i` for `user`; the answer.
fn can_i(api: &ApiServer, user: &str, c: &Can) -> Result<bool> {
    let mut args = vec!["auth", "can-i", c.verb, c.resource];
    let sub;
    if let Some(s) = c.subresource {
        sub = format!("--subresource={s}");
        args.push(&sub);
    }
    match c.namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("-A"),
    }
    let as_user = format!("--as={user}");
    args.push(&as_user);
    match api.kubectl(&args) {
        Ok(out) if out.trim() == "yes" => Ok(true),
        Err(Error::Command { stdout, .. }) if stdout.trim() == "no" => Ok(false),
        Ok(out) => Err(Error::Check(format!("kubectl auth can-i {args:?}: {out}"))),
        Err(e) => Err(e),
    }
}

/// Asks every question of `table` (a few kubectl at a time); returns the rows that
/// came out wrong, and the table as printed.
fn ask(
    api: &ApiServer,
    user: &str,
    table: &[Can],
    expect: impl Fn(&Can) -> bool + Sync,
) -> Result<(Vec<String>, String)> {
    let answers: Vec<Result<bool>> = std::thread::scope(|s| {
        let chunks: Vec<_> = table
            .chunks(table.len().div_ceil(4))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|c| can_i(api, user, c))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks
            .into_iter()
            .flat_map(|h| h.join().expect("a can-i thread panicked"))
            .collect()
    });
    let mut wrong = Vec::new();
    let mut printed = String::new();
    for (c, answer) in table.iter().zip(answers) {
        let got = answer?;
        let want = expect(c);
        let sub = c
            .subresource
            .map(|s| format!(" --subresource={s}"))
            .unwrap_or_default();
        let ns = c.namespace.map_or("-A".to_owned(), |n| format!("-n {n}"));
        let row = format!(
            "{:<4} {} {}{sub} {ns}  ({})",
            if got { "yes" } else { "no" },
            c.verb,
            c.resource,
            c.why
        );
        if got != want {
            wrong.push(format!("want {}: {row}", if want { "yes" } else { "no" }));
        }
        printed.push_str(&row);
        printed.push('\n');
    }
    Ok((wrong, printed))
}

/// Installs (or upgrades) the release; the waiting strategy `hookOnly` is Helm 4's
/// "do not wait for the pods" (no kubelet runs them here).
fn helm_install(api: &ApiServer, verb: &str, extra: &[&str]) -> Result<String> {
    let chart = chart();
    let mut args = vec![
        verb,
        RELEASE,
        chart.as_str(),
        "-n",
        NS,
        "--wait=hookOnly",
        "--timeout=2m",
    ];
    args.extend_from_slice(extra);
    helm_run(api, &args)
}

/// The release's revision and status (`helm status`).
fn release_status(api: &ApiServer) -> Result<(u64, String)> {
    let out = helm_run(api, &["status", RELEASE, "-n", NS, "-o", "json"])?;
    let v: Value =
        serde_json::from_str(&out).map_err(|e| Error::Check(format!("helm status: {e}: {out}")))?;
    Ok((
        v["version"].as_u64().unwrap_or_default(),
        v["info"]["status"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Uninstalls the release and checks what is left: nothing of the manifest but the
/// objects annotated to be kept, nothing labelled with the release anywhere else, no
/// Helm release record, every CRD. Returns the kept objects.
fn uninstall_and_check(api: &ApiServer, rendered: &[Rendered]) -> Result<Vec<Rendered>> {
    helm_run(api, &["uninstall", RELEASE, "-n", NS, "--wait"])?;
    let mut left = Vec::new();
    let there = existing(api, rendered)?;
    for o in rendered {
        if there.contains(&o.reference()) != o.kept {
            return Err(Error::Check(format!(
                "after helm uninstall, {o} {}",
                if o.kept {
                    "is gone, though annotated keep"
                } else {
                    "is still there"
                }
            )));
        }
        if o.kept {
            left.push(o.clone());
        }
    }
    let labelled = labelled_anywhere(api, INSTANCE_LABEL)?;
    let kept: BTreeSet<String> = left
        .iter()
        .map(|o| o.resource.split('.').next().unwrap_or_default().to_owned() + " /" + &o.name)
        .collect();
    let labelled_kinds: BTreeSet<String> =
        labelled.iter().map(|l| l.to_ascii_lowercase()).collect();
    if labelled_kinds != kept {
        return Err(Error::Check(format!(
            "after helm uninstall, labelled {INSTANCE_LABEL}: {labelled:?}; only the kept {kept:?} may be"
        )));
    }
    let in_ns = everything_in(api, NS)?;
    if !in_ns.is_empty() {
        return Err(Error::Check(format!(
            "after helm uninstall, {NS} still holds {in_ns:?}"
        )));
    }
    // Helm keeps the CRDs of a chart's crds/ directory on purpose (deleting one deletes
    // every object of its kind).
    let crds = api.kubectl(&["get", "crd", "-o", "name"])?;
    for crd in kube_support::crd_names() {
        if !crds.contains(&format!("/{crd}\n")) {
            return Err(Error::Check(format!(
                "after helm uninstall, CRD {crd} is gone: {crds}"
            )));
        }
    }
    Ok(left)
}

/// Deletes what an uninstall left on purpose, then the CRDs.
fn delete_kept(api: &ApiServer, kept: &[Rendered]) -> Result<()> {
    for o in kept {
        api.kubectl(&["delete", &o.resource, &o.name, "--wait=true"])?;
    }
    let crds: Vec<String> = kube_support::crd_names()
        .into_iter()
        .map(|n| format!("crd/{n}"))
        .collect();
    let mut args = vec!["delete", "--wait=true"];
    args.extend(crds.iter().map(String::as_str));
    api.kubectl(&args)?;
    let left = api.kubectl(&["get", "crd", "-o", "name"])?;
    if left.contains("serval.dev") {
        return Err(Error::Check(format!(
            "serval CRDs left after deleting them: {left}"
        )));
    }
    Ok(())
}

/// A stand-in for prometheus-operator's ServiceMonitor CRD (the etcd values enable
/// one), accepting any spec.
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// Node `name`'s ServalNode as its agent registers it.
fn serval_node(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "serval.dev/v1", "kind": "ServalNode", "metadata": {"name": name},
        "spec": {"bgp": {"ipv4Address": "192.0.2.10/24"}},
    })
    .to_string()
}

/// Who an address of a block was given to, as the IPAM writes it.
fn owner(node: &str, handle: &str) -> Value {
    serde_json::json!({"handleId": handle, "node": node, "namespace": "default", "pod": handle})
}

/// What the chart's admission policy lets each agent write, on the real server: its own
/// ServalNode, status and block affinities; in any block only its own addresses; a free
/// block claimed, its own released; the collector Lease only as itself, and with it
/// another node's ServalNode removed. Every refusal names the policy and the node.
fn node_writes(api: &ApiServer) -> Result<()> {
    let life = Duration::from_secs(600);
    let w1 = api.node_agent_kubeconfig(NS, SA, "worker-1", life)?;
    let w2 = api.node_agent_kubeconfig(NS, SA, "worker-2", life)?;
    let unbound = api.service_account_kubeconfig(NS, SA, life)?;
    let as_ =
        |kc: &std::path::Path, args: &[&str], input: Option<&str>| api.kubectl_as(kc, args, input);
    let refused = |what: &str, node: &str, r: Result<String>| {
        let said = rejection(what, r);
        assert!(
            said.contains("ValidatingAdmissionPolicy 'serval-node-writes'")
                && said.contains(&format!("node {node} ")),
            "{what}: {said}"
        );
        eprintln!("refused as it must be: {what}");
    };
    let create = ["create", "-f", "-"];
    let replace = ["replace", "-f", "-"];

    // ServalNodes.
    as_(&w1, &create, Some(&serval_node("worker-1")))?;
    as_(&w2, &create, Some(&serval_node("worker-2")))?;
    refused(
        "worker-1 registering worker-3's ServalNode",
        "worker-1",
        as_(&w1, &create, Some(&serval_node("worker-3"))),
    );
    let theirs = api.kubectl(&["get", "servalnodes.serval.dev", "worker-2", "-o", "json"])?;
    refused(
        "worker-1 rewriting worker-2's ServalNode",
        "worker-1",
        as_(&w1, &replace, Some(&theirs)),
    );
    refused(
        "worker-1 deleting worker-2's ServalNode",
        "worker-1",
        as_(&w1, &["delete", "servalnodes.serval.dev", "worker-2"], None),
    );
    let said = rejection(
        "a token bound to no pod registering a ServalNode",
        as_(&unbound, &create, Some(&serval_node("worker-3"))),
    );
    assert!(said.contains("bound to a pod on a node"), "{said}");

    // Block affinities.
    let affinity = |node: &str| {
        serde_json::json!({
            "apiVersion": "serval.dev/v1", "kind": "BlockAffinity",
            "metadata": {"name": format!("10-66-0-0-30.{node}")},
            "spec": {"node": node, "cidr": "10.66.0.0/30", "state": "confirmed"},
        })
        .to_string()
    };
    refused(
        "worker-2 claiming a block affinity for worker-1",
        "worker-2",
        as_(&w2, &create, Some(&affinity("worker-1"))),
    );
    as_(&w1, &create, Some(&affinity("worker-1")))?;

    // A block: worker-1's, worker-2 borrows an address from it.
    let get_block = || -> Result<Value> {
        let out = api.kubectl(&["get", "ipamblocks.serval.dev", "10-66-0-0-30", "-o", "json"])?;
        serde_json::from_str(&out).map_err(|e| Error::Check(format!("block: {e}: {out}")))
    };
    let block = serde_json::json!({
        "apiVersion": "serval.dev/v1", "kind": "IPAMBlock", "metadata": {"name": "10-66-0-0-30"},
        "spec": {"cidr": "10.66.0.0/30", "affinity": "worker-1", "allocations": [0, null, null, null],
                 "unallocated": [1, 2, 3], "attributes": [owner("worker-1", "h1")]},
    });
    refused(
        "worker-2 creating a block holding worker-1's address",
        "worker-2",
        as_(&w2, &create, Some(&block.to_string())),
    );
    as_(&w1, &create, Some(&block.to_string()))?;
    let mut b = get_block()?;
    b["spec"]["allocations"][1] = 1.into();
    b["spec"]["unallocated"] = serde_json::json!([2, 3]);
    b["spec"]["attributes"]
        .as_array_mut()
        .ok_or_else(|| Error::Check("attributes".into()))?
        .push(owner("worker-2", "h2"));
    as_(&w2, &replace, Some(&b.to_string()))?;
    let edit = |f: &dyn Fn(&mut Value)| -> Result<String> {
        let mut b = get_block()?;
        f(&mut b);
        Ok(b.to_string())
    };
    refused(
        "worker-2 releasing worker-1's address",
        "worker-2",
        as_(
            &w2,
            &replace,
            Some(&edit(&|b| {
                b["spec"]["allocations"][0] = Value::Null;
                b["spec"]["unallocated"] = serde_json::json!([2, 3, 0]);
            })?),
        ),
    );
    refused(
        "worker-2 taking worker-1's address for its own pod",
        "worker-2",
        as_(
            &w2,
            &replace,
            Some(&edit(&|b| b["spec"]["allocations"][0] = 1.into())?),
        ),
    );
    refused(
        "worker-2 taking worker-1's block",
        "worker-2",
        as_(
            &w2,
            &replace,
            Some(&edit(&|b| b["spec"]["affinity"] = "worker-2".into())?),
        ),
    );
    refused(
        "worker-2 deleting worker-1's block",
        "worker-2",
        as_(
            &w2,
            &["delete", "ipamblocks.serval.dev", "10-66-0-0-30"],
            None,
        ),
    );
    let said = rejection(
        "worker-1 putting worker-2's address on the free list",
        as_(
            &w1,
            &replace,
            Some(&edit(&|b| {
                b["spec"]["unallocated"] = serde_json::json!([2, 3, 1])
            })?),
        ),
    );
    assert!(
        said.contains("the free list may hold only free addresses"),
        "{said}"
    );
    // Its own address worker-1 releases; the block it may not delete while worker-2's
    // address is in it.
    as_(
        &w1,
        &replace,
        Some(&edit(&|b| {
            b["spec"]["allocations"][0] = Value::Null;
            b["spec"]["unallocated"] = serde_json::json!([2, 3, 0]);
        })?),
    )?;
    refused(
        "worker-1 deleting a block with worker-2's address in it",
        "worker-1",
        as_(
            &w1,
            &["delete", "ipamblocks.serval.dev", "10-66-0-0-30"],
            None,
        ),
    );

    // The collector Lease: held only as oneself; its holder removes another node's
    // ServalNode.
    let lease_as = |holder: &str| -> Result<String> {
        let out = api.kubectl(&["-n", NS, "get", "lease", "serval-node-gc", "-o", "json"])?;
        let mut l: Value =
            serde_json::from_str(&out).map_err(|e| Error::Check(format!("lease: {e}: {out}")))?;
        l["spec"]["holderIdentity"] = holder.into();
        Ok(l.to_string())
    };
    refused(
        "worker-1 writing worker-2 into the collector Lease",
        "worker-1",
        as_(&w1, &replace, Some(&lease_as("worker-2")?)),
    );
    as_(&w1, &replace, Some(&lease_as("worker-1")?))?;
    refused(
        "worker-2 deleting worker-1's ServalNode while worker-1 collects",
        "worker-2",
        as_(&w2, &["delete", "servalnodes.serval.dev", "worker-1"], None),
    );
    as_(&w1, &["delete", "servalnodes.serval.dev", "worker-2"], None)?;
    as_(
        &w1,
        &["delete", "ipamblocks.serval.dev", "10-66-0-0-30"],
        None,
    )?;
    as_(&w1, &replace, Some(&lease_as("")?))?;

    for o in [
        "servalnodes.serval.dev/worker-1",
        "blockaffinities.serval.dev/10-66-0-0-30.worker-1",
    ] {
        api.kubectl(&["delete", o])?;
    }
    for pod in ["serval-worker-1", "serval-worker-2"] {
        // No kubelet confirms a graceful deletion.
        api.kubectl(&[
            "-n",
            NS,
            "delete",
            "pod",
            pod,
            "--grace-period=0",
            "--force",
        ])?;
    }
    api.kubectl(&["delete", "node", "worker-1", "worker-2"])?;
    Ok(())
}

#[test]
fn chart_on_a_real_api_server() {
    scenario("kube-chart", |dir| {
        let t0 = Instant::now();
        let api = ApiServer::start(dir.path())?;
        let started = t0.elapsed();
        let user = format!("system:serviceaccount:{NS}:{SA}");
        api.kubectl(&["create", "namespace", NS])?;

        // 1. Default values: the kubernetes datastore.
        helm_install(&api, "install", &[])?;
        assert_eq!(release_status(&api)?, (1, "deployed".to_owned()));
        kube_support::wait_established(&api, &kube_support::crd_names())?;
        let rendered = release_objects(&api)?;
        let kinds: BTreeSet<&str> = rendered.iter().map(|o| o.resource.as_str()).collect();
        for k in [
            "daemonset.apps",
            "serviceaccount",
            "configmap",
            "clusterrole.rbac.authorization.k8s.io",
            "clusterrolebinding.rbac.authorization.k8s.io",
            "role.rbac.authorization.k8s.io",
            "rolebinding.rbac.authorization.k8s.io",
            "validatingadmissionpolicy.admissionregistration.k8s.io",
            "validatingadmissionpolicybinding.admissionregistration.k8s.io",
            "lease.coordination.k8s.io",
            "ippool.serval.dev",
            "bgpconfiguration.serval.dev",
        ] {
            assert!(kinds.contains(k), "default values render no {k}: {kinds:?}");
        }
        all_exist(&api, &rendered)?;
        assert_eq!(
            api.kubectl(&[
                "-n",
                NS,
                "get",
                "ds",
                SA,
                "-o",
                "jsonpath={.spec.template.spec.serviceAccountName}"
            ])?,
            SA
        );
        let installed = t0.elapsed();

        // 2. Upgrade: a changed value rolls the configuration, a named Secret becomes
        //    readable.
        let checksum = |api: &ApiServer| {
            api.kubectl(&[
                "-n",
                NS,
                "get",
                "ds",
                SA,
                "-o",
                "jsonpath={.spec.template.metadata.annotations.checksum/config}",
            ])
        };
        let before = checksum(&api)?;
        helm_install(
            &api,
            "upgrade",
            &[
                "--set",
                "agent.logLevel=debug",
                "--set",
                "bgpPasswordSecrets={bgp-passwords}",
            ],
        )?;
        assert_eq!(release_status(&api)?, (2, "deployed".to_owned()));
        let config = api.kubectl(&[
            "-n",
            NS,
            "get",
            "configmap",
            SA,
            "-o",
            "jsonpath={.data.serval\\.toml}",
        ])?;
        assert!(config.contains("log-level = \"debug\""), "{config}");
        assert_ne!(
            checksum(&api)?,
            before,
            "the DaemonSet's config checksum did not change"
        );
        let upgraded = t0.elapsed();

        // 3. What the ServiceAccount may do.
        let table = agent_table();
        let (wrong, printed) = ask(&api, &user, &table, |c| c.allowed)?;
        eprintln!("kubectl auth can-i --as {user} (kubernetes datastore):\n{printed}");
        assert!(
            wrong.is_empty(),
            "RBAC differs from what the agent does:\n{}",
            wrong.join("\n")
        );

        // 4. With tokens the server issued for the ServiceAccount, for real: bound to a
        //    pod on a node, as the kubelet projects them, each agent writes as its node
        //    and no other.
        let sa = api.node_agent_kubeconfig(NS, SA, "worker-1", Duration::from_secs(600))?;
        let pools = api.kubectl_as(&sa, &["get", "ippools.serval.dev", "-o", "name"], None)?;
        assert_eq!(pools.trim(), "ippool.serval.dev/default-ipv4");
        let denied = rejection(
            "listing Secrets with the agent's token",
            api.kubectl_as(&sa, &["-n", NS, "get", "secrets"], None),
        );
        assert!(
            denied.contains("forbidden") && denied.contains(&user),
            "{denied}"
        );
        let denied = rejection(
            "deleting an IPPool with the agent's token",
            api.kubectl_as(&sa, &["delete", "ippools.serval.dev", "default-ipv4"], None),
        );
        assert!(denied.contains("forbidden"), "{denied}");
        node_writes(&api)?;
        let checked = t0.elapsed();

        // 5. Uninstall: only what is kept on purpose stays; then it goes too.
        let rendered = release_objects(&api)?;
        let kept = uninstall_and_check(&api, &rendered)?;
        let kept_names: Vec<String> = kept.iter().map(ToString::to_string).collect();
        assert_eq!(
            kept_names,
            [
                "bgpconfiguration.serval.dev default",
                "ippool.serval.dev default-ipv4"
            ],
            "kept on uninstall"
        );
        delete_kept(&api, &kept)?;
        let uninstalled = t0.elapsed();

        // 6. The etcd values: no serval objects, no RBAC, a ServiceMonitor.
        api.kubectl_stdin(&["apply", "--server-side", "-f", "-"], SERVICE_MONITOR_CRD)?;
        api.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
        ])?;
        let etcd = etcd_values();
        helm_install(&api, "install", &["-f", &etcd])?;
        let rendered = release_objects(&api)?;
        let kinds: BTreeSet<&str> = rendered.iter().map(|o| o.resource.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "configmap",
                "daemonset.apps",
                "service",
                "serviceaccount",
                "servicemonitor.monitoring.coreos.com"
            ]
            .into_iter()
            .collect(),
            "etcd values"
        );
        all_exist(&api, &rendered)?;
        helm_install(
            &api,
            "upgrade",
            &["-f", &etcd, "--set", "metrics.port=9199"],
        )?;
        assert_eq!(release_status(&api)?, (2, "deployed".to_owned()));
        // The agent on etcd never calls the Kubernetes API: its ServiceAccount may do
        // exactly what one bound to nothing may (discovery, asking about itself).
        api.kubectl(&["-n", NS, "create", "serviceaccount", "unbound"])?;
        let rules =
            |who: &str| api.kubectl(&["auth", "can-i", "--list", "-n", NS, &format!("--as={who}")]);
        let agent_rules = rules(&user)?;
        let unbound_rules = rules(&format!("system:serviceaccount:{NS}:unbound"))?;
        assert_eq!(
            agent_rules, unbound_rules,
            "the etcd datastore grants the agent more than nothing"
        );
        assert!(
            !agent_rules.contains("serval.dev") && !agent_rules.contains("nodes"),
            "{agent_rules}"
        );
        api.kubectl(&["-n", NS, "delete", "serviceaccount", "unbound"])?;
        let sa = api.service_account_kubeconfig(NS, SA, Duration::from_secs(600))?;
        let whoami = api.whoami(&sa)?;
        assert_eq!(whoami, user);
        let denied = rejection(
            "reading Nodes with the etcd agent's token",
            api.kubectl_as(&sa, &["get", "nodes"], None),
        );
        assert!(denied.contains("forbidden"), "{denied}");
        let rendered = release_objects(&api)?;
        let kept = uninstall_and_check(&api, &rendered)?;
        assert!(kept.is_empty(), "the etcd values keep {kept:?}");
        delete_kept(&api, &kept)?;
        api.kubectl(&["delete", "crd", "servicemonitors.monitoring.coreos.com"])?;

        eprintln!(
            "kube-apiserver up {started:?}; installed {installed:?}; upgraded {upgraded:?}; \
             RBAC checked {checked:?}; uninstalled {uninstalled:?}; etcd values done {:?}",
            t0.elapsed()
        );
        Ok(())
    });
}
