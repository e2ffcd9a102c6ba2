//! Templates: rendering plan values into step definitions with minijinja, strictly.
//!
//! Owns the template context (plan, cluster, node, vars, …) and the renderer. An undefined name is an
//! error that names the template's file and line. It never runs or resolves secrets: a secret renders
//! as its `op://` reference, and the executor resolves it at run time.

use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

use crate::error::UserError;
use crate::spec::plan::{Cluster, Node, Plan};

/// A strict renderer. Each distinct template text is compiled once and reused for every expansion.
pub struct Renderer {
    env: std::cell::RefCell<Environment<'static>>,
    compiled: std::cell::RefCell<std::collections::HashSet<String>>,
}

/// For an undefined name: the first dotted name in the template that does not resolve, and the
/// closest name defined where it was looked up ("`cluster.nmae` is not defined; did you mean
/// `cluster.name`?").
fn undefined_hint(template: &str, ctx: &Ctx) -> Option<String> {
    static NAME: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = NAME.get_or_init(|| {
        regex::Regex::new(r"(\|\s*)?\b([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)")
            .expect("static regex")
    });
    const WORDS: &[&str] = &[
        "if", "else", "elif", "endif", "for", "endfor", "in", "and", "or", "not", "is", "true",
        "false", "none", "True", "False", "None", "loop", "set", "endset",
    ];
    let blocks = regex::Regex::new(r"\{\{(.*?)\}\}|\{%(.*?)%\}").ok()?;
    let strings = regex::Regex::new(r#""[^"]*"|'[^']*'"#).ok()?;
    for b in blocks.captures_iter(template) {
        let inner = b.get(1).or(b.get(2))?.as_str();
        // Leave string literals out of it.
        let code = strings.replace_all(inner, "\"\"");
        for m in re.captures_iter(&code) {
            if m.get(1).is_some() {
                continue; // a filter: `| length`
            }
            let path = m.get(2)?.as_str();
            if WORDS.contains(&path.split('.').next().unwrap_or("")) {
                continue;
            }
            let mut cur = ctx.0.clone();
            let mut prefix = String::new();
            for seg in path.split('.') {
                match cur.get_attr(seg) {
                    Ok(v) if !v.is_undefined() => {
                        cur = v;
                        prefix.push_str(seg);
                        prefix.push('.');
                    }
                    _ => {
                        let keys: Vec<String> = cur
                            .try_iter()
                            .map(|it| it.filter_map(|k| k.as_str().map(String::from)).collect())
                            .unwrap_or_default();
                        let near = crate::suggest::closest(seg, keys.iter().map(String::as_str))?;
                        return Some(format!(
                            "`{prefix}{seg}` is not defined; did you mean `{prefix}{near}`?"
                        ));
                    }
                }
            }
        }
    }
    None
}

/// A template context, converted once for minijinja.
#[derive(Clone)]
pub struct Ctx(pub minijinja::Value);

impl Ctx {
    pub fn new(v: &Value) -> Ctx {
        Ctx(minijinja::Value::from(minijinja::value::Serde(v)))
    }
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        Renderer {
            env: std::cell::RefCell::new(env),
            compiled: Default::default(),
        }
    }

    /// Render one template string. `file`/`line` locate it for the error.
    pub fn render(
        &self,
        template: &str,
        ctx: &Ctx,
        file: &Path,
        line: u64,
        field: &str,
    ) -> Result<String, UserError> {
        if !template.contains("{{") && !template.contains("{%") {
            return Ok(template.to_string());
        }
        let mut result = Ok(());
        if !self.compiled.borrow().contains(template) {
            result = self
                .env
                .borrow_mut()
                .add_template_owned(template.to_string(), template.to_string());
            if result.is_ok() {
                self.compiled.borrow_mut().insert(template.to_string());
            }
        }
        let result = result.and_then(|()| {
            self.env
                .borrow()
                .get_template(template)
                .and_then(|t| t.render(&ctx.0))
        });
        result.map_err(|e| {
            let (detail, hint) = match e.kind() {
                minijinja::ErrorKind::UndefinedError => (
                    format!("undefined name in template {template:?}: {}", e.detail().unwrap_or("undefined value")),
                    undefined_hint(template, ctx),
                ),
                _ => (format!("template {template:?} does not render: {e}"), None),
            };
            let names = "use a name the plan defines: plan, cluster, node, peers, clusters, versions, git, paths, vars, secrets, mesh, state_dir";
            UserError::new(detail)
                .in_file(file)
                .at(line, 1)
                .field(field)
                .help(hint.map_or_else(|| names.to_string(), |h| format!("{h} ({names})")))
                .with_source_line()
        })
    }

    /// Render every string inside a JSON value, in place.
    pub fn render_value(
        &self,
        v: &mut Value,
        ctx: &Ctx,
        file: &Path,
        line: u64,
        field: &str,
    ) -> Result<(), UserError> {
        match v {
            Value::String(s) => {
                *s = self.render(s, ctx, file, line, field)?;
            }
            Value::Array(items) => {
                for item in items {
                    self.render_value(item, ctx, file, line, field)?;
                }
            }
            Value::Object(map) => {
                for (_, item) in map.iter_mut() {
                    self.render_value(item, ctx, file, line, field)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A path the plan names: `{{ state_dir }}` (and `{{ name }}`) rendered, then resolved: as
/// written when absolute, relative to the plan file's directory otherwise.
pub fn plan_path(plan: &Plan, state_dir: &Path, raw: &str) -> String {
    plan.resolve(&rendered_path(plan, state_dir, raw))
        .display()
        .to_string()
}

/// A plan path with its templates rendered, not yet resolved (relative when written relative).
fn rendered_path(plan: &Plan, state_dir: &Path, raw: &str) -> String {
    if !raw.contains("{{") {
        return raw.to_string();
    }
    let state_dir = crate::spec::plan::absolute(state_dir);
    let ctx = json!({ "state_dir": state_dir.display().to_string(), "name": plan.name.value });
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.render_str(raw, minijinja::Value::from(minijinja::value::Serde(&ctx)))
        .unwrap_or_else(|_| raw.to_string())
}

/// The local Git checkout steps read files from: the plan's `git.checkout`, else the reference
/// tree `lab/gitops` of the project the plan is in (the nearest directory at or above the plan
/// file's that has one; the plan's own directory when none has).
pub fn checkout(plan: &Plan, state_dir: &Path) -> PathBuf {
    match &plan.git.checkout {
        Some(raw) => PathBuf::from(plan_path(plan, state_dir, raw)),
        None => reference_tree(plan),
    }
}

/// The reference GitOps tree `lab/gitops` of the project the plan is in: the nearest at or above
/// the plan file's directory (the plan's own directory when there is none).
pub fn reference_tree(plan: &Plan) -> PathBuf {
    let tree = Path::new("lab").join("gitops");
    plan.dir
        .ancestors()
        .map(|d| d.join(&tree))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| plan.resolve("lab/gitops"))
}

/// What a fingerprint keeps of the paths in a rendered definition: the state directory is
/// `{{state_dir}}`, and each path the plan names relatively (and the default checkout) is the way
/// from `{{plan_dir}}`. Longest first, so a path inside another is replaced whole.
pub fn path_placeholders(plan: &Plan, state_dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let p = &plan.paths;
    let raws = [&p.kubeconfig, &p.talosconfig, &p.talos_configs]
        .into_iter()
        .chain(p.patches.values())
        .chain(p.files.values())
        .map(|s| s.value.as_str())
        .chain(plan.git.checkout.as_deref());
    for raw in raws {
        if Path::new(&rendered_path(plan, state_dir, raw)).is_relative() {
            let resolved = PathBuf::from(plan_path(plan, state_dir, raw));
            out.push((resolved.display().to_string(), plan.placeholder(&resolved)));
        }
    }
    if plan.git.checkout.is_none() {
        let resolved = checkout(plan, state_dir);
        out.push((resolved.display().to_string(), plan.placeholder(&resolved)));
    }
    let sd = crate::spec::plan::absolute(state_dir).display().to_string();
    out.push((sd, "{{state_dir}}".to_string()));
    out.retain(|(from, _)| !from.is_empty() && from != "/");
    out.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// The plan as template data.
pub fn plan_value(plan: &Plan, state_dir: &Path) -> Value {
    let clusters: Vec<Value> = plan.clusters.iter().map(cluster_value).collect();
    let secrets: serde_json::Map<String, Value> = plan
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.value.clone())))
        .collect();
    // Paths as the plan names them, resolved: relative ones from the plan file's directory.
    let resolved = |map: &std::collections::BTreeMap<String, serde_saphyr::Spanned<String>>| {
        map.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value::String(plan_path(plan, state_dir, &v.value)),
                )
            })
            .collect::<serde_json::Map<String, Value>>()
    };
    let patches = resolved(&plan.paths.patches);
    let files = resolved(&plan.paths.files);
    json!({
        "name": plan.name.value,
        "lab": plan.lab,
        "state_dir": state_dir.display().to_string(),
        "clusters": clusters,
        "mesh": {
            "enabled": plan.mesh.enabled,
            "native_routing_cidr": plan.mesh.native_routing_cidr.as_ref().map(|c| c.value.to_string()),
            "apiserver": {
                "service_type": plan.mesh.apiserver.service_type,
                "addresses": plan.mesh.apiserver.addresses,
            },
        },
        "versions": {
            "talos": plan.versions.talos,
            "kubernetes": plan.versions.kubernetes,
            "cilium": plan.versions.cilium,
            "flux": plan.versions.flux,
            "charts": plan.versions.charts,
        },
        "git": {
            "provider": plan.git.provider,
            "owner": plan.git.owner,
            "repository": plan.git.repository,
            "branch": plan.git.branch,
            "paths": plan.git.paths,
            "personal": plan.git.personal,
            // Without a checkout, the reference tree shipped in this repository.
            "checkout": checkout(plan, state_dir).display().to_string(),
            "phases": git_phases(plan),
            "cilium_values": cilium_values(plan),
        },
        "secrets": secrets,
        "paths": {
            "kubeconfig": plan_path(plan, state_dir, &plan.paths.kubeconfig.value),
            "talosconfig": plan_path(plan, state_dir, &plan.paths.talosconfig.value),
            "talos_configs": plan_path(plan, state_dir, &plan.paths.talos_configs.value),
            "patches": patches,
            "files": files,
        },
        "vars": plan.vars,
    })
}

