//! The lab's Helm: built-in charts (cilium, and a generic one for anything else) and release storage
//! as Secrets `sh.helm.release.v1.<name>.v<revision>` exactly as Helm stores them (type
//! `helm.sh/release.v1`, labels name/owner/status/version, data.release = base64 of gzipped JSON).
//! Used by the helm and cilium stand-ins and by the simulated helm-controller.

use std::io::{Read, Write};

use base64::Engine;
use serde_json::{Value, json};

use super::cluster::Objects;
use crate::Result;

/// Set a dotted key (`a.b.c=v`, helm `--set` syntax; `{x,y}` is a list) in a values tree.
pub fn set_value(values: &mut Value, assignment: &str) {
    let Some((key, raw)) = assignment.split_once('=') else {
        return;
    };
    let parsed = if raw.starts_with('{') && raw.ends_with('}') {
        Value::Array(
            raw[1..raw.len() - 1]
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )
    } else if raw == "true" || raw == "false" {
        Value::Bool(raw == "true")
    } else if let Ok(n) = raw.parse::<i64>() {
        json!(n)
    } else {
        Value::String(raw.to_string())
    };
    let mut cur = values;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        if i == parts.len() - 1 {
            cur[*p] = parsed.clone();
        } else {
            cur = cur
                .as_object_mut()
                .expect("object")
                .entry(p.to_string())
                .or_insert(json!({}));
        }
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true",
        _ => false,
    }
}

pub(crate) fn workload(
    kind: &str,
    name: &str,
    ns: &str,
    release: &str,
    replicas: Option<i64>,
    host_network: bool,
    image: &str,
) -> Value {
    let mut spec = json!({
        "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": release}},
            "spec": {"hostNetwork": host_network, "containers": [{"name": name, "image": image}]}
        }
    });
    if kind == "DaemonSet" {
        spec["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}});
    } else {
        spec["replicas"] = json!(replicas.unwrap_or(1));
        spec["strategy"] = json!({"type": "RollingUpdate"});
    }
    json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": release},
                     "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": ns}},
        "spec": spec
    })
}

/// Render a chart's objects from its values.
pub fn render(chart: &str, version: &str, release: &str, ns: &str, values: &Value) -> Vec<Value> {
    let tag = format!("v{}", version.trim_start_matches('v'));
    match chart {
        "cilium" => {
            let mut out = Vec::new();
            let kpr = values["kubeProxyReplacement"].clone();
            let wg = truthy(&values["encryption"]["enabled"])
                && values["encryption"]["type"].as_str() == Some("wireguard");
            let cfg = json!({
                "cluster-name": values["cluster"]["name"].as_str().unwrap_or("default"),
                "cluster-id": values["cluster"]["id"].to_string().trim_matches('"'),
                "kube-proxy-replacement": if truthy(&kpr) { "true" } else { "false" },
                "ipam": values["ipam"]["mode"].as_str().unwrap_or("cluster-pool"),
                "enable-wireguard": if wg { "true" } else { "false" },
                "routing-mode": values["routingMode"].as_str().unwrap_or("tunnel"),
                "ipv4-native-routing-cidr": values["ipv4NativeRoutingCIDR"].as_str().unwrap_or(""),
                "enable-hubble": if values["hubble"]["enabled"].is_null() || truthy(&values["hubble"]["enabled"]) { "true" } else { "false" },
                "k8s-service-host": values["k8sServiceHost"].as_str().unwrap_or(""),
                "k8s-service-port": values["k8sServicePort"].to_string().trim_matches('"'),
            });
            out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "cilium", "namespace": ns}}));
            out.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cilium-config", "namespace": ns}, "data": cfg}));
            out.push(workload(
                "DaemonSet",
                "cilium",
                ns,
                release,
                None,
                true,
                &format!("quay.io/cilium/cilium:{tag}"),
            ));
            let op_replicas = values["operator"]["replicas"].as_i64().unwrap_or(2);
            out.push(workload(
                "Deployment",
                "cilium-operator",
                ns,
                release,
                Some(op_replicas),
                true,
                &format!("quay.io/cilium/operator-generic:{tag}"),
            ));
            if truthy(&values["hubble"]["relay"]["enabled"]) {
                out.push(workload(
                    "Deployment",
                    "hubble-relay",
                    ns,
                    release,
                    Some(1),
                    false,
                    &format!("quay.io/cilium/hubble-relay:{tag}"),
                ));
            }
            if truthy(&values["hubble"]["ui"]["enabled"]) {
                out.push(workload(
                    "Deployment",
                    "hubble-ui",
                    ns,
                    release,
                    Some(1),
                    false,
                    "quay.io/cilium/hubble-ui:v0.13.3",
                ));
            }
            if truthy(&values["clustermesh"]["useAPIServer"]) {
                let replicas = values["clustermesh"]["apiserver"]["replicas"]
                    .as_i64()
                    .unwrap_or(1);
                out.push(workload(
                    "Deployment",
                    "clustermesh-apiserver",
                    ns,
                    release,
                    Some(replicas),
                    false,
                    &format!("quay.io/cilium/clustermesh-apiserver:{tag}"),
                ));
                let st = values["clustermesh"]["apiserver"]["service"]["type"]
                    .as_str()
                    .unwrap_or("NodePort");
                out.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "clustermesh-apiserver", "namespace": ns},
                    "spec": {"type": st, "selector": {"app.kubernetes.io/name": "clustermesh-apiserver"}, "ports": [{"name": "apiserv", "port": 2379, "nodePort": 32379, "protocol": "TCP"}]}}));
            }
            out.extend(super::sim::mesh::render_mesh_secrets(ns, values));
            out
        }
        "jaeger" => super::sim::jaeger::render(version, release, ns, values),
        "rook-ceph" | "rook-ceph-cluster" | "openebs" | "velero" => {
            super::sim::storage::render(chart, version, release, ns, values)
        }
        c if super::sim::platform::CHARTS.contains(&c) => {
            super::sim::platform::render(chart, version, release, ns, values)
        }
        other => vec![workload(
            "Deployment",
            release,
            ns,
            release,
            Some(1),
            false,
            &format!("registry.example/{other}:{tag}"),
        )],
    }
}

