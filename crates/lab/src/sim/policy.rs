//! Cilium network policy, decided without I/O: may a connection from one endpoint to another, on a
//! port (and with an HTTP request), pass the source's egress and the destination's ingress?
//!
//! The lab's kubelet gives it the endpoints (labels, namespace, cluster) and the policies stored in
//! each cluster; it answers with a verdict and the policies that decided it. The rules it follows
//! (sources cited where they are used):
//!
//! * An endpoint selected by a policy with ingress (egress) rules is default-deny in that
//!   direction; otherwise everything passes that way (docs.cilium.io, "Policy Enforcement Modes",
//!   `default` mode). `policyEnforcementMode: always` denies by default without selection,
//!   `never` enforces nothing.
//! * Deny rules (`ingressDeny`/`egressDeny`) win over allow rules (docs.cilium.io, "Deny
//!   Policies").
//! * A CiliumNetworkPolicy selects endpoints of its own namespace only, and a peer selector
//!   (`fromEndpoints`/`toEndpoints`) without `io.kubernetes.pod.namespace` means the policy's
//!   namespace; a CiliumClusterwideNetworkPolicy has neither restriction.
//! * A peer selector without `io.cilium.k8s.policy.cluster` matches endpoints of every connected
//!   cluster, unless `clustermesh.policyDefaultLocalCluster` is on (the default from Cilium 1.19;
//!   off in 1.18): then it means the local cluster only (facts: platform-components.md §2.6,
//!   §18 correction 7; Cilium upgrade notes, "policy-default-local-cluster").
//! * `toPorts` narrows a rule to ports (`port`, `endPort`, `protocol`, default ANY); a rule
//!   without `toPorts` allows every port; a rule with ports but no peers allows every peer; an
//!   empty rule (`{}`) allows nothing (the way to write a default deny).
//! * L7: if every rule that allows the port carries `rules.http`, the request must match one of
//!   them; a rule allowing the port without L7 rules makes the L7 rules of the others moot
//!   (docs.cilium.io, "Layer 7 Policies"). `method` and `path` are extended POSIX regexes
//!   (`cilium/cilium:pkg/policy/api/http.go`, `PortRuleHTTP`) that Envoy matches against the whole
//!   value (Envoy `safe_regex`: "the entire request header value must match"), so they are
//!   anchored here. An L7 deny is a `403` from the proxy; an L3/L4 deny drops the packets.
//!
//! * Identity labels: the pod's labels plus `io.kubernetes.pod.namespace`,
//!   `io.cilium.k8s.policy.cluster`, `io.cilium.k8s.policy.serviceaccount` and the Namespace's
//!   labels as `io.cilium.k8s.namespace.labels.<key>`; selector keys may carry the `k8s:` or
//!   `any:` source prefix.
//!
//! Not modelled: CIDR, FQDN, service and node selectors, named ports, `headers` matches beyond
//! presence, Kafka and DNS rule contents (a DNS rule allows port 53).

use std::collections::BTreeMap;

use serde_json::Value;

pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const CLUSTER_LABEL: &str = "io.cilium.k8s.policy.cluster";
pub const SERVICE_ACCOUNT_LABEL: &str = "io.cilium.k8s.policy.serviceaccount";
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";

/// A pod as policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// The labels of its Namespace (Cilium adds them as `io.cilium.k8s.namespace.labels.<key>`).
    pub namespace_labels: BTreeMap<String, String>,
}

impl Endpoint {
    /// Its identity labels: the pod's labels plus the ones Cilium derives.
    pub fn identity(&self) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert(NAMESPACE_LABEL.into(), self.namespace.clone());
        l.insert(CLUSTER_LABEL.into(), self.cluster.clone());
        l.insert(SERVICE_ACCOUNT_LABEL.into(), self.service_account.clone());
        for (k, v) in &self.namespace_labels {
            l.insert(format!("{NAMESPACE_LABELS_PREFIX}{k}"), v.clone());
        }
        l
    }
    pub fn who(&self) -> String {
        format!("{}/{}/{}", self.cluster, self.namespace, self.name)
    }
}

/// A CiliumNetworkPolicy (namespace set) or CiliumClusterwideNetworkPolicy (namespace None).
#[derive(Debug, Clone)]
pub struct Policy {
    pub namespace: Option<String>,
    pub name: String,
    /// `spec` and every item of `specs`.
    pub specs: Vec<Value>,
}

