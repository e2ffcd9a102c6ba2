//! `bootstrap plan` and `bootstrap graph`: what would run, rendered as text, markdown, JSON, DOT or
//! mermaid.
//!
//! Owns the dry-run views. It never runs an action and never contacts a cluster (except `--probe`,
//! which runs checks only, through the engine).

use color_eyre::eyre::eyre;

use crate::cli::{Global, GraphArgs, PlanArgs};
use crate::error::{Exit, Result};

pub fn plan_command(_g: &Global, _a: &PlanArgs) -> Result<Exit> {
    Err(eyre!("not yet"))
}
pub fn graph_command(_g: &Global, _a: &GraphArgs) -> Result<Exit> {
    Err(eyre!("not yet"))
}
