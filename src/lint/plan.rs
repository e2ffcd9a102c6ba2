//! Rules on the plan alone: cluster names and ids, endpoints, CIDRs, node addresses, the mesh and the
//! files the plan names.

use std::collections::HashMap;
use std::path::Path;

use ipnet::Ipv4Net;
use serde_saphyr::Spanned;

use crate::error::UserError;
use crate::spec::plan::Plan;

use super::at;
use super::secrets::secret_findings;

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Rules on the plan alone.
pub fn plan_findings(plan: &Plan, file: &Path) -> Vec<UserError> {
    let mut out = secret_findings(plan, file);
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ids: HashMap<u32, usize> = HashMap::new();
    for (i, c) in plan.clusters.iter().enumerate() {
        let name = c.name.value.as_str();
        if name == "default" {
            out.push(at(
                UserError::new("a cluster may not be named \"default\": Cluster Mesh refuses it")
                    .field(format!("clusters[{i}].name"))
                    .help("choose a unique name such as infra or apps"),
                file,
                &c.name,
            ));
        }
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
        {
            out.push(at(
                UserError::new(format!("cluster name {name:?} is not valid for Cilium"))
                    .field(format!("clusters[{i}].name"))
                    .help("use at most 32 lower-case letters, digits and '-'"),
                file,
                &c.name,
            ));
        }
        if let Some(&j) = names.get(name) {
            out.push(at(
                UserError::new(format!(
                    "cluster name {name:?} is used twice (also clusters[{j}])"
                ))
                .field(format!("clusters[{i}].name"))
                .help("give every cluster a unique name"),
                file,
                &c.name,
            ));
        } else {
            names.insert(name, i);
        }
        let id = c.id.value;
        if !(1..=255).contains(&id) {
            out.push(at(
                UserError::new(format!("cluster id {id} is out of range"))
                    .field(format!("clusters[{i}].id"))
                    .help("use a Cilium cluster id from 1 to 255"),
                file,
                &c.id,
            ));
        }
        if let Some(&j) = ids.get(&id) {
            out.push(at(
                UserError::new(format!(
                    "cluster id {id} is used twice (also clusters[{j}])"
                ))
                .field(format!("clusters[{i}].id"))
                .help("give every cluster a unique id from 1 to 255"),
                file,
                &c.id,
            ));
        } else {
            ids.insert(id, i);
        }
        let ep = &c.endpoint.value;
        let ok = ep.strip_prefix("https://").is_some_and(|rest| {
            rest.rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        });
        if !ok {
            out.push(at(
                UserError::new(format!("endpoint {ep:?} is not an https URL with a port"))
                    .field(format!("clusters[{i}].endpoint"))
                    .help("write it as talosctl expects, e.g. https://10.25.11.11:6443"),
                file,
                &c.endpoint,
            ));
        }
        if !c.service_cidr.value.contains(&c.dns_ip.value) {
            // Say where the address does lie: in the pod CIDR (the seed's own mistake) a pod will
            // be given it and cluster DNS breaks; anywhere else kubelet points pods at nothing.
            let why = if c.pod_cidr.value.contains(&c.dns_ip.value) {
                format!(
                    ": it lies in the pod CIDR {} (clusters[{i}].pod_cidr), so a pod may be given it and the kube-dns Service cannot be created with it",
                    c.pod_cidr.value
                )
            } else {
                ": the kube-dns Service cannot be created with it and pods' resolv.conf points at nothing"
                    .to_string()
            };
            out.push(at(
                UserError::new(format!(
                    "CoreDNS IP {} is outside the service CIDR {}{why}",
                    c.dns_ip.value, c.service_cidr.value
                ))
                .field(format!("clusters[{i}].dns_ip"))
                .help(format!(
                    "pick an address inside {}, conventionally its tenth (e.g. {})",
                    c.service_cidr.value,
                    nth(&c.service_cidr.value, 10)
                )),
                file,
                &c.dns_ip,
            ));
        }
        if c.nodes.is_empty() {
            out.push(
                UserError::new("a cluster needs at least one node")
                    .in_file(file)
                    .at(c.name.referenced.line(), c.name.referenced.column())
                    .field(format!("clusters[{i}].nodes"))
                    .help("list the cluster's nodes with name, ip and role"),
            );
        }
    }

    // Networks: no overlap within or across clusters.
    let mut nets: Vec<(String, &Spanned<Ipv4Net>)> = Vec::new();
    for (i, c) in plan.clusters.iter().enumerate() {
        nets.push((format!("clusters[{i}].pod_cidr"), &c.pod_cidr));
        nets.push((format!("clusters[{i}].service_cidr"), &c.service_cidr));
    }
    for (a, (fa, na)) in nets.iter().enumerate() {
        for (fb, nb) in nets.iter().skip(a + 1) {
            if overlaps(&na.value, &nb.value) {
                out.push(at(
                    UserError::new(format!("{} ({fb}) overlaps {} ({fa})", nb.value, na.value))
                        .field(fb.clone())
                        .help("give every pod and service CIDR its own range; Cluster Mesh needs non-overlapping pod CIDRs"),
                    file,
                    nb,
                ));
            }
        }
    }
    let mut ips: HashMap<std::net::Ipv4Addr, String> = HashMap::new();
    for (i, c) in plan.clusters.iter().enumerate() {
        for (k, n) in c.nodes.iter().enumerate() {
            let field = format!("clusters[{i}].nodes[{k}].ip");
            if let Some(other) = ips.get(&n.ip.value) {
                out.push(at(
                    UserError::new(format!(
                        "node IP {} is used twice (also {other})",
                        n.ip.value
                    ))
                    .field(field.clone())
                    .help("give every node its own address"),
                    file,
                    &n.ip,
                ));
            } else {
                ips.insert(n.ip.value, field.clone());
            }
            for (fname, net) in &nets {
                if net.value.contains(&n.ip.value) {
                    out.push(at(
                        UserError::new(format!(
                            "node IP {} lies inside {} ({fname})",
                            n.ip.value, net.value
                        ))
                        .field(field.clone())
                        .help("node addresses must be outside every pod and service CIDR"),
                        file,
                        &n.ip,
                    ));
                }
            }
        }
    }

    // Mesh.
    if plan.mesh.enabled {
        match &plan.mesh.native_routing_cidr {
            None => out.push(
                UserError::new("the mesh is enabled but has no native routing CIDR")
                    .in_file(file)
                    .field("mesh.native_routing_cidr")
                    .help(format!(
                        "set one that covers every pod CIDR, e.g. {}",
                        covering(plan)
                    )),
            ),
            Some(nr) => {
                for (i, c) in plan.clusters.iter().enumerate() {
                    let pod = c.pod_cidr.value;
                    if !(nr.value.contains(&pod.network())
                        && nr.value.prefix_len() <= pod.prefix_len())
                    {
                        out.push(at(
                            UserError::new(format!(
                                "native routing CIDR {} does not cover clusters[{i}].pod_cidr {pod}",
                                nr.value
                            ))
                            .field("mesh.native_routing_cidr")
                            .help(format!("use a CIDR that covers every cluster's pod CIDR, e.g. {}", covering(plan))),
                            file,
                            nr,
                        ));
                    }
                }
            }
        }
        let st = plan.mesh.apiserver.service_type.as_str();
        if st != "NodePort" && st != "LoadBalancer" {
            out.push(
                UserError::new(format!(
                    "clustermesh-apiserver service type {st:?} is not valid"
                ))
                .in_file(file)
                .field("mesh.apiserver.service_type")
                .help("use NodePort (bare metal) or LoadBalancer"),
            );
        }
    }

    // Files the plan references: a relative path is read from the plan file's directory. A
    // templated one (`{{ state_dir }}/…`) is made by an earlier step, not checked here.
    for (kind, map) in [
        ("patches", &plan.paths.patches),
        ("files", &plan.paths.files),
    ] {
        for (name, path) in map {
            if path.value.contains("{{") {
                continue;
            }
            let resolved = plan.resolve(&path.value);
            if !resolved.exists() {
                let how = if Path::new(&path.value).is_relative() {
                    format!(
                        " (read from the plan file's directory: {})",
                        resolved.display()
                    )
                } else {
                    String::new()
                };
                let e = UserError::new(format!("file {:?} does not exist{how}", path.value))
                    .field(format!("paths.{kind}.{name}"))
                    .help(
                        "create the file or correct the path (a relative path in a plan is read \
                         from the plan file's directory, as cargo reads Cargo.toml)",
                    );
                out.push(at(e, file, path));
            }
        }
    }
    out
}

fn nth(net: &Ipv4Net, n: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(net.network()).wrapping_add(n))
}

/// The smallest CIDR covering every pod CIDR (for the fix hint).
fn covering(plan: &Plan) -> String {
    let pods: Vec<Ipv4Net> = plan.clusters.iter().map(|c| c.pod_cidr.value).collect();
    let Some(first) = pods.first() else {
        return "10.244.0.0/14".into();
    };
    let mut len = first.prefix_len();
    loop {
        let cand = Ipv4Net::new(first.network(), len).map(|n| n.trunc()).ok();
        if let Some(c) = cand
            && pods
                .iter()
                .all(|p| c.contains(&p.network()) && c.prefix_len() <= p.prefix_len())
        {
            return c.to_string();
        }
        if len == 0 {
            return "0.0.0.0/0".into();
        }
        len -= 1;
    }
}
