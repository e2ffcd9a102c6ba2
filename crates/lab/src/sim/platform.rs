//! Platform services in the lab (weeks 5-7): what the operators do to their custom resources'
//! status, level-triggered (each tick reads what it finds and moves it one step toward what the
//! real operator writes, so a restarted lab carries on). Facts: platform-components.md §0, §6-§17.
//!
//! - CloudNativePG `Cluster` (§6; cloudnative-pg `api/v1/cluster_types.go`): once the operator
//!   runs, instance pods `<name>-1..N` (each Ready a moment after it exists; a deleted pod is
//!   recreated under its name, as CNPG does with its PVC), Services `<name>-rw/-ro/-r` carrying
//!   `spec.inheritedMetadata`, and status `instances`, `readyInstances`, `currentPrimary`, `phase`
//!   ("Cluster in healthy state" when every instance is ready, else "Creating a new replica" /
//!   "Setting up primary") with condition Ready (ClusterIsReady "Cluster is Ready" /
//!   ClusterIsNotReady "Cluster Is Not Ready"); `managedRolesStatus.byStatus` lists the
//!   `spec.managed.roles` whose password Secret exists as reconciled, the others under
//!   `cannotReconcile` with the reason (`ManagedRoles{byStatus map[RoleStatus][]string,
//!   cannotReconcile map[string][]string}`, cloudnative-pg `api/v1/cluster_types.go`, read through
//!   the code search). The `rollout-stuck` fault on the Cluster's namespace and
//!   name caps its ready instances.
//! - CNPG `Database` (§6): `status.applied` true (and each `spec.extensions` item applied, as
//!   `status.extensions[]` of `DatabaseObjectStatus{name, applied, message}`, cloudnative-pg
//!   `api/v1/database_types.go`) once its cluster is healthy and its owner is a reconciled role;
//!   otherwise false with `message`.
//! - Dragonfly (§7): a StatefulSet and the Service `<name>` (with `spec.serviceSpec.annotations`);
//!   `status.phase` ResourcesCreated → Ready when the StatefulSet has rolled out.
//! - Rook `CephObjectStore` (§3): Ready once its CephCluster is, with the RGW Deployment
//!   `rook-ceph-rgw-<name>-a`; `ObjectBucketClaim` on a `…ceph.rook.io/bucket` class: Bound once its
//!   store is Ready, with Secret and ConfigMap `<claim>` (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY;
//!   BUCKET_HOST/BUCKET_NAME/BUCKET_PORT), the bucket recorded lab-wide (`buckets.json`, what the S3
//!   endpoint serves to every cluster); `CephObjectStoreUser`: Ready with Secret
//!   `rook-ceph-object-user-<store>-<user>` (AccessKey, SecretKey, Endpoint).
//! - Keycloak (§9): a StatefulSet `<name>`; conditions Ready, HasErrors and RollingUpdate
//!   (`True`/`False`), HasErrors True naming a missing database Secret.
//! - cert-manager `ClusterIssuer` (§11): a CA issuer is Ready (KeyPairVerified, "Signing CA
//!   verified") when its Secret in `cert-manager` holds tls.crt and tls.key, else ErrGetKeyPair.
//! - ARC `AutoscalingRunnerSet` (§13, chart 0.14+): `status.phase` Pending until the controller
//!   runs and the GitHub config Secret exists, then Running with `currentRunners` = minRunners.
//!   The `rollout-stuck` fault keeps it Pending.
//! - Mattermost (§17): a Deployment `<name>`; `status.state` reconciling → ready → stable; without
//!   `DB_CONNECTION_STRING` in its database Secret, `status.error` says so (the operator's typo
//!   included).

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{Value, json};

use crate::cluster::Objects;
use crate::core::{FaultKind, LabDir};

/// Seconds per platform step (a pod becoming ready, a phase moving on), at speed 1.
const STEP_SECONDS: f64 = 0.15;

/// When each object (kind/ns/name@generation) was first seen wanting work.
#[derive(Default)]
pub struct PlatformState {
    since: HashMap<String, Instant>,
}

impl PlatformState {
    /// Steps elapsed since `key` first needed work (0 the first time it is seen).
    fn steps(&mut self, key: String, pace: f64) -> u32 {
        let t = self.since.entry(key).or_insert_with(Instant::now);
        (t.elapsed().as_secs_f64() / pace) as u32
    }
    fn forget(&mut self, key: &str) {
        self.since.remove(key);
    }
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    p.split('.').fold(v, |v, k| &v[k]).as_str().unwrap_or("")
}

fn generation(o: &Value) -> i64 {
    o["metadata"]["generation"].as_i64().unwrap_or(1)
}

async fn deployment_ready(c: &impl Objects, ns: &str, name: &str) -> bool {
    matches!(c.get("apps/v1", "Deployment", Some(ns), name).await, Ok(Some(d)) if super::workload_ready(&d))
}

/// Any Deployment in `ns` whose name ends with `suffix` is rolled out (an operator whose name
/// carries its release name).
async fn operator_ready(c: &impl Objects, ns: Option<&str>, suffix: &str) -> bool {
    c.list("apps/v1", "Deployment", ns, None)
        .await
        .unwrap_or_default()
        .iter()
        .any(|d| s(d, "metadata.name").ends_with(suffix) && super::workload_ready(d))
}

