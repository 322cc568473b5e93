//! `serval import calico`: Calico's `projectcalico.org/v3` resources (as `calicoctl get
//! -o yaml` or `kubectl get -o yaml` print them, also the `crd.projectcalico.org/v1`
//! objects of Calico's Kubernetes datastore) into serval's `serval.dev/v1` resources.
//!
//! | Calico                  | serval             |
//! |-------------------------|--------------------|
//! | `BGPConfiguration`      | `BGPConfiguration` |
//! | `BGPPeer`               | `BGPPeer`          |
//! | `BGPFilter`             | `BGPFilter`        |
//! | `IPPool`                | `IPPool`           |
//! | `Node` (its `spec.bgp` and tunnel addresses) | `ServalNode` |
//! | `IPAMConfiguration`     | `IPAMConfig`       |
//! | `IPReservation`         | `IPReservation`    |
//! | `CalicoNodeStatus`      | `ServalNodeStatus` |
//! | `BFDConfiguration` (Calico Enterprise) | `BFDProfile` |
//! | `KubeControllersConfiguration` (`controllers.loadBalancer.assignIPs`) | `BGPConfiguration` `default` (`loadBalancerAssignIPs`) |
//!
//! BFD: a `BGPPeer`'s `failureDetectionMode` (Calico Enterprise's, `None` or
//! `BFDIfDirectlyConnected`) copies as it is. Calico Enterprise's timers live in
//! `BFDConfiguration`s (per node selector and interface pattern); serval's in a
//! `BFDProfile` that a peering names. Each `BFDConfiguration` becomes a profile of its name
//! with the timers of its first interface entry (Calico's defaults for what it leaves out:
//! 10 ms receive, 100 ms send, × 5); when the input holds exactly one, every
//! `BFDIfDirectlyConnected` peer is given it as `bfdProfile`, so its sessions keep
//! Calico's timers; with several, the peers are reported to be given one by hand.
//!
//! Field names are Calico's, so most fields copy as they are; every other field is
//! reported with the reason it does not come over. A field whose loss would make a
//! resource select or match more than it did (a BGPFilter rule's `priority`, a peer's
//! `localWorkloadSelector`) skips the whole document rather than import a wider one.
//! Every produced document then goes through serval's own typed parsing, so what is
//! written is what the agent accepts.

use serde_json::{json, Map, Value};

use super::{Finding, Imported, Severity};
use crate::resources::common::GoDuration;
use crate::resources::API_VERSION;

const CALICO_API: [&str; 2] = ["projectcalico.org/v3", "crd.projectcalico.org/v1"];

/// Imports every document of `text` (multi-document YAML; `…List` kinds are unrolled).
/// `source` names the input in findings (a file name). Fails only on YAML that does not
/// parse.
pub fn import(text: &str, source: &str) -> Result<Imported, String> {
    let mut out = Imported::default();
    let mut bfd_profiles = Vec::new();
    let mut n = 0;
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| format!("{source}: document {}: not valid YAML: {e}", n + 1))?;
        if value.is_null() {
            continue;
        }
        n += 1;
        let items = match value.get("items").and_then(Value::as_array) {
            Some(items)
                if value["kind"]
                    .as_str()
                    .is_some_and(|k| k == "List" || k.ends_with("List")) =>
            {
                items.clone()
            }
            _ => vec![value],
        };
        for (i, item) in items.into_iter().enumerate() {
            let at = if i == 0 && item.get("items").is_none() {
                format!("{source}: document {n}")
            } else {
                format!("{source}: document {n} item {}", i + 1)
            };
            let from_bfd = item["kind"] == "BFDConfiguration";
            let before = out.documents.len();
            one(item, at, &mut out);
            if from_bfd && out.documents.len() > before {
                bfd_profiles.push(out.documents[before]["metadata"]["name"].clone());
            }
        }
    }
    link_bfd_profiles(&mut out, &bfd_profiles, source);
    merge_load_balancer_settings(&mut out.documents);
    Ok(out)
}

/// A `KubeControllersConfiguration` becomes a BGPConfiguration `default` holding only
/// `loadBalancerAssignIPs` (no Calico BGPConfiguration has that field, so such a document
/// came from one). When `docs` also hold a converted BGPConfiguration `default`, the field
/// moves into it and the lone document goes, so the output has one `default` (call it
/// again on the documents of several inputs).
pub fn merge_load_balancer_settings(docs: &mut Vec<Value>) {
    const FIELD: &str = "loadBalancerAssignIPs";
    let is_default =
        |d: &Value| d["kind"] == "BGPConfiguration" && d["metadata"]["name"] == "default";
    let lone = |d: &Value| {
        is_default(d)
            && d["spec"]
                .as_object()
                .is_some_and(|s| s.len() == 1 && s.contains_key(FIELD))
    };
    let Some(full) = docs.iter().position(|d| is_default(d) && !lone(d)) else {
        return;
    };
    let Some(value) = docs
        .iter()
        .rev()
        .find(|d| lone(d))
        .map(|d| d["spec"][FIELD].clone())
    else {
        return;
    };
    docs[full]["spec"][FIELD] = value;
    docs.retain(|d| !lone(d));
}

