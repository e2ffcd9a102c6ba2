//! The Flux checks: `kustomizations` and `helmreleases` (all Ready, and when not, the root cause:
//! the first not-Ready object along the `dependsOn` chain, with its message), and the effective
//! values of a HelmRelease for the `helm_values` comparison.
//!
//! Ready means condition `Ready`=`"True"` with `status.observedGeneration == metadata.generation`
//! (facts: real-tools.md §7.4). A dependent of a not-Ready object says only
//! `dependency 'flux-system/x' is not ready`, which is why the root cause is followed.

use std::collections::HashSet;

use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::{Clusters, Outcome};
use crate::error::Result;
use crate::spec::phase::FluxCheck;

/// Which Flux kind a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FluxKind {
    Kustomization,
    HelmRelease,
}

impl FluxKind {
    pub fn api_version(self) -> &'static str {
        match self {
            FluxKind::Kustomization => "kustomize.toolkit.fluxcd.io/v1",
            FluxKind::HelmRelease => "helm.toolkit.fluxcd.io/v2",
        }
    }
    pub fn kind(self) -> &'static str {
        match self {
            FluxKind::Kustomization => "Kustomization",
            FluxKind::HelmRelease => "HelmRelease",
        }
    }
    pub fn resource(self) -> ApiResource {
        let (g, v) = self.api_version().split_once('/').unwrap_or(("", ""));
        ApiResource::from_gvk(&GroupVersionKind::gvk(g, v, self.kind()))
    }
}

