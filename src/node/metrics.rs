//! Prometheus metrics of the node agent, in the OpenMetrics text format.
//!
//! | metric                                   | labels                  | what                                     |
//! |------------------------------------------|-------------------------|------------------------------------------|
//! | `serval_bgp_session_up`                  | peer, peer_type         | 1 when Established                       |
//! | `serval_bgp_session_state`               | peer, peer_type, state  | 1 for the session's current state        |
//! | `serval_bgp_session_flaps_total`         | peer, peer_type         | times the session left Established       |
//! | `serval_bgp_prefixes_received`           | peer, peer_type         | prefixes held from the peer              |
//! | `serval_bfd_session_up`                  | peer, peer_type         | 1 when the session's BFD is Up           |
//! | `serval_bfd_session_state`               | peer, peer_type, state  | 1 for the BFD session's current state    |
//! | `serval_bfd_session_flaps_total`         | peer, peer_type         | times BFD went down from Up              |
//! | `serval_bfd_detection_time_seconds`      | peer, peer_type         | the detection time in use                |
//! | `serval_bgp_prefixes_sent`               | peer, peer_type         | prefixes advertised to the peer          |
//! | `serval_routes_programmed`               | kind                    | kernel routes by kind                    |
//! | `serval_route_errors`                    |                         | routes the kernel refused                |
//! | `serval_ipam_blocks`                     | pool                    | blocks claimed in the pool               |
//! | `serval_ipam_addresses_used`             | pool                    | addresses allocated in the pool          |
//! | `serval_reconcile_duration_seconds`      |                         | histogram of full reconciles             |
//! | `serval_reconcile_errors_total`          |                         | reconciles that left an error            |
//! | `serval_route_batches_total`             |                         | best-path batches applied to the kernel  |
//! | `serval_ready`, `serval_datastore_up`    |                         | readiness and datastore reachability     |
//!
//! Counters and the histogram live as long as the agent; the rest is read from the
//! agent's published state at each scrape.

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use bgp::status::BfdState;

use crate::node::status::PeerRow;

/// The metrics that accumulate over the agent's life.
pub struct Metrics {
    pub reconcile_seconds: Histogram,
    pub reconcile_errors: Counter,
    pub route_batches: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            // 0.5 ms … ~16 s.
            reconcile_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            reconcile_errors: Counter::default(),
            route_batches: Counter::default(),
        }
    }
}

