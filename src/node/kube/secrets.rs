//! BGP passwords from Kubernetes Secrets: `password.secretKeyRef {name, key}` of
//! BGPPeers and of BGPConfiguration's `nodeMeshPassword`, read from Secrets in the
//! agent's namespace (`SERVAL_NAMESPACE`).
//!
//! The agent may `get` only the Secrets the chart names (`bgpPasswordSecrets`), never
//! list or watch them, so [`SecretCache`] reads each referenced Secret by name and reads
//! it again every [`REREAD`]; a change of password reaches the sessions within that
//! time. [`apply`] (pure) puts the values into the snapshot the decisions run on: a
//! password found becomes the peering's password; a missing Secret or key leaves that
//! peering out (or runs it without password when the reference is `optional`), with
//! the reason among the node's problems. Nothing here stops the agent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::node::desired::Snapshot;
use crate::resources::common::{BgpPassword, SecretKeyRef};

/// How often a referenced Secret is read again.
pub const REREAD: Duration = Duration::from_secs(30);

/// One Secret as read: its keys and values, or why it cannot be had.
pub type SecretData = Result<BTreeMap<String, String>, String>;

/// The Secrets the snapshot's peerings refer to.
pub fn referenced(snap: &Snapshot) -> BTreeSet<String> {
    let peer_refs = snap
        .peers
        .values()
        .filter_map(|p| p.password.as_ref()?.secret_key_ref.as_ref());
    let mesh_ref = snap
        .config
        .node_mesh_password
        .as_ref()
        .and_then(|p| p.secret_key_ref.as_ref());
    peer_refs.chain(mesh_ref).map(|r| r.name.clone()).collect()
}

/// What a reference resolves to.
enum Resolved {
    Value(String),
    /// Optional and missing: no password.
    Without,
    /// Missing: leave the peering out, for this reason.
    Missing(String),
}

fn resolve(r: &SecretKeyRef, secrets: &BTreeMap<String, SecretData>, namespace: &str) -> Resolved {
    let missing = match secrets.get(&r.name) {
        None => format!("Secret {namespace}/{} has not been read yet", r.name),
        Some(Err(why)) => why.clone(),
        Some(Ok(data)) => match data.get(&r.key) {
            Some(v) if !v.is_empty() && v.len() <= 80 => return Resolved::Value(v.clone()),
            Some(_) => format!(
                "key {} of Secret {namespace}/{} is not a TCP MD5 key (1 to 80 bytes)",
                r.key, r.name
            ),
            None => format!("Secret {namespace}/{} has no key {}", r.name, r.key),
        },
    };
    if r.optional == Some(true) {
        Resolved::Without
    } else {
        Resolved::Missing(missing)
    }
}

fn with_value(v: String) -> BgpPassword {
    BgpPassword {
        value: Some(v),
        ..BgpPassword::default()
    }
}

/// Puts the Secrets' values into `snap`; returns the problems, one per peering left
/// out. `secrets`: every Secret read, by name.
pub fn apply(
    snap: &mut Snapshot,
    secrets: &BTreeMap<String, SecretData>,
    namespace: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut drop_peers = Vec::new();
    for (name, peer) in snap.peers.iter_mut() {
        let Some(r) = peer
            .password
            .as_ref()
            .and_then(|p| p.secret_key_ref.clone())
        else {
            continue;
        };
        match resolve(&r, secrets, namespace) {
            Resolved::Value(v) => peer.password = Some(with_value(v)),
            Resolved::Without => peer.password = None,
            Resolved::Missing(why) => {
                problems.push(format!("BGPPeer {name}: not configured: {why}"));
                drop_peers.push(name.clone());
            }
        }
    }
    for name in drop_peers {
        snap.peers.remove(&name);
    }
    let mesh_ref = snap
        .config
        .node_mesh_password
        .as_ref()
        .and_then(|p| p.secret_key_ref.clone());
    if let Some(r) = mesh_ref {
        match resolve(&r, secrets, namespace) {
            Resolved::Value(v) => snap.config.node_mesh_password = Some(with_value(v)),
            Resolved::Without => snap.config.node_mesh_password = None,
            Resolved::Missing(why) => {
                problems.push(format!(
                    "BGPConfiguration default nodeMeshPassword: the node-to-node mesh is not configured: {why}"
                ));
                snap.config.node_to_node_mesh_enabled = Some(false);
                snap.config.node_mesh_password = None;
            }
        }
    }
    problems
}

/// A Secret's string data (values that are not UTF-8 are left out: a TCP MD5 key here
/// is text, as Calico's is).
pub fn secret_data(s: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = s
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect();
    if let Some(sd) = &s.string_data {
        out.extend(sd.clone());
    }
    out
}

/// The Secrets read so far, each with when it was read.
pub struct SecretCache {
    api: Api<Secret>,
    namespace: String,
    read: BTreeMap<String, (Instant, SecretData)>,
}

impl SecretCache {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        SecretCache {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            read: BTreeMap::new(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether a Secret in `names` was never read or was read [`REREAD`] ago.
    pub fn due(&self, names: &BTreeSet<String>, now: Instant) -> bool {
        names.iter().any(|n| {
            self.read
                .get(n)
                .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= REREAD)
        })
    }

