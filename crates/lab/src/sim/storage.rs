//! Storage in the lab (week 4): what the rook-ceph, rook-ceph-cluster, openebs and velero charts
//! render, and the controllers that move their custom resources' status (facts:
//! platform-components.md §3–§5).
//!
//! Level-triggered: each tick reads a CephCluster or BackupStorageLocation and moves its status one
//! step toward what the real operator would write, so a restarted lab carries on.
//! - CephCluster: nothing until the Rook operator runs; then `Progressing` ("Configuring Ceph
//!   Mons", "… Mgr(s)", "… OSDs", health `HEALTH_WARN` while OSDs come up) to `Ready`, condition
//!   `Ready`/`ClusterCreated` "Cluster created successfully" and `HEALTH_OK`. The
//!   `ceph-health-warn` fault leaves it at `HEALTH_WARN` with Ceph's reason.
//! - CephBlockPool: `Ready` once its cluster is.
//! - BackupStorageLocation: `Unavailable` until its bucket exists (an ObjectBucketClaim bound to
//!   that bucket name) and its credentials Secret exists; then `Available`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::charts::workload;
use crate::cluster::Objects;
use crate::core::FaultKind;

/// Seconds per CephCluster progress step, at speed 1.
const CEPH_STEP_SECONDS: f64 = 0.2;

fn crd(group: &str, plural: &str, kind: &str, version: &str, namespaced: bool) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": format!("{plural}.{group}")},
           "spec": {"group": group, "scope": if namespaced { "Namespaced" } else { "Cluster" },
                    "names": {"plural": plural, "kind": kind},
                    "versions": [{"name": version, "served": true, "storage": true, "subresources": {"status": {}}}]}})
}

fn helm_meta(o: &mut Value, release: &str, ns: &str) {
    o["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
    o["metadata"]["annotations"]["meta.helm.sh/release-name"] = json!(release);
    o["metadata"]["annotations"]["meta.helm.sh/release-namespace"] = json!(ns);
}

fn storage_class(name: &str, provisioner: &str, default: bool, params: Value) -> Value {
    let mut sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
                        "provisioner": provisioner, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate", "parameters": params});
    if default {
        sc["metadata"]["annotations"] =
            json!({"storageclass.kubernetes.io/is-default-class": "true"});
    }
    sc
}

fn truthy(v: &Value, default: bool) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true",
        Value::Null => default,
        _ => default,
    }
}