/// A stored release, decoded.
#[derive(Debug, Clone)]
pub struct Release {
    pub name: String,
    pub namespace: String,
    pub version: i64,
    pub status: String,
    pub json: Value,
}

fn encode(release: &Value) -> String {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = gz.write_all(&serde_json::to_vec(release).unwrap_or_default());
    let zipped = gz.finish().unwrap_or_default();
    // Helm base64-encodes the gzip; the Secret's data field base64-encodes that again on the wire.
    let helm = base64::engine::general_purpose::STANDARD.encode(zipped);
    base64::engine::general_purpose::STANDARD.encode(helm)
}

fn decode(data: &str) -> Option<Value> {
    let helm = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()?;
    let zipped = base64::engine::general_purpose::STANDARD
        .decode(helm)
        .ok()?;
    let mut s = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut s)
        .ok()?;
    serde_json::from_slice(&s).ok()
}

/// Every stored revision of a release, oldest first.
pub async fn history(c: &impl Objects, ns: &str, name: &str) -> Result<Vec<Release>> {
    let mut out: Vec<Release> = c
        .list(
            "v1",
            "Secret",
            Some(ns),
            Some(&format!("owner=helm,name={name}")),
        )
        .await?
        .into_iter()
        .filter_map(|s| {
            let json = decode(s["data"]["release"].as_str()?)?;
            Some(Release {
                name: name.to_string(),
                namespace: ns.to_string(),
                version: json["version"].as_i64().unwrap_or(0),
                status: s["metadata"]["labels"]["status"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_string(),
                json,
            })
        })
        .collect();
    out.sort_by_key(|r| r.version);
    Ok(out)
}

/// The latest revision.
pub async fn latest(c: &impl Objects, ns: &str, name: &str) -> Result<Option<Release>> {
    Ok(history(c, ns, name).await?.pop())
}

fn rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// Store a revision and mark the previous deployed one superseded. The arguments are a release's
/// own fields, as Helm records them.
#[allow(clippy::too_many_arguments)]
pub async fn store_release(
    c: &impl Objects,
    ns: &str,
    name: &str,
    chart: &str,
    version: &str,
    values: &Value,
    status: &str,
    description: &str,
) -> Result<Release> {
    let hist = history(c, ns, name).await?;
    let rev = hist.last().map(|r| r.version + 1).unwrap_or(1);
    for r in hist.iter().filter(|r| r.status == "deployed") {
        let sname = format!("sh.helm.release.v1.{name}.v{}", r.version);
        if let Some(mut s) = c.get("v1", "Secret", Some(ns), &sname).await? {
            s["metadata"]["labels"]["status"] = json!("superseded");
            let mut j = r.json.clone();
            j["info"]["status"] = json!("superseded");
            s["data"]["release"] = json!(encode(&j));
            c.replace(s).await?;
        }
    }
    let first = hist
        .first()
        .map(|r| r.json["info"]["first_deployed"].clone())
        .unwrap_or_else(|| json!(rfc3339()));
    let manifest: Vec<String> = render(chart, version, name, ns, values)
        .iter()
        .map(|o| serde_json::to_string(o).unwrap_or_default())
        .collect();
    let rel = json!({
        "name": name,
        "info": {"first_deployed": first, "last_deployed": rfc3339(), "deleted": "", "description": description, "status": status, "notes": ""},
        "chart": {"metadata": {"name": chart, "version": version.trim_start_matches('v'), "appVersion": version.trim_start_matches('v'), "apiVersion": "v2"}},
        "config": values,
        "manifest": manifest.join("\n---\n"),
        "version": rev,
        "namespace": ns,
    });
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"name": format!("sh.helm.release.v1.{name}.v{rev}"), "namespace": ns,
                     "labels": {"name": name, "owner": "helm", "status": status, "version": rev.to_string()}},
        "data": {"release": encode(&rel)}
    });
    c.create(secret).await?;
    Ok(Release {
        name: name.into(),
        namespace: ns.into(),
        version: rev,
        status: status.into(),
        json: rel,
    })
}

