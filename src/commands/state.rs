//! `bootstrap state show` and `bootstrap state migrate`: where the state is kept, who holds its
//! lock, and moving it between this machine and a cluster.

use crate::cli::{Global, OutputMode, StateCommand, StateMigrateArgs, StateShowArgs, StateTarget};
use crate::engine::environment::Chooser;
use crate::error::{Exit, ExitError, Result, UserError};
use crate::state::backend::{self, Backend};
use crate::state::kube::{KubeStore, Lost};
use crate::state::{Holder, Lock, LockError};
use crate::workspace::Workspace;

/// `bootstrap state …`.
pub fn state_command(g: &Global, cmd: &StateCommand, choose: Chooser) -> Result<Exit> {
    let ws = crate::lint::load(g)?;
    match cmd {
        StateCommand::Show(a) => {
            crate::engine::environment::with_clusters(&ws, choose, || show(&ws, g, a))
        }
        StateCommand::Migrate(a) => {
            crate::engine::environment::with_clusters(&ws, choose, || migrate(&ws, g, a))
        }
    }
}

fn me(what: &str) -> Holder {
    Holder::this(what)
}

/// The local directory's lock, for commands that move the state (no run may be writing).
fn local_lock(ws: &Workspace, what: &str) -> Result<Lock> {
    match Lock::acquire(&ws.state_dir, what) {
        Ok(l) => Ok(l),
        Err(LockError::Held(h)) => Err(ExitError::new(
            Exit::Locked,
            format!(
                "the state in {} is locked by {}",
                ws.state_dir.display(),
                h.map(|h| h.to_string())
                    .unwrap_or_else(|| "another process".into())
            ),
        )
        .into()),
        Err(LockError::Io(e)) => Err(e.into()),
    }
}

fn migrate(ws: &Workspace, g: &Global, a: &StateMigrateArgs) -> Result<Exit> {
    let _lock = local_lock(ws, "state-migrate")?;
    let plan = &ws.spec.plan;
    let (what, to) = match a.to {
        StateTarget::Kubernetes => {
            if let Some(p) = backend::pointer(&ws.state_dir)? {
                return Err(UserError::new(format!(
                    "the state of {} is already in {}",
                    ws.state_dir.display(),
                    p.location
                ))
                .help("`bootstrap state show` says where it is and who holds its lock")
                .into());
            }
            let Some(loc) = backend::location(plan, &ws.state_dir) else {
                return Err(UserError::new(format!(
                    "{} names no cluster to keep the state in",
                    ws.spec.plan_file.display()
                ))
                .field("state")
                .help("add `state: { backend: kubernetes, context: admin@infra, namespace: bootstrap-system }` to the plan")
                .into());
            };
            let mut k = backend::migrate_to_kubernetes(
                plan,
                &ws.state_dir,
                &loc,
                a.force,
                &me("state-migrate"),
                &Lost::new(),
            )?;
            k.unlock();
            let n = crate::state::Store::load(&k)?.steps.len();
            (n, loc.to_string())
        }
        StateTarget::Local => {
            let n = backend::migrate_to_local(
                &plan.name.value,
                &ws.state_dir,
                a.force,
                &me("state-migrate"),
            )?;
            (n, ws.state_dir.join("journal.jsonl").display().to_string())
        }
    };
    if g.output == OutputMode::Json {
        println!(
            "{}",
            serde_json::json!({"schema": 1, "moved_steps": what, "to": to})
        );
    } else if !g.quiet {
        eprintln!("moved the state ({what} step(s) recorded) to {to}");
    }
    Ok(Exit::Ok)
}