async fn secret(c: &impl Objects, ns: &str, name: &str) -> Option<Value> {
    c.get("v1", "Secret", Some(ns), name).await.ok().flatten()
}

/// Write `status` when it differs from what the object has (fields compared as written).
async fn set_status(c: &impl Objects, mut o: Value, status: Value) {
    if o["status"] != status {
        o["status"] = status;
        // A conflict means someone wrote it meanwhile: the next tick tries again.
        let _ = c.replace_status(o).await;
    }
}

fn owned(o: &mut Value, owner: &Value, labels: Value) {
    o["metadata"]["ownerReferences"] = json!([{"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "controller": true}]);
    if let Some(l) = labels.as_object() {
        for (k, v) in l {
            o["metadata"]["labels"][k] = v.clone();
        }
    }
}

/// Create an object unless one of that name exists (the operators' "ensure").
async fn ensure(c: &impl Objects, o: Value) {
    let api = s(&o, "apiVersion").to_string();
    let kind = s(&o, "kind").to_string();
    let ns = o["metadata"]["namespace"].as_str().map(String::from);
    let name = s(&o, "metadata.name").to_string();
    if matches!(c.get(&api, &kind, ns.as_deref(), &name).await, Ok(None)) {
        let _ = c.create(o).await;
    }
}

/// Serving pods `<base>-<i>` of a workload the operator made (what a flow probe's Service or
/// endpoint resolves to): Running and Ready, with `labels` and one container port.
async fn ensure_pods(
    c: &impl Objects,
    owner: &Value,
    ns: &str,
    base: &str,
    n: i64,
    labels: Value,
    port: u16,
) {
    for i in 0..n {
        let name = format!("{base}-{i}");
        if !matches!(c.get("v1", "Pod", Some(ns), &name).await, Ok(None)) {
            continue;
        }
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": base, "image": "lab", "ports": [{"containerPort": port, "protocol": "TCP"}]}]}});
        owned(&mut p, owner, labels.clone());
        if let Ok(mut created) = c.create(p).await {
            created["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": base, "ready": true, "restartCount": 0, "state": {"running": {"startedAt": now()}}}]});
            let _ = c.replace_status(created).await;
        }
    }
}

fn b64(v: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(v)
}

fn key(seed: &str, n: usize) -> String {
    use sha2::{Digest, Sha256};
    let h = hex::encode(Sha256::digest(seed.as_bytes()));
    h[..n].to_uppercase()
}

fn now() -> String {
    crate::apiserver::store::now()
}

fn cond(t: &str, status: &str, reason: &str, message: &str, generation: i64) -> Value {
    json!({"type": t, "status": status, "reason": reason, "message": message, "observedGeneration": generation, "lastTransitionTime": now()})
}

/// One step of every platform controller on one cluster.
pub async fn tick(
    st: &mut PlatformState,
    c: &impl Objects,
    dir: &LabDir,
    cluster: &str,
    faults: &[FaultKind],
    speed: f64,
) {
    let pace = STEP_SECONDS / speed.max(0.01);
    let stuck = |ns: &str, name: &str| {
        faults.iter().find_map(|f| match f {
            FaultKind::RolloutStuck {
                cluster: fc,
                namespace,
                name: n,
                ready,
            } if fc == cluster && namespace == ns && n == name => Some(*ready as i64),
            _ => None,
        })
    };
    cnpg(st, c, pace, &stuck).await;
    databases(c).await;
    dragonfly(st, c, pace).await;
    object_store(st, c, dir, pace).await;
    keycloak(c).await;
    cluster_issuers(c).await;
    runner_sets(c, &stuck).await;
    mattermost(st, c, pace).await;
}

