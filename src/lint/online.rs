//! TODO

use super::{Ctx, Finding};

pub(super) fn findings(_cx: &Ctx) -> Vec<Finding> {
    Vec::new()
}
