//! The Talos patches, read: what each cluster's machine config will say about its CNI, kube-proxy,
//! pod and service subnets and CoreDNS, from the `talosctl gen config` steps' `--config-patch`
//! arguments (files and inline patches, in order) or, without such a step, the plan's patch files.
//!
//! Facts (Talos docs, "Deploying Cilium CNI" and the machine config reference
//! `cluster.network.{cni.name,podSubnets,serviceSubnets}`, `cluster.proxy.disabled`,
//! `cluster.coreDNS.disabled`): the default CNI is flannel, kube-proxy runs unless disabled, the
//! default pod subnet is 10.244.0.0/16 and the default service subnet 10.96.0.0/12.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::dag::Unit;
use crate::error::UserError;

use super::context::{Ctx, commands, flag_values, positionals};
use super::{Finding, helm};

const RULE: &str = "talos-patches";

const DEFAULT_POD_SUBNET: &str = "10.244.0.0/16";
const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";

/// Where a patch value was written.
#[derive(Debug, Clone)]
pub struct Loc {
    pub file: PathBuf,
    pub line: u64,
    pub col: u64,
    pub field: String,
}

impl Loc {
    pub fn error(&self, msg: String) -> UserError {
        UserError::new(msg)
            .in_file(crate::spec::plan::shown(&self.file))
            .at(self.line, self.col)
            .field(self.field.clone())
            .with_source_line()
    }
}

/// One patch value with where it came from.
#[derive(Debug, Clone)]
pub struct Val<T> {
    pub value: T,
    pub loc: Loc,
}

/// What the patches of one machine config say.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub cni: Option<Val<String>>,
    pub proxy_disabled: Option<Val<bool>>,
    pub pod_subnets: Option<Val<Vec<String>>>,
    pub service_subnets: Option<Val<Vec<String>>>,
    pub coredns_disabled: Option<Val<bool>>,
    pub cluster_name: Option<Val<String>>,
}

/// A `talosctl gen config` step for one cluster, as rendered.
pub struct GenConfig<'a> {
    pub unit: &'a Unit,
    pub cluster: String,
    pub name: Option<String>,
    pub endpoint: Option<String>,
    pub with_secrets: Option<String>,
    pub facts: Facts,
    /// Whether the patches could all be read (files exist and parse).
    pub complete: bool,
}

fn talosctl_valued(f: &str) -> bool {
    matches!(
        f,
        "-o" | "--output"
            | "-t"
            | "--output-types"
            | "--with-secrets"
            | "--config-patch"
            | "--config-patch-control-plane"
            | "--config-patch-worker"
            | "--kubernetes-version"
            | "--talos-version"
            | "--install-disk"
            | "--install-image"
            | "--additional-sans"
            | "--dns-domain"
            | "-n"
            | "--nodes"
            | "-e"
            | "--endpoints"
            | "--talosconfig"
            | "--context"
            | "--registry-mirror"
            | "--version-contract"
            | "-p"
    )
}

/// Parse YAML or JSON into a JSON value (the first document of a stream).
fn parse_doc(text: &str) -> Option<Value> {
    serde_saphyr::from_str::<Value>(text).ok().or_else(|| {
        text.split("\n---")
            .find(|d| !d.trim().is_empty())
            .and_then(|d| serde_saphyr::from_str::<Value>(d).ok())
    })
}

/// The line and column of `key:` (or `"key"`) in `text`, searching after the line of each parent key.
fn key_line(text: &str, path: &[&str]) -> (u64, u64) {
    let mut from = 0usize;
    let mut found = (1, 1);
    for key in path {
        for (n, l) in text.lines().enumerate().skip(from) {
            let t = l.trim_start();
            let t = t.trim_start_matches("- ");
            if t.starts_with(&format!("{key}:"))
                || t.starts_with(&format!("\"{key}\":"))
                || l.contains(&format!("\"{key}\":"))
            {
                let col = l.find(key).unwrap_or(0);
                found = (n as u64 + 1, col as u64 + 1);
                from = n;
                break;
            }
        }
    }
    found
}

