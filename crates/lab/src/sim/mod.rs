//! Simulated controllers: what the kubelet, the DaemonSet and Deployment controllers, Flux's
//! controllers and Cilium would do, acting on each lab cluster's store on simulated time.
//!
//! Cause and effect follow real clusters: nodes are NotReady until a CNI DaemonSet is available;
//! pods (other than host-network ones such as Cilium's) never become ready without a CNI; so Flux's
//! controllers wait for Cilium; Kustomizations and HelmReleases become Ready in `dependsOn` order.
//! Owns no HTTP and no tool behaviour.

pub mod flux;
pub mod jaeger;
pub mod kubelet;
pub mod mesh;
pub mod platform;
pub mod policy;
pub mod probe;
pub mod storage;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::apiserver::Store;
use super::cluster::{Local, Objects};
use super::core::{FaultKind, LabDir, Topology};

/// The kubelet's NotReady condition before a CNI exists (facts §7.1).
pub const NOT_READY_MESSAGE: &str = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized";

pub use crate::cluster::workload_ready;

/// Per-cluster controller state: when each workload generation started rolling out.
struct Sim {
    cluster: String,
    store: Store,
    topo: Topology,
    dir: LabDir,
    started: HashMap<String, (i64, Instant)>,
    flux: flux::FluxState,
    storage: storage::StorageState,
    platform: platform::PlatformState,
}

/// Seconds per pod becoming ready, at speed 1.
const POD_SECONDS: f64 = 0.15;

impl Sim {
    fn pace(&self) -> Duration {
        Duration::from_secs_f64(POD_SECONDS / self.topo.speed.max(0.01))
    }

    fn faults(&self) -> Vec<FaultKind> {
        let mut all: Vec<FaultKind> = self.topo.faults.iter().map(|f| f.kind.clone()).collect();
        // Faults can also arrive while the lab runs (tests, rehearsals).
        if let Ok(Some(extra)) = crate::core::read_json::<Vec<super::core::Fault>>(
            &self.dir.root().join("extra-faults.json"),
        ) {
            all.extend(extra.into_iter().map(|f| f.kind));
        }
        all
    }

