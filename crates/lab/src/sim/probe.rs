//! The kubelet's part for flow probes: it "runs" the probe Pods of the `flow` check.
//!
//! A probe Pod (label `bootstrap.dev/flow-probe`) carries an argv, exactly what the real check
//! sends: `curl … -X METHOD http://HOST:PORT/PATH` or `nc -z -w N HOST PORT`. The lab resolves
//! HOST as the cluster would (a Service's DNS name in the source cluster, with a global Service's
//! remote backends from the mesh's EndpointSlices; or a pod IP in any cluster), decides the flow
//! with [`super::policy`] over the CiliumNetworkPolicies and CiliumClusterwideNetworkPolicies of
//! both clusters (egress in the source's, ingress in the destination's), then sets the Pod's status
//! as the kubelet would after the container exited: curl's exit code (28 on a drop, 0 with `403`
//! written to the termination log for an L7 deny, 6 when the name does not resolve, 7 when nothing
//! answers) and the termination message (`FallbackToLogsOnError`: curl's error line when it
//! failed). Which policies decided is appended to the lab's call log (`calls.jsonl`, tool
//! `kubelet`), never into the Pod, so the Pod reads as a real one.
//!
//! Level-triggered: every pass looks at every probe Pod that has not finished, so one created
//! while the lab was down is run when it comes back. A Pod stays Pending while its cluster has no
//! running CNI, as on a real cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::policy::{self, Endpoint, Policy, Request, Settings, Verdict};
use crate::apiserver::Store;
use crate::cluster::{Local, Objects};
use crate::core::{LabDir, Topology};

pub const PROBE_LABEL: &str = "bootstrap.dev/flow-probe";

/// What the probe's argv asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// curl (else nc).
    pub http: bool,
    pub method: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub seconds: u32,
}

/// Parse the argv of a probe (see `checks::flow::probe_argv`).
pub fn parse_argv(argv: &[String]) -> Option<Probe> {
    let tool = argv.first()?.rsplit('/').next()?.to_string();
    let value_after = |flag: &str| {
        argv.iter()
            .position(|a| a == flag)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    match tool.as_str() {
        "curl" => {
            let url = argv.iter().rev().find(|a| a.starts_with("http://"))?;
            let rest = url.strip_prefix("http://")?;
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (authority.to_string(), 80),
            };
            Some(Probe {
                http: true,
                method: value_after("-X").unwrap_or_else(|| "GET".into()),
                host,
                port,
                path: path.to_string(),
                seconds: value_after("--max-time")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(5),
            })
        }
        "nc" => {
            let pos: Vec<&String> = {
                let mut out = Vec::new();
                let mut i = 1;
                while i < argv.len() {
                    match argv[i].as_str() {
                        "-w" => i += 2,
                        a if a.starts_with('-') => i += 1,
                        _ => {
                            out.push(&argv[i]);
                            i += 1
                        }
                    }
                }
                out
            };
            Some(Probe {
                http: false,
                method: String::new(),
                host: pos.first()?.to_string(),
                port: pos.get(1)?.parse().ok()?,
                path: String::new(),
                seconds: value_after("-w").and_then(|s| s.parse().ok()).unwrap_or(5),
            })
        }
        _ => None,
    }
}

/// How the container exits: (exit code, termination message).
pub fn exit_of(p: &Probe, outcome: &Outcome) -> (i32, String) {
    match (outcome, p.http) {
        (Outcome::Verdict(Verdict::Allowed { .. }), true) => (0, "200".into()),
        (Outcome::Verdict(Verdict::L7Denied { .. }), true) => (0, "403".into()),
        (Outcome::Verdict(Verdict::Dropped { .. }) | Outcome::NoRoute(_), true) => (
            28,
            format!(
                "curl: (28) Connection timed out after {} milliseconds",
                p.seconds * 1000 + 2
            ),
        ),
        (Outcome::Unresolved, true) => (6, format!("curl: (6) Could not resolve host: {}", p.host)),
        (Outcome::NoBackend(_), true) => (
            7,
            format!(
                "curl: (7) Failed to connect to {} port {} after 1 ms: Couldn't connect to server",
                p.host, p.port
            ),
        ),
        // nc -z prints nothing on failure without -v; its exit code says it.
        (Outcome::Verdict(Verdict::Allowed { .. } | Verdict::L7Denied { .. }), false) => {
            (0, String::new())
        }
        (Outcome::Unresolved, false) => (
            1,
            format!(
                "nc: getaddrinfo for host \"{}\" port {}: Name does not resolve",
                p.host, p.port
            ),
        ),
        (_, false) => (1, String::new()),
    }
}

