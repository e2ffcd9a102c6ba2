//! The `flow` check: is a network flow allowed or denied by the clusters' policies?
//!
//! Proved the only way that also holds on a real cluster: a short-lived probe Pod in the source
//! namespace of the source cluster, carrying the source workload's labels (so every
//! CiliumNetworkPolicy selects it as it selects the workload) plus `bootstrap.dev/flow-probe`,
//! runs one connection attempt given as an argv (no shell): `curl` for an HTTP request, `nc -z` for
//! a TCP connection. The check waits for the Pod to finish, reads the container's termination
//! message and exit code, and always deletes the Pod (a guard deletes it on timeout and on cancel
//! too).
//!
//! The verdict follows what Cilium does (facts: platform-components.md §2.6):
//! * An L3/L4 deny drops packets: the connection times out (`curl` exit 28, `nc` exit 1).
//! * An L7 deny is answered by Cilium's Envoy proxy with `403 Forbidden`, body `Access denied`,
//!   `server: envoy` (cilium/cilium#13280; the same body in cilium/cilium#28254). The probe keeps
//!   only the status code, so a backend that itself answers 403 also counts as denied.
//! * `curl` exit 7 (connection refused) counts as denied, but it can also mean nothing listens.
//! * `curl` exit 6 (host not resolved) is neither: the Service does not exist in the source
//!   cluster (a global Service needs the Service in both clusters, facts §2.4, §18.10) or DNS
//!   egress is denied.
//!
//! Hubble would add evidence (`hubble observe --from-pod NS/POD --verdict DROPPED`); the failure
//! message says so, but the check does not need Hubble.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ExecAction, Pod, PodSecurityContext, PodSpec, Probe, SeccompProfile,
    SecurityContext, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use sha2::Digest;

use super::{Clusters, Mode, Outcome};
use crate::error::Result;
use crate::spec::phase::{FlowCheck, FlowExpect, FlowHttp};

/// The label every probe Pod carries (its value: the flow's hash).
pub const PROBE_LABEL: &str = "bootstrap.dev/flow-probe";
/// A small image with `curl` (8.3 or later, for `%output{}` in `-w`) and `nc`.
pub const DEFAULT_IMAGE: &str = "nicolaka/netshoot:v0.13";
/// How long one connection attempt may take (`curl --max-time`, `nc -w`).
pub const CONNECT_SECONDS: u32 = 5;
/// The Pod's hard limit (`activeDeadlineSeconds`): the attempt plus time to pull and start.
pub const POD_DEADLINE_SECONDS: i64 = 90;

