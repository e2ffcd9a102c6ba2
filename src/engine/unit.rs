//! The executor side: one unit, start to end. A step runs its check (skip when satisfied), then its
//! action with retries (exponential backoff with jitter, transient failures only), then its verify. A
//! gate evaluates all its items at once, each until its own deadline.
//!
//! It reports transitions to the dispatcher, which records them; it never writes state itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::action::{self, Ctx, Said};
use super::{Msg, UnitResult};
use crate::checks::Clusters;
use crate::dag::{Unit, Work};
use crate::exec::{self, Cancel, Program};
use crate::report::Event;
use crate::secrets::{self, Redactor};
use crate::state::Outcome;

pub(crate) struct UnitCtx {
    pub ws_work: Work,
    pub index: usize,
    /// The definition changed since it last succeeded: run the action even if the check passes.
    pub forced: bool,
    /// The step was running when an earlier run stopped: the work may be half done, so its check
    /// gets retries on transient errors before the engine decides that the work was not done.
    pub was_interrupted: bool,
    /// Cancels read-only work (checks, verifies, waits, gate items): fired when the run stops,
    /// whether by a signal or by a failed step.
    pub waits: Cancel,
    /// What the unit is doing or waiting for now, for its heartbeat.
    pub progress: Arc<std::sync::Mutex<String>>,
    pub env: BTreeMap<String, String>,
    pub redactor: Redactor,
    pub clusters: Arc<Clusters>,
    pub cancel: Cancel,
    pub log: std::path::PathBuf,
    pub tx: UnboundedSender<Msg>,
    pub events: UnboundedSender<Event>,
}

/// How often a long unit says what it is waiting for (`BOOTSTRAP_HEARTBEAT_SECS`, default 30 s):
/// CI systems kill jobs that print nothing for 10 minutes, and a person wants to know.
fn heartbeat_every() -> Duration {
    std::env::var("BOOTSTRAP_HEARTBEAT_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64)
}

pub(crate) async fn run_unit(c: UnitCtx) {
    let started = Instant::now();
    let heartbeat = {
        let (progress, events, redactor) =
            (c.progress.clone(), c.events.clone(), c.redactor.clone());
        let id = c.ws_work.id().to_string();
        let every = heartbeat_every();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                let waiting_for = progress.lock().map(|p| p.clone()).unwrap_or_default();
                let _ = events.send(Event::Heartbeat {
                    id: id.clone(),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                    waiting_for: redactor.redact(&waiting_for),
                });
            }
        })
    };
    let result = match &c.ws_work {
        Work::Step(u) => run_step(&c, u).await,
        Work::Gate(g) => run_gate(&c, g).await,
    };
    heartbeat.abort();
    let (outcome, attempts, exit_code, detail, tail) = result;
    let (outcome, not_started) = match outcome {
        Some(o) => (o, false),
        None => (Outcome::Interrupted, true),
    };
    let _ = c.tx.send(Msg::Done(UnitResult {
        index: c.index,
        not_started,
        outcome,
        attempts,
        duration: started.elapsed(),
        exit_code,
        detail,
        tail,
        log: c.log.display().to_string(),
    }));
}

/// How a unit ended: the outcome (None: its action was never allowed to start, nothing recorded),
/// attempts, exit code, detail and output tail.
type Ended = (Option<Outcome>, u32, Option<i32>, String, String);

/// Ask the dispatcher to record that an attempt starts. The attempt may start only once the record
/// is durable (write-ahead), and only if the run is not stopping.
async fn permission(c: &UnitCtx, attempt: u32) -> bool {
    let (ack, answer) = tokio::sync::oneshot::channel();
    let _ = c.tx.send(Msg::Started {
        index: c.index,
        attempt,
        log: c.log.display().to_string(),
        ack,
    });
    answer.await.unwrap_or(false)
}

/// Why read-only work ended early: a signal, or the run stopping after a failure.
fn cancelled_detail(c: &UnitCtx, what: &str) -> String {
    if c.cancel.level() > 0 {
        format!("interrupted during its {what}")
    } else {
        format!("cancelled during its {what}: the run is stopping because a step failed")
    }
}

