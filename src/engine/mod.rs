//! Running the graph. [`dispatch`] decides (a state machine without I/O); [`unit`] executes one
//! unit (check, action with retries, verify; or a gate's items); [`run`] wires them: it records
//! every transition in the journal before the run moves on and emits [`Event`]s to the reporters;
//! [`prepare`] decides what must run before it starts; [`environment`] is where steps run (the real
//! world, or the lab wired by the command line); [`signals`] owns INT/TERM/HUP.
//!
//! Owns running a selection. It never renders output itself and never knows the command line's
//! choices beyond [`RunOptions`]; the commands live in `crate::commands`.

pub(crate) mod action;
pub mod dispatch;
pub mod environment;
mod journal;
mod prepare;
mod run;
pub mod signals;
mod unit;

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::checks::Clusters;
use crate::cli::{Global, OutputMode};
use crate::dag::{Selection, Work};
use crate::error::{Exit, ExitError, Result};
use crate::report::{Event, Reporter};
use crate::secrets::Redactor;
use crate::spec::phase::OnChange;
use crate::state::kube::Lost;
use crate::state::{Holder, Lock, LockError, Outcome, backend};
use crate::workspace::Workspace;
use dispatch::{Dispatcher, RunOutcome};
use environment::Environment;
use signals::Signals;

/// How a run was asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub phases: Vec<String>,
    pub steps: Vec<String>,
    pub concurrency: Option<usize>,
    pub yes: bool,
    pub keep_going: bool,
    pub resumed: bool,
    /// Re-run the checks of steps recorded done (drift after a lab reset or a manual change).
    pub refresh: bool,
}

/// Whether prompts are possible: stdin and stderr are terminals and CI is unset.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal() && !crate::color::is_ci()
}

/// Where a run's events go, chosen by the command that starts it: the live reporters (bars,
/// plain lines or JSON, and `--junit`) and the run report.
pub struct Outputs {
    pub reporters: Vec<Box<dyn Reporter>>,
    pub report: crate::report::MarkdownReport,
}

fn new_run_id() -> String {
    let ts = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    format!("{ts}-{:04x}", fastrand::u16(..))
}

fn log_path(state_dir: &Path, run_id: &str, id: &str) -> PathBuf {
    state_dir
        .join("logs")
        .join(run_id)
        .join(format!("{}.log", id.replace('/', "__")))
}

/// The environment every step gets (before its own `env`).
pub(crate) fn base_env(ws: &Workspace, lab_env: &[(String, String)]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let kubeconfig = crate::render::plan_path(
        &ws.spec.plan,
        &crate::dag::absolute_dir(&ws.state_dir),
        &ws.spec.plan.paths.kubeconfig.value,
    );
    env.insert("KUBECONFIG".to_string(), kubeconfig);
    for (k, v) in lab_env {
        env.insert(k.clone(), v.clone());
    }
    env
}

/// The result a unit task sends back to the dispatcher.
pub(crate) struct UnitResult {
    pub index: usize,
    /// The unit's action was refused (the run was stopping): nothing was recorded for it.
    pub not_started: bool,
    pub outcome: Outcome,
    pub attempts: u32,
    pub duration: Duration,
    pub exit_code: Option<i32>,
    pub detail: String,
    pub tail: String,
    pub log: String,
}

/// Messages from unit tasks to the dispatcher: every transition goes through it to be recorded.
pub(crate) enum Msg {
    /// An attempt wants to start. The dispatcher answers `true` once the `step-started` record is
    /// durable, or `false` (nothing recorded) when the run is stopping.
    Started {
        index: usize,
        attempt: u32,
        log: String,
        ack: tokio::sync::oneshot::Sender<bool>,
    },
    /// A command of a running unit started in its own process group.
    Spawned {
        index: usize,
        pgid: u32,
    },
    Done(UnitResult),
}

