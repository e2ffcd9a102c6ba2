//! `helm` stand-in (v3 wording; facts: real-tools.md §5): `upgrade --install`, `install`, `status`,
//! `list`, `rollback`, with releases stored as Helm stores them (see `lab::charts`).

use serde_json::{Value, json};

use super::common;
use crate::charts;
use crate::cluster::Remote;
use crate::core::FaultKind;

const VALUED: &[&str] = &[
    "-n",
    "--namespace",
    "--kube-context",
    "--kubeconfig",
    "--set",
    "--set-string",
    "--version",
    "--repo",
    "--timeout",
    "-o",
    "--output",
    "-f",
    "--values",
    "--description",
    "--revision",
];

fn fail(msg: &str) -> i32 {
    eprintln!("Error: {msg}");
    1
}

/// Go's time.ANSIC, as `helm status` prints LAST DEPLOYED.
fn ansic(ts: &str) -> String {
    ts.parse::<jiff::Timestamp>()
        .map(|t| t.strftime("%a %b %e %H:%M:%S %Y").to_string())
        .unwrap_or_else(|_| ts.to_string())
}

fn status_block(r: &charts::Release) {
    println!("NAME: {}", r.name);
    println!(
        "LAST DEPLOYED: {}",
        ansic(r.json["info"]["last_deployed"].as_str().unwrap_or(""))
    );
    println!("NAMESPACE: {}", r.namespace);
    println!("STATUS: {}", r.status);
    println!("REVISION: {}", r.version);
    println!("TEST SUITE: None");
}

pub fn main(args: &[String]) -> i32 {
    if let Some(code) = common::fault("helm", args) {
        return code;
    }
    if let Err(e) = common::lab() {
        return fail(&e);
    }
    let pos = common::positionals(args, VALUED);
    let ns = common::flag(args, &["-n", "--namespace"]).unwrap_or_else(|| "default".into());
    let kubeconfig = common::flag(args, &["--kubeconfig"]);
    let ctx = common::flag(args, &["--kube-context"]);
    common::runtime().block_on(async move {
        let c = match common::remote(kubeconfig.as_deref(), ctx.as_deref()).await {
            Ok(c) => c,
            Err(e) => return fail(&format!("Kubernetes cluster unreachable: {e}")),
        };
        let sub: Vec<&str> = pos.iter().map(String::as_str).collect();
        match sub.as_slice() {
            ["upgrade", name, chart] => upgrade(&c, args, &ns, name, chart, common::has(args, &["-i", "--install"])).await,
            ["install", name, chart] => {
                if matches!(charts::latest(&c, &ns, name).await, Ok(Some(r)) if r.status != "uninstalled") {
                    return fail("INSTALLATION FAILED: cannot re-use a name that is still in use");
                }
                upgrade(&c, args, &ns, name, chart, true).await
            }
            ["status", name] => match charts::latest(&c, &ns, name).await {
                Ok(Some(r)) => {
                    if common::flag(args, &["-o", "--output"]).as_deref() == Some("json") {
                        println!("{}", serde_json::to_string(&r.json).unwrap_or_default());
                    } else {
                        status_block(&r);
                    }
                    0
                }
                Ok(None) => fail("release: not found"),
                Err(e) => fail(&e.to_string()),
            },
            ["list" | "ls"] => list(&c, args, &ns).await,
            ["get", "values", name] => get_values(&c, args, &ns, name).await,
            ["rollback", name, rest @ ..] => rollback(&c, &ns, name, rest.first().and_then(|r| r.parse().ok())).await,
            _ => fail(&format!("unknown command {:?} for \"helm\"", pos.first().map(String::as_str).unwrap_or(""))),
        }
    })
}

