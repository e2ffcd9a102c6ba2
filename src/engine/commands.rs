//! The engine's commands: `run`, `resume`, `status`, `reset`, `unlock`, and `plan --probe`.

use std::collections::HashSet;
use std::fmt::Write;

use color_eyre::eyre::eyre;

use super::environment::Chooser;
use super::{RunOptions, action, execute};
use crate::cli::{Global, ResetArgs, ResumeArgs, RunArgs, StatusArgs, StatusFormat, UnlockArgs};
use crate::dag::Work;
use crate::dryrun::DryRun;
use crate::error::{Exit, ExitError, Result, UserError};
use crate::state::StepStatus;
use crate::state::{FileStore, Lock, LockError, Record, Store};
use crate::workspace::Workspace;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `bootstrap run`.
pub fn run_command(g: &Global, a: &RunArgs, choose: Chooser) -> Result<Exit> {
    let ws = crate::lint::load_checked(g)?;
    let (phases, steps) = match &a.from_plan {
        Some(file) => saved_plan_selection(&ws, file)?,
        None => (a.selection.phases.clone(), a.selection.steps.clone()),
    };
    let sel = ws.dag.select(&phases, &steps)?;
    let opts = RunOptions {
        phases,
        steps,
        concurrency: a.concurrency,
        yes: a.yes,
        keep_going: a.keep_going,
        resumed: false,
        refresh: a.refresh,
    };
    let mut environment = choose(&ws);
    runtime()?.block_on(execute(&ws, &sel, g, &opts, environment.as_mut()))
}

/// Check a saved plan against now; return its selection. Stale: exit 2 naming what changed.
fn saved_plan_selection(
    ws: &Workspace,
    file: &std::path::Path,
) -> Result<(Vec<String>, Vec<String>)> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        UserError::new(format!("cannot read the saved plan: {e}"))
            .in_file(file)
            .field("--from-plan")
            .help("save one with `bootstrap plan --format json --out FILE`")
    })?;
    let saved: DryRun = serde_json::from_str(&text).map_err(|e| {
        UserError::new(format!("not a saved plan: {e}"))
            .in_file(file)
            .at(e.line() as u64, e.column() as u64)
            .field("--from-plan")
            .help("save one with `bootstrap plan --format json --out FILE`")
    })?;
    let sel = ws
        .dag
        .select(&saved.selection.phases, &saved.selection.steps)?;
    let args = crate::cli::Selection {
        phases: saved.selection.phases.clone(),
        steps: saved.selection.steps.clone(),
    };
    let now = crate::dryrun::build(ws, &sel, &args);
    let mut changed = Vec::new();
    if now.basis.phases_fingerprint != saved.basis.phases_fingerprint {
        changed.push("the phase files changed");
    }
    if now.basis.plan_fingerprint != saved.basis.plan_fingerprint {
        changed.push(if now.plan.file != saved.plan.file {
            "it was made for another plan file"
        } else {
            "the plan file changed"
        });
    }
    if now.basis.state_fingerprint != saved.basis.state_fingerprint {
        changed.push("the recorded state changed (a run or reset happened since)");
    }
    let saved_ids: Vec<&str> = saved.steps.iter().map(|s| s.id.as_str()).collect();
    let now_ids: Vec<&str> = now.steps.iter().map(|s| s.id.as_str()).collect();
    if changed.is_empty() && saved_ids != now_ids {
        changed.push("the steps it would run differ");
    }
    if !changed.is_empty() {
        return Err(
            UserError::new(format!("the saved plan is stale: {}", changed.join("; ")))
                .in_file(file)
                .field("--from-plan")
                .help("review and save a fresh plan with `bootstrap plan --format json --out FILE`")
                .into(),
        );
    }
    Ok((saved.selection.phases, saved.selection.steps))
}

/// `bootstrap resume`.
pub fn resume_command(g: &Global, a: &ResumeArgs, choose: Chooser) -> Result<Exit> {
    let ws = crate::lint::load_checked(g)?;
    let state = FileStore::new(&ws.state_dir).load()?;
    let Some(last) = state.last_run else {
        return Err(UserError::new(format!(
            "there is no run to resume in {}",
            ws.state_dir.display()
        ))
        .help("start one with `bootstrap run`")
        .into());
    };
    let sel = ws.dag.select(&last.phases, &last.steps)?;
    let opts = RunOptions {
        phases: last.phases,
        steps: last.steps,
        concurrency: a.concurrency,
        yes: a.yes,
        keep_going: a.keep_going,
        resumed: true,
        refresh: false,
    };
    let mut environment = choose(&ws);
    runtime()?.block_on(execute(&ws, &sel, g, &opts, environment.as_mut()))
}

/// Version of the `bootstrap status --format json` shape (docs/engine.md).
pub const STATUS_SCHEMA: u32 = 1;

