//! Choosing the datastore, the same way for the CLI, the agent and the CNI plugin.
//!
//! A datastore is named by a string, from (first found) the `--datastore` flag, the
//! `SERVAL_DATASTORE` environment variable, or the default `file:/var/lib/serval/ipam.json`:
//!
//! | string                         | store                                                 |
//! |--------------------------------|-------------------------------------------------------|
//! | `file:PATH`                    | the embedded file store at PATH                       |
//! | `etcd:URL[,URL…]`              | etcd v3; `host:port` means `http://host:port`        |
//! | `kubernetes`                   | CRDs through the in-cluster config or `KUBECONFIG`    |
//!
//! etcd options come from these environment variables (the CLI also has flags for them):
//!
//! | variable                       | meaning                                               |
//! |--------------------------------|-------------------------------------------------------|
//! | `SERVAL_ETCD_CA_FILE`          | PEM CA bundle to verify the servers (enables TLS)     |
//! | `SERVAL_ETCD_CERT_FILE`        | PEM client certificate (with `SERVAL_ETCD_KEY_FILE`)  |
//! | `SERVAL_ETCD_KEY_FILE`         | PEM client key                                        |
//! | `SERVAL_ETCD_USERNAME`         | user for etcd authentication                          |
//! | `SERVAL_ETCD_PASSWORD`         | its password (or `SERVAL_ETCD_PASSWORD_FILE`)         |
//! | `SERVAL_ETCD_PASSWORD_FILE`    | a file holding the password                           |
//! | `SERVAL_ETCD_PREFIX`           | key prefix, default `/serval/ipam/v1`                 |
//! | `SERVAL_ETCD_TIMEOUT_MS`       | per-request timeout, default 2000                     |

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::file::{FileStore, DEFAULT_PATH};
use super::Store;
use crate::error::StoreError;

/// The environment variable naming the datastore.
pub const ENV_DATASTORE: &str = "SERVAL_DATASTORE";

/// Default etcd key prefix.
pub const DEFAULT_ETCD_PREFIX: &str = "/serval/ipam/v1";

/// A parsed datastore name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datastore {
    File(PathBuf),
    Etcd(EtcdConfig),
    Kubernetes,
}

/// TLS files for etcd.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// How to reach etcd.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub tls: EtcdTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Per-request timeout: past it a request is [`StoreError::Unavailable`].
    pub timeout: Duration,
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl EtcdConfig {
    /// Endpoints with the defaults and nothing from the environment.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: DEFAULT_ETCD_PREFIX.to_owned(),
            tls: EtcdTls::default(),
            username: None,
            password: None,
            timeout: Duration::from_millis(2000),
        }
    }

    /// Fills the options from the `SERVAL_ETCD_*` variables (see the module docs).
    pub fn with_env(mut self) -> Result<Self, StoreError> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("SERVAL_ETCD_CA_FILE") {
            self.tls.ca_file = Some(v.into());
        }
        if let Some(v) = var("SERVAL_ETCD_CERT_FILE") {
            self.tls.cert_file = Some(v.into());
        }
        if let Some(v) = var("SERVAL_ETCD_KEY_FILE") {
            self.tls.key_file = Some(v.into());
        }
        if let Some(v) = var("SERVAL_ETCD_USERNAME") {
            self.username = Some(v);
        }
        if let Some(v) = var("SERVAL_ETCD_PASSWORD") {
            self.password = Some(v);
        }
        if let Some(f) = var("SERVAL_ETCD_PASSWORD_FILE") {
            let p =
                std::fs::read_to_string(&f).map_err(|e| StoreError::Io { path: f, source: e })?;
            self.password = Some(p.trim_end_matches(['\r', '\n']).to_owned());
        }
        if let Some(v) = var("SERVAL_ETCD_PREFIX") {
            self.prefix = v;
        }
        if let Some(v) = var("SERVAL_ETCD_TIMEOUT_MS") {
            let ms: u64 = v.parse().map_err(|_| {
                StoreError::Config(format!(
                    "SERVAL_ETCD_TIMEOUT_MS={v:?} is not a number of milliseconds"
                ))
            })?;
            self.timeout = Duration::from_millis(ms);
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks that the options fit together.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.endpoints.is_empty() {
            return Err(StoreError::Config("etcd: no endpoints".into()));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(StoreError::Config(
                "etcd: a client certificate needs its key and the other way round (SERVAL_ETCD_CERT_FILE, SERVAL_ETCD_KEY_FILE)".into(),
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(StoreError::Config(
                "etcd: a username needs a password and the other way round".into(),
            ));
        }
        if !self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return Err(StoreError::Config(format!(
                "etcd: prefix {:?} must start with '/' and not end with one",
                self.prefix
            )));
        }
        Ok(())
    }

    /// Whether the connection uses TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls.ca_file.is_some() || self.endpoints.iter().any(|e| e.starts_with("https://"))
    }
}