/// What happened to the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Verdict(Verdict),
    /// The name does not resolve (no such Service in the source cluster, or DNS egress denied).
    Unresolved,
    /// The Service has no backend on that port.
    NoBackend(String),
    /// No route: no pod has that IP, or the clusters are not meshed.
    NoRoute(String),
}

impl Outcome {
    fn explain(&self) -> String {
        match self {
            Outcome::Verdict(v) => v.explain(),
            Outcome::Unresolved => "the name does not resolve".into(),
            Outcome::NoBackend(why) | Outcome::NoRoute(why) => why.clone(),
        }
    }
}

/// Start the probe runner over every cluster's store (beside the per-cluster controllers).
pub fn start(
    stores: Vec<(String, Store)>,
    topo: Topology,
    dir: LabDir,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = tick(&stores, &topo, &dir).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn labels_of(o: &Value, path: &str) -> BTreeMap<String, String> {
    o.pointer(path)
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default()
}

fn endpoint(cluster: &str, pod: &Value) -> Endpoint {
    Endpoint {
        cluster: cluster.to_string(),
        namespace: text(&pod["metadata"]["namespace"]),
        name: text(&pod["metadata"]["name"]),
        labels: labels_of(pod, "/metadata/labels"),
        service_account: pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        namespace_labels: BTreeMap::new(),
    }
}

/// The endpoint with its Namespace's labels (and `kubernetes.io/metadata.name`, which the API
/// server sets on every Namespace).
async fn with_namespace(c: &Local, mut e: Endpoint) -> Endpoint {
    if let Ok(Some(ns)) = c.get("v1", "Namespace", None, &e.namespace).await {
        e.namespace_labels = labels_of(&ns, "/metadata/labels");
    }
    e.namespace_labels
        .insert("kubernetes.io/metadata.name".into(), e.namespace.clone());
    e
}

fn finished(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// One pass over every cluster's unfinished probe Pods.
pub async fn tick(stores: &[(String, Store)], topo: &Topology, dir: &LabDir) -> crate::Result<()> {
    for (cluster, store) in stores {
        let c = Local(store.clone());
        let probes = c.list("v1", "Pod", None, Some(PROBE_LABEL)).await?;
        for pod in probes.into_iter().filter(|p| !finished(p)) {
            // Without a CNI no pod sandbox starts: the probe stays Pending.
            let cni = c
                .get("apps/v1", "DaemonSet", Some("kube-system"), "cilium")
                .await?
                .is_some_and(|ds| super::workload_ready(&ds));
            if !cni {
                continue;
            }
            run(cluster, &c, pod, stores, topo, dir).await?;
        }
    }
    Ok(())
}

async fn run(
    cluster: &str,
    c: &Local,
    pod: Value,
    stores: &[(String, Store)],
    topo: &Topology,
    dir: &LabDir,
) -> crate::Result<()> {
    let container = &pod["spec"]["containers"][0];
    let argv: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(container["args"].as_array().into_iter().flatten())
        .map(text)
        .collect();
    let (code, message, why) = match parse_argv(&argv) {
        Some(p) => {
            let outcome = decide(cluster, &pod, &p, stores, topo).await;
            let (code, msg) = exit_of(&p, &outcome);
            (code, msg, outcome.explain())
        }
        None => (
            127,
            format!(
                "exec: \"{}\": executable file not found in $PATH",
                argv.first().cloned().unwrap_or_default()
            ),
            "not a probe the lab understands".to_string(),
        ),
    };
    let now = crate::apiserver::store::now();
    let mut done = pod.clone();
    done["status"] = json!({
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "podIP": pod_ip(topo, cluster, &text(&pod["metadata"]["name"])),
        "startTime": now,
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
        "containerStatuses": [{
            "name": text(&container["name"]), "image": text(&container["image"]), "imageID": "",
            "ready": false, "started": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                     "message": message, "startedAt": now, "finishedAt": now}}}]
    });
    c.replace_status(done).await?;
    // The call log says which policies decided (the crash harness and tests read it).
    let line = json!({"tool": "kubelet", "args": argv, "exit": code, "cluster": cluster,
        "pod": format!("{}/{}", text(&pod["metadata"]["namespace"]), text(&pod["metadata"]["name"])),
        "decided": why});
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.root().join("calls.jsonl"))
    {
        let _ = std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes());
    }
    Ok(())
}

