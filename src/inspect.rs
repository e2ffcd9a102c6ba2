//! `bootstrap logs STEP` and `bootstrap show STEP`: one step's output and everything known about it,
//! read from the journal and the log files; and `bootstrap man`.
//!
//! Owns these read-only views. It never writes state and never runs a step.

use std::fmt::Write as _;
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

use crate::cli::{Global, LogsArgs, OutputMode, ShowArgs};
use crate::error::{Exit, Result, UserError};
use crate::state::{FileStore, Record};
use crate::workspace::Workspace;

/// Every record of the journal (a torn last line is skipped, as on load).
pub fn records(state_dir: &Path) -> Vec<Record> {
    let Ok(text) = std::fs::read(FileStore::new(state_dir).path()) else {
        return Vec::new();
    };
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<Record>(l).ok())
        .collect()
}

fn unknown_step(ws: &Workspace, id: &str) -> UserError {
    let mut e = UserError::new(format!("no step {id:?} in the plan"));
    e = match crate::suggest::hint(id, ws.dag.work.iter().map(|w| w.id())) {
        Some(h) => e.help(h),
        None => e.help("run `bootstrap status` to list step ids"),
    };
    e
}

/// The attempts of the step's last run: (run id, attempt, started at, log path).
fn attempts(recs: &[Record], id: &str) -> Vec<(String, u32, String, String)> {
    let all: Vec<(String, u32, String, String)> = recs
        .iter()
        .filter_map(|r| match r {
            Record::StepStarted {
                run_id,
                id: i,
                at,
                attempt,
                log,
                ..
            } if i == id => Some((run_id.clone(), *attempt, at.clone(), log.clone())),
            _ => None,
        })
        .collect();
    let Some(last_run) = all.last().map(|a| a.0.clone()) else {
        return Vec::new();
    };
    all.into_iter().filter(|a| a.0 == last_run).collect()
}

fn finished(recs: &[Record], run: &str, id: &str) -> bool {
    recs.iter().any(|r| {
        matches!(r, Record::StepFinished { run_id, id: i, .. } if run_id == run && i == id)
            || matches!(r, Record::RunFinished { run_id, .. } if run_id == run)
    })
}

/// The lines of `text` that belong to attempt `n` (by the attempts' start times; lines before the
/// first attempt, such as its check, belong to the first).
fn attempt_lines(text: &str, starts: &[String], n: usize) -> String {
    let from = if n <= 1 { None } else { starts.get(n - 1) };
    let to = starts.get(n);
    text.lines()
        .filter(|l| {
            let ts = l.split(' ').next().unwrap_or("");
            from.is_none_or(|f| ts >= f.as_str()) && to.is_none_or(|t| ts < t.as_str())
        })
        .fold(String::new(), |mut o, l| {
            o.push_str(l);
            o.push('\n');
            o
        })
}

