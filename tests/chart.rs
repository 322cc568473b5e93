//! The Helm chart as rendered by a real `helm template`: every built-in object survives a
//! round trip through its k8s-openapi type (no unknown or misplaced field, no wrong
//! type), serval's own objects pass the generated CRDs, and the DaemonSet and RBAC have
//! what the agent needs and nothing more.
//!
//! helm comes from `scripts/chart-check.sh tools` (which fetches it once with npm), or
//! from `SERVAL_HELM`.

#[path = "crds/validate.rs"]
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn helm() -> &'static str {
    static HELM: OnceLock<String> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Ok(h) = std::env::var("SERVAL_HELM") {
            return h;
        }
        let out = Command::new("sh")
            .arg(root().join("scripts/chart-check.sh"))
            .arg("tools")
            .output()
            .unwrap_or_else(|e| panic!("helm: cannot run scripts/chart-check.sh tools: {e}"));
        assert!(
            out.status.success(),
            "helm is missing and scripts/chart-check.sh could not fetch it:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

/// `helm template` with these extra arguments; the objects, or helm's error text.
fn try_render(args: &[&str]) -> Result<Vec<Value>, String> {
    let out = Command::new(helm())
        .args(["template", "serval"])
        .arg(root().join("charts/serval"))
        .args(["--namespace", "kube-system"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("helm ({}): {e}", helm()));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    Ok(serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect())
}

fn render(args: &[&str]) -> Vec<Value> {
    try_render(args).unwrap_or_else(|e| panic!("helm template {args:?}: {e}"))
}

fn etcd_values() -> String {
    root()
        .join("charts/serval/ci/etcd-values.yaml")
        .display()
        .to_string()
}

/// What a Kubernetes 1.30 or later API server offers the chart (`helm template` asks no
/// server).
const ADMISSION_API: [&str; 2] = [
    "--api-versions",
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
];

/// The value sets CI renders.
fn renders() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        ("default", render(&ADMISSION_API)),
        (
            "etcd",
            render(&[&["-f", etcd_values().as_str()][..], &ADMISSION_API].concat()),
        ),
        ("before 1.30", render(&[])),
    ]
}

fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objs.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected");
    found[0]
}

/// Deserializes into `T` and back; the result must equal what was rendered.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    obj: &Value,
) -> Result<(), String> {
    let typed: T = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match first_difference(obj, &back, String::new()) {
        None => Ok(()),
        Some(d) => Err(format!("does not survive the Kubernetes types: {d}")),
    }
}

fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                let p = format!("{path}.{k}");
                match y.get(k) {
                    None => return Some(format!("{p}: unknown field (dropped)")),
                    Some(w) => {
                        if let Some(d) = first_difference(v, w, p) {
                            return Some(d);
                        }
                    }
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}.{k}: added by the type"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, format!("{path}[{i}]"))),
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(format!("{path}: rendered {a}, typed {b}")),
    }
}

#[test]
fn every_rendered_object_is_valid_for_its_kind() {
    let crds = validate::load(&root().join("crds"));
    for (name, objs) in renders() {
        let mut kinds = BTreeSet::new();
        for o in &objs {
            let kind = o["kind"].as_str().unwrap_or_default();
            let label = format!("{name}: {kind} {}", o["metadata"]["name"]);
            let checked = match kind {
                "DaemonSet" => round_trip::<DaemonSet>(o),
                "ServiceAccount" => round_trip::<ServiceAccount>(o),
                "ClusterRole" => round_trip::<ClusterRole>(o),
                "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(o),
                "Role" => round_trip::<Role>(o),
                "RoleBinding" => round_trip::<RoleBinding>(o),
                "ConfigMap" => round_trip::<ConfigMap>(o),
                "ValidatingAdmissionPolicy" => round_trip::<ValidatingAdmissionPolicy>(o),
                "ValidatingAdmissionPolicyBinding" => {
                    round_trip::<ValidatingAdmissionPolicyBinding>(o)
                }
                "Lease" => round_trip::<Lease>(o),
                "Service" => round_trip::<Service>(o),
                "ServiceMonitor" => service_monitor(o),
                "IPPool" | "BGPConfiguration" => {
                    let v = crds.check(o, None);
                    if v.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("{v:?}"))
                    }
                }
                other => Err(format!("unexpected kind {other}")),
            };
            checked.unwrap_or_else(|e| panic!("{label}: {e}"));
            kinds.insert(kind.to_owned());
        }
        for k in ["DaemonSet", "ServiceAccount", "ConfigMap"] {
            assert!(kinds.contains(k), "{name}: no {k}");
        }
        if name != "etcd" {
            assert!(
                kinds.contains("ClusterRole") && kinds.contains("Role"),
                "{name}: no RBAC"
            );
        }
        // The admission policy where the API has it and the datastore is Kubernetes.
        let policy = [
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "Lease",
        ];
        for k in policy {
            assert_eq!(kinds.contains(k), name == "default", "{name}: {k}");
        }
    }
}

