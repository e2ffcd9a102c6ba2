//! `bootstrap lint`: meaning checks on the plan and phases (names, ids, CIDRs, files, templates, tools).
//!
//! Owns the rules and their findings, each with file, line, what is wrong and what would fix it. It
//! never changes files and never contacts anything.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde_saphyr::Spanned;

use crate::cli::{Global, LintArgs};
use crate::dag::{Dag, Work};
use crate::error::{Exit, Result, UserError, UserErrors};
use crate::spec::load::Spec;
use crate::spec::phase::ActionSpec;
use crate::spec::plan::Plan;
use crate::workspace::state_dir_for;

/// `bootstrap lint`.
pub fn lint_command(g: &Global, a: &LintArgs) -> Result<Exit> {
    let spec = crate::spec::load_spec(&g.plan, &g.phases)?;
    let state_dir = state_dir_for(g, &spec.plan.name.value);
    let mut findings = plan_findings(&spec.plan, &spec.plan_file);
    match Dag::build(&spec, &state_dir) {
        Ok(dag) => {
            findings.extend(step_file_findings(&spec, &dag, &state_dir));
            if a.tools {
                match dag.select(&a.selection.phases, &a.selection.steps) {
                    Ok(sel) => findings.extend(tool_findings(&spec, &dag, &sel.order)),
                    Err(e) => findings.push(e),
                }
            }
        }
        Err(errs) => findings.extend(errs.0),
    }
    if findings.is_empty() {
        if !g.quiet {
            println!(
                "lint: no problems in {} and {} phase file(s)",
                spec.plan_file.display(),
                spec.phases.len()
            );
        }
        Ok(Exit::Ok)
    } else {
        let n = findings.len();
        Err(color_eyre::Report::new(UserErrors(findings))
            .wrap_err(format!("lint found {n} problem(s)")))
    }
}

/// The lint errors of a loaded workspace: what `plan` and `run` refuse to go on with (exit 2)
/// before anything runs. (`--tools` is not part of it: preflight is its own step.)
pub fn errors(spec: &Spec, dag: &Dag, state_dir: &Path) -> Vec<UserError> {
    let mut findings = plan_findings(&spec.plan, &spec.plan_file);
    findings.extend(step_file_findings(spec, dag, state_dir));
    findings
}