/// Gives every `BFDIfDirectlyConnected` peer without a `bfdProfile` the one profile the
/// input's `BFDConfiguration` became; with several, says which peers need one named.
fn link_bfd_profiles(out: &mut Imported, profiles: &[Value], source: &str) {
    if profiles.is_empty() {
        return;
    }
    for d in out.documents.iter_mut() {
        if d["kind"] != "BGPPeer"
            || d["spec"]["failureDetectionMode"] != "BFDIfDirectlyConnected"
            || d["spec"].get("bfdProfile").is_some()
        {
            continue;
        }
        let name = d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (severity, reason) = match profiles {
            [one] => {
                d["spec"]["bfdProfile"] = one.clone();
                (
                    Severity::Converted,
                    format!(
                        "bfdProfile {one} added: the timers of BFDConfiguration {one}, the \
                         input's only one"
                    ),
                )
            }
            _ => (
                Severity::Dropped,
                format!(
                    "several BFDConfigurations ({}) became BFDProfiles: serval's timers are \
                     per peering, so set this peer's bfdProfile to the one of its nodes; \
                     until then its sessions run BFD at 300 ms x 3",
                    profiles
                        .iter()
                        .map(|p| p.as_str().unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        };
        out.findings.push(Finding {
            document: format!("{source}: (BGPPeer {name})"),
            path: "spec.failureDetectionMode".into(),
            severity,
            reason,
        });
    }
}

/// Collects the findings of one document.
struct Doc<'a> {
    label: String,
    findings: &'a mut Vec<Finding>,
    skipped: bool,
}

impl Doc<'_> {
    fn note(&mut self, path: &str, severity: Severity, reason: impl Into<String>) {
        if severity >= Severity::Skipped {
            self.skipped = true;
        }
        self.findings.push(Finding {
            document: self.label.clone(),
            path: path.to_owned(),
            severity,
            reason: reason.into(),
        });
    }
}

/// The fields of one mapping of the input, taken one by one; what is left at the end is
/// reported.
struct Fields {
    path: String,
    map: Map<String, Value>,
}

impl Fields {
    fn new(path: &str, v: Option<Value>) -> Fields {
        let map = match v {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        Fields {
            path: path.to_owned(),
            map,
        }
    }

    fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The field's value; `null` counts as absent.
    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    /// Copies the named fields as they are into `out`.
    fn copy(&mut self, keys: &[&str], out: &mut Map<String, Value>) {
        for k in keys {
            if let Some(v) = self.take(k) {
                out.insert((*k).to_owned(), v);
            }
        }
    }

    /// Reports every field not taken: with its reason from `known`, else as a field
    /// serval does not have (`unknown` severity).
    fn finish(self, doc: &mut Doc, known: &[(&str, Severity, &str)], unknown: Severity) {
        for (k, v) in self.map {
            if v.is_null() {
                continue;
            }
            let path = if self.path.is_empty() {
                k.clone()
            } else {
                format!("{}.{k}", self.path)
            };
            match known.iter().find(|(name, _, _)| *name == k) {
                Some((_, severity, reason)) => doc.note(&path, *severity, *reason),
                None => doc.note(
                    &path,
                    unknown,
                    "serval has no such field (not a field this importer knows)",
                ),
            }
        }
    }
}

fn one(item: Value, at: String, out: &mut Imported) {
    let kind = item["kind"].as_str().unwrap_or_default().to_owned();
    let name = item["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut doc = Doc {
        label: format!("{at} ({kind} {name})"),
        findings: &mut out.findings,
        skipped: false,
    };
    let api = item["apiVersion"].as_str().unwrap_or_default();
    if !CALICO_API.contains(&api) {
        doc.note(
            "apiVersion",
            Severity::Skipped,
            format!(
                "{api:?} is not a Calico v3 resource ({})",
                CALICO_API.join(" or ")
            ),
        );
        return;
    }
    if name.is_empty() {
        doc.note("metadata.name", Severity::Error, "missing");
        return;
    }
    let labels = item["metadata"]["labels"].clone();
    let mut top = Fields::new("", Some(item));
    for k in ["apiVersion", "kind", "metadata", "status"] {
        // Server-set metadata (uid, resourceVersion, annotations…) and live status are
        // not configuration.
        top.take(k);
    }
    let spec = Fields::new("spec", top.take("spec"));
    top.finish(&mut doc, &[], Severity::Dropped);

    let converted = match kind.as_str() {
        "BGPConfiguration" => Some((
            "BGPConfiguration",
            name.clone(),
            bgp_configuration(spec, &mut doc),
        )),
        "BGPPeer" => Some(("BGPPeer", name.clone(), bgp_peer(spec, &mut doc))),
        "BGPFilter" => Some(("BGPFilter", name.clone(), bgp_filter(spec, &mut doc))),
        "IPPool" => Some(("IPPool", name.clone(), ip_pool(spec, &mut doc))),
        "Node" => Some(("ServalNode", name.clone(), node(spec, &mut doc))),
        "IPAMConfiguration" | "IPAMConfig" => Some((
            "IPAMConfig",
            "default".to_owned(),
            ipam_config(spec, &mut doc),
        )),
        "IPReservation" => Some((
            "IPReservation",
            name.clone(),
            ip_reservation(spec, &mut doc),
        )),
        "CalicoNodeStatus" => Some((
            "ServalNodeStatus",
            name.clone(),
            node_status(spec, &mut doc),
        )),
        "BFDConfiguration" => Some((
            "BFDProfile",
            name.clone(),
            bfd_configuration(spec, &mut doc),
        )),
        "KubeControllersConfiguration" => kube_controllers(spec, &mut doc)
            .map(|spec| ("BGPConfiguration", "default".to_owned(), spec)),
        other => {
            doc.note("", Severity::Skipped, unsupported_kind(other));
            None
        }
    };
    let Some((kind, name, spec)) = converted else {
        return;
    };
    if doc.skipped {
        return;
    }
    let mut metadata = json!({ "name": name });
    if labels.as_object().is_some_and(|l| !l.is_empty()) {
        metadata["labels"] = labels;
    }
    let document = json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": metadata,
        "spec": Value::Object(spec),
    });
    match check(&document) {
        Ok(()) => out.documents.push(document),
        Err(errors) => {
            for (path, e) in errors {
                doc.note(&path, Severity::Error, e);
            }
        }
    }
}

