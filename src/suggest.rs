//! "Did you mean …?": the closest known name to a typo (Jaro-Winkler similarity, `strsim`).
//!
//! Owns the choice of suggestion only.

/// The candidate closest to `word`, if it is close enough to be what was meant.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, c)| *score >= 0.8 && *c != word)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// ` (did you mean `x`?)`, or nothing.
pub fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_near_name_and_nothing_for_strangers() {
        assert_eq!(
            closest("timout", ["timeout", "retry", "check"]),
            Some("timeout")
        );
        assert_eq!(
            closest(
                "talos-bootstrp/infra",
                ["talos-bootstrap/infra", "talos-bootstrap/apps"]
            ),
            Some("talos-bootstrap/infra")
        );
        assert_eq!(closest("zzz", ["timeout", "retry"]), None);
    }
}