/// A stable address in the cluster's pod CIDR for a probe Pod.
fn pod_ip(topo: &Topology, cluster: &str, name: &str) -> String {
    let Some(net) = topo
        .cluster(cluster)
        .and_then(|c| c.pod_cidr.parse::<ipnet::Ipv4Net>().ok())
    else {
        return String::new();
    };
    let h = name
        .bytes()
        .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
    let size = 1u64 << (32 - u32::from(net.prefix_len()));
    let host = 10 + h % (size.saturating_sub(20).max(1) as u32);
    std::net::Ipv4Addr::from(u32::from(net.network()) + host).to_string()
}

fn store_of(stores: &[(String, Store)], cluster: &str) -> Option<Local> {
    stores
        .iter()
        .find(|(n, _)| n == cluster)
        .map(|(_, s)| Local(s.clone()))
}

/// How a cluster's agents enforce: `policyEnforcementMode` and
/// `clustermesh.policyDefaultLocalCluster` from the deployed Cilium release's values, else the
/// chart version's default (off before 1.19, on from 1.19: facts §2.6), and the Cilium cluster
/// name (`cilium-config`), which is what `io.cilium.k8s.policy.cluster` carries.
async fn settings(c: &Local, lab_name: &str) -> Settings {
    let release = crate::charts::latest(c, "kube-system", "cilium")
        .await
        .ok()
        .flatten();
    let values = release
        .as_ref()
        .map(|r| r.json["config"].clone())
        .unwrap_or(Value::Null);
    let version = release
        .as_ref()
        .and_then(|r| {
            r.json["chart"]["metadata"]["version"]
                .as_str()
                .map(String::from)
        })
        .unwrap_or_default();
    let minor_19_or_later = {
        let mut it = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        major > 1 || (major == 1 && minor >= 19)
    };
    let cluster = super::mesh::identity(c, "kube-system")
        .await
        .map(|(n, _)| n)
        .filter(|n| n != "default")
        .unwrap_or_else(|| lab_name.to_string());
    Settings {
        cluster,
        enforcement: values["policyEnforcementMode"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        default_local_cluster: values["clustermesh"]["policyDefaultLocalCluster"]
            .as_bool()
            .unwrap_or(minor_19_or_later),
    }
}

async fn policies(c: &Local) -> Vec<Policy> {
    let mut out: Vec<Policy> = c
        .list("cilium.io/v2", "CiliumNetworkPolicy", None, None)
        .await
        .unwrap_or_default()
        .iter()
        .map(Policy::from_object)
        .collect();
    out.extend(
        c.list("cilium.io/v2", "CiliumClusterwideNetworkPolicy", None, None)
            .await
            .unwrap_or_default()
            .iter()
            .map(Policy::from_object),
    );
    out
}

/// A running (not finished, not probe) pod, as an endpoint with its cluster's Cilium name.
fn serving(pod: &Value) -> bool {
    !finished(pod) && pod["metadata"]["labels"][PROBE_LABEL].is_null()
}

/// The lab's workloads roll out without Pod objects: a Deployment, StatefulSet or DaemonSet with
/// ready replicas whose pod template the selector matches stands for its pods (one, from its
/// template).
async fn workload_pods(c: &Local, ns: &str, sel: &BTreeMap<String, String>) -> Vec<Value> {
    let mut out = Vec::new();
    for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
        for w in c
            .list("apps/v1", kind, Some(ns), None)
            .await
            .unwrap_or_default()
        {
            let labels = labels_of(&w, "/spec/template/metadata/labels");
            let ready = w["status"]["readyReplicas"]
                .as_i64()
                .or_else(|| w["status"]["numberReady"].as_i64())
                .unwrap_or(0);
            if ready > 0 && sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                out.push(json!({"metadata": {"name": format!("{}-0", text(&w["metadata"]["name"])), "namespace": ns,
                                             "labels": w["spec"]["template"]["metadata"]["labels"]},
                                "spec": w["spec"]["template"]["spec"]}));
            }
        }
    }
    out
}

