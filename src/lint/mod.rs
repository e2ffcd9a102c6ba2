//! `bootstrap lint`: meaning checks on the plan and phases, from names and CIDRs to what the real tools
//! will do with the rendered commands (order, identities, Talos patches, Helm values, flags, secrets).
//!
//! Owns the rules and their findings, each with file, line, field, what is wrong and what would fix
//! it, and a severity (errors exit 2; warnings exit 0 unless `--strict`). It never changes files and
//! contacts nothing, except `--online`, which only reads (the Git tree and the API servers' TLS).
//!
//! One file per rule family; `tools` holds the table of each tool's real commands and flags.

mod cilium_chart;
mod commands;
mod context;
mod contexts;
mod deprecated;
mod files;
mod guard;
mod helm;
mod identity;
mod online;
mod order;
mod plan;
mod secrets;
mod shell;
mod state;
mod talos;
mod tool_versions;
pub mod tools;
mod versions;

use std::path::Path;

use serde_saphyr::Spanned;

use crate::cli::{Global, LintArgs};
use crate::dag::Dag;
use crate::error::{Exit, ExitError, Result, UserError};
use crate::workspace::state_dir_for;

pub use plan::plan_findings;
pub use secrets::{env_literal_findings, secret_findings};

pub(crate) use context::Ctx;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Works today but is deprecated or fragile: exit 0 unless `--strict`.
    Warning,
    /// Cannot work, or does harm: exit 2.
    Error,
}

/// One finding of one rule.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    /// The rule family, as listed in the README ("order", "talos-patches", …).
    pub rule: &'static str,
    pub error: UserError,
}

impl Finding {
    pub fn error(rule: &'static str, error: UserError) -> Self {
        Finding {
            severity: Severity::Error,
            rule,
            error,
        }
    }
    pub fn warning(rule: &'static str, error: UserError) -> Self {
        Finding {
            severity: Severity::Warning,
            rule,
            error,
        }
    }
}

/// Every finding of every rule (plus `--online` and `--tools` when asked), masked, one per place.
fn collect(
    spec: &crate::spec::load::Spec,
    dag: std::result::Result<&Dag, Vec<UserError>>,
    state_dir: &Path,
    online: bool,
    tools: Option<&crate::cli::Selection>,
) -> Vec<Finding> {
    let mut findings: Vec<Finding> = plan_findings(&spec.plan, &spec.plan_file)
        .into_iter()
        .map(|e| {
            let secret = e
                .field
                .as_deref()
                .is_some_and(|f| f.starts_with("secrets."));
            Finding::error(if secret { "secrets" } else { "plan" }, e)
        })
        .collect();
    findings.extend(versions::plan_version_findings(spec));
    findings.extend(state::findings(spec));
    match dag {
        Ok(dag) => {
            let cx = Ctx::new(spec, dag, state_dir);
            findings.extend(
                files::step_file_findings(spec, dag, state_dir)
                    .into_iter()
                    .map(|e| Finding::error("files", e)),
            );
            findings.extend(secrets::step_findings(&cx));
            findings.extend(order::findings(&cx));
            findings.extend(talos::findings(&cx));
            findings.extend(identity::findings(&cx));
            findings.extend(contexts::findings(&cx));
            findings.extend(helm::findings(&cx));
            findings.extend(commands::findings(&cx));
            findings.extend(versions::findings(&cx));
            findings.extend(shell::findings(&cx));
            findings.extend(deprecated::findings(&cx));
            findings.extend(guard::findings(&cx));
            if online {
                findings.extend(online::findings(&cx));
            }
            if let Some(selection) = tools {
                match dag.select(&selection.phases, &selection.steps) {
                    Ok(sel) => findings.extend(
                        files::tool_findings(spec, dag, &sel.order)
                            .into_iter()
                            .map(|e| Finding::error("tools", e)),
                    ),
                    Err(e) => findings.push(Finding::error("tools", e)),
                }
            }
        }
        Err(errs) => findings.extend(errs.into_iter().map(|e| Finding::error("phases", e))),
    }
    // A finding never echoes a secret: mask every literal the inputs hold, whatever rule quotes it.
    let literals = secrets::literals(spec);
    for f in &mut findings {
        secrets::mask_error(&mut f.error, &literals);
    }
    // One finding per place: a template step expanded per cluster is one mistake in the file.
    let mut places = std::collections::HashSet::new();
    let names: Vec<&str> = spec
        .plan
        .clusters
        .iter()
        .map(|c| c.name.value.as_str())
        .collect();
    findings.retain(|f| {
        let e = &f.error;
        // The same words but for the cluster's name: the same finding.
        let words = e
            .message
            .split(|c: char| !c.is_alphanumeric() && c != '-')
            .filter(|w| !names.contains(w))
            .collect::<Vec<_>>()
            .join(" ");
        e.line.is_none()
            || places.insert((
                f.rule,
                e.file.clone(),
                e.line,
                e.column,
                e.field.clone(),
                words,
            ))
    });
    findings
}

/// Load the workspace a command works on. Secrets are references: a literal value must never reach
/// plan output, logs or state, so one is refused here, before anything is rendered.
pub fn load(
    g: &Global,
) -> std::result::Result<crate::workspace::Workspace, crate::error::UserErrors> {
    let ws = crate::workspace::Workspace::load(g)?;
    let mut errors = secret_findings(&ws.spec.plan, &ws.spec.plan_file);
    errors.extend(env_literal_findings(&ws.spec));
    if errors.is_empty() {
        Ok(ws)
    } else {
        Err(crate::error::UserErrors(errors))
    }
}

