//! Order that cannot work: what a step waits for or uses must come from a step it needs.
//!
//! * Waiting for Ready nodes before the CNI is installed, when the Talos patches say `cni: none`:
//!   nodes stay NotReady ("cni plugin not initialized") until a CNI runs, so the wait deadlocks
//!   (platform-components §1.2, §18.22).
//! * `talosctl health` or `talosctl etcd …` before `talosctl bootstrap`: there is no etcd yet
//!   (real-tools §1.4, §1.5, §1.9).
//! * `flux` commands or `*.toolkit.fluxcd.io` objects without needing the Flux bootstrap.
//! * A `crd:` check for a CRD that nothing before it installs.
//! * A `flow:` check before the Cilium install of a plan that installs Cilium: without the CNI the
//!   probe pod never runs, and without Cilium no CiliumNetworkPolicy is enforced.

use crate::dag::{Unit, Work};
use crate::error::UserError;
use crate::spec::phase::ActionSpec;

use super::context::{Ctx, Role, SimpleCmd, commands, has_flag, positionals, roles};
use super::{Finding, helm, talos};

const RULE: &str = "order";

fn talosctl_valued(f: &str) -> bool {
    matches!(
        f,
        "-n" | "--nodes"
            | "-e"
            | "--endpoints"
            | "--talosconfig"
            | "--context"
            | "--cluster"
            | "--wait-timeout"
            | "--control-plane-nodes"
            | "--worker-nodes"
            | "--init-node"
            | "--k8s-endpoint"
            | "-o"
            | "--output"
            | "--file"
            | "-f"
            | "-m"
            | "--mode"
    )
}

fn talos_sub(c: &SimpleCmd) -> Option<String> {
    (c.tool() == "talosctl").then(|| {
        positionals(&c.argv, &talosctl_valued)
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default()
    })
}

fn is_bootstrap(u: &Unit) -> bool {
    commands(&u.run)
        .iter()
        .any(|c| talos_sub(c).as_deref() == Some("bootstrap"))
}

fn installs_cni(u: &Unit) -> bool {
    commands(&u.run).iter().any(|c| {
        helm::is_cilium_chart(&c.argv)
            || (c.tool() == "cilium"
                && matches!(
                    c.argv.get(1).map(String::as_str),
                    Some("install" | "upgrade")
                ))
    })
}

fn installs_cilium(u: &Unit) -> bool {
    installs_cni(u)
}

fn is_flux_bootstrap(u: &Unit) -> bool {
    commands(&u.run).iter().any(|c| {
        c.tool() == "flux"
            && matches!(
                positionals(&c.argv, &|_| false).first(),
                Some(&"bootstrap") | Some(&"install")
            )
    })
}

/// Steps that could install CRDs: Helm, kubectl apply/create, Flux (anything in Git), cilium.
fn installs_something(u: &Unit) -> bool {
    is_flux_bootstrap(u)
        || installs_cni(u)
        || commands(&u.run).iter().any(|c| match c.tool() {
            "helm" => c.argv.iter().any(|a| a == "install" || a == "upgrade"),
            "kubectl" => c
                .argv
                .iter()
                .any(|a| a == "apply" || a == "create" || a == "replace"),
            _ => false,
        })
}

fn flux_group(api_version: &str) -> bool {
    api_version
        .split('/')
        .next()
        .is_some_and(|g| g.ends_with(".toolkit.fluxcd.io"))
}

/// What Flux object or command an action uses, if any.
fn uses_flux(a: &ActionSpec) -> Option<String> {
    match a {
        ActionSpec::Condition(c) if flux_group(&c.api_version) => {
            Some(format!("{} {}", c.kind, c.name))
        }
        ActionSpec::Exists(c) | ActionSpec::Absent(c) if flux_group(&c.api_version) => {
            Some(format!("{} {}", c.kind, c.name))
        }
        ActionSpec::Crd(c) if c.name.ends_with(".toolkit.fluxcd.io") => {
            Some(format!("the CRD {}", c.name))
        }
        ActionSpec::Kustomizations(c) => Some(format!("Kustomizations {}", c.names.join(", "))),
        ActionSpec::Helmreleases(c) => Some(format!("HelmReleases {}", c.names.join(", "))),
        ActionSpec::Field(c) if flux_group(&c.api_version) => {
            Some(format!("{} {}", c.kind, c.name))
        }
        _ => commands(a).into_iter().find_map(|c| {
            if c.tool() != "flux" {
                return None;
            }
            let pos = positionals(&c.argv, &|f| {
                matches!(
                    f,
                    "-n" | "--namespace" | "--context" | "--kubeconfig" | "--timeout"
                )
            });
            match pos.first().copied() {
                None | Some("bootstrap" | "install" | "version" | "completion" | "help") => None,
                Some("check") if has_flag(&c.argv, &["--pre"]) => None,
                Some(sub) => Some(format!("flux {sub}")),
            }
        }),
    }
}

