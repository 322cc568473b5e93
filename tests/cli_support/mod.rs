//! The `serval` binary run as a user would, against a temporary file store.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("serval-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `serval ARGS [--datastore file:STORE]`, with none of serval's settings from the
/// environment of the test.
pub fn serval(store: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_serval"));
    c.args(args)
        .env_remove("SERVAL_DATASTORE")
        .env_remove("SERVAL_NODE")
        .env_remove("RUST_BACKTRACE");
    if let Some(s) = store {
        c.arg("--datastore").arg(format!("file:{}", s.display()));
    }
    c.output().expect("run serval")
}

/// Its standard output; it must succeed.
pub fn ok(store: &Path, args: &[&str]) -> String {
    let out = serval(Some(store), args);
    assert!(
        out.status.success(),
        "serval {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Its standard error; it must fail.
pub fn fails(store: Option<&Path>, args: &[&str]) -> String {
    let out = serval(store, args);
    assert!(!out.status.success(), "serval {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}
