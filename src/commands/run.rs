//! `run`, `resume`, `status`, `reset`, `unlock`, and `plan --probe`: the command line's side of the
//! engine (load the workspace, choose the environment, call the engine, print what it says).

use std::collections::HashSet;
use std::fmt::Write;

use color_eyre::eyre::eyre;

use crate::cli::{Global, ResetArgs, ResumeArgs, RunArgs, StatusArgs, StatusFormat, UnlockArgs};
use crate::dag::Work;
use crate::dryrun::DryRun;
use crate::engine::environment::Chooser;
use crate::engine::{Outputs, RunOptions, action, execute};
use crate::error::{Exit, ExitError, Result, UserError};
use crate::state::StepStatus;
use crate::state::{Lock, LockError, Record};
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
    if !a.refresh && nothing_to_do(&ws, &sel, g, choose)? {
        return Ok(Exit::Ok);
    }
    let opts = RunOptions {
        phases,
        steps,
        concurrency: a.concurrency,
        yes: a.yes,
        keep_going: a.keep_going,
        resumed: false,
        refresh: a.refresh,
    };
    start(
        &ws,
        &sel,
        g,
        &opts,
        (a.skip_preflight, a.junit.as_deref()),
        choose,
    )
}

/// What every run does before the engine takes over: preflight, the definitions kept for `plan`'s
/// diffs, the JUnit reporter and the report's context; then the engine in its environment.
fn start(
    ws: &Workspace,
    sel: &crate::dag::Selection,
    g: &Global,
    opts: &RunOptions,
    (skip_preflight, junit): (bool, Option<&std::path::Path>),
    choose: Chooser,
) -> Result<Exit> {
    if !skip_preflight {
        preflight(ws, sel)?;
    }
    // What this run runs, kept by fingerprint, for `plan` to diff against later.
    crate::state::definitions::save(&ws.state_dir, sel.order.iter().map(|&i| &ws.dag.work[i]))?;
    crate::index::write(ws, &g.plan, &g.phases);
    let mut reporters = vec![live_reporter(g)];
    reporters.extend(junit_reporter(ws, junit));
    let outputs = Outputs {
        reporters,
        report: crate::report::MarkdownReport::with_context(report_context(ws, sel)),
    };
    let mut environment = choose(ws);
    runtime()?.block_on(execute(ws, sel, g, opts, environment.as_mut(), outputs))
}

/// The reporter for the output mode: JSON events, plain lines (CI, no terminal, `-v`), or bars.
fn live_reporter(g: &Global) -> Box<dyn crate::report::Reporter> {
    use crate::report::{Bars, JsonLines, Plain};
    if g.output == crate::cli::OutputMode::Json {
        Box::new(JsonLines::default())
    } else if crate::color::is_ci() || !crate::color::get().live || g.verbose > 0 {
        Box::new(Plain::new(g.verbose > 0, g.quiet))
    } else {
        Box::new(Bars::new())
    }
}

/// Before the first action: the tools the selection runs are on PATH (`--skip-preflight` skips it).
fn preflight(ws: &Workspace, sel: &crate::dag::Selection) -> Result<()> {
    let problems = crate::lint::preflight(&ws.spec, &ws.dag, &sel.order);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(crate::error::UserErrors(problems).into())
    }
}

/// The run report's context: fingerprints, and every selected unit in wave order.
fn report_context(ws: &Workspace, sel: &crate::dag::Selection) -> crate::report::RunContext {
    // The fingerprints and the wave order only: not the whole dry-run view of every step.
    let basis = crate::dryrun::basis(ws, &Default::default());
    crate::report::RunContext {
        plan_fingerprint: basis.plan_fingerprint,
        phases_fingerprint: basis.phases_fingerprint,
        order: (ws.dag.waves(&sel.order).iter().flatten())
            .map(|&i| ws.dag.work[i].id().to_string())
            .collect(),
    }
}

/// Whether every gate item of the selection passes now (each asked once, read-only, as
/// `plan --probe` asks checks).
fn gates_hold(ws: &Workspace, sel: &crate::dag::Selection, choose: Chooser) -> Result<bool> {
    let gates: Vec<&crate::dag::Gate> = sel
        .order
        .iter()
        .filter_map(|&i| match &ws.dag.work[i] {
            Work::Gate(g) => Some(g),
            Work::Step(_) => None,
        })
        .collect();
    if gates.iter().all(|g| g.items.is_empty()) {
        return Ok(true);
    }
    let mut environment = choose(ws);
    runtime()?.block_on(async {
        let extra = environment.start().await?;
        let env = crate::engine::base_env(ws, &extra);
        let clusters = crate::checks::Clusters::new(
            &ws.spec.plan,
            env.get("KUBECONFIG").map(Into::into).unwrap_or_default(),
        );
        let redactor = crate::secrets::Redactor::new();
        let mut hold = true;
        'gates: for g in &gates {
            for item in &g.items {
                let ctx = action::Ctx::look(&env, &redactor, &clusters, &g.id);
                let t = item.timeout.min(std::time::Duration::from_secs(30));
                if !action::once(&item.check, &ctx, t, "gate").await.passed {
                    tracing::info!("{}: {} does not hold now; running", g.id, item.id);
                    hold = false;
                    break 'gates;
                }
            }
        }
        environment.stop().await;
        Ok::<bool, color_eyre::Report>(hold)
    })
}