/// Where each phase's Kustomizations live: the plan's `git.phases`, over the reference tree's
/// layout (`<git.paths[cluster]>/<file>.yaml`) for plans that do not say.
fn git_phases(plan: &Plan) -> Value {
    let mut out = serde_json::Map::new();
    for (phase, file) in [
        ("foundation", "infrastructure"),
        ("mesh", "mesh"),
        ("storage", "storage"),
        ("platform", "platform"),
        ("security", "security"),
        ("apps", "apps"),
    ] {
        let mut m = serde_json::Map::new();
        for (cluster, base) in &plan.git.paths {
            m.insert(cluster.clone(), json!(format!("{base}/{file}.yaml")));
        }
        out.insert(phase.to_string(), Value::Object(m));
    }
    for (phase, clusters) in &plan.git.phases {
        let slot = out
            .entry(phase.clone())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("object");
        for (c, p) in clusters {
            slot.insert(c.clone(), json!(p));
        }
    }
    Value::Object(out)
}

/// The Cilium values file of each cluster: the plan's `git.cilium_values`, else the reference
/// tree's `kubernetes/infrastructure/<cluster>/cilium/values.yaml`.
fn cilium_values(plan: &Plan) -> Value {
    let mut m = serde_json::Map::new();
    for c in &plan.clusters {
        let name = &c.name.value;
        let p = plan
            .git
            .cilium_values
            .get(name)
            .cloned()
            .unwrap_or_else(|| format!("kubernetes/infrastructure/{name}/cilium/values.yaml"));
        m.insert(name.clone(), json!(p));
    }
    Value::Object(m)
}

