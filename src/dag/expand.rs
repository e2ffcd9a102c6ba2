//! Expansion and rendering: every phase's steps and gate items for each cluster or node, their
//! templates rendered, their `needs` resolved into edges (narrowed to the same cluster and node),
//! and phase order.

use super::*;

struct Item<'a> {
    suffix: String,
    cluster: Option<&'a str>,
    node: Option<&'a str>,
    ctx: Ctx,
}

fn expansions<'a>(
    spec: &'a Spec,
    for_each: Option<ForEach>,
    plan_value: &Value,
    cache: &mut HashMap<(String, String), Ctx>,
) -> Vec<Item<'a>> {
    let mut items = Vec::new();
    match for_each {
        None => items.push(Item {
            suffix: String::new(),
            cluster: None,
            node: None,
            ctx: cached(cache, plan_value, spec, None, None),
        }),
        Some(ForEach::Cluster) => {
            for c in &spec.plan.clusters {
                let name = c.name.value.as_str();
                items.push(Item {
                    suffix: format!("/{name}"),
                    cluster: Some(name),
                    node: None,
                    ctx: cached(cache, plan_value, spec, Some(name), None),
                });
            }
        }
        Some(fe @ (ForEach::Node | ForEach::Controlplane)) => {
            for c in &spec.plan.clusters {
                for n in &c.nodes {
                    if fe == ForEach::Controlplane && n.role != Role::Controlplane {
                        continue;
                    }
                    let cn = c.name.value.as_str();
                    let nn = n.name.value.as_str();
                    items.push(Item {
                        suffix: format!("/{cn}/{nn}"),
                        cluster: Some(cn),
                        node: Some(nn),
                        ctx: cached(cache, plan_value, spec, Some(cn), Some(nn)),
                    });
                }
            }
        }
    }
    items
}

fn cached(
    cache: &mut HashMap<(String, String), Ctx>,
    plan_value: &Value,
    spec: &Spec,
    cluster: Option<&str>,
    node: Option<&str>,
) -> Ctx {
    let key = (
        cluster.unwrap_or("").to_string(),
        node.unwrap_or("").to_string(),
    );
    cache
        .entry(key)
        .or_insert_with(|| {
            let c = cluster.and_then(|c| spec.plan.cluster(c));
            let cv = c.map(render::cluster_value);
            let nv = node
                .and_then(|n| c.and_then(|c| c.nodes.iter().find(|x| x.name.value == n)))
                .map(render::node_value);
            Ctx::new(&render::context(plan_value, cv.as_ref(), nv.as_ref()))
        })
        .clone()
}