impl FromStr for Datastore {
    type Err = StoreError;

    /// Parses the name only; [`Datastore::from_env_or_default`] and
    /// [`Datastore::resolve`] also read the etcd options from the environment.
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(StoreError::Config(
                    "file: needs a path, e.g. file:/var/lib/serval/ipam.json".into(),
                ));
            }
            return Ok(Datastore::File(PathBuf::from(path)));
        }
        if let Some(list) = s.strip_prefix("etcd:") {
            let endpoints: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| {
                    if e.starts_with("http://") || e.starts_with("https://") {
                        e.to_owned()
                    } else {
                        format!("http://{e}")
                    }
                })
                .collect();
            if endpoints.is_empty() {
                return Err(StoreError::Config(
                    "etcd: needs endpoints, e.g. etcd:http://127.0.0.1:2379".into(),
                ));
            }
            return Ok(Datastore::Etcd(EtcdConfig::new(endpoints)));
        }
        if s == "kubernetes" || s == "kubernetes:" {
            return Ok(Datastore::Kubernetes);
        }
        Err(StoreError::Config(format!(
            "unknown datastore {s:?}: use file:PATH, etcd:ENDPOINTS or kubernetes"
        )))
    }
}

impl std::fmt::Display for Datastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Datastore::File(p) => write!(f, "file:{}", p.display()),
            Datastore::Etcd(c) => write!(f, "etcd:{}", c.endpoints.join(",")),
            Datastore::Kubernetes => f.write_str("kubernetes"),
        }
    }
}

impl Datastore {
    /// The flag's value if given, else `SERVAL_DATASTORE`, else the default file; etcd
    /// options from the environment.
    pub fn resolve(flag: Option<&str>) -> Result<Self, StoreError> {
        let env = std::env::var(ENV_DATASTORE)
            .ok()
            .filter(|v| !v.trim().is_empty());
        let ds = match flag.map(str::to_owned).or(env) {
            Some(s) => s.parse()?,
            None => Datastore::File(PathBuf::from(DEFAULT_PATH)),
        };
        Ok(match ds {
            Datastore::Etcd(c) => Datastore::Etcd(c.with_env()?),
            other => other,
        })
    }

    /// [`Datastore::resolve`] without a flag.
    pub fn from_env_or_default() -> Result<Self, StoreError> {
        Datastore::resolve(None)
    }
}

/// Opens (connects to) the datastore.
pub async fn open(ds: &Datastore) -> Result<Arc<dyn Store>, StoreError> {
    match ds {
        Datastore::File(p) => Ok(Arc::new(FileStore::new(p))),
        #[cfg(feature = "etcd")]
        Datastore::Etcd(c) => Ok(Arc::new(super::etcd::EtcdStore::connect(c.clone()).await?)),
        #[cfg(not(feature = "etcd"))]
        Datastore::Etcd(_) => Err(StoreError::Config(
            "this build has no etcd support (feature `etcd`)".into(),
        )),
        #[cfg(feature = "kubernetes")]
        Datastore::Kubernetes => Ok(Arc::new(super::kube::KubeStore::from_environment().await?)),
        #[cfg(not(feature = "kubernetes"))]
        Datastore::Kubernetes => Err(StoreError::Config(
            "this build has no Kubernetes support (feature `kubernetes`)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        assert_eq!(
            "file:/tmp/x.json".parse::<Datastore>().unwrap(),
            Datastore::File("/tmp/x.json".into())
        );
        match "etcd:127.0.0.1:2379, https://e2:2379"
            .parse::<Datastore>()
            .unwrap()
        {
            Datastore::Etcd(c) => {
                assert_eq!(
                    c.endpoints,
                    vec!["http://127.0.0.1:2379", "https://e2:2379"]
                );
                assert!(c.uses_tls());
                assert_eq!(c.prefix, DEFAULT_ETCD_PREFIX);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            "kubernetes".parse::<Datastore>().unwrap(),
            Datastore::Kubernetes
        );
        for bad in ["", "file:", "etcd:", "consul:x", "kube"] {
            let e = bad.parse::<Datastore>().unwrap_err();
            assert!(matches!(e, StoreError::Config(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn etcd_options_must_fit() {
        let mut c = EtcdConfig::new(vec!["http://a:1".into()]);
        assert!(c.validate().is_ok());
        c.tls.cert_file = Some("c.pem".into());
        assert!(c.validate().is_err());
        c.tls.key_file = Some("k.pem".into());
        assert!(c.validate().is_ok());
        c.username = Some("u".into());
        assert!(c.validate().is_err());
        c.password = Some("p".into());
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("\"p\""));
        c.prefix = "x/".into();
        assert!(c.validate().is_err());
    }
}