async fn cnpg(
    st: &mut PlatformState,
    c: &impl Objects,
    pace: f64,
    stuck: &impl Fn(&str, &str) -> Option<i64>,
) {
    let Ok(clusters) = c.list("postgresql.cnpg.io/v1", "Cluster", None, None).await else {
        return;
    };
    if clusters.is_empty() || !operator_ready(c, None, "-cloudnative-pg").await {
        return;
    }
    for cl in clusters {
        let ns = s(&cl, "metadata.namespace").to_string();
        let name = s(&cl, "metadata.name").to_string();
        let want = cl["spec"]["instances"].as_i64().unwrap_or(1);
        let cap = stuck(&ns, &name);
        let inherited = cl["spec"]["inheritedMetadata"].clone();
        let base_labels = json!({"cnpg.io/cluster": name});
        // Instance pods: `<name>-1..N`, each Ready a step after it exists; a missing one is made
        // again under its name (CNPG recreates an instance's pod on its PVC).
        let mut ready = 0;
        let mut existing = 0;
        for i in 1..=want {
            let pod_name = format!("{name}-{i}");
            let role = if i == 1 { "primary" } else { "replica" };
            let pod = c
                .get("v1", "Pod", Some(&ns), &pod_name)
                .await
                .ok()
                .flatten();
            let k = format!("pod/{ns}/{pod_name}");
            let Some(pod) = pod else {
                st.forget(&k);
                let mut p = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod_name, "namespace": ns,
                                 "labels": {"cnpg.io/instanceName": pod_name, "cnpg.io/instanceRole": role, "role": role, "cnpg.io/podRole": "instance"}},
                    "spec": {"containers": [{"name": "postgres", "image": "ghcr.io/cloudnative-pg/postgresql:17.6"}]}});
                owned(&mut p, &cl, base_labels.clone());
                if let Some(a) = inherited["annotations"].as_object() {
                    p["metadata"]["annotations"] = json!(a);
                }
                let _ = c.create(p).await;
                continue;
            };
            existing += 1;
            let steps = st.steps(k, pace);
            let allowed = cap.is_none_or(|cap| ready < cap);
            let is_ready = steps >= 1 && allowed;
            if is_ready {
                ready += 1;
            }
            let status = json!({"phase": "Running", "podIP": format!("10.244.9.{i}"),
                "conditions": [{"type": "Ready", "status": if is_ready { "True" } else { "False" }}],
                "containerStatuses": [{"name": "postgres", "ready": is_ready, "restartCount": 0,
                    "state": if is_ready { json!({"running": {"startedAt": now()}}) } else { json!({"waiting": {"reason": "ContainerCreating"}}) }}]});
            if pod["status"]["conditions"] != status["conditions"] {
                let mut p = pod.clone();
                p["status"] = status;
                let _ = c.replace_status(p).await;
            }
        }
        // The Services, with the cluster's inherited metadata (the global annotation).
        for (suffix, role) in [("rw", "primary"), ("ro", "replica"), ("r", "")] {
            let mut svc = json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("{name}-{suffix}"), "namespace": ns},
                "spec": {"selector": {"cnpg.io/cluster": name}, "ports": [{"name": "postgres", "port": 5432, "targetPort": 5432, "protocol": "TCP"}]}});
            if !role.is_empty() {
                svc["spec"]["selector"]["cnpg.io/instanceRole"] = json!(role);
            }
            owned(&mut svc, &cl, base_labels.clone());
            for part in ["annotations", "labels"] {
                if let Some(m) = inherited[part].as_object() {
                    for (k, v) in m {
                        svc["metadata"][part][k] = v.clone();
                    }
                }
            }
            let cur = c
                .get("v1", "Service", Some(&ns), s(&svc, "metadata.name"))
                .await
                .ok()
                .flatten();
            match cur {
                None => {
                    let _ = c.create(svc).await;
                }
                Some(cur) if cur["metadata"]["annotations"] != svc["metadata"]["annotations"] => {
                    let mut u = cur.clone();
                    u["metadata"]["annotations"] = svc["metadata"]["annotations"].clone();
                    let _ = c.replace(u).await;
                }
                _ => {}
            }
        }
        // Managed roles: reconciled when their password Secret exists.
        let mut reconciled = Vec::new();
        let mut cannot = serde_json::Map::new();
        for r in cl["spec"]["managed"]["roles"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let role = s(&r, "name").to_string();
            match r["passwordSecret"]["name"].as_str() {
                Some(sec) if secret(c, &ns, sec).await.is_none() => {
                    cannot.insert(
                        role,
                        json!([format!(
                            "while getting the password secret: secrets \"{sec}\" not found"
                        )]),
                    );
                }
                _ => reconciled.push(json!(role)),
            }
        }
        let healthy = ready == want && existing == want;
        let phase = if healthy {
            "Cluster in healthy state"
        } else if ready == 0 {
            "Setting up primary"
        } else {
            "Creating a new replica"
        };
        let g = generation(&cl);
        let condition = if healthy {
            cond("Ready", "True", "ClusterIsReady", "Cluster is Ready", g)
        } else {
            cond(
                "Ready",
                "False",
                "ClusterIsNotReady",
                "Cluster Is Not Ready",
                g,
            )
        };
        let mut status = json!({"instances": existing, "readyInstances": ready, "phase": phase,
            "currentPrimary": format!("{name}-1"), "targetPrimary": format!("{name}-1"),
            "writeService": format!("{name}-rw"), "readService": format!("{name}-r"),
            "conditions": [condition],
            "managedRolesStatus": {"byStatus": {"reconciled": reconciled}}});
        if !cannot.is_empty() {
            status["managedRolesStatus"]["cannotReconcile"] = Value::Object(cannot);
            status["managedRolesStatus"]["byStatus"]["not-managed"] = json!([]);
        }
        if !healthy {
            status["phaseReason"] = json!(format!("{ready} of {want} instances ready"));
        }
        // Compare without the condition's timestamp, so a settled cluster is not rewritten.
        let same = cl["status"]["phase"] == status["phase"]
            && cl["status"]["readyInstances"] == status["readyInstances"]
            && cl["status"]["instances"] == status["instances"]
            && cl["status"]["managedRolesStatus"] == status["managedRolesStatus"]
            && cl["status"]["conditions"][0]["observedGeneration"].as_i64() == Some(g);
        if !same {
            set_status(c, cl, status).await;
        }
    }
}