/// The container's termination-message file; `curl -w '%output{…}'` (curl 8.3.0) writes the HTTP
/// status there, and `FallbackToLogsOnError` makes the kubelet use the log tail (curl's error) when
/// the file is empty and the container failed.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// The argv the probe runs (the lab's kubelet parses exactly this).
pub fn probe_argv(host: &str, port: u16, http: Option<&FlowHttp>) -> Vec<String> {
    let secs = CONNECT_SECONDS.to_string();
    match http {
        Some(h) => vec![
            "curl".into(),
            "-sS".into(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            format!("%output{{{TERMINATION_LOG}}}%{{http_code}}"),
            "--max-time".into(),
            secs,
            "-X".into(),
            h.method.clone(),
            format!("http://{host}:{port}{}", h.path),
        ],
        None => vec![
            "nc".into(),
            "-z".into(),
            "-w".into(),
            secs,
            host.into(),
            port.to_string(),
        ],
    }
}

/// A short stable hash of the flow (the probe label's value).
pub fn probe_hash(f: &FlowCheck) -> String {
    let d = sha2::Sha256::digest(format!("{} {}", f.describe(), f.expect).as_bytes());
    hex::encode(d)[..10].to_string()
}

/// The probe Pod: the workload's labels plus the probe label, restartPolicy Never, a hard
/// deadline, no service account token, and a security context the `restricted` Pod Security level
/// admits. It carries the workload's labels, so the workload's Services select it too: a readiness
/// probe that never passes keeps it out of their endpoints (only Ready pods receive traffic), so no
/// client of the workload is sent to it.
pub fn probe_pod(f: &FlowCheck, name: &str, argv: Vec<String>) -> Pod {
    let mut labels = f.from.labels.clone();
    labels.insert(PROBE_LABEL.into(), probe_hash(f));
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(f.from.namespace.clone()),
            labels: Some(labels),
            annotations: Some([("bootstrap.dev/flow".to_string(), f.describe())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(POD_DEADLINE_SECONDS),
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(0),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65534),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![Container {
                name: "probe".into(),
                image: Some(f.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())),
                command: Some(argv),
                termination_message_policy: Some("FallbackToLogsOnError".into()),
                readiness_probe: Some(Probe {
                    exec: Some(ExecAction {
                        command: Some(vec!["false".into()]),
                    }),
                    period_seconds: Some(60),
                    ..Default::default()
                }),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Allowed(String),
    Denied(String),
    /// Neither: the probe could not try the flow (DNS, image pull, deadline).
    Inconclusive(String),
}

/// Read a finished probe: `http` says whether it ran curl (else nc).
pub fn verdict(http: bool, exit_code: i32, message: &str) -> Seen {
    let msg = message.trim();
    if !http {
        return match exit_code {
            0 => Seen::Allowed("TCP connection made".into()),
            _ => Seen::Denied(format!(
                "no TCP connection within {CONNECT_SECONDS}s (nc exit {exit_code})"
            )),
        };
    }
    match exit_code {
        0 => match msg {
            "403" => Seen::Denied(
                "HTTP 403 (Cilium's L7 proxy answers an L7 deny with 403 \"Access denied\")".into(),
            ),
            "000" | "" => Seen::Inconclusive(format!("curl gave no HTTP status ({msg:?})")),
            code => Seen::Allowed(format!("HTTP {code}")),
        },
        28 => Seen::Denied(format!(
            "timed out after {CONNECT_SECONDS}s (curl exit 28: dropped, as an L3/L4 deny does){}",
            said(msg)
        )),
        7 => Seen::Denied(format!(
            "connection refused (curl exit 7: refused by policy, or nothing listens){}",
            said(msg)
        )),
        6 => Seen::Inconclusive(format!(
            "the host did not resolve (curl exit 6): the Service must exist in the source cluster (a global Service in both clusters), and DNS egress must be allowed{}",
            said(msg)
        )),
        n => Seen::Inconclusive(format!("curl exit {n}{}", said(msg))),
    }
}

fn said(msg: &str) -> String {
    if msg.is_empty() {
        String::new()
    } else {
        format!(": {msg}")
    }
}

/// Deletes the probe Pod when dropped (timeout, cancel, error) unless it was deleted already.
struct PodGuard {
    api: Api<Pod>,
    name: String,
    armed: bool,
}

impl PodGuard {
    async fn delete(mut self) {
        let _ = self.api.delete(&self.name, &delete_now()).await;
        self.armed = false;
    }
}

impl Drop for PodGuard {
    fn drop(&mut self) {
        if self.armed
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (api, name) = (self.api.clone(), self.name.clone());
            rt.spawn(async move {
                let _ = api.delete(&name, &delete_now()).await;
            });
        }
    }
}

fn delete_now() -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    }
}

/// Evaluate a flow check: once (`Mode::Once`), or probe again until it holds or the deadline
/// passes (policies take a moment to reach every agent).
pub async fn evaluate(
    clusters: &Clusters,
    f: &FlowCheck,
    mode: Mode,
    progress: Option<&std::sync::Mutex<String>>,
) -> Result<Outcome> {
    let deadline = match mode {
        Mode::Once => None,
        Mode::Wait(t) => Some(Instant::now() + t),
    };
    let mut last: Option<Outcome> = None;
    loop {
        let budget = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(POD_DEADLINE_SECONDS as u64 + 10));
        let o = match tokio::time::timeout(budget, probe_once(clusters, f)).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => Outcome {
                passed: false,
                terminal: false,
                detail: format!("flow {}: {e:#}", f.describe()),
            },
            // The deadline cut a probe short (its Pod is deleted by the guard): the last complete
            // probe says why.
            Err(_) => Outcome {
                passed: false,
                terminal: false,
                detail: match last.take() {
                    Some(l) => format!(
                        "timed out after {}; the last complete probe: {}",
                        humantime::format_duration(match mode {
                            Mode::Wait(t) => t,
                            Mode::Once => budget,
                        }),
                        l.detail
                    ),
                    None => format!(
                        "flow {}: the probe pod did not finish in time",
                        f.describe()
                    ),
                },
            },
        };
        if let Some(p) = progress
            && let Ok(mut p) = p.lock()
        {
            p.clone_from(&o.detail);
        }
        match deadline {
            Some(d) if !o.passed && Instant::now() + Duration::from_secs(1) < d => {
                last = Some(o);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => return Ok(o),
        }
    }
}

