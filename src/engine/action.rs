//! Evaluating one check or action: commands through `exec`, JSON field checks, and the built-in
//! Kubernetes checks through `checks`. Polling for post-conditions lives here too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::checks::{self, Clusters};
use crate::exec::{self, Cancel, Finished, Program};
use crate::secrets::Redactor;
use crate::spec::phase::ActionSpec;

/// What evaluating an action said.
#[derive(Debug, Clone)]
pub struct Said {
    pub passed: bool,
    /// One paragraph: what it saw, or the output tail of a failed command.
    pub detail: String,
    pub exit_code: Option<i32>,
    /// Output lines, for transient-failure matching and failure reports.
    pub output: Vec<String>,
    pub interrupted: bool,
}

/// Everything an action needs from its step.
pub struct Ctx<'a> {
    pub env: &'a BTreeMap<String, String>,
    pub stdin: bool,
    pub log: Option<std::path::PathBuf>,
    pub redactor: &'a Redactor,
    pub clusters: &'a Clusters,
    pub cancel: Cancel,
    pub id: &'a str,
    /// Where output lines go as events (the step's action only).
    pub events: Option<tokio::sync::mpsc::UnboundedSender<crate::report::Event>>,
    /// What the unit is doing or waiting for right now (read by its heartbeat).
    pub progress: Option<std::sync::Arc<std::sync::Mutex<String>>>,
    /// Where the process group of each command it starts is reported (for the journal).
    pub spawned: Option<tokio::sync::mpsc::UnboundedSender<u32>>,
}

impl<'a> Ctx<'a> {
    /// A read-only look outside a run (`plan --probe`, "nothing to do"): no log, no events, never
    /// cancelled; the caller bounds it with a timeout.
    pub fn look(
        env: &'a BTreeMap<String, String>,
        redactor: &'a Redactor,
        clusters: &'a Clusters,
        id: &'a str,
    ) -> Ctx<'a> {
        Ctx {
            env,
            stdin: false,
            log: None,
            redactor,
            clusters,
            cancel: Cancel::never(),
            id,
            events: None,
            progress: None,
            spawned: None,
        }
    }
}

/// Say what the unit is doing now, for its heartbeat.
fn note(ctx: &Ctx<'_>, text: String) {
    if let Some(p) = &ctx.progress
        && let Ok(mut p) = p.lock()
    {
        *p = text;
    }
}

fn from_finished(f: &Finished, program: &Program, timeout: Duration) -> Said {
    let tail = crate::report::strip_ansi(&f.tail(20));
    Said {
        passed: f.success(),
        detail: if f.success() {
            crate::report::first_line(&tail).to_string()
        } else if let exec::Ending::SpawnFailed(why) = &f.ending {
            why.clone()
        } else {
            // Say what ran, what ended it and its last words: "timed out: " alone helps nobody.
            let what = match program {
                Program::Argv(a) => a.join(" "),
                Program::Shell(s) => format!("sh -c {}", crate::report::first_line(s)),
            };
            let why = match &f.ending {
                exec::Ending::TimedOut => format!(
                    "timed out after {} running `{what}`",
                    humantime::format_duration(Duration::from_secs(timeout.as_secs().max(1)))
                ),
                _ => format!("`{what}` failed: {}", f.describe()),
            };
            // The line that says why next (tools mark it ❌/✗ or start it with "Error"), so a
            // one-line summary names the cause.
            let marked: Vec<&str> = tail
                .lines()
                .map(|l| l.trim())
                .filter(|l| l.contains('❌') || l.starts_with('✗') || l.starts_with("Error"))
                .collect();
            let why = if marked.is_empty() {
                why
            } else {
                format!(
                    "{why}: {}",
                    marked[marked.len().saturating_sub(2)..].join(" | ")
                )
            };
            if tail.trim().is_empty() {
                format!("{why}; it printed nothing")
            } else {
                format!("{why}\nlast output:\n{tail}")
            }
        },
        exit_code: f.exit_code(),
        output: f
            .output
            .iter()
            .map(|l| crate::report::strip_ansi(l))
            .collect(),
        interrupted: f.ending == exec::Ending::Cancelled,
    }
}

