//! The Kubernetes test bed itself: a real kube-apiserver on loopback and in a network
//! namespace, RBAC as the authoriser, service-account tokens from the TokenRequest API,
//! an outage and a restart, an etcd compaction, and nothing left behind.

use serval_integration::kube::ApiServer;
use serval_integration::{scenario, Bridge, Error, Netns};
use std::path::Path;
use std::time::{Duration, Instant};

/// The Kubernetes release pinned in integration/k8s/go.mod.
fn pinned_release() -> String {
    let go_mod = include_str!("../k8s/go.mod");
    go_mod
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("k8s.io/kubernetes")).then(|| words.next().map(str::to_owned))
        })
        .flatten()
        .expect("integration/k8s/go.mod requires k8s.io/kubernetes")
}

fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.display().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn loopback_server_with_rbac_and_service_account_tokens() {
    scenario("kube-loopback", |test| {
        let started = Instant::now();
        let api = ApiServer::start(test.path())?;
        let startup = started.elapsed();
        eprintln!("kube-apiserver ready after {startup:?}");
        assert_eq!(api.version()?, pinned_release());

        // Admin can do anything; a fresh ServiceAccount can do nothing until bound.
        api.kubectl(&["create", "namespace", "t1"])?;
        api.kubectl(&["-n", "t1", "create", "serviceaccount", "reader"])?;
        let sa = api.service_account_kubeconfig("t1", "reader", Duration::from_secs(600))?;
        let denied = api.kubectl_as(&sa, &["-n", "t1", "get", "configmaps"], None);
        match denied {
            Err(Error::Command { stderr, .. }) => assert!(
                stderr.contains("forbidden") && stderr.contains("system:serviceaccount:t1:reader"),
                "RBAC denies the unbound account by name: {stderr}"
            ),
            other => panic!("an unbound ServiceAccount listed configmaps: {other:?}"),
        }
        api.kubectl(&[
            "-n",
            "t1",
            "create",
            "role",
            "cm-reader",
            "--verb=get,list",
            "--resource=configmaps",
        ])?;
        api.kubectl(&[
            "-n",
            "t1",
            "create",
            "rolebinding",
            "cm-reader",
            "--role=cm-reader",
            "--serviceaccount=t1:reader",
        ])?;
        api.kubectl_as(&sa, &["-n", "t1", "get", "configmaps"], None)?;
        let whoami = api.whoami(&sa)?;
        assert_eq!(whoami, "system:serviceaccount:t1:reader");
        // Still denied outside what the Role grants.
        assert!(api
            .kubectl_as(&sa, &["-n", "t1", "get", "secrets"], None)
            .is_err());

        // Server-side apply and a watchable history: compaction leaves the objects.
        api.kubectl_stdin(
            &["apply", "--server-side", "--field-manager=test", "-f", "-"],
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1, namespace: t1}\ndata: {a: b}\n",
        )?;
        let revision = api.compact_etcd()?;
        assert!(revision > 1);
        assert_eq!(
            api.kubectl(&[
                "-n",
                "t1",
                "get",
                "configmap",
                "c1",
                "-o",
                "jsonpath={.data.a}"
            ])?,
            "b"
        );

        // Drop removes both processes.
        let dir = api.dir().to_path_buf();
        assert!(!processes_mentioning(&dir).is_empty());
        drop(api);
        assert_eq!(
            processes_mentioning(&dir),
            Vec::<u32>::new(),
            "no etcd or kube-apiserver left"
        );
        assert!(
            startup < Duration::from_secs(60),
            "start-up took {startup:?}"
        );
        Ok(())
    });
}

#[test]
fn server_in_a_namespace_survives_an_outage() {
    scenario("kube-netns", |test| {
        let cp = Netns::new()?;
        let client = Netns::new()?;
        let mut br = Bridge::new()?;
        br.connect(&cp, "eth0")?;
        br.connect(&client, "eth0")?;
        let net = |s: &str| s.parse().map_err(|_| Error::InvalidSpec(s.into()));
        cp.add_addr("eth0", net("192.0.2.2/24")?)?;
        client.add_addr("eth0", net("192.0.2.3/24")?)?;
        let mut api = ApiServer::start_in(
            &cp.handle(),
            "192.0.2.2".parse().expect("literal"),
            test.path(),
        )?;
        assert_eq!(api.url(), "https://192.0.2.2:6443");

        // A client in another namespace reaches it over the link, with the CA it was given.
        let kubectl = api.kubectl_path().display().to_string();
        let admin = api.admin_kubeconfig().display().to_string();
        let from_client = |args: &[&str]| -> serval_integration::Result<String> {
            let mut argv = vec![kubectl.as_str(), "--kubeconfig", admin.as_str()];
            argv.extend_from_slice(args);
            client.exec(&argv)
        };
        from_client(&["create", "configmap", "before", "-n", "default"])?;

        // Down: the client gets connection errors; up again: the data is still there.
        api.stop_apiserver()?;
        assert!(from_client(&[
            "get",
            "configmap",
            "before",
            "-n",
            "default",
            "--request-timeout=2s"
        ])
        .is_err());
        api.start_apiserver()?;
        assert_eq!(
            from_client(&["get", "configmap", "before", "-n", "default", "-o", "name"])?.trim(),
            "configmap/before"
        );
        Ok(())
    });
}