/// The cluster a Kubernetes check addresses (its `cluster:` or the step's).
fn check_cluster(a: &ActionSpec, default: Option<&str>) -> Option<String> {
    let explicit = match a {
        ActionSpec::Nodes(n) => n.cluster.clone(),
        ActionSpec::Rollout(r) => r.cluster.clone(),
        ActionSpec::Condition(c) => c.cluster.clone(),
        ActionSpec::Exists(c) | ActionSpec::Absent(c) => c.cluster.clone(),
        ActionSpec::Crd(c) => c.cluster.clone(),
        ActionSpec::Field(c) => c.cluster.clone(),
        ActionSpec::Kustomizations(c) | ActionSpec::Helmreleases(c) => c.cluster.clone(),
        ActionSpec::HelmValues(c) => c.cluster.clone(),
        ActionSpec::Flow(c) => c.from.cluster.clone(),
        _ => None,
    };
    explicit.or(default.map(String::from))
}

fn waits_ready(a: &ActionSpec) -> Option<&'static str> {
    match a {
        ActionSpec::Nodes(n) if n.ready => Some("nodes: { ready: true }"),
        _ => commands(a).into_iter().find_map(|c| {
            if c.tool() == "kubectl"
                && c.argv.iter().any(|x| x == "wait")
                && c.argv.iter().any(|x| x.contains("condition=Ready"))
                && c.argv.iter().any(|x| x.starts_with("node") || x == "--all")
            {
                Some("kubectl wait --for=condition=Ready nodes")
            } else if talos_sub(&c).as_deref() == Some("health") {
                Some("talosctl health (it waits for every node to be Ready)")
            } else {
                None
            }
        }),
    }
}

struct Place<'a> {
    index: usize,
    unit: Option<&'a Unit>,
    cluster: Option<String>,
    role: Role,
    action: &'a ActionSpec,
    gate_item: Option<String>,
}

fn places<'a>(cx: &Ctx<'a>) -> Vec<Place<'a>> {
    let mut out = Vec::new();
    for (i, w) in cx.dag.work.iter().enumerate() {
        match w {
            Work::Step(u) => {
                for (role, a) in roles(w) {
                    out.push(Place {
                        index: i,
                        unit: Some(u),
                        cluster: check_cluster(a, u.cluster.as_deref()),
                        role,
                        action: a,
                        gate_item: None,
                    });
                }
            }
            Work::Gate(g) => {
                for item in &g.items {
                    out.push(Place {
                        index: i,
                        unit: None,
                        cluster: check_cluster(&item.check, item.cluster.as_deref()),
                        role: Role::Gate,
                        action: &item.check,
                        gate_item: Some(item.id.clone()),
                    });
                }
            }
        }
    }
    out
}

fn finding_at(cx: &Ctx, p: &Place, needles: &[&str], msg: String, help: &str) -> UserError {
    match (p.unit, &p.gate_item) {
        (Some(u), _) => cx.on_step(u, p.role.field(), needles, msg).help(help),
        (None, Some(item)) => {
            let phase = cx.dag.work[p.index].phase();
            let (file, line, col) = cx.gate_item_at(phase, item);
            UserError::new(msg)
                .in_file(file)
                .at(line, col)
                .field(format!(
                    "gate.{}.check",
                    item.split('/').next().unwrap_or(item)
                ))
                .help(help)
                .with_source_line()
        }
        _ => UserError::new(msg).help(help),
    }
}

fn name_of(cx: &Ctx, p: &Place) -> String {
    match (p.unit, &p.gate_item) {
        (Some(u), _) => format!("step {:?}", u.step),
        (None, Some(item)) => format!(
            "gate item {:?} of phase {}",
            item.split('/').next().unwrap_or(item),
            cx.dag.work[p.index].phase()
        ),
        _ => "a step".into(),
    }
}