/// `bootstrap status`.
pub fn status_command(g: &Global, a: &StatusArgs) -> Result<Exit> {
    let ws = crate::lint::load(g)?;
    let state = FileStore::new(&ws.state_dir).load()?;
    let holder = Lock::holder(&ws.state_dir);
    let rows: Vec<serde_json::Value> = ws
        .dag
        .work
        .iter()
        .map(|w| {
            let rec = state.steps.get(w.id());
            let status = match rec {
                None => "never-run".to_string(),
                Some(s) if s.outcome.is_done() && s.fingerprint != w.fingerprint() => {
                    "changed".into()
                }
                Some(s) => serde_json::to_value(s.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
            };
            serde_json::json!({
                "id": w.id(),
                "phase": w.phase(),
                "kind": if matches!(w, Work::Gate(_)) { "gate" } else { "step" },
                "status": status,
                "attempts": rec.map(|s| s.attempts),
                "duration_ms": rec.map(|s| s.duration_ms),
                "exit_code": rec.and_then(|s| s.exit_code),
                "run_id": rec.map(|s| s.run_id.clone()),
                "at": rec.map(|s| s.at.clone()),
                "log": rec.map(|s| s.log.clone()),
                "detail": rec.map(|s| s.detail.clone()),
            })
        })
        .collect();
    match a.format {
        StatusFormat::Json => {
            let v = serde_json::json!({
                "schema": STATUS_SCHEMA,
                "state_dir": ws.state_dir.display().to_string(),
                "last_run": state.last_run,
                "locked_by": holder,
                "steps": rows,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        StatusFormat::Text => {
            let mut o = String::new();
            match &state.last_run {
                Some(r) => {
                    let _ = writeln!(
                        o,
                        "last run {}: {} (started {}{})",
                        r.run_id,
                        r.outcome,
                        r.started,
                        r.finished
                            .as_ref()
                            .map(|f| format!(", finished {f}"))
                            .unwrap_or_default()
                    );
                }
                None => {
                    let _ = writeln!(o, "no run recorded in {}", ws.state_dir.display());
                }
            }
            if let Some(h) = holder {
                let _ = writeln!(o, "locked by {h}");
            }
            let _ = writeln!(
                o,
                "{:<40} {:<12} {:>8} {:>9}  LOG",
                "STEP", "STATUS", "ATTEMPTS", "DURATION"
            );
            for r in &rows {
                let _ = writeln!(
                    o,
                    "{:<40} {:<12} {:>8} {:>9}  {}",
                    r["id"].as_str().unwrap_or(""),
                    r["status"].as_str().unwrap_or(""),
                    r["attempts"]
                        .as_u64()
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "-".into()),
                    r["duration_ms"]
                        .as_u64()
                        .map(|x| format!("{:.1}s", x as f64 / 1000.0))
                        .unwrap_or_else(|| "-".into()),
                    r["log"].as_str().unwrap_or("")
                );
            }
            print!("{o}");
        }
    }
    Ok(Exit::Ok)
}

/// `bootstrap reset`.
pub fn reset_command(g: &Global, a: &ResetArgs) -> Result<Exit> {
    let ws = crate::lint::load(g)?;
    if !a.all && a.steps.is_empty() && a.phases.is_empty() {
        return Err(UserError::new("say what to forget")
            .help("name steps (globs allowed), --phase P, or --all")
            .into());
    }
    let mut ids: Vec<String> = Vec::new();
    if !a.all {
        let mut set: HashSet<String> = HashSet::new();
        for p in &a.phases {
            if !ws.dag.phases.iter().any(|x| &x.id == p) {
                return Err(UserError::new(format!("no phase named {p:?}"))
                    .field("--phase")
                    .into());
            }
            set.extend(
                ws.dag
                    .work
                    .iter()
                    .filter(|w| w.phase() == p)
                    .map(|w| w.id().to_string()),
            );
        }
        for s in &a.steps {
            let pat = glob::Pattern::new(s)
                .map_err(|e| UserError::new(format!("invalid step pattern {s:?}: {e}")))?;
            let before = set.len();
            set.extend(
                ws.dag
                    .work
                    .iter()
                    .filter(|w| {
                        pat.matches(w.id()) || matches!(w, Work::Step(u) if pat.matches(&u.step))
                    })
                    .map(|w| w.id().to_string()),
            );
            if set.len() == before && !ws.dag.work.iter().any(|w| pat.matches(w.id())) {
                return Err(UserError::new(format!("no step matches {s:?}"))
                    .help("run `bootstrap status` to list step ids")
                    .into());
            }
        }
        ids = set.into_iter().collect();
        ids.sort();
    }
    let _lock = match Lock::acquire(&ws.state_dir, "reset") {
        Ok(l) => l,
        Err(LockError::Held(h)) => {
            return Err(ExitError::new(
                Exit::Locked,
                format!(
                    "the state is locked by {}",
                    h.map(|h| h.to_string())
                        .unwrap_or_else(|| "another process".into())
                ),
            )
            .into());
        }
        Err(LockError::Io(e)) => return Err(e.into()),
    };
    FileStore::new(&ws.state_dir).append(&Record::Reset {
        at: crate::state::now(),
        ids: ids.clone(),
        all: a.all,
    })?;
    if !g.quiet {
        if a.all {
            eprintln!(
                "forgot every recorded outcome in {}",
                ws.state_dir.display()
            );
        } else {
            eprintln!("forgot {} step(s): {}", ids.len(), ids.join(", "));
        }
    }
    Ok(Exit::Ok)
}

/// `bootstrap unlock`.
pub fn unlock_command(g: &Global, a: &UnlockArgs) -> Result<Exit> {
    let plan_name = crate::spec::load_plan(&g.plan)
        .map(|(p, _)| p.name.value)
        .unwrap_or_else(|_| "lab".into());
    let state_dir = crate::workspace::state_dir_for(g, &plan_name);
    match Lock::holder(&state_dir) {
        Some(h) if !a.force => {
            Err(ExitError::new(Exit::Locked, format!("the state is locked by {h}, which is still running; stop it, or use --force to break the lock")).into())
        }
        Some(h) if h.host == crate::state::hostname() && crate::state::pid_alive(h.pid) => {
            // Removing the lock file would let a second run lock a new file beside a live writer.
            if a.pid != Some(h.pid) {
                return Err(ExitError::new(Exit::Locked, format!("the state is locked by {h}, which is alive on this host; `--force` will not break a live lock. To take over from it, run `bootstrap unlock --force --pid {}`: it is asked to stop (SIGTERM) and the lock is released when it has", h.pid)).into());
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(h.pid as i32), nix::sys::signal::Signal::SIGTERM);
            let t = std::time::Instant::now();
            while Lock::holder(&state_dir).is_some() {
                if t.elapsed() > std::time::Duration::from_secs(60) {
                    return Err(ExitError::new(Exit::Locked, format!("sent SIGTERM to pid {}, but it still holds the lock after 60 s", h.pid)).into());
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            eprintln!("pid {} stopped and released the lock; `bootstrap resume` continues its run", h.pid);
            Ok(Exit::Ok)
        }
        Some(h) => {
            // Held from another host (a shared directory): its liveness cannot be checked here.
            let _ = std::fs::remove_file(state_dir.join("lock"));
            let _ = Lock::clear(&state_dir);
            eprintln!("broke the lock held by {h}");
            Ok(Exit::Ok)
        }
        None => {
            match Lock::clear(&state_dir)? {
                Some(h) => eprintln!("removed a stale lock record of {h} (the process is gone)"),
                None => eprintln!("no lock is held on {}", state_dir.display()),
            }
            Ok(Exit::Ok)
        }
    }
}

/// `bootstrap plan --probe`: run each selected step's check (checks only, never actions).
pub fn probe(ws: &Workspace, view: &mut DryRun, choose: Chooser) -> Result<()> {
    let rt = runtime()?;
    let mut environment = choose(ws);
    rt.block_on(async {
        let extra = environment.start().await?;
        let env = super::base_env(ws, &extra);
        let clusters = crate::checks::Clusters::new(
            &ws.spec.plan,
            env.get("KUBECONFIG").map(Into::into).unwrap_or_default(),
        );
        let redactor = crate::secrets::Redactor::new();
        let status: std::collections::HashMap<String, StepStatus> = view
            .steps
            .iter()
            .map(|s| (s.id.clone(), s.status))
            .collect();
        // Steps whose work a run would do (their check fails, or they have none).
        let mut will_run: HashSet<String> = HashSet::new();
        let mut satisfied: HashSet<String> = HashSet::new();
        let mut drift = 0;
        for s in view.steps.iter_mut() {
            if s.kind == "gate" {
                continue;
            }
            let upstream_pending = s.needs.iter().any(|n| {
                will_run.contains(n)
                    || (!satisfied.contains(n)
                        && status.get(n).is_some_and(|st| *st != StepStatus::Done))
            });
            let verdict = if upstream_pending {
                "depends on earlier steps".to_string()
            } else if let Some(check) = s
                .check
                .as_ref()
                .or(s.run.as_ref().filter(|r| crate::checks::is_kube(r)))
            {
                // A step whose action is itself a Kubernetes condition (a wait) is probed by it.
                let ctx = action::Ctx {
                    env: &env,
                    stdin: false,
                    log: None,
                    redactor: &redactor,
                    clusters: &clusters,
                    cancel: crate::exec::Cancel::never(),
                    id: &s.id,
                    events: None,
                    progress: None,
                };
                let said =
                    action::once(check, &ctx, std::time::Duration::from_secs(30), "probe").await;
                if said.passed {
                    "satisfied".to_string()
                } else {
                    format!("will run ({})", crate::report::first_line(&said.detail))
                }
            } else {
                "will run (no check)".to_string()
            };
            if verdict.starts_with("satisfied") {
                satisfied.insert(s.id.clone());
            } else {
                will_run.insert(s.id.clone());
            }
            let verdict = if s.status == StepStatus::Done && verdict.starts_with("will run (") {
                drift += 1;
                format!("drifted: recorded done, but its check fails now; `bootstrap run --refresh` runs it again{}", verdict.trim_start_matches("will run"))
            } else {
                verdict
            };
            s.probe = Some(verdict);
        }
        view.summary.drift = drift;
        environment.stop().await;
        Ok::<(), color_eyre::Report>(())
    })?;
    let _ = eyre!("");
    Ok(())
}