fn unsupported_kind(kind: &str) -> String {
    match kind {
        "NetworkPolicy"
        | "GlobalNetworkPolicy"
        | "StagedNetworkPolicy"
        | "StagedGlobalNetworkPolicy"
        | "StagedKubernetesNetworkPolicy"
        | "NetworkSet"
        | "GlobalNetworkSet"
        | "Tier"
        | "HostEndpoint" => {
            format!("serval does not enforce network policy: {kind} has no equivalent")
        }
        "FelixConfiguration" | "ClusterInformation" => {
            format!("{kind} configures Calico's own components; serval's agent takes its settings from the chart values (serval node run)")
        }
        "WorkloadEndpoint" | "IPAMBlock" | "BlockAffinity" | "IPAMHandle" => {
            format!("{kind} is live IPAM or endpoint state, not configuration: serval's IPAM builds its own")
        }
        "" => "no kind".into(),
        _ => format!("serval has no equivalent of {kind}"),
    }
}

/// The produced document through serval's own parsing: (field path, error) pairs.
fn check(doc: &Value) -> Result<(), Vec<(String, String)>> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let one = |path: &str, e: String| Err(vec![(path.to_owned(), e)]);
    match kind {
        "IPPool" => {
            let mut spec = doc["spec"].clone();
            spec["name"] = doc["metadata"]["name"].clone();
            match serde_json::from_value::<ipam::model::IpPool>(spec) {
                Ok(p) => p.validate().or_else(|e| one("spec", e.to_string())),
                Err(e) => one("spec", e.to_string()),
            }
        }
        "IPAMConfig" => serde_json::from_value::<ipam::crd::IPAMConfigSpec>(doc["spec"].clone())
            .map(drop)
            .or_else(|e| one("spec", e.to_string())),
        "ServalNodeStatus" => serde_json::from_value::<
            crate::resources::node_status::ServalNodeStatusSpec,
        >(doc["spec"].clone())
        .map(drop)
        .or_else(|e| one("spec", e.to_string())),
        _ => {
            let text =
                serde_yaml::to_string(doc).map_err(|e| vec![(String::new(), e.to_string())])?;
            crate::resources::document::parse(&text)
                .map(drop)
                .map_err(|errs| {
                    errs.0
                        .into_iter()
                        .map(|e| (e.error.path, e.error.message))
                        .collect()
                })
        }
    }
}