/// Where the probe connects: the Service's cluster DNS name, or the IP of a pod with the labels.
async fn target(clusters: &Clusters, f: &FlowCheck) -> Result<std::result::Result<String, String>> {
    let cluster =
        f.to.cluster
            .as_deref()
            .or(f.from.cluster.as_deref())
            .unwrap_or("");
    if let Some(svc) = &f.to.service {
        return service_target(clusters, f, svc, cluster).await;
    }
    let labels = f.to.endpoint.clone().unwrap_or_default();
    let client = clusters.client(cluster).await?;
    let api: Api<Pod> = Api::namespaced(client, &f.to.namespace);
    let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = api
        .list(&ListParams::default().labels(&selector.join(",")))
        .await?;
    let ip = pods.items.iter().find_map(|p| {
        let st = p.status.as_ref()?;
        (st.phase.as_deref() == Some("Running"))
            .then(|| st.pod_ip.clone())
            .flatten()
    });
    Ok(ip.ok_or_else(|| {
        format!(
            "no running pod with labels {{{}}} in {cluster}/{} has an IP",
            selector.join(","),
            f.to.namespace
        )
    }))
}

/// Is a Service marked global (the current key or its legacy alias; facts §2.4)?
fn is_global(s: &Service) -> bool {
    let a = s.metadata.annotations.clone().unwrap_or_default();
    a.get("service.cilium.io/global")
        .or_else(|| a.get("io.cilium/global-service"))
        .is_some_and(|v| v == "true")
}

/// A Service target: its DNS name, once the Service exists where the flow ends and, for a flow
/// between clusters, exists and is global in both (otherwise the source cluster's clients cannot
/// resolve it, or reach only their own cluster's backends: facts §2.4, §18.10).
async fn service_target(
    clusters: &Clusters,
    f: &FlowCheck,
    svc: &str,
    to: &str,
) -> Result<std::result::Result<String, String>> {
    let ns = &f.to.namespace;
    let from = f.from.cluster.as_deref().unwrap_or("");
    let get = |cluster: String| async move {
        let api: Api<Service> = Api::namespaced(clusters.client(&cluster).await?, ns);
        Ok::<_, color_eyre::eyre::Report>(api.get_opt(svc).await?)
    };
    let Some(there) = get(to.to_string()).await? else {
        return Ok(Err(format!("Service {ns}/{svc} not found in {to}")));
    };
    if from != to {
        let Some(here) = get(from.to_string()).await? else {
            return Ok(Err(format!(
                "Service {ns}/{svc} does not exist in {from}, so its clients cannot resolve it: a global Service needs the same Service in both clusters, annotated service.cilium.io/global: \"true\""
            )));
        };
        if !is_global(&here) || !is_global(&there) {
            return Ok(Err(format!(
                "Service {ns}/{svc} is not global in both {from} and {to} (service.cilium.io/global: \"true\"), so {from}'s clients reach only {from}'s backends"
            )));
        }
    }
    Ok(Ok(format!("{svc}.{ns}.svc.cluster.local")))
}

/// One probe: create the Pod, wait for it to finish, read it, delete it.
async fn probe_once(clusters: &Clusters, f: &FlowCheck) -> Result<Outcome> {
    let flow = f.describe();
    let host = match target(clusters, f).await? {
        Ok(h) => h,
        Err(why) => {
            return Ok(Outcome {
                passed: false,
                terminal: false,
                detail: format!("flow {flow}: {why}"),
            });
        }
    };
    let from = f.from.cluster.as_deref().unwrap_or("");
    let client = clusters.client(from).await?;
    let api: Api<Pod> = Api::namespaced(client, &f.from.namespace);
    let hash = probe_hash(f);
    // A probe left over by a killed run would be evaluated as a second attempt: remove it.
    let selector = format!("{PROBE_LABEL}={hash}");
    for old in api.list(&ListParams::default().labels(&selector)).await? {
        if let Some(n) = old.metadata.name {
            let _ = api.delete(&n, &delete_now()).await;
        }
    }
    let name = format!("flow-probe-{hash}-{:04x}", fastrand::u16(..));
    let argv = probe_argv(&host, f.to.port, f.http.as_ref());
    api.create(&PostParams::default(), &probe_pod(f, &name, argv))
        .await?;
    let guard = PodGuard {
        api: api.clone(),
        name: name.clone(),
        armed: true,
    };
    let finished = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
    };
    let waited = tokio::time::timeout(
        Duration::from_secs(POD_DEADLINE_SECONDS as u64 + 5),
        kube::runtime::wait::await_condition(api.clone(), &name, finished),
    )
    .await;
    let pod = match waited {
        Ok(Ok(Some(p))) => Some(p),
        _ => api.get_opt(&name).await.ok().flatten(),
    };
    guard.delete().await;
    let seen = read(&pod, f.http.is_some());
    let (passed, what) = match (&seen, f.expect) {
        (Seen::Allowed(s), FlowExpect::Allowed) | (Seen::Denied(s), FlowExpect::Denied) => {
            (true, format!("{} as expected ({s})", f.expect))
        }
        (Seen::Allowed(s), FlowExpect::Denied) => (
            false,
            format!("expected denied, but it was allowed ({s}): a policy lets it through"),
        ),
        (Seen::Denied(s), FlowExpect::Allowed) => (
            false,
            format!(
                "expected allowed, but it was denied ({s}); `hubble observe --from-pod {}/{name} --verdict DROPPED` shows the drop and the policy verdict",
                f.from.namespace
            ),
        ),
        (Seen::Inconclusive(s), _) => (
            false,
            format!("expected {}, but the probe could not tell: {s}", f.expect),
        ),
    };
    Ok(Outcome {
        passed,
        terminal: false,
        detail: format!("flow {flow}: {what}"),
    })
}