fn ns_name(o: &Value) -> (String, String) {
    (
        o["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        o["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

/// Why an object is not Ready, or None when it is.
pub fn not_ready(o: &Value) -> Option<String> {
    let generation = o["metadata"]["generation"].as_i64();
    let observed = o["status"]["observedGeneration"].as_i64();
    let cond = o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    let Some(c) = cond else {
        return Some("no Ready condition yet: waiting to be reconciled".into());
    };
    let status = c["status"].as_str().unwrap_or("Unknown");
    let said = format!(
        "Ready={status} ({}): {}",
        c["reason"].as_str().unwrap_or(""),
        c["message"].as_str().unwrap_or("")
    );
    if status != "True" {
        return Some(said);
    }
    match (generation, observed) {
        (Some(g), Some(o)) if o < g => Some(format!(
            "observedGeneration {o} is behind generation {g} (the change is not reconciled yet)"
        )),
        (Some(g), None) => Some(format!(
            "status.observedGeneration is not set for generation {g}"
        )),
        _ => None,
    }
}

/// Follow `dependsOn` from a not-Ready object to the first not-Ready object whose own dependencies
/// are Ready (or missing). Returns the chain from `o` to the root, and the root's reason.
fn root_cause(
    kind: FluxKind,
    o: &Value,
    all: &[Value],
    seen: &mut HashSet<(String, String)>,
) -> (Vec<String>, String) {
    let (ns, name) = ns_name(o);
    let me = format!("{ns}/{name}");
    if !seen.insert((ns.clone(), name.clone())) {
        return (vec![me], "dependency cycle".into());
    }
    for d in o["spec"]["dependsOn"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let dn = d["name"].as_str().unwrap_or("").to_string();
        let dns = d["namespace"].as_str().unwrap_or(&ns).to_string();
        match all.iter().find(|x| ns_name(x) == (dns.clone(), dn.clone())) {
            None => {
                return (
                    vec![me, format!("{dns}/{dn}")],
                    format!("{} {dns}/{dn} does not exist", kind.kind()),
                );
            }
            Some(dep) if not_ready(dep).is_some() => {
                let (mut chain, why) = root_cause(kind, dep, all, seen);
                chain.insert(0, me);
                return (chain, why);
            }
            Some(_) => {}
        }
    }
    let why = not_ready(o).unwrap_or_else(|| "Ready".into());
    (vec![me], why)
}

/// The rule over listed objects. `targets` are (namespace, name); `selected` are objects a selector
/// matched (already filtered).
pub fn flux_rule(
    kind: FluxKind,
    all: &[Value],
    targets: &[(String, String)],
    selected: &[Value],
    want_ready: bool,
    path: Option<&str>,
) -> Outcome {
    let plural = format!("{}s", kind.kind());
    let mut objs: Vec<Value> = Vec::new();
    let mut missing = Vec::new();
    for (ns, name) in targets {
        match all
            .iter()
            .find(|o| ns_name(o) == (ns.clone(), name.clone()))
        {
            Some(o) => objs.push(o.clone()),
            None => missing.push(format!("{ns}/{name}")),
        }
    }
    for o in selected {
        if !objs.iter().any(|x| ns_name(x) == ns_name(o)) {
            objs.push(o.clone());
        }
    }
    if !missing.is_empty() {
        let whr = path
            .map(|p| format!(" (the plan says they are defined under {p} in the Git repository: are they committed and pushed, and does the flux-system Kustomization apply that path?)"))
            .unwrap_or_default();
        return Outcome {
            passed: false,
            terminal: false,
            detail: format!(
                "{} {} not found in the cluster{whr}",
                plural,
                missing.join(", ")
            ),
        };
    }
    if objs.is_empty() {
        return Outcome {
            passed: false,
            terminal: false,
            detail: format!("no {plural} match"),
        };
    }
    let names: Vec<String> = objs
        .iter()
        .map(|o| {
            let (ns, n) = ns_name(o);
            format!("{ns}/{n}")
        })
        .collect();
    if !want_ready {
        return Outcome {
            passed: true,
            terminal: false,
            detail: format!("{} {plural} exist: {}", objs.len(), names.join(", ")),
        };
    }
    let failing: Vec<&Value> = objs.iter().filter(|o| not_ready(o).is_some()).collect();
    if failing.is_empty() {
        return Outcome {
            passed: true,
            terminal: false,
            detail: format!(
                "{}/{} {plural} Ready: {}",
                objs.len(),
                objs.len(),
                names.join(", ")
            ),
        };
    }
    // The first failure in dependsOn order: an object none of whose dependencies is failing too.
    let first = failing
        .iter()
        .find(|o| {
            let (ns, _) = ns_name(o);
            !o["spec"]["dependsOn"].as_array().is_some_and(|ds| {
                ds.iter().any(|d| {
                    let dn = d["name"].as_str().unwrap_or("");
                    let dns = d["namespace"].as_str().unwrap_or(&ns);
                    failing
                        .iter()
                        .any(|f| ns_name(f) == (dns.to_string(), dn.to_string()))
                })
            })
        })
        .unwrap_or(&failing[0]);
    let (chain, why) = root_cause(kind, first, all, &mut HashSet::new());
    let root = chain.last().cloned().unwrap_or_default();
    let mut detail = format!(
        "{}/{} {plural} Ready; root cause: {} {root}: {why}",
        objs.len() - failing.len(),
        objs.len(),
        kind.kind()
    );
    if chain.len() > 1 {
        detail.push_str(&format!(" (dependsOn chain: {})", chain.join(" → ")));
    }
    let others: Vec<String> = failing
        .iter()
        .filter(|o| {
            let (ns, n) = ns_name(o);
            format!("{ns}/{n}") != chain[0]
        })
        .map(|o| {
            let (ns, n) = ns_name(o);
            format!("{ns}/{n} ({})", not_ready(o).unwrap_or_default())
        })
        .collect();
    if !others.is_empty() {
        detail.push_str(&format!("; also not Ready: {}", others.join(", ")));
    }
    // Flux's own word that the root gave up (kstatus Stalled=True): waiting longer changes nothing.
    let terminal = all
        .iter()
        .find(|o| {
            let (ns, n) = ns_name(o);
            format!("{ns}/{n}") == root
        })
        .and_then(|o| o["status"]["conditions"].as_array())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Stalled" && c["status"] == "True")
        });
    Outcome {
        passed: false,
        terminal,
        detail,
    }
}

/// Fetch and apply [`flux_rule`].
pub async fn evaluate(client: &kube::Client, kind: FluxKind, c: &FluxCheck) -> Result<Outcome> {
    let ar = kind.resource();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let all = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Ok(Outcome {
                passed: false,
                terminal: false,
                detail: format!(
                    "{} ({}) is not served yet: its CRD is not installed (is Flux bootstrapped?)",
                    kind.kind(),
                    kind.api_version()
                ),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let all: Vec<Value> = all
        .into_iter()
        .map(serde_json::to_value)
        .collect::<std::result::Result<_, _>>()?;
    let default_ns = c.namespace.clone().unwrap_or_else(|| "flux-system".into());
    let targets: Vec<(String, String)> = c
        .names
        .iter()
        .map(|n| match n.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (default_ns.clone(), n.clone()),
        })
        .collect();
    let mut selected = Vec::new();
    if let Some(sel) = &c.selector {
        let matched = api.list(&ListParams::default().labels(sel)).await?.items;
        for o in matched {
            let v = serde_json::to_value(o)?;
            if default_ns == "*" || v["metadata"]["namespace"] == json!(default_ns) {
                selected.push(v);
            }
        }
    }
    Ok(flux_rule(
        kind,
        &all,
        &targets,
        &selected,
        c.ready,
        c.path.as_deref(),
    ))
}

/// Deep merge: maps merge key by key, anything else is replaced (Helm's rule for values).
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Each key whose value differs, with both values: `k8sServiceHost: deployed "localhost",
/// HelmRelease "10.25.11.11"`. With `deployed_only`, keys only the HelmRelease sets are not
/// differences. Values under secret-looking keys (`key`, `password`, `token`, `secret`…) and PEM
/// material are never shown, only their size.
pub fn values_diff(deployed: &Value, wanted: &Value, deployed_only: bool) -> Vec<String> {
    let mut out = Vec::new();
    let empty = json!({});
    let a = if deployed.is_null() { &empty } else { deployed };
    let b = if wanted.is_null() { &empty } else { wanted };
    walk("", Some(a), Some(b), deployed_only, &mut out);
    out
}

fn secretish(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path).to_ascii_lowercase();
    last == "key"
        || ["password", "token", "secret", "credential", "privatekey"]
            .iter()
            .any(|w| last.contains(w))
}

fn show(path: &str, v: Option<&Value>) -> String {
    match v {
        None => "(unset)".into(),
        Some(Value::String(s)) if secretish(path) || s.contains("PRIVATE KEY") => {
            format!("(secret, {} characters)", s.len())
        }
        Some(Value::String(s)) if s.chars().count() > 60 => {
            let head: String = s.chars().take(40).collect();
            format!("{head:?}… ({} characters)", s.len())
        }
        Some(v) => v.to_string(),
    }
}

fn walk(prefix: &str, a: Option<&Value>, b: Option<&Value>, only: bool, out: &mut Vec<String>) {
    let map_or_unset = |v: Option<&Value>| v.is_none_or(Value::is_object);
    match (a, b) {
        (None, _) if only => {}
        (a, b) if a == b => {}
        // Descend into a map that one side lacks, so each leaf is named (and redacted).
        (a, b) if map_or_unset(a) && map_or_unset(b) => {
            let empty = serde_json::Map::new();
            let x = a.and_then(Value::as_object).unwrap_or(&empty);
            let y = b.and_then(Value::as_object).unwrap_or(&empty);
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(&p, x.get(k), y.get(k), only, out);
            }
        }
        (a, b) => out.push(format!(
            "{prefix}: deployed {}, HelmRelease {}",
            show(prefix, a),
            show(prefix, b)
        )),
    }
}