/// The backend pods of a Service on `port`: local pods by its selector, then (a global Service)
/// those of every connected cluster whose EndpointSlice `<service>-<cluster>` the mesh published
/// here; `service.cilium.io/affinity: remote` puts the remote ones first. Returns (cluster, pod,
/// target port).
async fn backends(
    cluster: &str,
    svc: &Value,
    port: u16,
    stores: &[(String, Store)],
) -> Vec<(String, Value, u16)> {
    let ns = text(&svc["metadata"]["namespace"]);
    let name = text(&svc["metadata"]["name"]);
    let Some(sp) = svc["spec"]["ports"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["port"].as_u64() == Some(port as u64)))
        .cloned()
    else {
        return Vec::new();
    };
    let pods_of = |c: Local, svc: Value| async move {
        let sel = labels_of(&svc, "/spec/selector");
        if sel.is_empty() {
            return Vec::new();
        }
        let selector: Vec<String> = sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let ns = text(&svc["metadata"]["namespace"]);
        let pods = c
            .list("v1", "Pod", Some(&ns), Some(&selector.join(",")))
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(serving)
            .collect::<Vec<Value>>();
        if pods.is_empty() {
            workload_pods(&c, &ns, &sel).await
        } else {
            pods
        }
    };
    let target = |pod: &Value| -> u16 {
        match &sp["targetPort"] {
            Value::Number(n) => n.as_u64().map(|n| n as u16).unwrap_or(port),
            Value::String(named) => pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                .find(|p| p["name"].as_str() == Some(named))
                .and_then(|p| p["containerPort"].as_u64())
                .map(|n| n as u16)
                .unwrap_or(port),
            _ => port,
        }
    };
    let Some(local) = store_of(stores, cluster) else {
        return Vec::new();
    };
    let mut near: Vec<(String, Value, u16)> = pods_of(Local(local.0.clone()), svc.clone())
        .await
        .into_iter()
        .map(|p| (cluster.to_string(), p.clone(), target(&p)))
        .collect();
    let mut far = Vec::new();
    for (remote, store) in stores.iter().filter(|(n, _)| n != cluster) {
        let published = local
            .get(
                "discovery.k8s.io/v1",
                "EndpointSlice",
                Some(&ns),
                &format!("{name}-{remote}"),
            )
            .await
            .ok()
            .flatten()
            .is_some();
        if !published {
            continue;
        }
        let r = Local(store.clone());
        if let Ok(Some(rsvc)) = r.get("v1", "Service", Some(&ns), &name).await {
            for p in pods_of(r, rsvc).await {
                far.push((remote.clone(), p.clone(), target(&p)));
            }
        }
    }
    let affinity = svc["metadata"]["annotations"]["service.cilium.io/affinity"].as_str();
    if affinity == Some("remote") {
        far.extend(near);
        far
    } else {
        near.extend(far);
        near
    }
}