/// The policy binds to the collector's Lease that the chart creates, in the release's
/// namespace, and holds the requests of the agents' ServiceAccount only.
#[test]
fn admission_policy_is_bound_to_the_agents_and_the_lease() {
    let objs = render(&[&["--namespace", "kube-system"][..], &ADMISSION_API].concat());
    let policy = one(&objs, "ValidatingAdmissionPolicy");
    let binding = one(&objs, "ValidatingAdmissionPolicyBinding");
    let lease = one(&objs, "Lease");
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(
        binding["spec"]["paramRef"]["name"],
        lease["metadata"]["name"]
    );
    assert_eq!(binding["spec"]["paramRef"]["namespace"], "kube-system");
    assert_eq!(lease["metadata"]["namespace"], "kube-system");
    assert_eq!(lease["metadata"]["name"], "serval-node-gc");
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    let who = policy["spec"]["matchConditions"][0]["expression"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        who,
        "request.userInfo.username == 'system:serviceaccount:kube-system:serval'"
    );
    let off = render(
        &[
            &["--set", "admissionPolicy.enabled=false"][..],
            &ADMISSION_API,
        ]
        .concat(),
    );
    assert!(off.iter().all(|o| o["kind"] != "ValidatingAdmissionPolicy"));
}

/// The prometheus-operator kind has no Rust type here: its fields are checked by name.
fn service_monitor(o: &Value) -> Result<(), String> {
    let spec = o["spec"].as_object().ok_or("no spec")?;
    let known = ["selector", "namespaceSelector", "endpoints", "jobLabel"];
    if let Some(k) = spec.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("spec.{k}: not a ServiceMonitor field"));
    }
    let ep = &o["spec"]["endpoints"][0];
    for k in ep.as_object().ok_or("no endpoint")?.keys() {
        if !["port", "path", "interval", "scrapeTimeout", "relabelings"].contains(&k.as_str()) {
            return Err(format!("spec.endpoints[0].{k}: not an endpoint field"));
        }
    }
    Ok(())
}

fn container<'a>(ds: &'a DaemonSet, init: bool, name: &str) -> &'a Container {
    let spec = ds.spec.template.spec.as_ref().unwrap();
    let list = if init {
        spec.init_containers.as_deref().unwrap_or_default()
    } else {
        &spec.containers
    };
    list.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env_of(c: &Container) -> BTreeMap<String, Value> {
    c.env
        .iter()
        .flatten()
        .map(|e| {
            let v = match (&e.value, &e.value_from) {
                (Some(v), _) => json!(v),
                (None, Some(f)) => serde_json::to_value(f).unwrap(),
                _ => Value::Null,
            };
            (e.name.clone(), v)
        })
        .collect()
}

