//! Versions that disagree: `versions.cilium` (the agent, the CLI, the checks) against
//! `versions.charts.cilium` (what Helm installs); a step pinning a literal version other than the
//! plan's; one object kind addressed under two apiVersions across phases.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::UserError;
use crate::spec::load::Spec;
use crate::spec::phase::ActionSpec;

use super::context::{Ctx, Role, commands, flag_values, locate_plain, roles};
use super::{Finding, helm};

const RULE: &str = "versions";

fn norm(v: &str) -> &str {
    v.trim().trim_start_matches('v')
}

/// The line of `key:` inside the block that starts at `block:` (searching from `after`).
fn key_in(text: &str, blocks: &[&str]) -> (u64, u64) {
    let mut line = 1;
    let mut col = 1;
    for b in blocks {
        let needle = format!("{b}:");
        let mut found = false;
        for (n, l) in text.lines().enumerate().skip(line as usize - 1) {
            let t = l.trim_start();
            if t.starts_with(&needle) && !l.trim_start().starts_with('#') {
                line = n as u64 + 1;
                col = (l.len() - t.len()) as u64 + 1;
                found = true;
                break;
            }
        }
        if !found {
            return locate_plain(text, 1, &needle);
        }
    }
    (line, col)
}

pub(super) fn plan_version_findings(spec: &Spec) -> Vec<Finding> {
    let mut out = Vec::new();
    let v = &spec.plan.versions;
    if let Some(chart) = v.charts.get("cilium")
        && norm(chart) != norm(&v.cilium)
    {
        let (line, col) = key_in(&spec.plan_text, &["versions", "charts", "cilium"]);
        out.push(Finding::error(
            RULE,
            UserError::new(format!(
                "the Cilium chart {chart} disagrees with versions.cilium {}: Helm installs the chart's agent, while cilium-cli and the checks expect {}",
                v.cilium, v.cilium
            ))
            .in_file(&spec.plan_file)
            .at(line, col)
            .field("versions.charts.cilium")
            .help(format!(
                "pin one version in both places (the chart version is the Cilium version), e.g. {}",
                v.cilium
            ))
            .with_source_line(),
        ));
    }
    out
}

pub(super) fn findings(cx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    let v = &cx.spec.plan.versions;
    // Literal versions in steps that disagree with the plan.
    for (i, u) in cx.units() {
        for (role, a) in roles(&cx.dag.work[i]) {
            for c in commands(a) {
                let mut pins: Vec<(&str, &str, String, &str)> = Vec::new();
                if helm::is_cilium_chart(&c.argv)
                    && let Some(want) = v.charts.get("cilium")
                {
                    for got in flag_values(&c.argv, &["--version"]) {
                        pins.push((
                            "--version",
                            got,
                            want.clone(),
                            "{{ versions.charts.cilium }}",
                        ));
                    }
                }
                if c.tool() == "cilium"
                    && matches!(
                        c.argv.get(1).map(String::as_str),
                        Some("install" | "upgrade")
                    )
                {
                    for got in flag_values(&c.argv, &["--version"]) {
                        pins.push(("--version", got, v.cilium.clone(), "{{ versions.cilium }}"));
                    }
                }
                if c.tool() == "talosctl" {
                    for got in flag_values(&c.argv, &["--talos-version"]) {
                        pins.push((
                            "--talos-version",
                            got,
                            v.talos.clone(),
                            "{{ versions.talos }}",
                        ));
                    }
                    for got in flag_values(&c.argv, &["--kubernetes-version"]) {
                        pins.push((
                            "--kubernetes-version",
                            got,
                            v.kubernetes.clone(),
                            "{{ versions.kubernetes }}",
                        ));
                    }
                }
                for (flag, got, want, tmpl) in pins {
                    if norm(got) != norm(&want) {
                        out.push(Finding::error(
                            RULE,
                            cx.on_step(
                                u,
                                role.field(),
                                &[got, flag],
                                format!(
                                    "{} {flag} {got} disagrees with the plan's {want}",
                                    c.tool()
                                ),
                            )
                            .help(format!(
                                "write {flag} \"{tmpl}\" so the plan pins one version"
                            )),
                        ));
                    }
                }
            }
        }
    }
    // One kind, two apiVersions.
    let mut seen: BTreeMap<(String, String), (String, PathBuf, u64)> = BTreeMap::new();
    for (i, w) in cx.dag.work.iter().enumerate() {
        let items: Vec<(Role, &ActionSpec, Option<String>)> = match w {
            crate::dag::Work::Step(_) => roles(w).into_iter().map(|(r, a)| (r, a, None)).collect(),
            crate::dag::Work::Gate(g) => g
                .items
                .iter()
                .map(|it| (Role::Gate, &it.check, Some(it.id.clone())))
                .collect(),
        };
        for (role, a, gate_item) in items {
            let (api, kind) = match a {
                ActionSpec::Condition(c) => (&c.api_version, &c.kind),
                ActionSpec::Field(c) => (&c.api_version, &c.kind),
                ActionSpec::Exists(c) | ActionSpec::Absent(c) => (&c.api_version, &c.kind),
                _ => continue,
            };
            let (group, _) = api.rsplit_once('/').unwrap_or(("", api));
            let key = (group.to_string(), kind.clone());
            let (file, line, col, field) = match (w.as_step(), &gate_item) {
                (Some(u), _) => {
                    let e = cx.on_step(u, role.field(), &[api.as_str()], String::new());
                    (
                        u.file.clone(),
                        e.line.unwrap_or(u.line),
                        e.column.unwrap_or(1),
                        format!("steps.{}.{}", u.step, role.field()),
                    )
                }
                (None, Some(item)) => {
                    let (f, l, c) = cx.gate_item_at(w.phase(), item);
                    let base = item.split('/').next().unwrap_or(item).to_string();
                    (f, l, c, format!("gate.{base}.check"))
                }
                _ => continue,
            };
            let _ = i;
            match seen.get(&key) {
                Some((first, ffile, fline)) if first != api => {
                    out.push(Finding::error(
                        RULE,
                        UserError::new(format!(
                            "{kind} is addressed as {api} here but as {first} at {}:{fline}",
                            ffile.display()
                        ))
                        .in_file(&file)
                        .at(line, col)
                        .field(field)
                        .help(format!(
                            "use one apiVersion for {kind} everywhere: the one the installed controller serves (for Flux 2.x: kustomize.toolkit.fluxcd.io/v1, helm.toolkit.fluxcd.io/v2, source.toolkit.fluxcd.io/v1)"
                        ))
                        .with_source_line(),
                    ));
                }
                Some(_) => {}
                None => {
                    seen.insert(key, (api.clone(), file, line));
                }
            }
        }
    }
    out
}