/// Render one of the storage charts.
pub fn render(chart: &str, version: &str, release: &str, ns: &str, values: &Value) -> Vec<Value> {
    let tag = format!("v{}", version.trim_start_matches('v'));
    let mut out = Vec::new();
    match chart {
        "rook-ceph" => {
            // The operator chart ships the CRDs (crds.enabled, default true).
            if truthy(&values["crds"]["enabled"], true) {
                for (plural, kind) in [
                    ("cephclusters", "CephCluster"),
                    ("cephblockpools", "CephBlockPool"),
                    ("cephfilesystems", "CephFilesystem"),
                    ("cephobjectstores", "CephObjectStore"),
                ] {
                    out.push(crd("ceph.rook.io", plural, kind, "v1", true));
                }
                out.push(crd(
                    "objectbucket.io",
                    "objectbucketclaims",
                    "ObjectBucketClaim",
                    "v1alpha1",
                    true,
                ));
            }
            out.push(workload(
                "Deployment",
                "rook-ceph-operator",
                ns,
                release,
                Some(1),
                false,
                &format!("docker.io/rook/ceph:{tag}"),
            ));
        }
        "rook-ceph-cluster" => {
            let op_ns = values["operatorNamespace"].as_str().unwrap_or(ns);
            let spec = if values["cephClusterSpec"].is_object() {
                values["cephClusterSpec"].clone()
            } else {
                json!({"dataDirHostPath": "/var/lib/rook", "mon": {"count": 3}})
            };
            let mut cc = json!({"apiVersion": "ceph.rook.io/v1", "kind": "CephCluster",
                                "metadata": {"name": values["clusterName"].as_str().unwrap_or(ns), "namespace": ns},
                                "spec": spec});
            cc["metadata"]["annotations"]["lab.bootstrap/operator-namespace"] = json!(op_ns);
            helm_meta(&mut cc, release, ns);
            out.push(cc);
            // Defaults of the chart: one pool `ceph-blockpool` with StorageClass `ceph-block`.
            let pools = values["cephBlockPools"].as_array().cloned().unwrap_or_else(|| {
                vec![json!({"name": "ceph-blockpool", "spec": {"failureDomain": "host", "replicated": {"size": 3}},
                            "storageClass": {"enabled": true, "name": "ceph-block", "isDefault": true}})]
            });
            for p in pools {
                let name = p["name"].as_str().unwrap_or("ceph-blockpool");
                let mut pool = json!({"apiVersion": "ceph.rook.io/v1", "kind": "CephBlockPool",
                                      "metadata": {"name": name, "namespace": ns}, "spec": p["spec"].clone()});
                helm_meta(&mut pool, release, ns);
                out.push(pool);
                if truthy(&p["storageClass"]["enabled"], true) {
                    let mut sc = storage_class(
                        p["storageClass"]["name"].as_str().unwrap_or("ceph-block"),
                        &format!("{op_ns}.rbd.csi.ceph.com"),
                        truthy(&p["storageClass"]["isDefault"], true),
                        json!({"clusterID": ns, "pool": name}),
                    );
                    helm_meta(&mut sc, release, ns);
                    out.push(sc);
                }
            }
        }
        "openebs" => {
            let lp = &values["localpv-provisioner"];
            out.push(workload(
                "Deployment",
                "openebs-localpv-provisioner",
                ns,
                release,
                Some(1),
                false,
                "openebs/provisioner-localpv:4.2.0",
            ));
            if truthy(&lp["hostpathClass"]["enabled"], true) {
                let base = lp["hostpathClass"]["basePath"]
                    .as_str()
                    .or(lp["localpv"]["basePath"].as_str())
                    .unwrap_or("/var/openebs/local");
                let mut sc = storage_class(
                    lp["hostpathClass"]["name"]
                        .as_str()
                        .unwrap_or("openebs-hostpath"),
                    "openebs.io/local",
                    truthy(&lp["hostpathClass"]["isDefaultClass"], false),
                    json!({}),
                );
                sc["metadata"]["annotations"]["cas.openebs.io/config"] = json!(format!(
                    "- name: StorageType\n  value: hostpath\n- name: BasePath\n  value: {base}\n"
                ));
                sc["volumeBindingMode"] = json!("WaitForFirstConsumer");
                helm_meta(&mut sc, release, ns);
                out.push(sc);
            }
            // Mayastor, LVM and ZFS are on unless turned off (facts §4).
            for (key, name) in [
                ("replicated", "openebs-io-engine"),
                ("lvm", "openebs-lvm-localpv-controller"),
                ("zfs", "openebs-zfs-localpv-controller"),
            ] {
                let on = if key == "replicated" {
                    truthy(
                        &values["engines"]["replicated"]["mayastor"]["enabled"],
                        true,
                    )
                } else {
                    truthy(&values["engines"]["local"][key]["enabled"], true)
                };
                if on {
                    out.push(workload(
                        "Deployment",
                        name,
                        ns,
                        release,
                        Some(1),
                        false,
                        "openebs/engine:4.2.0",
                    ));
                }
            }
        }
        "velero" => {
            for (plural, kind) in [
                ("backupstoragelocations", "BackupStorageLocation"),
                ("volumesnapshotlocations", "VolumeSnapshotLocation"),
                ("backups", "Backup"),
                ("schedules", "Schedule"),
            ] {
                out.push(crd("velero.io", plural, kind, "v1", true));
            }
            out.push(workload(
                "Deployment",
                "velero",
                ns,
                release,
                Some(1),
                false,
                "velero/velero:v1.17.1",
            ));
            for b in values["configuration"]["backupStorageLocation"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let mut bsl = json!({"apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
                    "metadata": {"name": b["name"].as_str().unwrap_or("default"), "namespace": ns},
                    "spec": {"provider": b["provider"].clone(), "default": b["default"].as_bool().unwrap_or(false),
                             "objectStorage": {"bucket": b["bucket"].clone(), "prefix": b["prefix"].clone()},
                             "config": b["config"].clone()}});
                if b["credential"].is_object() {
                    bsl["spec"]["credential"] = b["credential"].clone();
                }
                helm_meta(&mut bsl, release, ns);
                out.push(bsl);
            }
        }
        _ => {}
    }
    out
}

