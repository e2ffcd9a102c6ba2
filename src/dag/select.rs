//! Selection: `--phase` and `--step` (ids, template ids, globs) with their prerequisites, and a
//! did-you-mean for what names nothing.

use super::*;

/// A step that runs only when `--step` names it (`on_request: true`).
fn on_request(w: &Work) -> bool {
    matches!(w, Work::Step(u) if u.on_request)
}

impl Dag {
    /// Select work by phase ids and step globs; prerequisites come along.
    pub fn select(&self, phases: &[String], steps: &[String]) -> Result<Selection, UserError> {
        let mut selected: HashSet<usize> = HashSet::new();
        for p in phases {
            if !self.phases.iter().any(|x| &x.id == p) {
                let known: Vec<&str> = self.phases.iter().map(|x| x.id.as_str()).collect();
                let help = match crate::suggest::hint(p, known.iter().copied()) {
                    Some(h) => format!("{h} (phases: {})", known.join(", ")),
                    None => format!("choose one of: {}", known.join(", ")),
                };
                return Err(UserError::new(format!("no phase named {p:?}"))
                    .field("--phase")
                    .help(help));
            }
            selected.extend(
                self.work
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.phase() == p && !on_request(w))
                    .map(|(i, _)| i),
            );
        }
        for s in steps {
            let pat = glob::Pattern::new(s).map_err(|e| {
                UserError::new(format!("invalid step pattern {s:?}: {e}")).field("--step")
            })?;
            let before = selected.len();
            let mut matched = false;
            for (i, w) in self.work.iter().enumerate() {
                let hit = pat.matches(w.id()) || matches!(w, Work::Step(u) if pat.matches(&u.step));
                if hit {
                    matched = true;
                    selected.insert(i);
                }
            }
            if !matched && selected.len() == before {
                let ids = self.work.iter().map(|w| w.id()).chain(
                    self.work
                        .iter()
                        .filter_map(|w| w.as_step().map(|u| u.step.as_str())),
                );
                let help = match crate::suggest::hint(s, ids) {
                    Some(h) => h,
                    None => "run `bootstrap plan` to list step ids; globs such as 'talos-apply/apps/*' are allowed".into(),
                };
                return Err(UserError::new(format!("no step matches {s:?}"))
                    .field("--step")
                    .help(help));
            }
        }
        if phases.is_empty() && steps.is_empty() {
            selected.extend((0..self.work.len()).filter(|&i| !on_request(&self.work[i])));
        }
        // Ancestors of the selection are prerequisites.
        let mut prerequisites = HashSet::new();
        let mut stack: Vec<NodeIndex> = selected.iter().map(|&i| NodeIndex::new(i)).collect();
        while let Some(n) = stack.pop() {
            for p in self.graph.neighbors_directed(n, Direction::Incoming) {
                let pi = p.index();
                if !selected.contains(&pi) && prerequisites.insert(pi) {
                    stack.push(p);
                }
            }
        }
        let mut keep: HashSet<usize> = selected.clone();
        keep.extend(prerequisites.iter().copied());
        let order = self.topo_order(&keep);
        Ok(Selection {
            order,
            selected,
            prerequisites,
        })
    }
}