fn merge_facts(facts: &mut Facts, doc: &Value, loc_of: &dyn Fn(&[&str]) -> Loc) {
    let get = |p: &[&str]| -> Option<&Value> {
        let mut v = doc;
        for k in p {
            v = v.get(*k)?;
        }
        Some(v)
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(v) = get(&["cluster", "network", "cni", "name"]).and_then(Value::as_str) {
        facts.cni = Some(Val {
            value: v.to_string(),
            loc: loc_of(&["cluster", "network", "cni", "name"]),
        });
    }
    if let Some(v) = get(&["cluster", "proxy", "disabled"]).and_then(Value::as_bool) {
        facts.proxy_disabled = Some(Val {
            value: v,
            loc: loc_of(&["cluster", "proxy", "disabled"]),
        });
    }
    if let Some(v) = get(&["cluster", "network", "podSubnets"]) {
        facts.pod_subnets = Some(Val {
            value: strings(v),
            loc: loc_of(&["cluster", "network", "podSubnets"]),
        });
    }
    if let Some(v) = get(&["cluster", "network", "serviceSubnets"]) {
        facts.service_subnets = Some(Val {
            value: strings(v),
            loc: loc_of(&["cluster", "network", "serviceSubnets"]),
        });
    }
    if let Some(v) = get(&["cluster", "coreDNS", "disabled"]).and_then(Value::as_bool) {
        facts.coredns_disabled = Some(Val {
            value: v,
            loc: loc_of(&["cluster", "coreDNS", "disabled"]),
        });
    }
    if let Some(v) = get(&["cluster", "clusterName"]).and_then(Value::as_str) {
        facts.cluster_name = Some(Val {
            value: v.to_string(),
            loc: loc_of(&["cluster", "clusterName"]),
        });
    }
}

/// Read one patch file into `facts`; false when it cannot be read.
pub fn read_patch_file(facts: &mut Facts, path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let Some(doc) = parse_doc(&text) else {
        return false;
    };
    if doc.is_array() {
        return true; // a JSON 6902 patch: not read here
    }
    let loc_of = |p: &[&str]| {
        let (line, col) = key_line(&text, p);
        Loc {
            file: path.to_path_buf(),
            line,
            col,
            field: p.join("."),
        }
    };
    merge_facts(facts, &doc, &loc_of);
    true
}

/// Every `talosctl gen config` step that writes a machine config, per cluster.
pub fn gen_configs<'a>(cx: &Ctx<'a>) -> Vec<GenConfig<'a>> {
    let mut out = Vec::new();
    for (_, u) in cx.units() {
        let Some(cluster) = &u.cluster else { continue };
        for c in commands(&u.run) {
            if c.tool() != "talosctl" {
                continue;
            }
            let pos = positionals(&c.argv, &talosctl_valued);
            if !pos.starts_with(&["gen", "config"]) {
                continue;
            }
            let types = flag_values(&c.argv, &["-t", "--output-types"]);
            if !types.is_empty()
                && types
                    .iter()
                    .all(|t| t.split(',').all(|t| t.trim() == "talosconfig"))
            {
                continue;
            }
            let mut facts = Facts::default();
            let mut complete = true;
            let phase_text = cx.text_of(&u.file).unwrap_or("");
            for (k, a) in c.argv.iter().enumerate() {
                let is_patch = matches!(
                    a.as_str(),
                    "--config-patch" | "--config-patch-control-plane" | "-p"
                );
                let value = if is_patch {
                    c.argv.get(k + 1).map(String::as_str)
                } else {
                    a.strip_prefix("--config-patch=")
                        .or_else(|| a.strip_prefix("--config-patch-control-plane="))
                };
                let Some(v) = value else { continue };
                if let Some(file) = v.strip_prefix('@') {
                    complete &= read_patch_file(&mut facts, Path::new(file));
                } else if let Some(doc) = parse_doc(v) {
                    let loc_of = |p: &[&str]| {
                        let key = p.last().copied().unwrap_or("");
                        let (line, col) =
                            cx.locate(u, &[&format!("\"{key}\""), key, "--config-patch"]);
                        let _ = phase_text;
                        Loc {
                            file: u.file.clone(),
                            line,
                            col,
                            field: format!("steps.{}.run", u.step),
                        }
                    };
                    merge_facts(&mut facts, &doc, &loc_of);
                } else {
                    complete = false;
                }
            }
            out.push(GenConfig {
                unit: u,
                cluster: cluster.clone(),
                name: pos.get(2).map(|s| s.to_string()),
                endpoint: pos.get(3).map(|s| s.to_string()),
                with_secrets: flag_values(&c.argv, &["--with-secrets"])
                    .first()
                    .map(|s| s.to_string()),
                facts,
                complete,
            });
        }
    }
    out
}

/// Whether some step installs Cilium (helm chart cilium, or `cilium install`), and whether it
/// replaces kube-proxy.
pub fn cilium_install(cx: &Ctx) -> Option<CiliumInstall> {
    let mut found: Option<CiliumInstall> = None;
    for (i, u) in cx.units() {
        for c in commands(&u.run) {
            let is_cli = c.tool() == "cilium"
                && matches!(
                    c.argv.get(1).map(String::as_str),
                    Some("install" | "upgrade")
                );
            let values = if is_cli {
                Some(helm::set_values(&c.argv, &["--set", "--helm-set"]))
            } else if helm::is_cilium_chart(&c.argv) {
                Some(helm::set_values(&c.argv, &["--set", "--set-string"]))
            } else {
                None
            };
            if let Some(values) = values {
                let mut kpr = values
                    .iter()
                    .any(|(k, v)| k == "kubeProxyReplacement" && (v == "true" || v == "strict"));
                for f in helm::values_files(&c.argv) {
                    if let Ok(t) = std::fs::read_to_string(f)
                        && let Some(doc) = parse_doc(&t)
                    {
                        kpr |= matches!(doc.get("kubeProxyReplacement"), Some(Value::Bool(true)))
                            || doc.get("kubeProxyReplacement").and_then(Value::as_str)
                                == Some("true");
                    }
                }
                let e = found.get_or_insert(CiliumInstall {
                    units: Vec::new(),
                    kube_proxy_replacement: false,
                });
                e.units.push(i);
                e.kube_proxy_replacement |= kpr;
            }
        }
    }
    found
}