/// Read a field from JSON: a JSON pointer (`/metadata/labels/app.kubernetes.io~1name`, RFC 6901,
/// for keys with dots or slashes) or a dot path (`a.b.0.c`).
pub fn json_field<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    if path.starts_with('/') {
        return v.pointer(path);
    }
    let mut cur = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        cur = match cur {
            Value::Object(m) => m.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The first JSON document of a stream (talosctl prints one object per node).
fn first_document(text: &str) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    de.next().and_then(|r| r.ok())
}

use crate::report::MANUAL;

fn said(passed: bool, detail: String) -> Said {
    Said {
        passed,
        detail,
        exit_code: None,
        output: Vec::new(),
        interrupted: false,
    }
}

/// Evaluate once, with a deadline for commands.
pub async fn once(a: &ActionSpec, ctx: &Ctx<'_>, timeout: Duration, label: &str) -> Said {
    match a {
        ActionSpec::Manual(text) => said(true, format!("{MANUAL}{text}")),
        ActionSpec::HelmValues(h) => helm_values(h, ctx, timeout, label).await,
        ActionSpec::Cmd(argv) => {
            let p = Program::Argv(argv.clone());
            let f = run_program(p.clone(), ctx, timeout, label).await;
            from_finished(&f, &p, timeout)
        }
        ActionSpec::Shell(s) => {
            let p = Program::Shell(s.clone());
            let f = run_program(p.clone(), ctx, timeout, label).await;
            from_finished(&f, &p, timeout)
        }
        ActionSpec::Json(j) => json_check(j, ctx, timeout, label).await,
        kube => match ctx.clusters.evaluate(kube, checks::Mode::Once).await {
            Ok(o) => Said {
                passed: o.passed,
                detail: o.detail,
                exit_code: None,
                output: Vec::new(),
                interrupted: false,
            },
            Err(e) => Said {
                passed: false,
                detail: format!("{e:#}"),
                exit_code: None,
                output: Vec::new(),
                interrupted: false,
            },
        },
    }
}

/// A `helm_values` check: the release's deployed values (the command's JSON) against its
/// HelmRelease's values.
async fn helm_values(
    h: &crate::spec::phase::HelmValuesCheck,
    ctx: &Ctx<'_>,
    timeout: Duration,
    label: &str,
) -> Said {
    let p = Program::Argv(h.cmd.clone());
    let f = run_program(p.clone(), ctx, timeout, label).await;
    let mut out = from_finished(&f, &p, timeout);
    if !f.success() {
        return out;
    }
    let text = f.stdout.join("\n");
    let deployed = if text.trim().is_empty() {
        Value::Null
    } else {
        match first_document(&text) {
            Some(v) => v,
            None => {
                out.passed = false;
                out.detail = format!(
                    "expected the release's values as JSON on stdout, got: {}",
                    crate::report::first_line(&text)
                );
                return out;
            }
        }
    };
    let cluster = h.cluster.clone().unwrap_or_default();
    match ctx
        .clusters
        .helmrelease_values(&cluster, &h.namespace, &h.name)
        .await
    {
        Err(e) => said(false, format!("{e:#}")),
        Ok(wanted) => {
            let diff = checks::flux::values_diff(&deployed, &wanted, h.deployed_keys_only);
            if diff.is_empty() {
                said(
                    true,
                    format!(
                        "the deployed values equal HelmRelease {}/{}'s values",
                        h.namespace, h.name
                    ),
                )
            } else {
                said(
                    false,
                    format!(
                        "{} key(s) differ between the deployed release and HelmRelease {}/{} (Flux would change them and roll the pods): {}",
                        diff.len(),
                        h.namespace,
                        h.name,
                        diff.join("; ")
                    ),
                )
            }
        }
    }
}