/// Values as helm merges them: each `-f/--values` file in order, then `--set` (facts: real-tools.md
/// §5; later sources win, maps merge key by key).
fn values_from(args: &[String]) -> Result<Value, String> {
    let mut v = json!({});
    for f in common::flags(args, &["-f", "--values"]) {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| format!("open {f}: {}", e.to_string().to_lowercase()))?;
        let parsed: Value = serde_saphyr::from_str(&text)
            .map_err(|e| format!("failed to parse {f}: error converting YAML to JSON: {e}"))?;
        if parsed.is_object() {
            json_patch::merge(&mut v, &parsed);
        }
    }
    for s in common::flags(args, &["--set", "--set-string"]) {
        // `--set a=b,c=d` sets several keys (commas inside {…} belong to the value).
        let mut depth = 0;
        let mut cur = String::new();
        for ch in s.chars() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    charts::set_value(&mut v, &std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
            cur.push(ch);
        }
        charts::set_value(&mut v, &cur);
    }
    Ok(v)
}

async fn upgrade(
    c: &Remote,
    args: &[String],
    ns: &str,
    name: &str,
    chart_ref: &str,
    install: bool,
) -> i32 {
    let chart = chart_ref
        .rsplit('/')
        .next()
        .unwrap_or(chart_ref)
        .to_string();
    let version = common::flag(args, &["--version"]).unwrap_or_else(|| "1.18.4".into());
    let values = match values_from(args) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    let latest = match charts::latest(c, ns, name).await {
        Ok(l) => l,
        Err(e) => return fail(&e.to_string()),
    };
    let (topo_faults, _) = match common::lab() {
        Ok((_, t)) => (t.faults, ()),
        Err(_) => (Vec::new(), ()),
    };
    let stuck = topo_faults.iter().any(|f| matches!(&f.kind, FaultKind::HelmPendingUpgrade { namespace, release, .. } if namespace == ns && release == name));
    if latest
        .as_ref()
        .is_some_and(|r| r.status.starts_with("pending-"))
        || (stuck && latest.is_some())
    {
        return fail("UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress");
    }
    let upgrading = latest.as_ref().is_some_and(|r| {
        r.status == "deployed" || r.status == "failed" || r.status == "superseded"
    });
    if !upgrading && !install {
        return fail(&format!(
            "UPGRADE FAILED: \"{name}\" has no deployed releases"
        ));
    }
    if !upgrading {
        println!("Release \"{name}\" does not exist. Installing it now.");
    }
    let objs = match charts::apply_chart(c, &chart, &version, name, ns, &values).await {
        Ok(o) => o,
        Err(e) => {
            return fail(&if upgrading {
                format!("UPGRADE FAILED: {e}")
            } else {
                format!("INSTALLATION FAILED: {e}")
            });
        }
    };
    if common::has(args, &["--wait"]) {
        let timeout = common::flag(args, &["--timeout"])
            .and_then(|t| humantime::parse_duration(&t).ok())
            .unwrap_or(std::time::Duration::from_secs(300));
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if charts::rolled_out(c, &objs).await.unwrap_or(false) {
                break;
            }
            if std::time::Instant::now() >= deadline {
                let _ = charts::store_release(
                    c,
                    ns,
                    name,
                    &chart,
                    &version,
                    &values,
                    "failed",
                    "Release failed: context deadline exceeded",
                )
                .await;
                // v3 returns the install error unwrapped on the install path (facts §5.1).
                return fail(if upgrading {
                    "UPGRADE FAILED: context deadline exceeded"
                } else {
                    "context deadline exceeded"
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let desc = if upgrading {
        "Upgrade complete"
    } else {
        "Install complete"
    };
    match charts::store_release(c, ns, name, &chart, &version, &values, "deployed", desc).await {
        Ok(r) => {
            if upgrading {
                println!("Release \"{name}\" has been upgraded. Happy Helming!");
            }
            status_block(&r);
            0
        }
        Err(e) => fail(&e.to_string()),
    }
}

async fn list(c: &Remote, args: &[String], ns: &str) -> i32 {
    use crate::cluster::Objects;
    let all = common::has(args, &["-A", "--all-namespaces"]);
    let secrets = c
        .list(
            "v1",
            "Secret",
            if all { None } else { Some(ns) },
            Some("owner=helm"),
        )
        .await
        .unwrap_or_default();
    let mut names: Vec<(String, String)> = secrets
        .iter()
        .filter_map(|s| {
            Some((
                s["metadata"]["namespace"].as_str()?.to_string(),
                s["metadata"]["labels"]["name"].as_str()?.to_string(),
            ))
        })
        .collect();
    names.sort();
    names.dedup();
    let mut rows = Vec::new();
    for (n, name) in names {
        if let Ok(Some(r)) = charts::latest(c, &n, &name).await {
            rows.push(r);
        }
    }
    if common::flag(args, &["-o", "--output"]).as_deref() == Some("json") {
        let v: Vec<Value> = rows.iter().map(|r| json!({"name": r.name, "namespace": r.namespace, "revision": r.version.to_string(), "updated": r.json["info"]["last_deployed"], "status": r.status, "chart": format!("{}-{}", r.json["chart"]["metadata"]["name"].as_str().unwrap_or(""), r.json["chart"]["metadata"]["version"].as_str().unwrap_or("")), "app_version": r.json["chart"]["metadata"]["appVersion"]})).collect();
        println!("{}", serde_json::to_string(&v).unwrap_or_default());
    } else {
        println!("NAME\tNAMESPACE\tREVISION\tUPDATED\tSTATUS\tCHART\tAPP VERSION");
        for r in rows {
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}-{}\t{}",
                r.name,
                r.namespace,
                r.version,
                r.json["info"]["last_deployed"].as_str().unwrap_or(""),
                r.status,
                r.json["chart"]["metadata"]["name"].as_str().unwrap_or(""),
                r.json["chart"]["metadata"]["version"]
                    .as_str()
                    .unwrap_or(""),
                r.json["chart"]["metadata"]["appVersion"]
                    .as_str()
                    .unwrap_or("")
            );
        }
    }
    0
}

async fn rollback(c: &Remote, ns: &str, name: &str, to: Option<i64>) -> i32 {
    let hist = charts::history(c, ns, name).await.unwrap_or_default();
    let target = match to {
        Some(v) => hist.iter().find(|r| r.version == v),
        None => hist
            .iter()
            .rev()
            .find(|r| r.status == "superseded" || r.status == "deployed")
            .filter(|_| hist.len() > 1)
            .or(hist.first()),
    };
    let Some(t) = target.cloned() else {
        return fail("release: not found");
    };
    let chart = t.json["chart"]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let version = t.json["chart"]["metadata"]["version"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let values = t.json["config"].clone();
    if let Err(e) = charts::apply_chart(c, &chart, &version, name, ns, &values).await {
        return fail(&e.to_string());
    }
    match charts::store_release(
        c,
        ns,
        name,
        &chart,
        &version,
        &values,
        "deployed",
        &format!("Rollback to {}", t.version),
    )
    .await
    {
        Ok(_) => {
            println!("Rollback was a success! Happy Helming!");
            0
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// `helm get values NAME [--revision N] [-a] [-o json]`: the user-supplied values of a revision
/// (the latest by default); `-a` would add the chart defaults, which the lab's charts do not have.
async fn get_values(c: &Remote, args: &[String], ns: &str, name: &str) -> i32 {
    let hist = match charts::history(c, ns, name).await {
        Ok(h) => h,
        Err(e) => return fail(&e.to_string()),
    };
    let rel = match common::flag(args, &["--revision"]) {
        Some(r) => match r.parse::<i64>() {
            Ok(n) => hist.iter().find(|x| x.version == n),
            Err(_) => return fail(&format!("invalid argument \"{r}\" for \"--revision\" flag")),
        },
        None => hist.last(),
    };
    let Some(rel) = rel else {
        return fail("release: not found");
    };
    let config = rel.json["config"].clone();
    match common::flag(args, &["-o", "--output"]).as_deref() {
        Some("json") => println!("{}", serde_json::to_string(&config).unwrap_or_default()),
        Some("yaml") | None => {
            println!("USER-SUPPLIED VALUES:");
            if config.is_null() || config == json!({}) {
                println!("null");
            } else {
                print!("{}", serde_saphyr::to_string(&config).unwrap_or_default());
            }
        }
        Some(other) => {
            return fail(&format!(
                "invalid argument \"{other}\" for \"-o, --output\" flag: invalid format type"
            ));
        }
    }
    0
}
