//! `kubectl` stand-in: the subset the phases use (`get`, `create namespace`, `annotate`, `delete`),
//! with kubectl's texts (facts: real-tools.md §6). A real kubectl works against the lab too: the
//! lab's API servers speak the REST protocol.

use serde_json::{Value, json};

use super::common;
use crate::cluster::{Objects, Remote};

const VALUED: &[&str] = &[
    "--context",
    "--kubeconfig",
    "-n",
    "--namespace",
    "-o",
    "--output",
    "-l",
    "--selector",
];

fn fail(msg: &str) -> i32 {
    eprintln!("{msg}");
    1
}

/// kubectl's resource names and aliases → (apiVersion, kind, plural, namespaced).
fn resolve(what: &str) -> Option<(&'static str, &'static str, &'static str, bool)> {
    Some(match what.to_lowercase().as_str() {
        "ns" | "namespace" | "namespaces" => ("v1", "Namespace", "namespaces", false),
        "no" | "node" | "nodes" => ("v1", "Node", "nodes", false),
        "po" | "pod" | "pods" => ("v1", "Pod", "pods", true),
        "svc" | "service" | "services" => ("v1", "Service", "services", true),
        "cm" | "configmap" | "configmaps" => ("v1", "ConfigMap", "configmaps", true),
        "secret" | "secrets" => ("v1", "Secret", "secrets", true),
        "deploy" | "deployment" | "deployments" => ("apps/v1", "Deployment", "deployments", true),
        "ds" | "daemonset" | "daemonsets" => ("apps/v1", "DaemonSet", "daemonsets", true),
        "sts" | "statefulset" | "statefulsets" => ("apps/v1", "StatefulSet", "statefulsets", true),
        "crd" | "crds" | "customresourcedefinition" | "customresourcedefinitions" => (
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        ),
        "ks" | "kustomization" | "kustomizations" => (
            "kustomize.toolkit.fluxcd.io/v1",
            "Kustomization",
            "kustomizations",
            true,
        ),
        "hr" | "helmrelease" | "helmreleases" => (
            "helm.toolkit.fluxcd.io/v2",
            "HelmRelease",
            "helmreleases",
            true,
        ),
        "endpointslice" | "endpointslices" => (
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "endpointslices",
            true,
        ),
        "gitrepository" | "gitrepositories" => (
            "source.toolkit.fluxcd.io/v1",
            "GitRepository",
            "gitrepositories",
            true,
        ),
        _ => return None,
    })
}

fn group_of(api: &str) -> String {
    api.split_once('/')
        .map(|(g, _)| format!(".{g}"))
        .unwrap_or_default()
}

pub fn main(args: &[String]) -> i32 {
    if let Some(code) = common::fault("kubectl", args) {
        return code;
    }
    let pos = common::positionals(args, VALUED);
    let kubeconfig = common::flag(args, &["--kubeconfig"]);
    let ctx = common::flag(args, &["--context"]);
    let ns = common::flag(args, &["-n", "--namespace"]).unwrap_or_else(|| "default".into());
    let output = common::flag(args, &["-o", "--output"]);
    common::runtime().block_on(async move {
        let c = match common::remote(kubeconfig.as_deref(), ctx.as_deref()).await {
            Ok(c) => c,
            Err(e) => return fail(&format!("error: {e}")),
        };
        let sub: Vec<&str> = pos.iter().map(String::as_str).collect();
        match sub.as_slice() {
            ["get", what, rest @ ..] => {
                let (what, name) = match what.split_once('/') {
                    Some((w, n)) => (w, Some(n)),
                    None => (*what, rest.first().copied()),
                };
                get(&c, what, name, &ns, common::has(args, &["-A", "--all-namespaces"]), output.as_deref(), common::server_of(kubeconfig.as_deref(), ctx.as_deref()).as_deref()).await
            }
            ["create", "namespace" | "ns", name] => match c.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})).await {
                Ok(_) => {
                    println!("namespace/{name} created");
                    0
                }
                Err(e) if e.to_string().contains("already exists") => fail(&format!("Error from server (AlreadyExists): namespaces \"{name}\" already exists")),
                Err(e) => fail(&format!("error: {e}")),
            },
            ["create", "secret", "generic", name] => create_secret(&c, args, &ns, name).await,
            ["annotate", what, rest @ ..] => annotate(&c, what, rest, &ns, common::has(args, &["--overwrite"])).await,
            ["delete", what, name] => {
                let Some((api, kind, plural, namespaced)) = resolve(what) else { return fail(&format!("error: the server doesn't have a resource type \"{what}\"")) };
                match c.get(api, kind, namespaced.then_some(ns.as_str()), name).await {
                    Ok(Some(_)) => {
                        let _ = c.delete(api, kind, namespaced.then_some(ns.as_str()), name).await;
                        println!("{} \"{name}\" deleted", kind.to_lowercase());
                        0
                    }
                    _ => fail(&format!("Error from server (NotFound): {plural}{} \"{name}\" not found", group_of(api))),
                }
            }
            _ => fail(&format!("error: unknown command \"{}\" for \"kubectl\" (the lab's kubectl stands in for get, create namespace, annotate and delete)", pos.first().map(String::as_str).unwrap_or(""))),
        }
    })
}

