//! Per-cluster identity: a step expanded per cluster (or node) must render differently where it
//! must. Three findings:
//! * two expansions render the same command for a tool that acts on a cluster (no context, no
//!   node, the same files): the second cluster gets the first one's work;
//! * one cluster's expansion names another cluster's name, context, endpoint, CIDR or node address
//!   (a hard-coded value), unless the step is about its peers (`peers`, `clusters`, `mesh`);
//! * two clusters' Talos machine configs share an identity (cluster name, endpoint, secrets bundle),
//!   so they would share a CA and join each other.

use std::collections::BTreeMap;

use crate::dag::Unit;
use crate::spec::phase::{ActionSpec, Step};

use super::context::{Ctx, commands, positionals};
use super::{Finding, talos};

const RULE: &str = "identity";

/// Tools that act on one cluster or node, or write per-cluster files.
fn targets_cluster(argv: &[String]) -> bool {
    let tool = argv
        .first()
        .map(|s| s.rsplit('/').next().unwrap_or(s))
        .unwrap_or("");
    match tool {
        "talosctl" | "kubectl" | "cilium" | "flux" | "hubble" => !argv
            .iter()
            .any(|a| a == "version" || a == "--client" || a == "completion"),
        "helm" => {
            let pos = positionals(argv, &super::helm::helm_valued);
            !matches!(
                pos.first(),
                Some(&"repo") | Some(&"search") | Some(&"version") | Some(&"pull") | Some(&"show")
            )
        }
        _ => false,
    }
}

fn step_spec<'a>(cx: &Ctx<'a>, u: &Unit) -> Option<&'a Step> {
    cx.spec
        .phases
        .iter()
        .filter(|p| p.phase.id.value == u.phase)
        .flat_map(|p| p.phase.steps.iter())
        .find(|s| s.id.value == u.step)
}

/// Whether the step is written about other clusters (then naming them is its job).
fn about_peers(s: &Step) -> bool {
    let raw = format!(
        "{} {} {} {:?}",
        serde_json::to_string(&s.run.value).unwrap_or_default(),
        s.check
            .as_ref()
            .map(|c| serde_json::to_string(&c.value).unwrap_or_default())
            .unwrap_or_default(),
        s.verify
            .as_ref()
            .map(|c| serde_json::to_string(&c.value).unwrap_or_default())
            .unwrap_or_default(),
        s.env
    );
    raw.contains("peers") || raw.contains("clusters") || raw.contains("mesh.")
}

/// Does `text` mention `word` as a whole value (not inside another word, not `apps/v1`)?
fn mentions(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let before_ok = |c: Option<char>| {
        c.is_none_or(|c| {
            matches!(
                c,
                '=' | '@' | '/' | '"' | '\'' | ' ' | ':' | ',' | '{' | '[' | '\n'
            )
        })
    };
    let after_ok = |rest: &str| {
        let c = rest.chars().next();
        if rest.starts_with("/v") && rest[2..].starts_with(|c: char| c.is_ascii_digit()) {
            return false; // an API group such as apps/v1
        }
        c.is_none_or(|c| {
            matches!(
                c,
                '/' | '.' | '"' | '\'' | ' ' | ',' | '}' | ']' | ':' | '\n'
            )
        })
    };
    let mut start = 0;
    while let Some(k) = text[start..].find(word) {
        let at = start + k;
        let prev = text[..at].chars().next_back();
        let rest = &text[at + word.len()..];
        if before_ok(prev) && after_ok(rest) {
            // "1.2.3.4" inside "1.2.3.40": the next char decides; '.' then a digit is another address.
            let next_two: Vec<char> = rest.chars().take(2).collect();
            if !(next_two.first() == Some(&'.')
                && next_two.get(1).is_some_and(|c| c.is_ascii_digit()))
            {
                return true;
            }
        }
        start = at + word.len();
    }
    false
}

fn rendered(u: &Unit) -> String {
    let mut parts = Vec::new();
    for a in std::iter::once(&u.run)
        .chain(u.check.iter())
        .chain(u.verify.iter())
    {
        for c in commands(a) {
            parts.push(c.argv.join(" "));
        }
    }
    for v in u.env.values() {
        parts.push(v.clone());
    }
    parts.join("\n")
}

