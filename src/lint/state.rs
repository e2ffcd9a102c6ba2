//! Rules on the plan's `state:`: the phase `after` names exists, and the lease lasts long enough to
//! be renewed.

use crate::error::UserError;
use crate::spec::load::Spec;
use crate::spec::plan::StateBackend;

use super::{Finding, at};

pub fn findings(spec: &Spec) -> Vec<Finding> {
    let Some(s) = &spec.plan.state else {
        return Vec::new();
    };
    let file = &spec.plan_file;
    let mut out = Vec::new();
    if let Some(after) = &s.after {
        let ids: Vec<&str> = spec
            .phases
            .iter()
            .map(|p| p.phase.id.value.as_str())
            .collect();
        if !ids.contains(&after.value.as_str()) {
            let e =
                UserError::new(format!("no phase is named {:?}", after.value)).field("state.after");
            let e = match crate::suggest::hint(&after.value, ids.iter().copied()) {
                Some(h) => e.help(h),
                None => e.help(format!("use one of: {}", ids.join(", "))),
            };
            out.push(Finding::error("state", at(e, file, after)));
        }
        if s.backend == StateBackend::Local {
            out.push(Finding::error(
                "state",
                at(
                    UserError::new(
                        "state.after moves the state to a cluster, but state.backend is local",
                    )
                    .field("state.after")
                    .help("set `backend: kubernetes` (with `context:`), or remove `after:`"),
                    file,
                    after,
                ),
            ));
        }
    }
    if let Some(l) = &s.lease_seconds
        && !(3..=3600).contains(&l.value)
    {
        out.push(Finding::error(
            "state",
            at(
                UserError::new(format!("a lease of {} s is too short or too long: the lock is renewed every quarter of it", l.value))
                    .field("state.lease_seconds")
                    .help("use 3 to 3600 seconds (30 is the default: a dead run's lock is taken over after it)"),
                file,
                l,
            ),
        ));
    }
    out
}