async fn databases(c: &impl Objects) {
    let Ok(dbs) = c
        .list("postgresql.cnpg.io/v1", "Database", None, None)
        .await
    else {
        return;
    };
    for db in dbs {
        let ns = s(&db, "metadata.namespace").to_string();
        let cluster = s(&db, "spec.cluster.name").to_string();
        let owner = s(&db, "spec.owner").to_string();
        let cl = c
            .get("postgresql.cnpg.io/v1", "Cluster", Some(&ns), &cluster)
            .await
            .ok()
            .flatten();
        let (applied, message) = match &cl {
            None => (false, format!("cluster resource \"{cluster}\" not found")),
            Some(cl) if cl["status"]["phase"] != "Cluster in healthy state" => (
                false,
                format!(
                    "cluster \"{cluster}\" is not healthy: {}",
                    s(cl, "status.phase")
                ),
            ),
            Some(cl)
                if !owner.is_empty()
                    && !cl["status"]["managedRolesStatus"]["byStatus"]["reconciled"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|x| x == owner.as_str())) =>
            {
                (false, format!("role \"{owner}\" does not exist"))
            }
            Some(_) => (true, String::new()),
        };
        let mut status = json!({"applied": applied, "observedGeneration": generation(&db)});
        if !message.is_empty() {
            status["message"] = json!(message);
        }
        let ext: Vec<Value> = db["spec"]["extensions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| json!({"name": e["name"], "applied": applied}))
            .collect();
        if !ext.is_empty() {
            status["extensions"] = json!(ext);
        }
        set_status(c, db, status).await;
    }
}

async fn dragonfly(st: &mut PlatformState, c: &impl Objects, pace: f64) {
    let Ok(all) = c
        .list("dragonflydb.io/v1alpha1", "Dragonfly", None, None)
        .await
    else {
        return;
    };
    if all.is_empty()
        || !operator_ready(c, Some("dragonfly-operator-system"), "controller-manager").await
    {
        return;
    }
    for df in all {
        let ns = s(&df, "metadata.namespace").to_string();
        let name = s(&df, "metadata.name").to_string();
        let labels = json!({"app": name, "app.kubernetes.io/name": "dragonfly", "app.kubernetes.io/instance": name});
        let mut sts = crate::charts::workload(
            "StatefulSet",
            &name,
            &ns,
            &name,
            Some(df["spec"]["replicas"].as_i64().unwrap_or(1)),
            false,
            "docker.dragonflydb.io/dragonflydb/dragonfly:v1.34.1",
        );
        owned(&mut sts, &df, labels.clone());
        ensure(c, sts).await;
        let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name, "role": "master"}, "ports": [{"name": "redis", "port": 6379, "targetPort": 6379}]}});
        owned(&mut svc, &df, labels);
        if let Some(a) = df["spec"]["serviceSpec"]["annotations"].as_object() {
            svc["metadata"]["annotations"] = json!(a);
        }
        ensure(c, svc).await;
        let rolled = matches!(c.get("apps/v1", "StatefulSet", Some(&ns), &name).await, Ok(Some(s)) if super::workload_ready(&s));
        if rolled {
            ensure_pods(
                c,
                &df,
                &ns,
                &name,
                1,
                json!({"app": name, "role": "master"}),
                6379,
            )
            .await;
        }
        let k = format!("df/{ns}/{name}");
        let phase = if rolled {
            "Ready"
        } else if st.steps(k, pace) >= 1 {
            "Configuring"
        } else {
            "ResourcesCreated"
        };
        let status = json!({"phase": phase, "isRollingUpdate": false});
        set_status(c, df, status).await;
    }
}

