//! Test support shared by the integration tests: a real etcd on loopback, and a store
//! wrapper that counts requests.
#![allow(dead_code)]

pub mod counting;
pub mod etcd;
