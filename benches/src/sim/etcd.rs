//! What etcd says about its load: its Prometheus `/metrics`, scraped over plain HTTP on
//! its loopback (the harness's thread lives in etcd's namespace).
//!
//! Counted: `grpc_server_handled_total` of unary calls (every Range, Txn, Put, Lease…
//! request served), `grpc_server_msg_sent_total` of the Watch stream (watch responses
//! sent), and `etcd_debugging_mvcc_events_total` (watch events sent to watchers); the
//! watchers open (`etcd_debugging_mvcc_watcher_total`) as a gauge.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// `GET PATH` from etcd on 127.0.0.1:2379; the body.
pub fn http_get(path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(
        &"127.0.0.1:2379".parse().context("address")?,
        Duration::from_secs(2),
    )
    .context("connecting to etcd")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).context("reading from etcd")?;
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("etcd {path}: no HTTP response");
    };
    let ok = head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200");
    if !ok {
        bail!("etcd {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

/// One scrape of the counters this harness reports.
#[derive(Clone, Debug)]
pub struct Scrape {
    pub at: Instant,
    /// Unary gRPC requests handled.
    pub requests: f64,
    /// Watch responses sent (gRPC messages on Watch streams).
    pub watch_msgs: f64,
    /// Watch events sent to watchers.
    pub watch_events: f64,
    /// Watchers open.
    pub watchers: f64,
    /// Unary requests per gRPC method (Range, Txn, …).
    pub methods: std::collections::BTreeMap<String, f64>,
}

pub fn scrape() -> anyhow::Result<Scrape> {
    let body = http_get("/metrics")?;
    let mut s = Scrape {
        at: Instant::now(),
        requests: 0.0,
        watch_msgs: 0.0,
        watch_events: 0.0,
        watchers: 0.0,
        methods: Default::default(),
    };
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = key.split_once('{').unwrap_or((key, ""));
        match name {
            "grpc_server_handled_total" if labels.contains("grpc_type=\"unary\"") => {
                s.requests += v;
                if let Some(m) = labels
                    .split("grpc_method=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                {
                    *s.methods.entry(m.to_owned()).or_default() += v;
                }
            }
            "grpc_server_msg_sent_total" if labels.contains("grpc_method=\"Watch\"") => {
                s.watch_msgs += v
            }
            "etcd_debugging_mvcc_events_total" => s.watch_events += v,
            "etcd_debugging_mvcc_watcher_total" => s.watchers += v,
            _ => {}
        }
    }
    Ok(s)
}

/// Rates between two scrapes.
#[derive(Clone, Debug, Default)]
pub struct Load {
    pub requests_per_s: f64,
    pub watch_msgs_per_s: f64,
    pub watch_events_per_s: f64,
    pub requests: f64,
    pub watch_events: f64,
    pub watchers: f64,
    /// Unary requests per method between the scrapes.
    pub methods: std::collections::BTreeMap<String, f64>,
}

pub fn load(a: &Scrape, b: &Scrape) -> Load {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
    Load {
        requests_per_s: (b.requests - a.requests) / secs,
        watch_msgs_per_s: (b.watch_msgs - a.watch_msgs) / secs,
        watch_events_per_s: (b.watch_events - a.watch_events) / secs,
        requests: b.requests - a.requests,
        watch_events: b.watch_events - a.watch_events,
        watchers: b.watchers,
        methods: b
            .methods
            .iter()
            .map(|(m, v)| (m.clone(), v - a.methods.get(m).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.0)
            .collect(),
    }
}

impl Load {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests_per_s": round(self.requests_per_s),
            "watch_responses_per_s": round(self.watch_msgs_per_s),
            "watch_events_per_s": round(self.watch_events_per_s),
            "requests": self.requests,
            "watch_events": self.watch_events,
            "watchers": self.watchers,
            "requests_by_method": self.methods,
        })
    }
}

pub fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