/// `--junit FILE`: a JUnit reporter beside the chosen one.
fn junit_reporter(
    ws: &Workspace,
    file: Option<&std::path::Path>,
) -> Option<Box<dyn crate::report::Reporter>> {
    file.map(|path| {
        let phase_of = ws
            .dag
            .work
            .iter()
            .map(|w| (w.id().to_string(), w.phase().to_string()))
            .collect();
        let phases = ws.dag.phases.iter().map(|p| p.id.clone()).collect();
        Box::new(crate::report::JunitReport::new(
            path.to_path_buf(),
            phases,
            phase_of,
        )) as Box<dyn crate::report::Reporter>
    })
}

/// Terraform's "No changes": when every selected step and gate is recorded done with its current
/// definition, say so and write nothing (no lock, no journal record, no report). `--refresh` asks
/// their checks again instead.
fn nothing_to_do(
    ws: &Workspace,
    sel: &crate::dag::Selection,
    g: &Global,
    choose: Chooser,
) -> Result<bool> {
    let state = crate::engine::environment::recorded(ws, choose)?;
    // Recorded from another origin (a teammate's state dir): its check is asked by a real run.
    let here = crate::state::origin(&ws.state_dir);
    let all_done = sel.order.iter().all(|&i| {
        let w = &ws.dag.work[i];
        state.steps.get(w.id()).is_some_and(|s| {
            s.outcome.is_done()
                && s.fingerprint == w.fingerprint()
                && (s.origin.is_empty() || s.origin == here)
        })
    });
    if !all_done || sel.order.is_empty() {
        return Ok(false);
    }
    // Gates prove their phase on every run: ask them (read-only, once). If the world drifted the
    // run goes ahead and the gate fails there, by name.
    if !gates_hold(ws, sel, choose)? {
        return Ok(false);
    }
    let last = state.last_run.as_ref().map(|r| r.run_id.clone());
    let e = crate::report::Event::NothingToDo {
        steps: sel.order.len(),
        last_run: last.clone(),
    };
    if g.output == crate::cli::OutputMode::Json {
        use crate::report::Reporter;
        crate::report::JsonLines::default().event(&e);
    } else if !g.quiet {
        eprintln!(
            "No changes. All {} selected steps are done and unchanged and their gates hold{}; nothing to do.\n`bootstrap run --refresh` asks the steps' checks again; `bootstrap status` shows what is recorded.",
            sel.order.len(),
            last.map(|r| format!(" (last run {r})")).unwrap_or_default()
        );
    }
    Ok(true)
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
    let state = crate::engine::environment::recorded(&ws, choose)?;
    let Some(last) = state.last_run else {
        return Err(UserError::new(format!(
            "there is no run to resume in {}",
            ws.state_dir.display()
        ))
        .help("start one with `bootstrap run`")
        .into());
    };
    if last.outcome == "succeeded" {
        let e = crate::report::Event::NothingToDo {
            steps: 0,
            last_run: Some(last.run_id.clone()),
        };
        if g.output == crate::cli::OutputMode::Json {
            use crate::report::Reporter;
            crate::report::JsonLines::default().event(&e);
        } else if !g.quiet {
            eprintln!(
                "Nothing to resume: run {} succeeded. Start a new one with `bootstrap run`.",
                last.run_id
            );
        }
        return Ok(Exit::Ok);
    }
    let sel = ws.dag.select(&last.phases, &last.steps)?;
    if nothing_to_do(&ws, &sel, g, choose)? {
        return Ok(Exit::Ok);
    }
    let opts = RunOptions {
        phases: last.phases,
        steps: last.steps,
        concurrency: a.concurrency,
        yes: a.yes,
        keep_going: a.keep_going,
        resumed: true,
        refresh: false,
    };
    start(
        &ws,
        &sel,
        g,
        &opts,
        (a.skip_preflight, a.junit.as_deref()),
        choose,
    )
}

/// Version of the `bootstrap status --format json` shape (docs/engine.md).
pub const STATUS_SCHEMA: u32 = 1;

