//! Cilium Cluster Mesh in the lab: `cilium clustermesh connect` and `status` (facts: real-tools.md
//! §2.4–2.5), and global services.
//!
//! A connection is the `cilium-clustermesh` Secret on each side naming the other (what the Helm values
//! `clustermesh.config.clusters` render). It is established once both sides name each other, both
//! clustermesh-apiservers are available, the clusters have unique names and ids and disjoint pod
//! CIDRs, and a moment has passed; the `mesh-never-connects` fault keeps it down. Global services:
//! for a Service annotated `service.cilium.io/global: "true"` (or the legacy
//! `io.cilium/global-service`) that exists with the same name and namespace in two connected
//! clusters, each cluster gets an EndpointSlice `<service>-<remote cluster>` labelled
//! `kubernetes.io/service-name` and `cilium.io/cluster`, listing the remote backends: what Cilium's
//! EndpointSlice synchronisation publishes, and how the lab shows a global service is reachable.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::lab::charts;
use crate::lab::cluster::{Local, Objects, Remote};
use crate::lab::core::{FaultKind, LabDir, Topology};
use crate::lab::tools::common;

/// Seconds from both sides configured to connected, at speed 1.
const CONNECT_SECONDS: f64 = 0.5;

pub fn is_global(svc: &Value) -> bool {
    let a = &svc["metadata"]["annotations"];
    a["service.cilium.io/global"]
        .as_str()
        .or_else(|| a["io.cilium/global-service"].as_str())
        == Some("true")
}