fn render_action(
    r: &Renderer,
    a: &ActionSpec,
    ctx: &Ctx,
    cluster: Option<&str>,
    file: &Path,
    line: u64,
    field: &str,
) -> Result<ActionSpec, UserError> {
    let mut v = serde_json::to_value(a).map_err(|e| UserError::new(e.to_string()))?;
    r.render_value(&mut v, ctx, file, line, field)?;
    let mut out: ActionSpec = serde_json::from_value(v)
        .map_err(|e| UserError::new(e.to_string()).in_file(file).at(line, 1))?;
    // A check's own `timeout:` bounds that part of the step: it must be a duration.
    if let Some(t) = crate::checks::timeout_text(&out)
        && let Err(e) = parse_duration(t)
    {
        return Err(UserError::new(e)
            .in_file(file)
            .at(line, 1)
            .field(format!("{field}.timeout"))
            .help("write a duration such as 90s, 5m or 1h30m")
            .with_source_line());
    }
    // Built-in Kubernetes checks default to the unit's cluster.
    let slot = match &mut out {
        ActionSpec::Nodes(c) => Some(&mut c.cluster),
        ActionSpec::Rollout(c) => Some(&mut c.cluster),
        ActionSpec::Condition(c) => Some(&mut c.cluster),
        ActionSpec::Exists(c) | ActionSpec::Absent(c) => Some(&mut c.cluster),
        ActionSpec::Crd(c) => Some(&mut c.cluster),
        ActionSpec::Field(c) => Some(&mut c.cluster),
        ActionSpec::Kustomizations(c) | ActionSpec::Helmreleases(c) => Some(&mut c.cluster),
        ActionSpec::HelmValues(c) => Some(&mut c.cluster),
        ActionSpec::Flow(f) => {
            if f.to.service.is_some() == f.to.endpoint.is_some() {
                return Err(UserError::new(
                    "a flow check's `to` needs exactly one of `service` (a Service name) or `endpoint` (pod labels)",
                )
                .in_file(file)
                .at(line, 1)
                .field(format!("{field}.flow.to"))
                .help("write to: { cluster: infra, namespace: databases, service: pg-rw, port: 5432 }")
                .with_source_line());
            }
            if let Some(h) = &f.http
                && (!h.path.starts_with('/')
                    || h.method.is_empty()
                    || !h.method.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(UserError::new(format!(
                    "a flow check's http request needs an upper-case method and a path starting with /, not {} {:?}",
                    h.method, h.path
                ))
                .in_file(file)
                .at(line, 1)
                .field(format!("{field}.flow.http"))
                .help("write http: { method: GET, path: /api/v4/health }")
                .with_source_line());
            }
            Some(&mut f.from.cluster)
        }
        ActionSpec::Manual(_) if !field.starts_with("gate") => {
            return Err(UserError::new(
                "a manual check is a checklist item for a person: only gate items may be manual",
            )
            .in_file(file)
            .at(line, 1)
            .field(field)
            .help("move it to the phase's gate, or give the step a check it can run")
            .with_source_line());
        }
        ActionSpec::Manual(_) => None,
        ActionSpec::Cmd(argv) => {
            if argv.is_empty() {
                return Err(UserError::new("the command is empty")
                    .in_file(file)
                    .at(line, 1)
                    .field(field)
                    .help("give an argv list such as [talosctl, version]"));
            }
            None
        }
        ActionSpec::Shell(_) => None,
        ActionSpec::Json(j) => {
            if j.cmd.is_empty() || (j.equals.is_none() && j.one_of.is_empty()) {
                return Err(UserError::new(
                    "a json check needs `cmd` and one of `equals` or `one_of`",
                )
                .in_file(file)
                .at(line, 1)
                .field(field)
                .with_source_line());
            }
            None
        }
    };
    if let Some(slot) = slot
        && slot.is_none()
    {
        match cluster {
            Some(c) => *slot = Some(c.to_string()),
            None => {
                return Err(UserError::new("a Kubernetes check needs a cluster")
                    .in_file(file)
                    .at(line, 1)
                    .field(field)
                    .help(
                        "set `cluster:` on the check, or expand the step with `for_each: cluster`",
                    )
                    .with_source_line());
            }
        }
    }
    // A flow's destination defaults to its source's cluster.
    if let ActionSpec::Flow(f) = &mut out
        && f.to.cluster.is_none()
    {
        f.to.cluster = f.from.cluster.clone();
    }
    Ok(out)
}

fn duration_field(
    s: Option<&serde_saphyr::Spanned<String>>,
    default: Duration,
    file: &Path,
    field: &str,
) -> Result<Duration, UserError> {
    match s {
        None => Ok(default),
        Some(sp) => parse_duration(&sp.value).map_err(|e| {
            UserError::new(e)
                .in_file(file)
                .at(sp.referenced.line(), sp.referenced.column())
                .field(field)
                .help("write a duration such as 90s, 5m or 1h")
                .with_source_line()
        }),
    }
}

/// The errors of one template's expansions: one mistake in the file is reported once, with the
/// expansions it affects ("in 2 of 2 expansions: a/infra, a/apps"), not once per cluster or node.
#[derive(Default)]
struct ExpansionErrors(Vec<(UserError, Vec<String>)>);

