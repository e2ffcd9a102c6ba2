//! The lab's Kubernetes API server: the REST protocol over plain HTTP on 127.0.0.1, one per simulated
//! cluster, faithful enough for the `kube` crate and a real kubectl: discovery, get, list (label and
//! field selectors), watch, create, update, delete, merge/JSON/strategic patches and server-side
//! apply, the status subresource, Status errors, and CRDs that start being served when created.
//!
//! Owns HTTP and the object store. It never simulates controllers (see `lab::sim`).

pub mod kubeconfig;
mod outage;
mod protobuf;
pub mod store;
mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub use store::{ApiError, Resource, Store};

use crate::Result;
use crate::core::LabDir;

/// Options for [`serve`].
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub cluster: String,
    /// Where the objects persist between runs.
    pub persist: Option<PathBuf>,
    /// Try this port first (to keep kubeconfigs valid across runs); fall back to an ephemeral one.
    pub port: Option<u16>,
    /// The lab this server belongs to: its outages (`outages.json`) and server-side faults
    /// (`write-conflict`) apply. None: a bare server (tests of the protocol).
    pub lab: Option<LabDir>,
}

/// A running API server.
pub struct ApiServer {
    pub addr: SocketAddr,
    pub store: Store,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    flusher: tokio::task::JoinHandle<()>,
    outages: tokio::task::JoinHandle<()>,
}

/// What every request handler sees.
#[derive(Clone)]
struct App {
    store: Store,
    cluster: String,
    lab: Option<LabDir>,
}

impl ApiServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Stop serving and flush the store to disk.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
        self.task.abort();
        self.flusher.abort();
        self.outages.abort();
        self.store.flush();
    }
}

/// Start a server.
pub async fn serve(opts: ServeOptions) -> Result<ApiServer> {
    let listener = match opts.port {
        Some(p) => match tokio::net::TcpListener::bind(("127.0.0.1", p)).await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?,
        },
        None => tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?,
    };
    let addr = listener.local_addr()?;
    let store = Store::new(opts.persist.clone());
    let app = axum::Router::new().fallback(handle).with_state(App {
        store: store.clone(),
        cluster: opts.cluster.clone(),
        lab: opts.lab.clone(),
    });
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let (down_tx, down_rx) = tokio::sync::watch::channel(None);
    let ack = opts.lab.clone().map(|d| (d, opts.cluster.clone()));
    let task = tokio::spawn(outage::accept_loop(
        listener,
        addr,
        app,
        down_rx,
        shutdown_rx,
        ack,
    ));
    let outages = tokio::spawn(outage::watch(
        opts.lab.clone(),
        opts.cluster.clone(),
        down_tx,
    ));
    let fs = store.clone();
    let flusher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            fs.flush();
        }
    });
    Ok(ApiServer {
        addr,
        store,
        shutdown,
        task,
        flusher,
        outages,
    })
}

fn json_response(code: u16, v: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap_or_default()))
        .expect("response")
}

fn err(e: ApiError) -> Response {
    json_response(e.code, &e.status())
}