async fn identity(c: &impl Objects, ns: &str) -> Option<(String, u32)> {
    let cm = c
        .get("v1", "ConfigMap", Some(ns), "cilium-config")
        .await
        .ok()
        .flatten()?;
    Some((
        cm["data"]["cluster-name"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        cm["data"]["cluster-id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    ))
}

/// Remote cluster names this side is configured for, with when.
async fn configured(c: &impl Objects, ns: &str) -> BTreeMap<String, f64> {
    let Some(s) = c
        .get("v1", "Secret", Some(ns), "cilium-clustermesh")
        .await
        .ok()
        .flatten()
    else {
        return BTreeMap::new();
    };
    s["metadata"]["annotations"]["lab.bootstrap/connected-at"]
        .as_str()
        .and_then(|t| serde_json::from_str::<BTreeMap<String, f64>>(t).ok())
        .unwrap_or_default()
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn remote_for(dir: &LabDir, cluster: &str) -> Option<Remote> {
    let endpoints: BTreeMap<String, String> = crate::lab::core::read_json(&dir.endpoints())
        .ok()
        .flatten()?;
    let url = endpoints.get(cluster)?.parse().ok()?;
    kube::Client::try_from(kube::Config::new(url))
        .ok()
        .map(Remote)
}

/// Why a configured connection from `local` to `remote` is not up, or None when it is.
pub async fn connection_problem(
    topo: &Topology,
    local: &impl Objects,
    local_name: &str,
    remote: &impl Objects,
    remote_name: &str,
    ns: &str,
) -> Option<String> {
    if topo
        .faults
        .iter()
        .any(|f| matches!(f.kind, FaultKind::MeshNeverConnects))
    {
        return Some("remote cluster configuration required but not found".into());
    }
    let mine = configured(local, ns).await;
    let Some(at) = mine.get(remote_name) else {
        return Some("remote cluster configuration required but not found".into());
    };
    if !configured(remote, ns).await.contains_key(local_name) {
        return Some(
            "synchronization in progress for endpoints, identities, nodes, services".into(),
        );
    }
    let ready_local = local
        .get("apps/v1", "Deployment", Some(ns), "clustermesh-apiserver")
        .await
        .ok()
        .flatten()
        .is_some_and(|d| super::workload_ready(&d));
    let ready_remote = remote
        .get("apps/v1", "Deployment", Some(ns), "clustermesh-apiserver")
        .await
        .ok()
        .flatten()
        .is_some_and(|d| super::workload_ready(&d));
    if !ready_local || !ready_remote {
        return Some("not ready".into());
    }
    let (lc, rc) = (topo.cluster(local_name), topo.cluster(remote_name));
    if let (Some(lc), Some(rc)) = (lc, rc) {
        let (a, b): (ipnet::Ipv4Net, ipnet::Ipv4Net) =
            (lc.pod_cidr.parse().ok()?, rc.pod_cidr.parse().ok()?);
        if a.contains(&b.network()) || b.contains(&a.network()) {
            return Some(format!(
                "pod CIDRs overlap ({a} and {b}): routes to the remote cluster cannot be installed"
            ));
        }
    }
    if now() - at < CONNECT_SECONDS / topo.speed.max(0.01) {
        return Some(
            "synchronization in progress for endpoints, identities, nodes, services".into(),
        );
    }
    None
}

/// `cilium clustermesh connect --context A --destination-context B`.
pub async fn connect_cli(c: &Remote, ns: &str, ctx: Option<&str>, args: &[String]) -> i32 {
    let Ok((dir, topo)) = common::lab() else {
        return 1;
    };
    let dests = common::flag(args, &["--destination-context"]).unwrap_or_default();
    let kubeconfig = common::flag(args, &["--kubeconfig"]);
    let Some(local_name) = identity(c, ns).await.map(|(n, _)| n) else {
        eprintln!(
            "\nError: Unable to connect cluster: unable to retrieve ConfigMap \"cilium-config\": configmaps \"cilium-config\" not found"
        );
        return 1;
    };
    for dest in dests.split(',').filter(|d| !d.is_empty()) {
        let remote = match common::remote(kubeconfig.as_deref(), Some(dest)).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("\nError: Unable to connect cluster: {e}");
                return 1;
            }
        };
        let (Some((rname, rid)), Some((lname, lid))) =
            (identity(&remote, ns).await, identity(c, ns).await)
        else {
            eprintln!("\nError: Unable to connect cluster: cilium is not installed");
            return 1;
        };
        // Access information first, as the CLI does (clustermesh.go).
        for (side, client, name) in [("remote", &remote, &rname), ("local", c, &lname)] {
            let _ = side;
            println!("✨ Extracting access information of cluster {name}...");
            if client
                .get("v1", "Service", Some(ns), "clustermesh-apiserver")
                .await
                .ok()
                .flatten()
                .is_none()
            {
                println!(
                    "❌ Unable to retrieve access information of cluster \"{name}\": unable to get clustermesh service \"clustermesh-apiserver\": services \"clustermesh-apiserver\" not found"
                );
                eprintln!(
                    "\nError: Unable to connect cluster: unable to get clustermesh service \"clustermesh-apiserver\": services \"clustermesh-apiserver\" not found"
                );
                return 1;
            }
            println!("🔑 Extracting secrets from cluster {name}...");
            let ips: Vec<String> = topo
                .cluster(name)
                .map(|c| c.nodes.iter().map(|n| n.ip.clone()).collect())
                .unwrap_or_default();
            println!("ℹ️  Found ClusterMesh service IPs: [{}]", ips.join(" "));
        }
        let problem = if lname == "default" || lid == 0 {
            Some(format!(
                "local cluster has the default name (cluster name: {lname}) and/or ID 0 (cluster ID: {lid})"
            ))
        } else if rname == "default" || rid == 0 {
            Some(format!(
                "remote cluster has non-unique name ({rname}) and/or ID ({rid})"
            ))
        } else if rname == lname {
            Some(format!(
                "remote and local cluster have the same, non-unique name: {lname}"
            ))
        } else if rid == lid {
            Some(format!(
                "remote and local cluster have the same, non-unique ID: {lid}"
            ))
        } else if rid > 255 {
            Some(format!(
                "remote cluster has cluster ID {rid} out of acceptable range (1-255)"
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            eprintln!("\nError: Unable to connect cluster: {p}");
            return 1;
        }
        for (client, me, other) in [(&remote, &rname, &lname), (c, &lname, &rname)] {
            println!("ℹ️ Configuring Cilium in cluster {me} to connect to cluster {other}");
            if let Err(e) = configure(client, ns, other, &topo).await {
                eprintln!("\nError: Unable to connect cluster: {e}");
                return 1;
            }
        }
        println!("✅ Connected cluster {rname} <=> {lname}!");
    }
    let _ = (ctx, local_name, dir);
    0
}

/// Add `remote` to this side's clustermesh config: Helm values and the Secret they render.
async fn configure(
    c: &impl Objects,
    ns: &str,
    remote: &str,
    topo: &Topology,
) -> crate::error::Result<()> {
    let ips: Vec<String> = topo
        .cluster(remote)
        .map(|c| c.nodes.iter().map(|n| n.ip.clone()).collect())
        .unwrap_or_default();
    charts::upgrade_reusing_values(c, ns, "cilium", |values| {
        values["clustermesh"]["config"]["enabled"] = json!(true);
        values["clustermesh"]["config"]["clusters"][remote] = json!({"port": 32379, "ips": ips});
    })
    .await?;
    let mut at: BTreeMap<String, f64> = configured(c, ns).await;
    at.entry(remote.to_string()).or_insert_with(now);
    let data: serde_json::Map<String, Value> = at
        .keys()
        .map(|k| {
            (
                k.clone(),
                json!(
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("endpoints:\n- https://{k}.mesh.cilium.io:2379\n"))
                ),
            )
        })
        .collect();
    c.apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cilium-clustermesh", "namespace": ns,
        "annotations": {"lab.bootstrap/connected-at": serde_json::to_string(&at)?}}, "data": data})).await?;
    Ok(())
}

