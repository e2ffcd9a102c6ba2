//! Commands that do not exist: a subcommand or flag the pinned tool does not have (`cilium service
//! list`, `talosctl etcdctl`, a misspelt flag) fails at run time, in the middle of a change window.
//! The table is `tools`.

use super::Finding;
use super::context::{Ctx, commands, positionals, roles};
use super::tools::{self, Problem};

const RULE: &str = "commands";

/// Known replacements for commands that people expect to exist.
fn instead(tool: &str, word: &str) -> Option<&'static str> {
    match (tool, word) {
        ("cilium", "service") => Some(
            "cilium-cli has no service command; run it in an agent: kubectl -n kube-system exec ds/cilium -- cilium-dbg service list",
        ),
        ("cilium", "endpoint" | "bpf" | "policy" | "identity" | "node") => Some(
            "that is a cilium-dbg command inside the agent: kubectl -n kube-system exec ds/cilium -- cilium-dbg …",
        ),
        ("talosctl", "etcdctl") => {
            Some("talosctl has no etcdctl; use talosctl etcd members / etcd status")
        }
        _ => None,
    }
}

pub(super) fn findings(cx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, u) in cx.units() {
        for (role, a) in roles(&cx.dag.work[i]) {
            for c in commands(a) {
                let Some(t) = tools::tool(c.tool()) else {
                    continue;
                };
                // Checks that cannot fail (real-tools §2.2, §2.5): without --wait these exit 0
                // whatever they report.
                let pos = positionals(&c.argv, &|f| t.takes_value(f));
                let sub: Vec<&str> = pos.iter().copied().take(2).collect();
                if t.name == "cilium"
                    && (sub.first() == Some(&"status") || sub[..] == ["clustermesh", "status"])
                    && !c
                        .argv
                        .iter()
                        .any(|a| a == "--wait" || a.starts_with("--wait="))
                {
                    out.push(Finding::warning(
                        RULE,
                        cx.on_step(
                            u,
                            role.field(),
                            &["status"],
                            format!(
                                "cilium {} without --wait exits 0 even when it reports errors, so this {} cannot fail",
                                sub.join(" "),
                                role.field()
                            ),
                        )
                        .help("add --wait (and --wait-duration) so that errors fail the step"),
                    ));
                }
                for p in t.check(&c.argv) {
                    let e = match &p {
                        Problem::UnknownCommand {
                            parent,
                            word,
                            suggestion,
                        } => {
                            let cmd = if parent.is_empty() {
                                t.name.to_string()
                            } else {
                                format!("{} {parent}", t.name)
                            };
                            cx.on_step(
                                u,
                                role.field(),
                                &[word.as_str()],
                                format!("{cmd} has no command {word:?}"),
                            )
                            .help(
                                instead(t.name, word)
                                    .map(String::from)
                                    .or(suggestion
                                        .as_ref()
                                        .map(|s| format!("did you mean {cmd} {s}?")))
                                    .unwrap_or_else(|| {
                                        format!("see {cmd} --help for its commands")
                                    }),
                            )
                        }
                        Problem::UnknownFlag {
                            command,
                            flag,
                            suggestion,
                        } => cx
                            .on_step(
                                u,
                                role.field(),
                                &[flag.as_str()],
                                format!("{command} has no flag {flag}"),
                            )
                            .help(
                                suggestion
                                    .as_ref()
                                    .map(|s| format!("did you mean {s}?"))
                                    .unwrap_or_else(|| {
                                        format!("see {command} --help for its flags")
                                    }),
                            ),
                    };
                    out.push(Finding::error(RULE, e));
                }
            }
        }
    }
    out
}
