//! Simulated Flux: source-controller (GitRepository, HelmRepository), kustomize-controller
//! (Kustomization: apply the files under `spec.path` from the lab's Git remote, in `dependsOn`
//! order) and helm-controller (HelmRelease: install or adopt and upgrade a release). Nothing
//! reconciles until the controllers' Deployments are available, and they only become available once
//! the cluster has a working CNI.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::lab::charts;
use crate::lab::cluster::Objects;
use crate::lab::core::{FaultKind, LabDir, Topology};

/// The sample GitOps tree the lab's Git remote serves (lab/gitops in the repository).
const TREE: &[(&str, &str)] = &[
    (
        "kubernetes/clusters/infra/infrastructure.yaml",
        include_str!("../../../lab/gitops/kubernetes/clusters/infra/infrastructure.yaml"),
    ),
    (
        "kubernetes/clusters/infra/monitoring.yaml",
        include_str!("../../../lab/gitops/kubernetes/clusters/infra/monitoring.yaml"),
    ),
    (
        "kubernetes/clusters/apps/infrastructure.yaml",
        include_str!("../../../lab/gitops/kubernetes/clusters/apps/infrastructure.yaml"),
    ),
    (
        "kubernetes/infrastructure/infra/cilium.yaml",
        include_str!("../../../lab/gitops/kubernetes/infrastructure/infra/cilium.yaml"),
    ),
    (
        "kubernetes/infrastructure/apps/cilium.yaml",
        include_str!("../../../lab/gitops/kubernetes/infrastructure/apps/cilium.yaml"),
    ),
    (
        "kubernetes/monitoring/victoria-metrics.yaml",
        include_str!("../../../lab/gitops/kubernetes/monitoring/victoria-metrics.yaml"),
    ),
];

/// Write the sample tree into the lab's Git remote (once; a user may edit it to rehearse changes).
pub fn install_gitops_tree(dir: &LabDir) -> std::io::Result<()> {
    for (path, text) in TREE {
        let p = dir.gitops().join(path);
        if !p.exists() {
            std::fs::create_dir_all(p.parent().expect("parent"))?;
            std::fs::write(&p, text)?;
        }
    }
    Ok(())
}

/// The revision of the tree: `main@sha1:<hash>` over every file.
pub fn revision(dir: &LabDir, branch: &str) -> String {
    let mut files = Vec::new();
    collect(&dir.gitops(), &mut files);
    files.sort();
    let mut h = Sha256::new();
    for f in &files {
        h.update(f.to_string_lossy().as_bytes());
        h.update(std::fs::read(f).unwrap_or_default());
    }
    format!("{branch}@sha1:{}", &hex::encode(h.finalize())[..40])
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                collect(&p, out);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                out.push(p);
            }
        }
    }
}

/// The YAML documents under a path of the tree.
pub fn documents(dir: &LabDir, path: &str) -> Vec<Value> {
    let root = dir.gitops().join(path.trim_start_matches("./"));
    let mut files = Vec::new();
    if root.is_file() {
        files.push(root);
    } else {
        collect(&root, &mut files);
    }
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        if f.file_name().is_some_and(|n| n == "kustomization.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for part in text.split("\n---") {
            if part.trim().is_empty()
                || part
                    .lines()
                    .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
            {
                continue;
            }
            if let Ok(v) = serde_saphyr::from_str::<Value>(part)
                && v.is_object()
            {
                docs.push(v);
            }
        }
    }
    docs
}

#[derive(Default)]
pub struct FluxState {
    /// What each Kustomization/HelmRelease last applied: key -> (generation, revision).
    applied: HashMap<String, (i64, String)>,
}

