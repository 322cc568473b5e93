//! `BFDProfile`: the BFD timers of the sessions that name it, MetalLB's resource of the
//! same name with its field names and defaults (intervals in milliseconds).
//!
//! A `BGPPeer` names one in `bfdProfile`; the `default` `BGPConfiguration` names the
//! one of the node-to-node mesh in `nodeMeshBFDProfile`. What the speaker does not do:
//!
//! - `echoMode: true` is refused: serval's BFD runs the asynchronous mode only (RFC 5880
//!   §6.4 echo is optional) and tells the peer not to send echoes; a profile that asks
//!   for echoes would promise a detection it does not make. `echoInterval` is accepted
//!   (MetalLB's profiles carry it) and has no effect.
//! - `minimumTtl` is accepted for MetalLB's manifests but not applied: the speaker takes
//!   a multihop session's TTL minimum from the BGP peering's distance (254 unless
//!   `ttlSecurity` or `reachableBy` allow more hops: 255 minus the routers between).
//!   When a profile's value differs from the one a session uses, the node's status says
//!   so. Single-hop sessions always require TTL 255 (RFC 5881 §5).

use bgp::config::BfdSettings;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// BFD settings that peerings refer to by name.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serval.dev",
    version = "v1",
    kind = "BFDProfile",
    plural = "bfdprofiles"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BFDProfileSpec {
    /// The shortest interval, in milliseconds, at which this node takes the peer's
    /// control packets (Required Min RX Interval); 10 to 60000, default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_interval: Option<u32>,
    /// The interval, in milliseconds, at which this node wants to send (Desired Min TX
    /// Interval, less jitter); 10 to 60000, default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmit_interval: Option<u32>,
    /// Packets missed before the session is down: the detection time is this times the
    /// negotiated interval; 2 to 255, default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_multiplier: Option<u8>,
    /// Echo mode. Not implemented by serval: only `false` is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_mode: Option<bool>,
    /// The echo interval in milliseconds (10 to 60000, default 50); without echo mode it
    /// has no effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_interval: Option<u32>,
    /// Send nothing until the peer has sent (RFC 5880 §6.1 passive role); default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_mode: Option<bool>,
    /// The least TTL of a multihop session's packets (1 to 254, default 254). Accepted
    /// and not applied: the speaker derives it from the peering's distance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ttl: Option<u8>,
}

/// MetalLB's defaults.
pub const DEFAULT_INTERVAL_MS: u32 = 300;
pub const DEFAULT_MULTIPLIER: u8 = 3;
pub const DEFAULT_ECHO_INTERVAL_MS: u32 = 50;
pub const DEFAULT_MINIMUM_TTL: u8 = 254;

/// MetalLB's ranges.
const INTERVALS_MS: std::ops::RangeInclusive<u32> = 10..=60_000;
const MULTIPLIERS: std::ops::RangeInclusive<u8> = 2..=255;
const MINIMUM_TTLS: std::ops::RangeInclusive<u8> = 1..=254;

impl BFDProfileSpec {
    /// The speaker's per-peer settings, every field given so that nothing falls back to
    /// a speaker-wide default.
    pub fn settings(&self) -> BfdSettings {
        BfdSettings {
            min_rx: Some(self.receive_interval.unwrap_or(DEFAULT_INTERVAL_MS)),
            min_tx: Some(self.transmit_interval.unwrap_or(DEFAULT_INTERVAL_MS)),
            multiplier: Some(self.detect_multiplier.unwrap_or(DEFAULT_MULTIPLIER)),
            passive: Some(self.passive_mode.unwrap_or(false)),
        }
    }

    /// Checks serde cannot make, each error as (field path under `spec`, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (field, v) in [
            ("receiveInterval", self.receive_interval),
            ("transmitInterval", self.transmit_interval),
            ("echoInterval", self.echo_interval),
        ] {
            if let Some(v) = v.filter(|v| !INTERVALS_MS.contains(v)) {
                errors.push((field.into(), format!("{v} ms: 10 to 60000 ms")));
            }
        }
        if let Some(m) = self.detect_multiplier.filter(|m| !MULTIPLIERS.contains(m)) {
            errors.push(("detectMultiplier".into(), format!("{m}: 2 to 255")));
        }
        if let Some(t) = self.minimum_ttl.filter(|t| !MINIMUM_TTLS.contains(t)) {
            errors.push(("minimumTtl".into(), format!("{t}: 1 to 254")));
        }
        if self.echo_mode == Some(true) {
            errors.push((
                "echoMode".into(),
                "echo mode is not implemented: serval's BFD runs the asynchronous mode only \
                 (leave echoMode out or set it to false)"
                    .into(),
            ));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> BFDProfileSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn metallbs_fields_and_defaults() {
        let p = spec(serde_json::json!({
            "receiveInterval": 100, "transmitInterval": 150, "detectMultiplier": 5,
            "echoMode": false, "echoInterval": 50, "passiveMode": true, "minimumTtl": 254
        }));
        assert!(p.check().is_empty(), "{:?}", p.check());
        assert_eq!(
            p.settings(),
            BfdSettings {
                min_rx: Some(100),
                min_tx: Some(150),
                multiplier: Some(5),
                passive: Some(true),
            }
        );
        assert_eq!(
            spec(serde_json::json!({})).settings(),
            BfdSettings {
                min_rx: Some(300),
                min_tx: Some(300),
                multiplier: Some(3),
                passive: Some(false),
            }
        );
        // Another spelling is not MetalLB's and is refused.
        assert!(
            serde_json::from_value::<BFDProfileSpec>(serde_json::json!({"minimumTTL": 254}))
                .is_err()
        );
    }

    #[test]
    fn ranges_and_echo_mode_are_checked() {
        let errors = |v: serde_json::Value| -> Vec<String> {
            spec(v).check().into_iter().map(|(f, _)| f).collect()
        };
        assert_eq!(
            errors(serde_json::json!({"receiveInterval": 9})),
            ["receiveInterval"]
        );
        assert_eq!(
            errors(serde_json::json!({"transmitInterval": 60001})),
            ["transmitInterval"]
        );
        assert_eq!(
            errors(serde_json::json!({"detectMultiplier": 1})),
            ["detectMultiplier"]
        );
        assert_eq!(
            errors(serde_json::json!({"minimumTtl": 255})),
            ["minimumTtl"]
        );
        assert_eq!(
            errors(serde_json::json!({"echoInterval": 5})),
            ["echoInterval"]
        );
        let echo = spec(serde_json::json!({"echoMode": true})).check();
        assert_eq!(echo.len(), 1);
        assert_eq!(echo[0].0, "echoMode");
        assert!(echo[0].1.contains("not implemented"), "{echo:?}");
    }
}
