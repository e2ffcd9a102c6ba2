//! Running the graph: the dispatcher (decides, records, reports) and the executor (runs units),
//! gates, confirmation, resume and saved plans.
//!
//! Owns `run`, `resume`, `status`, `reset` and `unlock`. It never renders output itself: it emits
//! events to reporters.

use color_eyre::eyre::eyre;

use crate::cli::{Global, ResetArgs, ResumeArgs, RunArgs, StatusArgs, UnlockArgs};
use crate::error::{Exit, Result};

pub fn run_command(_g: &Global, _a: &RunArgs) -> Result<Exit> {
    Err(eyre!("`bootstrap run` is not implemented yet"))
}
pub fn resume_command(_g: &Global, _a: &ResumeArgs) -> Result<Exit> {
    Err(eyre!("`bootstrap resume` is not implemented yet"))
}
pub fn status_command(_g: &Global, _a: &StatusArgs) -> Result<Exit> {
    Err(eyre!("`bootstrap status` is not implemented yet"))
}
pub fn reset_command(_g: &Global, _a: &ResetArgs) -> Result<Exit> {
    Err(eyre!("`bootstrap reset` is not implemented yet"))
}
pub fn unlock_command(_g: &Global, _a: &UnlockArgs) -> Result<Exit> {
    Err(eyre!("`bootstrap unlock` is not implemented yet"))
}

/// Recorded outcome and fingerprint of every step, from persisted state (empty until the engine lands).
pub fn recorded_statuses(
    _ws: &crate::workspace::Workspace,
) -> std::collections::HashMap<String, (crate::dryrun::StepStatus, String)> {
    std::collections::HashMap::new()
}

/// `bootstrap plan --probe`: run each selected step's check (checks only) and fill `probe`.
pub fn probe(_ws: &crate::workspace::Workspace, _view: &mut crate::dryrun::DryRun) -> Result<()> {
    Err(eyre!("`bootstrap plan --probe` is not implemented yet"))
}