impl ExpansionErrors {
    fn add(&mut self, e: UserError, id: String) {
        let same = |x: &UserError| {
            (&x.file, x.line, x.column, &x.field, &x.message)
                == (&e.file, e.line, e.column, &e.field, &e.message)
        };
        match self.0.iter_mut().find(|(x, _)| same(x)) {
            Some((_, ids)) => ids.push(id),
            None => self.0.push((e, vec![id])),
        }
    }

    fn once_each(self, expanded: usize) -> impl Iterator<Item = UserError> {
        self.0.into_iter().map(move |(mut e, ids)| {
            if expanded > 1 {
                const SHOWN: usize = 4;
                let mut names = ids
                    .iter()
                    .take(SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                if ids.len() > SHOWN {
                    names.push_str(", …");
                }
                e.message = format!(
                    "{} (in {} of {expanded} expansions: {names})",
                    e.message,
                    ids.len()
                );
            }
            e
        })
    }
}

impl Dag {
    /// Expand and render every phase of `spec` into a checked graph.
    pub fn build(spec: &Spec, state_dir: &Path) -> Result<Dag, UserErrors> {
        let r = Renderer::new();
        let state_dir = absolute_dir(state_dir);
        let sd = render::path_placeholders(&spec.plan, &state_dir);
        let plan_value = render::plan_value(&spec.plan, &state_dir);
        let mut cache = HashMap::new();
        let mut errors: Vec<UserError> = Vec::new();
        let mut work: Vec<Work> = Vec::new();
        let mut phases: Vec<PhaseInfo> = Vec::new();
        // template step id -> (phase index, file, line, concrete unit indices)
        let mut templates: HashMap<String, (usize, PathBuf, u64, Vec<usize>)> = HashMap::new();
        let mut phase_ids: HashMap<String, usize> = HashMap::new();

        for (pi, PhaseFile { phase, file, .. }) in spec.phases.iter().enumerate() {
            let pid = phase.id.value.clone();
            if let Some(&prev) = phase_ids.get(&pid) {
                errors.push(
                    UserError::new(format!(
                        "duplicate phase id {pid:?} (also in {})",
                        phases[prev].file.display()
                    ))
                    .in_file(file)
                    .at(phase.id.referenced.line(), phase.id.referenced.column())
                    .field("id")
                    .help("give each phase a unique id")
                    .with_source_line(),
                );
                continue;
            }
            let mut needs = Vec::new();
            for n in &phase.needs {
                match phase_ids.get(&n.value) {
                    Some(_) => needs.push(n.value.clone()),
                    None => errors.push(
                        UserError::new(format!("phase {pid:?} needs {:?}, which is not an earlier phase", n.value))
                            .in_file(file)
                            .at(n.referenced.line(), n.referenced.column())
                            .field("needs")
                            .help("name a phase defined in an earlier file (phases run in file-name order)")
                            .with_source_line(),
                    ),
                }
            }
            if phase.needs.is_empty()
                && pi > 0
                && let Some(prev) = phases.last()
            {
                needs.push(prev.id.clone());
            }
            phase_ids.insert(pid.clone(), phases.len());
            phases.push(PhaseInfo {
                id: pid.clone(),
                title: phase.title.clone(),
                description: phase.description.clone(),
                needs,
                file: file.clone(),
            });

            for step in &phase.steps {
                let sid = step.id.value.clone();
                let sline = step.id.referenced.line();
                if let Some((_, f, l, _)) = templates.get(&sid) {
                    errors.push(
                        UserError::new(format!(
                            "duplicate step id {sid:?} (first defined at {}:{l})",
                            f.display()
                        ))
                        .in_file(file)
                        .at(sline, step.id.referenced.column())
                        .field("id")
                        .help("give each step a unique id across all phases")
                        .with_source_line(),
                    );
                    continue;
                }
                if sid.is_empty() || sid.contains(['/', ' ', '*', '?', '[']) {
                    errors.push(
                        UserError::new(format!("step id {sid:?} must be non-empty without '/', spaces or glob characters"))
                            .in_file(file)
                            .at(sline, step.id.referenced.column())
                            .field("id")
                            .help("use lower-case words joined by '-', e.g. talos-apply")
                            .with_source_line(),
                    );
                    continue;
                }
                let timeout = match duration_field(
                    step.timeout.as_ref(),
                    DEFAULT_STEP_TIMEOUT,
                    file,
                    "timeout",
                ) {
                    Ok(t) => t,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                let retry = match &step.retry {
                    None => Ok(Retry::default()),
                    Some(rs) => (|| {
                        let backoff = parse_duration(&rs.backoff)?;
                        let max_backoff = parse_duration(&rs.max_backoff)?;
                        for t in &rs.transient {
                            regex::Regex::new(t).map_err(|e| {
                                format!(
                                    "retry.transient {t:?} is not a valid regular expression: {e}"
                                )
                            })?;
                        }
                        if rs.attempts == 0 {
                            return Err("retry.attempts must be at least 1".to_string());
                        }
                        Ok(Retry {
                            attempts: rs.attempts,
                            backoff,
                            max_backoff,
                            transient: rs.transient.clone(),
                        })
                    })()
                    .map_err(|m| {
                        UserError::new(m)
                            .in_file(file)
                            .at(sline, 1)
                            .field(format!("steps.{sid}.retry"))
                            .help("fix the retry settings")
                            .with_source_line()
                    }),
                };
                let retry = match retry {
                    Ok(r) => r,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                let mut indices = Vec::new();
                let mut failed = ExpansionErrors::default();
                let items = expansions(spec, step.for_each, &plan_value, &mut cache);
                let expanded = items.len();
                for item in items {
                    let id = format!("{sid}{}", item.suffix);
                    let built = (|| -> Result<Unit, UserError> {
                        let check = step
                            .check
                            .as_ref()
                            .map(|c| {
                                render_action(
                                    &r,
                                    &c.value,
                                    &item.ctx,
                                    item.cluster,
                                    file,
                                    c.referenced.line(),
                                    "check",
                                )
                            })
                            .transpose()?;
                        let run = render_action(
                            &r,
                            &step.run.value,
                            &item.ctx,
                            item.cluster,
                            file,
                            step.run.referenced.line(),
                            "run",
                        )?;
                        let verify = step
                            .verify
                            .as_ref()
                            .map(|c| {
                                render_action(
                                    &r,
                                    &c.value,
                                    &item.ctx,
                                    item.cluster,
                                    file,
                                    c.referenced.line(),
                                    "verify",
                                )
                            })
                            .transpose()?;
                        let mut env = BTreeMap::new();
                        for (k, v) in &step.env {
                            env.insert(
                                k.clone(),
                                r.render(v, &item.ctx, file, sline, &format!("env.{k}"))?,
                            );
                        }
                        let description =
                            r.render(&step.description, &item.ctx, file, sline, "description")?;
                        let fp = fingerprint(
                            &(
                                &check,
                                &run,
                                &verify,
                                &env,
                                timeout.as_secs(),
                                &retry,
                                step.confirm,
                                step.stdin,
                            ),
                            &sd,
                        );
                        Ok(Unit {
                            id: id.clone(),
                            step: sid.clone(),
                            phase: pid.clone(),
                            cluster: item.cluster.map(String::from),
                            node: item.node.map(String::from),
                            description,
                            needs: Vec::new(),
                            // Boxed: a unit is kept for every step × cluster × node.
                            check: check.map(Box::new),
                            run: Box::new(run),
                            verify: verify.map(Box::new),
                            timeout,
                            retry: retry.clone(),
                            confirm: step.confirm,
                            stdin: step.stdin,
                            serial: step.serial.clone(),
                            on_change: step.on_change,
                            on_request: step.on_request,
                            env,
                            fingerprint: fp,
                            file: file.clone(),
                            line: sline,
                        })
                    })();
                    match built {
                        Ok(u) => {
                            indices.push(work.len());
                            work.push(Work::Step(u));
                        }
                        Err(e) => failed.add(e, id),
                    }
                }
                errors.extend(failed.once_each(expanded));
                templates.insert(sid, (pi, file.clone(), sline, indices));
            }

            // The gate.
            let mut items = Vec::new();
            let mut seen = HashSet::new();
            for gi in &phase.gate {
                let timeout = match duration_field(
                    gi.timeout.as_ref(),
                    DEFAULT_GATE_TIMEOUT,
                    file,
                    "timeout",
                ) {
                    Ok(t) => t,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                let mut failed = ExpansionErrors::default();
                let gate_items = expansions(spec, gi.for_each, &plan_value, &mut cache);
                let expanded = gate_items.len();
                for item in gate_items {
                    let id = format!("{}{}", gi.id.value, item.suffix);
                    if !seen.insert(id.clone()) {
                        errors.push(
                            UserError::new(format!("duplicate gate item id {:?}", gi.id.value))
                                .in_file(file)
                                .at(gi.id.referenced.line(), gi.id.referenced.column())
                                .field("gate.id")
                                .help("give each gate item a unique id")
                                .with_source_line(),
                        );
                        break;
                    }
                    match render_action(
                        &r,
                        &gi.check.value,
                        &item.ctx,
                        item.cluster,
                        file,
                        gi.check.referenced.line(),
                        "gate.check",
                    )
                    .and_then(|check| {
                        Ok((
                            check,
                            r.render(
                                &gi.text,
                                &item.ctx,
                                file,
                                gi.id.referenced.line(),
                                "gate.text",
                            )?,
                        ))
                    }) {
                        Ok((check, text)) => items.push(GateCheck {
                            id,
                            text,
                            cluster: item.cluster.map(String::from),
                            check,
                            timeout,
                        }),
                        Err(e) => failed.add(e, id),
                    }
                }
                errors.extend(failed.once_each(expanded));
            }
            let fp = fingerprint(&items, &sd);
            work.push(Work::Gate(Gate {
                id: format!("gate/{pid}"),
                phase: pid.clone(),
                items,
                needs: Vec::new(),
                fingerprint: fp,
            }));
        }
        if !errors.is_empty() {
            return Err(UserErrors(errors));
        }

        // Resolve needs.
        let gate_of: HashMap<String, usize> = work
            .iter()
            .enumerate()
            .filter_map(|(i, w)| match w {
                Work::Gate(g) => Some((g.phase.clone(), i)),
                _ => None,
            })
            .collect();
        let phase_index: HashMap<&str, usize> = phases
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.as_str(), i))
            .collect();
        let by_id: HashMap<String, usize> = work
            .iter()
            .enumerate()
            .map(|(i, w)| (w.id().to_string(), i))
            .collect();
        let mut all_needs: Vec<Vec<usize>> = vec![Vec::new(); work.len()];
        let steps_of_phase = |spec: &Spec, pid: &str| -> Vec<(String, u64, Vec<Spanned2>)> {
            spec.phases
                .iter()
                .filter(|p| p.phase.id.value == pid)
                .flat_map(|p| {
                    p.phase.steps.iter().map(|s| {
                        (
                            s.id.value.clone(),
                            s.id.referenced.line(),
                            s.needs
                                .iter()
                                .map(|n| {
                                    (n.value.clone(), n.referenced.line(), n.referenced.column())
                                })
                                .collect(),
                        )
                    })
                })
                .collect()
        };
        type Spanned2 = (String, u64, u64);
        for (pi, pf) in spec.phases.iter().enumerate() {
            let pid = &phases[pi].id;
            for (sid, _sline, needs) in steps_of_phase(spec, pid) {
                let Some((_, _, _, units)) = templates.get(&sid) else {
                    continue;
                };
                for &ui in units {
                    let (ucluster, unode) = match &work[ui] {
                        Work::Step(u) => (u.cluster.clone(), u.node.clone()),
                        _ => continue,
                    };
                    let mut deps: Vec<usize> = Vec::new();
                    for (need, nline, ncol) in &needs {
                        let targets: Vec<usize> = if let Some((npi, _, _, nunits)) =
                            templates.get(need)
                        {
                            if *npi > pi {
                                errors.push(
                                    UserError::new(format!("step {sid:?} needs {need:?}, a step of the later phase {:?}", phases[*npi].id))
                                        .in_file(&pf.file)
                                        .at(*nline, *ncol)
                                        .field(format!("steps.{sid}.needs"))
                                        .help("move one of the steps, or reorder the phases: a step may only need steps of its own or an earlier phase")
                                        .with_source_line(),
                                );
                                continue;
                            }
                            narrow(&work, nunits, ucluster.as_deref(), unode.as_deref())
                        } else if let Some(&i) = by_id.get(need) {
                            if let Some(&npi) = phase_index.get(work[i].phase())
                                && npi > pi
                            {
                                errors.push(
                                        UserError::new(format!("step {sid:?} needs {need:?}, a step of the later phase {:?}", phases[npi].id))
                                            .in_file(&pf.file)
                                            .at(*nline, *ncol)
                                            .field(format!("steps.{sid}.needs"))
                                            .help("a step may only need steps of its own or an earlier phase")
                                            .with_source_line(),
                                    );
                                continue;
                            }
                            vec![i]
                        } else {
                            errors.push(
                                UserError::new(format!(
                                    "step {sid:?} needs {need:?}, which is not a step"
                                ))
                                .in_file(&pf.file)
                                .at(*nline, *ncol)
                                .field(format!("steps.{sid}.needs"))
                                .help(suggest(need, templates.keys()))
                                .with_source_line(),
                            );
                            continue;
                        };
                        deps.extend(targets);
                    }
                    for np in &phases[pi].needs {
                        if let Some(&g) = gate_of.get(np) {
                            deps.push(g);
                        }
                    }
                    deps.sort_unstable();
                    deps.dedup();
                    all_needs[ui] = deps;
                }
            }
            if let Some(&g) = gate_of.get(pid) {
                let mut deps: Vec<usize> = work
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| matches!(w, Work::Step(u) if &u.phase == pid && !u.on_request))
                    .map(|(i, _)| i)
                    .collect();
                if deps.is_empty() {
                    for np in &phases[pi].needs {
                        if let Some(&pg) = gate_of.get(np) {
                            deps.push(pg);
                        }
                    }
                }
                all_needs[g] = deps;
            }
        }
        if !errors.is_empty() {
            return Err(UserErrors(errors));
        }

        let mut graph = DiGraph::with_capacity(work.len(), work.len() * 2);
        let mut index = HashMap::with_capacity(work.len());
        for (i, w) in work.iter().enumerate() {
            index.insert(w.id().to_string(), graph.add_node(i));
        }
        for (i, deps) in all_needs.iter().enumerate() {
            for &d in deps {
                graph.add_edge(NodeIndex::new(d), NodeIndex::new(i), ());
            }
            let ids: Vec<String> = deps.iter().map(|&d| work[d].id().to_string()).collect();
            match &mut work[i] {
                Work::Step(u) => u.needs = ids,
                Work::Gate(g) => g.needs = ids,
            }
        }
        let dag = Dag {
            work,
            graph,
            index,
            phases,
        };
        dag.check_acyclic()?;
        Ok(dag)
    }
}

fn narrow(work: &[Work], units: &[usize], cluster: Option<&str>, node: Option<&str>) -> Vec<usize> {
    let same = |u: &Unit| {
        let c_ok = match (cluster, u.cluster.as_deref()) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let n_ok = match (node, u.node.as_deref()) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        c_ok && n_ok
    };
    units
        .iter()
        .copied()
        .filter(|&i| matches!(&work[i], Work::Step(u) if same(u)))
        .collect()
}

fn suggest<'a>(need: &str, known: impl Iterator<Item = &'a String>) -> String {
    let mut best: Option<(&str, usize)> = None;
    for k in known {
        let d = edit_distance(need, k);
        if d <= 3 && best.is_none_or(|(_, bd)| d < bd) {
            best = Some((k, d));
        }
    }
    match best {
        Some((k, _)) => format!("did you mean {k:?}?"),
        None => "name a step id defined in this or an earlier phase".into(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}