/// `helm upgrade --reuse-values`: the latest revision's chart and values, changed by `edit`,
/// rendered and stored as a new revision. What `cilium hubble enable` and `cilium clustermesh
/// enable|connect` do to the `cilium` release.
pub async fn upgrade_reusing_values(
    c: &impl Objects,
    ns: &str,
    release: &str,
    edit: impl FnOnce(&mut Value),
) -> Result<Release> {
    let latest = latest(c, ns, release)
        .await?
        .ok_or_else(|| color_eyre::eyre::eyre!("release: not found"))?;
    let mut values = latest.json["config"].clone();
    edit(&mut values);
    let chart = latest.json["chart"]["metadata"]["name"]
        .as_str()
        .unwrap_or(release)
        .to_string();
    let version = latest.json["chart"]["metadata"]["version"]
        .as_str()
        .unwrap_or("0.0.0")
        .to_string();
    apply_chart(c, &chart, &version, release, ns, &values).await?;
    store_release(
        c,
        ns,
        release,
        &chart,
        &version,
        &values,
        "deployed",
        "Upgrade complete",
    )
    .await
}

/// Apply a chart's objects to the cluster (create or update).
pub async fn apply_chart(
    c: &impl Objects,
    chart: &str,
    version: &str,
    release: &str,
    ns: &str,
    values: &Value,
) -> Result<Vec<Value>> {
    let objs = render(chart, version, release, ns, values);
    for o in &objs {
        c.apply(o.clone()).await?;
    }
    Ok(objs)
}

/// Whether every workload of a rendered chart has rolled out (kubectl's rules).
pub async fn rolled_out(c: &impl Objects, objs: &[Value]) -> Result<bool> {
    for o in objs {
        let kind = o["kind"].as_str().unwrap_or("");
        if kind != "Deployment" && kind != "DaemonSet" {
            continue;
        }
        let ns = o["metadata"]["namespace"].as_str();
        let name = o["metadata"]["name"].as_str().unwrap_or("");
        let Some(cur) = c.get("apps/v1", kind, ns, name).await? else {
            return Ok(false);
        };
        if !crate::cluster::workload_ready(&cur) {
            return Ok(false);
        }
    }
    Ok(true)
}
