//! One small function per readiness rule, and the dispatch from a check to its rule. The rules take
//! objects and say what they saw; fetching lives in `evaluate`.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::Outcome;
use crate::error::Result;
use crate::spec::phase::ActionSpec;

fn pass(detail: impl Into<String>) -> Outcome {
    Outcome {
        passed: true,
        terminal: false,
        detail: detail.into(),
    }
}
fn wait(detail: impl Into<String>) -> Outcome {
    Outcome {
        passed: false,
        terminal: false,
        detail: detail.into(),
    }
}
/// Not passed, and it will not pass by itself: the wait ends now, naming the object and the fix.
fn stuck(detail: impl Into<String>) -> Outcome {
    Outcome {
        passed: false,
        terminal: true,
        detail: detail.into(),
    }
}

/// Nodes: every expected node registered, and (if `ready`) Ready.
pub fn nodes_rule(nodes: &[Node], expected: &[String], ready: bool) -> Outcome {
    let mut missing = Vec::new();
    let mut not_ready = Vec::new();
    let mut n_ready = 0;
    for name in expected {
        match nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
        {
            None => missing.push(name.clone()),
            Some(n) => {
                let cond = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
                match cond {
                    Some(c) if c.status == "True" => n_ready += 1,
                    Some(c) => not_ready.push(format!(
                        "{name} NotReady: {}: {}",
                        c.reason.clone().unwrap_or_default(),
                        c.message.clone().unwrap_or_default()
                    )),
                    None => not_ready.push(format!("{name} NotReady: no Ready condition yet")),
                }
            }
        }
    }
    let total = expected.len();
    let registered = total - missing.len();
    let missing_text = if missing.is_empty() {
        String::new()
    } else {
        format!("; not registered: {}", missing.join(", "))
    };
    if !ready {
        let detail =
            format!("{registered}/{total} nodes registered ({n_ready} Ready){missing_text}");
        return if missing.is_empty() {
            pass(detail)
        } else {
            wait(detail)
        };
    }
    let detail = format!(
        "{n_ready}/{total} nodes Ready{}{missing_text}",
        if not_ready.is_empty() {
            String::new()
        } else {
            format!("; {}", not_ready.join("; "))
        }
    );
    if n_ready == total {
        pass(detail)
    } else {
        wait(detail)
    }
}

/// DaemonSet rollout, kubectl's rules: observedGeneration, then updated and available ≥ desired.
pub fn daemonset_rule(ds: &DaemonSet) -> Outcome {
    let name = ds.metadata.name.clone().unwrap_or_default();
    if ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        == Some("OnDelete")
    {
        return wait(format!(
            "ds/{name}: rollout status is only available for RollingUpdate strategy type"
        ));
    }
    let s = ds.status.clone().unwrap_or_default();
    if ds.metadata.generation.unwrap_or(0) > s.observed_generation.unwrap_or(0) {
        return wait(format!(
            "ds/{name}: waiting for daemon set spec update to be observed"
        ));
    }
    let desired = s.desired_number_scheduled;
    let updated = s.updated_number_scheduled.unwrap_or(0);
    let available = s.number_available.unwrap_or(0);
    if desired == 0 {
        return wait(format!("ds/{name}: no pods scheduled yet (0 desired)"));
    }
    if updated < desired {
        return wait(format!(
            "ds/{name}: {updated} out of {desired} new pods have been updated"
        ));
    }
    if available < desired {
        return wait(format!(
            "ds/{name}: {available} of {desired} updated pods available"
        ));
    }
    pass(format!(
        "ds/{name}: {available} of {desired} updated pods available"
    ))
}

