//! What the API server checks before an object is stored, beyond the shapes the Rust
//! types give: address and CIDR formats, ranges, and CEL rules where one field depends on
//! another. The agent's typed parsing (`src/resources/`, `ipam::model`) stays the
//! authority; these rules make `kubectl apply` refuse what the agent would refuse, so a
//! mistake shows at apply time and not in the agent's log.
//!
//! Formats are the ones the API server knows (`ipv4`, `ipv6`, `cidr`, `date-time`); it
//! has no `ip` format, hence `anyOf` of the two families. CEL rules use only the base
//! language (`has`, string `contains`/`startsWith`, `duration`), no Kubernetes IP/CIDR
//! library, so they work on every server with CRD validation rules (1.25+). Lists that a
//! rule iterates and strings a rule reads have a bound (`maxItems`, `maxLength`) so the
//! server's CEL cost estimate stays within its budget.

use serde_json::{json, Value};

/// One edit: keywords merged into the schema node at `path` (see `schema::node_mut`).
pub struct Patch {
    pub path: String,
    pub with: Value,
}

fn at(path: impl Into<String>, with: Value) -> Patch {
    Patch {
        path: path.into(),
        with,
    }
}

const IPV4_OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";

fn ipv4_re() -> String {
    format!("{o}(\\.{o}){{3}}", o = IPV4_OCTET)
}