async fn object_store(st: &mut PlatformState, c: &impl Objects, dir: &LabDir, pace: f64) {
    let stores = c
        .list("ceph.rook.io/v1", "CephObjectStore", None, None)
        .await
        .unwrap_or_default();
    let mut ready_stores = Vec::new();
    for os in stores {
        let ns = s(&os, "metadata.namespace").to_string();
        let name = s(&os, "metadata.name").to_string();
        let ceph_ready = c
            .list("ceph.rook.io/v1", "CephCluster", Some(&ns), None)
            .await
            .unwrap_or_default()
            .iter()
            .any(|cc| cc["status"]["phase"] == "Ready");
        let k = format!("os/{ns}/{name}");
        let phase = if !ceph_ready {
            st.forget(&k);
            "Progressing"
        } else {
            let mut rgw = crate::charts::workload(
                "Deployment",
                &format!("rook-ceph-rgw-{name}-a"),
                &ns,
                &name,
                os["spec"]["gateway"]["instances"].as_i64(),
                false,
                "quay.io/ceph/ceph:v19.2.3",
            );
            owned(
                &mut rgw,
                &os,
                json!({"app": "rook-ceph-rgw", "rook_object_store": name}),
            );
            rgw["spec"]["template"]["metadata"]["labels"]["app"] = json!("rook-ceph-rgw");
            rgw["spec"]["template"]["metadata"]["labels"]["rook_object_store"] = json!(name);
            ensure(c, rgw).await;
            let port = os["spec"]["gateway"]["port"].as_u64().unwrap_or(80) as u16;
            ensure_pods(
                c,
                &os,
                &ns,
                &format!("rook-ceph-rgw-{name}-a"),
                os["spec"]["gateway"]["instances"].as_i64().unwrap_or(1),
                json!({"app": "rook-ceph-rgw", "rook_object_store": name}),
                port,
            )
            .await;
            if st.steps(k, pace) >= 1 {
                "Ready"
            } else {
                "Progressing"
            }
        };
        if phase == "Ready" {
            ready_stores.push((ns.clone(), name.clone()));
        }
        let status = json!({"phase": phase, "observedGeneration": generation(&os),
            "info": {"endpoint": format!("http://rook-ceph-rgw-{name}.{ns}.svc:{}", os["spec"]["gateway"]["port"].as_i64().unwrap_or(80))}});
        if os["status"]["phase"] != status["phase"]
            || os["status"]["observedGeneration"] != status["observedGeneration"]
        {
            set_status(c, os, status).await;
        }
    }
    // Bucket claims on a Rook bucket class.
    let classes = c
        .list("storage.k8s.io/v1", "StorageClass", None, None)
        .await
        .unwrap_or_default();
    for obc in c
        .list("objectbucket.io/v1alpha1", "ObjectBucketClaim", None, None)
        .await
        .unwrap_or_default()
    {
        let ns = s(&obc, "metadata.namespace").to_string();
        let name = s(&obc, "metadata.name").to_string();
        let class = classes
            .iter()
            .find(|sc| sc["metadata"]["name"] == obc["spec"]["storageClassName"]);
        let store = class.map(|sc| {
            (
                s(sc, "parameters.objectStoreNamespace").to_string(),
                s(sc, "parameters.objectStoreName").to_string(),
            )
        });
        let bound = class.is_some_and(|sc| s(sc, "provisioner").ends_with("ceph.rook.io/bucket"))
            && store.as_ref().is_some_and(|st| ready_stores.contains(st));
        let bucket = obc["spec"]["bucketName"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| format!("{name}-{}", key(&name, 8).to_lowercase()));
        if bound {
            let (sns, sname) = store.clone().unwrap_or_default();
            let mut sec = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
                "data": {"AWS_ACCESS_KEY_ID": b64(&key(&format!("{ns}/{name}/id"), 20)), "AWS_SECRET_ACCESS_KEY": b64(&key(&format!("{ns}/{name}/secret"), 40))}});
            owned(
                &mut sec,
                &obc,
                json!({"bucket-provisioner": "rook-ceph.ceph.rook.io-bucket"}),
            );
            ensure(c, sec).await;
            let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
                "data": {"BUCKET_HOST": format!("rook-ceph-rgw-{sname}.{sns}.svc"), "BUCKET_NAME": bucket, "BUCKET_PORT": "80", "BUCKET_REGION": "us-east-1"}});
            owned(&mut cm, &obc, json!({}));
            ensure(c, cm).await;
            // The bucket exists on the S3 endpoint, whichever cluster asks for it.
            let _ = crate::core::update_json(
                dir,
                &dir.root().join("buckets.json"),
                |b: &mut Vec<String>| {
                    if !b.contains(&bucket) {
                        b.push(bucket.clone());
                    }
                },
            );
        }
        let phase = if bound { "Bound" } else { "Pending" };
        if obc["status"]["phase"] != phase {
            let mut o = obc.clone();
            o["status"] = json!({"phase": phase});
            if bound {
                o["spec"]["bucketName"] = json!(bucket);
            }
            let _ = c.replace_status(o).await;
        }
    }
    for u in c
        .list("ceph.rook.io/v1", "CephObjectStoreUser", None, None)
        .await
        .unwrap_or_default()
    {
        let ns = s(&u, "metadata.namespace").to_string();
        let name = s(&u, "metadata.name").to_string();
        let store = s(&u, "spec.store").to_string();
        let ready = ready_stores.contains(&(ns.clone(), store.clone()));
        if ready {
            let mut sec = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/rook",
                "metadata": {"name": format!("rook-ceph-object-user-{store}-{name}"), "namespace": ns},
                "data": {"AccessKey": b64(&key(&format!("{ns}/{name}/user"), 20)), "SecretKey": b64(&key(&format!("{ns}/{name}/key"), 40)),
                         "Endpoint": b64(&format!("http://rook-ceph-rgw-{store}.{ns}.svc:80"))}});
            owned(
                &mut sec,
                &u,
                json!({"app": "rook-ceph-rgw", "rook_object_store": store}),
            );
            ensure(c, sec).await;
        }
        let phase = if ready { "Ready" } else { "Progressing" };
        if u["status"]["phase"] != phase {
            let status = json!({"phase": phase, "observedGeneration": generation(&u)});
            set_status(c, u, status).await;
        }
    }
}