/// `bootstrap status` (`--format json` or `--output json` for the JSON document).
pub fn status_command(g: &Global, a: &StatusArgs, choose: Chooser) -> Result<Exit> {
    // The unit index serves local state; state in a cluster is read with the plan at hand (the
    // lab's clusters are brought up for it).
    let from_index = status_units_from_index(g, &a.selection)
        .filter(|(dir, _)| !crate::state::backend::pointer_path(dir).exists());
    let (state_dir, index, state) = match from_index {
        Some((dir, index)) => {
            let state = crate::state::backend::load(None, &dir)?;
            (dir, index, state)
        }
        None => {
            let ws = crate::lint::load(g)?;
            let keep = status_filter(&ws, &a.selection)?;
            let mut index = crate::index::Index::of(&ws);
            index.units.retain(|u| ws.dag.get(&u.id).is_some_and(&keep));
            if a.selection.phases.is_empty() && a.selection.steps.is_empty() {
                crate::index::write(&ws, &g.plan, &g.phases);
            }
            let state = crate::engine::environment::recorded(&ws, choose)?;
            (ws.state_dir.clone(), index, state)
        }
    };
    let units = &index.units;
    let holder = Lock::holder(&state_dir);
    let rows: Vec<StatusRow> = units
        .iter()
        .map(|w| {
            let rec = state.steps.get(&w.id);
            StatusRow {
                id: &w.id,
                phase: &w.phase,
                kind: if w.gate { "gate" } else { "step" },
                status: match rec {
                    None => "never-run",
                    Some(s) if s.outcome.is_done() && s.fingerprint != w.fingerprint => "changed",
                    Some(s) => s.outcome.as_str(),
                },
                attempts: rec.map(|s| s.attempts),
                duration_ms: rec.map(|s| s.duration_ms),
                exit_code: rec.and_then(|s| s.exit_code),
                run_id: rec.map(|s| s.run_id.as_str()),
                at: rec.map(|s| s.at.as_str()),
                log: rec.map(|s| s.log.as_str()),
                detail: rec.map(|s| s.detail.as_str()),
            }
        })
        .collect();
    if a.format == StatusFormat::Json || g.output == crate::cli::OutputMode::Json {
        // Streamed, without building a tree of every row first.
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        serde_json::to_writer_pretty(
            &mut out,
            &StatusDoc {
                schema: STATUS_SCHEMA,
                state_dir: state_dir.display().to_string(),
                last_run: &state.last_run,
                locked_by: &holder,
                steps: &rows,
            },
        )?;
        use std::io::Write as _;
        writeln!(out)?;
        out.flush()?;
        return Ok(Exit::Ok);
    }
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
            let _ = writeln!(o, "no run recorded in {}", state_dir.display());
        }
    }
    if let Some(h) = holder {
        let _ = writeln!(o, "locked by {h}");
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let cell = |r: &StatusRow| -> [String; 5] {
        [
            r.id.to_string(),
            r.status.to_string(),
            r.attempts
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into()),
            r.duration_ms
                .map(crate::report::summary::duration)
                .unwrap_or_else(|| "-".into()),
            r.log
                .filter(|l| !l.is_empty())
                .map(|l| relative(l, &cwd))
                .unwrap_or_default(),
        ]
    };
    let cells: Vec<[String; 5]> = rows.iter().map(cell).collect();
    let head = ["STEP", "STATUS", "ATTEMPTS", "DURATION", "LOG"];
    let width = |c: usize| {
        cells
            .iter()
            .map(|r| r[c].chars().count())
            .chain([head[c].len()])
            .max()
            .unwrap_or(0)
    };
    let w: Vec<usize> = (0..4).map(width).collect();
    let line = |r: &[String]| {
        format!(
            "  {:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        )
        .trim_end()
        .to_string()
    };
    for (id, title) in &index.phases {
        let members: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].phase == id.as_str())
            .collect();
        if members.is_empty() {
            continue;
        }
        let _ = writeln!(o, "\n{id} — {title}");
        let heading: Vec<String> = head.iter().map(|h| h.to_string()).collect();
        let _ = writeln!(o, "{}", line(&heading));
        for i in members {
            let _ = writeln!(o, "{}", line(&cells[i]));
        }
    }
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for st in [
        "done",
        "satisfied",
        "failed",
        "interrupted",
        "changed",
        "never-run",
    ] {
        let n = rows.iter().filter(|r| r.status == st).count();
        if n > 0 || matches!(st, "done" | "failed" | "never-run") {
            counts.push((st, n));
        }
    }
    let _ = writeln!(
        o,
        "\n{} step{}: {}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        counts
            .iter()
            .map(|(st, n)| format!("{n} {}", st.replace('-', " ")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    print!("{o}");
    Ok(Exit::Ok)
}

/// `path` relative to `cwd` when it is below it.
fn relative(path: &str, cwd: &std::path::Path) -> String {
    std::path::Path::new(path)
        .strip_prefix(cwd)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.to_string())
}

/// `status --phase/--step`: which rows to show (unknown phases and steps are errors, with a
/// suggestion).
/// One row of `status` (the JSON shape is documented in docs/engine.md).
#[derive(serde::Serialize)]
struct StatusRow<'a> {
    id: &'a str,
    phase: &'a str,
    kind: &'static str,
    status: &'static str,
    attempts: Option<u32>,
    duration_ms: Option<u64>,
    exit_code: Option<i32>,
    run_id: Option<&'a str>,
    at: Option<&'a str>,
    log: Option<&'a str>,
    detail: Option<&'a str>,
}