    async fn tick(&mut self) -> crate::Result<()> {
        let c = Local(self.store.clone());
        let faults = self.faults();
        // Kubelets register the configured nodes of a bootstrapped cluster (again, after a crash).
        let _ = kubelet::reconcile(&c, &self.dir, &self.topo, &self.cluster).await;
        let nodes = c.list("v1", "Node", None, None).await?;
        let node_count = nodes.len() as i64;
        let cni_ready = c
            .get("apps/v1", "DaemonSet", Some("kube-system"), "cilium")
            .await?
            .is_some_and(|ds| workload_ready(&ds));

        // Nodes: Ready once the CNI runs.
        for mut n in nodes {
            let name = n["metadata"]["name"].as_str().unwrap_or("").to_string();
            let stuck = faults.iter().any(|f| matches!(f, FaultKind::NodeNotReady { cluster, node } if *cluster == self.cluster && *node == name));
            let ready = cni_ready && !stuck;
            let want = if ready { "True" } else { "False" };
            let cur = n["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["status"].as_str())
                .unwrap_or("")
                .to_string();
            if cur != want {
                let now = super::apiserver::store::now();
                let cond = if ready {
                    json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now})
                } else {
                    json!({"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": NOT_READY_MESSAGE, "lastHeartbeatTime": now, "lastTransitionTime": now})
                };
                n["status"]["conditions"] = json!([cond]);
                let taints = if ready {
                    json!([])
                } else {
                    json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}])
                };
                n["spec"]["taints"] = taints.clone();
                let Ok(n2) = c.replace(n.clone()).await else {
                    continue;
                };
                let mut n3 = n2.clone();
                n3["status"] = n["status"].clone();
                let _ = c.replace_status(n3).await;
            }
        }

        // Workloads roll out over simulated time.
        for kind in ["DaemonSet", "Deployment", "StatefulSet"] {
            for w in c.list("apps/v1", kind, None, None).await? {
                let ns = w["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let name = w["metadata"]["name"].as_str().unwrap_or("").to_string();
                let key = format!("{kind}/{ns}/{name}");
                let pace = self.pace().as_secs_f64();
                let speed = self.topo.speed.max(0.01);
                let generation = w["metadata"]["generation"].as_i64().unwrap_or(1);
                // A workload already rolled out for its generation (in an earlier run) stays so.
                let settled = workload_ready(&w);
                let entry = self.started.entry(key.clone()).or_insert_with(|| {
                    let since = if settled {
                        Instant::now()
                            .checked_sub(Duration::from_secs(3600))
                            .unwrap_or_else(Instant::now)
                    } else {
                        Instant::now()
                    };
                    (generation, since)
                });
                if entry.0 != generation {
                    *entry = (generation, Instant::now());
                }
                let host_network = w["spec"]["template"]["spec"]["hostNetwork"]
                    .as_bool()
                    .unwrap_or(false);
                let desired = if kind == "DaemonSet" {
                    node_count
                } else {
                    w["spec"]["replicas"].as_i64().unwrap_or(1)
                };
                let can_run = node_count > 0 && (host_network || cni_ready);
                let mut ready = if can_run {
                    ((entry.1.elapsed().as_secs_f64() / pace) as i64).min(desired)
                } else {
                    0
                };
                for f in &faults {
                    if let FaultKind::RolloutStuck {
                        cluster,
                        namespace,
                        name: n,
                        ready: k,
                    } = f
                        && *cluster == self.cluster
                        && *namespace == ns
                        && *n == name
                    {
                        ready = ready.min(*k as i64);
                    }
                }
                let status = if kind == "DaemonSet" {
                    json!({"observedGeneration": generation, "desiredNumberScheduled": desired, "currentNumberScheduled": desired, "updatedNumberScheduled": desired,
                           "numberReady": ready, "numberAvailable": ready, "numberUnavailable": desired - ready, "numberMisscheduled": 0})
                } else {
                    let avail = if ready >= desired { "True" } else { "False" };
                    // A Deployment that makes no progress for spec.progressDeadlineSeconds (600 by
                    // default) gets Progressing=False, ProgressDeadlineExceeded; the lab runs time
                    // about 100 times faster (a pod in 0.15 s), so the deadline is scaled alike.
                    let deadline = w["spec"]["progressDeadlineSeconds"]
                        .as_f64()
                        .unwrap_or(600.0)
                        * POD_SECONDS
                        / 15.0
                        / speed;
                    let progressing = if kind == "Deployment"
                        && ready < desired
                        && entry.1.elapsed().as_secs_f64() > deadline
                    {
                        json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": format!("ReplicaSet \"{name}-{generation}\" has timed out progressing.")})
                    } else if ready < desired {
                        json!({"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": format!("ReplicaSet \"{name}-{generation}\" is progressing.")})
                    } else {
                        json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet \"{name}-{generation}\" has successfully progressed.")})
                    };
                    let mut s = json!({"observedGeneration": generation, "replicas": desired, "updatedReplicas": desired, "readyReplicas": ready, "availableReplicas": ready,
                           "conditions": [{"type": "Available", "status": avail, "reason": if avail == "True" { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }},
                                          progressing]});
                    if kind == "StatefulSet" {
                        s["currentReplicas"] = json!(ready);
                        s["currentRevision"] = json!(format!("{name}-{generation}"));
                        s["updateRevision"] = json!(format!("{name}-{generation}"));
                    }
                    s
                };
                if w["status"] != status {
                    let mut w2 = w.clone();
                    w2["status"] = status;
                    // A conflict (someone else wrote it meanwhile) is retried on the next tick.
                    let _ = c.replace_status(w2).await;
                }
            }
        }

        // The Cilium operator registers Cilium's CRDs when it runs (they are not in the chart).
        if c.get(
            "apps/v1",
            "Deployment",
            Some("kube-system"),
            "cilium-operator",
        )
        .await?
        .is_some_and(|d| workload_ready(&d))
        {
            let _ = cilium_crds(&c).await;
        }

        // Flux reconciles whatever happened above; its errors are retried on the next tick.
        let _ = flux::tick(&mut self.flux, &c, &self.dir, &self.topo, &self.cluster).await;
        // Storage operators (Rook, Velero) move their resources' status.
        // Platform operators (CNPG, Dragonfly, Rook RGW, Keycloak, cert-manager, ARC,
        // Mattermost) move theirs; buckets they provision are served to every cluster.
        platform::tick(
            &mut self.platform,
            &c,
            &self.dir,
            &self.cluster,
            &faults,
            self.topo.speed,
        )
        .await;
        let buckets: Vec<String> = crate::core::read_json(&self.dir.root().join("buckets.json"))
            .ok()
            .flatten()
            .unwrap_or_default();
        let _ = storage::tick(
            &mut self.storage,
            &c,
            &self.cluster,
            &faults,
            self.topo.speed,
            &buckets,
        )
        .await;
        Ok(())
    }
}

/// The policy CRDs the Cilium operator registers at start (cilium.io/v2), when missing.
async fn cilium_crds(c: &Local) -> crate::Result<()> {
    for (plural, kind, scope, short) in [
        (
            "ciliumnetworkpolicies",
            "CiliumNetworkPolicy",
            "Namespaced",
            "cnp",
        ),
        (
            "ciliumclusterwidenetworkpolicies",
            "CiliumClusterwideNetworkPolicy",
            "Cluster",
            "ccnp",
        ),
    ] {
        let name = format!("{plural}.cilium.io");
        if c.get(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            &name,
        )
        .await?
        .is_some()
        {
            continue;
        }
        c.create(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {"group": "cilium.io", "scope": scope,
                     "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind, "shortNames": [short]},
                     "versions": [{"name": "v2", "served": true, "storage": true, "subresources": {"status": {}}}]}}))
            .await?;
    }
    Ok(())
}

/// Start the controllers for one cluster; they stop when the returned handle is aborted.
pub fn start(
    cluster: &str,
    store: Store,
    topo: Topology,
    dir: LabDir,
) -> tokio::task::JoinHandle<()> {
    let mut sim = Sim {
        cluster: cluster.to_string(),
        store,
        topo,
        dir,
        started: HashMap::new(),
        flux: flux::FluxState::default(),
        storage: storage::StorageState::default(),
        platform: platform::PlatformState::default(),
    };
    tokio::spawn(async move {
        loop {
            let _ = sim.tick().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}
