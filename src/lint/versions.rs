//! TODO

use super::{Ctx, Finding};
use crate::spec::load::Spec;

pub(super) fn findings(_cx: &Ctx) -> Vec<Finding> {
    Vec::new()
}

pub(super) fn plan_version_findings(_spec: &Spec) -> Vec<Finding> {
    Vec::new()
}
