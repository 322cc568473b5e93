//! Test support shared by the integration tests: a real etcd on loopback.
#![allow(dead_code)]

pub mod etcd;
