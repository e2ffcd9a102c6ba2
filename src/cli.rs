//! The command line: every command, flag and default, as clap types.
//!
//! Owns parsing only. It never loads files or runs anything; `main` maps each command to one call.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "bootstrap",
    version = crate::version::LONG,
    about = "Take bare Talos nodes to two meshed, GitOps-managed Kubernetes clusters, one idempotent step at a time.",
    propagate_version = true,
    after_help = "Examples:
  bootstrap plan                       # what a run would do
  bootstrap run --phase foundation     # run one phase (and what it needs)
  bootstrap status --phase foundation  # what is recorded
  bootstrap logs talos-bootstrap/infra # the last attempt's output
  bootstrap -C ~/homelab run           # from anywhere

Shell completions (step and phase ids too): source <(COMPLETE=bash bootstrap)"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Run as if started in this directory (like `git -C` and `cargo -C`).
    #[arg(short = 'C', long = "chdir", global = true, value_name = "DIR")]
    pub chdir: Option<PathBuf>,
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
    /// Output for humans (text) or JSON: one object per event for run/resume, one document for
    /// plan, status, lint, graph and reset.
    #[arg(long, global = true, value_enum, default_value_t = OutputMode::Text)]
    pub output: OutputMode,
    /// Colour: auto honours NO_COLOR, TERM=dumb and whether the output is a terminal.
    #[arg(long, global = true, value_enum, default_value_t = ColorMode::Auto)]
    pub color: ColorMode,
    /// More detail (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors and the final summary.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The project root found upward from the current directory (not an option).
    #[arg(skip)]
    pub root: Option<PathBuf>,
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
    #[command(after_help = "Examples:
  bootstrap plan
  bootstrap plan --phase foundation --detailed-exitcode
  bootstrap plan --format json --out plan.json && bootstrap run --from-plan plan.json
  bootstrap plan --probe        # also ask the checks (read-only)")]
    Plan(PlanArgs),
    /// Run the selected steps and their unfinished prerequisites, gate by gate.
    #[command(after_help = "Examples:
  bootstrap run
  bootstrap run --phase foundation --yes
  bootstrap run --step 'talos-apply/apps/*' --concurrency 2
  bootstrap run --junit junit.xml --output json > events.jsonl   # CI")]
    Run(RunArgs),
    /// Continue the last run with the same selection.
    #[command(after_help = "Examples:
  bootstrap resume
  bootstrap resume --keep-going")]
    Resume(ResumeArgs),
    /// Show each step's recorded state and the last run's outcome.
    #[command(after_help = "Examples:
  bootstrap status
  bootstrap status --phase foundation
  bootstrap status --step 'talos-apply/*' --output json")]
    Status(StatusArgs),
    /// Forget recorded outcomes so that steps run again.
    #[command(after_help = "Examples:
  bootstrap reset talos-bootstrap/infra
  bootstrap reset 'talos-apply/*'
  bootstrap reset --phase foundation
  bootstrap reset --all")]
    Reset(ResetArgs),
    /// Release the state lock.
    #[command(after_help = "Examples:
  bootstrap unlock            # clears a lock whose holder is gone
  bootstrap unlock --force    # breaks a live holder's lock")]
    Unlock(UnlockArgs),
    /// Draw the step graph.
    #[command(after_help = "Examples:
  bootstrap graph | dot -Tsvg > graph.svg
  bootstrap graph --format mermaid --phase foundation
  bootstrap graph --status      # coloured by recorded outcome")]
    Graph(GraphArgs),
    /// Check the plan and phase files and report every problem.
    #[command(after_help = "Examples:
  bootstrap lint
  bootstrap lint --strict --tools
  bootstrap lint --output json")]
    Lint(LintArgs),
    /// Print the last attempt's output of a step (or another attempt's).
    #[command(after_help = "Examples:
  bootstrap logs talos-bootstrap/infra
  bootstrap logs nodes-ready/infra --attempt 1
  bootstrap logs flux-bootstrap/infra -f")]
    Logs(LogsArgs),
    /// Show a step: its rendered definition, check, recorded state and history.
    #[command(after_help = "Examples:
  bootstrap show talos-bootstrap/infra
  bootstrap show gate/foundation --output json")]
    Show(ShowArgs),
    /// Print the man page (roff) on stdout.
    #[command(after_help = "Examples:
  bootstrap man | man -l -")]
    Man,
    /// The simulated two-cluster lab.
    #[command(subcommand)]
    Lab(LabCommand),
    /// Where the state is kept (local, or shared in a cluster) and who holds its lock.
    #[command(subcommand)]
    State(StateCommand),
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the backend, its location, the holder of the lock and the last run.
    #[command(after_help = "Examples:
  bootstrap state show
  bootstrap state show --report     # the last run's report, from wherever it ran
  bootstrap state show --output json")]
    Show(StateShowArgs),
    /// Move the state to the cluster the plan's `state:` names, or back to this machine.
    #[command(after_help = "Examples:
  bootstrap state migrate --to kubernetes
  bootstrap state migrate --to local")]
    Migrate(StateMigrateArgs),
}