/// Calico's AS numbers: a number, a numeric string, or asdot `HIGH.LOW` (RFC 5396).
fn as_number(v: &Value) -> Result<Value, String> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => match s.split_once('.') {
            Some((hi, lo)) => match (hi.parse::<u64>(), lo.parse::<u64>()) {
                (Ok(hi), Ok(lo)) if hi <= 0xFFFF && lo <= 0xFFFF => Some(hi << 16 | lo),
                _ => None,
            },
            None => s.parse().ok(),
        },
        _ => None,
    };
    match n {
        Some(n) if n <= u64::from(u32::MAX) => Ok(json!(n)),
        _ => Err(format!("{v} is not an AS number")),
    }
}

/// An AS number field (`asNumber`, `localASNumber`) in every form Calico takes.
fn take_asn(f: &mut Fields, key: &str, out: &mut Map<String, Value>, doc: &mut Doc) {
    if let Some(v) = f.take(key) {
        match as_number(&v) {
            Ok(n) => {
                if n != v {
                    doc.note(
                        &f.at(key),
                        Severity::Converted,
                        format!("{v} written as {n}"),
                    );
                }
                out.insert(key.to_owned(), n);
            }
            Err(e) => doc.note(&f.at(key), Severity::Error, e),
        }
    }
}

/// Calico's `BGPPassword` is `{secretKeyRef: {name, key}}`, serval's too; the Secret is
/// read in serval's namespace, not Calico's.
fn take_password(f: &mut Fields, key: &str, out: &mut Map<String, Value>, doc: &mut Doc) {
    let Some(v) = f.take(key) else { return };
    let mut p = Fields::new(&f.at(key), Some(v));
    let mut pw = Map::new();
    if let Some(r) = p.take("secretKeyRef") {
        let name = r["name"].as_str().unwrap_or_default().to_owned();
        doc.note(
            &p.at("secretKeyRef"),
            Severity::Converted,
            format!(
                "serval reads Secret {name:?} in its own namespace (copy it there from Calico's) \
                 and only if the chart lists it in bgpPasswordSecrets"
            ),
        );
        pw.insert("secretKeyRef".into(), r);
    }
    p.finish(doc, &[], Severity::Dropped);
    if !pw.is_empty() {
        out.insert(key.to_owned(), Value::Object(pw));
    }
}

fn bgp_configuration(mut f: Fields, doc: &mut Doc) -> Map<String, Value> {
    let mut out = Map::new();
    f.copy(
        &[
            "logSeverityScreen",
            "nodeToNodeMeshEnabled",
            "listenPort",
            "communities",
            "prefixAdvertisements",
            "serviceClusterIPs",
            "serviceExternalIPs",
            "serviceLoadBalancerIPs",
            "serviceLoadBalancerAggregation",
            "nodeMeshMaxRestartTime",
            "ignoredInterfaces",
        ],
        &mut out,
    );
    take_asn(&mut f, "asNumber", &mut out, doc);
    take_password(&mut f, "nodeMeshPassword", &mut out, doc);
    if let Some(v) = f.take("programClusterRoutes") {
        doc.note(
            &f.at("programClusterRoutes"),
            Severity::Dropped,
            format!(
                "{v}: chooses whether Calico's Felix or its BIRD programs the IP-in-IP routes; \
                 serval's agent programs every pod route itself (direct, IP-in-IP and VXLAN \
                 alike) from the routes its own BGP speaker learned, so either value works \
                 as serval always does"
            ),
        );
    }
    const ROUTE_PRIORITY: &str =
        "serval programs its routes with its own priority; the kernel route metric is not configurable";
    f.finish(
        doc,
        &[
            ("bindMode", Severity::Dropped, "serval's speaker listens on every address of the node (listenPort); it has no NodeIP bind mode"),
            ("localWorkloadPeeringIPV4", Severity::Dropped, "serval has no BGP peering with workloads on the node"),
            ("localWorkloadPeeringIPV6", Severity::Dropped, "serval has no BGP peering with workloads on the node"),
            ("ipv4NormalRoutePriority", Severity::Dropped, ROUTE_PRIORITY),
            ("ipv6NormalRoutePriority", Severity::Dropped, ROUTE_PRIORITY),
            ("ipv4ElevatedRoutePriority", Severity::Dropped, ROUTE_PRIORITY),
            ("ipv6ElevatedRoutePriority", Severity::Dropped, ROUTE_PRIORITY),
        ],
        Severity::Dropped,
    );
    out
}