/// Resolve `op://` references in the step's environment with `op read`, remembering the values for
/// redaction. Values are never written anywhere.
async fn resolve_env(c: &UnitCtx, u: &Unit) -> Result<BTreeMap<String, String>, String> {
    let mut env = c.env.clone();
    for (k, v) in &u.env {
        if secrets::is_reference(v) {
            let spec = exec::Spec {
                program: Program::Argv(vec!["op".into(), "read".into(), v.clone()]),
                env: c.env.clone(),
                stdin: false,
                timeout: Duration::from_secs(60),
                log: None,
                label: format!("resolve {k}"),
                spawned: None,
            };
            let f = exec::run(&spec, &Redactor::new(), c.cancel.clone(), |_| {}).await;
            if !f.success() {
                return Err(format!(
                    "could not resolve {k} from {v}: {}: {}",
                    f.describe(),
                    f.tail(5)
                ));
            }
            let value = f.stdout.join("\n").trim_end_matches('\n').to_string();
            c.redactor.add(&value);
            env.insert(k.clone(), value);
        } else {
            env.insert(k.clone(), v.clone());
        }
    }
    Ok(env)
}

/// Transient: the failed attempt's output matches one of the step's `transient` patterns (no
/// patterns: every failure is transient).
fn transient(u: &Unit, said: &Said) -> bool {
    if u.retry.transient.is_empty() {
        return true;
    }
    let text = said.output.join("\n") + "\n" + &said.detail;
    u.retry.transient.iter().any(|t| {
        regex::Regex::new(t)
            .map(|re| re.is_match(&text))
            .unwrap_or(false)
    })
}

fn backoff(u: &Unit, attempt: u32) -> Duration {
    let base = u.retry.backoff.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1) as i32);
    let capped = base.min(u.retry.max_backoff.as_secs_f64());
    // Full jitter between half and all of the delay.
    Duration::from_secs_f64(capped * (0.5 + fastrand::f64() * 0.5))
}

/// Output that says the other side was not reachable for a moment (a node rebooting, an API
/// server restarting): worth asking again before concluding anything.
const CONNECTION_TRANSIENT: &[&str] = &[
    "connection refused",
    "i/o timeout",
    "no route to host",
    "connection reset",
    "code = Unavailable",
    "TLS handshake timeout",
    "EOF",
];

fn check_transient(u: &Unit, said: &Said) -> bool {
    let text = said.output.join("\n") + "\n" + &said.detail;
    CONNECTION_TRANSIENT.iter().any(|t| text.contains(t))
        || u.retry.transient.iter().any(|t| {
            regex::Regex::new(t)
                .map(|re| re.is_match(&text))
                .unwrap_or(false)
        })
}

/// The time left before the step's deadline, capped by a part's own `timeout:`.
fn part_timeout(deadline: Instant, own: Option<Duration>) -> Duration {
    let left = deadline.saturating_duration_since(Instant::now());
    own.map_or(left, |o| o.min(left))
}

/// Evaluate the step's check once (read-only, cancelled when the run stops). When the step was
/// interrupted before, a transient error is asked again (with the step's backoff) before the
/// answer counts as "not done".
async fn evaluate_check(
    c: &UnitCtx,
    u: &Unit,
    check: &crate::spec::phase::ActionSpec,
    ctx: &Ctx<'_>,
    deadline: Instant,
) -> Said {
    let tries = if c.was_interrupted {
        u.retry.attempts.max(3)
    } else {
        1
    };
    let mut n = 0;
    loop {
        n += 1;
        let own = crate::checks::own_timeout(check);
        let t = part_timeout(deadline, own.or(Some(Duration::from_secs(120))));
        let said = action::once(check, ctx, t, "check").await;
        if said.passed || said.interrupted || n >= tries || !check_transient(u, &said) {
            return said;
        }
        let mut cancel = c.waits.clone();
        tokio::select! {
            _ = tokio::time::sleep(backoff(u, n)) => {}
            _ = action::interrupted(&mut cancel) => return Said { interrupted: true, ..said },
        }
    }
}

/// A channel for the process groups the unit's commands start, forwarded to the dispatcher.
fn spawned_channel(c: &UnitCtx) -> tokio::sync::mpsc::UnboundedSender<u32> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let (to, index) = (c.tx.clone(), c.index);
    tokio::spawn(async move {
        while let Some(pgid) = rx.recv().await {
            let _ = to.send(Msg::Spawned { index, pgid });
        }
    });
    tx
}

