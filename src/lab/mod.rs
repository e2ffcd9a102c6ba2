//! The lab: a simulated two-cluster environment (API servers, simulated controllers, tool stand-ins,
//! faults) that tests and rehearsals run against.
//!
//! Owns everything simulated. It never touches a real machine.

pub mod apiserver;
pub mod core;
pub mod sim;
pub mod tools;

use color_eyre::eyre::eyre;

use crate::cli::{Global, LabCommand};
use crate::error::{Exit, Result};

/// The lab, started in-process.
pub struct Lab;

/// A running lab: its API servers and simulated controllers.
pub struct LabHandle {
    dir: core::LabDir,
}

impl Lab {
    /// Start the lab for a plan: API servers, simulated controllers, tool links.
    pub async fn start(
        _plan: &crate::spec::Plan,
        state_dir: &std::path::Path,
    ) -> Result<LabHandle> {
        Err(eyre!(
            "the lab is not implemented yet (state dir {})",
            state_dir.display()
        ))
    }
}

impl LabHandle {
    /// Environment for steps: the tool links first on PATH, and the lab directory.
    pub fn step_env(&self) -> Vec<(String, String)> {
        let path = std::env::var_os("PATH")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        vec![
            (
                "PATH".into(),
                format!("{}:{path}", self.dir.bin().display()),
            ),
            (
                core::LAB_DIR_ENV.into(),
                self.dir.root().display().to_string(),
            ),
        ]
    }
    pub async fn shutdown(self) {}
}

pub fn lab_command(_g: &Global, _cmd: &LabCommand) -> Result<Exit> {
    Err(eyre!("`bootstrap lab` is not implemented yet"))
}