#[derive(Debug, Args)]
pub struct StateShowArgs {
    /// Print the last run's markdown report instead.
    #[arg(long)]
    pub report: bool,
}

#[derive(Debug, Args)]
pub struct StateMigrateArgs {
    /// Where to move it.
    #[arg(long, value_enum)]
    pub to: StateTarget,
    /// Replace what the target holds (another plan's state, or a copy of this one).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateTarget {
    Kubernetes,
    Local,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The step id.
    #[arg(value_name = "STEP")]
    pub step: String,
    /// Which attempt of the step's last run (default: the last one).
    #[arg(long, value_name = "N")]
    pub attempt: Option<u32>,
    /// Keep printing what the step writes, until it finishes (like `tail -f`).
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The step (or `gate/<phase>`) id.
    #[arg(value_name = "STEP")]
    pub step: String,
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
    /// The document to write: text for reading, markdown for a change ticket, json to save and run
    /// with `run --from-plan` (`--output json` is the same as `--format json`).
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
    /// Also write the run as JUnit XML (each phase a test suite, each step and gate item a case).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Do not check before the first action that every tool the steps need is on PATH.
    #[arg(long)]
    pub skip_preflight: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// How many steps may run at once [default: enough to run every cluster side by side].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Answer yes to every confirmation (needed for confirm steps when not on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// After a failure, keep running every branch that does not depend on it.
    #[arg(long)]
    pub keep_going: bool,
    /// Also write the run as JUnit XML (each phase a test suite, each step and gate item a case).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Do not check before the first action that every tool the steps need is on PATH.
    #[arg(long)]
    pub skip_preflight: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// text for reading, json for scripts (the same as `--output json`).
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,
    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Step ids (globs allowed).
    #[arg(value_name = "STEP")]
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
    /// Graphviz DOT or a mermaid flowchart (`--output json` gives nodes and edges).
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
    /// Draw only these phases' steps (repeatable).
    #[arg(long = "phase", id = "phase", value_name = "PHASE")]
    pub phases: Vec<String>,
    /// Colour each node by its recorded status (done, failed, changed, never run).
    #[arg(long)]
    pub status: bool,
    /// Draw every dependency, not only the ones that are not implied by others.
    #[arg(long)]
    pub all_edges: bool,
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
    /// Forget the lab's clusters and start fresh (recorded outcomes are kept).
    Reset,
    /// Keep the lab's API servers up in the foreground for kubectl (or say which process does).
    Serve,
    /// Make a cluster's API server unreachable for a while, as a control plane that goes down:
    /// new connections are refused and open ones cut; then it serves again with every write.
    #[command(after_help = "Examples:
  bootstrap lab outage infra --seconds 30")]
    Outage {
        /// The cluster whose API server goes down.
        #[arg(value_name = "CLUSTER")]
        cluster: String,
        /// How long it stays unreachable.
        #[arg(long, value_name = "N")]
        seconds: u64,
    },
}