async fn keycloak(c: &impl Objects) {
    let Ok(all) = c
        .list("k8s.keycloak.org/v2alpha1", "Keycloak", None, None)
        .await
    else {
        return;
    };
    for kc in all {
        let ns = s(&kc, "metadata.namespace").to_string();
        let name = s(&kc, "metadata.name").to_string();
        // The operator watches its own namespace.
        if !deployment_ready(c, &ns, "keycloak-operator").await {
            continue;
        }
        let g = generation(&kc);
        let mut problem = None;
        for which in ["usernameSecret", "passwordSecret"] {
            if let Some(sec) = kc["spec"]["db"][which]["name"].as_str()
                && secret(c, &ns, sec).await.is_none()
            {
                problem = Some(format!("Secret \"{sec}\" not found (spec.db.{which})"));
            }
        }
        let mut sts = crate::charts::workload(
            "StatefulSet",
            &name,
            &ns,
            &name,
            kc["spec"]["instances"].as_i64(),
            false,
            "quay.io/keycloak/keycloak:26.4",
        );
        owned(
            &mut sts,
            &kc,
            json!({"app": "keycloak", "app.kubernetes.io/instance": name}),
        );
        if problem.is_none() {
            ensure(c, sts).await;
        }
        let rolled = matches!(c.get("apps/v1", "StatefulSet", Some(&ns), &name).await, Ok(Some(s)) if super::workload_ready(&s));
        if rolled {
            ensure_pods(
                c,
                &kc,
                &ns,
                &name,
                kc["spec"]["instances"].as_i64().unwrap_or(1),
                json!({"app": "keycloak", "app.kubernetes.io/instance": name}),
                8080,
            )
            .await;
        }
        let (ready, ready_msg) = match (&problem, rolled) {
            (Some(p), _) => ("False", p.clone()),
            (None, false) => ("False", "Waiting for more replicas".to_string()),
            (None, true) => ("True", String::new()),
        };
        let errors = if problem.is_some() { "True" } else { "False" };
        let status = json!({"observedGeneration": g, "instances": if rolled { kc["spec"]["instances"].clone() } else { json!(0) },
            "conditions": [
                {"type": "Ready", "status": ready, "message": ready_msg, "observedGeneration": g},
                {"type": "HasErrors", "status": errors, "message": problem.clone().unwrap_or_default(), "observedGeneration": g},
                {"type": "RollingUpdate", "status": "False", "message": "", "observedGeneration": g}]});
        set_status(c, kc, status).await;
    }
}

async fn cluster_issuers(c: &impl Objects) {
    let Ok(all) = c
        .list("cert-manager.io/v1", "ClusterIssuer", None, None)
        .await
    else {
        return;
    };
    if !deployment_ready(c, "cert-manager", "cert-manager").await {
        return;
    }
    for ci in all {
        let g = generation(&ci);
        let (status, reason, message) = if let Some(sec) = ci["spec"]["ca"]["secretName"].as_str() {
            match secret(c, "cert-manager", sec).await {
                Some(s) if s["data"]["tls.crt"].is_string() && s["data"]["tls.key"].is_string() => {
                    ("True", "KeyPairVerified", "Signing CA verified".to_string())
                }
                // [unverified exact wording; facts §11 gives the reasons]
                Some(_) => (
                    "False",
                    "ErrGetKeyPair",
                    format!(
                        "Error getting keypair for CA issuer: secret \"{sec}\" has no tls.crt or tls.key"
                    ),
                ),
                None => (
                    "False",
                    "ErrGetKeyPair",
                    format!("Error getting keypair for CA issuer: secrets \"{sec}\" not found"),
                ),
            }
        } else if ci["spec"]["selfSigned"].is_object() {
            ("True", "IsReady", String::new())
        } else {
            (
                "True",
                "ACMEAccountRegistered",
                "The ACME account was registered with the ACME server".to_string(),
            )
        };
        let cur = &ci["status"]["conditions"][0];
        if cur["status"] != status
            || cur["message"] != message.as_str()
            || cur["observedGeneration"].as_i64() != Some(g)
        {
            let st = json!({"conditions": [cond("Ready", status, reason, &message, g)]});
            set_status(c, ci, st).await;
        }
    }
}

async fn runner_sets(c: &impl Objects, stuck: &impl Fn(&str, &str) -> Option<i64>) {
    let Ok(all) = c
        .list(
            "actions.github.com/v1alpha1",
            "AutoscalingRunnerSet",
            None,
            None,
        )
        .await
    else {
        return;
    };
    let controller = operator_ready(c, None, "-gha-rs-controller").await;
    for rs in all {
        let ns = s(&rs, "metadata.namespace").to_string();
        let name = s(&rs, "metadata.name").to_string();
        let cfg = rs["spec"]["githubConfigSecret"].as_str().unwrap_or("");
        let secret_ok = secret(c, &ns, cfg).await.is_some();
        let running = controller && secret_ok && stuck(&ns, &name).is_none();
        let min = rs["spec"]["minRunners"].as_i64().unwrap_or(0);
        let status = if running {
            json!({"phase": "Running", "currentRunners": min, "pendingEphemeralRunners": 0, "runningEphemeralRunners": min, "failedEphemeralRunners": 0})
        } else {
            json!({"phase": "Pending", "currentRunners": 0})
        };
        set_status(c, rs, status).await;
    }
}