#[test]
fn the_daemonset_has_what_a_node_agent_needs() {
    for (name, objs) in renders() {
        let ds: DaemonSet = serde_json::from_value(one(&objs, "DaemonSet").clone()).unwrap();
        let pod = ds.spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.host_network, Some(true), "{name}: hostNetwork");
        let tolerates_all = pod.tolerations.iter().flatten().any(|t| {
            t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()
        });
        assert!(tolerates_all, "{name}: must tolerate every taint");

        // On the kubernetes datastore a sidecar keeps the CNI plugin's token fresh (the
        // kubelet rotates the pod's token); on etcd the plugin has no token to refresh.
        let watcher = pod
            .containers
            .iter()
            .find(|c| c.name == "install-cni-watch");
        match (name, watcher) {
            ("default" | "before 1.30", Some(w)) => {
                let cmd = w.command.clone().unwrap_or_default();
                assert_eq!(cmd.first().map(String::as_str), Some("serval"), "{name}");
                assert!(cmd.iter().any(|a| a == "--watch"), "{name}: {cmd:?}");
                let env = env_of(w);
                assert_eq!(env["SERVAL_DATASTORE"], json!("kubernetes"), "{name}");
            }
            ("default" | "before 1.30", None) => panic!("{name}: no install-cni-watch sidecar"),
            (_, Some(_)) => panic!("{name}: a token-refresh sidecar without a token"),
            (_, None) => {}
        }
        let init = container(&ds, true, "install-cni");
        let cmd = init.command.clone().unwrap_or_default();
        assert_eq!(
            cmd,
            [
                "serval",
                "install-cni",
                "--bin-dir",
                "/host/opt/cni/bin",
                "--conf-dir",
                "/host/etc/cni/net.d"
            ],
            "{name}"
        );

        let agent = container(&ds, false, "serval");
        assert_eq!(
            agent.command.as_deref().unwrap_or_default(),
            ["serval", "node", "run"]
        );
        let env = env_of(agent);
        assert_eq!(
            env["SERVAL_NODE"]["fieldRef"]["fieldPath"], "spec.nodeName",
            "{name}"
        );
        let datastore = env["SERVAL_DATASTORE"].as_str().unwrap();
        match name {
            "default" | "before 1.30" => assert_eq!(datastore, "kubernetes"),
            _ => assert_eq!(
                datastore,
                "etcd:https://192.0.2.1:2379,https://192.0.2.2:2379"
            ),
        }

        // Probes on the metrics port.
        let port = agent
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("metrics"))
            .expect("a metrics port");
        assert_eq!(port.container_port, 9099);
        for (probe, path) in [
            (&agent.liveness_probe, "/healthz"),
            (&agent.readiness_probe, "/readyz"),
        ] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .unwrap_or_else(|| panic!("{name}: no httpGet probe for {path}"));
            assert_eq!(get.path.as_deref(), Some(path));
            let p = serde_json::to_value(&get.port).unwrap();
            assert!(p == json!("metrics") || p == json!(9099), "{name}: {p}");
        }

        // Capabilities: exactly what is explained in the template, nothing privileged.
        for c in [init, agent] {
            let sc = c.security_context.as_ref().expect("securityContext");
            assert_ne!(sc.privileged, Some(true), "{name}: {} privileged", c.name);
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            let caps = sc.capabilities.as_ref().unwrap();
            assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
        }
        let added: BTreeSet<&str> = agent
            .security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.add.as_ref())
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        assert_eq!(
            added,
            BTreeSet::from(["NET_ADMIN", "NET_BIND_SERVICE"]),
            "{name}"
        );
        assert!(init
            .security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.add.as_ref())
            .is_none_or(|a| a.is_empty()));

        // Host paths, each mounted where it is needed.
        let host_paths: BTreeMap<String, String> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| Some((v.name.clone(), v.host_path.as_ref()?.path.clone())))
            .collect();
        let mounts = |c: &Container| -> BTreeMap<String, (String, bool)> {
            c.volume_mounts
                .iter()
                .flatten()
                .filter_map(|m| {
                    let host = host_paths.get(&m.name)?;
                    Some((
                        host.clone(),
                        (m.mount_path.clone(), m.read_only == Some(true)),
                    ))
                })
                .collect()
        };
        let init_mounts = mounts(init);
        assert_eq!(
            init_mounts.get("/opt/cni/bin"),
            Some(&("/host/opt/cni/bin".to_owned(), false))
        );
        assert_eq!(
            init_mounts.get("/etc/cni/net.d"),
            Some(&("/host/etc/cni/net.d".to_owned(), false))
        );
        let agent_mounts = mounts(agent);
        for (host, ro) in [
            ("/var/lib/serval", false),
            ("/run/serval", false),
            ("/var/log/serval", false),
            ("/lib/modules", true),
        ] {
            assert_eq!(
                agent_mounts.get(host),
                Some(&(host.to_owned(), ro)),
                "{name}: {host}"
            );
        }
        assert_eq!(
            agent_mounts.len(),
            4,
            "{name}: unexpected host mounts {agent_mounts:?}"
        );

        // The configuration file the agent is pointed at is the ConfigMap's.
        let cfg = env["SERVAL_CONFIG"].as_str().unwrap();
        let cm: ConfigMap = serde_json::from_value(one(&objs, "ConfigMap").clone()).unwrap();
        let data = cm.data.unwrap();
        let (dir, file) = cfg.rsplit_once('/').unwrap();
        let cfg_mount = agent
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == dir)
            .expect("the config directory is mounted");
        let vol = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == cfg_mount.name)
            .unwrap();
        assert_eq!(
            vol.config_map.as_ref().map(|c| c.name.as_str()),
            cm.metadata.name.as_deref()
        );
        let toml: toml::Table = data[file]
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {file} is not TOML: {e}"));
        let metrics_addr = toml["metrics-addr"].as_str().unwrap();
        assert!(metrics_addr.ends_with(":9099"), "{metrics_addr}");

        if name == "etcd" {
            // TLS material from the Secret, at the paths the environment names.
            for (var, key) in [
                ("SERVAL_ETCD_CA_FILE", "ca.crt"),
                ("SERVAL_ETCD_CERT_FILE", "tls.crt"),
                ("SERVAL_ETCD_KEY_FILE", "tls.key"),
            ] {
                let path = env[var].as_str().unwrap_or_else(|| panic!("no {var}"));
                let (dir, k) = path.rsplit_once('/').unwrap();
                assert_eq!(k, key);
                let m = agent
                    .volume_mounts
                    .iter()
                    .flatten()
                    .find(|m| m.mount_path == dir)
                    .unwrap_or_else(|| panic!("{var}: {dir} not mounted"));
                let v = pod
                    .volumes
                    .iter()
                    .flatten()
                    .find(|v| v.name == m.name)
                    .unwrap();
                assert_eq!(
                    v.secret.as_ref().and_then(|s| s.secret_name.as_deref()),
                    Some("serval-etcd-tls")
                );
            }
            assert_eq!(env["SERVAL_ETCD_USERNAME"], "serval");
            assert!(env.contains_key("SERVAL_ETCD_PASSWORD_FILE"));
            // Listening on loopback only: the probes go to 127.0.0.1.
            let host = agent
                .liveness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|g| g.host.as_deref());
            assert_eq!(host, Some("127.0.0.1"));
        } else {
            assert!(!env.keys().any(|k| k.starts_with("SERVAL_ETCD")));
        }
    }
}