/// Load, then refuse what `lint` rejects: `plan` and `run` never go on with a plan that lint finds
/// errors in (a duplicated node would otherwise run real applies before failing). Warnings pass.
pub fn load_checked(
    g: &Global,
) -> std::result::Result<crate::workspace::Workspace, crate::error::UserErrors> {
    let ws = load(g)?;
    let errors = errors(&ws.spec, &ws.dag, &ws.state_dir);
    if errors.is_empty() {
        Ok(ws)
    } else {
        Err(crate::error::UserErrors(errors))
    }
}

/// The lint errors of a loaded workspace: what `plan` and `run` refuse to go on with (exit 2)
/// before anything runs. Warnings do not stop them; `--tools` and `--online` are not part of it.
pub fn errors(spec: &crate::spec::load::Spec, dag: &Dag, state_dir: &Path) -> Vec<UserError> {
    collect(spec, Ok(dag), state_dir, false, None)
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.error)
        .collect()
}

/// `bootstrap lint`.
pub fn lint_command(g: &Global, a: &LintArgs) -> Result<Exit> {
    // Files that do not load are findings too (with a count and `--output json`), not a bare error.
    let (mut findings, files) = match crate::spec::load_spec(&g.plan, &g.phases) {
        Ok(spec) => {
            let state_dir = state_dir_for(g, &spec.plan.name.value);
            let dag = Dag::build(&spec, &state_dir);
            let f = collect(
                &spec,
                dag.as_ref().map_err(|e| e.0.clone()),
                &state_dir,
                a.online,
                a.tools.then_some(&a.selection),
            );
            (
                f,
                format!(
                    "{} and {} phase file(s)",
                    spec.plan_file.display(),
                    spec.phases.len()
                ),
            )
        }
        Err(errs) => (
            errs.0
                .into_iter()
                .map(|e| Finding::error("load", e))
                .collect(),
            String::new(),
        ),
    };
    // One finding per place: a typo in a step expanded for two clusters is one typo.
    let mut seen = std::collections::HashSet::new();
    findings.retain(|f| {
        seen.insert((
            f.rule,
            f.error.file.clone(),
            f.error.line,
            f.error.column,
            f.error.field.clone(),
            f.error.message.clone(),
        ))
    });
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    if g.output == crate::cli::OutputMode::Json {
        // One JSON document on stdout, for CI: the findings, already masked.
        let list: Vec<serde_json::Value> = findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "severity": match f.severity { Severity::Error => "error", Severity::Warning => "warning" },
                    "rule": f.rule,
                    "file": f.error.file.as_ref().map(|p| p.display().to_string()),
                    "line": f.error.line,
                    "column": f.error.column,
                    "field": f.error.field,
                    "message": f.error.message,
                    "help": f.error.help,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "errors": errors, "warnings": warnings, "findings": list })
        );
    }
    for (i, f) in findings.iter().enumerate() {
        if i > 0 {
            eprintln!();
        }
        let label = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        eprintln!("{label}[{}]: {}", f.rule, f.error);
    }
    if findings.is_empty() {
        if !g.quiet && g.output != crate::cli::OutputMode::Json {
            println!("lint: no problems in {files}");
        }
        return Ok(Exit::Ok);
    }
    if errors > 0 || a.strict {
        if !findings.is_empty() && g.output != crate::cli::OutputMode::Json {
            eprintln!();
        }
        return Err(color_eyre::Report::new(ExitError::new(
            Exit::Usage,
            format!(
                "lint found {errors} error(s) and {warnings} warning(s){}",
                if errors == 0 { " (--strict)" } else { "" }
            ),
        )));
    }
    if !g.quiet {
        eprintln!("\nlint: {warnings} warning(s), no errors (--strict makes warnings fail)");
    }
    Ok(Exit::Ok)
}

/// The preflight of `run` and `resume`, before the first action: every tool the steps about to run
/// need is on PATH (what `lint --tools` checks), and talosctl, flux and kubectl are the versions the
/// plan says. `--skip-preflight` skips it.
pub fn preflight(spec: &crate::spec::load::Spec, dag: &Dag, order: &[usize]) -> Vec<UserError> {
    let mut out: Vec<UserError> = files::tool_findings(spec, dag, order)
        .into_iter()
        .map(|e| e.help("install it or add its directory to PATH; `--skip-preflight` runs anyway"))
        .collect();
    // ... and they are the versions the plan says.
    out.extend(
        tool_versions::findings(spec, dag, order)
            .into_iter()
            .map(|e| {
                let help = e.help.clone().unwrap_or_default();
                e.help(format!("{help}; `--skip-preflight` runs anyway"))
            }),
    );
    out
}

/// The `--online` findings alone, masked (for `plan --probe`, which shows them as warnings).
pub fn online_findings(
    spec: &crate::spec::load::Spec,
    dag: &Dag,
    state_dir: &Path,
) -> Vec<UserError> {
    let cx = Ctx::new(spec, dag, state_dir);
    let literals = secrets::literals(spec);
    online::findings(&cx)
        .into_iter()
        .map(|mut f| {
            secrets::mask_error(&mut f.error, &literals);
            f.error
        })
        .collect()
}

pub(crate) fn at<T>(e: UserError, file: &Path, s: &Spanned<T>) -> UserError {
    e.in_file(file)
        .at(s.referenced.line(), s.referenced.column())
        .with_source_line()
}
