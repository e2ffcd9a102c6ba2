//! `hubble` stand-in (facts: real-tools.md §3): `status` and `observe` against the lab. Relay
//! reachability follows the `hubble-relay` Deployment's rollout.

use super::common;
use crate::cluster::Objects;

pub fn main(args: &[String]) -> i32 {
    if let Some(code) = common::fault("hubble", args) {
        return code;
    }
    if let Err(e) = common::lab() {
        eprintln!("{e}");
        return 1;
    }
    let server = common::flag(args, &["--server"]).unwrap_or_else(|| "localhost:4245".into());
    let pos = common::positionals(
        args,
        &[
            "--server",
            "--kube-context",
            "--kubeconfig",
            "-o",
            "--output",
            "--last",
            "-n",
            "--namespace",
        ],
    );
    let kubeconfig = common::flag(args, &["--kubeconfig"]);
    let ctx = common::flag(args, &["--kube-context"]);
    common::runtime().block_on(async move {
        let relay = match common::remote(kubeconfig.as_deref(), ctx.as_deref()).await {
            Ok(c) => c.get("apps/v1", "Deployment", Some("kube-system"), "hubble-relay").await.ok().flatten().is_some_and(|d| crate::sim::workload_ready(&d)),
            Err(_) => false,
        };
        let nodes = match common::remote(kubeconfig.as_deref(), ctx.as_deref()).await {
            Ok(c) => c.list("v1", "Node", None, None).await.map(|n| n.len()).unwrap_or(0),
            Err(_) => 0,
        };
        if !relay {
            let port = server.rsplit(':').next().unwrap_or("4245");
            eprintln!("failed getting status: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:{port}: connect: connection refused\"");
            return 1;
        }
        match pos.first().map(String::as_str) {
            Some("status") => {
                println!("Healthcheck (via {server}): Ok\nCurrent/Max Flows: 4,095/{}  (100.00%)\nFlows/s: 12.34\nConnected Nodes: {nodes}/{nodes}", 4095 * nodes.max(1));
                0
            }
            Some("observe") => {
                let now = jiff::Timestamp::now().strftime("%b %e %H:%M:%S%.3f");
                println!("{now}: 10.244.1.204:41214 (remote-node) -> 10.244.0.228:4240 (health) to-endpoint FORWARDED (TCP Flags: ACK, PSH)");
                0
            }
            _ => {
                eprintln!("unknown command for \"hubble\"");
                1
            }
        }
    })
}
