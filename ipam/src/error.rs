//! Errors of the IPAM crate: bad objects ([`ModelError`]), store failures ([`StoreError`])
//! and failed operations ([`IpamError`]).

use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

use crate::model::{Family, HandleId, NodeName, PoolName};

/// An object or input that is not valid on its own.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("invalid {what} {value:?}: must be a DNS subdomain (lowercase letters, digits, '-', '.', at most 253 characters)")]
    InvalidName { what: &'static str, value: String },
    #[error("CIDR {cidr} has host bits set; did you mean {canonical}?")]
    NonCanonicalCidr { cidr: IpNet, canonical: IpNet },
    #[error("block size /{block_size} is out of range for {family}: it must be between /{min} and /{max}")]
    BlockSizeOutOfRange {
        block_size: u8,
        family: Family,
        min: u8,
        max: u8,
    },
    #[error("pool {cidr} is smaller than its block size /{block_size}")]
    PoolSmallerThanBlock { cidr: IpNet, block_size: u8 },
    #[error("pool {cidr} enables both IP-in-IP and VXLAN; pick one")]
    BothEncapsulations { cidr: IpNet },
    #[error("{ip} is not inside block {block}")]
    NotInBlock { ip: IpAddr, block: IpNet },
    #[error("{ip} is already allocated to handle {handle}")]
    AlreadyAllocated { ip: IpAddr, handle: HandleId },
    #[error("invalid selector {selector:?}: {detail}")]
    InvalidSelector { selector: String, detail: String },
    #[error("pool {cidr}: allowedUses LoadBalancer cannot be combined with other uses")]
    LoadBalancerCombined { cidr: IpNet },
}

/// A store operation that failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A compare-and-swap lost: the object changed (or appeared, or vanished) since it was
    /// read. Re-read and plan again.
    #[error("conflict on {key}: it changed since it was read")]
    Conflict { key: String },
    /// The store could not be reached or did not answer in time. Retryable; for a write the
    /// outcome is unknown (it may have been applied).
    #[error("datastore {store} unavailable: {detail}")]
    Unavailable { store: String, detail: String },
    /// The store's data cannot be read back. Nothing is overwritten.
    #[error(
        "datastore {location} is corrupt: {detail}; it was left untouched, repair or restore it"
    )]
    Corrupt { location: String, detail: String },
    /// The datastore was named or configured wrongly.
    #[error("datastore configuration: {0}")]
    Config(String),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The store refused the request for another reason (permissions, quota, validation).
    #[error("datastore {store} refused the request: {detail}")]
    Rejected { store: String, detail: String },
}

impl StoreError {
    /// Whether retrying after a fresh read may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. } | StoreError::Unavailable { .. }
        )
    }
}

/// An IPAM operation that failed.
#[derive(Debug, Error)]
pub enum IpamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{op} gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        op: &'static str,
        attempts: u32,
        #[source]
        last: StoreError,
    },
    #[error("no {family} address available for node {node}: {detail}")]
    NoAddresses {
        family: Family,
        node: NodeName,
        detail: String,
    },
    #[error("{ip} is not inside any IP pool")]
    NotInAnyPool { ip: IpAddr },
    #[error("pool {cidr} overlaps pool {other} ({other_cidr})")]
    PoolOverlap {
        cidr: IpNet,
        other: PoolName,
        other_cidr: IpNet,
    },
    #[error("a pool named {0} already exists")]
    PoolExists(PoolName),
    #[error("no pool named {0}")]
    PoolNotFound(PoolName),
    #[error("pool {name} still has {allocated} allocated addresses; release them first")]
    PoolInUse { name: PoolName, allocated: u64 },
    #[error("block {cidr} still has {in_use} allocated addresses")]
    BlockNotEmpty { cidr: IpNet, in_use: u32 },
    #[error("{ip} is already allocated to handle {handle}")]
    AlreadyAllocated { ip: IpAddr, handle: HandleId },
    #[error("{0}")]
    Invalid(String),
}