/// (api group, resource, verb, resource name or "*"), from a list of policy rules.
fn grants(rules: &[k8s_openapi::api::rbac::v1::PolicyRule]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in rules {
        let names = r.resource_names.clone().unwrap_or_else(|| vec!["*".into()]);
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    for n in &names {
                        out.insert(format!("{g}/{res} {v} {n}"));
                    }
                }
            }
        }
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn rbac_is_least_privilege() {
    let read = ["get", "list", "watch"];
    let write = ["get", "list", "watch", "create", "update", "delete"];
    let mut cluster = Vec::new();
    for r in [
        "bgpconfigurations",
        "bgppeers",
        "bgpfilters",
        "bfdprofiles",
        "ippools",
        "ipamconfigs",
        "ipreservations",
        "servalnodestatuses",
    ] {
        for v in read {
            cluster.push(format!("serval.dev/{r} {v} *"));
        }
    }
    for r in [
        "ipamblocks",
        "blockaffinities",
        "ipamhandles",
        "servalnodes",
    ] {
        for v in write {
            cluster.push(format!("serval.dev/{r} {v} *"));
        }
    }
    cluster.push("serval.dev/servalnodestatuses/status patch *".into());
    cluster.extend(read.iter().map(|v| format!("/nodes {v} *")));
    cluster.push("/pods get *".into());
    cluster.push("/namespaces get *".into());
    // Services and their EndpointSlices: what the node advertises for them.
    for v in ["list", "watch"] {
        cluster.push(format!("/services {v} *"));
        cluster.push(format!("discovery.k8s.io/endpointslices {v} *"));
    }
    // The LoadBalancer allocator writes the addresses it gave into each Service's status.
    cluster.push("/services/status patch *".into());
    let cluster: BTreeSet<String> = cluster.into_iter().collect();
    let lease = set(&[
        "coordination.k8s.io/leases create *",
        "coordination.k8s.io/leases get serval-node-gc",
        "coordination.k8s.io/leases update serval-node-gc",
    ]);
    let mut with_secret = lease.clone();
    with_secret.insert("/secrets get bgp-passwords".into());

    for (name, objs) in [
        ("default", render(&[])),
        (
            "secret",
            render(&["--set", "bgpPasswordSecrets={bgp-passwords}"]),
        ),
    ] {
        let cr: ClusterRole = serde_json::from_value(one(&objs, "ClusterRole").clone()).unwrap();
        let role: Role = serde_json::from_value(one(&objs, "Role").clone()).unwrap();
        let want_role = if name == "default" {
            &lease
        } else {
            &with_secret
        };
        assert_eq!(
            grants(cr.rules.as_deref().unwrap_or_default()),
            cluster,
            "{name}"
        );
        assert_eq!(
            &grants(role.rules.as_deref().unwrap_or_default()),
            want_role,
            "{name}"
        );
        // Bound to the agents' ServiceAccount.
        let sa = one(&objs, "ServiceAccount")["metadata"]["name"].clone();
        for kind in ["ClusterRoleBinding", "RoleBinding"] {
            let b = one(&objs, kind);
            assert_eq!(b["subjects"][0]["name"], sa, "{name}: {kind}");
        }
        let ds = one(&objs, "DaemonSet");
        assert_eq!(ds["spec"]["template"]["spec"]["serviceAccountName"], sa);
    }
    // On etcd neither the agent nor the CNI plugin calls the Kubernetes API.
    let etcd = render(&["-f", &etcd_values()]);
    for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(
            etcd.iter().all(|o| o["kind"] != kind),
            "etcd: a {kind} is rendered"
        );
    }
}

