//! `bootstrap lint`: meaning checks on the plan and phases (names, ids, CIDRs, files, templates, tools).
//!
//! Owns the rules and their findings, each with file, line, what is wrong and what would fix it. It
//! never changes files.

use color_eyre::eyre::eyre;

use crate::cli::{Global, LintArgs};
use crate::error::{Exit, Result};

pub fn lint_command(_g: &Global, _a: &LintArgs) -> Result<Exit> {
    Err(eyre!("not yet"))
}