pub(super) fn findings(cx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    let units: Vec<(usize, &Unit)> = cx.units().collect();
    let same_cluster =
        |u: &Unit, c: &Option<String>| c.is_none() || u.cluster.is_none() || u.cluster == *c;
    let cni_none: Vec<String> = talos::facts_by_cluster(cx)
        .into_iter()
        .filter(|(_, f, _, _)| f.cni.as_ref().is_some_and(|v| v.value == "none"))
        .map(|(c, _, _, _)| c)
        .collect();
    for p in places(cx) {
        let anc = cx.ancestors(p.index);
        let before = |pred: &dyn Fn(&Unit) -> bool| {
            units
                .iter()
                .any(|(i, u)| anc.contains(i) && same_cluster(u, &p.cluster) && pred(u))
        };
        let exists = |pred: &dyn Fn(&Unit) -> bool| {
            units
                .iter()
                .any(|(_, u)| same_cluster(u, &p.cluster) && pred(u))
        };
        let acts = p.role != Role::Check;
        // 1. Ready nodes before the CNI.
        if acts
            && let Some(what) = waits_ready(p.action)
            && p.cluster.as_ref().is_some_and(|c| cni_none.contains(c))
            && !p.unit.is_some_and(installs_cni)
            && !before(&installs_cni)
        {
            out.push(Finding::error(
                RULE,
                finding_at(
                    cx,
                    &p,
                    &["ready: true", "health", "condition=Ready", "nodes:"],
                    format!(
                        "{} waits for Ready nodes on {} before any CNI is installed: the Talos patches say cni: none, so the nodes stay NotReady (\"cni plugin not initialized\") and this never finishes ({what})",
                        name_of(cx, &p),
                        p.cluster.as_deref().unwrap_or("the cluster")
                    ),
                    if exists(&installs_cni) {
                        "wait only for registration here (nodes: { ready: false }) and for Ready in a step that needs the CNI install (needs: [cilium-install])"
                    } else {
                        "add a step that installs Cilium (helm upgrade --install cilium …) and make this one need it"
                    },
                ),
            ));
        }
        // 2. talosctl health / etcd before the bootstrap.
        if acts && !p.unit.is_some_and(is_bootstrap) {
            for c in commands(p.action) {
                let Some(sub) = talos_sub(&c) else { continue };
                if (sub == "health" || sub == "etcd")
                    && exists(&is_bootstrap)
                    && !before(&is_bootstrap)
                {
                    out.push(Finding::error(
                        RULE,
                        finding_at(
                            cx,
                            &p,
                            &[&sub],
                            format!(
                                "{} runs talosctl {sub} on {} without needing the etcd bootstrap: before `talosctl bootstrap` there is no etcd to ask",
                                name_of(cx, &p),
                                p.cluster.as_deref().unwrap_or("the cluster")
                            ),
                            "add the bootstrap step to its needs (needs: [talos-bootstrap])",
                        ),
                    ));
                }
            }
        }
        // 3. Flux without the Flux bootstrap.
        if acts
            && !p.unit.is_some_and(is_flux_bootstrap)
            && let Some(what) = uses_flux(p.action)
            && !before(&is_flux_bootstrap)
        {
            let needle = what.split(' ').nth(1).unwrap_or("flux").to_string();
            out.push(Finding::error(
                RULE,
                finding_at(
                    cx,
                    &p,
                    &[&needle, "toolkit.fluxcd.io", "flux"],
                    format!(
                        "{} uses {what} on {} but does not need the Flux bootstrap: its controllers and CRDs are not there yet",
                        name_of(cx, &p),
                        p.cluster.as_deref().unwrap_or("the cluster")
                    ),
                    if exists(&is_flux_bootstrap) {
                        "add the Flux bootstrap step to its needs (needs: [flux-bootstrap])"
                    } else {
                        "add a step that runs flux bootstrap and make this one need it"
                    },
                ),
            ));
        }
        // 4. A CRD nothing before installs.
        if acts && let ActionSpec::Crd(c) = p.action {
            let group = c.name.split_once('.').map(|(_, g)| g).unwrap_or("");
            let (ok, installer) = if group.ends_with("toolkit.fluxcd.io") {
                (before(&is_flux_bootstrap), "the Flux bootstrap")
            } else if group == "cilium.io" {
                (before(&installs_cilium), "the Cilium install")
            } else {
                (
                    before(&installs_something),
                    "a step that installs it (helm, kubectl apply, or Flux)",
                )
            };
            if !ok {
                out.push(Finding::error(
                    RULE,
                    finding_at(
                        cx,
                        &p,
                        &[&c.name, "crd:"],
                        format!(
                            "{} waits for the CRD {} on {}, but nothing it needs installs it",
                            name_of(cx, &p),
                            c.name,
                            p.cluster.as_deref().unwrap_or("the cluster")
                        ),
                        &format!("make it need {installer}"),
                    ),
                ));
            }
        }
        // 5. A network flow before the CNI that enforces the policies.
        if acts
            && let ActionSpec::Flow(f) = p.action
            && exists(&installs_cilium)
            && !before(&installs_cilium)
        {
            out.push(Finding::error(
                RULE,
                finding_at(
                    cx,
                    &p,
                    &["flow:", "flow"],
                    format!(
                        "{} probes the flow {} on {} but does not need the Cilium install: the probe pod cannot run before the CNI, and no CiliumNetworkPolicy is enforced yet",
                        name_of(cx, &p),
                        f.describe(),
                        p.cluster.as_deref().unwrap_or("the cluster")
                    ),
                    "make it need the Cilium install (needs: [cilium-install]), or move it to a later phase's gate",
                ),
            ));
        }
    }
    out
}