fn show(ws: &Workspace, g: &Global, a: &StateShowArgs) -> Result<Exit> {
    let plan = &ws.spec.plan;
    let backend = backend::resolve(Some(plan), &ws.state_dir)?;
    let mut doc = serde_json::json!({
        "schema": 1,
        "plan": plan.name.value,
        "state_dir": ws.state_dir.display().to_string(),
    });
    let (state, report) = match &backend {
        Backend::Local => {
            let holder = Lock::holder(&ws.state_dir);
            doc["backend"] = "local".into();
            doc["location"] = ws
                .state_dir
                .join("journal.jsonl")
                .display()
                .to_string()
                .into();
            doc["lock"] = lock_json(holder.as_ref(), false);
            let state = crate::state::backend::load(Some(plan), &ws.state_dir)?;
            let report = state.last_run.as_ref().and_then(|r| {
                let p = ws.state_dir.join("last-run.md");
                std::fs::read_to_string(p)
                    .ok()
                    .map(|md| (r.run_id.clone(), crate::state::hostname(), md))
            });
            (state, report)
        }
        Backend::Kubernetes(loc) => {
            let k = KubeStore::open(loc, &ws.state_dir, &plan.name.value, Lost::new())?;
            doc["backend"] = "kubernetes".into();
            doc["location"] = serde_json::json!({
                "context": loc.context,
                "namespace": loc.namespace,
                "kubeconfig": loc.kubeconfig.display().to_string(),
                "lease_seconds": loc.lease_seconds,
            });
            let head = k.head()?;
            doc["generation"] = head.as_ref().map(|h| h.1).into();
            let holder = k.holder()?;
            doc["lock"] = match &holder {
                Some((h, expired)) => lock_json(Some(h), *expired),
                None => lock_json(None, false),
            };
            doc["unsent"] = crate::state::Store::unsent(&k).into();
            (crate::state::Store::load(&k)?, k.report()?)
        }
    };
    doc["last_run"] = state
        .last_run
        .as_ref()
        .map(|r| serde_json::json!({"run_id": r.run_id, "outcome": r.outcome, "host": r.host, "started": r.started}))
        .unwrap_or(serde_json::Value::Null);
    doc["steps_recorded"] = state.steps.len().into();
    doc["report"] = report
        .as_ref()
        .map(|(run, host, md)| serde_json::json!({"run_id": run, "host": host, "bytes": md.len()}))
        .unwrap_or(serde_json::Value::Null);
    if a.report {
        let Some((run, host, md)) = report else {
            return Err(UserError::new("no run report is kept yet")
                .help("run `bootstrap run` first")
                .into());
        };
        if g.output == OutputMode::Json {
            println!(
                "{}",
                serde_json::json!({"schema": 1, "run_id": run, "host": host, "markdown": md})
            );
        } else {
            print!("{md}");
        }
        return Ok(Exit::Ok);
    }
    if g.output == OutputMode::Json {
        println!("{doc}");
        return Ok(Exit::Ok);
    }
    let lock = &doc["lock"];
    let lock_text = match lock["holder"].as_str() {
        None => "free".to_string(),
        Some(h) if lock["expired"].as_bool() == Some(true) => {
            format!("{h} (its lease has expired: the next run takes it over)")
        }
        Some(h) => format!("held by {h}"),
    };
    let location = match &backend {
        Backend::Local => ws.state_dir.join("journal.jsonl").display().to_string(),
        Backend::Kubernetes(loc) => loc.to_string(),
    };
    println!("backend:   {}", doc["backend"].as_str().unwrap_or_default());
    println!("location:  {location}");
    if let Some(gen_) = doc["generation"].as_u64() {
        println!("plan:      {} (generation {gen_})", plan.name.value);
    } else {
        println!("plan:      {}", plan.name.value);
    }
    println!("lock:      {lock_text}");
    match &state.last_run {
        Some(r) => println!(
            "last run:  {} {}{}",
            r.run_id,
            r.outcome,
            if r.host.is_empty() {
                String::new()
            } else {
                format!(" on {} (its step logs are there)", r.host)
            }
        ),
        None => println!("last run:  none"),
    }
    println!("recorded:  {} step(s)", state.steps.len());
    if let Some((run, host, _)) = &report {
        println!("report:    run {run} on {host}: `bootstrap state show --report` prints it");
    }
    if let Some(n) = doc["unsent"].as_u64().filter(|n| *n > 0) {
        println!(
            "unsent:    {n} record(s) on this machine wait for the cluster (the next run sends them)"
        );
    }
    if matches!(backend, Backend::Kubernetes(_)) {
        println!(
            "pointer:   {}",
            backend::pointer_path(&ws.state_dir).display()
        );
    }
    Ok(Exit::Ok)
}

fn lock_json(h: Option<&Holder>, expired: bool) -> serde_json::Value {
    match h {
        None => serde_json::json!({"holder": null}),
        Some(h) => serde_json::json!({
            "holder": h.to_string(),
            "pid": h.pid,
            "host": h.host,
            "run_id": h.run_id,
            "since": h.started,
            "expired": expired,
        }),
    }
}