impl Policy {
    /// From a stored object.
    pub fn from_object(o: &Value) -> Policy {
        let mut specs = Vec::new();
        if o["spec"].is_object() {
            specs.push(o["spec"].clone());
        }
        if let Some(a) = o["specs"].as_array() {
            specs.extend(a.iter().cloned());
        }
        Policy {
            namespace: o["metadata"]["namespace"].as_str().map(String::from),
            name: o["metadata"]["name"].as_str().unwrap_or("").to_string(),
            specs,
        }
    }
    pub fn who(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("CiliumNetworkPolicy {ns}/{}", self.name),
            None => format!("CiliumClusterwideNetworkPolicy {}", self.name),
        }
    }
}

/// How one cluster's agents enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub cluster: String,
    /// `policyEnforcementMode`: default, always or never.
    pub enforcement: String,
    /// `clustermesh.policyDefaultLocalCluster`.
    pub default_local_cluster: bool,
}

/// What the probe sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub port: u16,
    /// TCP or UDP.
    pub protocol: String,
    /// (method, path) for HTTP.
    pub http: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn key(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
    fn deny_key(self) -> &'static str {
        match self {
            Direction::Ingress => "ingressDeny",
            Direction::Egress => "egressDeny",
        }
    }
    fn peers_key(self) -> &'static str {
        match self {
            Direction::Ingress => "fromEndpoints",
            Direction::Egress => "toEndpoints",
        }
    }
    fn entities_key(self) -> &'static str {
        match self {
            Direction::Ingress => "fromEntities",
            Direction::Egress => "toEntities",
        }
    }
}

/// The answer, with who decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Passes; `by` names the allowing policies (empty: nothing enforced).
    Allowed { by: Vec<String> },
    /// Packets dropped (L3/L4): a deny rule, or default deny with no rule allowing it.
    Dropped {
        direction: Direction,
        by: Vec<String>,
    },
    /// The proxy answers 403: L7 rules allow the port but not this request.
    L7Denied {
        direction: Direction,
        by: Vec<String>,
    },
}

impl Verdict {
    /// One line for the lab's call log.
    pub fn explain(&self) -> String {
        let names = |by: &[String]| {
            if by.is_empty() {
                "no policy enforces it".to_string()
            } else {
                by.join(", ")
            }
        };
        match self {
            Verdict::Allowed { by } => format!("allowed: {}", names(by)),
            Verdict::Dropped { direction, by } => {
                format!("dropped at {}: {}", direction.key(), names(by))
            }
            Verdict::L7Denied { direction, by } => {
                format!("403 at {} (L7): {}", direction.key(), names(by))
            }
        }
    }
    pub fn by(&self) -> &[String] {
        match self {
            Verdict::Allowed { by }
            | Verdict::Dropped { by, .. }
            | Verdict::L7Denied { by, .. } => by,
        }
    }
}

/// A selector key as written in a policy (`k8s:app`, `any:app`, `app`) to the label key.
fn plain(key: &str) -> &str {
    key.strip_prefix("k8s:")
        .or_else(|| key.strip_prefix("any:"))
        .unwrap_or(key)
}