fn at<T>(e: UserError, file: &Path, s: &Spanned<T>) -> UserError {
    e.in_file(file)
        .at(s.referenced.line(), s.referenced.column())
        .with_source_line()
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Secrets must be `op://vault/item/field` references (also enforced when a plan is loaded).
pub fn secret_findings(plan: &Plan, file: &Path) -> Vec<UserError> {
    let mut out = Vec::new();
    for (name, value) in &plan.secrets {
        if !crate::secrets::is_reference(&value.value) {
            // Never echo the value: it may be a real secret.
            out.push(at(
                UserError::new("a secret must be a 1Password reference, not a literal value")
                    .field(format!("secrets.{name}"))
                    .help("store the value in 1Password and write its reference, e.g. op://vault/item/field"),
                file,
                value,
            ));
        }
    }
    out
}

/// Rules on the plan alone.
pub fn plan_findings(plan: &Plan, file: &Path) -> Vec<UserError> {
    let mut out = secret_findings(plan, file);
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ids: HashMap<u32, usize> = HashMap::new();
    for (i, c) in plan.clusters.iter().enumerate() {
        let name = c.name.value.as_str();
        if name == "default" {
            out.push(at(
                UserError::new("a cluster may not be named \"default\": Cluster Mesh refuses it")
                    .field(format!("clusters[{i}].name"))
                    .help("choose a unique name such as infra or apps"),
                file,
                &c.name,
            ));
        }
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
        {
            out.push(at(
                UserError::new(format!("cluster name {name:?} is not valid for Cilium"))
                    .field(format!("clusters[{i}].name"))
                    .help("use at most 32 lower-case letters, digits and '-'"),
                file,
                &c.name,
            ));
        }
        if let Some(&j) = names.get(name) {
            out.push(at(
                UserError::new(format!(
                    "cluster name {name:?} is used twice (also clusters[{j}])"
                ))
                .field(format!("clusters[{i}].name"))
                .help("give every cluster a unique name"),
                file,
                &c.name,
            ));
        } else {
            names.insert(name, i);
        }
        let id = c.id.value;
        if !(1..=255).contains(&id) {
            out.push(at(
                UserError::new(format!("cluster id {id} is out of range"))
                    .field(format!("clusters[{i}].id"))
                    .help("use a Cilium cluster id from 1 to 255"),
                file,
                &c.id,
            ));
        }
        if let Some(&j) = ids.get(&id) {
            out.push(at(
                UserError::new(format!(
                    "cluster id {id} is used twice (also clusters[{j}])"
                ))
                .field(format!("clusters[{i}].id"))
                .help("give every cluster a unique id from 1 to 255"),
                file,
                &c.id,
            ));
        } else {
            ids.insert(id, i);
        }
        let ep = &c.endpoint.value;
        let ok = ep.strip_prefix("https://").is_some_and(|rest| {
            rest.rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        });
        if !ok {
            out.push(at(
                UserError::new(format!("endpoint {ep:?} is not an https URL with a port"))
                    .field(format!("clusters[{i}].endpoint"))
                    .help("write it as talosctl expects, e.g. https://10.25.11.11:6443"),
                file,
                &c.endpoint,
            ));
        }
        if !c.service_cidr.value.contains(&c.dns_ip.value) {
            out.push(at(
                UserError::new(format!(
                    "CoreDNS IP {} is outside the service CIDR {}",
                    c.dns_ip.value, c.service_cidr.value
                ))
                .field(format!("clusters[{i}].dns_ip"))
                .help(format!(
                    "pick an address inside {}, conventionally its tenth (e.g. {})",
                    c.service_cidr.value,
                    nth(&c.service_cidr.value, 10)
                )),
                file,
                &c.dns_ip,
            ));
        }
        if c.nodes.is_empty() {
            out.push(
                UserError::new("a cluster needs at least one node")
                    .in_file(file)
                    .at(c.name.referenced.line(), c.name.referenced.column())
                    .field(format!("clusters[{i}].nodes"))
                    .help("list the cluster's nodes with name, ip and role"),
            );
        }
    }

    // Networks: no overlap within or across clusters.
    let mut nets: Vec<(String, &Spanned<Ipv4Net>)> = Vec::new();
    for (i, c) in plan.clusters.iter().enumerate() {
        nets.push((format!("clusters[{i}].pod_cidr"), &c.pod_cidr));
        nets.push((format!("clusters[{i}].service_cidr"), &c.service_cidr));
    }
    for (a, (fa, na)) in nets.iter().enumerate() {
        for (fb, nb) in nets.iter().skip(a + 1) {
            if overlaps(&na.value, &nb.value) {
                out.push(at(
                    UserError::new(format!("{} ({fb}) overlaps {} ({fa})", nb.value, na.value))
                        .field(fb.clone())
                        .help("give every pod and service CIDR its own range; Cluster Mesh needs non-overlapping pod CIDRs"),
                    file,
                    nb,
                ));
            }
        }
    }
    let mut ips: HashMap<std::net::Ipv4Addr, String> = HashMap::new();
    for (i, c) in plan.clusters.iter().enumerate() {
        for (k, n) in c.nodes.iter().enumerate() {
            let field = format!("clusters[{i}].nodes[{k}].ip");
            if let Some(other) = ips.get(&n.ip.value) {
                out.push(at(
                    UserError::new(format!(
                        "node IP {} is used twice (also {other})",
                        n.ip.value
                    ))
                    .field(field.clone())
                    .help("give every node its own address"),
                    file,
                    &n.ip,
                ));
            } else {
                ips.insert(n.ip.value, field.clone());
            }
            for (fname, net) in &nets {
                if net.value.contains(&n.ip.value) {
                    out.push(at(
                        UserError::new(format!(
                            "node IP {} lies inside {} ({fname})",
                            n.ip.value, net.value
                        ))
                        .field(field.clone())
                        .help("node addresses must be outside every pod and service CIDR"),
                        file,
                        &n.ip,
                    ));
                }
            }
        }
    }

    // Mesh.
    if plan.mesh.enabled {
        match &plan.mesh.native_routing_cidr {
            None => out.push(
                UserError::new("the mesh is enabled but has no native routing CIDR")
                    .in_file(file)
                    .field("mesh.native_routing_cidr")
                    .help(format!(
                        "set one that covers every pod CIDR, e.g. {}",
                        covering(plan)
                    )),
            ),
            Some(nr) => {
                for (i, c) in plan.clusters.iter().enumerate() {
                    let pod = c.pod_cidr.value;
                    if !(nr.value.contains(&pod.network())
                        && nr.value.prefix_len() <= pod.prefix_len())
                    {
                        out.push(at(
                            UserError::new(format!(
                                "native routing CIDR {} does not cover clusters[{i}].pod_cidr {pod}",
                                nr.value
                            ))
                            .field("mesh.native_routing_cidr")
                            .help(format!("use a CIDR that covers every cluster's pod CIDR, e.g. {}", covering(plan))),
                            file,
                            nr,
                        ));
                    }
                }
            }
        }
        let st = plan.mesh.apiserver.service_type.as_str();
        if st != "NodePort" && st != "LoadBalancer" {
            out.push(
                UserError::new(format!(
                    "clustermesh-apiserver service type {st:?} is not valid"
                ))
                .in_file(file)
                .field("mesh.apiserver.service_type")
                .help("use NodePort (bare metal) or LoadBalancer"),
            );
        }
    }

    // Files the plan references.
    let base = file
        .parent()
        .map(|p| p.parent().unwrap_or(p))
        .unwrap_or(Path::new("."));
    for (kind, map) in [
        ("patches", &plan.paths.patches),
        ("files", &plan.paths.files),
    ] {
        for (name, path) in map {
            if !resolve(base, &path.value).exists() {
                out.push(at(
                    UserError::new(format!("file {:?} does not exist", path.value))
                        .field(format!("paths.{kind}.{name}"))
                        .help("create the file or correct the path (relative paths are read from the working directory)"),
                    file,
                    path,
                ));
            }
        }
    }
    out
}

fn resolve(_base: &Path, p: &str) -> PathBuf {
    PathBuf::from(p)
}

fn nth(net: &Ipv4Net, n: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(net.network()).wrapping_add(n))
}