/// A `json` action: one field of the command's JSON output against the wanted value(s).
async fn json_check(
    j: &crate::spec::phase::JsonCheck,
    ctx: &Ctx<'_>,
    timeout: Duration,
    label: &str,
) -> Said {
    let p = Program::Argv(j.cmd.clone());
    let f = run_program(p.clone(), ctx, timeout, label).await;
    let mut said = from_finished(&f, &p, timeout);
    if !f.success() {
        return said;
    }
    let text = f.stdout.join("\n");
    match first_document(&text) {
        None => {
            said.passed = false;
            said.detail = format!(
                "expected JSON on stdout, got: {}",
                crate::report::first_line(&text)
            );
        }
        Some(doc) => {
            let got = json_field(&doc, &j.field).map(as_text);
            let ok = match &got {
                None => false,
                Some(g) => {
                    j.equals.as_ref().is_some_and(|e| e == g) || j.one_of.iter().any(|e| e == g)
                }
            };
            let want = j
                .equals
                .clone()
                .map(|e| format!("{e:?}"))
                .unwrap_or_else(|| format!("one of {:?}", j.one_of));
            said.passed = ok;
            said.detail = match got {
                None => format!(".{} is missing (wanted {want})", j.field),
                Some(g) => format!(".{} is {g:?} (wanted {want})", j.field),
            };
        }
    }
    said
}

/// Append a line to the step's log (what a built-in check saw).
fn log_line(ctx: &Ctx<'_>, label: &str, said: &Said) {
    if let Some(p) = &ctx.log {
        use std::io::Write;
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            let _ = writeln!(
                f,
                "{} ---- {} {label}: {}: {}",
                crate::state::now(),
                ctx.id,
                if said.passed { "passed" } else { "not yet" },
                ctx.redactor.redact(&said.detail)
            );
        }
    }
}

/// Evaluate until it passes or `timeout` passes: kube checks watch, commands re-run every second.
pub async fn until(a: &ActionSpec, ctx: &Ctx<'_>, timeout: Duration, label: &str) -> Said {
    if checks::is_kube(a) {
        let mode = checks::Mode::Wait(timeout);
        let mut cancel = ctx.cancel.clone();
        let said = tokio::select! {
            r = ctx.clusters.evaluate_progress(a, mode, ctx.progress.as_deref()) => match r {
                Ok(o) => Said { passed: o.passed, detail: o.detail, exit_code: None, output: Vec::new(), interrupted: false },
                Err(e) => Said { passed: false, detail: format!("{e:#}"), exit_code: None, output: Vec::new(), interrupted: false },
            },
            _ = interrupted(&mut cancel) => Said { passed: false, detail: "interrupted".into(), exit_code: None, output: Vec::new(), interrupted: true },
        };
        log_line(ctx, label, &said);
        return said;
    }
    let deadline = Instant::now() + timeout;
    let mut previous: Option<Said> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let said = once(a, ctx, left.max(Duration::from_secs(1)), label).await;
        // An attempt cut short by the deadline says nothing; the last complete one says why.
        if !said.passed
            && !said.interrupted
            && said.detail.starts_with("timed out")
            && let Some(p) = previous.take()
        {
            return Said {
                detail: format!(
                    "timed out after {}; the last complete attempt: {}",
                    humantime::format_duration(timeout),
                    p.detail
                ),
                ..p
            };
        }
        if said.passed || said.interrupted || Instant::now() + Duration::from_secs(1) >= deadline {
            return said;
        }
        previous = Some(said.clone());
        let mut cancel = ctx.cancel.clone();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = interrupted(&mut cancel) => return Said { interrupted: true, ..said },
        }
    }
}

pub async fn interrupted(cancel: &mut Cancel) {
    while cancel.level() == 0 {
        if cancel.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn run_program(program: Program, ctx: &Ctx<'_>, timeout: Duration, label: &str) -> Finished {
    let shown = match &program {
        Program::Argv(a) => a.join(" "),
        Program::Shell(s) => format!("sh -c {}", crate::report::first_line(s)),
    };
    note(ctx, format!("{label}: {shown}"));
    let spec = exec::Spec {
        program,
        env: ctx.env.clone(),
        stdin: ctx.stdin,
        timeout,
        log: ctx.log.clone(),
        label: format!("{} {label}", ctx.id),
        spawned: ctx.spawned.clone(),
    };
    let id = ctx.id.to_string();
    let events = ctx.events.clone();
    exec::run(&spec, ctx.redactor, ctx.cancel.clone(), move |line| {
        if let Some(tx) = &events {
            let _ = tx.send(crate::report::Event::Output {
                id: id.clone(),
                line: line.to_string(),
            });
        }
    })
    .await
}
