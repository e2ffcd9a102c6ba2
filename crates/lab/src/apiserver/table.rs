//! Server-side printing: the `meta.k8s.io/v1` Table kubectl asks for on `get`, with the columns a
//! real API server prints for the common kinds (nodes, namespaces, workloads, services) and NAME/AGE
//! for the rest.

use serde_json::{Value, json};

use super::store::Resource;

/// Whether the request asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// kubectl's short age: 45s, 5m, 3h, 2d.
fn age(created: &str) -> String {
    let Ok(t) = created.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let s = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn columns_and_cells(res: &Resource, o: &Value) -> (Vec<&'static str>, Vec<Value>) {
    let name = json!(o["metadata"]["name"].as_str().unwrap_or(""));
    let a = json!(age(o["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or("")));
    let st = &o["status"];
    match (res.group.as_str(), res.kind.as_str()) {
        ("", "Node") => {
            let ready = st["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["status"].as_str())
                == Some("True");
            let mut roles: Vec<String> = o["metadata"]["labels"]
                .as_object()
                .map(|l| {
                    l.keys()
                        .filter_map(|k| {
                            k.strip_prefix("node-role.kubernetes.io/").map(String::from)
                        })
                        .collect()
                })
                .unwrap_or_default();
            if roles.is_empty() {
                roles.push("<none>".into());
            }
            (
                vec!["Name", "Status", "Roles", "Age", "Version"],
                vec![
                    name,
                    json!(if ready { "Ready" } else { "NotReady" }),
                    json!(roles.join(",")),
                    a,
                    json!(st["nodeInfo"]["kubeletVersion"].as_str().unwrap_or("")),
                ],
            )
        }
        ("", "Namespace") => (
            vec!["Name", "Status", "Age"],
            vec![name, json!(st["phase"].as_str().unwrap_or("Active")), a],
        ),
        ("", "Service") => {
            let ports: Vec<String> = o["spec"]["ports"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                vec![
                    "Name",
                    "Type",
                    "Cluster-IP",
                    "External-IP",
                    "Port(s)",
                    "Age",
                ],
                vec![
                    name,
                    json!(o["spec"]["type"].as_str().unwrap_or("ClusterIP")),
                    json!(o["spec"]["clusterIP"].as_str().unwrap_or("<none>")),
                    json!("<none>"),
                    json!(if ports.is_empty() {
                        "<none>".to_string()
                    } else {
                        ports.join(",")
                    }),
                    a,
                ],
            )
        }
        ("apps", "Deployment") | ("apps", "StatefulSet") => {
            let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
            let mut cols = vec!["Name", "Ready"];
            let mut cells = vec![name, json!(format!("{}/{want}", n(&st["readyReplicas"])))];
            if res.kind == "Deployment" {
                cols.extend(["Up-to-date", "Available"]);
                cells.extend([
                    json!(n(&st["updatedReplicas"])),
                    json!(n(&st["availableReplicas"])),
                ]);
            }
            cols.push("Age");
            cells.push(a);
            (cols, cells)
        }
        ("apps", "DaemonSet") => (
            vec![
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
            ],
            vec![
                name,
                json!(n(&st["desiredNumberScheduled"])),
                json!(n(&st["currentNumberScheduled"])),
                json!(n(&st["numberReady"])),
                json!(n(&st["updatedNumberScheduled"])),
                json!(n(&st["numberAvailable"])),
                a,
            ],
        ),
        _ => {
            // Custom resources with a Ready condition (Flux, CNPG…) show it, as their printer columns do.
            if let Some(c) = st["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            {
                return (
                    vec!["Name", "Age", "Ready", "Status"],
                    vec![
                        name,
                        a,
                        json!(c["status"].as_str().unwrap_or("")),
                        json!(c["message"].as_str().unwrap_or("")),
                    ],
                );
            }
            (vec!["Name", "Age"], vec![name, a])
        }
    }
}

/// A Table of objects (all of one resource).
pub fn table(res: &Resource, items: &[Value], resource_version: &str) -> Value {
    let mut cols: Vec<&'static str> = vec!["Name", "Age"];
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let (c, cells) = columns_and_cells(res, o);
            cols = c;
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})
        })
        .collect();
    if items.is_empty() {
        cols = columns_and_cells(res, &json!({"metadata": {}})).0;
    }
    let defs: Vec<Value> = cols.iter().enumerate().map(|(i, c)| json!({"name": c, "type": "string", "format": if i == 0 { "name" } else { "" }, "description": "", "priority": 0})).collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version}, "columnDefinitions": defs, "rows": rows})
}