async fn run_step(c: &UnitCtx, u: &Unit) -> Ended {
    let spawned = spawned_channel(c);
    // The step's timeout bounds the whole step: check, every attempt, verify and backoffs.
    let deadline = Instant::now() + u.timeout;
    let env = match resolve_env(c, u).await {
        Ok(e) => e,
        // Nothing ran: the step failed before its action could start.
        Err(msg) => return (Some(Outcome::Failed), 0, None, msg.clone(), msg),
    };
    let ctx = |events: bool, cancel: &Cancel| Ctx {
        env: &env,
        stdin: u.stdin,
        log: Some(c.log.clone()),
        redactor: &c.redactor,
        clusters: &c.clusters,
        cancel: cancel.clone(),
        id: &u.id,
        events: events.then(|| c.events.clone()),
        progress: Some(c.progress.clone()),
        spawned: Some(spawned.clone()),
    };
    // Read-only work stops when the run stops; a command stops only on a signal.
    let (look, wait, act) = (
        ctx(false, &c.waits),
        ctx(true, &c.waits),
        ctx(true, &c.cancel),
    );
    let mut attempt = 0;
    loop {
        if let Some(end) = guard(c, u, &look, attempt, deadline).await {
            return end;
        }
        attempt += 1;
        if !permission(c, attempt).await {
            let out = (attempt > 1).then_some(Outcome::Interrupted);
            let d = "not started: the run is stopping".to_string();
            return (out, attempt - 1, None, d, String::new());
        }
        let said = match attempt_once(c, u, (&look, &wait, &act), attempt, deadline).await {
            Ok(said) => said,
            Err(end) => return end,
        };
        if said.passed {
            return (
                Some(Outcome::Done),
                attempt,
                said.exit_code,
                said.detail,
                String::new(),
            );
        }
        if let Err(end) = after_failure(c, u, attempt, said, deadline).await {
            return end;
        }
    }
}

/// A check guards every attempt: the work may have been done meanwhile (by an earlier attempt
/// that looked failed, or by someone else). `Some` when the check ends the step.
async fn guard(
    c: &UnitCtx,
    u: &Unit,
    look: &Ctx<'_>,
    attempt: u32,
    deadline: Instant,
) -> Option<Ended> {
    let check = u.check.as_ref().filter(|_| !(c.forced && attempt == 0))?;
    let said = evaluate_check(c, u, check, look, deadline).await;
    if said.interrupted {
        let out = (attempt > 0).then_some(Outcome::Interrupted);
        return Some((
            out,
            attempt,
            None,
            cancelled_detail(c, "check"),
            String::new(),
        ));
    }
    if !said.passed {
        return None;
    }
    if attempt == 0 {
        let reason = format!("check passed: {}", crate::report::first_line(&said.detail));
        let _ = c.events.send(Event::StepSkipped {
            id: u.id.clone(),
            reason,
        });
        let detail = format!("check passed: {}", said.detail);
        return Some((
            Some(Outcome::Satisfied),
            0,
            said.exit_code,
            detail,
            String::new(),
        ));
    }
    let detail = format!(
        "check passed before attempt {}: {}",
        attempt + 1,
        said.detail
    );
    Some((
        Some(Outcome::Done),
        attempt,
        said.exit_code,
        detail,
        String::new(),
    ))
}

