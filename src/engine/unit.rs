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
    pub env: BTreeMap<String, String>,
    pub redactor: Redactor,
    pub clusters: Arc<Clusters>,
    pub cancel: Cancel,
    pub log: std::path::PathBuf,
    pub tx: UnboundedSender<Msg>,
    pub events: UnboundedSender<Event>,
}

pub(crate) async fn run_unit(c: UnitCtx) {
    let started = Instant::now();
    let result = match &c.ws_work {
        Work::Step(u) => run_step(&c, u).await,
        Work::Gate(g) => run_gate(&c, g).await,
    };
    let (outcome, attempts, exit_code, detail, tail) = result;
    let _ = c.tx.send(Msg::Done(UnitResult {
        index: c.index,
        outcome,
        attempts,
        duration: started.elapsed(),
        exit_code,
        detail,
        tail,
        log: c.log.display().to_string(),
    }));
}

type Ended = (Outcome, u32, Option<i32>, String, String);

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

async fn run_step(c: &UnitCtx, u: &Unit) -> Ended {
    let env = match resolve_env(c, u).await {
        Ok(e) => e,
        Err(msg) => {
            let _ = c.tx.send(Msg::Started {
                index: c.index,
                attempt: 1,
                log: c.log.display().to_string(),
            });
            return (Outcome::Failed, 1, None, msg.clone(), msg);
        }
    };
    let ctx = |events: bool| Ctx {
        env: &env,
        stdin: u.stdin,
        log: Some(c.log.clone()),
        redactor: &c.redactor,
        clusters: &c.clusters,
        cancel: c.cancel.clone(),
        id: &u.id,
        events: events.then(|| c.events.clone()),
    };
    // Is the work already done?
    if let (Some(check), false) = (&u.check, c.forced) {
        let said = action::once(
            check,
            &ctx(false),
            u.timeout.min(Duration::from_secs(120)),
            "check",
        )
        .await;
        if said.interrupted {
            return (
                Outcome::Interrupted,
                0,
                None,
                "interrupted during its check".into(),
                String::new(),
            );
        }
        if said.passed {
            let _ = c.events.send(Event::StepSkipped {
                id: u.id.clone(),
                reason: format!("check passed: {}", crate::report::first_line(&said.detail)),
            });
            return (
                Outcome::Satisfied,
                0,
                said.exit_code,
                format!("check passed: {}", said.detail),
                String::new(),
            );
        }
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let _ = c.tx.send(Msg::Started {
            index: c.index,
            attempt,
            log: c.log.display().to_string(),
        });
        let said = match &u.run {
            a if crate::checks::is_kube(a) => action::until(a, &ctx(true), u.timeout, "run").await,
            a => action::once(a, &ctx(true), u.timeout, "run").await,
        };
        if said.interrupted {
            return (
                Outcome::Interrupted,
                attempt,
                said.exit_code,
                "interrupted".into(),
                said.output.join("\n"),
            );
        }
        let said = if said.passed {
            match &u.verify {
                Some(v) => {
                    let vs = action::until(v, &ctx(false), u.timeout, "verify").await;
                    if vs.passed {
                        said
                    } else {
                        Said {
                            passed: false,
                            detail: format!("verify failed: {}", vs.detail),
                            ..vs
                        }
                    }
                }
                None => said,
            }
        } else {
            said
        };
        if said.interrupted {
            return (
                Outcome::Interrupted,
                attempt,
                said.exit_code,
                "interrupted".into(),
                said.output.join("\n"),
            );
        }
        if said.passed {
            return (
                Outcome::Done,
                attempt,
                said.exit_code,
                said.detail,
                String::new(),
            );
        }
        let retryable = attempt < u.retry.attempts && transient(u, &said);
        let wait = retryable.then(|| backoff(u, attempt));
        let _ = c.events.send(Event::AttemptFailed {
            id: u.id.clone(),
            attempt,
            transient: retryable,
            detail: said.detail.clone(),
            retry_in_ms: wait.map(|w| w.as_millis() as u64),
        });
        match wait {
            None => {
                // A built-in check has no output lines: what it saw is the tail.
                let tail = if said.output.is_empty() {
                    said.detail.clone()
                } else {
                    said.output.join("\n")
                };
                return (
                    Outcome::Failed,
                    attempt,
                    said.exit_code,
                    said.detail.clone(),
                    tail,
                );
            }
            Some(w) => {
                let mut cancel = c.cancel.clone();
                tokio::select! {
                    _ = tokio::time::sleep(w) => {}
                    _ = action::interrupted(&mut cancel) => return (Outcome::Interrupted, attempt, None, "interrupted while waiting to retry".into(), String::new()),
                }
            }
        }
    }
}

async fn run_gate(c: &UnitCtx, g: &crate::dag::Gate) -> Ended {
    let _ = c.tx.send(Msg::Started {
        index: c.index,
        attempt: 1,
        log: c.log.display().to_string(),
    });
    let env = c.env.clone();
    let futures = g.items.iter().map(|item| {
        let env = &env;
        async move {
            let ctx = Ctx {
                env,
                stdin: false,
                log: Some(c.log.clone()),
                redactor: &c.redactor,
                clusters: &c.clusters,
                cancel: c.cancel.clone(),
                id: &item.id,
                events: None,
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
            Outcome::Interrupted,
            1,
            None,
            "interrupted".into(),
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
            Outcome::Done,
            1,
            None,
            format!("all {} checklist items pass", results.len()),
            String::new(),
        )
    } else {
        let text = failing.join("\n");
        (
            Outcome::Failed,
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