fn ready_of(o: &Value) -> bool {
    let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
    o["status"]["observedGeneration"].as_i64() == Some(generation)
        && o["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

async fn controller_up(c: &impl Objects, name: &str) -> bool {
    matches!(c.get("apps/v1", "Deployment", Some("flux-system"), name).await, Ok(Some(d)) if super::workload_ready(&d))
}

async fn set_ready(
    c: &impl Objects,
    mut o: Value,
    status: &str,
    reason: &str,
    message: &str,
    extra: Value,
) -> crate::error::Result<()> {
    let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
    let mut st = json!({
        "observedGeneration": generation,
        "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message, "lastTransitionTime": crate::lab::apiserver::store::now(), "observedGeneration": generation}]
    });
    if let (Some(m), Some(e)) = (st.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    let same = o["status"]["conditions"][0]["status"] == st["conditions"][0]["status"]
        && o["status"]["conditions"][0]["message"] == st["conditions"][0]["message"]
        && o["status"]["observedGeneration"] == st["observedGeneration"];
    if !same {
        o["status"] = st;
        // A conflict means someone wrote it meanwhile: the next tick tries again.
        let _ = c.replace_status(o).await;
    }
    Ok(())
}

pub async fn tick(
    state: &mut FluxState,
    c: &impl Objects,
    dir: &LabDir,
    topo: &Topology,
    _cluster: &str,
) -> crate::error::Result<()> {
    let source_up = controller_up(c, "source-controller").await;
    let kustomize_up = controller_up(c, "kustomize-controller").await;
    let helm_up = controller_up(c, "helm-controller").await;
    if !source_up {
        return Ok(());
    }
    let rev = revision(dir, &topo.git.branch);
    for g in c
        .list("source.toolkit.fluxcd.io/v1", "GitRepository", None, None)
        .await?
    {
        set_ready(
            c,
            g,
            "True",
            "Succeeded",
            &format!("stored artifact for revision '{rev}'"),
            json!({"artifact": {"revision": rev}}),
        )
        .await?;
    }
    for h in c
        .list("source.toolkit.fluxcd.io/v1", "HelmRepository", None, None)
        .await?
    {
        set_ready(
            c,
            h,
            "True",
            "Succeeded",
            "stored artifact: revision 'sha256:lab'",
            json!({}),
        )
        .await?;
    }
    let all_ks = c
        .list(
            "kustomize.toolkit.fluxcd.io/v1",
            "Kustomization",
            None,
            None,
        )
        .await?;
    if kustomize_up {
        for k in all_ks.clone() {
            let ns = k["metadata"]["namespace"]
                .as_str()
                .unwrap_or("flux-system")
                .to_string();
            let name = k["metadata"]["name"].as_str().unwrap_or("").to_string();
            let generation = k["metadata"]["generation"].as_i64().unwrap_or(1);
            let key = format!("ks/{ns}/{name}");
            if let Some(dep) = first_unready_dep(&k, &all_ks, &ns, "Kustomization") {
                set_ready(
                    c,
                    k,
                    "False",
                    "DependencyNotReady",
                    &format!("dependency '{dep}' is not ready"),
                    json!({}),
                )
                .await?;
                continue;
            }
            if state.applied.get(&key) != Some(&(generation, rev.clone())) {
                let path = k["spec"]["path"].as_str().unwrap_or("./").to_string();
                let target_ns = k["spec"]["targetNamespace"].as_str().map(String::from);
                let mut failed = false;
                for mut doc in documents(dir, &path) {
                    if let Some(t) = &target_ns {
                        doc["metadata"]["namespace"] = json!(t);
                    }
                    if doc["kind"] != "Namespace"
                        && doc["metadata"]["namespace"].is_null()
                        && doc["kind"] != "CustomResourceDefinition"
                    {
                        doc["metadata"]["namespace"] = json!("default");
                    }
                    let labels = doc["metadata"]["labels"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                    let mut labels = serde_json::Value::Object(labels);
                    labels["kustomize.toolkit.fluxcd.io/name"] = json!(name);
                    labels["kustomize.toolkit.fluxcd.io/namespace"] = json!(ns);
                    doc["metadata"]["labels"] = labels;
                    if c.apply(doc).await.is_err() {
                        failed = true;
                    }
                }
                if failed {
                    // Retried on the next tick, like kustomize-controller's next reconciliation.
                    continue;
                }
                state.applied.insert(key, (generation, rev.clone()));
            }
            set_ready(
                c,
                k,
                "True",
                "ReconciliationSucceeded",
                &format!("Applied revision: {rev}"),
                json!({"lastAppliedRevision": rev, "lastAttemptedRevision": rev}),
            )
            .await?;
        }
    }
    if helm_up {
        let all_hr = c
            .list("helm.toolkit.fluxcd.io/v2", "HelmRelease", None, None)
            .await?;
        for hr in all_hr.clone() {
            let ns = hr["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let name = hr["metadata"]["name"].as_str().unwrap_or("").to_string();
            let generation = hr["metadata"]["generation"].as_i64().unwrap_or(1);
            let key = format!("hr/{ns}/{name}");
            if let Some(dep) = first_unready_dep(&hr, &all_hr, &ns, "HelmRelease") {
                set_ready(
                    c,
                    hr,
                    "False",
                    "DependencyNotReady",
                    &format!("dependency '{dep}' is not ready"),
                    json!({}),
                )
                .await?;
                continue;
            }
            let release = hr["spec"]["releaseName"]
                .as_str()
                .unwrap_or(&name)
                .to_string();
            let target_ns = hr["spec"]["targetNamespace"]
                .as_str()
                .unwrap_or(&ns)
                .to_string();
            let chart = hr["spec"]["chart"]["spec"]["chart"]
                .as_str()
                .unwrap_or(&name)
                .to_string();
            let version = hr["spec"]["chart"]["spec"]["version"]
                .as_str()
                .unwrap_or("0.0.0")
                .to_string();
            let values = hr["spec"]["values"].clone();
            let values = if values.is_null() { json!({}) } else { values };
            let pending = topo.faults.iter().any(|f| matches!(&f.kind, FaultKind::HelmPendingUpgrade { namespace, release: r, .. } if *namespace == target_ns && *r == release));
            if state.applied.get(&key).map(|(g, _)| *g) != Some(generation) {
                let latest = charts::latest(c, &target_ns, &release).await?;
                if let Some(l) = &latest
                    && (l.status.starts_with("pending-") || pending)
                {
                    set_ready(c, hr, "False", "UpgradeFailed", "Helm upgrade failed: another operation (install/upgrade/rollback) is in progress", json!({})).await?;
                    continue;
                }
                let (verb, desc) = if latest.is_some() {
                    ("upgrade", "Upgrade complete")
                } else {
                    ("install", "Install complete")
                };
                let objs =
                    charts::apply_chart(c, &chart, &version, &release, &target_ns, &values).await?;
                let rel = charts::store_release(
                    c, &target_ns, &release, &chart, &version, &values, "deployed", desc,
                )
                .await?;
                let _ = objs;
                state
                    .applied
                    .insert(key.clone(), (generation, format!("{verb}:{}", rel.version)));
            }
            let (verb, rev_n) = state
                .applied
                .get(&key)
                .map(|(_, v)| {
                    v.split_once(':')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            let objs = charts::render(&chart, &version, &release, &target_ns, &values);
            if charts::rolled_out(c, &objs).await? {
                let msg = format!(
                    "Helm {verb} succeeded for release {target_ns}/{release}.v{rev_n} with chart {chart}@{version}"
                );
                let reason = if verb == "upgrade" {
                    "UpgradeSucceeded"
                } else {
                    "InstallSucceeded"
                };
                set_ready(c, hr, "True", reason, &msg, json!({"lastAttemptedRevision": version, "history": [{"chartName": chart, "chartVersion": version, "version": rev_n.parse::<i64>().unwrap_or(1), "status": "deployed"}]})).await?;
            } else {
                set_ready(
                    c,
                    hr,
                    "Unknown",
                    "Progressing",
                    "Running 'install' action with timeout of 5m0s",
                    json!({}),
                )
                .await?;
            }
        }
    }
    Ok(())
}

fn first_unready_dep(o: &Value, all: &[Value], ns: &str, _kind: &str) -> Option<String> {
    for d in o["spec"]["dependsOn"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let dn = d["name"].as_str().unwrap_or("");
        let dns = d["namespace"].as_str().unwrap_or(ns);
        let ok = all.iter().any(|x| {
            x["metadata"]["name"] == dn && x["metadata"]["namespace"] == dns && ready_of(x)
        });
        if !ok {
            return Some(format!("{dns}/{dn}"));
        }
    }
    None
}