#[test]
fn default_pool_and_configuration_are_valid_and_toggle() {
    let objs = render(&[]);
    let pool = one(&objs, "IPPool");
    let mut spec = pool["spec"].clone();
    spec["name"] = pool["metadata"]["name"].clone();
    let model: ipam::model::IpPool = serde_json::from_value(spec).unwrap();
    model.validate().unwrap();
    assert_eq!(
        pool["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let config = one(&objs, "BGPConfiguration");
    serval::resources::document::parse(&serde_yaml::to_string(config).unwrap()).unwrap();

    let off = render(&[
        "--set",
        "defaultIPPool.create=false",
        "--set",
        "defaultBGPConfiguration.create=false",
    ]);
    assert!(!off
        .iter()
        .any(|o| o["kind"] == "IPPool" || o["kind"] == "BGPConfiguration"));

    // A bad value fails at install time through the CRD, here through the validator.
    let crds = validate::load(&root().join("crds"));
    let bad = render(&["--set", "defaultIPPool.blockSize=33"]);
    let v = crds.check(one(&bad, "IPPool"), None);
    assert!(v.iter().any(|x| x.path == "spec.blockSize"), "{v:?}");
}

#[test]
fn wrong_datastore_values_fail_to_render() {
    let e = try_render(&["--set", "datastore.type=etcd"]).unwrap_err();
    assert!(e.contains("datastore.etcd.endpoints"), "{e}");
    let e = try_render(&["--set", "datastore.type=consul"]).unwrap_err();
    assert!(e.contains("kubernetes or etcd"), "{e}");
}

#[test]
fn service_monitor_scrapes_the_agents() {
    let objs = render(&["-f", &etcd_values()]);
    let svc: Service = serde_json::from_value(one(&objs, "Service").clone()).unwrap();
    let sm = one(&objs, "ServiceMonitor");
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    let selector = serde_json::to_value(spec.selector.unwrap()).unwrap();
    assert_eq!(sm["spec"]["selector"]["matchLabels"], selector);
    let svc_labels = serde_json::to_value(svc.metadata.labels.unwrap()).unwrap();
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(
            &svc_labels[k], v,
            "the ServiceMonitor must select the Service"
        );
    }
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    let port = &spec.ports.unwrap()[0];
    assert_eq!(port.name.as_deref(), Some("metrics"));
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert!(render(&[]).iter().all(|o| o["kind"] != "ServiceMonitor"));
}