/// The state a scrape reports.
#[derive(Clone, Debug, Default)]
pub struct ScrapeInput {
    pub peers: Vec<PeerRow>,
    pub routes_by_kind: BTreeMap<String, u64>,
    pub route_errors: u64,
    /// Pool → (blocks, addresses used).
    pub usage: BTreeMap<String, (u64, u64)>,
    pub ready: bool,
    pub datastore_up: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
    peer_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    peer: String,
    peer_type: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

fn gauge(v: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    g
}

/// The text of one scrape.
pub fn render(m: &Metrics, s: &ScrapeInput) -> String {
    let mut r = Registry::default();
    let up = Family::<PeerLabels, Gauge>::default();
    let state = Family::<StateLabels, Gauge>::default();
    let flaps = Family::<PeerLabels, Counter>::default();
    let received = Family::<PeerLabels, Gauge>::default();
    let sent = Family::<PeerLabels, Gauge>::default();
    let bfd_up = Family::<PeerLabels, Gauge>::default();
    let bfd_state = Family::<StateLabels, Gauge>::default();
    let bfd_flaps = Family::<PeerLabels, Counter>::default();
    let bfd_detect = Family::<PeerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for p in &s.peers {
        let l = PeerLabels {
            peer: p.address.to_string(),
            peer_type: serde_json::to_value(p.peer_type)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        };
        up.get_or_create(&l)
            .set(i64::from(p.state.is_established()));
        state
            .get_or_create(&StateLabels {
                peer: l.peer.clone(),
                peer_type: l.peer_type.clone(),
                state: p.state.to_string(),
            })
            .set(1);
        flaps.get_or_create(&l).inc_by(p.flaps);
        received
            .get_or_create(&l)
            .set(i64::from(p.prefixes_received));
        sent.get_or_create(&l).set(i64::from(p.prefixes_sent));
        // Sessions without BFD have no BFD series at all.
        if let Some(b) = &p.bfd {
            bfd_up
                .get_or_create(&l)
                .set(i64::from(b.state == BfdState::Up));
            bfd_state
                .get_or_create(&StateLabels {
                    peer: l.peer.clone(),
                    peer_type: l.peer_type.clone(),
                    state: b.state.to_string(),
                })
                .set(1);
            bfd_flaps.get_or_create(&l).inc_by(b.failures);
            if let Some(ms) = b.detection_time_ms {
                bfd_detect.get_or_create(&l).set(f64::from(ms) / 1000.0);
            }
        }
    }
    r.register(
        "serval_bgp_session_up",
        "1 when the BGP session is Established",
        up,
    );
    r.register(
        "serval_bgp_session_state",
        "1 for the BGP session's current state",
        state,
    );
    r.register(
        "serval_bgp_session_flaps",
        "Times the session left Established",
        flaps,
    );
    r.register(
        "serval_bgp_prefixes_received",
        "Prefixes held from the peer",
        received,
    );
    r.register(
        "serval_bgp_prefixes_sent",
        "Prefixes advertised to the peer",
        sent,
    );
    r.register(
        "serval_bfd_session_up",
        "1 when the BGP session's BFD session is Up",
        bfd_up,
    );
    r.register(
        "serval_bfd_session_state",
        "1 for the BFD session's current state (AdminDown, Down, Init, Up, Unknown)",
        bfd_state,
    );
    r.register(
        "serval_bfd_session_flaps",
        "Times the BFD session went down from Up",
        bfd_flaps,
    );
    r.register(
        "serval_bfd_detection_time_seconds",
        "How long without a BFD packet before the session fails, as negotiated",
        bfd_detect,
    );
    let routes = Family::<KindLabels, Gauge>::default();
    for (kind, n) in &s.routes_by_kind {
        routes
            .get_or_create(&KindLabels { kind: kind.clone() })
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    r.register(
        "serval_routes_programmed",
        "Kernel routes serval programmed, by kind",
        routes,
    );
    r.register(
        "serval_route_errors",
        "Routes the kernel refused",
        gauge(s.route_errors),
    );
    let blocks = Family::<PoolLabels, Gauge>::default();
    let used = Family::<PoolLabels, Gauge>::default();
    for (pool, (b, a)) in &s.usage {
        let l = PoolLabels { pool: pool.clone() };
        blocks
            .get_or_create(&l)
            .set(i64::try_from(*b).unwrap_or(i64::MAX));
        used.get_or_create(&l)
            .set(i64::try_from(*a).unwrap_or(i64::MAX));
    }
    r.register("serval_ipam_blocks", "Blocks claimed in the pool", blocks);
    r.register(
        "serval_ipam_addresses_used",
        "Addresses allocated in the pool",
        used,
    );
    r.register(
        "serval_reconcile_duration_seconds",
        "Time to compute and apply the desired state",
        m.reconcile_seconds.clone(),
    );
    r.register(
        "serval_reconcile_errors",
        "Reconciles that left an error",
        m.reconcile_errors.clone(),
    );
    r.register(
        "serval_route_batches",
        "Best-path batches applied to the kernel",
        m.route_batches.clone(),
    );
    r.register(
        "serval_ready",
        "1 when the node is ready",
        gauge(u64::from(s.ready)),
    );
    r.register(
        "serval_datastore_up",
        "1 when the datastore answers",
        gauge(u64::from(s.datastore_up)),
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::desired::PeerType;
    use crate::node::status::BfdRow;

    #[test]
    fn scrape_has_every_family_with_labels() {
        let m = Metrics::default();
        m.reconcile_seconds.observe(0.002);
        let s = ScrapeInput {
            peers: vec![PeerRow {
                address: "192.0.2.2".parse().unwrap(),
                name: None,
                peer_type: PeerType::Mesh,
                asn: 64512,
                state: bgp::status::SessionState::Established,
                uptime_secs: Some(1),
                prefixes_received: 3,
                prefixes_accepted: 3,
                prefixes_sent: 2,
                flaps: 4,
                last_error: None,
                bfd: Some(BfdRow {
                    state: BfdState::Up,
                    multihop: false,
                    tx_interval_ms: Some(100),
                    rx_interval_ms: Some(100),
                    detection_time_ms: Some(300),
                    multiplier: 3,
                    local_diag: None,
                    remote_diag: None,
                    failures: 2,
                    hold_down_secs: None,
                }),
            }],
            routes_by_kind: [("blackhole".to_owned(), 1), ("vxlan".to_owned(), 2)].into(),
            route_errors: 0,
            usage: [("default".to_owned(), (2, 5))].into(),
            ready: true,
            datastore_up: true,
        };
        let text = render(&m, &s);
        for want in [
            r#"serval_bgp_session_up{peer="192.0.2.2",peer_type="mesh"} 1"#,
            r#"serval_bgp_session_state{peer="192.0.2.2",peer_type="mesh",state="Established"} 1"#,
            r#"serval_bgp_session_flaps_total{peer="192.0.2.2",peer_type="mesh"} 4"#,
            r#"serval_bgp_prefixes_received{peer="192.0.2.2",peer_type="mesh"} 3"#,
            r#"serval_bgp_prefixes_sent{peer="192.0.2.2",peer_type="mesh"} 2"#,
            r#"serval_bfd_session_up{peer="192.0.2.2",peer_type="mesh"} 1"#,
            r#"serval_bfd_session_state{peer="192.0.2.2",peer_type="mesh",state="Up"} 1"#,
            r#"serval_bfd_session_flaps_total{peer="192.0.2.2",peer_type="mesh"} 2"#,
            r#"serval_bfd_detection_time_seconds{peer="192.0.2.2",peer_type="mesh"} 0.3"#,
            r#"serval_routes_programmed{kind="vxlan"} 2"#,
            r#"serval_ipam_addresses_used{pool="default"} 5"#,
            r#"serval_ipam_blocks{pool="default"} 2"#,
            "serval_reconcile_duration_seconds_count 1",
            "serval_ready 1",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }

    #[test]
    fn sessions_without_bfd_have_no_bfd_series_and_a_down_one_reads_zero() {
        let row = |bfd: Option<BfdRow>| PeerRow {
            address: "192.0.2.9".parse().unwrap(),
            name: None,
            peer_type: PeerType::Global,
            asn: 65000,
            state: bgp::status::SessionState::Active,
            uptime_secs: None,
            prefixes_received: 0,
            prefixes_accepted: 0,
            prefixes_sent: 0,
            flaps: 0,
            last_error: None,
            bfd,
        };
        let text = render(
            &Metrics::default(),
            &ScrapeInput {
                peers: vec![row(None)],
                ..ScrapeInput::default()
            },
        );
        assert!(!text.contains("serval_bfd_session_up{"), "{text}");
        let down = BfdRow {
            state: BfdState::Down,
            multihop: true,
            tx_interval_ms: None,
            rx_interval_ms: None,
            detection_time_ms: None,
            multiplier: 3,
            local_diag: Some("control detection time expired".into()),
            remote_diag: None,
            failures: 1,
            hold_down_secs: Some(2),
        };
        let text = render(
            &Metrics::default(),
            &ScrapeInput {
                peers: vec![row(Some(down))],
                ..ScrapeInput::default()
            },
        );
        for want in [
            r#"serval_bfd_session_up{peer="192.0.2.9",peer_type="global"} 0"#,
            r#"serval_bfd_session_state{peer="192.0.2.9",peer_type="global",state="Down"} 1"#,
            r#"serval_bfd_session_flaps_total{peer="192.0.2.9",peer_type="global"} 1"#,
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }
}