/// What a finished (or stuck) probe Pod says.
fn read(pod: &Option<Pod>, http: bool) -> Seen {
    let Some(pod) = pod else {
        return Seen::Inconclusive("the probe pod disappeared".into());
    };
    let st = pod.status.clone().unwrap_or_default();
    let cs = st.container_statuses.unwrap_or_default();
    let state = cs.first().and_then(|c| c.state.clone()).unwrap_or_default();
    if let Some(t) = state.terminated {
        return verdict(http, t.exit_code, t.message.as_deref().unwrap_or(""));
    }
    if let Some(w) = state.waiting {
        return Seen::Inconclusive(format!(
            "the probe pod did not start: {}{}",
            w.reason.unwrap_or_default(),
            said(w.message.as_deref().unwrap_or(""))
        ));
    }
    Seen::Inconclusive(format!(
        "the probe pod is {}{}",
        st.phase.unwrap_or_else(|| "Pending".into()),
        said(&st.reason.unwrap_or_default())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_curl_and_cilium() {
        assert_eq!(verdict(true, 0, "200"), Seen::Allowed("HTTP 200".into()));
        assert!(matches!(verdict(true, 0, "403"), Seen::Denied(s) if s.contains("Access denied")));
        assert!(
            matches!(verdict(true, 28, "curl: (28) Connection timed out after 5002 milliseconds"), Seen::Denied(s) if s.contains("exit 28"))
        );
        assert!(matches!(verdict(true, 6, ""), Seen::Inconclusive(s) if s.contains("resolve")));
        assert!(matches!(verdict(false, 0, ""), Seen::Allowed(_)));
        assert!(matches!(verdict(false, 1, ""), Seen::Denied(_)));
    }

    #[test]
    fn the_probe_pod_is_never_ready_and_carries_the_workloads_labels() {
        let f: FlowCheck = serde_saphyr::from_str(
            "{ from: { cluster: apps, namespace: gitlab, labels: { app: webservice } }, to: { namespace: databases, service: pg-rw, port: 5432 }, expect: allowed }",
        )
        .unwrap();
        let p = probe_pod(&f, "flow-probe-x", probe_argv("h", 1, None));
        let labels = p.metadata.labels.clone().unwrap();
        assert_eq!(labels["app"], "webservice");
        assert_eq!(labels[PROBE_LABEL], probe_hash(&f));
        let spec = p.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.active_deadline_seconds, Some(POD_DEADLINE_SECONDS));
        let c = &spec.containers[0];
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .exec
                .as_ref()
                .unwrap()
                .command,
            Some(vec!["false".to_string()])
        );
        assert_eq!(c.command.as_ref().unwrap()[0], "nc");
    }

    #[test]
    fn the_probe_is_an_argv_without_a_shell() {
        let http = FlowHttp {
            method: "GET".into(),
            path: "/api/v4/health".into(),
        };
        assert_eq!(
            probe_argv("pg-rw.databases.svc.cluster.local", 8080, Some(&http)).join(" "),
            "curl -sS -o /dev/null -w %output{/dev/termination-log}%{http_code} --max-time 5 -X GET http://pg-rw.databases.svc.cluster.local:8080/api/v4/health"
        );
        assert_eq!(
            probe_argv("10.244.1.7", 5432, None).join(" "),
            "nc -z -w 5 10.244.1.7 5432"
        );
    }
}