fn bgp_peer(mut f: Fields, doc: &mut Doc) -> Map<String, Value> {
    let mut out = Map::new();
    f.copy(
        &[
            "node",
            "peerIP",
            "nodeSelector",
            "peerSelector",
            "keepOriginalNextHop",
            "nextHopMode",
            "reversePeering",
            "sourceAddress",
            "maxRestartTime",
            "numAllowedLocalASNumbers",
            "ttlSecurity",
            "filters",
            "reachableBy",
            "keepAliveTime",
            "failureDetectionMode",
        ],
        &mut out,
    );
    take_asn(&mut f, "asNumber", &mut out, doc);
    take_asn(&mut f, "localASNumber", &mut out, doc);
    take_password(&mut f, "password", &mut out, doc);
    if let Some(v) = f.take("keepaliveTime") {
        doc.note(
            &f.at("keepaliveTime"),
            Severity::Converted,
            "written as keepAliveTime, serval's name of the field",
        );
        out.insert("keepAliveTime".into(), v);
    }
    // Enumerations whose Calico default is what serval does: only other values are
    // reported.
    let mode = |f: &mut Fields, key: &str| f.take(key).map(|v| (f.at(key), v));
    if let Some((path, v)) = mode(&mut f, "restartMode") {
        if v != "GracefulRestart" {
            doc.note(
                &path,
                Severity::Dropped,
                format!(
                    "{v}: serval does graceful restart (RFC 4724), not long-lived graceful restart"
                ),
            );
        }
    }
    if let Some((path, v)) = mode(&mut f, "birdGatewayMode") {
        if v != "Recursive" {
            doc.note(
                &path,
                Severity::Dropped,
                format!("{v}: a BIRD setting; serval resolves next hops itself"),
            );
        }
    }
    f.finish(
        doc,
        &[
            ("localWorkloadSelector", Severity::Skipped, "serval has no BGP peering with workloads: without the selector this would be a peering with routers"),
        ],
        Severity::Dropped,
    );
    out
}

/// Calico Enterprise's defaults of a `BFDConfiguration` interface entry.
const CALICO_BFD_RECV_MS: u64 = 10;
const CALICO_BFD_SEND_MS: u64 = 100;
const CALICO_BFD_MULTIPLIER: u64 = 5;

/// A `BFDConfiguration` as a `BFDProfile` of the same name: the timers of its first
/// interface entry. serval's timers are per peering, not per node and interface: the
/// selector and the patterns are reported, and further entries too.
fn bfd_configuration(mut f: Fields, doc: &mut Doc) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(sel) = f.take("nodeSelector") {
        doc.note(
            &f.at("nodeSelector"),
            Severity::Converted,
            format!(
                "{sel}: a BFDProfile applies to the sessions that name it (a BGPPeer's \
                 bfdProfile, the mesh's nodeMeshBFDProfile), not to nodes"
            ),
        );
    }
    let path = f.at("interfaces");
    let entries = match f.take("interfaces") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) | None => {
            doc.note(
                &path,
                Severity::Skipped,
                "no interfaces: this BFDConfiguration turns BFD on nowhere",
            );
            return out;
        }
        Some(_) => {
            doc.note(&path, Severity::Error, "not a list");
            return out;
        }
    };
    let mut entries = entries.into_iter();
    let mut e = Fields::new(&format!("{path}[0]"), entries.next());
    for (i, _) in entries.enumerate() {
        doc.note(
            &format!("{path}[{}]", i + 1),
            Severity::Dropped,
            "a BFDProfile has one set of timers: only interfaces[0] is carried; make a \
             BFDProfile of these timers and name it from the BGPPeers concerned",
        );
    }
    if let Some(p) = e.take("matchPattern").filter(|p| p != "*") {
        doc.note(
            &e.at("matchPattern"),
            Severity::Converted,
            format!(
                "{p}: serval does not select interfaces; the profile's timers apply to \
                 every session that names it"
            ),
        );
    }
    let mut ms = |e: &mut Fields, calico: &str, default: u64, min: u64, max: u64| {
        let at = e.at(calico);
        let v = match e.take(calico) {
            None => default,
            Some(v) => match v.as_str().map(str::parse::<GoDuration>) {
                Some(Ok(d)) => u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX),
                _ => {
                    doc.note(&at, Severity::Error, format!("{v} is not a duration"));
                    return None;
                }
            },
        };
        let clamped = v.clamp(min, max);
        if clamped != v {
            doc.note(
                &at,
                Severity::Converted,
                format!("{v} ms written as {clamped} ms, the nearest a BFDProfile takes"),
            );
        }
        Some(clamped)
    };
    if let Some(v) = ms(
        &mut e,
        "minimumRecvInterval",
        CALICO_BFD_RECV_MS,
        10,
        60_000,
    ) {
        out.insert("receiveInterval".into(), json!(v));
    }
    if let Some(v) = ms(
        &mut e,
        "minimumSendInterval",
        CALICO_BFD_SEND_MS,
        10,
        60_000,
    ) {
        out.insert("transmitInterval".into(), json!(v));
    }
    let at = e.at("multiplier");
    let mult = match e.take("multiplier") {
        None => Some(CALICO_BFD_MULTIPLIER),
        Some(v) => {
            let n = v.as_u64();
            if n.is_none() {
                doc.note(&at, Severity::Error, format!("{v} is not a number"));
            }
            n
        }
    };
    if let Some(m) = mult {
        let clamped = m.clamp(2, 255);
        if clamped != m {
            doc.note(
                &at,
                Severity::Converted,
                format!("{m} written as {clamped}: a BFDProfile's detectMultiplier is 2 to 255"),
            );
        }
        out.insert("detectMultiplier".into(), json!(clamped));
    }
    e.finish(
        doc,
        &[(
            "idleSendInterval",
            Severity::Dropped,
            "serval sends once a second while a session is not Up (RFC 5880 §6.8.3); that \
             interval is not configurable",
        )],
        Severity::Dropped,
    );
    f.finish(doc, &[], Severity::Dropped);
    out
}