    /// Reads the Secrets of `names` that are due, forgets the others; returns whether
    /// anything read differs from before.
    pub async fn refresh(&mut self, names: &BTreeSet<String>, now: Instant) -> bool {
        self.read.retain(|n, _| names.contains(n));
        let mut changed = false;
        for n in names {
            let due = self
                .read
                .get(n)
                .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= REREAD);
            if !due {
                continue;
            }
            let got: SecretData = match self.api.get_opt(n).await {
                Ok(Some(s)) => Ok(secret_data(&s)),
                Ok(None) => Err(format!("Secret {}/{n} does not exist", self.namespace)),
                Err(kube::Error::Api(s)) if s.code == 403 => Err(format!(
                    "Secret {}/{n} may not be read: list it in the chart's bgpPasswordSecrets",
                    self.namespace
                )),
                Err(e) => match self.read.get(n) {
                    // The API server is away: keep what was read.
                    Some((_, old)) => {
                        tracing::warn!(secret = %n, error = %e, "reading a BGP password Secret");
                        let old = old.clone();
                        self.read.insert(n.clone(), (now, old));
                        continue;
                    }
                    None => Err(format!("Secret {}/{n} cannot be read: {e}", self.namespace)),
                },
            };
            if self.read.get(n).map(|(_, d)| d) != Some(&got) {
                changed = true;
            }
            self.read.insert(n.clone(), (now, got));
        }
        changed
    }

    /// What was read, by name.
    pub fn data(&self) -> BTreeMap<String, SecretData> {
        self.read
            .iter()
            .map(|(n, (_, d))| (n.clone(), d.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::BGPPeerSpec;

    fn secret_ref(name: &str, key: &str, optional: Option<bool>) -> Option<BgpPassword> {
        Some(BgpPassword {
            secret_key_ref: Some(SecretKeyRef {
                name: name.into(),
                key: key.into(),
                optional,
            }),
            ..BgpPassword::default()
        })
    }

    fn peer(pw: Option<BgpPassword>) -> BGPPeerSpec {
        BGPPeerSpec {
            password: pw,
            ..BGPPeerSpec::default()
        }
    }

    #[test]
    fn secrets_into_passwords() {
        let mut snap = Snapshot::default();
        snap.peers
            .insert("tor".into(), peer(secret_ref("bgp", "tor", None)));
        snap.peers
            .insert("nokey".into(), peer(secret_ref("bgp", "nope", None)));
        snap.peers
            .insert("nosecret".into(), peer(secret_ref("gone", "k", None)));
        snap.peers
            .insert("opt".into(), peer(secret_ref("gone", "k", Some(true))));
        snap.peers.insert("plain".into(), peer(None));
        snap.config.node_mesh_password = secret_ref("bgp", "mesh", None);
        assert_eq!(
            referenced(&snap),
            ["bgp".to_owned(), "gone".to_owned()].into()
        );
        let secrets: BTreeMap<String, SecretData> = [
            (
                "bgp".to_owned(),
                Ok([
                    ("tor".to_owned(), "s3cret".to_owned()),
                    ("mesh".to_owned(), "m3sh".to_owned()),
                ]
                .into()),
            ),
            (
                "gone".to_owned(),
                Err("Secret kube-system/gone does not exist".to_owned()),
            ),
        ]
        .into();
        let problems = apply(&mut snap, &secrets, "kube-system");
        assert_eq!(
            snap.peers["tor"]
                .password
                .as_ref()
                .unwrap()
                .value
                .as_deref(),
            Some("s3cret")
        );
        assert!(
            snap.peers["opt"].password.is_none(),
            "optional: no password"
        );
        assert!(snap.peers.contains_key("plain"));
        assert!(!snap.peers.contains_key("nokey") && !snap.peers.contains_key("nosecret"));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("BGPPeer nokey") && p.contains("no key nope")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("BGPPeer nosecret") && p.contains("does not exist")),
            "{problems:?}"
        );
        assert_eq!(
            snap.config
                .node_mesh_password
                .as_ref()
                .unwrap()
                .value
                .as_deref(),
            Some("m3sh")
        );
        // The result passes the decisions without a password error.
        let d = crate::node::desired::desired(&snap);
        assert!(
            !d.problems.iter().any(|p| p.contains("password")),
            "{:?}",
            d.problems
        );
    }

    #[test]
    fn a_missing_mesh_secret_turns_the_mesh_off_with_the_reason() {
        let mut snap = Snapshot::default();
        snap.config.node_mesh_password = secret_ref("bgp", "mesh", None);
        let secrets: BTreeMap<String, SecretData> =
            [("bgp".to_owned(), Ok(BTreeMap::new()))].into();
        let problems = apply(&mut snap, &secrets, "ns");
        assert_eq!(snap.config.node_to_node_mesh_enabled, Some(false));
        assert!(
            problems[0].contains("Secret ns/bgp has no key mesh"),
            "{problems:?}"
        );
        let mut snap = Snapshot::default();
        snap.peers
            .insert("tor".into(), peer(secret_ref("bgp", "k", None)));
        let long: BTreeMap<String, SecretData> = [(
            "bgp".to_owned(),
            Ok([("k".to_owned(), "x".repeat(81))].into()),
        )]
        .into();
        let problems = apply(&mut snap, &long, "ns");
        assert!(problems[0].contains("1 to 80 bytes"), "{problems:?}");
    }
}
