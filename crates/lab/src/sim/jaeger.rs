//! Jaeger v2 in the lab: what chart 4.x renders (facts: platform-components.md §10). One
//! Deployment and one Service named after the release, the Service carrying OTLP gRPC 4317, OTLP
//! HTTP 4318, the query UI 16686 and the rest of the all-in-one ports; no `jaeger-collector` or
//! `jaeger-query` Services (those are chart 3.x, Jaeger v1). A 3.x chart renders the v1 names, so a
//! gate written for v2 fails on it by name.

use serde_json::{Value, json};

/// Render chart `jaeger` at `version` for `release` in `ns`.
pub fn render(version: &str, release: &str, ns: &str, _values: &Value) -> Vec<Value> {
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let svc = |name: &str, ports: Value| {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/instance": release, "app.kubernetes.io/managed-by": "Helm"},
                            "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": ns}},
               "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": release}, "ports": ports}})
    };
    if major < 4 {
        // Chart 3.x: Jaeger v1 (end of life 2025-12-31), separate collector and query Services.
        return vec![
            crate::charts::workload(
                "Deployment",
                release,
                ns,
                release,
                Some(1),
                false,
                "jaegertracing/all-in-one:1.53.0",
            ),
            svc(
                &format!("{release}-collector"),
                json!([{"name": "otlp-grpc", "port": 4317}, {"name": "otlp-http", "port": 4318}]),
            ),
            svc(
                &format!("{release}-query"),
                json!([{"name": "http-query", "port": 16686}]),
            ),
        ];
    }
    let port = |name: &str, port: u16, proto: &str| json!({"name": name, "port": port, "targetPort": port, "protocol": proto});
    let mut otlp_grpc = port("otlp-grpc", 4317, "TCP");
    otlp_grpc["appProtocol"] = json!("grpc");
    let mut otlp_http = port("otlp-http", 4318, "TCP");
    otlp_http["appProtocol"] = json!("http");
    vec![
        crate::charts::workload(
            "Deployment",
            release,
            ns,
            release,
            Some(1),
            false,
            "jaegertracing/jaeger:2.19.0",
        ),
        svc(
            release,
            json!([
                otlp_grpc,
                otlp_http,
                port("http-query", 16686, "TCP"),
                port("grpc-query", 16685, "TCP"),
                port("zipkin", 9411, "TCP"),
                port("metrics", 8888, "TCP"),
            ]),
        ),
    ]
}