fn bgp_filter(mut f: Fields, doc: &mut Doc) -> Map<String, Value> {
    let mut out = Map::new();
    for list in ["exportV4", "importV4", "exportV6", "importV6"] {
        let Some(rules) = f.take(list) else { continue };
        let path = f.at(list);
        let Value::Array(rules) = rules else {
            doc.note(&path, Severity::Error, "not a list");
            continue;
        };
        let mut converted = Vec::new();
        for (i, rule) in rules.into_iter().enumerate() {
            let mut r = Fields::new(&format!("{path}[{i}]"), Some(rule));
            let mut o = Map::new();
            r.copy(
                &[
                    "action",
                    "matchOperator",
                    "cidr",
                    "prefixLength",
                    "source",
                    "interface",
                    "peerType",
                    "communities",
                ],
                &mut o,
            );
            if let Some(v) = r.take("asPathPrefix") {
                let at = r.at("asPathPrefix");
                if let Some(list) = as_numbers(&v, &at, doc) {
                    o.insert("asPathPrefix".into(), list);
                }
            }
            if let Some(v) = r.take("operations") {
                let at = r.at("operations");
                let ops = filter_operations(v, &at, doc);
                if ops.as_array().is_some_and(|a| !a.is_empty()) {
                    o.insert("operations".into(), ops);
                }
            }
            r.finish(
                doc,
                &[(
                    "priority",
                    Severity::Skipped,
                    "matches the kernel route metric, which serval does not set per route: \
                     without this condition the rule would match more routes",
                )],
                // An unknown condition could narrow the rule too.
                Severity::Skipped,
            );
            converted.push(Value::Object(o));
        }
        out.insert(list.to_owned(), Value::Array(converted));
    }
    f.finish(doc, &[], Severity::Dropped);
    out
}

/// A list of AS numbers in any of Calico's forms, as numbers.
fn as_numbers(v: &Value, at: &str, doc: &mut Doc) -> Option<Value> {
    let Value::Array(items) = v else {
        doc.note(at, Severity::Error, "not a list");
        return None;
    };
    let mut out = Vec::new();
    for (i, a) in items.iter().enumerate() {
        match as_number(a) {
            Ok(n) => out.push(n),
            Err(e) => {
                doc.note(&format!("{at}[{i}]"), Severity::Error, e);
                return None;
            }
        }
    }
    Some(Value::Array(out))
}

/// A BGPFilter rule's `operations`: `addCommunity` and `prependASPath` as they are;
/// `setPriority` (the kernel route metric) is not carried: the rule still accepts and
/// rejects the same routes.
fn filter_operations(v: Value, at: &str, doc: &mut Doc) -> Value {
    let Value::Array(ops) = v else {
        doc.note(at, Severity::Error, "not a list");
        return Value::Array(Vec::new());
    };
    let mut out = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        let mut f = Fields::new(&format!("{at}[{i}]"), Some(op));
        let mut o = Map::new();
        f.copy(&["addCommunity"], &mut o);
        if let Some(p) = f.take("prependASPath") {
            let path = f.at("prependASPath");
            let mut pf = Fields::new(&path, Some(p));
            if let Some(prefix) = pf.take("prefix") {
                if let Some(list) = as_numbers(&prefix, &pf.at("prefix"), doc) {
                    o.insert("prependASPath".into(), json!({ "prefix": list }));
                }
            }
            pf.finish(doc, &[], Severity::Dropped);
        }
        f.finish(
            doc,
            &[(
                "setPriority",
                Severity::Dropped,
                "sets the kernel route metric; serval programs its routes with one priority of its own",
            )],
            Severity::Dropped,
        );
        if !o.is_empty() {
            out.push(Value::Object(o));
        }
    }
    Value::Array(out)
}

