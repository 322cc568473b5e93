//! serval's CNI plugin: what container runtimes run for every pod.
//!
//! The binary (`serval-cni`, installed as `/opt/cni/bin/serval` by `serval install-cni`)
//! speaks CNI 1.1.0 and accepts configurations of 0.3.0 to 1.1.0. ADD gives the pod a
//! veth pair, a /32 (and /128) from serval's block IPAM, routes through a link-local
//! gateway and a host route back; DEL undoes it idempotently; CHECK compares the node
//! with `prevResult`; GC releases this node's allocations that the runtime no longer
//! lists; STATUS says whether the node can take pods.
//!
//! - [`spec`]: versions, results per version, errors and their codes.
//! - [`env`]: the `CNI_*` variables as a typed [`env::Command`].
//! - [`config`]: the network configuration (Calico's keys where Calico has them).
//! - [`decide`]: the decisions — names, handles, addresses, wiring, CHECK — without IO.
//! - [`netlink`], [`veth`]: the kernel side; [`ipam`]: addresses; [`kube`]: the API.
//! - [`commands`]: the verbs; [`log`]: the file log.

pub mod commands;
pub mod config;
pub mod decide;
pub mod env;
pub mod ipam;
pub mod kube;
pub mod log;
pub mod netlink;
pub mod spec;
pub mod veth;

use serde_json::Value;

use crate::config::NetConf;
use crate::env::Command;
use crate::spec::{CniError, ErrorCode, Version};

/// What the process prints on stdout and exits with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: i32,
}

impl Outcome {
    fn ok(v: Option<Value>) -> Outcome {
        Outcome {
            stdout: v.map(|v| v.to_string()).unwrap_or_default(),
            exit_code: 0,
        }
    }

    fn err(e: &CniError, version: Version) -> Outcome {
        Outcome {
            stdout: e.to_json(version).to_string(),
            exit_code: 1,
        }
    }
}

/// Runs one invocation: `var` reads the environment, `stdin` is the configuration.
pub fn run(var: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    // The version errors are printed in: the configuration's when it has a usable one.
    let doc = config::parse_json(stdin);
    let version = doc
        .as_ref()
        .ok()
        .and_then(|d| config::version_of(d).ok())
        .unwrap_or(Version::LATEST);
    let log_settings = match &doc {
        Ok(d) => NetConf::log_settings(d),
        Err(_) => config::LogSettings::default(),
    };
    let log_error = log::init(&log_settings).err();

    let cmd = match Command::from_env(&var) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "bad environment");
            return Outcome::err(&e, version);
        }
    };
    let span = tracing::info_span!(
        "cni",
        verb = cmd.verb(),
        container = attachment_of(&cmd).unwrap_or_default(),
    );
    let _enter = span.enter();
    if let Some(e) = log_error {
        // Logging is best effort; say so on stderr, which runtimes keep.
        eprintln!(
            "serval: cannot write the log {}: {e}",
            log_settings.path.display()
        );
    }
    if matches!(cmd, Command::Version) {
        return Outcome::ok(Some(spec::version_info()));
    }
    match execute(&cmd, doc, var("SERVAL_DATASTORE").as_deref()) {
        Ok(out) => {
            tracing::info!("done");
            Outcome::ok(out)
        }
        Err(e) => {
            tracing::error!(code = e.code.code(), error = %e, "failed");
            Outcome::err(&e, version)
        }
    }
}

fn attachment_of(cmd: &Command) -> Option<String> {
    let a = match cmd {
        Command::Add(t) | Command::Check(t) => &t.attachment,
        Command::Del(t) => &t.attachment,
        _ => return None,
    };
    Some(format!("{}/{}", a.container_id, a.ifname))
}

fn execute(
    cmd: &Command,
    doc: Result<Value, CniError>,
    env_datastore: Option<&str>,
) -> Result<Option<Value>, CniError> {
    let doc = doc?;
    let conf = NetConf::parse(&doc, env_datastore)?;
    let too_old = |verb: &str, since: &str| {
        CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "configuration version {} does not allow {verb}",
                conf.version
            ),
        )
        .details(format!("{verb} exists from CNI {since} on"))
    };
    match cmd {
        Command::Check(_) if !conf.version.has_check() => return Err(too_old("CHECK", "0.4.0")),
        Command::Status | Command::Gc if !conf.version.has_status_and_gc() => {
            return Err(too_old(cmd.verb(), "1.1.0"))
        }
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(ErrorCode::Io, "cannot start the runtime").details(e.to_string())
        })?;
    rt.block_on(async {
        match cmd {
            Command::Add(t) => commands::add(&conf, t).await.map(Some),
            Command::Del(t) => commands::del(&conf, t).await.map(|()| None),
            Command::Check(t) => commands::check(&conf, t).await.map(|()| None),
            Command::Gc => commands::gc(&conf).await.map(|()| None),
            Command::Status => commands::status(&conf).await.map(|()| None),
            Command::Version => Ok(Some(spec::version_info())),
        }
    })
}
