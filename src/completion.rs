//! Shell completions: clap_complete's `CompleteEnv` (`source <(COMPLETE=bash bootstrap)`), with step
//! and phase ids completed from the plan and phase files found from the current directory.
//!
//! Owns the dynamic candidates. It never writes anything; a plan that does not load completes
//! nothing.

use std::ffi::OsStr;
use std::path::PathBuf;

use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};

/// The command line with its dynamic completers: step ids for `--step`, `reset`, `logs` and
/// `show`; phase ids for `--phase` (attached here so that `cli` stays plain parsing).
pub fn command() -> clap::Command {
    fn attach(cmd: clap::Command) -> clap::Command {
        let ids: Vec<String> = cmd
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        let mut cmd = cmd;
        for id in ids {
            cmd = match id.as_str() {
                "phase" => cmd.mut_arg(id, |a| a.add(ArgValueCompleter::new(phase_ids))),
                "steps" | "step" => cmd.mut_arg(id, |a| a.add(ArgValueCompleter::new(step_ids))),
                _ => cmd,
            };
        }
        let names: Vec<String> = cmd
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        for n in names {
            cmd = cmd.mut_subcommand(n, attach);
        }
        cmd
    }
    attach(<crate::cli::Cli as clap::CommandFactory>::command())
}

fn workspace() -> Option<crate::workspace::Workspace> {
    let plan = std::env::var_os("BOOTSTRAP_PLAN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("plans/lab.yaml"));
    let mut g = crate::cli::Global {
        chdir: None,
        plan,
        phases: PathBuf::from("phases"),
        state_dir: std::env::var_os("BOOTSTRAP_STATE_DIR").map(PathBuf::from),
        output: crate::cli::OutputMode::Text,
        color: crate::cli::ColorMode::Never,
        verbose: 0,
        quiet: true,
        root: None,
    };
    crate::project::resolve(&mut g).ok()?;
    crate::workspace::Workspace::load(&g).ok()
}

fn matching(ids: impl Iterator<Item = String>, current: &OsStr) -> Vec<CompletionCandidate> {
    let cur = current.to_string_lossy();
    let mut v: Vec<String> = ids.filter(|id| id.starts_with(cur.as_ref())).collect();
    v.dedup();
    v.into_iter().map(CompletionCandidate::new).collect()
}

/// Step (and gate) ids.
pub fn step_ids(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(ws) = workspace() else {
        return Vec::new();
    };
    matching(ws.dag.work.iter().map(|w| w.id().to_string()), current)
}

/// Phase ids.
pub fn phase_ids(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(ws) = workspace() else {
        return Vec::new();
    };
    matching(ws.dag.phases.iter().map(|p| p.id.clone()), current)
}