fn ip_pool(mut f: Fields, doc: &mut Doc) -> Map<String, Value> {
    let mut out = Map::new();
    f.copy(
        &[
            "cidr",
            "blockSize",
            "ipipMode",
            "vxlanMode",
            "natOutgoing",
            "disabled",
            "disableBGPExport",
            "nodeSelector",
            "allowedUses",
            "namespaceSelector",
            "assignmentMode",
        ],
        &mut out,
    );
    // Calico's defaults, written out: serval's IPPool requires the block size.
    if !out.contains_key("blockSize") {
        let v6 = out
            .get("cidr")
            .and_then(Value::as_str)
            .is_some_and(|c| c.contains(':'));
        let size = if v6 {
            ipam::model::DEFAULT_IPV6_BLOCK_SIZE
        } else {
            ipam::model::DEFAULT_IPV4_BLOCK_SIZE
        };
        out.insert("blockSize".into(), json!(size));
    }
    // The v1 API's fields, which calicoctl still accepts.
    if let Some(ipip) = f.take("ipip") {
        let path = f.at("ipip");
        if !out.contains_key("ipipMode") {
            let enabled = ipip["enabled"].as_bool().unwrap_or(true);
            let mode = match (enabled, ipip["mode"].as_str()) {
                (false, _) => "Never",
                (true, Some("cross-subnet")) => "CrossSubnet",
                _ => "Always",
            };
            doc.note(
                &path,
                Severity::Converted,
                format!("deprecated; written as ipipMode: {mode}"),
            );
            out.insert("ipipMode".into(), json!(mode));
        } else {
            doc.note(&path, Severity::Dropped, "deprecated, and ipipMode is set");
        }
    }
    if let Some(nat) = f.take("nat-outgoing") {
        let path = f.at("nat-outgoing");
        if out.contains_key("natOutgoing") {
            doc.note(
                &path,
                Severity::Dropped,
                "deprecated, and natOutgoing is set",
            );
        } else {
            doc.note(
                &path,
                Severity::Converted,
                "deprecated; written as natOutgoing",
            );
            out.insert("natOutgoing".into(), nat);
        }
    }
    f.finish(doc, &[], Severity::Dropped);
    out
}

fn node(mut f: Fields, doc: &mut Doc) -> Map<String, Value> {
    let mut out = Map::new();
    f.copy(
        &[
            "ipv4VXLANTunnelAddr",
            "vxlanTunnelMACAddr",
            "ipv6VXLANTunnelAddr",
            "vxlanTunnelMACAddrV6",
        ],
        &mut out,
    );
    if let Some(bgp) = f.take("bgp") {
        let mut b = Fields::new(&f.at("bgp"), Some(bgp));
        let mut o = Map::new();
        b.copy(&["routeReflectorClusterID", "ipv4IPIPTunnelAddr"], &mut o);
        take_asn(&mut b, "asNumber", &mut o, doc);
        for (key, host) in [("ipv4Address", "/32"), ("ipv6Address", "/128")] {
            if let Some(v) = b.take(key) {
                let v = match v.as_str() {
                    Some(s) if !s.contains('/') => {
                        doc.note(
                            &b.at(key),
                            Severity::Converted,
                            format!("{s} has no prefix length: written as {s}{host} (the agent cannot tell which peers share its subnet)"),
                        );
                        json!(format!("{s}{host}"))
                    }
                    _ => v,
                };
                o.insert(key.to_owned(), v);
            }
        }
        b.finish(doc, &[], Severity::Dropped);
        out.insert("bgp".into(), Value::Object(o));
    }
    f.finish(
        doc,
        &[
            (
                "orchRefs",
                Severity::Dropped,
                "a ServalNode is named after its Kubernetes node",
            ),
            (
                "addresses",
                Severity::Dropped,
                "the agent detects the node's addresses itself (chart values agent.ip…)",
            ),
            (
                "wireguard",
                Severity::Dropped,
                "serval has no WireGuard encryption",
            ),
            (
                "interfaceName",
                Severity::Dropped,
                "the agent detects the node's addresses itself",
            ),
        ],
        Severity::Dropped,
    );
    out
}