/// Per-cluster state: when each CephCluster generation started being built.
#[derive(Default)]
pub struct StorageState {
    started: HashMap<String, (i64, Instant)>,
}

fn ceph_status(step: u32, generation: i64, warn: bool) -> Value {
    let now = crate::apiserver::store::now();
    let progressing = |msg: &str, health: Option<&str>| {
        let mut s = json!({"phase": "Progressing", "state": "Creating", "message": msg, "observedGeneration": generation,
                           "conditions": [{"type": "Progressing", "status": "True", "reason": "ClusterProgressing", "message": msg, "lastTransitionTime": now}]});
        if let Some(h) = health {
            s["ceph"] = json!({"health": h, "lastChecked": now});
        }
        s
    };
    match step {
        0 => progressing("Configuring Ceph Mons", None),
        1 => progressing("Configuring Ceph Mgr(s)", Some("HEALTH_WARN")),
        2 => progressing("Configuring Ceph OSDs", Some("HEALTH_WARN")),
        _ => {
            let mut ceph = json!({"health": "HEALTH_OK", "lastChecked": now, "fsid": "5a4b2c1d-lab0-4c3e-9f00-000000000001"});
            if warn {
                ceph["health"] = json!("HEALTH_WARN");
                ceph["details"] = json!({"TOO_FEW_OSDS": {"message": "OSD count 2 < osd_pool_default_size 3", "severity": "HEALTH_WARN"}});
            }
            json!({"phase": "Ready", "state": "Created", "message": "Cluster created successfully", "observedGeneration": generation,
                   "ceph": ceph, "version": {"version": "19.2.3-0", "image": "quay.io/ceph/ceph:v19.2.3"},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterCreated", "message": "Cluster created successfully", "lastTransitionTime": now}]})
        }
    }
}

fn same_status(a: &Value, b: &Value) -> bool {
    a["phase"] == b["phase"]
        && a["message"] == b["message"]
        && a["ceph"]["health"] == b["ceph"]["health"]
        && a["observedGeneration"] == b["observedGeneration"]
}

/// One step of every storage controller.
pub async fn tick(
    state: &mut StorageState,
    c: &impl Objects,
    cluster: &str,
    faults: &[FaultKind],
    speed: f64,
) -> crate::Result<()> {
    let pace = Duration::from_secs_f64(CEPH_STEP_SECONDS / speed.max(0.01));
    let warn = faults
        .iter()
        .any(|f| matches!(f, FaultKind::CephHealthWarn { cluster: fc } if fc == cluster));
    // A list fails while the CRD does not exist: nothing to do yet.
    let clusters = c
        .list("ceph.rook.io/v1", "CephCluster", None, None)
        .await
        .unwrap_or_default();
    let mut ready_clusters = Vec::new();
    for cc in clusters {
        let ns = cc["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = cc["metadata"]["name"].as_str().unwrap_or("").to_string();
        let generation = cc["metadata"]["generation"].as_i64().unwrap_or(1);
        let op_ns = cc["metadata"]["annotations"]["lab.bootstrap/operator-namespace"]
            .as_str()
            .unwrap_or(&ns)
            .to_string();
        let operator_up = matches!(
            c.get("apps/v1", "Deployment", Some(&op_ns), "rook-ceph-operator").await,
            Ok(Some(d)) if super::workload_ready(&d)
        );
        if !operator_up {
            continue;
        }
        // Already built for this generation (an earlier run): it stays built.
        let settled = cc["status"]["phase"] == "Ready"
            && cc["status"]["observedGeneration"].as_i64() == Some(generation);
        let key = format!("{ns}/{name}");
        let entry = state.started.entry(key).or_insert_with(|| {
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
        let step = (entry.1.elapsed().as_secs_f64() / pace.as_secs_f64()) as u32;
        let status = ceph_status(step, generation, warn);
        if status["phase"] == "Ready" {
            ready_clusters.push(ns.clone());
        }
        if !same_status(&cc["status"], &status) {
            let mut o = cc.clone();
            o["status"] = status;
            let _ = c.replace_status(o).await;
        }
    }
    for pool in c
        .list("ceph.rook.io/v1", "CephBlockPool", None, None)
        .await
        .unwrap_or_default()
    {
        let ns = pool["metadata"]["namespace"].as_str().unwrap_or("");
        let generation = pool["metadata"]["generation"].as_i64().unwrap_or(1);
        let phase = if ready_clusters.iter().any(|n| n == ns) {
            "Ready"
        } else {
            "Progressing"
        };
        if pool["status"]["phase"] != phase
            || pool["status"]["observedGeneration"].as_i64() != Some(generation)
        {
            let mut o = pool.clone();
            o["status"] = json!({"phase": phase, "observedGeneration": generation});
            let _ = c.replace_status(o).await;
        }
    }
    let claims = c
        .list("objectbucket.io/v1alpha1", "ObjectBucketClaim", None, None)
        .await
        .unwrap_or_default();
    for bsl in c
        .list("velero.io/v1", "BackupStorageLocation", None, None)
        .await
        .unwrap_or_default()
    {
        let ns = bsl["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = bsl["metadata"]["name"].as_str().unwrap_or("").to_string();
        let velero_up = matches!(
            c.get("apps/v1", "Deployment", Some(&ns), "velero").await,
            Ok(Some(d)) if super::workload_ready(&d)
        );
        if !velero_up {
            continue;
        }
        let bucket = bsl["spec"]["objectStorage"]["bucket"]
            .as_str()
            .unwrap_or("");
        let bucket_exists = claims.iter().any(|o| {
            o["spec"]["bucketName"].as_str() == Some(bucket) && o["status"]["phase"] == "Bound"
        });
        let cred = bsl["spec"]["credential"]["name"].as_str();
        let cred_ok = match cred {
            None => true,
            Some(s) => matches!(c.get("v1", "Secret", Some(&ns), s).await, Ok(Some(_))),
        };
        // Velero's validation messages [unverified exact wording; facts §5 gives the fields].
        let (phase, message) = if !cred_ok {
            (
                "Unavailable",
                format!(
                    "BackupStorageLocation \"{name}\" is unavailable: unable to get credentials: secrets \"{}\" not found",
                    cred.unwrap_or("")
                ),
            )
        } else if !bucket_exists {
            (
                "Unavailable",
                format!(
                    "BackupStorageLocation \"{name}\" is unavailable: rpc error: code = Unknown desc = NoSuchBucket: The specified bucket does not exist: bucket {bucket}"
                ),
            )
        } else {
            ("Available", String::new())
        };
        if bsl["status"]["phase"] != phase
            || bsl["status"]["message"].as_str().unwrap_or("") != message
        {
            let mut o = bsl.clone();
            o["status"] = json!({"phase": phase, "message": message, "lastValidationTime": crate::apiserver::store::now()});
            if message.is_empty() {
                o["status"].as_object_mut().map(|m| m.remove("message"));
            }
            let _ = c.replace_status(o).await;
        }
    }
    Ok(())
}