/// The smallest CIDR covering every pod CIDR (for the fix hint).
fn covering(plan: &Plan) -> String {
    let pods: Vec<Ipv4Net> = plan.clusters.iter().map(|c| c.pod_cidr.value).collect();
    let Some(first) = pods.first() else {
        return "10.244.0.0/14".into();
    };
    let mut len = first.prefix_len();
    loop {
        let cand = Ipv4Net::new(first.network(), len).map(|n| n.trunc()).ok();
        if let Some(c) = cand
            && pods
                .iter()
                .all(|p| c.contains(&p.network()) && c.prefix_len() <= p.prefix_len())
        {
            return c.to_string();
        }
        if len == 0 {
            return "0.0.0.0/0".into();
        }
        len -= 1;
    }
}

fn actions(w: &Work) -> Vec<&ActionSpec> {
    match w {
        Work::Step(u) => {
            let mut v = vec![&u.run];
            v.extend(u.check.iter());
            v.extend(u.verify.iter());
            v
        }
        Work::Gate(g) => g.items.iter().map(|i| &i.check).collect(),
    }
}

fn argv_of(a: &ActionSpec) -> Option<&[String]> {
    match a {
        ActionSpec::Cmd(v) => Some(v),
        ActionSpec::Json(j) => Some(&j.cmd),
        _ => None,
    }
}

/// Files steps reference: `@file` arguments, and commands given as a relative path (scripts/…).
fn step_file_findings(spec: &Spec, dag: &Dag, state_dir: &Path) -> Vec<UserError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for w in &dag.work {
        let Some(u) = w.as_step() else { continue };
        for a in actions(w) {
            let Some(argv) = argv_of(a) else { continue };
            let mut refs: Vec<&str> = argv
                .iter()
                .filter_map(|s| s.strip_prefix('@'))
                .filter(|s| !s.is_empty() && !s.contains(['{', ' ', '\n']))
                .collect();
            if let Some(cmd) = argv.first()
                && cmd.contains('/')
                && !cmd.starts_with('/')
            {
                refs.push(cmd.as_str());
            }
            for r in refs {
                let p = Path::new(r);
                if p.starts_with(state_dir) {
                    continue; // generated by an earlier step
                }
                if !p.exists() && seen.insert((u.step.clone(), r.to_string())) {
                    out.push(
                        UserError::new(format!("step {:?} references {r:?}, which does not exist", u.step))
                            .in_file(&u.file)
                            .at(u.line, 1)
                            .field(format!("steps.{}", u.step))
                            .help("create the file or correct the path (paths are relative to the working directory)")
                            .with_source_line(),
                    );
                }
            }
        }
    }
    let _ = spec;
    out
}

/// `--tools`: every tool the selected steps run is on PATH (or, for a lab plan, stood in for by the lab).
fn tool_findings(spec: &Spec, dag: &Dag, order: &[usize]) -> Vec<UserError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for &i in order {
        let w = &dag.work[i];
        for a in actions(w) {
            let tool = match a {
                ActionSpec::Shell(_) => Some("sh".to_string()),
                other => argv_of(other).and_then(|v| v.first().cloned()),
            };
            let Some(tool) = tool else { continue };
            if !seen.insert(tool.clone()) {
                continue;
            }
            if spec.plan.lab && crate::lab::tools::TOOLS.contains(&tool.as_str()) {
                continue;
            }
            if !on_path(&tool) {
                let (file, line) = match w {
                    Work::Step(u) => (u.file.clone(), u.line),
                    Work::Gate(_) => (
                        dag.phases
                            .iter()
                            .find(|p| p.id == w.phase())
                            .map(|p| p.file.clone())
                            .unwrap_or_default(),
                        0,
                    ),
                };
                let mut e =
                    UserError::new(format!("{tool:?} is not on PATH (needed by {})", w.id()))
                        .in_file(file)
                        .help(format!("install {tool} or add its directory to PATH"));
                if line > 0 {
                    e = e.at(line, 1).with_source_line();
                }
                out.push(e);
            }
        }
    }
    out
}

fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if tool.contains('/') {
        return is_exec(Path::new(tool));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| is_exec(&d.join(tool))))
}
