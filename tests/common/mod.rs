//! Helpers shared by the integration tests: run the real `bootstrap` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test (`BOOTSTRAP_TEST_BIN` overrides it, so a long harness run can use a
/// copy while the tree is rebuilt).
pub fn bin() -> PathBuf {
    std::env::var_os("BOOTSTRAP_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bootstrap")))
}

/// Run `bootstrap` with args in the crate root, with a private state dir.
pub fn bootstrap(args: &[&str], state_dir: &Path) -> Output {
    Command::new(bin())
        .args(args)
        .env("BOOTSTRAP_STATE_DIR", state_dir)
        .env_remove("BOOTSTRAP_PLAN")
        .env("NO_COLOR", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run bootstrap")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
