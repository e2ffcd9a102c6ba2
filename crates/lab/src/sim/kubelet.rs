//! The kubelets: every configured node of a bootstrapped cluster has a Node object.
//!
//! Level-triggered, as a real kubelet is: each tick compares talos.json (which machines hold a
//! config of this cluster, and whether the cluster is bootstrapped) with the API server's Node
//! objects and registers what is missing. A lab killed between `talosctl bootstrap` and the
//! registrations (or one whose API server lost writes) heals on its next start, as a real cluster
//! does when its kubelets keep retrying registration.
//!
//! The `flow` check's probe Pods are run by the kubelets' other part, `probe.rs`, which needs every
//! cluster's store (a flow crosses clusters).

use serde_json::{Value, json};

use crate::cluster::Objects;
use crate::core::{LabDir, Topology};
use crate::talos::TalosState;

/// A freshly registered Node: NotReady with the kubelet's message until a CNI runs (facts §7.1).
pub fn node_object(name: &str, ip: &str, role: &str, kubernetes_version: &str) -> Value {
    let now = crate::apiserver::store::now();
    let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"});
    if role != "worker" {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]},
        "status": {
            "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": super::NOT_READY_MESSAGE, "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": format!("v{}", kubernetes_version.trim_start_matches('v')), "osImage": "Talos (v1.11.5)", "containerRuntimeVersion": "containerd://2.1.5", "kernelVersion": "6.12.57-talos", "architecture": "amd64", "operatingSystem": "linux"}
        }
    })
}

/// Register one node unless it exists (create, then its status through /status).
pub async fn register(c: &impl Objects, node: Value) -> crate::Result<()> {
    let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
    if c.get("v1", "Node", None, &name).await?.is_some() {
        return Ok(());
    }
    // The stand-in and the kubelet controller may race: whoever registers first wins.
    let mut created = match c.create(node.clone()).await {
        Ok(o) => o,
        Err(e) if format!("{e:#}").contains("already exists") => return Ok(()),
        Err(e) => return Err(e),
    };
    created["status"] = node["status"].clone();
    c.replace_status(created).await?;
    Ok(())
}

/// The nodes of `cluster` that should be registered now: the cluster is bootstrapped and the
/// machine holds a config of this cluster.
pub fn expected(talos: &TalosState, topo: &Topology, cluster: &str) -> Vec<Value> {
    if !talos.bootstrapped.get(cluster).copied().unwrap_or(false) {
        return Vec::new();
    }
    let Some(c) = topo.cluster(cluster) else {
        return Vec::new();
    };
    c.nodes
        .iter()
        .filter_map(|n| {
            let st = talos.nodes.get(&n.ip)?;
            (st.cluster == cluster)
                .then(|| node_object(&n.name, &n.ip, &n.role, &st.kubernetes_version))
        })
        .collect()
}

/// One reconcile pass for a cluster.
pub async fn reconcile(
    c: &impl Objects,
    dir: &LabDir,
    topo: &Topology,
    cluster: &str,
) -> crate::Result<()> {
    let talos: TalosState = crate::core::read_json(&dir.talos())?.unwrap_or_default();
    for node in expected(&talos, topo, cluster) {
        register(c, node).await?;
    }
    Ok(())
}
