//! Running the graph: the dispatcher (decides what starts, records every transition, emits events)
//! and the executor (runs one unit: check, action with retries, verify; or a gate's items).
//!
//! Owns `run`, `resume`, `status`, `reset`, `unlock` and `plan --probe`. It never renders output
//! itself: it emits [`Event`]s to reporters. Journal writes happen here, on the dispatcher's side,
//! before the run moves on.

mod action;
mod commands;
pub mod signals;
mod unit;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use petgraph::Direction;
use petgraph::graph::NodeIndex;
use tokio::sync::{mpsc, watch};

use crate::checks::Clusters;
use crate::cli::{Global, OutputMode};
use crate::dag::{Selection, Unit, Work};
use crate::dryrun::StepStatus;
use crate::error::{Exit, ExitError, Result};
use crate::exec::Cancel;
use crate::report::{Bars, Event, Fanout, JsonLines, MarkdownReport, Plain, Reporter};
use crate::secrets::Redactor;
use crate::state::{FileStore, Lock, LockError, Outcome, Record, State, Store};
use crate::workspace::Workspace;

pub use commands::{
    STATUS_SCHEMA, probe, reset_command, resume_command, run_command, status_command,
    unlock_command,
};

/// Recorded outcome and fingerprint of every step, from persisted state.
pub fn recorded_statuses(ws: &Workspace) -> HashMap<String, (StepStatus, String)> {
    let state = FileStore::new(&ws.state_dir).load().unwrap_or_default();
    state
        .steps
        .values()
        .map(|s| {
            let st = match s.outcome {
                Outcome::Done | Outcome::Satisfied => StepStatus::Done,
                Outcome::Failed => StepStatus::Failed,
                Outcome::Interrupted => StepStatus::Interrupted,
            };
            (s.id.clone(), (st, s.fingerprint.clone()))
        })
        .collect()
}

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
    std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal()
        && std::env::var_os("CI").is_none()
}

