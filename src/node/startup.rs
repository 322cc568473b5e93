//! Waiting for the datastore at start: which failures are waited out and how long to
//! pause between tries. Pure; the agent does the trying.
//!
//! A node agent is started with its node, often before its datastore answers: etcd
//! members starting with the cluster, an API server being upgraded, hundreds of agents
//! reaching one etcd at once. An agent that exited then would be restarted by its
//! supervisor with the same timing, and all of them would come back together. Instead
//! the agent keeps its sockets and health endpoints up (live, not ready, the reason in
//! `serval node status`) and tries again after a pause that grows to
//! [`MAX_PAUSE`] and differs from node to node, so a cluster's agents spread out.
//! What no wait can fix — a datastore named wrongly, a TLS file that is missing — still
//! stops the agent at once with its message.

use std::hash::{Hash as _, Hasher as _};
use std::time::Duration;

use ipam::ops::RetryPolicy;
use ipam::StoreError;

/// The first pause after a failed try.
pub const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause between two tries.
pub const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Whether waiting may cure `e`, a failure to open, watch or read the datastore at
/// start. Configuration and local file errors are final; an unreachable, slow, refusing
/// (permissions not granted yet) or corrupt (being repaired) datastore is waited for.
pub fn worth_waiting(e: &anyhow::Error) -> bool {
    match e.chain().find_map(|c| c.downcast_ref::<StoreError>()) {
        Some(StoreError::Config(_) | StoreError::Io { .. }) => false,
        Some(_) => true,
        // Not a store error: the watch ended or the first read timed out.
        None => true,
    }
}

/// The pause before try `attempt + 1` (the first retry has `attempt` 1) on node `node`:
/// the IPAM's back-off ([`RetryPolicy::backoff_at`]), doubling from [`FIRST_PAUSE`] up to
/// [`MAX_PAUSE`] and scaled into 50–100 % by a fraction fixed by the node's name and the
/// attempt, so that nodes started together do not try again together.
pub fn pause(attempt: u32, node: &str) -> Duration {
    let policy = RetryPolicy {
        initial_backoff: FIRST_PAUSE,
        max_backoff: MAX_PAUSE,
        ..RetryPolicy::default()
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut h);
    attempt.hash(&mut h);
    let fraction = (h.finish() % 1000) as f64 / 1000.0;
    policy.backoff_at(attempt.saturating_sub(1), fraction)
}

/// What the status shows while waiting.
pub fn problem(datastore: &str, attempt: u32, error: &anyhow::Error, next: Duration) -> String {
    format!(
        "waiting for datastore {datastore} (try {attempt} failed, next in {:.1} s): {error:#}",
        next.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap_and_stay_in_their_band() {
        for node in ["node-1", "node-2", "a-much-longer-node-name.example"] {
            let mut last_base = Duration::ZERO;
            for attempt in 1..40 {
                let p = pause(attempt, node);
                let base = FIRST_PAUSE
                    .saturating_mul(1u32 << (attempt - 1).min(16))
                    .min(MAX_PAUSE);
                assert!(
                    p >= base / 2 && p <= base,
                    "{node} #{attempt}: {p:?} vs {base:?}"
                );
                assert!(base >= last_base);
                last_base = base;
            }
            assert!(pause(1, node) <= FIRST_PAUSE);
            assert!(pause(39, node) >= MAX_PAUSE / 2);
        }
    }

    #[test]
    fn nodes_started_together_do_not_retry_together() {
        // 300 nodes, their 8th try (at the cap): the pauses spread over the band
        // instead of all being one value.
        let mut pauses: Vec<u128> = (0..300)
            .map(|i| pause(8, &format!("node-{i}")).as_millis())
            .collect();
        pauses.sort_unstable();
        pauses.dedup();
        assert!(pauses.len() > 200, "only {} distinct pauses", pauses.len());
        let spread = pauses.last().unwrap() - pauses.first().unwrap();
        assert!(spread > 10_000, "spread {spread} ms");
    }

    #[test]
    fn which_failures_are_waited_for() {
        let unavailable = anyhow::Error::new(StoreError::Unavailable {
            store: "etcd:http://192.0.2.2:2379".into(),
            detail: "connection refused".into(),
        })
        .context("datastore: opening etcd");
        assert!(worth_waiting(&unavailable));
        let rejected = anyhow::Error::new(StoreError::Rejected {
            store: "kubernetes".into(),
            detail: "forbidden".into(),
        });
        assert!(worth_waiting(&rejected));
        assert!(worth_waiting(&anyhow::anyhow!("no answer within 30 s")));
        let config =
            anyhow::Error::new(StoreError::Config("etcd: no endpoint".into())).context("datastore");
        assert!(!worth_waiting(&config));
        let io = anyhow::Error::new(StoreError::Io {
            path: "/etc/serval/etcd-ca.pem".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert!(!worth_waiting(&io));
    }

    #[test]
    fn the_problem_names_the_datastore_the_try_and_the_error() {
        let e = anyhow::Error::new(StoreError::Unavailable {
            store: "etcd:http://192.0.2.2:2379".into(),
            detail: "connection refused".into(),
        });
        let p = problem(
            "etcd:http://192.0.2.2:2379",
            3,
            &e,
            Duration::from_millis(1500),
        );
        assert!(
            p.starts_with("waiting for datastore etcd:http://192.0.2.2:2379"),
            "{p}"
        );
        assert!(
            p.contains("try 3") && p.contains("1.5 s") && p.contains("connection refused"),
            "{p}"
        );
    }
}