/// Decide what the probe's connection meets.
pub async fn decide(
    cluster: &str,
    pod: &Value,
    p: &Probe,
    stores: &[(String, Store)],
    topo: &Topology,
) -> Outcome {
    let Some(local) = store_of(stores, cluster) else {
        return Outcome::NoRoute(format!("no cluster {cluster}"));
    };
    let src_settings = settings(&local, cluster).await;
    let src = {
        let mut e = with_namespace(&local, endpoint(cluster, pod)).await;
        e.cluster = src_settings.cluster.clone();
        e
    };
    let src_policies = policies(&local).await;
    // Where the connection goes: (lab cluster, pod, port).
    let dest: Option<(String, Value, u16)> = if p.host.parse::<std::net::Ipv4Addr>().is_ok() {
        let mut found = None;
        for (name, store) in stores {
            let pods = Local(store.clone())
                .list("v1", "Pod", None, None)
                .await
                .unwrap_or_default();
            if let Some(pod) = pods
                .into_iter()
                .find(|x| serving(x) && x["status"]["podIP"].as_str() == Some(p.host.as_str()))
            {
                found = Some((name.clone(), pod, p.port));
                break;
            }
        }
        if found.is_none() {
            return Outcome::NoRoute(format!("no pod has the address {}", p.host));
        }
        found
    } else {
        // <service>.<namespace>.svc.cluster.local, resolved by the source cluster's DNS.
        let parts: Vec<&str> = p.host.split('.').collect();
        let (svc_name, ns) = match parts.as_slice() {
            [s, n, "svc", ..] | [s, n] => (*s, *n),
            _ => return Outcome::Unresolved,
        };
        let Ok(Some(svc)) = local.get("v1", "Service", Some(ns), svc_name).await else {
            return Outcome::Unresolved;
        };
        // The lookup itself is egress to the cluster DNS (UDP 53): an egress policy on the source
        // that does not allow it leaves the name unresolved.
        let dns = Endpoint {
            cluster: src_settings.cluster.clone(),
            namespace: "kube-system".into(),
            name: "coredns".into(),
            labels: [("k8s-app".to_string(), "kube-dns".to_string())].into(),
            service_account: "coredns".into(),
            namespace_labels: [(
                "kubernetes.io/metadata.name".to_string(),
                "kube-system".to_string(),
            )]
            .into(),
        };
        let dns_req = Request {
            port: 53,
            protocol: "UDP".into(),
            http: None,
        };
        if !matches!(
            policy::decide(
                policy::Direction::Egress,
                &src,
                &dns,
                &dns_req,
                &src_policies,
                &src_settings
            ),
            Verdict::Allowed { .. }
        ) {
            return Outcome::Unresolved;
        }
        match backends(cluster, &svc, p.port, stores)
            .await
            .into_iter()
            .next()
        {
            Some(b) => Some(b),
            None => {
                return Outcome::NoBackend(format!(
                    "Service {ns}/{svc_name} has no ready backend on port {} in {cluster} or a connected cluster",
                    p.port
                ));
            }
        }
    };
    let Some((dst_cluster, dst_pod, port)) = dest else {
        return Outcome::NoRoute("no destination".into());
    };
    let Some(remote) = store_of(stores, &dst_cluster) else {
        return Outcome::NoRoute(format!("no cluster {dst_cluster}"));
    };
    if dst_cluster != cluster
        && let Some(problem) = super::mesh::connection_problem(
            topo,
            &local,
            cluster,
            &remote,
            &dst_cluster,
            "kube-system",
        )
        .await
    {
        return Outcome::NoRoute(format!(
            "{cluster} and {dst_cluster} are not connected by Cluster Mesh: {problem}"
        ));
    }
    let dst_settings = settings(&remote, &dst_cluster).await;
    let dst = {
        let mut e = with_namespace(&remote, endpoint(&dst_cluster, &dst_pod)).await;
        e.cluster = dst_settings.cluster.clone();
        e
    };
    let dst_policies = policies(&remote).await;
    let req = Request {
        port,
        protocol: "TCP".into(),
        http: p.http.then(|| (p.method.clone(), p.path.clone())),
    };
    Outcome::Verdict(policy::evaluate(
        &src,
        &dst,
        &req,
        &src_policies,
        &src_settings,
        &dst_policies,
        &dst_settings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn the_checks_argv_parses() {
        let p = parse_argv(&argv("curl -sS -o /dev/null -w %output{/dev/termination-log}%{http_code} --max-time 5 -X POST http://pg-rw.databases.svc.cluster.local:8080/api/v4/health")).unwrap();
        assert_eq!(
            p,
            Probe {
                http: true,
                method: "POST".into(),
                host: "pg-rw.databases.svc.cluster.local".into(),
                port: 8080,
                path: "/api/v4/health".into(),
                seconds: 5
            }
        );
        let p = parse_argv(&argv("nc -z -w 5 10.244.1.7 5432")).unwrap();
        assert_eq!(
            (p.http, p.host.as_str(), p.port),
            (false, "10.244.1.7", 5432)
        );
        assert_eq!(parse_argv(&argv("sh -c true")), None);
    }

    #[test]
    fn exits_are_curls_and_ncs() {
        let curl = parse_argv(&argv(
            "curl --max-time 5 -X GET http://a.b.svc.cluster.local:80/",
        ))
        .unwrap();
        let dropped = Outcome::Verdict(Verdict::Dropped {
            direction: policy::Direction::Ingress,
            by: vec![],
        });
        assert_eq!(exit_of(&curl, &dropped).0, 28);
        let l7 = Outcome::Verdict(Verdict::L7Denied {
            direction: policy::Direction::Ingress,
            by: vec![],
        });
        assert_eq!(exit_of(&curl, &l7), (0, "403".into()));
        assert_eq!(exit_of(&curl, &Outcome::Unresolved).0, 6);
        let nc = parse_argv(&argv("nc -z -w 5 a.b.svc.cluster.local 80")).unwrap();
        assert_eq!(exit_of(&nc, &dropped), (1, String::new()));
    }
}