/// `cilium clustermesh status [--wait] [--wait-duration D] [-o json]`.
pub async fn status_cli(c: &Remote, ns: &str, args: &[String]) -> i32 {
    let Ok((dir, topo)) = common::lab() else {
        return 1;
    };
    let wait = common::has(args, &["--wait"]);
    let dur = common::flag(args, &["--wait-duration"])
        .and_then(|d| humantime::parse_duration(&d).ok())
        .unwrap_or(Duration::from_secs(900));
    let json_out = common::flag(args, &["-o", "--output"]).as_deref() == Some("json");
    let Some(svc) = c
        .get("v1", "Service", Some(ns), "clustermesh-apiserver")
        .await
        .ok()
        .flatten()
    else {
        eprintln!(
            "\nError: Unable to determine status:  unable to get clustermesh service \"clustermesh-apiserver\": services \"clustermesh-apiserver\" not found"
        );
        return 1;
    };
    let local_name = identity(c, ns).await.map(|(n, _)| n).unwrap_or_default();
    let nodes = c
        .list("v1", "Node", None, None)
        .await
        .map(|n| n.len())
        .unwrap_or(0);
    let deadline = std::time::Instant::now() + dur;
    loop {
        let remotes: Vec<String> = configured(c, ns).await.into_keys().collect();
        let mut errors = Vec::new();
        for r in &remotes {
            let problem = match remote_for(&dir, r).await {
                Some(rc) => connection_problem(&topo, c, &local_name, &rc, r, ns).await,
                None => Some("unknown status".into()),
            };
            if let Some(p) = problem {
                errors.push((r.clone(), p));
            }
        }
        let done = errors.is_empty();
        if done || !wait || std::time::Instant::now() >= deadline {
            let log = |l: String| {
                if json_out {
                    eprintln!("{l}")
                } else {
                    println!("{l}")
                }
            };
            log(format!(
                "✅ Service \"clustermesh-apiserver\" of type \"{}\" found",
                svc["spec"]["type"].as_str().unwrap_or("NodePort")
            ));
            log("✅ Cluster access information is available:".into());
            for n in topo
                .cluster(&local_name)
                .map(|c| c.nodes.clone())
                .unwrap_or_default()
            {
                log(format!("  - {}:32379", n.ip));
            }
            let ready = c
                .get("apps/v1", "Deployment", Some(ns), "clustermesh-apiserver")
                .await
                .ok()
                .flatten()
                .is_some_and(|d| super::workload_ready(&d));
            if ready {
                log("✅ Deployment clustermesh-apiserver is ready".into());
            }
            log("ℹ️  KVStoreMesh is enabled".into());
            log(String::new());
            let connected = remotes.len() - errors.len();
            if remotes.is_empty() {
                log("🔌 No cluster connected".into());
            } else {
                if errors.is_empty() {
                    log(format!(
                        "✅ All {nodes} nodes are connected to all clusters [min:{} / avg:{}.0 / max:{}]",
                        remotes.len(),
                        remotes.len(),
                        remotes.len()
                    ));
                } else {
                    log(format!(
                        "⚠️  {nodes}/{nodes} nodes are not connected to all clusters [min:{connected} / avg:{connected}.0 / max:{connected}]"
                    ));
                }
                log(String::new());
                log("🔌 Cluster Connections:".into());
                for r in &remotes {
                    let up = !errors.iter().any(|(n, _)| n == r);
                    log(format!(
                        "  - {r}: {nodes}/{nodes} configured, {}/{nodes} connected - KVStoreMesh: 1/1 configured, {}/1 connected",
                        if up { nodes } else { 0 },
                        u8::from(up)
                    ));
                }
                if !errors.is_empty() {
                    log(String::new());
                    log(format!("❌ {} Errors:", errors.len()));
                    for (r, p) in &errors {
                        log(format!(
                            "  ❌ cilium-{local_name} is not connected to cluster {r}: {p}"
                        ));
                    }
                }
            }
            if json_out {
                let clusters: serde_json::Map<String, Value> = remotes.iter().map(|r| (r.clone(), json!({"configured": nodes, "connected": if errors.iter().any(|(n, _)| n == r) { 0 } else { nodes }}))).collect();
                println!("{}", serde_json::to_string_pretty(&json!({"connectivity": {"clusters": clusters, "total": nodes, "not_ready": if done { 0 } else { nodes }}})).unwrap_or_default());
            }
            if wait && !done {
                eprintln!(
                    "\nError: Unable to determine status:  timeout while waiting for condition, last error: {nodes} nodes are not ready"
                );
                return 1;
            }
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Global services: publish remote backends as EndpointSlices in every connected cluster. Runs in
/// the lab process with every cluster's store.
pub fn start(
    stores: Vec<(String, crate::lab::apiserver::Store)>,
    topo: Topology,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = sync_global_services(&stores, &topo).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

async fn sync_global_services(
    stores: &[(String, crate::lab::apiserver::Store)],
    topo: &Topology,
) -> crate::error::Result<()> {
    for (local_name, local_store) in stores {
        let local = Local(local_store.clone());
        for (remote_name, remote_store) in stores.iter().filter(|(n, _)| n != local_name) {
            let remote = Local(remote_store.clone());
            let up = connection_problem(
                topo,
                &local,
                local_name,
                &remote,
                remote_name,
                "kube-system",
            )
            .await
            .is_none();
            for svc in local.list("v1", "Service", None, None).await? {
                let ns = svc["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string();
                let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
                let slice = format!("{name}-{remote_name}");
                let remote_svc = remote.get("v1", "Service", Some(&ns), &name).await?;
                let shared = up && is_global(&svc) && remote_svc.as_ref().is_some_and(is_global);
                let existing = local
                    .get("discovery.k8s.io/v1", "EndpointSlice", Some(&ns), &slice)
                    .await?;
                if shared {
                    let ports = svc["spec"]["ports"].clone();
                    let addresses: Vec<Value> = topo.cluster(remote_name).map(|c| c.nodes.iter().map(|n| json!({"addresses": [n.ip], "conditions": {"ready": true}, "zone": remote_name})).collect()).unwrap_or_default();
                    if existing.is_none() {
                        local.create(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": slice, "namespace": ns,
                            "labels": {"kubernetes.io/service-name": name, "cilium.io/cluster": remote_name, "endpointslice.kubernetes.io/managed-by": "endpointslice-mesh-controller.cilium.io"}},
                            "addressType": "IPv4", "endpoints": addresses, "ports": ports})).await?;
                    }
                } else if existing.is_some() {
                    local
                        .delete("discovery.k8s.io/v1", "EndpointSlice", Some(&ns), &slice)
                        .await?;
                }
            }
        }
    }
    Ok(())
}