/// Deployment rollout, kubectl's rules.
pub fn deployment_rule(d: &Deployment) -> Outcome {
    let name = d.metadata.name.clone().unwrap_or_default();
    let s = d.status.clone().unwrap_or_default();
    if d.metadata.generation.unwrap_or(0) > s.observed_generation.unwrap_or(0) {
        return wait(format!(
            "deploy/{name}: waiting for deployment spec update to be observed"
        ));
    }
    if s.conditions.as_ref().is_some_and(|cs| {
        cs.iter().any(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
    }) {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        return stuck(format!(
            "deploy/{name}: exceeded its progress deadline (Progressing=False, ProgressDeadlineExceeded): it will not finish by itself. See `kubectl -n {ns} describe deployment {name}` and its pods' events; fix the cause (or `kubectl -n {ns} rollout undo deployment/{name}`), then resume"
        ));
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = s.updated_replicas.unwrap_or(0);
    let replicas = s.replicas.unwrap_or(0);
    let available = s.available_replicas.unwrap_or(0);
    if updated < want {
        return wait(format!(
            "deploy/{name}: {updated} out of {want} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return wait(format!(
            "deploy/{name}: {} old replicas are pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return wait(format!(
            "deploy/{name}: {available} of {updated} updated replicas are available"
        ));
    }
    pass(format!(
        "deploy/{name}: {available} of {want} replicas available"
    ))
}

/// StatefulSet rollout, kubectl's rules.
pub fn statefulset_rule(s: &StatefulSet) -> Outcome {
    let name = s.metadata.name.clone().unwrap_or_default();
    let st = s.status.clone().unwrap_or_default();
    if s.metadata.generation.unwrap_or(0) > st.observed_generation.unwrap_or(0) {
        return wait(format!(
            "sts/{name}: waiting for statefulset spec update to be observed"
        ));
    }
    let want = s.spec.as_ref().and_then(|x| x.replicas).unwrap_or(1);
    let ready = st.ready_replicas.unwrap_or(0);
    if ready < want {
        return wait(format!(
            "sts/{name}: waiting for {} pods to be ready",
            want - ready
        ));
    }
    if st.update_revision.is_some() && st.current_revision != st.update_revision {
        return wait(format!(
            "sts/{name}: waiting for the update to finish ({} of {want} updated)",
            st.updated_replicas.unwrap_or(0)
        ));
    }
    pass(format!("sts/{name}: {ready} of {want} pods ready"))
}

/// Any object: the condition has the status, and observedGeneration (when present) is current.
pub fn condition_rule(obj: &Value, kind: &str, cond_type: &str, want: &str) -> Outcome {
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .map(|n| format!("{n}/"))
        .unwrap_or_default();
    let who = format!(
        "{kind} {ns}{}",
        obj["metadata"]["name"].as_str().unwrap_or("")
    );
    let generation = obj["metadata"]["generation"].as_i64();
    if let (Some(g), Some(o)) = (generation, obj["status"]["observedGeneration"].as_i64())
        && o < g
    {
        return wait(format!(
            "{who}: observedGeneration {o} is behind generation {g}"
        ));
    }
    let cond = obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == cond_type));
    match cond {
        None => wait(format!("{who}: no {cond_type} condition yet")),
        Some(c) => {
            let status = c["status"].as_str().unwrap_or("Unknown");
            let detail = format!(
                "{who}: {cond_type}={status} ({}): {}",
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            );
            if generation.is_some()
                && obj["status"]["observedGeneration"].is_null()
                && c["observedGeneration"]
                    .as_i64()
                    .is_some_and(|o| Some(o) < generation)
            {
                return wait(format!(
                    "{who}: condition not observed for the current generation"
                ));
            }
            if status == want {
                return pass(detail);
            }
            // Flux's own word that it gave up: Stalled=True (kstatus) is not retried without a change.
            if let Some(st) = obj["status"]["conditions"].as_array().and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == "Stalled" && c["status"] == "True")
            }) {
                return stuck(format!(
                    "{who} is Stalled ({}): {}. It will not recover by itself: fix the cause in Git or the cluster, then `flux reconcile {} {} -n {}`",
                    st["reason"].as_str().unwrap_or(""),
                    st["message"].as_str().unwrap_or(""),
                    kind.to_lowercase(),
                    obj["metadata"]["name"].as_str().unwrap_or(""),
                    obj["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("flux-system"),
                ));
            }
            // A Helm release left in pending-install/upgrade/rollback blocks every later action.
            if c["message"].as_str().is_some_and(|m| {
                m.contains("another operation (install/upgrade/rollback) is in progress")
            }) {
                let release = obj["spec"]["releaseName"]
                    .as_str()
                    .or(obj["metadata"]["name"].as_str())
                    .unwrap_or("");
                let target = obj["spec"]["targetNamespace"]
                    .as_str()
                    .or(obj["metadata"]["namespace"].as_str())
                    .unwrap_or("");
                return stuck(format!(
                    "{detail}. The Helm release {target}/{release} is stuck in a pending state and nothing retries past it: find the last deployed revision with `helm history {release} -n {target}`, `helm rollback {release} <revision> -n {target}`, then resume"
                ));
            }
            wait(detail)
        }
    }
}