/// Calico's kube-controllers settings: only the LoadBalancer controller's `assignIPs` has a
/// place in serval (BGPConfiguration `default` `loadBalancerAssignIPs`); `None` when the
/// input has none.
fn kube_controllers(mut f: Fields, doc: &mut Doc) -> Option<Map<String, Value>> {
    const OWN: &str = "configures a controller of Calico's kube-controllers; serval's agent does \
                       that work itself (the node collector on the Lease holder) with its own settings";
    const PROCESS: &str = "configures Calico's kube-controllers process; serval's agent takes its \
                           settings from the chart values (serval node run)";
    let mut out = Map::new();
    let mut controllers = Fields::new(&f.at("controllers"), f.take("controllers"));
    match controllers.take("loadBalancer") {
        None => doc.note(
            &controllers.at("loadBalancer"),
            Severity::Dropped,
            "absent: Calico's LoadBalancer controller is off; serval gives LoadBalancer \
             Services addresses whenever an IPPool has allowedUses [LoadBalancer], so create \
             no such pool to keep it idle",
        ),
        Some(v) => {
            let mut lb = Fields::new(&controllers.at("loadBalancer"), Some(v));
            // Calico's default when the controller is on.
            let assign = lb.take("assignIPs").unwrap_or_else(|| json!("AllServices"));
            doc.note(
                &lb.at("assignIPs"),
                Severity::Converted,
                format!(
                    "{assign}: written as loadBalancerAssignIPs of BGPConfiguration default, \
                     where serval keeps it"
                ),
            );
            out.insert("loadBalancerAssignIPs".into(), assign);
            lb.finish(doc, &[], Severity::Dropped);
        }
    }
    controllers.finish(
        doc,
        &[
            ("node", Severity::Dropped, OWN),
            ("policy", Severity::Dropped, OWN),
            ("workloadEndpoint", Severity::Dropped, OWN),
            ("serviceAccount", Severity::Dropped, OWN),
            ("namespace", Severity::Dropped, OWN),
            ("policyMigration", Severity::Dropped, OWN),
        ],
        Severity::Dropped,
    );
    f.finish(
        doc,
        &[
            ("logSeverityScreen", Severity::Dropped, PROCESS),
            ("healthChecks", Severity::Dropped, PROCESS),
            ("etcdV3CompactionPeriod", Severity::Dropped, PROCESS),
            ("prometheusMetricsPort", Severity::Dropped, PROCESS),
            ("debugProfilePort", Severity::Dropped, PROCESS),
        ],
        Severity::Dropped,
    );
    (!out.is_empty()).then_some(out)
}

fn ip_reservation(mut f: Fields, doc: &mut Doc) -> Map<String, Value> {
    let mut out = Map::new();
    f.copy(&["reservedCIDRs"], &mut out);
    f.finish(doc, &[], Severity::Dropped);
    out
}

fn ipam_config(mut f: Fields, doc: &mut Doc) -> Map<String, Value> {
    let mut out = Map::new();
    f.copy(
        &["strictAffinity", "maxBlocksPerHost", "autoAllocateBlocks"],
        &mut out,
    );
    f.finish(doc, &[], Severity::Dropped);
    out
}

fn node_status(mut f: Fields, doc: &mut Doc) -> Map<String, Value> {
    let mut out = Map::new();
    f.copy(&["node", "classes", "updatePeriodSeconds"], &mut out);
    f.finish(doc, &[], Severity::Dropped);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_numbers_in_every_calico_form() {
        assert_eq!(as_number(&json!(64512)), Ok(json!(64512)));
        assert_eq!(as_number(&json!("64512")), Ok(json!(64512)));
        assert_eq!(as_number(&json!("1.10")), Ok(json!(65546)));
        assert_eq!(as_number(&json!("4294967295")), Ok(json!(4294967295u64)));
        for bad in [json!("4294967296"), json!("1.65536"), json!("x"), json!(-1)] {
            assert!(as_number(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_are_unrolled_and_foreign_documents_skipped() {
        let text = "apiVersion: projectcalico.org/v3\nkind: BGPPeerList\nitems:\n\
            - apiVersion: projectcalico.org/v3\n  kind: BGPPeer\n  metadata: {name: a}\n  spec: {peerIP: 192.0.2.1, asNumber: 65000}\n\
            - apiVersion: projectcalico.org/v3\n  kind: BGPPeer\n  metadata: {name: b}\n  spec: {peerIP: 192.0.2.2, asNumber: 65000}\n\
            ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        let r = import(text, "x.yaml").unwrap();
        assert_eq!(r.documents.len(), 2);
        assert_eq!(r.documents[1]["metadata"]["name"], "b");
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        assert_eq!(r.findings[0].severity, Severity::Skipped);
        assert!(r.findings[0].document.starts_with("x.yaml: document 2"));
    }

    #[test]
    fn invalid_values_are_errors_not_output() {
        let text = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: a}\n\
            spec: {peerIP: 192.0.2.300, asNumber: 65000}\n";
        let r = import(text, "x").unwrap();
        assert!(r.documents.is_empty());
        assert!(r.incomplete());
        assert_eq!(r.findings[0].path, "spec.peerIP");
        assert_eq!(r.findings[0].severity, Severity::Error);
    }
}