async fn get(
    c: &Remote,
    what: &str,
    name: Option<&str>,
    ns: &str,
    all: bool,
    output: Option<&str>,
    server: Option<&str>,
) -> i32 {
    let Some((api, kind, plural, namespaced)) = resolve(what) else {
        return fail(&format!(
            "error: the server doesn't have a resource type \"{what}\""
        ));
    };
    let scope = if namespaced && !all { Some(ns) } else { None };
    let items: Vec<Value> = match name {
        Some(n) => match c
            .get(api, kind, if namespaced { Some(ns) } else { None }, n)
            .await
        {
            Ok(Some(o)) => vec![o],
            Ok(None) => {
                return fail(&format!(
                    "Error from server (NotFound): {plural}{} \"{n}\" not found",
                    group_of(api)
                ));
            }
            Err(e) => return fail(&common::request_error(&e, server)),
        },
        None => match c.list(api, kind, scope, None).await {
            Ok(items) => items,
            Err(e) => return fail(&common::request_error(&e, server)),
        },
    };
    match output {
        Some("json") => {
            let v = if name.is_some() {
                items[0].clone()
            } else {
                json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
            };
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Some(o) if o.starts_with("jsonpath=") => {
            // `-o jsonpath={.a.b}`: the field's text, as kubectl prints it (no newline).
            let path = o["jsonpath=".len()..]
                .trim_start_matches('{')
                .trim_end_matches('}')
                .trim_start_matches('.');
            for (i, item) in items.iter().enumerate() {
                let v = path
                    .split('.')
                    .filter(|p| !p.is_empty())
                    .fold(item, |v, k| &v[k]);
                if i > 0 {
                    print!(" ");
                }
                match v {
                    Value::Null => {}
                    Value::String(s) => print!("{s}"),
                    other => print!("{other}"),
                }
            }
        }
        Some("name") => {
            for o in &items {
                println!(
                    "{}{}/{}",
                    kind.to_lowercase(),
                    group_of(api),
                    o["metadata"]["name"].as_str().unwrap_or("")
                );
            }
        }
        _ => {
            if items.is_empty() {
                eprintln!("No resources found in {ns} namespace.");
                return 0;
            }
            println!("NAME\tAGE");
            for o in &items {
                println!("{}\t1m", o["metadata"]["name"].as_str().unwrap_or(""));
            }
        }
    }
    0
}

async fn annotate(c: &Remote, what: &str, rest: &[&str], ns: &str, overwrite: bool) -> i32 {
    let (what, name, pairs) = match what.split_once('/') {
        Some((w, n)) => (w, n, rest),
        None => match rest.split_first() {
            Some((n, p)) => (what, *n, p),
            None => {
                return fail(
                    "error: one or more resources must be specified as <resource> <name> or <resource>/<name>",
                );
            }
        },
    };
    let Some((api, kind, plural, namespaced)) = resolve(what) else {
        return fail(&format!(
            "error: the server doesn't have a resource type \"{what}\""
        ));
    };
    let Some(mut o) = c
        .get(api, kind, namespaced.then_some(ns), name)
        .await
        .ok()
        .flatten()
    else {
        return fail(&format!(
            "Error from server (NotFound): {plural}{} \"{name}\" not found",
            group_of(api)
        ));
    };
    for p in pairs {
        if let Some(k) = p.strip_suffix('-') {
            if let Some(m) = o["metadata"]["annotations"].as_object_mut() {
                m.remove(k);
            }
            continue;
        }
        let Some((k, v)) = p.split_once('=') else {
            return fail(&format!("error: invalid annotation format: {p}"));
        };
        let cur = o["metadata"]["annotations"][k].as_str().map(String::from);
        // Same value: no error; a different value needs --overwrite (annotate.go).
        if let Some(cur) = cur
            && cur != v
            && !overwrite
        {
            return fail(&format!(
                "error: --overwrite is false but found the following declared annotation(s): '{k}' already has a value ({cur})"
            ));
        }
        if !o["metadata"]["annotations"].is_object() {
            o["metadata"]["annotations"] = json!({});
        }
        o["metadata"]["annotations"][k] = json!(v);
    }
    match c.replace(o).await {
        Ok(_) => {
            println!("{}/{name} annotated", kind.to_lowercase());
            0
        }
        Err(e) => fail(&format!("error: {e}")),
    }
}

/// `kubectl create secret generic NAME [--from-file=key=path]… [--from-literal=key=value]…`.
async fn create_secret(c: &Remote, args: &[String], ns: &str, name: &str) -> i32 {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut data = serde_json::Map::new();
    for a in args {
        if let Some(spec) = a.strip_prefix("--from-file=") {
            let (key, path) = spec.split_once('=').unwrap_or((
                std::path::Path::new(spec)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(spec),
                spec,
            ));
            match std::fs::read(path) {
                Ok(b) => {
                    data.insert(key.to_string(), json!(b64(&b)));
                }
                Err(e) => {
                    return fail(&format!(
                        "error: error reading {path}: {}",
                        e.to_string().to_lowercase()
                    ));
                }
            }
        } else if let Some(spec) = a.strip_prefix("--from-literal=") {
            let Some((k, v)) = spec.split_once('=') else {
                return fail(&format!(
                    "error: invalid literal source {spec}, expected key=value"
                ));
            };
            data.insert(k.to_string(), json!(b64(v.as_bytes())));
        }
    }
    let kind = args
        .iter()
        .find_map(|a| a.strip_prefix("--type="))
        .unwrap_or("Opaque");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": kind,
                        "metadata": {"name": name, "namespace": ns}, "data": data});
    match c.create(secret).await {
        Ok(_) => {
            println!("secret/{name} created");
            0
        }
        Err(e) if e.to_string().contains("already exists") => fail(&format!(
            "error: failed to create secret secrets \"{name}\" already exists"
        )),
        Err(e) => fail(&format!("error: {e}")),
    }
}