/// A rollout that waits says which pods hold it back: each not-ready pod of the workload with its
/// node and why (a container's waiting reason, or the Ready condition's message). At most three.
async fn with_pods(
    client: &kube::Client,
    ns: &str,
    selector: Option<std::collections::BTreeMap<String, String>>,
    o: Outcome,
) -> Outcome {
    use k8s_openapi::api::core::v1::Pod;
    let Some(sel) = selector.filter(|s| !s.is_empty() && !o.passed) else {
        return o;
    };
    let labels = sel
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let Ok(pods) = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&labels))
        .await
    else {
        return o;
    };
    let mut why = Vec::new();
    for p in pods.items {
        let st = p.status.clone().unwrap_or_default();
        let ready = st.conditions.iter().flatten().find(|c| c.type_ == "Ready");
        if ready.is_some_and(|c| c.status == "True") {
            continue;
        }
        let waiting = st
            .container_statuses
            .iter()
            .flatten()
            .find_map(|c| c.state.as_ref()?.waiting.as_ref())
            .map(|w| {
                format!(
                    "{}{}",
                    w.reason.clone().unwrap_or_default(),
                    w.message
                        .as_ref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                )
            });
        let cond = ready.map(|c| {
            format!(
                "Ready={} {}",
                c.status,
                c.message.clone().or(c.reason.clone()).unwrap_or_default()
            )
        });
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| "no node".into());
        let phase = st.phase.clone().unwrap_or_else(|| "Unknown".into());
        why.push(format!(
            "pod {} on {node} ({phase}): {}",
            p.metadata.name.unwrap_or_default(),
            waiting
                .or(cond)
                .unwrap_or_else(|| "not ready".into())
                .trim()
        ));
    }
    if why.is_empty() {
        return o;
    }
    let more = if why.len() > 3 {
        format!(" (+{} more)", why.len() - 3)
    } else {
        String::new()
    };
    why.truncate(3);
    Outcome {
        detail: format!("{}; waiting for {}{more}", o.detail, why.join("; ")),
        ..o
    }
}

