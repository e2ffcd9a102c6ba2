//! The dry-run views behind `bootstrap plan` and `bootstrap graph`: what would run, rendered as
//! text, markdown, JSON, DOT or mermaid.
//!
//! Owns the views. It never runs an action and never contacts a cluster (`plan --probe` is wired by
//! `crate::commands`, which hands the selected checks to the engine).

pub mod graph;
pub mod markdown;
mod model;
pub mod text;

use crate::cli::Global;

pub use crate::spec::describe::{describe_action, shell_quote};
pub use model::{Basis, DryRun, PhaseView, StepStatus, StepView, basis, build};

/// Colour for a human view on stdout: the process's one decision ([`crate::color`]).
pub fn color_enabled(g: &Global, to_stdout: bool) -> bool {
    to_stdout
        && crate::color::decide(
            g.color,
            g.quiet,
            g.verbose > 0,
            &crate::color::Inputs::from_env(),
        )
        .stdout
}