async fn mattermost(st: &mut PlatformState, c: &impl Objects, pace: f64) {
    let Ok(all) = c
        .list(
            "installation.mattermost.com/v1beta1",
            "Mattermost",
            None,
            None,
        )
        .await
    else {
        return;
    };
    if all.is_empty() || !operator_ready(c, None, "mattermost-operator").await {
        return;
    }
    for mm in all {
        let ns = s(&mm, "metadata.namespace").to_string();
        let name = s(&mm, "metadata.name").to_string();
        let replicas = mm["spec"]["replicas"].as_i64().unwrap_or(1);
        let db = mm["spec"]["database"]["external"]["secret"]
            .as_str()
            .unwrap_or("");
        let has_dsn = secret(c, &ns, db)
            .await
            .is_some_and(|s| s["data"]["DB_CONNECTION_STRING"].is_string());
        let g = generation(&mm);
        if !has_dsn {
            let status = json!({"state": "reconciling", "observedGeneration": g,
                "error": "external database Secret does not containt DB_CONNECTION_STRING key"});
            set_status(c, mm, status).await;
            continue;
        }
        let mut d = crate::charts::workload(
            "Deployment",
            &name,
            &ns,
            &name,
            Some(replicas),
            false,
            "mattermost/mattermost-enterprise-edition:10.11",
        );
        owned(
            &mut d,
            &mm,
            json!({"app": "mattermost", "installation.mattermost.com/installation": name}),
        );
        ensure(c, d).await;
        let k = format!("mm/{ns}/{name}");
        let rolled = deployment_ready(c, &ns, &name).await;
        let state = if !rolled {
            st.forget(&k);
            "reconciling"
        } else if st.steps(k, pace) >= 1 {
            "stable"
        } else {
            "ready"
        };
        let status = json!({"state": state, "replicas": replicas, "updatedReplicas": if rolled { replicas } else { 0 },
            "observedGeneration": g, "endpoint": "not available", "version": "10.11"});
        set_status(c, mm, status).await;
    }
}

fn crd(group: &str, plural: &str, kind: &str, version: &str, namespaced: bool) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": format!("{plural}.{group}")},
           "spec": {"group": group, "scope": if namespaced { "Namespaced" } else { "Cluster" },
                    "names": {"plural": plural, "kind": kind},
                    "versions": [{"name": version, "served": true, "storage": true, "subresources": {"status": {}}}]}})
}

fn truthy(v: &Value, default: bool) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true",
        _ => default,
    }
}