fn dynamic(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let (g, v) = api_version.split_once('/').unwrap_or(("", api_version));
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(g, v, kind));
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Fetch what a check reads and apply its rule.
pub async fn evaluate(
    client: &kube::Client,
    check: &ActionSpec,
    expected_nodes: &[String],
) -> Result<Outcome> {
    Ok(match check {
        ActionSpec::Nodes(n) => {
            let api: Api<Node> = Api::all(client.clone());
            let nodes = api.list(&ListParams::default()).await?.items;
            nodes_rule(&nodes, expected_nodes, n.ready)
        }
        ActionSpec::Rollout(r) => match r.kind.as_str() {
            "DaemonSet" => match Api::<DaemonSet>::namespaced(client.clone(), &r.namespace)
                .get_opt(&r.name)
                .await?
            {
                Some(ds) => {
                    let sel = ds
                        .spec
                        .as_ref()
                        .and_then(|s| s.selector.match_labels.clone());
                    with_pods(client, &r.namespace, sel, daemonset_rule(&ds)).await
                }
                None => wait(format!(
                    "daemonsets.apps \"{}\" not found in {}",
                    r.name, r.namespace
                )),
            },
            "Deployment" => match Api::<Deployment>::namespaced(client.clone(), &r.namespace)
                .get_opt(&r.name)
                .await?
            {
                Some(d) => {
                    let sel = d
                        .spec
                        .as_ref()
                        .and_then(|s| s.selector.match_labels.clone());
                    with_pods(client, &r.namespace, sel, deployment_rule(&d)).await
                }
                None => wait(format!(
                    "deployments.apps \"{}\" not found in {}",
                    r.name, r.namespace
                )),
            },
            "StatefulSet" => match Api::<StatefulSet>::namespaced(client.clone(), &r.namespace)
                .get_opt(&r.name)
                .await?
            {
                Some(s) => {
                    let sel = s
                        .spec
                        .as_ref()
                        .and_then(|s| s.selector.match_labels.clone());
                    with_pods(client, &r.namespace, sel, statefulset_rule(&s)).await
                }
                None => wait(format!(
                    "statefulsets.apps \"{}\" not found in {}",
                    r.name, r.namespace
                )),
            },
            other => {
                return Err(color_eyre::eyre::eyre!(
                    "rollout checks support Deployment, DaemonSet and StatefulSet, not {other}"
                ));
            }
        },
        ActionSpec::Condition(c) => {
            match dynamic(client, &c.api_version, &c.kind, c.namespace.as_deref())
                .get_opt(&c.name)
                .await
            {
                Ok(Some(o)) => {
                    condition_rule(&serde_json::to_value(o)?, &c.kind, &c.condition, &c.status)
                }
                Ok(None) => wait(format!(
                    "{} {}{} not found",
                    c.kind,
                    c.namespace
                        .as_ref()
                        .map(|n| format!("{n}/"))
                        .unwrap_or_default(),
                    c.name
                )),
                Err(e) if not_found(&e) => wait(format!(
                    "{} ({}) is not served yet: its CRD is not installed",
                    c.kind, c.api_version
                )),
                Err(e) => return Err(e.into()),
            }
        }
        ActionSpec::Exists(c) | ActionSpec::Absent(c) => {
            let want_present = matches!(check, ActionSpec::Exists(_));
            let who = format!(
                "{} {}{}",
                c.kind,
                c.namespace
                    .as_ref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default(),
                c.name
            );
            let found = match dynamic(client, &c.api_version, &c.kind, c.namespace.as_deref())
                .get_opt(&c.name)
                .await
            {
                Ok(o) => o.map(serde_json::to_value).transpose()?,
                Err(e) if not_found(&e) => None,
                Err(e) => return Err(e.into()),
            };
            match (found, want_present) {
                (None, true) => wait(format!("{who} not found")),
                (None, false) => pass(format!("{who} is absent")),
                (Some(_), false) => wait(format!("{who} still exists")),
                (Some(o), true) => {
                    let mut wrong = Vec::new();
                    for (k, v) in &c.labels {
                        if o["metadata"]["labels"][k].as_str() != Some(v) {
                            wrong.push(format!(
                                "label {k}={v} (has {})",
                                o["metadata"]["labels"][k].as_str().unwrap_or("none")
                            ));
                        }
                    }
                    for (k, v) in &c.annotations {
                        if o["metadata"]["annotations"][k].as_str() != Some(v) {
                            wrong.push(format!(
                                "annotation {k}={v} (has {})",
                                o["metadata"]["annotations"][k].as_str().unwrap_or("none")
                            ));
                        }
                    }
                    if wrong.is_empty() {
                        pass(format!("{who} exists"))
                    } else {
                        wait(format!("{who} exists but lacks {}", wrong.join(", ")))
                    }
                }
            }
        }
        ActionSpec::Crd(c) => match Api::<CustomResourceDefinition>::all(client.clone())
            .get_opt(&c.name)
            .await?
        {
            None => wait(format!("CRD {} not found", c.name)),
            Some(crd) => {
                let est = crd
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|x| x.type_ == "Established"))
                    .map(|x| x.status.clone());
                if est.as_deref() == Some("True") {
                    pass(format!("CRD {} Established", c.name))
                } else {
                    wait(format!("CRD {} not Established yet", c.name))
                }
            }
        },
        _ => return Err(color_eyre::eyre::eyre!("not a Kubernetes check")),
    })
}