/// A parsed resource path.
struct Target {
    res: Resource,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn query_map(uri: &Uri) -> std::collections::HashMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k.to_string(), percent_decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let store = app.store.clone();
    let path = uri.path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let q = query_map(&uri);
    match segs.as_slice() {
        ["version"] => {
            return json_response(
                200,
                &json!({"major": "1", "minor": "34", "gitVersion": "v1.34.2", "gitCommit": "lab", "gitTreeState": "clean", "buildDate": "2025-11-11T00:00:00Z", "goVersion": "go1.24.9", "compiler": "gc", "platform": "linux/amd64"}),
            );
        }
        ["healthz"] | ["readyz"] | ["livez"] => return Response::new(Body::from("ok")),
        ["api"] => {
            return json_response(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            );
        }
        ["api", "v1"] => return json_response(200, &resource_list(&store, "", "v1")),
        ["apis"] => return json_response(200, &group_list(&store)),
        ["apis", g, v] => {
            let list = resource_list(&store, g, v);
            if list["resources"].as_array().is_some_and(|a| a.is_empty()) {
                return err(ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ));
            }
            return json_response(200, &list);
        }
        ["openapi", "v3"] => return json_response(200, &openapi_index(&store)),
        ["openapi", "v3", "api", v] => return json_response(200, &openapi_gv(&store, "", v)),
        ["openapi", "v3", "apis", g, v] => return json_response(200, &openapi_gv(&store, g, v)),
        ["openapi", ..] | ["swagger.json"] => {
            return err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
        _ => {}
    }
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", v, rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => {
            return err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    };
    let (ns, rest): (Option<String>, &[&str]) = match rest {
        ["namespaces", ns, more @ ..] if !more.is_empty() => (Some(ns.to_string()), more),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => {
            return err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    };
    let Some(res) = store.find(group, version, plural) else {
        return err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    let t = Target { res, ns, name, sub };
    let dry_run = q.get("dryRun").is_some_and(|v| v == "All");
    match (method.clone(), &t.name) {
        (Method::GET, None) => {
            if q.get("watch").is_some_and(|v| v == "true" || v == "1") {
                return watch(store, t, q).await;
            }
            let accept = headers
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if table::wants_table(accept) {
                let (items, rv) = store.list(&t.res, t.ns.as_deref());
                let items: Vec<Value> = items.into_iter().filter(|o| selected(o, &q)).collect();
                return json_response(200, &table::table(&t.res, &items, &rv.to_string()));
            }
            list(&store, &t, &q)
        }
        (Method::GET, Some(name)) => match store.get(&t.res, t.ns.as_deref(), name) {
            Ok(o) => {
                let accept = headers
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if table::wants_table(accept) {
                    let rv = o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    return json_response(200, &table::table(&t.res, &[o], &rv));
                }
                json_response(200, &o)
            }
            Err(e) => err(e),
        },
        (Method::POST, None) => match parse_body(&headers, &body) {
            Ok(obj) => {
                let ns =
                    t.ns.clone()
                        .or_else(|| obj["metadata"]["namespace"].as_str().map(String::from));
                match store.create(&t.res, ns.as_deref(), obj, dry_run) {
                    Ok(o) => json_response(201, &o),
                    Err(e) => err(e),
                }
            }
            Err(e) => err(e),
        },
        (Method::PUT, Some(name)) => match parse_body(&headers, &body) {
            Ok(obj) => {
                if !dry_run {
                    concurrent_write(&app, &t, name);
                }
                let status_only = t.sub.as_deref() == Some("status");
                match store.update(&t.res, t.ns.as_deref(), name, obj, status_only, dry_run) {
                    Ok(o) => json_response(200, &o),
                    Err(e) => err(e),
                }
            }
            Err(e) => err(e),
        },
        (Method::PATCH, Some(name)) => patch(&store, &t, name, &headers, &body, dry_run),
        (Method::DELETE, Some(name)) => {
            match store.delete(&t.res, t.ns.as_deref(), name, dry_run) {
                Ok(o) => json_response(200, &o),
                Err(e) => err(e),
            }
        }
        _ => err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )),
    }
}