/// One attempt: the action (a wait is read-only, a command is not), then the verify.
async fn attempt_once(
    c: &UnitCtx,
    u: &Unit,
    (look, wait, act): (&Ctx<'_>, &Ctx<'_>, &Ctx<'_>),
    attempt: u32,
    deadline: Instant,
) -> Result<Said, Ended> {
    let left = part_timeout(deadline, None);
    let kube = crate::checks::is_kube(&u.run);
    let said = if kube {
        action::until(&u.run, wait, left, "run").await
    } else {
        action::once(&u.run, act, left, "run").await
    };
    if said.interrupted {
        let d = if kube {
            cancelled_detail(c, "wait")
        } else {
            "interrupted".into()
        };
        return Err((
            Some(Outcome::Interrupted),
            attempt,
            said.exit_code,
            d,
            said.output.join("\n"),
        ));
    }
    let (Some(v), true) = (&u.verify, said.passed) else {
        return Ok(said);
    };
    let t = part_timeout(deadline, crate::checks::own_timeout(v));
    let vs = action::until(v, look, t, "verify").await;
    if vs.interrupted {
        let d = cancelled_detail(c, "verify");
        return Err((
            Some(Outcome::Interrupted),
            attempt,
            vs.exit_code,
            d,
            String::new(),
        ));
    }
    Ok(if vs.passed {
        said
    } else {
        Said {
            passed: false,
            detail: format!("verify failed: {}", vs.detail),
            ..vs
        }
    })
}

/// After a failed attempt: wait the backoff when it is transient and there is time and an attempt
/// left (`Ok`), else end the step as failed (`Err`).
async fn after_failure(
    c: &UnitCtx,
    u: &Unit,
    attempt: u32,
    said: Said,
    deadline: Instant,
) -> Result<(), Ended> {
    let out_of_time = Instant::now() >= deadline;
    let retryable = attempt < u.retry.attempts && !out_of_time && transient(u, &said);
    let wait = retryable
        .then(|| backoff(u, attempt).min(deadline.saturating_duration_since(Instant::now())));
    let _ = c.events.send(Event::AttemptFailed {
        id: u.id.clone(),
        attempt,
        transient: retryable,
        detail: said.detail.clone(),
        retry_in_ms: wait.map(|w| w.as_millis() as u64),
    });
    let Some(w) = wait else {
        // A built-in check has no output lines: what it saw is the tail.
        let tail = if said.output.is_empty() {
            said.detail.clone()
        } else {
            said.output.join("\n")
        };
        let detail = if out_of_time && attempt < u.retry.attempts {
            let t = humantime::format_duration(u.timeout);
            format!(
                "step timeout ({t}) reached after {attempt} attempts: {}",
                said.detail
            )
        } else {
            said.detail.clone()
        };
        return Err((Some(Outcome::Failed), attempt, said.exit_code, detail, tail));
    };
    let mut cancel = c.waits.clone();
    tokio::select! {
        _ = tokio::time::sleep(w) => Ok(()),
        _ = action::interrupted(&mut cancel) => Err((Some(Outcome::Interrupted), attempt, None, cancelled_detail(c, "wait to retry"), String::new())),
    }
}

async fn run_gate(c: &UnitCtx, g: &crate::dag::Gate) -> Ended {
    let spawned = spawned_channel(c);
    if !permission(c, 1).await {
        return (
            None,
            0,
            None,
            "not started: the run is stopping".into(),
            String::new(),
        );
    }
    let env = c.env.clone();
    let futures = g.items.iter().map(|item| {
        let env = &env;
        let spawned = spawned.clone();
        async move {
            let ctx = Ctx {
                env,
                stdin: false,
                log: Some(c.log.clone()),
                redactor: &c.redactor,
                clusters: &c.clusters,
                cancel: c.waits.clone(),
                id: &item.id,
                events: None,
                progress: Some(c.progress.clone()),
                spawned: Some(spawned.clone()),
            };
            let said = action::until(&item.check, &ctx, item.timeout, "gate item").await;
            let _ = c.events.send(Event::GateItem {
                phase: g.phase.clone(),
                item: item.id.clone(),
                text: item.text.clone(),
                passed: said.passed,
                detail: said.detail.clone(),
            });
            (item, said)
        }
    });
    let results = futures_join_all(futures).await;
    if results.iter().any(|(_, s)| s.interrupted) {
        return (
            Some(Outcome::Interrupted),
            1,
            None,
            cancelled_detail(c, "checklist"),
            String::new(),
        );
    }
    let failing: Vec<String> = results
        .iter()
        .filter(|(_, s)| !s.passed)
        .map(|(i, s)| format!("{} ({}): {}", i.id, i.text, s.detail.trim()))
        .collect();
    if failing.is_empty() {
        (
            Some(Outcome::Done),
            1,
            None,
            format!("all {} checklist items pass", results.len()),
            String::new(),
        )
    } else {
        let text = failing.join("\n");
        (
            Some(Outcome::Failed),
            1,
            None,
            format!(
                "{} of {} checklist items fail:\n{text}",
                failing.len(),
                results.len()
            ),
            text,
        )
    }
}

/// Join futures without another dependency.
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..futs.len()).map(|_| None).collect();
    let mut pending: Vec<(usize, std::pin::Pin<Box<F>>)> = futs.into_iter().enumerate().collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => {
                out[*i] = Some(v);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("all ready")).collect()
}
