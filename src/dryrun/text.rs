//! The terminal view of a dry run.

use std::fmt::Write;

use super::model::{DryRun, StepStatus};

fn paint(on: bool, code: &str, s: &str) -> String {
    if on {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

fn status_color(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Done => "32",
        StepStatus::Failed | StepStatus::Interrupted => "31",
        StepStatus::Changed => "33",
        StepStatus::NeverRun => "36",
    }
}

pub fn render(v: &DryRun, color: bool) -> String {
    let mut o = String::new();
    let s = &v.summary;
    let _ = writeln!(
        o,
        "{} {} ({}){}",
        paint(color, "1", "Plan:"),
        v.plan.name,
        v.plan.file,
        if v.plan.lab {
            " [lab: simulated, touches nothing real]"
        } else {
            ""
        }
    );
    let counts = format!(
        "{} steps and {} gates selected ({} prerequisites): {} to run, {} done, {} changed, {} failed, {} interrupted, {} never run",
        s.steps,
        s.gates,
        s.prerequisites,
        s.to_run,
        s.done,
        s.changed,
        s.failed,
        s.interrupted,
        s.never_run
    );
    let _ = writeln!(o, "{counts}");
    if s.drift > 0 {
        let _ = writeln!(
            o,
            "{} {} step(s) recorded done no longer pass their check; `bootstrap run --refresh` runs them again",
            paint(color, "33", "Drift:"),
            s.drift
        );
    }
    let mut current_phase = String::new();
    for st in &v.steps {
        if st.phase != current_phase {
            current_phase = st.phase.clone();
            if let Some(p) = v.phases.iter().find(|p| p.id == st.phase) {
                let _ = writeln!(o, "\n{} {} — {}", paint(color, "1", "Phase"), p.id, p.title);
            }
        }
        let status = paint(color, status_color(st.status), st.status.label());
        let pre = if st.prerequisite {
            " (prerequisite)"
        } else {
            ""
        };
        let probe = st
            .probe
            .as_ref()
            .map(|p| format!(" · probe: {p}"))
            .unwrap_or_default();
        if st.kind == "gate" {
            let _ = writeln!(
                o,
                "\n  [wave {}] {}  {status}{pre}",
                st.wave,
                paint(color, "1", &st.id)
            );
            if let Some(p) = v.phases.iter().find(|p| p.id == st.phase) {
                for item in &p.gate {
                    let _ = writeln!(o, "      ☐ {}: {}", item.id, item.text);
                    let _ = writeln!(
                        o,
                        "          check: {}  (timeout {})",
                        item.command, item.timeout
                    );
                }
            }
            continue;
        }
        let _ = writeln!(
            o,
            "\n  [wave {}] {}  {status}{pre}{probe}",
            st.wave,
            paint(color, "1", &st.id)
        );
        if !st.description.is_empty() {
            let _ = writeln!(o, "      {}", st.description);
        }
        if !st.changes.is_empty() {
            let _ = writeln!(o, "      changed since it ran:");
            for c in &st.changes {
                let _ = writeln!(
                    o,
                    "        {}",
                    paint(color, "33", &crate::state::definitions::render(c))
                );
            }
        }
        let mut place = Vec::new();
        if let Some(c) = &st.cluster {
            place.push(format!("cluster {c}"));
        }
        if let Some(n) = &st.node {
            place.push(format!("node {n}"));
        }
        if !place.is_empty() {
            let _ = writeln!(o, "      {}", place.join(" · "));
        }
        if let Some(c) = &st.commands.check {
            let _ = writeln!(o, "      check:  {c}");
        }
        if let Some(c) = &st.commands.run {
            let _ = writeln!(o, "      run:    {c}");
        }
        if let Some(c) = &st.commands.verify {
            let _ = writeln!(o, "      verify: {c}");
        }
        for (k, val) in &st.env {
            let _ = writeln!(o, "      env:    {k}={val}");
        }
        let retry = st
            .retry
            .as_ref()
            .map(|r| {
                if r.attempts <= 1 {
                    "no retry".to_string()
                } else {
                    format!(
                        "{} attempts, backoff {}",
                        r.attempts,
                        humantime::format_duration(r.backoff)
                    )
                }
            })
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "      timeout {} · {retry}{}",
            st.timeout,
            if st.confirm {
                " · confirm (asks first, or needs --yes)"
            } else {
                ""
            }
        );
        if let Some(g) = &st.serial {
            let _ = writeln!(
                o,
                "      serial: {g} (never alongside another step of this group)"
            );
        }
        if !st.needs.is_empty() {
            let _ = writeln!(o, "      needs:  {}", st.needs.join(", "));
        }
    }
    let _ = writeln!(o, "\n{}", paint(color, "1", "Parallel waves:"));
    for (i, w) in v.waves.iter().enumerate() {
        let _ = writeln!(o, "  {:>3}: {}", i + 1, w.join(", "));
    }
    // Repeated at the bottom, where a long plan ends (Terraform's "Plan: 1 to add, …").
    let _ = writeln!(o, "\n{} {counts}", paint(color, "1", "Plan:"));
    o
}