/// The `write-conflict` fault: before a PUT to a matching object is handled, another writer changes
/// it (an annotation), as a second client or a controller would between the request's read and its
/// write; the request's resourceVersion is then stale. Only the annotation changes.
fn concurrent_write(app: &App, t: &Target, name: &str) {
    let Some(dir) = &app.lab else { return };
    for f in crate::core::faults(dir) {
        let crate::core::FaultKind::WriteConflict {
            cluster,
            resource,
            name_prefix,
            times,
        } = &f.kind
        else {
            continue;
        };
        let names_resource = *resource == t.res.plural
            || *resource == t.res.qualified()
            || resource.eq_ignore_ascii_case(&t.res.kind);
        if *cluster != app.cluster || !names_resource || !name.starts_with(name_prefix.as_str()) {
            continue;
        }
        let Ok(mut current) = app.store.get(&t.res, t.ns.as_deref(), name) else {
            return;
        };
        if !crate::core::fire(dir, &f.id, *times) {
            continue;
        }
        if !current["metadata"]["annotations"].is_object() {
            current["metadata"]["annotations"] = json!({});
        }
        current["metadata"]["annotations"][crate::core::CONCURRENT_WRITE_ANNOTATION] =
            Value::String(format!(
                "{}-{:08x}",
                crate::core::now_ms(),
                fastrand::u32(..)
            ));
        if let Err(e) = app
            .store
            .update(&t.res, t.ns.as_deref(), name, current, false, false)
        {
            tracing::warn!(
                "lab: the write-conflict fault could not write: {}",
                e.message
            );
        }
        return;
    }
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    // Typed clients send protobuf; the lab reads its envelope and metadata (see `protobuf`).
    if ct.contains("protobuf")
        && let Some(v) = protobuf::decode(body)
    {
        return Ok(v);
    }
    if ct.contains("protobuf") || ct.contains("cbor") {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/apply-patch+yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct})"
            ),
        ));
    }
    let parsed: Result<Value, String> = if ct.contains("yaml") {
        serde_saphyr::from_slice::<Value>(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| {
        ApiError::new(
            400,
            "BadRequest",
            format!("the body of the request could not be decoded ({ct}): {e}"),
        )
    })
}

/// The OpenAPI v3 index: one document per group-version.
fn openapi_index(store: &Store) -> Value {
    let mut paths = serde_json::Map::new();
    for r in store.resources() {
        let key = if r.group.is_empty() {
            format!("api/{}", r.version)
        } else {
            format!("apis/{}/{}", r.group, r.version)
        };
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash=lab")}),
        );
    }
    json!({"paths": paths})
}