/// The `status` document (docs/engine.md).
#[derive(serde::Serialize)]
struct StatusDoc<'a, H: serde::Serialize> {
    schema: u32,
    state_dir: String,
    last_run: &'a Option<crate::state::RunState>,
    locked_by: &'a Option<H>,
    steps: &'a [StatusRow<'a>],
}

/// `status` without filters, when the unit index in the state directory was made from exactly
/// these plan and phase files: the units without loading the workspace. None otherwise.
fn status_units_from_index(
    g: &Global,
    sel: &crate::cli::Selection,
) -> Option<(std::path::PathBuf, crate::index::Index)> {
    if !sel.phases.is_empty() || !sel.steps.is_empty() {
        return None;
    }
    let (plan, _) = crate::spec::load_plan(&g.plan).ok()?;
    let state_dir = crate::workspace::state_dir_for(g, &plan.name.value);
    let key = crate::index::key(&g.plan, &g.phases, &state_dir)?;
    Some((state_dir.clone(), crate::index::read(&state_dir, &key)?))
}

fn status_filter<'a>(
    ws: &'a Workspace,
    sel: &crate::cli::Selection,
) -> Result<impl Fn(&Work) -> bool + 'a> {
    for p in &sel.phases {
        if !ws.dag.phases.iter().any(|x| &x.id == p) {
            let mut e = UserError::new(format!("no phase named {p:?}")).field("--phase");
            if let Some(h) = crate::suggest::hint(p, ws.dag.phases.iter().map(|x| x.id.as_str())) {
                e = e.help(h);
            }
            return Err(e.into());
        }
    }
    let mut pats = Vec::new();
    for s in &sel.steps {
        let pat = glob::Pattern::new(s).map_err(|e| {
            UserError::new(format!("invalid step pattern {s:?}: {e}")).field("--step")
        })?;
        if !ws
            .dag
            .work
            .iter()
            .any(|w| pat.matches(w.id()) || matches!(w, Work::Step(u) if pat.matches(&u.step)))
        {
            let mut e = UserError::new(format!("no step matches {s:?}")).field("--step");
            e = match crate::suggest::hint(s, ws.dag.work.iter().map(|w| w.id())) {
                Some(h) => e.help(h),
                None => e.help("run `bootstrap status` to list step ids"),
            };
            return Err(e.into());
        }
        pats.push(pat);
    }
    let phases = sel.phases.clone();
    Ok(move |w: &Work| {
        (phases.is_empty() || phases.iter().any(|p| p == w.phase()))
            && (pats.is_empty()
                || pats.iter().any(|pat| {
                    pat.matches(w.id()) || matches!(w, Work::Step(u) if pat.matches(&u.step))
                }))
    })
}

/// `bootstrap reset`.
pub fn reset_command(g: &Global, a: &ResetArgs, choose: Chooser) -> Result<Exit> {
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
                let e = UserError::new(format!("no step matches {s:?}"));
                return Err(
                    match crate::suggest::hint(s, ws.dag.work.iter().map(|w| w.id())) {
                        Some(h) => e.help(h),
                        None => e.help("run `bootstrap status` to list step ids"),
                    }
                    .into(),
                );
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
    let me = crate::state::Holder::this("reset");
    let lost = crate::state::kube::Lost::new();
    crate::engine::environment::with_clusters(&ws, choose, || {
        let mut store =
            crate::state::backend::open_for_run(&ws.spec.plan, &ws.state_dir, &me, &lost)?;
        store.append(&Record::Reset {
            at: crate::state::now(),
            ids: ids.clone(),
            all: a.all,
        })?;
        if store.unsent() > 0 {
            return Err(color_eyre::eyre::eyre!(
                "the reset is recorded on this machine only: {} cannot be reached; run `bootstrap reset` again once it can",
                store.describe()
            ));
        }
        Ok(())
    })?;
    if g.output == crate::cli::OutputMode::Json {
        println!(
            "{}",
            serde_json::json!({
                "schema": 1,
                "state_dir": ws.state_dir.display().to_string(),
                "all": a.all,
                "forgot": ids,
            })
        );
    } else if !g.quiet {
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
        let env = crate::engine::base_env(ws, &extra);
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
                let ctx = action::Ctx::look(&env, &redactor, &clusters, &s.id);
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
