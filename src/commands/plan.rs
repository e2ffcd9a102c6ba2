//! `plan` and `graph`: load the workspace, build the view, print it in the chosen format.

use std::io::Write;

use crate::cli::{Global, GraphArgs, PlanArgs, PlanFormat};
use crate::dryrun::{build, color_enabled, graph, markdown, text};
use crate::error::{Exit, Result, UserError};
use crate::state::StepStatus;

/// `bootstrap plan`.
pub fn plan_command(
    g: &Global,
    a: &PlanArgs,
    choose: crate::engine::environment::Chooser,
) -> Result<Exit> {
    let ws = crate::lint::load_checked(g)?;
    let sel = ws.dag.select(&a.selection.phases, &a.selection.steps)?;
    let mut view = crate::engine::environment::with_clusters(&ws, choose, || {
        Ok(build(&ws, &sel, &a.selection))
    })?;
    if a.probe {
        super::run::probe(&ws, &mut view, choose)?;
        // What only the live world knows (lint --online), as warnings.
        for e in crate::lint::online_findings(&ws.spec, &ws.dag, &ws.state_dir) {
            eprintln!("warning[online]: {e}\n");
        }
    }
    // `--output json` is `--format json` (one flag for JSON everywhere).
    let format = if g.output == crate::cli::OutputMode::Json {
        PlanFormat::Json
    } else {
        a.format
    };
    // The workspace is not needed to print the view: free it before the output is made.
    drop(ws);
    if format == PlanFormat::Json && a.out.is_none() {
        // Streamed to stdout, without the whole document in memory first.
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        serde_json::to_writer_pretty(&mut out, &view)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(detailed_exit(a, &view));
    }
    let rendered = match format {
        PlanFormat::Text => text::render(&view, color_enabled(g, a.out.is_none())),
        PlanFormat::Markdown => markdown::render(&view),
        PlanFormat::Json => serde_json::to_string_pretty(&view)? + "\n",
    };
    match &a.out {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    UserError::new(format!("cannot create the directory for --out: {e}"))
                        .in_file(dir)
                })?;
            }
            std::fs::write(path, rendered.as_bytes()).map_err(|e| {
                UserError::new(format!("cannot write the plan: {e}"))
                    .in_file(path)
                    .field("--out")
            })?;
            if !g.quiet {
                if format == PlanFormat::Json {
                    eprintln!(
                        "Saved the plan to {}. Run exactly it with: bootstrap run --from-plan {}",
                        path.display(),
                        path.display()
                    );
                } else {
                    // Only a JSON plan can be run with --from-plan.
                    eprintln!(
                        "Wrote the plan to {}. To run exactly a saved plan, save it as JSON: bootstrap plan --format json --out FILE",
                        path.display()
                    );
                }
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(rendered.as_bytes())?;
        }
    }
    Ok(detailed_exit(a, &view))
}

/// `--detailed-exitcode`, Terraform's convention: 0 nothing to do, 2 work to do (1 is an error).
fn detailed_exit(a: &PlanArgs, view: &crate::dryrun::DryRun) -> Exit {
    if a.detailed_exitcode && (view.summary.to_run > 0 || view.summary.drift > 0) {
        Exit::Usage
    } else {
        Exit::Ok
    }
}

/// `bootstrap graph`.
pub fn graph_command(g: &Global, a: &GraphArgs) -> Result<Exit> {
    let ws = crate::lint::load(g)?;
    let sel = ws.dag.select(&a.phases, &[])?;
    let all = graph::edges(&ws.dag, &sel);
    let status = a.status.then(|| {
        let recorded = crate::state::recorded_statuses(&ws.spec.plan, &ws.state_dir);
        sel.order
            .iter()
            .map(|&i| {
                let w = &ws.dag.work[i];
                let st = match recorded.get(w.id()) {
                    None => "never-run".to_string(),
                    Some((StepStatus::Done, fp)) if fp != w.fingerprint() => "changed".into(),
                    Some((st, _)) => serde_json::to_value(st)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                };
                (i, st)
            })
            .collect()
    });
    let drawing = graph::Drawing {
        edges: if a.all_edges {
            all
        } else {
            graph::reduce(&all)
        },
        status,
    };
    let out = if g.output == crate::cli::OutputMode::Json {
        serde_json::to_string_pretty(&graph::json(&ws.dag, &sel, &drawing))? + "\n"
    } else {
        match a.format {
            crate::cli::GraphFormat::Dot => graph::dot(&ws.dag, &sel, &drawing),
            crate::cli::GraphFormat::Mermaid => graph::mermaid(&ws.dag, &sel, &drawing),
        }
    };
    print!("{out}");
    Ok(Exit::Ok)
}