pub(super) fn findings(cx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    let plan = &cx.spec.plan;
    // Group the expansions of each step template.
    let mut groups: BTreeMap<(String, String), Vec<&Unit>> = BTreeMap::new();
    for (_, u) in cx.units() {
        if u.cluster.is_some() {
            groups
                .entry((u.phase.clone(), u.step.clone()))
                .or_default()
                .push(u);
        }
    }
    for units in groups.values() {
        let Some(first) = units.first() else { continue };
        let spec = step_spec(cx, first);
        // 1. The same command for two expansions.
        'pairs: for (k, a) in units.iter().enumerate() {
            for b in units.iter().skip(k + 1) {
                if a.cluster == b.cluster && a.node.is_none() {
                    continue;
                }
                for (ca, cb) in commands(&a.run).iter().zip(commands(&b.run).iter()) {
                    if ca.argv == cb.argv && targets_cluster(&ca.argv) {
                        let who =
                            |u: &Unit| u.node.clone().or(u.cluster.clone()).unwrap_or_default();
                        out.push(Finding::error(
                            RULE,
                            cx.on_step(
                                b,
                                "run",
                                &[ca.argv.get(1).map(String::as_str).unwrap_or(""), ca.tool()],
                                format!(
                                    "step {:?} renders the same `{}` command for {} and {}: the second does the first one's work again",
                                    b.step,
                                    ca.tool(),
                                    who(a),
                                    who(b)
                                ),
                            )
                            .help(match ca.tool() {
                                "talosctl" => "name the node and files per item: -n {{ node.ip }} / {{ cluster.first_controlplane.ip }}, {{ paths.talos_configs }}/{{ cluster.name }}/…",
                                "helm" => "add --kube-context {{ cluster.context }} and per-cluster values such as cluster.name={{ cluster.name }}",
                                _ => "add --context {{ cluster.context }} so each expansion acts on its own cluster",
                            }),
                        ));
                        break 'pairs;
                    }
                }
            }
        }
        // 1b. Two clusters' generated Talos files written to one place: the second overwrites the
        // first (or, without --force, fails with "already exists").
        let outputs: Vec<(&Unit, String)> = units
            .iter()
            .filter_map(|u| {
                commands(&u.run).into_iter().find_map(|c| {
                    let is_gen = c.tool() == "talosctl" && c.argv.iter().any(|a| a == "gen");
                    let o =
                        super::context::flag_values(&c.argv, &["-o", "--output", "--output-file"])
                            .first()
                            .map(|s| s.to_string())?;
                    (is_gen && o != "-").then_some((*u, o))
                })
            })
            .collect();
        'outs: for (k, (a, oa)) in outputs.iter().enumerate() {
            for (b, ob) in outputs.iter().skip(k + 1) {
                if a.cluster != b.cluster && oa == ob {
                    out.push(Finding::error(
                        RULE,
                        cx.on_step(
                            b,
                            "run",
                            &["-o", "--output"],
                            format!(
                                "step {:?} writes {} and {}'s Talos files to the same place {oa:?}",
                                b.step,
                                a.cluster.as_deref().unwrap_or(""),
                                b.cluster.as_deref().unwrap_or("")
                            ),
                        )
                        .help("write each cluster's files under its own directory: {{ paths.talos_configs }}/{{ cluster.name }}/…"),
                    ));
                    break 'outs;
                }
            }
        }
        // 2. Another cluster's identity, hard-coded.
        if spec.is_some_and(about_peers) {
            continue;
        }
        for u in units {
            let Some(own) = u.cluster.as_deref().and_then(|c| plan.cluster(c)) else {
                continue;
            };
            // A Kubernetes check pinned to another cluster.
            for (role, a) in [
                ("run", Some(&*u.run)),
                ("check", u.check.as_deref()),
                ("verify", u.verify.as_deref()),
            ] {
                let Some(a) = a else { continue };
                let pinned = match a {
                    ActionSpec::Nodes(c) => c.cluster.as_deref(),
                    ActionSpec::Rollout(c) => c.cluster.as_deref(),
                    ActionSpec::Condition(c) => c.cluster.as_deref(),
                    ActionSpec::Exists(c) | ActionSpec::Absent(c) => c.cluster.as_deref(),
                    ActionSpec::Crd(c) => c.cluster.as_deref(),
                    ActionSpec::Field(c) => c.cluster.as_deref(),
                    ActionSpec::Kustomizations(c) | ActionSpec::Helmreleases(c) => {
                        c.cluster.as_deref()
                    }
                    ActionSpec::HelmValues(c) => c.cluster.as_deref(),
                    // The probe runs in the source cluster; the destination may be the other one.
                    ActionSpec::Flow(c) => c.from.cluster.as_deref(),
                    _ => None,
                };
                if let Some(other) = pinned.filter(|p| *p != own.name.value.as_str()) {
                    out.push(Finding::error(
                        RULE,
                        cx.on_step(
                            u,
                            role,
                            &["cluster:"],
                            format!(
                                "step {:?} for {} checks cluster {other:?}: its {role} looks at the wrong cluster",
                                u.step, own.name.value
                            ),
                        )
                        .help("drop cluster: (a check defaults to the step's cluster) or write cluster: \"{{ cluster.name }}\""),
                    ));
                }
            }
            let text = rendered(u);
            for other in &plan.clusters {
                if other.name.value == own.name.value {
                    continue;
                }
                let mut values: Vec<(&str, String)> = vec![
                    ("context", other.context.clone()),
                    ("endpoint", other.endpoint.value.clone()),
                    ("pod CIDR", other.pod_cidr.value.to_string()),
                    ("service CIDR", other.service_cidr.value.to_string()),
                    ("name", other.name.value.clone()),
                ];
                values.extend(
                    other
                        .nodes
                        .iter()
                        .map(|n| ("node address", n.ip.value.to_string())),
                );
                let own_values = [
                    own.context.clone(),
                    own.endpoint.value.clone(),
                    own.name.value.clone(),
                ];
                if let Some((what, v)) = values
                    .into_iter()
                    .find(|(_, v)| !own_values.iter().any(|o| o == v) && mentions(&text, v))
                {
                    out.push(Finding::error(
                        RULE,
                        cx.on_step(
                            u,
                            "run",
                            &[&v],
                            format!(
                                "step {:?} for {} names {}'s {what} {v:?}",
                                u.step, own.name.value, other.name.value
                            ),
                        )
                        .help(match what {
                            "context" => "write {{ cluster.context }}",
                            "endpoint" => "write {{ cluster.endpoint }}",
                            "pod CIDR" => "write {{ cluster.pod_cidr }}",
                            "service CIDR" => "write {{ cluster.service_cidr }}",
                            "node address" => {
                                "write {{ node.ip }} or {{ cluster.first_controlplane.ip }}"
                            }
                            _ => "write {{ cluster.name }}",
                        }),
                    ));
                    break;
                }
            }
        }
    }
    // 3. Talos configs that share an identity.
    let gens = talos::gen_configs(cx);
    for (k, a) in gens.iter().enumerate() {
        for b in gens.iter().skip(k + 1) {
            if a.cluster == b.cluster {
                continue;
            }
            let shared = [
                ("cluster name", a.name.as_ref(), b.name.as_ref()),
                ("endpoint", a.endpoint.as_ref(), b.endpoint.as_ref()),
                (
                    "secrets bundle",
                    a.with_secrets.as_ref(),
                    b.with_secrets.as_ref(),
                ),
                (
                    "cluster name (patch)",
                    a.facts.cluster_name.as_ref().map(|v| &v.value),
                    b.facts.cluster_name.as_ref().map(|v| &v.value),
                ),
            ]
            .into_iter()
            .find(|(_, x, y)| x.is_some() && x == y);
            if let Some((what, Some(v), _)) = shared {
                out.push(Finding::error(
                    RULE,
                    cx.on_step(
                        b.unit,
                        "run",
                        &[v.as_str(), "--with-secrets", "gen"],
                        format!(
                            "the Talos configs of {} and {} share their {what} {v:?}: the clusters would share a CA and identity",
                            a.cluster, b.cluster
                        ),
                    )
                    .help("give each cluster its own: talosctl gen config {{ cluster.name }} {{ cluster.endpoint }} --with-secrets {{ paths.talos_configs }}/{{ cluster.name }}/secrets.yaml"),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn mentions_whole_values_only() {
        assert!(mentions("--set cluster.name=infra", "infra"));
        assert!(mentions("/state/talos/infra/secrets.yaml", "infra"));
        assert!(!mentions("kubectl get deploy -o apps/v1", "apps"));
        assert!(!mentions("infra-01", "infra"));
        assert!(!mentions("10.25.11.110", "10.25.11.11"));
        assert!(mentions("-n 10.25.11.11 bootstrap", "10.25.11.11"));
    }
}