fn set_path(v: &mut Value, path: &str, leaf: Value) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let m = cur.as_object_mut().expect("object");
        if i == parts.len() - 1 {
            m.insert(p.to_string(), leaf);
            return;
        }
        cur = m.entry(p.to_string()).or_insert(json!({}));
    }
}

impl Clusters {
    /// The values a HelmRelease gives Helm: each `valuesFrom` source in order (a ConfigMap's or
    /// Secret's `valuesKey`, default `values.yaml`, parsed as YAML and merged, or set at
    /// `targetPath`), then the inline `values` merged last (helm-controller's documented order,
    /// [doc fluxcd/helm-controller docs/spec/v2/helmreleases.md "Values"]).
    pub async fn helmrelease_values(&self, cluster: &str, ns: &str, name: &str) -> Result<Value> {
        let client = self.client(cluster).await?;
        let ar = FluxKind::HelmRelease.resource();
        let hr = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
            .get_opt(name)
            .await?
            .ok_or_else(|| color_eyre::eyre::eyre!("HelmRelease {ns}/{name} not found"))?;
        let hr = serde_json::to_value(hr)?;
        let mut values = json!({});
        for (i, src) in hr["spec"]["valuesFrom"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let kind = src["kind"].as_str().unwrap_or("ConfigMap");
            let sname = src["name"].as_str().unwrap_or("");
            let key = src["valuesKey"].as_str().unwrap_or("values.yaml");
            let optional = src["optional"].as_bool().unwrap_or(false);
            let (api_version, k) = match kind {
                "Secret" => ("v1", "Secret"),
                _ => ("v1", "ConfigMap"),
            };
            let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("", api_version, k));
            let obj = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
                .get_opt(sname)
                .await?
                .map(serde_json::to_value)
                .transpose()?;
            let raw = obj.as_ref().and_then(|o| o["data"][key].as_str()).map(|s| {
                if k == "Secret" {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .unwrap_or_default()
                } else {
                    s.to_string()
                }
            });
            let Some(raw) = raw else {
                if optional {
                    continue;
                }
                return Err(color_eyre::eyre::eyre!(
                    "HelmRelease {ns}/{name} valuesFrom[{i}]: {k} {ns}/{sname} has no key {key:?} (or does not exist)"
                ));
            };
            match src["targetPath"].as_str() {
                Some(tp) => set_path(&mut values, tp, Value::String(raw)),
                None => {
                    let parsed: Value = serde_saphyr::from_str(&raw).map_err(|e| {
                        color_eyre::eyre::eyre!(
                            "HelmRelease {ns}/{name} valuesFrom[{i}]: {k} {ns}/{sname} key {key:?} is not YAML: {e}"
                        )
                    })?;
                    if !parsed.is_null() {
                        merge(&mut values, &parsed);
                    }
                }
            }
        }
        if hr["spec"]["values"].is_object() {
            merge(&mut values, &hr["spec"]["values"]);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks(name: &str, deps: &[&str], ready: Option<(&str, &str, &str)>) -> Value {
        let mut o = json!({"metadata": {"name": name, "namespace": "flux-system", "generation": 1},
                           "spec": {"dependsOn": deps.iter().map(|d| json!({"name": d})).collect::<Vec<_>>()}});
        if let Some((s, r, m)) = ready {
            o["status"] = json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": s, "reason": r, "message": m}]});
        }
        o
    }

    fn t(n: &str) -> (String, String) {
        ("flux-system".into(), n.into())
    }

    #[test]
    fn root_cause_is_the_first_not_ready_dependency() {
        let all = vec![
            ks(
                "storage-operators",
                &[],
                Some((
                    "False",
                    "HealthCheckFailed",
                    "health check failed after 5m: HelmRelease/rook-ceph/rook-ceph status: 'Failed'",
                )),
            ),
            ks(
                "storage-clusters",
                &["storage-operators"],
                Some((
                    "False",
                    "DependencyNotReady",
                    "dependency 'flux-system/storage-operators' is not ready",
                )),
            ),
            ks(
                "backups",
                &["storage-clusters"],
                Some((
                    "False",
                    "DependencyNotReady",
                    "dependency 'flux-system/storage-clusters' is not ready",
                )),
            ),
        ];
        let o = flux_rule(
            FluxKind::Kustomization,
            &all,
            &[t("backups")],
            &[],
            true,
            None,
        );
        assert!(!o.passed);
        assert!(o.detail.contains("root cause: Kustomization flux-system/storage-operators: Ready=False (HealthCheckFailed)"), "{}", o.detail);
        assert!(
            o.detail.contains(
                "flux-system/backups → flux-system/storage-clusters → flux-system/storage-operators"
            ),
            "{}",
            o.detail
        );
    }

    #[test]
    fn missing_names_the_path() {
        let o = flux_rule(
            FluxKind::Kustomization,
            &[],
            &[t("jaeger")],
            &[],
            true,
            Some("kubernetes/clusters/infra/mesh.yaml"),
        );
        assert!(!o.passed);
        assert!(
            o.detail.contains("flux-system/jaeger not found"),
            "{}",
            o.detail
        );
        assert!(
            o.detail.contains("kubernetes/clusters/infra/mesh.yaml"),
            "{}",
            o.detail
        );
    }

    #[test]
    fn diff_names_each_key_with_both_values() {
        let a = json!({"k8sServiceHost": "localhost", "cluster": {"name": "infra", "id": 1}});
        let b = json!({"k8sServiceHost": "10.25.11.11", "cluster": {"name": "infra", "id": 1}, "extra": true});
        assert_eq!(
            values_diff(&a, &b, false),
            vec![
                "extra: deployed (unset), HelmRelease true".to_string(),
                "k8sServiceHost: deployed \"localhost\", HelmRelease \"10.25.11.11\"".to_string()
            ]
        );
        assert!(values_diff(&a, &a, false).is_empty());
        // Keys only the HelmRelease sets are not differences when asked; secrets are never shown.
        assert_eq!(values_diff(&a, &b, true).len(), 1);
        let ca = json!({"tls": {"ca": {"cert": "-----BEGIN CERTIFICATE-----", "key": "-----BEGIN PRIVATE KEY-----\nMIG"}}});
        let d = values_diff(&json!({}), &ca, false);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[1].starts_with("tls.ca.key: deployed (unset), HelmRelease (secret, "),
            "{d:?}"
        );
        assert!(!d.join(" ").contains("MIG"), "{d:?}");
        assert!(values_diff(&json!({}), &ca, true).is_empty());
    }
}
