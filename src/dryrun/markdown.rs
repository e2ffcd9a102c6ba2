//! The markdown view of a dry run, for a change ticket: counts, a table per phase, every command,
//! every gate item.

use std::fmt::Write;

use super::model::DryRun;

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn render(v: &DryRun) -> String {
    let mut o = String::new();
    let s = &v.summary;
    let _ = writeln!(o, "# Bootstrap plan: {}\n", v.plan.name);
    let _ = writeln!(
        o,
        "- Plan file: `{}`{}",
        v.plan.file,
        if v.plan.lab { " (lab: simulated)" } else { "" }
    );
    let _ = writeln!(
        o,
        "- Phases: {}",
        v.phases
            .iter()
            .map(|p| format!("`{}`", p.id))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !v.selection.phases.is_empty() || !v.selection.steps.is_empty() {
        let _ = writeln!(
            o,
            "- Selection: phases {:?}, steps {:?}",
            v.selection.phases, v.selection.steps
        );
    }
    let _ = writeln!(
        o,
        "- Basis: phases `{}`, plan `{}`, state `{}`",
        &v.basis.phases_fingerprint[..12],
        &v.basis.plan_fingerprint[..12],
        &v.basis.state_fingerprint[..12]
    );
    let _ = writeln!(
        o,
        "\n| Steps | Gates | Prerequisites | To run | Done | Changed | Failed | Interrupted | Never run |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        o,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
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
    for p in &v.phases {
        let _ = writeln!(o, "\n## Phase `{}`: {}\n", p.id, cell(&p.title));
        if !p.description.is_empty() {
            let _ = writeln!(o, "{}\n", p.description);
        }
        let _ = writeln!(
            o,
            "| # | Wave | Step | Cluster | Node | Status | Timeout | Retry | Confirm |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
        for (n, st) in v
            .steps
            .iter()
            .filter(|st| st.phase == p.id && st.kind == "step")
            .enumerate()
        {
            let retry = st
                .retry
                .as_ref()
                .map(|r| r.attempts.to_string())
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "| {} | {} | `{}`{} | {} | {} | {} | {} | {} | {} |",
                n + 1,
                st.wave,
                st.id,
                if st.prerequisite {
                    " (prerequisite)"
                } else {
                    ""
                },
                st.cluster.as_deref().unwrap_or("–"),
                st.node.as_deref().unwrap_or("–"),
                st.status.label(),
                st.timeout,
                retry,
                if st.confirm { "yes" } else { "no" }
            );
        }
        let _ = writeln!(o, "\n### Commands\n");
        for st in v
            .steps
            .iter()
            .filter(|st| st.phase == p.id && st.kind == "step")
        {
            let _ = writeln!(o, "#### `{}`\n", st.id);
            if !st.description.is_empty() {
                let _ = writeln!(o, "{}\n", cell(&st.description));
            }
            let _ = writeln!(o, "```sh");
            if let Some(c) = &st.commands.check {
                let _ = writeln!(o, "# check (skip the step when this passes)\n{c}");
            }
            if let Some(c) = &st.commands.run {
                let _ = writeln!(o, "# run\n{c}");
            }
            if let Some(c) = &st.commands.verify {
                let _ = writeln!(o, "# verify\n{c}");
            }
            for (k, val) in &st.env {
                let _ = writeln!(o, "# env {k}={val}");
            }
            let _ = writeln!(o, "```\n");
        }
        let _ = writeln!(o, "### Gate: validation checklist\n");
        let _ = writeln!(o, "| Item | Checklist | Check | Timeout |");
        let _ = writeln!(o, "|---|---|---|---|");
        for item in &p.gate {
            let _ = writeln!(
                o,
                "| `{}` | {} | `{}` | {} |",
                item.id,
                cell(&item.text),
                cell(&item.command),
                item.timeout
            );
        }
    }
    let _ = writeln!(o, "\n## Parallel waves\n");
    for (i, w) in v.waves.iter().enumerate() {
        let _ = writeln!(
            o,
            "{}. {}",
            i + 1,
            w.iter()
                .map(|x| format!("`{x}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    o
}