fn selector_has(sel: &Value, key: &str) -> bool {
    sel["matchLabels"]
        .as_object()
        .is_some_and(|m| m.keys().any(|k| plain(k) == key))
        || sel["matchExpressions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["key"].as_str().map(plain) == Some(key)))
}

/// A Kubernetes label selector (matchLabels and matchExpressions) against labels.
pub fn selects(sel: &Value, labels: &BTreeMap<String, String>) -> bool {
    if let Some(m) = sel["matchLabels"].as_object() {
        for (k, v) in m {
            if labels.get(plain(k)).map(String::as_str) != v.as_str() {
                return false;
            }
        }
    }
    if let Some(exprs) = sel["matchExpressions"].as_array() {
        for e in exprs {
            let key = plain(e["key"].as_str().unwrap_or(""));
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let have = labels.get(key).map(String::as_str);
            let ok = match e["operator"].as_str().unwrap_or("") {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => !have.is_some_and(|h| values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

/// Does the policy's `endpointSelector` select this endpoint (in the policy's cluster)?
fn subject_selected(p: &Policy, spec: &Value, ep: &Endpoint) -> bool {
    if let Some(ns) = &p.namespace
        && *ns != ep.namespace
    {
        return false;
    }
    spec["endpointSelector"].is_object() && selects(&spec["endpointSelector"], &ep.identity())
}

/// A peer selector as Cilium completes it: the policy's namespace (CNP), the local cluster (with
/// policyDefaultLocalCluster), then matched against the peer.
fn peer_selected(p: &Policy, sel: &Value, peer: &Endpoint, s: &Settings) -> bool {
    let id = peer.identity();
    if let Some(ns) = &p.namespace
        && !selector_has(sel, NAMESPACE_LABEL)
        && peer.namespace != *ns
    {
        return false;
    }
    if s.default_local_cluster && !selector_has(sel, CLUSTER_LABEL) && peer.cluster != s.cluster {
        return false;
    }
    selects(sel, &id)
}

fn peer_matches(p: &Policy, rule: &Value, dir: Direction, peer: &Endpoint, s: &Settings) -> bool {
    let sels = rule[dir.peers_key()].as_array();
    let ents = rule[dir.entities_key()].as_array();
    if sels.is_none() && ents.is_none() {
        // An empty rule (`ingress: [{}]`) matches nothing: it is how a default deny is written
        // (docs.cilium.io, "Ingress Default Deny"). Only ports: every peer, on those ports
        // (docs.cilium.io, "Layer 4 Examples"). Other peer kinds (CIDR, FQDN, services) are not
        // pods, so a rule with only those never matches a pod here.
        if rule["toPorts"].is_null() {
            return false;
        }
        let other = [
            "fromCIDR",
            "fromCIDRSet",
            "toCIDR",
            "toCIDRSet",
            "toFQDNs",
            "toServices",
            "fromNodes",
            "toNodes",
            "fromGroups",
            "toGroups",
        ];
        return !other.iter().any(|k| rule.get(*k).is_some());
    }
    let by_selector = sels.is_some_and(|a| a.iter().any(|sel| peer_selected(p, sel, peer, s)));
    let by_entity = ents.is_some_and(|a| {
        a.iter().filter_map(Value::as_str).any(|e| match e {
            "all" => true,
            // Endpoints of the local cluster (the mesh's remote endpoints are not "cluster").
            "cluster" => peer.cluster == s.cluster,
            _ => false,
        })
    });
    by_selector || by_entity
}

/// Does the rule's `toPorts` cover the port? Returns the L7 HTTP rules of the covering entry
/// (None: L4 only; a rule without `toPorts` covers every port at L4).
fn port_matches(rule: &Value, req: &Request) -> Option<Option<Vec<Value>>> {
    let Some(tp) = rule["toPorts"].as_array() else {
        return Some(None);
    };
    let mut l7: Option<Vec<Value>> = None;
    let mut l4_only = false;
    let mut any = false;
    for entry in tp {
        let ports = entry["ports"].as_array().cloned().unwrap_or_default();
        let covers = ports.is_empty()
            || ports.iter().any(|p| {
                let proto = p["protocol"].as_str().unwrap_or("ANY").to_ascii_uppercase();
                let proto_ok = proto == "ANY" || proto == req.protocol;
                let port = match &p["port"] {
                    Value::String(s) => s.parse::<u32>().ok(),
                    Value::Number(n) => n.as_u64().map(|n| n as u32),
                    _ => Some(0),
                };
                let end = p["endPort"].as_u64().map(|n| n as u32);
                let port_ok = match (port, end) {
                    (Some(0), _) => true,
                    (Some(a), Some(b)) => (a..=b).contains(&u32::from(req.port)),
                    (Some(a), None) => a == u32::from(req.port),
                    (None, _) => false, // a named port: not modelled
                };
                proto_ok && port_ok
            });
        if !covers {
            continue;
        }
        any = true;
        match entry["rules"]["http"].as_array() {
            Some(h) if !h.is_empty() => l7.get_or_insert_with(Vec::new).extend(h.iter().cloned()),
            _ => l4_only = true,
        }
    }
    if !any {
        return None;
    }
    Some(if l4_only { None } else { l7 })
}

/// An extended POSIX regex as Envoy applies it: the whole value must match.
fn full_match(pattern: &str, value: &str) -> bool {
    if pattern.is_empty() {
        return true;
    }
    regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|r| r.is_match(value))
}

fn http_allows(rules: &[Value], method: &str, path: &str) -> bool {
    rules.iter().any(|r| {
        // curl sends Host, User-Agent and Accept only: a rule needing another header never
        // matches the probe.
        let headers_ok = r["headers"].as_array().is_none_or(|h| {
            h.iter().filter_map(Value::as_str).all(|h| {
                let name = h
                    .split([':', ' '])
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                matches!(name.as_str(), "host" | "user-agent" | "accept")
            })
        });
        headers_ok
            && full_match(r["method"].as_str().unwrap_or(""), method)
            && full_match(r["path"].as_str().unwrap_or(""), path)
    })
}

/// One direction: `subject` is the endpoint whose policies apply (the source for egress, the
/// destination for ingress), `peer` the other end; `policies` are those stored in the subject's
/// cluster.
pub fn decide(
    dir: Direction,
    subject: &Endpoint,
    peer: &Endpoint,
    req: &Request,
    policies: &[Policy],
    s: &Settings,
) -> Verdict {
    if s.enforcement == "never" {
        return Verdict::Allowed { by: Vec::new() };
    }
    let mut enforced_by = Vec::new();
    for p in policies {
        for spec in &p.specs {
            if !subject_selected(p, spec, subject) {
                continue;
            }
            let has = |k: &str| spec[k].as_array().is_some_and(|a| !a.is_empty());
            if has(dir.key()) || has(dir.deny_key()) {
                enforced_by.push(p.who());
            }
            for rule in spec[dir.deny_key()].as_array().into_iter().flatten() {
                if peer_matches(p, rule, dir, peer, s) && port_matches(rule, req).is_some() {
                    return Verdict::Dropped {
                        direction: dir,
                        by: vec![p.who()],
                    };
                }
            }
        }
    }
    enforced_by.dedup();
    if enforced_by.is_empty() && s.enforcement != "always" {
        return Verdict::Allowed { by: Vec::new() };
    }
    let mut l4_by = Vec::new();
    let mut l7_by = Vec::new();
    let mut l7_rules = Vec::new();
    for p in policies {
        for spec in &p.specs {
            if !subject_selected(p, spec, subject) {
                continue;
            }
            for rule in spec[dir.key()].as_array().into_iter().flatten() {
                if !peer_matches(p, rule, dir, peer, s) {
                    continue;
                }
                match port_matches(rule, req) {
                    None => {}
                    Some(None) => l4_by.push(p.who()),
                    Some(Some(h)) => {
                        l7_by.push(p.who());
                        l7_rules.extend(h);
                    }
                }
            }
        }
    }
    l4_by.dedup();
    l7_by.dedup();
    if !l4_by.is_empty() {
        return Verdict::Allowed { by: l4_by };
    }
    if l7_by.is_empty() {
        return Verdict::Dropped {
            direction: dir,
            by: enforced_by,
        };
    }
    match &req.http {
        // A TCP connection is accepted by the proxy; only requests are filtered.
        None => Verdict::Allowed { by: l7_by },
        Some((m, path)) if http_allows(&l7_rules, m, path) => Verdict::Allowed { by: l7_by },
        Some(_) => Verdict::L7Denied {
            direction: dir,
            by: l7_by,
        },
    }
}

/// Both directions: the source's egress (its cluster's policies), then the destination's ingress
/// (its cluster's policies). The first that does not allow decides; otherwise allowed, by both.
pub fn evaluate(
    src: &Endpoint,
    dst: &Endpoint,
    req: &Request,
    src_policies: &[Policy],
    src_settings: &Settings,
    dst_policies: &[Policy],
    dst_settings: &Settings,
) -> Verdict {
    let out = decide(Direction::Egress, src, dst, req, src_policies, src_settings);
    if !matches!(out, Verdict::Allowed { .. }) {
        return out;
    }
    let inn = decide(
        Direction::Ingress,
        dst,
        src,
        req,
        dst_policies,
        dst_settings,
    );
    match inn {
        Verdict::Allowed { by } => {
            let mut all = out.by().to_vec();
            all.extend(by);
            Verdict::Allowed { by: all }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ep(cluster: &str, ns: &str, labels: &[(&str, &str)]) -> Endpoint {
        Endpoint {
            cluster: cluster.into(),
            namespace: ns.into(),
            name: "p".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            service_account: "default".into(),
            namespace_labels: [("kubernetes.io/metadata.name".to_string(), ns.to_string())].into(),
        }
    }
    fn cnp(ns: &str, name: &str, spec: Value) -> Policy {
        Policy::from_object(
            &json!({"kind": "CiliumNetworkPolicy", "metadata": {"namespace": ns, "name": name}, "spec": spec}),
        )
    }
    fn settings(cluster: &str, local: bool) -> Settings {
        Settings {
            cluster: cluster.into(),
            enforcement: "default".into(),
            default_local_cluster: local,
        }
    }
    fn tcp(port: u16) -> Request {
        Request {
            port,
            protocol: "TCP".into(),
            http: None,
        }
    }
    fn http(port: u16, m: &str, p: &str) -> Request {
        Request {
            port,
            protocol: "TCP".into(),
            http: Some((m.into(), p.into())),
        }
    }

    fn db_policies() -> Vec<Policy> {
        vec![
            cnp(
                "databases",
                "default-deny",
                json!({"endpointSelector": {}, "ingress": [{}]}),
            ),
            cnp(
                "databases",
                "allow-gitlab",
                json!({"endpointSelector": {"matchLabels": {"app": "pg"}},
                "ingress": [{"fromEndpoints": [{"matchLabels": {"k8s:app": "webservice", "io.kubernetes.pod.namespace": "gitlab"}}],
                             "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}]},
                            {"fromEndpoints": [{"matchLabels": {"app": "webservice", "io.kubernetes.pod.namespace": "gitlab"}}],
                             "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}], "rules": {"http": [{"method": "GET", "path": "/api/v4/.*"}]}}]}]}),
            ),
        ]
    }

    #[test]
    fn an_unselected_endpoint_allows_everything() {
        let v = decide(
            Direction::Ingress,
            &ep("infra", "web", &[("app", "x")]),
            &ep("infra", "other", &[]),
            &tcp(80),
            &db_policies(),
            &settings("infra", false),
        );
        assert_eq!(v, Verdict::Allowed { by: vec![] });
    }

    #[test]
    fn default_deny_then_an_allow_for_one_port_and_an_l7_rule() {
        let pg = ep("infra", "databases", &[("app", "pg")]);
        let gitlab = ep("infra", "gitlab", &[("app", "webservice")]);
        let s = settings("infra", false);
        let p = db_policies();
        let d = |req: &Request, from: &Endpoint| decide(Direction::Ingress, &pg, from, req, &p, &s);
        assert_eq!(
            d(&tcp(5432), &gitlab),
            Verdict::Allowed {
                by: vec!["CiliumNetworkPolicy databases/allow-gitlab".into()]
            }
        );
        // Another port: dropped, by the policies that put pg into default deny.
        assert!(
            matches!(d(&tcp(22), &gitlab), Verdict::Dropped { direction: Direction::Ingress, by } if by.len() == 2)
        );
        // Another namespace: the peer selector names gitlab.
        assert!(matches!(
            d(&tcp(5432), &ep("infra", "web", &[("app", "webservice")])),
            Verdict::Dropped { .. }
        ));
        // L7: GET /api/v4/... passes, POST and other paths get the proxy's 403; the path is
        // anchored (a prefix is not enough).
        assert!(matches!(
            d(&http(8080, "GET", "/api/v4/health"), &gitlab),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            d(&http(8080, "POST", "/api/v4/health"), &gitlab),
            Verdict::L7Denied { .. }
        ));
        assert!(matches!(
            d(&http(8080, "GET", "/x/api/v4/health"), &gitlab),
            Verdict::L7Denied { .. }
        ));
        // A TCP connection to the L7 port is accepted by the proxy.
        assert!(matches!(d(&tcp(8080), &gitlab), Verdict::Allowed { .. }));
    }

    #[test]
    fn an_l4_allow_makes_l7_rules_moot_and_deny_wins() {
        let pg = ep("infra", "databases", &[("app", "pg")]);
        let gitlab = ep("infra", "gitlab", &[("app", "webservice")]);
        let s = settings("infra", false);
        let mut p = db_policies();
        p.push(cnp(
            "databases",
            "allow-all",
            json!({"endpointSelector": {}, "ingress": [{"fromEntities": ["all"]}]}),
        ));
        assert_eq!(
            decide(
                Direction::Ingress,
                &pg,
                &gitlab,
                &http(8080, "POST", "/"),
                &p,
                &s
            ),
            Verdict::Allowed {
                by: vec!["CiliumNetworkPolicy databases/allow-all".into()]
            }
        );
        p.push(cnp(
            "databases",
            "deny-web",
            json!({"endpointSelector": {}, "ingressDeny": [{"fromEndpoints": [{"matchExpressions": [{"key": "io.kubernetes.pod.namespace", "operator": "In", "values": ["gitlab"]}]}]}]}),
        ));
        assert_eq!(
            decide(Direction::Ingress, &pg, &gitlab, &tcp(5432), &p, &s),
            Verdict::Dropped {
                direction: Direction::Ingress,
                by: vec!["CiliumNetworkPolicy databases/deny-web".into()]
            }
        );
    }

    #[test]
    fn a_peer_selector_without_the_cluster_label_is_local_only_with_policy_default_local_cluster() {
        let pg = ep("infra", "databases", &[("app", "pg")]);
        let remote = ep("apps", "gitlab", &[("app", "webservice")]);
        let p = db_policies();
        // 1.18 default (off): the selector matches the apps cluster's endpoint too.
        assert!(matches!(
            decide(
                Direction::Ingress,
                &pg,
                &remote,
                &tcp(5432),
                &p,
                &settings("infra", false)
            ),
            Verdict::Allowed { .. }
        ));
        // 1.19 default (on): local only, until the selector names the cluster.
        let on = settings("infra", true);
        assert!(matches!(
            decide(Direction::Ingress, &pg, &remote, &tcp(5432), &p, &on),
            Verdict::Dropped { .. }
        ));
        let mut p2 = p.clone();
        p2.push(cnp(
            "databases",
            "allow-apps",
            json!({"endpointSelector": {"matchLabels": {"app": "pg"}},
                   "ingress": [{"fromEndpoints": [{"matchLabels": {"io.cilium.k8s.policy.cluster": "apps", "io.kubernetes.pod.namespace": "gitlab", "app": "webservice"}}]}]}),
        ));
        assert_eq!(
            decide(Direction::Ingress, &pg, &remote, &tcp(5432), &p2, &on),
            Verdict::Allowed {
                by: vec!["CiliumNetworkPolicy databases/allow-apps".into()]
            }
        );
    }

    #[test]
    fn egress_is_decided_in_the_source_cluster_and_clusterwide_policies_span_namespaces() {
        let client = ep("apps", "gitlab", &[("app", "webservice")]);
        let pg = ep("infra", "databases", &[("app", "pg")]);
        let ccnp = Policy::from_object(
            &json!({"kind": "CiliumClusterwideNetworkPolicy", "metadata": {"name": "egress-db-only"},
            "spec": {"endpointSelector": {"matchLabels": {"app": "webservice"}},
                     "egress": [{"toEndpoints": [{"matchLabels": {"app": "pg", "io.cilium.k8s.policy.cluster": "infra"}}], "toPorts": [{"ports": [{"port": "5432"}]}]}]}}),
        );
        let v = evaluate(
            &client,
            &pg,
            &tcp(5432),
            std::slice::from_ref(&ccnp),
            &settings("apps", true),
            &[],
            &settings("infra", true),
        );
        assert_eq!(
            v,
            Verdict::Allowed {
                by: vec!["CiliumClusterwideNetworkPolicy egress-db-only".into()]
            }
        );
        let v = evaluate(
            &client,
            &pg,
            &tcp(6379),
            &[ccnp],
            &settings("apps", true),
            &[],
            &settings("infra", true),
        );
        assert!(matches!(
            v,
            Verdict::Dropped {
                direction: Direction::Egress,
                ..
            }
        ));
    }

    #[test]
    fn a_clusterwide_policy_selects_peers_by_namespace_labels() {
        let pg = ep("infra", "databases", &[("app", "pg")]);
        let ccnp = Policy::from_object(
            &json!({"kind": "CiliumClusterwideNetworkPolicy", "metadata": {"name": "from-gitlab-ns"},
            "spec": {"endpointSelector": {"matchLabels": {"app": "pg"}},
                     "ingress": [{"fromEndpoints": [{"matchLabels": {"io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name": "gitlab"}}]}]}}),
        );
        let s = settings("infra", false);
        let from = |ns: &str| {
            decide(
                Direction::Ingress,
                &pg,
                &ep("infra", ns, &[("app", "any")]),
                &tcp(5432),
                std::slice::from_ref(&ccnp),
                &s,
            )
        };
        assert!(matches!(from("gitlab"), Verdict::Allowed { .. }));
        assert!(matches!(from("web"), Verdict::Dropped { .. }));
    }

    #[test]
    fn enforcement_modes() {
        let a = ep("infra", "x", &[]);
        let b = ep("infra", "y", &[]);
        let mut s = settings("infra", false);
        s.enforcement = "always".into();
        assert!(matches!(
            decide(Direction::Ingress, &a, &b, &tcp(1), &[], &s),
            Verdict::Dropped { .. }
        ));
        s.enforcement = "never".into();
        assert!(matches!(
            decide(Direction::Ingress, &a, &b, &tcp(1), &db_policies(), &s),
            Verdict::Allowed { .. }
        ));
    }
}