fn reporter_for(g: &Global) -> Box<dyn Reporter> {
    if g.output == OutputMode::Json {
        Box::new(JsonLines)
    } else if std::env::var_os("CI").is_some() || !std::io::stderr().is_terminal() || g.verbose > 0
    {
        Box::new(Plain {
            verbose: g.verbose > 0,
            quiet: g.quiet,
        })
    } else {
        Box::new(Bars::new())
    }
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
fn base_env(ws: &Workspace, lab_env: &[(String, String)]) -> BTreeMap<String, String> {
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

/// Decide which selected units must run: not recorded done, or changed, or downstream of a change.
fn plan_work(
    ws: &Workspace,
    sel: &Selection,
    state: &State,
    refresh: bool,
) -> (HashSet<usize>, HashSet<usize>, HashMap<usize, String>) {
    let mut todo = HashSet::new();
    let mut forced = HashSet::new(); // changed since it was done
    let mut skip_reason = HashMap::new();
    let in_sel: HashSet<usize> = sel.order.iter().copied().collect();
    for &i in &sel.order {
        let w = &ws.dag.work[i];
        // `--refresh`: a done step's check (or its read-only wait) is asked again.
        let refreshable = refresh
            && match w {
                Work::Step(u) => u.check.is_some() || crate::checks::is_kube(&u.run),
                Work::Gate(_) => true,
            };
        match state.steps.get(w.id()) {
            Some(s) if s.outcome.is_done() && s.fingerprint == w.fingerprint() && !refreshable => {
                skip_reason.insert(i, format!("done in run {}", s.run_id));
            }
            Some(s) if s.outcome.is_done() && s.fingerprint == w.fingerprint() => {
                todo.insert(i);
            }
            Some(s) if s.outcome.is_done() => {
                todo.insert(i);
                forced.insert(i);
            }
            _ => {
                todo.insert(i);
            }
        }
    }
    // Everything downstream of a changed step runs again.
    for &c in forced.clone().iter() {
        for d in ws.dag.descendants(c) {
            if in_sel.contains(&d) && todo.insert(d) {
                skip_reason.remove(&d);
            }
        }
    }
    // A gate is evaluated again on every run that selects its phase: it is what proves the phase,
    // and the world may have drifted since it last passed.
    for &i in &sel.order {
        if matches!(&ws.dag.work[i], Work::Gate(_)) && todo.insert(i) {
            skip_reason.remove(&i);
        }
    }
    (todo, forced, skip_reason)
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
    Done(UnitResult),
}

/// Run a selection. Returns the exit code.
pub async fn execute(
    ws: &Workspace,
    sel: &Selection,
    g: &Global,
    opts: &RunOptions,
) -> Result<Exit> {
    let started = Instant::now();
    let run_id = new_run_id();
    // Signals (INT, TERM, HUP): the first stops new work and interrupts running steps; the second
    // kills at once. `waits` also fires when a step fails: read-only work stops at once then.
    let (cancel_tx, cancel_rx) = watch::channel(0u8);
    let cancel = Cancel(cancel_rx);
    let (waits_tx, waits_rx) = watch::channel(0u8);
    let waits = Cancel(waits_rx);
    let first_signal = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let signal_task = {
        let waits_tx = waits_tx.clone();
        let first_signal = first_signal.clone();
        use tokio::signal::unix::{SignalKind, signal};
        let streams = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        );
        // `main` blocked these signals before anything else ran; now that they have handlers,
        // deliver any that came meanwhile (a Ctrl-C at start-up is an interruption, not a kill).
        crate::engine::signals::unblock();
        tokio::spawn(async move {
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = streams else {
                return;
            };
            let mut n = 0u8;
            loop {
                let (num, name) = tokio::select! {
                    _ = int.recv() => (2, "interrupt"),
                    _ = term.recv() => (15, "SIGTERM"),
                    _ = hup.recv() => (1, "SIGHUP"),
                };
                n = n.saturating_add(1);
                let _ = first_signal.compare_exchange(
                    0,
                    num,
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                );
                let _ = waits_tx.send(n);
                let _ = cancel_tx.send(n);
                if n == 1 {
                    eprintln!("\n{name}: stopping running steps (again to kill at once)");
                }
            }
        })
    };

    let lock = match Lock::acquire(&ws.state_dir, &run_id) {
        Ok(l) => l,
        Err(LockError::Held(h)) => {
            let who = h
                .map(|h| h.to_string())
                .unwrap_or_else(|| "another process".into());
            return Err(ExitError::new(Exit::Locked, format!("the state in {} is locked by {who}; wait for that run, or run `bootstrap unlock` if it is gone", ws.state_dir.display())).into());
        }
        Err(LockError::Io(e)) => {
            return Err(color_eyre::eyre::eyre!(
                "cannot lock the state directory {}: {e}",
                ws.state_dir.display()
            ));
        }
    };
    if let Some(prev) = &lock.took_over {
        eprintln!("note: took over a stale lock left by {prev}");
    }
    let mut store = FileStore::new(&ws.state_dir);
    let state = store.load()?;
    let (todo, forced, skip_reason) = plan_work(ws, sel, &state, opts.refresh);

    // Reporters: the chosen one, and always the markdown report.
    let mut reporter = Fanout(vec![reporter_for(g)]);
    let mut report = MarkdownReport::new();
    let emit = |e: Event, reporter: &mut Fanout, report: &mut MarkdownReport| {
        reporter.event(&e);
        report.event(&e);
    };

    let clusters_n = ws.spec.plan.clusters.len().max(1);
    let concurrency = opts.concurrency.unwrap_or((2 * clusters_n).max(4)).max(1);
    store.append(&Record::RunStarted {
        run_id: run_id.clone(),
        at: crate::state::now(),
        phases: opts.phases.clone(),
        steps: opts.steps.clone(),
        pid: std::process::id(),
        host: crate::state::hostname(),
    })?;
    emit(
        Event::RunStarted {
            run_id: run_id.clone(),
            plan: ws.spec.plan.name.value.clone(),
            lab: ws.spec.plan.lab,
            steps: sel.order.len(),
            concurrency,
            resumed: opts.resumed,
        },
        &mut reporter,
        &mut report,
    );

    // The lab, for lab plans.
    let lab = if ws.spec.plan.lab {
        Some(crate::lab::Lab::start(&ws.spec.plan, &ws.state_dir).await?)
    } else {
        None
    };
    if let Some(l) = &lab {
        for (name, s) in &l.servers {
            tracing::info!("lab: cluster {name} serves at {}", s.url());
        }
    }
    let lab_env = lab.as_ref().map(|l| l.step_env()).unwrap_or_default();
    let env = base_env(ws, &lab_env);
    tracing::debug!(
        "run {run_id}: {} units selected, {} to run, concurrency {concurrency}",
        sel.order.len(),
        todo.len()
    );
    let kubeconfig = PathBuf::from(env.get("KUBECONFIG").cloned().unwrap_or_default());
    let clusters = std::sync::Arc::new(Clusters::new(&ws.spec.plan, kubeconfig));
    let redactor = Redactor::new();

    // Dependencies within the selection.
    let in_sel: HashSet<usize> = sel.order.iter().copied().collect();
    let mut waiting: HashMap<usize, usize> = HashMap::new();
    for &i in &sel.order {
        let n = ws
            .dag
            .graph
            .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
            .filter(|p| in_sel.contains(&p.index()))
            .count();
        waiting.insert(i, n);
    }
    let mut ready: std::collections::BTreeSet<(usize, usize)> = std::collections::BTreeSet::new(); // (position, index)
    let position: HashMap<usize, usize> =
        sel.order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    for (&i, &n) in &waiting {
        if n == 0 {
            ready.insert((position[&i], i));
        }
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
    let mut running = 0usize;
    let mut failed: Vec<String> = Vec::new();
    let mut blocked: HashSet<usize> = HashSet::new();
    let mut stop_new = false;
    let mut needs_confirmation: Option<String> = None;
    let mut tails: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut announced_phases: HashSet<String> = HashSet::new();
    let mut finished_count = 0usize;
    let mut held: HashSet<String> = HashSet::new();
    let total = sel.order.len();
    let lab_plan = ws.spec.plan.lab;
    let mut cancel_watch = cancel.clone();

    loop {
        // Start what can start.
        while !stop_new && running < concurrency && cancel.level() == 0 {
            // The first ready unit whose serial group is free.
            let serial_of = |i: usize| match &ws.dag.work[i] {
                Work::Step(u) if todo.contains(&i) => u.serial.clone(),
                _ => None,
            };
            let Some(&(p, i)) = ready
                .iter()
                .find(|(_, i)| serial_of(*i).is_none_or(|g| !held.contains(&g)))
            else {
                break;
            };
            ready.remove(&(p, i));
            let w = &ws.dag.work[i];
            let complete =
                |i: usize,
                 waiting: &mut HashMap<usize, usize>,
                 ready: &mut std::collections::BTreeSet<(usize, usize)>| {
                    for c in ws
                        .dag
                        .graph
                        .neighbors_directed(NodeIndex::new(i), Direction::Outgoing)
                    {
                        let ci = c.index();
                        if let Some(n) = waiting.get_mut(&ci) {
                            *n -= 1;
                            if *n == 0 {
                                ready.insert((position[&ci], ci));
                            }
                        }
                    }
                };
            if blocked.contains(&i) {
                finished_count += 1;
                emit(
                    Event::StepSkipped {
                        id: w.id().to_string(),
                        reason: "not run: it needs a step that failed".into(),
                    },
                    &mut reporter,
                    &mut report,
                );
                for d in ws.dag.descendants(i) {
                    blocked.insert(d);
                }
                complete(i, &mut waiting, &mut ready);
                continue;
            }
            if !todo.contains(&i) {
                finished_count += 1;
                emit(
                    Event::StepSkipped {
                        id: w.id().to_string(),
                        reason: skip_reason
                            .get(&i)
                            .cloned()
                            .unwrap_or_else(|| "done".into()),
                    },
                    &mut reporter,
                    &mut report,
                );
                complete(i, &mut waiting, &mut ready);
                continue;
            }
            if announced_phases.insert(w.phase().to_string()) {
                emit(
                    Event::PhaseStarted {
                        phase: w.phase().to_string(),
                    },
                    &mut reporter,
                    &mut report,
                );
            }
            if let Work::Step(u) = w
                && u.confirm
                && !opts.yes
                && !lab_plan
            {
                let ok = if interactive() {
                    let prompt = format!(
                        "Run {}? {}\n  {}",
                        u.id,
                        u.description,
                        crate::dryrun::describe_action(&u.run)
                    );
                    reporter.finish();
                    tokio::task::spawn_blocking(move || {
                        dialoguer::Confirm::new()
                            .with_prompt(prompt)
                            .default(false)
                            .interact()
                            .unwrap_or(false)
                    })
                    .await
                    .unwrap_or(false)
                } else {
                    false
                };
                if !ok {
                    emit(
                        Event::ConfirmationRequired {
                            id: u.id.clone(),
                            description: u.description.clone(),
                        },
                        &mut reporter,
                        &mut report,
                    );
                    needs_confirmation = Some(u.id.clone());
                    stop_new = true;
                    break;
                }
            }
            let on_change = match w {
                Work::Step(u) => u.on_change,
                Work::Gate(_) => crate::spec::phase::OnChange::Check,
            };
            if forced.contains(&i) && on_change == crate::spec::phase::OnChange::Stop {
                // An irreversible step whose definition changed is never run again by itself.
                let id = w.id().to_string();
                let detail = format!(
                    "{id} changed since it ran, and it is irreversible (on_change: stop), so the run stops here. Review the change with `bootstrap plan --step {id}`. `bootstrap reset {id}` forgets its record: the next run then runs its check, and its action only if the check fails."
                );
                finished_count += 1;
                emit(
                    Event::StepFinished {
                        id: id.clone(),
                        outcome: "failed".into(),
                        attempts: 0,
                        duration_ms: 0,
                        exit_code: None,
                        log: String::new(),
                        detail: detail.clone(),
                    },
                    &mut reporter,
                    &mut report,
                );
                failed.push(id.clone());
                tails.insert(id, (detail, String::new()));
                stop_new = true;
                let _ = waits_tx.send(1);
                break;
            }
            running += 1;
            if let Some(g) = serial_of(i) {
                held.insert(g);
            }
            let was_interrupted = state
                .steps
                .get(w.id())
                .is_some_and(|s| s.outcome == Outcome::Interrupted);
            let ctx = unit::UnitCtx {
                ws_work: w.clone(),
                index: i,
                forced: forced.contains(&i) && on_change == crate::spec::phase::OnChange::Run,
                was_interrupted,
                waits: waits.clone(),
                progress: Default::default(),
                env: env.clone(),
                redactor: redactor.clone(),
                clusters: clusters.clone(),
                cancel: cancel.clone(),
                log: log_path(&ws.state_dir, &run_id, w.id()),
                tx: tx.clone(),
                events: ev_tx.clone(),
            };
            tokio::spawn(unit::run_unit(ctx));
        }
        if running == 0 && (ready.is_empty() || stop_new || cancel.level() > 0) {
            break;
        }
        tokio::select! {
            Some(msg) = rx.recv() => match msg {
                Msg::Started { index, attempt, log, ack } => {
                    while let Ok(e) = ev_rx.try_recv() {
                        emit(e, &mut reporter, &mut report);
                    }
                    // Once the run is stopping, no action starts.
                    if stop_new || cancel.level() > 0 {
                        let _ = ack.send(false);
                        continue;
                    }
                    let w = &ws.dag.work[index];
                    // Write-ahead: the record is durable before the command may start.
                    store.append(&Record::StepStarted { run_id: run_id.clone(), id: w.id().to_string(), at: crate::state::now(), attempt, fingerprint: w.fingerprint().to_string(), log })?;
                    let _ = ack.send(true);
                    let (cluster, node) = match w { Work::Step(u) => (u.cluster.clone(), u.node.clone()), Work::Gate(_) => (None, None) };
                    emit(Event::StepStarted { id: w.id().to_string(), phase: w.phase().to_string(), cluster, node, attempt }, &mut reporter, &mut report);
                }
                Msg::Done(r) => {
                    // Events the unit sent before it finished come first.
                    while let Ok(e) = ev_rx.try_recv() {
                        emit(e, &mut reporter, &mut report);
                    }
                    running -= 1;
                    if let Work::Step(Unit { serial: Some(g), .. }) = &ws.dag.work[r.index] {
                        held.remove(g);
                    }
                    let w = &ws.dag.work[r.index];
                    let id = w.id().to_string();
                    if r.not_started {
                        emit(Event::StepSkipped { id, reason: r.detail.clone() }, &mut reporter, &mut report);
                        continue;
                    }
                    finished_count += 1;
                    store.append(&Record::StepFinished {
                        run_id: run_id.clone(), id: id.clone(), at: crate::state::now(), outcome: r.outcome, attempts: r.attempts,
                        duration_ms: r.duration.as_millis() as u64, exit_code: r.exit_code, fingerprint: w.fingerprint().to_string(),
                        log: r.log.clone(), detail: redactor.redact(&r.detail),
                    })?;
                    let outcome = match r.outcome { Outcome::Done => "done", Outcome::Satisfied => "satisfied", Outcome::Failed => "failed", Outcome::Interrupted => "interrupted" };
                    emit(Event::StepFinished { id: id.clone(), outcome: outcome.into(), attempts: r.attempts, duration_ms: r.duration.as_millis() as u64, exit_code: r.exit_code, log: r.log.clone(), detail: r.detail.clone() }, &mut reporter, &mut report);
                    if let Work::Gate(gate) = w {
                        emit(Event::GateFinished { phase: gate.phase.clone(), passed: r.outcome.is_done() }, &mut reporter, &mut report);
                    }
                    match r.outcome {
                        Outcome::Done | Outcome::Satisfied => {
                            for c in ws.dag.graph.neighbors_directed(NodeIndex::new(r.index), Direction::Outgoing) {
                                let ci = c.index();
                                if let Some(n) = waiting.get_mut(&ci) {
                                    *n -= 1;
                                    if *n == 0 { ready.insert((position[&ci], ci)); }
                                }
                            }
                        }
                        Outcome::Failed | Outcome::Interrupted => {
                            if r.outcome == Outcome::Failed {
                                failed.push(id.clone());
                                tails.insert(id.clone(), (r.tail.clone(), r.log.clone()));
                            }
                            if opts.keep_going {
                                for d in ws.dag.descendants(r.index) { blocked.insert(d); }
                                // Unblock the dependents so they are reported as not run.
                                for c in ws.dag.graph.neighbors_directed(NodeIndex::new(r.index), Direction::Outgoing) {
                                    let ci = c.index();
                                    if let Some(n) = waiting.get_mut(&ci) {
                                        *n -= 1;
                                        if *n == 0 { ready.insert((position[&ci], ci)); }
                                    }
                                }
                            } else {
                                stop_new = true;
                                // Read-only waits stop at once; running actions finish.
                                let _ = waits_tx.send(1);
                            }
                        }
                    }
                }
            },
            Some(e) = ev_rx.recv() => emit(e, &mut reporter, &mut report),
            _ = action::interrupted(&mut cancel_watch), if cancel_watch.level() == 0 => {
                stop_new = true;
            }
        }
    }
    while let Ok(e) = ev_rx.try_recv() {
        emit(e, &mut reporter, &mut report);
    }
    signal_task.abort();

    let interrupted = cancel.level() > 0;
    let signal = first_signal.load(std::sync::atomic::Ordering::SeqCst);
    let outcome = if interrupted {
        "interrupted"
    } else if !failed.is_empty() || needs_confirmation.is_some() || finished_count < total {
        "failed"
    } else {
        "succeeded"
    };
    store.append(&Record::RunFinished {
        run_id: run_id.clone(),
        at: crate::state::now(),
        outcome: outcome.into(),
    })?;
    report.tails = tails
        .iter()
        .map(|(k, (t, _))| (k.clone(), t.clone()))
        .collect();
    let report_path = report
        .write(&ws.state_dir, &run_id)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    emit(
        Event::RunFinished {
            run_id: run_id.clone(),
            outcome: outcome.into(),
            duration_ms: started.elapsed().as_millis() as u64,
            failed: failed.clone(),
            report: report_path.clone(),
        },
        &mut reporter,
        &mut report,
    );
    reporter.finish();
    if let Some(l) = lab {
        l.shutdown().await;
    }
    drop(lock);

    // The final summary (text mode).
    if g.output != OutputMode::Json {
        for (id, (tail, log)) in &tails {
            let last: Vec<&str> = tail.lines().collect();
            let start = last.len().saturating_sub(20);
            eprintln!(
                "\nfailed: {id}\n--- last {} lines ---\n{}\n--- log: {log}",
                last.len() - start,
                last[start..].join("\n")
            );
        }
        if let Some(id) = &needs_confirmation {
            eprintln!(
                "\nstopped before {id}: it is marked `confirm: true` and there is no terminal to ask on. Review it with `bootstrap plan --step {id}`, then run again with --yes."
            );
        }
        if outcome != "succeeded" {
            eprintln!(
                "\nrun {run_id} {outcome}. Resume with: bootstrap resume{}",
                resume_hint(g)
            );
        }
    }
    Ok(match outcome {
        "succeeded" => Exit::Ok,
        "interrupted" if signal == 15 => Exit::Terminated,
        "interrupted" if signal == 1 => Exit::Hangup,
        "interrupted" => Exit::Interrupted,
        _ => Exit::Failed,
    })
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
