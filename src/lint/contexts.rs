//! Names the tools do not produce: `talosctl kubeconfig` writes the context `admin@<cluster>`
//! (`<cluster>` as given to `talosctl gen config`, or `--force-context-name`), and without
//! `--force` a re-run renames it to `admin@<cluster>-1` (real-tools §1.6). A plan context must be
//! that name unless a step renames it; a step's `--context` must be a context the plan has.

use super::context::{Ctx, commands, flag_values, has_flag, positionals, roles};
use super::{Finding, talos};

const RULE: &str = "contexts";

fn talosctl_valued(f: &str) -> bool {
    matches!(
        f,
        "-n" | "--nodes"
            | "-e"
            | "--endpoints"
            | "--talosconfig"
            | "--context"
            | "--cluster"
            | "--force-context-name"
    )
}

pub(super) fn findings(cx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    let plan = &cx.spec.plan;
    let gens = talos::gen_configs(cx);
    // Contexts renamed by a step: (from, to).
    let mut renames: Vec<(String, String)> = Vec::new();
    for (i, _) in cx.units() {
        for (_, a) in roles(&cx.dag.work[i]) {
            for c in commands(a) {
                let pos = positionals(&c.argv, &|f| matches!(f, "--kubeconfig" | "--context"));
                if c.tool() == "kubectl"
                    && pos.starts_with(&["config", "rename-context"])
                    && let (Some(from), Some(to)) = (pos.get(2), pos.get(3))
                {
                    renames.push((from.to_string(), to.to_string()));
                }
            }
        }
    }
    let contexts: Vec<&str> = plan.clusters.iter().map(|c| c.context.as_str()).collect();
    let talos_contexts: Vec<&str> = plan
        .clusters
        .iter()
        .map(|c| c.talos_context.as_str())
        .collect();
    for (i, u) in cx.units() {
        for (role, a) in roles(&cx.dag.work[i]) {
            for c in commands(a) {
                let tool = c.tool().to_string();
                // A step's --context must be one the kubeconfig (or talosconfig) has.
                let (flags, known): (&[&str], &Vec<&str>) = match tool.as_str() {
                    "kubectl" | "cilium" | "flux" => (&["--context"], &contexts),
                    "helm" | "hubble" => (&["--kube-context"], &contexts),
                    "talosctl" => (&["--context"], &talos_contexts),
                    _ => continue,
                };
                for v in flag_values(&c.argv, flags) {
                    let renamed = renames.iter().any(|(_, to)| to == v);
                    if !known.contains(&v) && !renamed && !v.contains("{{") {
                        out.push(Finding::error(
                            RULE,
                            cx.on_step(
                                u,
                                role.field(),
                                &[v, flags[0]],
                                format!(
                                    "{tool} {} {v:?} names a context the plan does not have ({})",
                                    flags[0],
                                    known.join(", ")
                                ),
                            )
                            .help(if tool == "talosctl" {
                                "write --context {{ cluster.talos_context }} (or --talosconfig with the cluster's own file)"
                            } else {
                                "write the plan's context: {{ cluster.context }}"
                            }),
                        ));
                    }
                }
                if tool != "talosctl" {
                    continue;
                }
                let pos = positionals(&c.argv, &talosctl_valued);
                if pos.first() != Some(&"kubeconfig") {
                    continue;
                }
                let Some(cluster) = u.cluster.as_deref().and_then(|n| plan.cluster(n)) else {
                    continue;
                };
                let name = gens
                    .iter()
                    .find(|g| g.cluster == cluster.name.value)
                    .and_then(|g| g.name.clone())
                    .unwrap_or_else(|| cluster.name.value.clone());
                let written = flag_values(&c.argv, &["--force-context-name"])
                    .first()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| format!("admin@{name}"));
                let renamed = renames
                    .iter()
                    .any(|(from, to)| *from == written && *to == cluster.context);
                if written != cluster.context && !renamed {
                    let ci = plan
                        .clusters
                        .iter()
                        .position(|c| c.name.value == cluster.name.value)
                        .unwrap_or(0);
                    let (line, col) =
                        context_line(&cx.spec.plan_text, cluster.name.referenced.line());
                    out.push(Finding::error(
                        RULE,
                        crate::error::UserError::new(format!(
                            "context {:?} is not what talosctl kubeconfig writes: it writes {written:?} (step {})",
                            cluster.context, u.step
                        ))
                        .in_file(&cx.spec.plan_file)
                        .at(line, col)
                        .field(format!("clusters[{ci}].context"))
                        .help(format!(
                            "write context: {written}, or add a step that runs kubectl config rename-context {written} {}",
                            cluster.context
                        ))
                        .with_source_line(),
                    ));
                }
                let to_file = pos.get(1).is_some_and(|p| *p != "-");
                if to_file && !has_flag(&c.argv, &["--force", "-f"]) {
                    out.push(Finding::warning(
                        RULE,
                        cx.on_step(
                            u,
                            role.field(),
                            &["kubeconfig"],
                            format!(
                                "talosctl kubeconfig without --force: a re-run finds {written:?} and renames the new context to \"{written}-1\""
                            ),
                        )
                        .help("add --force: it overwrites the context in place, so a re-run is harmless"),
                    ));
                }
            }
        }
    }
    out
}

/// The line of `context:` (not `talos_context:`) after a cluster's name line.
fn context_line(text: &str, after: u64) -> (u64, u64) {
    for (n, l) in text
        .lines()
        .enumerate()
        .skip(after.saturating_sub(1) as usize)
    {
        let t = l.trim_start().trim_start_matches("- ");
        if t.starts_with("context:") {
            let col = l.find("context:").unwrap_or(0);
            return (n as u64 + 1, col as u64 + 10);
        }
    }
    (after, 1)
}