/// A group-version's OpenAPI v3 document: the PATCH operation of every kind, declaring the
/// `fieldValidation` parameter, which tells kubectl to let the server validate (server-side field
/// validation) instead of downloading schemas. Schemas themselves are left open.
fn openapi_gv(store: &Store, group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for r in store
        .resources()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let path = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
        let params = json!([{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}, {"name": "fieldManager", "in": "query", "schema": {"type": "string"}}, {"name": "dryRun", "in": "query", "schema": {"type": "string"}}]);
        paths.insert(path, json!({"patch": {"operationId": format!("patch{}", r.kind), "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {"200": {"description": "OK"}}}}));
    }
    json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.34.2"}, "paths": paths, "components": {"schemas": {}}})
}

fn resource_list(store: &Store, group: &str, version: &str) -> Value {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut resources = Vec::new();
    for r in store
        .resources()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let verbs = json!([
            "create", "delete", "get", "list", "patch", "update", "watch"
        ]);
        resources.push(json!({"name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs, "shortNames": r.short_names}));
        if r.status {
            resources.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn group_list(store: &Store) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for r in store
        .resources()
        .into_iter()
        .filter(|r| !r.group.is_empty())
    {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) => {
                if !vs.contains(&r.version) {
                    vs.push(r.version.clone());
                }
            }
            None => groups.push((r.group.clone(), vec![r.version.clone()])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Label selector matching: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`.
pub fn labels_match(selector: &str, labels: &serde_json::Map<String, Value>) -> bool {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for ch in selector.chars() {
        match ch {
            '(' => {
                depth += 1;
                cur.push(ch)
            }
            ')' => {
                depth -= 1;
                cur.push(ch)
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    let get = |k: &str| labels.get(k.trim()).and_then(|v| v.as_str());
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .all(|p| {
            if let Some((k, v)) = p.split_once("!=") {
                get(k) != Some(v.trim())
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                get(k) == Some(v.trim())
            } else if let Some((k, set)) = p.split_once(" notin ") {
                let set: Vec<&str> = set
                    .trim()
                    .trim_matches(|c| c == '(' || c == ')')
                    .split(',')
                    .map(str::trim)
                    .collect();
                get(k).is_none_or(|v| !set.contains(&v))
            } else if let Some((k, set)) = p.split_once(" in ") {
                let set: Vec<&str> = set
                    .trim()
                    .trim_matches(|c| c == '(' || c == ')')
                    .split(',')
                    .map(str::trim)
                    .collect();
                get(k).is_some_and(|v| set.contains(&v))
            } else if let Some(k) = p.strip_prefix('!') {
                get(k).is_none()
            } else {
                get(p).is_some()
            }
        })
}

fn field_match(selector: &str, obj: &Value) -> bool {
    selector.split(',').filter(|p| !p.is_empty()).all(|p| {
        let (neg, (k, v)) = match p.split_once("!=") {
            Some(kv) => (true, kv),
            None => (
                false,
                p.split_once("==")
                    .or_else(|| p.split_once('='))
                    .unwrap_or((p, "")),
            ),
        };
        let got = match k {
            "metadata.name" => obj["metadata"]["name"].as_str(),
            "metadata.namespace" => obj["metadata"]["namespace"].as_str(),
            "spec.nodeName" => obj["spec"]["nodeName"].as_str(),
            "status.phase" => obj["status"]["phase"].as_str(),
            _ => None,
        };
        (got == Some(v)) != neg
    })
}

fn selected(obj: &Value, q: &std::collections::HashMap<String, String>) -> bool {
    let empty = serde_json::Map::new();
    let labels = obj["metadata"]["labels"].as_object().unwrap_or(&empty);
    q.get("labelSelector")
        .is_none_or(|s| labels_match(s, labels))
        && q.get("fieldSelector").is_none_or(|s| field_match(s, obj))
}

fn list(store: &Store, t: &Target, q: &std::collections::HashMap<String, String>) -> Response {
    let (items, rv) = store.list(&t.res, t.ns.as_deref());
    let items: Vec<Value> = items.into_iter().filter(|o| selected(o, q)).collect();
    json_response(
        200,
        &json!({"kind": format!("{}List", t.res.kind), "apiVersion": t.res.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    )
}

async fn watch(store: Store, t: Target, q: std::collections::HashMap<String, String>) -> Response {
    let rx = store.changes.subscribe();
    let since: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1800);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let key = t.res.key();
    // Objects changed after `since` (or all, for a fresh watch) are sent first as ADDED.
    let (items, rv) = store.list(&t.res, t.ns.as_deref());
    let initial: Vec<Value> = items
        .into_iter()
        .filter(|o| selected(o, &q))
        .filter(|o| {
            o["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                > since
        })
        .map(|o| json!({"type": "ADDED", "object": o}))
        .collect();
    let ns = t.ns.clone();
    let kind = t.res.kind.clone();
    let api_version = t.res.api_version();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let stream = futures_util::stream::unfold(
        (initial.into_iter(), rx, rv),
        move |(mut initial, mut rx, last_rv)| {
            let key = key.clone();
            let ns = ns.clone();
            let q = q.clone();
            let kind = kind.clone();
            let api_version = api_version.clone();
            async move {
                if let Some(ev) = initial.next() {
                    let line = format!("{}\n", ev);
                    return Some((
                        Ok::<_, std::io::Error>(Bytes::from(line)),
                        (initial, rx, last_rv),
                    ));
                }
                loop {
                    let next = tokio::time::timeout_at(
                        deadline,
                        tokio::time::timeout(Duration::from_secs(5), rx.recv()),
                    )
                    .await;
                    match next {
                        Err(_) => return None,
                        Ok(Err(_)) => {
                            if bookmarks {
                                let bm = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": last_rv.to_string()}}});
                                return Some((
                                    Ok(Bytes::from(format!("{bm}\n"))),
                                    (initial, rx, last_rv),
                                ));
                            }
                            continue;
                        }
                        Ok(Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_)))) => {
                            continue;
                        }
                        Ok(Ok(Err(_))) => return None,
                        Ok(Ok(Ok(ch))) => {
                            if ch.resource != key {
                                continue;
                            }
                            if let Some(ns) = &ns
                                && ch.object["metadata"]["namespace"].as_str() != Some(ns)
                            {
                                continue;
                            }
                            if !selected(&ch.object, &q) {
                                continue;
                            }
                            let rv = ch.object["metadata"]["resourceVersion"]
                                .as_str()
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(last_rv);
                            let line =
                                format!("{}\n", json!({"type": ch.kind, "object": ch.object}));
                            return Some((Ok(Bytes::from(line)), (initial, rx, rv)));
                        }
                    }
                }
            }
        },
    );
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .expect("response")
}

fn patch(
    store: &Store,
    t: &Target,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
    dry_run: bool,
) -> Response {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let current = store.get(&t.res, t.ns.as_deref(), name);
    let apply = ct.starts_with("application/apply-patch");
    let mut base = match current {
        Ok(o) => o,
        Err(e) if apply => {
            // Server-side apply creates.
            let _ = e;
            return match parse_body(headers, body) {
                Ok(obj) => match store.create(&t.res, t.ns.as_deref(), obj, dry_run) {
                    Ok(o) => json_response(201, &o),
                    Err(e) => err(e),
                },
                Err(e) => err(e),
            };
        }
        Err(e) => return err(e),
    };
    let status_only = t.sub.as_deref() == Some("status");
    let read_rv = base["metadata"]["resourceVersion"].clone();
    let result: Result<(), String> = if ct.starts_with("application/json-patch+json") {
        serde_json::from_slice::<json_patch::Patch>(body)
            .map_err(|e| e.to_string())
            .and_then(|p| json_patch::patch(&mut base, &p).map_err(|e| e.to_string()))
    } else {
        match parse_body(headers, body) {
            Ok(p) => {
                if ct.starts_with("application/strategic-merge-patch") {
                    strategic_merge(&mut base, &p);
                } else {
                    json_patch::merge(&mut base, &p);
                }
                Ok(())
            }
            Err(e) => Err(e.message),
        }
    };
    if let Err(e) = result {
        return err(ApiError::new(
            422,
            "Invalid",
            format!("the patch could not be applied: {e}"),
        ));
    }
    // A patch that names a resourceVersion is a precondition, as on a real server (a stale one is
    // the same 409 Conflict as a PUT's); otherwise the patch applies to whatever is stored.
    if base["metadata"]["resourceVersion"] == read_rv
        && let Some(m) = base["metadata"].as_object_mut()
    {
        m.remove("resourceVersion");
    }
    match store.update(&t.res, t.ns.as_deref(), name, base, status_only, dry_run) {
        Ok(o) => json_response(200, &o),
        Err(e) => err(e),
    }
}

/// Strategic merge: like a JSON merge patch, but lists of objects with a `name` merge by name.
fn strategic_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, pv) in p {
                if k == "$patch"
                    || k.starts_with("$setElementOrder")
                    || k.starts_with("$retainKeys")
                    || k.starts_with("$deleteFromPrimitiveList")
                {
                    continue;
                }
                if pv.is_null() {
                    t.remove(k);
                    continue;
                }
                match t.get_mut(k) {
                    Some(tv) => strategic_merge(tv, pv),
                    None => {
                        t.insert(k.clone(), pv.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(p))
            if p.iter().all(|x| x.get("name").is_some())
                && t.iter().all(|x| x.get("name").is_some()) =>
        {
            for pv in p {
                match t.iter_mut().find(|x| x.get("name") == pv.get("name")) {
                    Some(tv) => strategic_merge(tv, pv),
                    None => t.push(pv.clone()),
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        err(self)
    }
}