/// Run a selection in an environment. Returns the exit code. Wiring only: the dispatcher decides,
/// the units execute, the run records and reports.
pub async fn execute(
    ws: &Workspace,
    sel: &Selection,
    g: &Global,
    opts: &RunOptions,
    environment: &mut dyn Environment,
    outputs: Outputs,
) -> Result<Exit> {
    let started = Instant::now();
    let run_id = new_run_id();
    let signals = Signals::install();
    let lock = take_lock(ws, &run_id)?;
    // Where steps run comes first: the lab's clusters may be where the state is.
    let extra = environment.start().await?;
    let lost = Lost::new();
    let me = Holder::this(&run_id);
    let opened = journal::blocking(|| -> Result<_> {
        let mut store = backend::open_for_run(&ws.spec.plan, &ws.state_dir, &me, &lost)?;
        // Compacted on run start: the journal becomes one snapshot record, then this run's.
        let (before, after) = store.compact()?;
        tracing::debug!("journal compacted: {before} -> {after} bytes");
        let state = store.load()?;
        Ok((store, state))
    });
    let (store, state) = match opened {
        Ok(o) => o,
        Err(e) => {
            environment.stop().await;
            return Err(e);
        }
    };
    let todo = prepare::work(ws, sel, &state, opts.refresh);
    let unconfirmed = confirm(ws, &todo, opts, g).await;
    let plan = prepare::run_plan(ws, sel, &state, &todo, unconfirmed, opts);
    let concurrency = plan.concurrency;
    let forced = todo
        .changed
        .iter()
        .copied()
        .filter(|&i| prepare::on_change(&ws.dag.work[i]) == OnChange::Run)
        .collect();
    let mut dispatcher = Dispatcher::new(plan);

    let journal = journal::Journal::new(
        ws,
        store,
        run_id.clone(),
        journal::Selection {
            phases: opts.phases.clone(),
            steps: opts.steps.clone(),
        },
    );
    let mut run = run::Run::new(ws, outputs, journal, me, lost, started);
    run.emit(Event::RunStarted {
        run_id: run_id.clone(),
        plan: ws.spec.plan.name.value.clone(),
        lab: ws.spec.plan.lab,
        steps: sel.order.len(),
        concurrency,
        resumed: opts.resumed,
    })?;
    stop_orphans(&state);
    let mut env = base_env(ws, &extra);
    // Marks every process the run starts, so a later run can tell its orphans from strangers.
    env.insert("BOOTSTRAP_RUN_ID".into(), run_id.clone());
    let kubeconfig = PathBuf::from(env.get("KUBECONFIG").cloned().unwrap_or_default());
    let shared = std::sync::Arc::new(run::Shared {
        clusters: std::sync::Arc::new(Clusters::new(&ws.spec.plan, kubeconfig)),
        env,
        redactor: Redactor::new(),
        forced,
        state,
    });
    let driven = run.drive(&mut dispatcher, shared, &signals).await;
    let exit = driven.and_then(|()| finish(&mut run, &dispatcher, &signals, g));
    // The store gives its lock up while the clusters (the lab's, too) are still there.
    journal::blocking(|| drop(run));
    environment.stop().await;
    let exit = exit?;
    drop(lock);
    Ok(exit)
}

/// A run killed with `kill -9` cannot stop its children: their process groups live on (a
/// `helm --wait` finishing its install, say) and would race the resumed run. Before anything
/// starts, stop every process group an interrupted step left running (TERM, then KILL).
fn stop_orphans(state: &crate::state::State) {
    for s in state.steps.values() {
        let Some(pgid) = s.pgid.filter(|_| s.outcome == Outcome::Interrupted) else {
            continue;
        };
        let marker = format!("BOOTSTRAP_RUN_ID={}", s.run_id);
        if !crate::exec::group_members_with(pgid, &marker).is_empty() {
            eprintln!(
                "note: {} was still running from run {} (process group {pgid}); stopping it before resuming",
                s.id, s.run_id
            );
            crate::exec::stop_group(pgid);
        }
    }
}

fn take_lock(ws: &Workspace, run_id: &str) -> Result<Lock> {
    match Lock::acquire(&ws.state_dir, run_id) {
        Ok(l) => {
            if let Some(prev) = &l.took_over {
                eprintln!("note: took over a stale lock left by {prev}");
            }
            Ok(l)
        }
        Err(LockError::Held(h)) => {
            let who = h
                .map(|h| h.to_string())
                .unwrap_or_else(|| "another process".into());
            Err(ExitError::new(Exit::Locked, format!("the state in {} is locked by {who}; wait for that run, or run `bootstrap unlock` if it is gone", ws.state_dir.display())).into())
        }
        Err(LockError::Io(e)) => Err(color_eyre::eyre::eyre!(
            "cannot lock the state directory {}: {e}",
            ws.state_dir.display()
        )),
    }
}

