//! `bootstrap plan` and `bootstrap graph`: what would run, rendered as text, markdown, JSON, DOT or
//! mermaid.
//!
//! Owns the dry-run views. It never runs an action and never contacts a cluster; `--probe` hands the
//! selected checks to the engine, which runs checks only.

mod graph;
mod markdown;
mod model;
mod text;

use std::io::Write;

use crate::cli::{Global, GraphArgs, PlanArgs, PlanFormat};
use crate::error::{Exit, Result, UserError};

pub use crate::spec::describe::{describe_action, shell_quote};
pub use model::{Basis, DryRun, PhaseView, StepStatus, StepView, build};

/// `bootstrap plan`.
pub fn plan_command(
    g: &Global,
    a: &PlanArgs,
    choose: crate::engine::environment::Chooser,
) -> Result<Exit> {
    let ws = crate::lint::load_checked(g)?;
    let sel = ws.dag.select(&a.selection.phases, &a.selection.steps)?;
    let mut view = build(&ws, &sel, &a.selection);
    if a.probe {
        crate::engine::probe(&ws, &mut view, choose)?;
        // What only the live world knows (lint --online), as warnings.
        for e in crate::lint::online_findings(&ws.spec, &ws.dag, &ws.state_dir) {
            eprintln!("warning[online]: {e}\n");
        }
    }
    let rendered = match a.format {
        PlanFormat::Text => text::render(&view, color_enabled(g, a.out.is_none())),
        PlanFormat::Markdown => markdown::render(&view),
        PlanFormat::Json => serde_json::to_string_pretty(&view)? + "\n",
    };
    match &a.out {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    UserError::new(format!("cannot create the directory for --out: {e}"))
                        .in_file(dir)
                })?;
            }
            std::fs::write(path, rendered.as_bytes()).map_err(|e| {
                UserError::new(format!("cannot write the plan: {e}"))
                    .in_file(path)
                    .field("--out")
            })?;
            if !g.quiet {
                eprintln!(
                    "Saved the plan to {}. Run exactly it with: bootstrap run --from-plan {}",
                    path.display(),
                    path.display()
                );
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(rendered.as_bytes())?;
        }
    }
    if a.detailed_exitcode {
        // Terraform's convention: 0 nothing to do, 2 work to do (1 is an error).
        return Ok(if view.summary.to_run > 0 || view.summary.drift > 0 {
            Exit::Usage
        } else {
            Exit::Ok
        });
    }
    Ok(Exit::Ok)
}

/// `bootstrap graph`.
pub fn graph_command(g: &Global, a: &GraphArgs) -> Result<Exit> {
    let ws = crate::lint::load(g)?;
    let sel = ws.dag.select(&a.phases, &[])?;
    let out = match a.format {
        crate::cli::GraphFormat::Dot => graph::dot(&ws.dag, &sel),
        crate::cli::GraphFormat::Mermaid => graph::mermaid(&ws.dag, &sel),
    };
    print!("{out}");
    Ok(Exit::Ok)
}

/// Colour for a human view: `--color`, NO_COLOR, and whether stdout is a terminal.
pub fn color_enabled(g: &Global, to_stdout: bool) -> bool {
    use std::io::IsTerminal;
    match g.color {
        crate::cli::ColorMode::Always => true,
        crate::cli::ColorMode::Never => false,
        crate::cli::ColorMode::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && to_stdout
                && std::io::stdout().is_terminal()
        }
    }
}