pub fn cluster_value(c: &Cluster) -> Value {
    let nodes: Vec<Value> = c.nodes.iter().map(node_value).collect();
    let controlplanes: Vec<Value> = c
        .nodes
        .iter()
        .filter(|n| n.role == crate::spec::Role::Controlplane)
        .map(node_value)
        .collect();
    json!({
        "name": c.name.value,
        "id": c.id.value,
        "context": c.context,
        "talos_context": c.talos_context,
        "endpoint": c.endpoint.value,
        "pod_cidr": c.pod_cidr.value.to_string(),
        "service_cidr": c.service_cidr.value.to_string(),
        "dns_ip": c.dns_ip.value.to_string(),
        "nodes": nodes,
        "controlplanes": controlplanes,
        "first_controlplane": controlplanes.first().cloned().unwrap_or(Value::Null),
    })
}

pub fn node_value(n: &Node) -> Value {
    json!({
        "name": n.name.value,
        "ip": n.ip.value.to_string(),
        "role": match n.role { crate::spec::Role::Controlplane => "controlplane", crate::spec::Role::Worker => "worker" },
        "install_disk": n.install_disk.clone().unwrap_or_else(|| "/dev/sda".into()),
    })
}

/// The context for one expansion: the whole plan at top level, plus `plan`, `cluster`, `node`, `peers`.
pub fn context(plan: &Value, cluster: Option<&Value>, node: Option<&Value>) -> Value {
    let mut ctx = plan.as_object().cloned().unwrap_or_default();
    ctx.insert("plan".into(), plan.clone());
    if let Some(c) = cluster {
        ctx.insert("cluster".into(), c.clone());
        let name = c.get("name").cloned().unwrap_or(Value::Null);
        let peers: Vec<Value> = plan["clusters"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter(|x| x.get("name") != Some(&name))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        ctx.insert("peers".into(), Value::Array(peers));
    }
    if let Some(n) = node {
        ctx.insert("node".into(), n.clone());
    }
    Value::Object(ctx)
}