/// Ask once, before anything runs, for every step that needs confirmation (Terraform's "Do you
/// want to perform these actions?"). Returns the units left unconfirmed (the run stops before the
/// first of them): all of them without a terminal or after a "no", none after a "yes".
async fn confirm(
    ws: &Workspace,
    todo: &prepare::Todo,
    opts: &RunOptions,
    g: &Global,
) -> HashSet<usize> {
    let need = prepare::needing_confirmation(ws, &todo.todo, opts);
    if need.is_empty() || !interactive() || g.output == OutputMode::Json {
        return need.into_iter().collect();
    }
    let mut text = format!(
        "{} step(s) are irreversible or destructive and need your confirmation:\n",
        need.len()
    );
    for &i in &need {
        if let Work::Step(u) = &ws.dag.work[i] {
            text.push_str(&format!(
                "  {}: {}\n      {}\n",
                u.id,
                u.description,
                crate::spec::describe::describe_action(&u.run)
            ));
        }
    }
    text.push_str("Do you want to perform these actions?");
    let yes = tokio::task::spawn_blocking(move || {
        dialoguer::Confirm::new()
            .with_prompt(text)
            .default(false)
            .interact()
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    if yes {
        HashSet::new()
    } else {
        need.into_iter().collect()
    }
}

/// Record and report the end of the run, then print the summary. Returns the exit code.
fn finish(run: &mut run::Run, disp: &Dispatcher, signals: &Signals, g: &Global) -> Result<Exit> {
    let outcome = disp.outcome();
    run.report.tails = run
        .tails
        .iter()
        .map(|(k, (t, _))| (k.clone(), t.clone()))
        .collect();
    let report_path = run
        .report
        .write(&run.ws.state_dir, &run.run_id)
        .map(|p| p.display().to_string())
        .unwrap_or_default();

    let failed = disp
        .failed()
        .iter()
        .map(|&i| run.ws.dag.work[i].id().to_string())
        .collect();
    // The failures' tails first, so the reporters' closing summary is the run's last line.
    if g.output != OutputMode::Json {
        print_summary(run, disp, outcome, g);
    }
    run.emit(Event::RunFinished {
        run_id: run.run_id.clone(),
        outcome: outcome.as_str().into(),
        duration_ms: run.started.elapsed().as_millis() as u64,
        failed,
        report: report_path.clone(),
    })?;
    run.reporter.finish();
    // A teammate sees the last run's report where the state is (the local store has it on disk).
    if let Ok(md) = std::fs::read_to_string(&report_path) {
        let run_id = run.run_id.clone();
        journal::blocking(|| run.journal.store.keep_report(&run_id, &md));
    }
    let races = journal::blocking(|| run.journal.store.conflicts());
    if races > 0 && g.output != OutputMode::Json {
        eprintln!(
            "note: {races} write(s) to the state lost a resourceVersion race (someone else changed the object) and were applied again; no record was lost"
        );
    }
    // What `status` reads next (the snapshot plus whatever is recorded after it).
    run.journal.store.finished();
    let unsent = journal::blocking(|| run.journal.store.close());
    if unsent > 0 && !run.lost.is_set() {
        eprintln!(
            "\nrun {} ended, but {unsent} of its record(s) are only on this machine: {} could not be reached. The lock is kept until its lease expires; the next run from here sends them.",
            run.run_id,
            run.journal.store.describe()
        );
        return Ok(Exit::Locked);
    }
    if run.lost.is_set() {
        eprintln!(
            "\nrun {} stopped: {}. It started nothing new after that; what it recorded is kept{}. The next run takes the lock over once the lease has expired.",
            run.run_id,
            run.lost.reason(),
            match run.journal.store.unsent() {
                0 => String::new(),
                n => format!(
                    " ({n} record(s) on this machine until the cluster can be reached: the next run from here sends them)"
                ),
            }
        );
        return Ok(Exit::Locked);
    }
    Ok(match outcome {
        RunOutcome::Succeeded => Exit::Ok,
        RunOutcome::Interrupted => signals.exit(),
        RunOutcome::Failed => Exit::Failed,
    })
}

/// The failures' last lines, a missing confirmation, and how to resume (text modes).
fn print_summary(run: &run::Run, disp: &Dispatcher, outcome: RunOutcome, g: &Global) {
    for (id, (tail, log)) in &run.tails {
        let tail = crate::report::strip_ansi(tail);
        let last: Vec<&str> = tail.lines().collect();
        let start = last.len().saturating_sub(20);
        eprintln!(
            "\nfailed: {id}\n--- last {} lines ---\n{}\n--- log: {log}",
            last.len() - start,
            last[start..].join("\n")
        );
    }
    if let Some(i) = disp.unconfirmed() {
        let id = run.ws.dag.work[i].id();
        eprintln!(
            "\nstopped before {id}: it is marked `confirm: true` and was not confirmed (no terminal to ask on, or the answer was no). Review it with `bootstrap plan --step {id}`, then run again with --yes."
        );
    }
    if outcome != RunOutcome::Succeeded {
        eprintln!(
            "\nrun {} {}. Resume with: bootstrap resume{}",
            run.run_id,
            outcome.as_str(),
            resume_hint(g)
        );
    }
}

fn resume_hint(g: &Global) -> String {
    let mut s = String::new();
    if g.plan != Path::new("plans/lab.yaml") {
        s.push_str(&format!(" --plan {}", g.plan.display()));
    }
    if g.phases != Path::new("phases") {
        s.push_str(&format!(" --phases {}", g.phases.display()));
    }
    if let Some(d) = &g.state_dir {
        s.push_str(&format!(" --state-dir {}", d.display()));
    }
    s
}