/// An IPv4 or IPv6 address.
fn ip() -> Value {
    json!({"maxLength": 45, "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})
}

fn ipv4() -> Value {
    json!({"maxLength": 15, "format": "ipv4"})
}

fn ipv6() -> Value {
    json!({"maxLength": 45, "format": "ipv6"})
}

/// A CIDR of either family (host bits allowed, as in `net.ParseCIDR`).
fn cidr() -> Value {
    json!({"maxLength": 49, "format": "cidr"})
}

/// An IPv4 CIDR.
fn cidr_v4() -> Value {
    json!({"maxLength": 18, "format": "cidr",
        "pattern": format!("^{}/([0-9]|[12][0-9]|3[0-2])$", ipv4_re())})
}

/// An IPv6 CIDR.
fn cidr_v6() -> Value {
    json!({"maxLength": 49, "format": "cidr", "pattern": "^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*/[0-9]{1,3}$"})
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT`, as Calico's `peerIP`.
fn ip_maybe_port() -> Value {
    json!({"maxLength": 53, "anyOf": [
        {"format": "ipv4"},
        {"format": "ipv6"},
        {"pattern": format!("^{}:[0-9]{{1,5}}$", ipv4_re())},
        {"pattern": "^\\[[0-9A-Fa-f:.]+\\]:[0-9]{1,5}$"},
    ]})
}

/// A 4-byte AS number (RFC 6793); 0 is reserved (RFC 7607).
fn asn() -> Value {
    json!({"minimum": 1, "maximum": 4_294_967_295u64})
}

fn port() -> Value {
    json!({"minimum": 1, "maximum": 65535})
}

/// A Go duration (`90s`, `1h30m`, `500ms`).
fn duration() -> Value {
    json!({"maxLength": 64, "pattern": "^(0|([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$"})
}

fn mac() -> Value {
    json!({"pattern": "^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$"})
}

/// A Kubernetes object name (DNS subdomain, RFC 1123).
fn object_name() -> Value {
    json!({"minLength": 1, "maxLength": 253,
        "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"})
}

/// A label selector in Kubernetes or Calico syntax; the agent parses it.
fn selector() -> Value {
    json!({"maxLength": 1024})
}

fn cel(rule: &str, message: &str) -> Value {
    json!({"x-kubernetes-validations": [{"rule": rule, "message": message}]})
}

fn cel_at(rule: &str, message: &str, field: &str) -> Value {
    json!({"x-kubernetes-validations": [{"rule": rule, "message": message, "fieldPath": field}]})
}

/// A field that cannot change once set: the allocator's blocks are cut from it.
fn immutable(what: &str) -> Value {
    json!({"x-kubernetes-validations": [{
        "rule": "self == oldSelf",
        "message": format!("{what} cannot change; create a new object and delete this one"),
    }]})
}

/// The shared BGP password shape (`BgpPassword`): exactly one source.
fn password(path: &str) -> Vec<Patch> {
    vec![
        at(
            path,
            cel(
                "(has(self.secretKeyRef) ? 1 : 0) + (has(self.value) ? 1 : 0) + (has(self.file) ? 1 : 0) == 1",
                "give exactly one of secretKeyRef, value, file",
            ),
        ),
        // RFC 2385 keys; Linux accepts up to 80 bytes (TCP_MD5SIG_MAXKEYLEN).
        at(
            format!("{path}.value"),
            json!({"minLength": 1, "maxLength": 80}),
        ),
        at(format!("{path}.secretKeyRef.name"), object_name()),
        at(
            format!("{path}.secretKeyRef.key"),
            json!({"minLength": 1, "maxLength": 253, "pattern": "^[-._a-zA-Z0-9]+$"}),
        ),
    ]
}

/// A one-line description of each kind, for `kubectl explain`.
pub fn description(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "BGPConfiguration" => "Cluster-wide BGP settings (Calico's BGPConfiguration): the object named `default` applies to every node, `node.<node name>` to one node.",
        "BGPPeer" => "A BGP peering of some nodes with a router or with other nodes (Calico's BGPPeer).",
        "BGPFilter" => "Import and export prefix filters that BGPPeers refer to by name (Calico's BGPFilter).",
        "ServalNode" => "One node's networking: BGP address, AS, route reflector cluster id and tunnel addresses (Calico's Node). Written by the node's agent.",
        "ServalNodeStatus" => "The live state of one node's agent, BGP sessions and routes (Calico's CalicoNodeStatus). Create it naming a node; that node's agent fills the status.",
        "IPPool" => "A range of pod addresses cut into node-affine blocks (Calico's IPPool).",
        "IPReservation" => "Addresses the IPAM never hands out: CIDRs or single addresses (Calico's IPReservation).",
        "BFDProfile" => "BFD timers (RFC 5880, milliseconds) that BGP sessions refer to by name: a BGPPeer's bfdProfile, the mesh's nodeMeshBFDProfile (MetalLB's BFDProfile).",
        "IPAMBlock" => "One block of an IP pool and its allocations (Calico's IPAMBlock). Written by the agents' IPAM.",
        "BlockAffinity" => "A node's claim on a block (Calico's BlockAffinity). Written by the agents' IPAM.",
        "IPAMHandle" => "The addresses given to one handle (a pod's network), counted per block (Calico's IPAMHandle). Written by the agents' IPAM.",
        "IPAMConfig" => "Cluster-wide IPAM settings (Calico's IPAMConfiguration); one object named `default`.",
        _ => return None,
    })
}

/// The edits of one kind's schema (rooted at `openAPIV3Schema`).
pub fn patches(kind: &str) -> Vec<Patch> {
    match kind {
        "BGPConfiguration" => bgp_configuration(),
        "BGPPeer" => bgp_peer(),
        "BGPFilter" => bgp_filter(),
        "ServalNode" => serval_node(),
        "ServalNodeStatus" => serval_node_status(),
        "IPPool" => ip_pool(),
        "BFDProfile" => bfd_profile(),
        // A CIDR (host bits allowed, as in Calico) or a single address.
        "IPReservation" => vec![at(
            "spec.reservedCIDRs[]",
            json!({"maxLength": 49, "anyOf": [{"format": "cidr"}, {"format": "ipv4"}, {"format": "ipv6"}]}),
        )],
        "IPAMBlock" => ipam_block(),
        "BlockAffinity" => block_affinity(),
        "IPAMHandle" => vec![at(
            "spec.handleId",
            json!({"minLength": 1, "maxLength": 1024}),
        )],
        "IPAMConfig" => vec![at(
            "",
            cel(
                "self.metadata.name == 'default'",
                "the IPAM configuration is the object named default",
            ),
        )],
        _ => Vec::new(),
    }
}

fn bgp_configuration() -> Vec<Patch> {
    let mut p = vec![
        at(
            "",
            cel(
                "self.metadata.name == 'default' || self.metadata.name.startsWith('node.')",
                "a BGPConfiguration is named default (every node) or node.<node name> (one node)",
            ),
        ),
        at("spec.asNumber", asn()),
        at("spec.listenPort", port()),
        at("spec.communities", json!({"maxItems": 256})),
        at(
            "spec.communities[].name",
            json!({"minLength": 1, "maxLength": 64}),
        ),
        at("spec.communities[].value", community_value()),
        at("spec.prefixAdvertisements[].cidr", cidr()),
        at("spec.serviceClusterIPs[].cidr", cidr()),
        at("spec.serviceExternalIPs[].cidr", cidr()),
        at("spec.serviceLoadBalancerIPs[].cidr", cidr()),
        at("spec.nodeMeshMaxRestartTime", duration()),
        at("spec.nodeMeshBFDProfile", object_name()),
        // IFNAMSIZ is 16 with the terminating NUL.
        at(
            "spec.ignoredInterfaces[]",
            json!({"minLength": 1, "maxLength": 15}),
        ),
    ];
    p.extend(password("spec.nodeMeshPassword"));
    p
}

fn bgp_peer() -> Vec<Patch> {
    let mut p = vec![
        at(
            "spec",
            cel_at(
                "!(has(self.node) && has(self.nodeSelector))",
                "give node or nodeSelector, not both",
                ".nodeSelector",
            ),
        ),
        at(
            "spec",
            cel_at(
                "has(self.peerIP) != has(self.peerSelector)",
                "give exactly one of peerIP (one router) or peerSelector (nodes)",
                ".peerIP",
            ),
        ),
        at(
            "spec",
            cel_at(
                "!has(self.peerIP) || has(self.asNumber)",
                "asNumber is required with peerIP",
                ".asNumber",
            ),
        ),
        at(
            "spec",
            cel_at(
                "!has(self.peerSelector) || !has(self.asNumber)",
                "with peerSelector the selected nodes' own AS numbers apply: remove asNumber",
                ".asNumber",
            ),
        ),
        at(
            "spec",
            cel_at(
                "!has(self.localASNumber) || has(self.peerIP)",
                "localASNumber only with peerIP (other serval nodes expect a node's own AS)",
                ".localASNumber",
            ),
        ),
        at(
            "spec",
            cel_at(
                "!has(self.reversePeering) || has(self.peerSelector)",
                "reversePeering only with peerSelector",
                ".reversePeering",
            ),
        ),
        at(
            "spec",
            cel_at(
                "!has(self.keepOriginalNextHop) || !self.keepOriginalNextHop || !has(self.nextHopMode) || self.nextHopMode == 'Keep'",
                "keepOriginalNextHop: true means nextHopMode Keep: give one of them",
                ".nextHopMode",
            ),
        ),
        at("spec.node", object_name()),
        at("spec.nodeSelector", selector()),
        at("spec.peerSelector", selector()),
        at("spec.peerIP", ip_maybe_port()),
        at("spec.asNumber", asn()),
        at("spec.localASNumber", asn()),
        // RFC 5082: the hop count a GTSM peer may be away, 1 (directly connected) to 255.
        at("spec.ttlSecurity", json!({"minimum": 1, "maximum": 255})),
        at("spec.maxRestartTime", duration()),
        // RFC 4724 §3: the restart time is a 12-bit number of seconds.
        at(
            "spec.maxRestartTime",
            cel(
                "duration(self) <= duration('4095s')",
                "graceful restart time is at most 4095s (RFC 4724)",
            ),
        ),
        at("spec.keepAliveTime", duration()),
        // The hold time (3 × keepalive) is 16 bits of seconds (RFC 4271 §4.2).
        at(
            "spec.keepAliveTime",
            cel(
                "duration(self) >= duration('1s') && duration(self) <= duration('21845s')",
                "keepAliveTime is 1s to 21845s (the hold time, 3 × keepalive, is 16-bit)",
            ),
        ),
        at("spec.filters", json!({"maxItems": 64})),
        at("spec.filters[]", object_name()),
        at("spec.bfdProfile", object_name()),
        at(
            "spec",
            cel_at(
                "!has(self.bfdProfile) || !has(self.failureDetectionMode) || self.failureDetectionMode != 'None'",
                "failureDetectionMode None turns BFD off, and bfdProfile asks for it: give one of them",
                ".failureDetectionMode",
            ),
        ),
        at("spec.reachableBy", ip()),
        at(
            "spec.maxPrefix.limit",
            json!({"minimum": 1, "maximum": 4_294_967_295u64}),
        ),
        at("spec.maxPrefix.restartAfter", duration()),
        at(
            "spec.maxPrefix.restartAfter",
            cel(
                "duration(self) >= duration('1s') && duration(self) <= duration('24h')",
                "restartAfter is 1s to 24h",
            ),
        ),
        at(
            "spec.maxPrefix",
            cel_at(
                "!has(self.restartAfter) || !has(self.action) || self.action == 'Shutdown'",
                "restartAfter only with action Shutdown (Warn never closes the session)",
                ".restartAfter",
            ),
        ),
    ];
    p.extend(password("spec.password"));
    p
}

/// MetalLB's ranges; echo mode is refused (serval's BFD runs the asynchronous mode only).
fn bfd_profile() -> Vec<Patch> {
    let interval = json!({"minimum": 10, "maximum": 60000});
    vec![
        at("spec.receiveInterval", interval.clone()),
        at("spec.transmitInterval", interval.clone()),
        at("spec.echoInterval", interval),
        at(
            "spec.detectMultiplier",
            json!({"minimum": 2, "maximum": 255}),
        ),
        at("spec.minimumTtl", json!({"minimum": 1, "maximum": 254})),
        at(
            "spec",
            cel_at(
                "!has(self.echoMode) || !self.echoMode",
                "echo mode is not implemented: serval's BFD runs the asynchronous mode only",
                ".echoMode",
            ),
        ),
    ]
}

/// A community as resources write it: standard `AS:VALUE`, large `AS:V1:V2`, or a
/// well-known name.
fn community_value() -> Value {
    json!({"pattern": "^([0-9]{1,5}:[0-9]{1,5}|[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}|no-export|no-advertise|no-export-subconfed|no-peer|graceful-shutdown|blackhole)$"})
}

fn bgp_filter() -> Vec<Patch> {
    let mut p = Vec::new();
    for (list, v4) in [
        ("exportV4", true),
        ("importV4", true),
        ("exportV6", false),
        ("importV6", false),
    ] {
        let max = if v4 { 32 } else { 128 };
        p.push(at(format!("spec.{list}"), json!({"maxItems": 1024})));
        p.push(at(
            format!("spec.{list}[]"),
            json!({"x-kubernetes-validations": [
                {"rule": "has(self.cidr) == has(self.matchOperator)",
                 "message": "cidr and matchOperator go together", "fieldPath": ".matchOperator"},
                {"rule": "!has(self.prefixLength) || (has(self.matchOperator) && self.matchOperator == 'In')",
                 "message": "prefixLength only with matchOperator In", "fieldPath": ".prefixLength"},
                {"rule": "!has(self.operations) || self.action == 'Accept'",
                 "message": "operations apply to accepted routes only", "fieldPath": ".operations"},
            ]}),
        ));
        let rule = |f: &str| format!("spec.{list}[].{f}");
        // IFNAMSIZ is 16 with the terminating NUL.
        p.push(at(
            rule("interface"),
            json!({"minLength": 1, "maxLength": 15}),
        ));
        p.push(at(rule("communities.values"), json!({"maxItems": 16})));
        p.push(at(rule("communities.values[]"), community_value()));
        p.push(at(rule("asPathPrefix"), json!({"maxItems": 32})));
        p.push(at(rule("asPathPrefix[]"), asn()));
        p.push(at(rule("operations"), json!({"maxItems": 16})));
        p.push(at(
            rule("operations[]"),
            cel(
                "has(self.addCommunity) != has(self.prependASPath)",
                "give exactly one of addCommunity, prependASPath",
            ),
        ));
        p.push(at(
            rule("operations[].addCommunity.value"),
            community_value(),
        ));
        p.push(at(
            rule("operations[].prependASPath.prefix"),
            json!({"maxItems": 16}),
        ));
        p.push(at(rule("operations[].prependASPath.prefix[]"), asn()));
        p.push(at(
            format!("spec.{list}[].cidr"),
            if v4 { cidr_v4() } else { cidr_v6() },
        ));
        p.push(at(
            format!("spec.{list}[].prefixLength"),
            cel(
                "!has(self.min) || !has(self.max) || self.min <= self.max",
                "prefixLength min is greater than max",
            ),
        ));
        for end in ["min", "max"] {
            p.push(at(
                format!("spec.{list}[].prefixLength.{end}"),
                json!({"minimum": 0, "maximum": max}),
            ));
        }
    }
    p
}

fn serval_node() -> Vec<Patch> {
    vec![
        at("spec.bgp.ipv4Address", cidr_v4()),
        at("spec.bgp.ipv6Address", cidr_v6()),
        at("spec.bgp.asNumber", asn()),
        at("spec.bgp.routeReflectorClusterID", ipv4()),
        at("spec.bgp.ipv4IPIPTunnelAddr", ipv4()),
        at("spec.ipv4VXLANTunnelAddr", ipv4()),
        at("spec.ipv6VXLANTunnelAddr", ipv6()),
        at("spec.vxlanTunnelMACAddr", mac()),
        at("spec.vxlanTunnelMACAddrV6", mac()),
    ]
}

fn serval_node_status() -> Vec<Patch> {
    vec![
        at("spec.node", object_name()),
        at(
            "spec.classes",
            json!({"maxItems": 3, "x-kubernetes-list-type": "set"}),
        ),
        at("status.agent.routerID", ipv4()),
        at("status.bgp.peersV4[].peerIP", ipv4()),
        at("status.bgp.peersV6[].peerIP", ipv6()),
        at("status.bgp.peersV4[].asNumber", asn()),
        at("status.bgp.peersV6[].asNumber", asn()),
        at("status.routes.routesV4[].destination", cidr_v4()),
        at("status.routes.routesV6[].destination", cidr_v6()),
        at("status.routes.routesV4[].gateway", ipv4()),
        at("status.routes.routesV6[].gateway", ipv6()),
        at("status.routes.routesV4[].learnedFrom.peerIP", ip()),
        at("status.routes.routesV6[].learnedFrom.peerIP", ip()),
    ]
}

fn ip_pool() -> Vec<Patch> {
    vec![
        at(
            "spec",
            cel_at(
                "self.cidr.contains(':') ? (self.blockSize >= 116 && self.blockSize <= 128) : (self.blockSize >= 20 && self.blockSize <= 32)",
                "blockSize is 20 to 32 for an IPv4 pool, 116 to 128 for an IPv6 pool",
                ".blockSize",
            ),
        ),
        at(
            "spec",
            cel_at(
                "!has(self.ipipMode) || !has(self.vxlanMode) || self.ipipMode == 'Never' || self.vxlanMode == 'Never'",
                "a pool uses IP-in-IP or VXLAN, not both",
                ".vxlanMode",
            ),
        ),
        at(
            "spec",
            cel_at(
                "!self.cidr.contains(':') || !has(self.ipipMode) || self.ipipMode == 'Never'",
                "IP-in-IP carries IPv4 only: use vxlanMode for an IPv6 pool",
                ".ipipMode",
            ),
        ),
        at(
            "spec",
            cel_at(
                "!has(self.allowedUses) || !('LoadBalancer' in self.allowedUses) || size(self.allowedUses) == 1",
                "allowedUses LoadBalancer cannot be combined with other uses",
                ".allowedUses",
            ),
        ),
        at("spec.cidr", cidr()),
        at("spec.cidr", immutable("cidr")),
        at("spec.blockSize", json!({"minimum": 20, "maximum": 128})),
        at("spec.blockSize", immutable("blockSize")),
        at("spec.nodeSelector", selector()),
        at("spec.namespaceSelector", selector()),
        at(
            "spec.allowedUses",
            json!({"maxItems": 3, "x-kubernetes-list-type": "set"}),
        ),
    ]
}

fn ipam_block() -> Vec<Patch> {
    // The largest block: a /20 of IPv4 or a /116 of IPv6, 4096 addresses.
    vec![
        at("spec.cidr", cidr()),
        at("spec.cidr", immutable("cidr")),
        at("spec.affinity", json!({"maxLength": 253})),
        at("spec.allocations", json!({"maxItems": 4096})),
        at("spec.unallocated", json!({"maxItems": 4096})),
        at("spec.unallocated[]", json!({"minimum": 0, "maximum": 4095})),
    ]
}

fn block_affinity() -> Vec<Patch> {
    vec![
        at("spec.node", object_name()),
        at("spec.cidr", cidr()),
        at("spec.cidr", immutable("cidr")),
        at("spec.node", immutable("node")),
    ]
}
