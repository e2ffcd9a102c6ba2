//! The command line: every command, flag and default, as clap types.
//!
//! Owns parsing only. It never loads files or runs anything; `main` maps each command to one call.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "bootstrap",
    version,
    about = "Take bare Talos nodes to two meshed, GitOps-managed Kubernetes clusters, one idempotent step at a time.",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The environment's plan file.
    #[arg(
        long,
        global = true,
        env = "BOOTSTRAP_PLAN",
        default_value = "plans/lab.yaml"
    )]
    pub plan: PathBuf,
    /// The directory of phase files (read in file-name order).
    #[arg(long, global = true, default_value = "phases")]
    pub phases: PathBuf,
    /// Where state, logs and reports go [default: .bootstrap/<plan name>/].
    #[arg(long, global = true, env = "BOOTSTRAP_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Output for humans (text) or one JSON object per event (json).
    #[arg(long, global = true, value_enum, default_value_t = OutputMode::Text)]
    pub output: OutputMode,
    /// Colour: auto honours NO_COLOR and whether stdout is a terminal.
    #[arg(long, global = true, value_enum, default_value_t = ColorMode::Auto)]
    pub color: ColorMode,
    /// More detail (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors and the final summary.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputMode {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorMode {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show exactly what a run would do, without running or contacting anything.
    Plan(PlanArgs),
    /// Run the selected steps and their unfinished prerequisites, gate by gate.
    Run(RunArgs),
    /// Continue the last run with the same selection.
    Resume(ResumeArgs),
    /// Show each step's recorded state and the last run's outcome.
    Status(StatusArgs),
    /// Forget recorded outcomes so that steps run again.
    Reset(ResetArgs),
    /// Release the state lock.
    Unlock(UnlockArgs),
    /// Draw the step graph.
    Graph(GraphArgs),
    /// Check the plan and phase files and report every problem.
    Lint(LintArgs),
    /// The simulated two-cluster lab.
    #[command(subcommand)]
    Lab(LabCommand),
}

/// Which steps a command works on.
#[derive(Debug, Clone, Default, Args)]
pub struct Selection {
    /// Select a phase's steps (repeatable).
    #[arg(long = "phase", id = "phase", value_name = "PHASE")]
    pub phases: Vec<String>,
    /// Select steps by id; globs allowed, e.g. 'talos-apply/apps/*' (repeatable).
    #[arg(long = "step", value_name = "STEP")]
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub selection: Selection,
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Write the plan to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit 0 when there is nothing to do, 2 when there is work, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also run each selected step's check (checks only, never actions) and report what would run.
    #[arg(long)]
    pub probe: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// How many steps may run at once [default: enough to run every cluster side by side].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Answer yes to every confirmation (needed for confirm steps when not on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// After a failure, keep running every branch that does not depend on it.
    #[arg(long)]
    pub keep_going: bool,
    /// Run exactly the plan saved by `bootstrap plan --format json --out FILE`.
    #[arg(long, value_name = "FILE")]
    pub from_plan: Option<PathBuf>,
    /// Ask the checks of steps recorded done again (and run what no longer holds).
    #[arg(long)]
    pub refresh: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[arg(long)]
    pub concurrency: Option<usize>,
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[arg(long)]
    pub keep_going: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Step ids (globs allowed).
    pub steps: Vec<String>,
    /// Forget every step of a phase (repeatable).
    #[arg(long = "phase", id = "phase", value_name = "PHASE")]
    pub phases: Vec<String>,
    /// Forget everything.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Release the lock even when a holder is recorded. A holder alive on this host is refused
    /// unless its pid is given with --pid.
    #[arg(long)]
    pub force: bool,
    /// With --force: the pid of the live holder to take over from (it is asked to stop with
    /// SIGTERM and the lock is released when it has).
    #[arg(long, value_name = "PID", requires = "force")]
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
    #[arg(long = "phase", id = "phase", value_name = "PHASE")]
    pub phases: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Also check that every tool the selected steps run is on PATH.
    #[arg(long)]
    pub tools: bool,
    /// Warnings fail too (exit 2).
    #[arg(long)]
    pub strict: bool,
    /// Also check what only the live world knows: the Git repository's Kustomizations, the cluster
    /// endpoints and their certificates (read-only).
    #[arg(long)]
    pub online: bool,
    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Show the lab's clusters, nodes and what is installed.
    Status,
    /// Forget the lab's clusters and start fresh.
    Reset,
    /// Keep the lab's API servers up in the foreground for kubectl.
    Serve,
}