pub struct CiliumInstall {
    /// Indices of the units that install it.
    pub units: Vec<usize>,
    pub kube_proxy_replacement: bool,
}

/// Per cluster: what the Talos patches say (from gen config steps, else the plan's patch files).
pub fn facts_by_cluster<'a>(cx: &Ctx<'a>) -> Vec<(String, Facts, Option<&'a Unit>, bool)> {
    let gens = gen_configs(cx);
    if !gens.is_empty() {
        return gens
            .into_iter()
            .map(|g| (g.cluster, g.facts, Some(g.unit), g.complete))
            .collect();
    }
    let mut facts = Facts::default();
    let mut any = false;
    for p in cx.spec.plan.paths.patches.values() {
        let file = crate::render::plan_path(&cx.spec.plan, cx.state_dir, &p.value);
        any |= read_patch_file(&mut facts, Path::new(&file));
    }
    if !any {
        return Vec::new();
    }
    cx.spec
        .plan
        .clusters
        .iter()
        .map(|c| (c.name.value.clone(), facts.clone(), None, false))
        .collect()
}

pub(super) fn findings(cx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    let cilium = cilium_install(cx);
    for (cluster, facts, gen_unit, complete) in facts_by_cluster(cx) {
        let Some(pc) = cx.spec.plan.cluster(&cluster) else {
            continue;
        };
        let missing = |what: &str, fix: &str| -> Option<UserError> {
            let u = gen_unit?;
            Some(
                cx.on_step(
                    u,
                    "run",
                    &["--config-patch", "talosctl"],
                    format!("no Talos patch of {cluster}'s machine config sets {what}"),
                )
                .help(fix.to_string()),
            )
        };
        if let Some(ci) = &cilium {
            match &facts.cni {
                Some(v) if v.value != "none" => out.push(Finding::error(
                    RULE,
                    v.loc
                        .error(format!(
                            "the Talos patch sets the CNI to {:?}, but Cilium is installed as the CNI (step {})",
                            v.value,
                            cx.dag.work[ci.units[0]].id()
                        ))
                        .help("set cluster.network.cni.name: none so that Talos installs no CNI of its own"),
                )),
                None if complete => {
                    if let Some(e) = missing(
                        "cluster.network.cni.name: none, so Talos installs flannel next to Cilium",
                        "add cluster.network.cni.name: none to a patch the step applies (e.g. talos/patches/common.yaml)",
                    ) {
                        out.push(Finding::error(RULE, e));
                    }
                }
                _ => {}
            }
            if ci.kube_proxy_replacement {
                match &facts.proxy_disabled {
                    Some(v) if !v.value => out.push(Finding::error(
                        RULE,
                        v.loc
                            .error("kube-proxy stays on, but Cilium replaces it (kubeProxyReplacement=true)".into())
                            .help("set cluster.proxy.disabled: true"),
                    )),
                    None if complete => {
                        if let Some(e) = missing(
                            "cluster.proxy.disabled: true, so kube-proxy runs next to Cilium's replacement",
                            "add cluster.proxy.disabled: true to a patch the step applies",
                        ) {
                            out.push(Finding::error(RULE, e));
                        }
                    }
                    _ => {}
                }
            }
        }
        for (what, got, want, default, field) in [
            (
                "pod",
                &facts.pod_subnets,
                pc.pod_cidr.value.to_string(),
                DEFAULT_POD_SUBNET,
                "pod_cidr",
            ),
            (
                "service",
                &facts.service_subnets,
                pc.service_cidr.value.to_string(),
                DEFAULT_SERVICE_SUBNET,
                "service_cidr",
            ),
        ] {
            match got {
                Some(v) if v.value.first().map(String::as_str) != Some(want.as_str()) => {
                    out.push(Finding::error(
                        RULE,
                        v.loc
                            .error(format!(
                                "{cluster}'s Talos config gets {what} subnets {:?}, but the plan's {field} is {want}",
                                v.value
                            ))
                            .help(format!(
                                "make the patch follow the plan for each cluster, e.g. an inline --config-patch with \"{}Subnets\": [\"{{{{ cluster.{field} }}}}\"]",
                                what
                            )),
                    ))
                }
                None if complete && want != default => {
                    if let Some(e) = missing(
                        &format!("{what} subnets, so Talos uses its default {default}, not the plan's {field} {want}"),
                        &format!("add an inline --config-patch with cluster.network.{what}Subnets: [\"{{{{ cluster.{field} }}}}\"]"),
                    ) {
                        out.push(Finding::error(RULE, e));
                    }
                }
                _ => {}
            }
        }
        if let Some(v) = &facts.coredns_disabled
            && v.value
        {
            out.push(Finding::warning(
                RULE,
                v.loc
                    .error(format!("CoreDNS is disabled on {cluster}: Flux's controllers resolve the Git host and each other through cluster DNS"))
                    .help("remove cluster.coreDNS.disabled, or deploy another cluster DNS before Flux"),
            ));
        }
    }
    out
}