/// `bootstrap logs STEP [--attempt N] [-f]`.
pub fn logs_command(
    g: &Global,
    a: &LogsArgs,
    choose: crate::engine::environment::Chooser,
) -> Result<Exit> {
    let ws = Workspace::load(g)?;
    if ws.dag.get(&a.step).is_none() {
        return Err(unknown_step(&ws, &a.step).into());
    }
    let recs = records(&ws.state_dir);
    let mut tries = attempts(&recs, &a.step);
    if tries.is_empty() {
        // Its records were compacted into the snapshot, which keeps its last run's attempts.
        let state = crate::engine::environment::recorded(&ws, choose)?;
        if let Some(s) = state.steps.get(&a.step) {
            tries = (s.starts.iter().enumerate())
                .map(|(n, at)| (s.run_id.clone(), n as u32 + 1, at.clone(), s.log.clone()))
                .collect();
        }
    }
    let Some(last) = tries.last() else {
        return Err(
            UserError::new(format!("{} has not run yet: there is no log", a.step))
                .help(format!(
                    "see what it would do with `bootstrap show {}`",
                    a.step
                ))
                .into(),
        );
    };
    let (run_id, log) = (last.0.clone(), last.3.clone());
    let starts: Vec<String> = tries.iter().map(|t| t.2.clone()).collect();
    // A step that printed nothing and succeeded leaves no log file (one is created on the first
    // line of output, or when a command fails).
    let text = match std::fs::read_to_string(&log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !a.follow {
                eprintln!("{} printed nothing in run {run_id} (no log file)", a.step);
            }
            String::new()
        }
        Err(e) => {
            return Err(UserError::new(format!("cannot read the log: {e}"))
                .in_file(Path::new(&log))
                .into());
        }
    };
    let mut out = std::io::stdout().lock();
    match a.attempt {
        Some(n) => {
            if n == 0 || n as usize > tries.len() {
                return Err(UserError::new(format!(
                    "{} made {} attempt(s) in run {run_id}; there is no attempt {n}",
                    a.step,
                    tries.len()
                ))
                .field("--attempt")
                .into());
            }
            out.write_all(attempt_lines(&text, &starts, n as usize).as_bytes())?;
        }
        None if a.follow => out.write_all(text.as_bytes())?,
        None => out.write_all(attempt_lines(&text, &starts, tries.len()).as_bytes())?,
    }
    out.flush()?;
    if a.follow {
        // Print what is appended until the step (or its run) finishes; the file appears with
        // the step's first line of output.
        let mut f: Option<std::fs::File> = None;
        let mut pos = text.len() as u64;
        loop {
            let done = finished(&records(&ws.state_dir), &run_id, &a.step);
            if f.is_none() {
                f = std::fs::File::open(&log).ok();
            }
            if let Some(f) = &mut f {
                f.seek(std::io::SeekFrom::Start(pos))?;
                let mut more = Vec::new();
                f.read_to_end(&mut more)?;
                pos += more.len() as u64;
                out.write_all(&more)?;
                out.flush()?;
            }
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(Exit::Ok)
}

/// `bootstrap show STEP`.
pub fn show_command(
    g: &Global,
    a: &ShowArgs,
    choose: crate::engine::environment::Chooser,
) -> Result<Exit> {
    let ws = Workspace::load(g)?;
    if ws.dag.get(&a.step).is_none() {
        return Err(unknown_step(&ws, &a.step).into());
    }
    let sel = ws.dag.select(&[], std::slice::from_ref(&a.step))?;
    let args = crate::cli::Selection {
        phases: Vec::new(),
        steps: vec![a.step.clone()],
    };
    let view = crate::dryrun::build(&ws, &sel, &args);
    let step = view
        .steps
        .iter()
        .find(|s| s.id == a.step)
        .ok_or_else(|| unknown_step(&ws, &a.step))?;
    let state = crate::engine::environment::recorded(&ws, choose)?;
    let recorded = state.steps.get(&a.step);
    let changed = recorded.is_some_and(|r| r.fingerprint != step.fingerprint);
    let history: Vec<Record> = records(&ws.state_dir)
        .into_iter()
        .filter(|r| match r {
            Record::StepStarted { id, .. } | Record::StepFinished { id, .. } => id == &a.step,
            _ => false,
        })
        .collect();
    if g.output == OutputMode::Json {
        let v = serde_json::json!({
            "schema": 1,
            "step": step,
            "recorded": recorded,
            "changed_since_recorded": changed,
            "history": history,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(Exit::Ok);
    }
    let mut o = String::new();
    let _ = writeln!(o, "{} ({})", step.id, step.kind);
    if !step.description.is_empty() {
        let _ = writeln!(o, "  {}", step.description);
    }
    let _ = writeln!(o, "\n  phase:    {}", step.phase);
    if let (Some(f), Some(l)) = (&step.file, step.line) {
        let _ = writeln!(o, "  defined:  {f}:{l}");
    }
    if let Some(c) = &step.cluster {
        let _ = writeln!(o, "  cluster:  {c}");
    }
    if let Some(n) = &step.node {
        let _ = writeln!(o, "  node:     {n}");
    }
    if !step.needs.is_empty() {
        let _ = writeln!(o, "  needs:    {}", step.needs.join(", "));
    }
    let _ = writeln!(o, "  timeout:  {}", step.timeout);
    if step.confirm {
        let _ = writeln!(o, "  confirm:  yes (asks before it runs)");
    }
    for (what, c) in [
        ("check", &step.commands.check),
        ("run", &step.commands.run),
        ("verify", &step.commands.verify),
    ] {
        if let Some(c) = c {
            let _ = writeln!(o, "\n  {what}:\n    {}", c.replace('\n', "\n    "));
        }
    }
    let _ = writeln!(o);
    match recorded {
        None => {
            let _ = writeln!(o, "  state:    never run");
        }
        Some(r) => {
            let outcome = serde_json::to_value(r.outcome)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  state:    {outcome}{} in run {} at {} ({} attempt(s), {})",
                if changed {
                    ", but its definition changed since (it will run again)"
                } else {
                    ""
                },
                r.run_id,
                r.at,
                r.attempts,
                crate::report::summary::duration(r.duration_ms)
            );
            if !r.detail.is_empty() {
                let _ = writeln!(o, "  detail:   {}", crate::report::first_line(&r.detail));
            }
            if !r.log.is_empty() {
                let _ = writeln!(o, "  log:      {}  (bootstrap logs {})", r.log, step.id);
            }
        }
    }
    if !history.is_empty() {
        let _ = writeln!(o, "\n  history:");
        for r in &history {
            match r {
                Record::StepStarted {
                    run_id,
                    at,
                    attempt,
                    ..
                } => {
                    let _ = writeln!(o, "    {at}  run {run_id}  attempt {attempt} started");
                }
                Record::StepFinished {
                    run_id,
                    at,
                    outcome,
                    duration_ms,
                    ..
                } => {
                    let _ = writeln!(
                        o,
                        "    {at}  run {run_id}  {} ({})",
                        serde_json::to_value(outcome)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default(),
                        crate::report::summary::duration(*duration_ms)
                    );
                }
                _ => {}
            }
        }
    }
    print!("{o}");
    Ok(Exit::Ok)
}

/// `bootstrap man`: the man page, from the same clap definition as `--help`.
pub fn man_command() -> Result<Exit> {
    let cmd = <crate::cli::Cli as clap::CommandFactory>::command();
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_split_the_log_by_their_start_times() {
        let text = "2026-01-01T00:00:01Z ---- check: x\n2026-01-01T00:00:02Z out one\n2026-01-01T00:00:05Z ---- run: y\n2026-01-01T00:00:06Z out two\n";
        let starts = vec![
            "2026-01-01T00:00:02Z".to_string(),
            "2026-01-01T00:00:05Z".to_string(),
        ];
        assert_eq!(
            attempt_lines(text, &starts, 1),
            "2026-01-01T00:00:01Z ---- check: x\n2026-01-01T00:00:02Z out one\n"
        );
        assert_eq!(
            attempt_lines(text, &starts, 2),
            "2026-01-01T00:00:05Z ---- run: y\n2026-01-01T00:00:06Z out two\n"
        );
    }
}