/// What the weeks 5-7 charts render (the objects the gates and the controllers above read; names
/// from the charts' templates, facts §6-§17).
pub fn render(chart: &str, version: &str, release: &str, ns: &str, values: &Value) -> Vec<Value> {
    use crate::charts::workload;
    let tag = format!("v{}", version.trim_start_matches('v'));
    let dep = |name: &str, replicas: i64, image: &str| {
        workload(
            "Deployment",
            name,
            ns,
            release,
            Some(replicas),
            false,
            image,
        )
    };
    let mut out = Vec::new();
    match chart {
        // CloudNativePG (§6): the chart installs the CRDs (crds.create, default true) and the
        // operator Deployment `<release>-cloudnative-pg`.
        "cloudnative-pg" => {
            if truthy(&values["crds"]["create"], true) {
                for (plural, kind) in [
                    ("clusters", "Cluster"),
                    ("databases", "Database"),
                    ("poolers", "Pooler"),
                    ("backups", "Backup"),
                    ("scheduledbackups", "ScheduledBackup"),
                ] {
                    out.push(crd("postgresql.cnpg.io", plural, kind, "v1", true));
                }
            }
            out.push(dep(
                &format!("{release}-cloudnative-pg"),
                1,
                "ghcr.io/cloudnative-pg/cloudnative-pg:1.27.1",
            ));
        }
        // Dragonfly operator (§7): CRD dragonflies and the controller manager.
        "dragonfly-operator" => {
            out.push(crd(
                "dragonflydb.io",
                "dragonflies",
                "Dragonfly",
                "v1alpha1",
                true,
            ));
            out.push(dep(
                "dragonfly-operator-controller-manager",
                1,
                &format!("docker.dragonflydb.io/dragonflydb/operator:{tag}"),
            ));
        }
        // cert-manager (§11): CRDs only with crds.enabled (default false); three Deployments.
        "cert-manager" => {
            if truthy(&values["crds"]["enabled"], false) {
                for (plural, kind, namespaced) in [
                    ("certificates", "Certificate", true),
                    ("certificaterequests", "CertificateRequest", true),
                    ("issuers", "Issuer", true),
                    ("clusterissuers", "ClusterIssuer", false),
                ] {
                    out.push(crd("cert-manager.io", plural, kind, "v1", namespaced));
                }
            }
            for name in [
                release.to_string(),
                format!("{release}-webhook"),
                format!("{release}-cainjector"),
            ] {
                out.push(dep(&name, 1, &format!("quay.io/jetstack/{name}:{tag}")));
            }
        }
        // ARC (§13): the controller chart carries the CRDs and `<release>-gha-rs-controller`; the
        // scale-set chart renders one AutoscalingRunnerSet named after the release.
        "gha-runner-scale-set-controller" => {
            for (plural, kind) in [
                ("autoscalingrunnersets", "AutoscalingRunnerSet"),
                ("autoscalinglisteners", "AutoscalingListener"),
                ("ephemeralrunnersets", "EphemeralRunnerSet"),
                ("ephemeralrunners", "EphemeralRunner"),
            ] {
                out.push(crd("actions.github.com", plural, kind, "v1alpha1", true));
            }
            out.push(dep(
                &format!("{release}-gha-rs-controller"),
                1,
                &format!("ghcr.io/actions/gha-runner-scale-set-controller:{version}"),
            ));
        }
        "gha-runner-scale-set" => {
            let secret = match &values["githubConfigSecret"] {
                Value::String(s) => s.clone(),
                _ => format!("{release}-gha-rs-github-secret"),
            };
            out.push(json!({"apiVersion": "actions.github.com/v1alpha1", "kind": "AutoscalingRunnerSet",
                "metadata": {"name": release, "namespace": ns,
                             "labels": {"app.kubernetes.io/managed-by": "Helm", "actions.github.com/scale-set-name": release},
                             "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": ns}},
                "spec": {"githubConfigUrl": values["githubConfigUrl"], "githubConfigSecret": secret,
                         "minRunners": values["minRunners"].as_i64().unwrap_or(0), "maxRunners": values["maxRunners"].as_i64().unwrap_or(0),
                         "runnerScaleSetName": release}}));
        }
        // The Cloudflare tunnel (§12): one Deployment; without a token the pod cannot connect.
        "cloudflare-tunnel-remote" => {
            out.push(dep(release, 2, "cloudflare/cloudflared:2024.8.3"));
        }
        // GitLab (§15): webservice (two containers: webservice and gitlab-workhorse), Sidekiq,
        // gitlab-shell, and Gitaly as a StatefulSet.
        "gitlab" => {
            let mut web = dep(
                &format!("{release}-webservice-default"),
                values["gitlab"]["webservice"]["minReplicas"]
                    .as_i64()
                    .unwrap_or(2),
                "registry.gitlab.com/gitlab-org/build/cng/gitlab-webservice-ee:v18.8.4",
            );
            web["spec"]["template"]["metadata"]["labels"]["app"] = json!("webservice");
            web["spec"]["template"]["spec"]["containers"]
                .as_array_mut()
                .expect("containers")
                .push(json!({"name": "gitlab-workhorse", "image": "registry.gitlab.com/gitlab-org/build/cng/gitlab-workhorse-ee:v18.8.4"}));
            out.push(web);
            out.push(dep(
                &format!("{release}-sidekiq-all-in-1-v2"),
                values["gitlab"]["sidekiq"]["minReplicas"]
                    .as_i64()
                    .unwrap_or(1),
                "registry.gitlab.com/gitlab-org/build/cng/gitlab-sidekiq-ee:v18.8.4",
            ));
            out.push(dep(
                &format!("{release}-gitlab-shell"),
                2,
                "registry.gitlab.com/gitlab-org/build/cng/gitlab-shell:v14",
            ));
            out.push(workload(
                "StatefulSet",
                &format!("{release}-gitaly"),
                ns,
                release,
                Some(1),
                false,
                "registry.gitlab.com/gitlab-org/build/cng/gitaly:v18.8.4",
            ));
            out.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("{release}-webservice-default"), "namespace": ns},
                "spec": {"selector": {"app": "webservice"}, "ports": [{"name": "http-workhorse", "port": 8181, "targetPort": 8181}, {"name": "http-webservice", "port": 8080, "targetPort": 8080}]}}));
        }
        // Harbor (§16): core, portal, jobservice, and the registry (registry and registryctl).
        "harbor" => {
            for name in ["core", "portal", "jobservice"] {
                out.push(dep(
                    &format!("{release}-{name}"),
                    1,
                    &format!("goharbor/harbor-{name}:v2.14.1"),
                ));
            }
            let mut reg = dep(
                &format!("{release}-registry"),
                1,
                "goharbor/registry-photon:v2.14.1",
            );
            reg["spec"]["template"]["spec"]["containers"]
                .as_array_mut()
                .expect("containers")
                .push(
                    json!({"name": "registryctl", "image": "goharbor/harbor-registryctl:v2.14.1"}),
                );
            out.push(reg);
        }
        // The Mattermost operator (§17): CRD mattermosts and the operator Deployment.
        "mattermost-operator" => {
            out.push(crd(
                "installation.mattermost.com",
                "mattermosts",
                "Mattermost",
                "v1beta1",
                true,
            ));
            out.push(dep(
                "mattermost-operator",
                1,
                "mattermost/mattermost-operator:v1.25.9",
            ));
        }
        _ => {}
    }
    out
}

/// The charts [`render`] knows.
pub const CHARTS: &[&str] = &[
    "cloudnative-pg",
    "dragonfly-operator",
    "cert-manager",
    "gha-runner-scale-set-controller",
    "gha-runner-scale-set",
    "cloudflare-tunnel-remote",
    "gitlab",
    "harbor",
    "mattermost-operator",
];
