//! `cilium clustermesh connect` and `cilium clustermesh status` (facts: real-tools.md §2.4–2.5):
//! the stand-in's side of the lab's Cluster Mesh (`sim/mesh.rs`), with the real texts and exit codes.

use std::time::Duration;

use serde_json::{Value, json};

use super::common;
use crate::cluster::{Objects, Remote};
use crate::sim::mesh::*;

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
                .is_some_and(|d| crate::cluster::workload_ready(&d));
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
