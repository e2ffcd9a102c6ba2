//! Property tests (issue 7): the plan, phase, template and journal loaders never panic, whatever
//! the input, and every error is a clean message that names the file.
//!
//! Inputs are the shipped files mutated line by line (deleted, duplicated, truncated, a character
//! replaced) and arbitrary text, so the cases stay close to the mistakes people make.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A mutation of one line of a text.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Duplicate(usize),
    Truncate(usize, usize),
    Replace(usize, usize, char),
    Insert(usize, String),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(l, n)| Edit::Truncate(l, n)),
        (
            any::<usize>(),
            any::<usize>(),
            prop_oneof![
                Just(':'),
                Just('{'),
                Just('"'),
                Just(' '),
                Just('-'),
                Just('\t'),
                any::<char>()
            ]
        )
            .prop_map(|(l, c, ch)| Edit::Replace(l, c, ch)),
        (any::<usize>(), "[ -~]{0,40}").prop_map(|(l, s)| Edit::Insert(l, s)),
    ];
    proptest::collection::vec(edit, 1..4)
}

fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for e in edits {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match e {
            Edit::Delete(l) => {
                lines.remove(l % n);
            }
            Edit::Duplicate(l) => {
                let d = lines[l % n].clone();
                lines.insert(l % n, d);
            }
            Edit::Truncate(l, c) => {
                let line = &mut lines[l % n];
                let cut = line
                    .char_indices()
                    .nth(c % (line.chars().count() + 1))
                    .map_or(line.len(), |(i, _)| i);
                line.truncate(cut);
            }
            Edit::Replace(l, c, ch) => {
                let line = &mut lines[l % n];
                let chars: Vec<char> = line.chars().collect();
                if !chars.is_empty() {
                    let mut chars = chars;
                    let i = c % chars.len();
                    chars[i] = *ch;
                    *line = chars.into_iter().collect();
                }
            }
            Edit::Insert(l, s) => lines.insert(l % (n + 1), s.clone()),
        }
    }
    lines.join("\n") + "\n"
}

/// Load a plan and phases written to a temporary directory; a panic fails the property, an error
/// must render and name the file it is about.
fn load(plan: &str, phase: &str) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let plan_file = tmp.path().join("plan.yaml");
    let phases = tmp.path().join("phases");
    std::fs::create_dir_all(&phases).unwrap();
    std::fs::write(&plan_file, plan).unwrap();
    std::fs::write(phases.join("01-foundation.yaml"), phase).unwrap();
    let result =
        std::panic::catch_unwind(|| match bootstrap::spec::load_spec(&plan_file, &phases) {
            Err(e) => Err(e.to_string()),
            Ok(spec) => match bootstrap::dag::Dag::build(&spec, &tmp.path().join("state")) {
                Err(e) => Err(e.to_string()),
                Ok(_) => Ok(()),
            },
        });
    match result {
        Err(_) => Err(TestCaseError::fail("the loader panicked")),
        Ok(Ok(())) => Ok(()),
        Ok(Err(msg)) => {
            prop_assert!(!msg.trim().is_empty(), "an empty error");
            prop_assert!(
                msg.contains("plan.yaml")
                    || msg.contains("01-foundation.yaml")
                    || msg.contains("phases"),
                "the error names no file: {msg}"
            );
            Ok(())
        }
    }
}

fn shipped(p: &str) -> String {
    std::fs::read_to_string(root().join(p)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_plans_never_panic(e in edits()) {
        load(&mutate(&shipped("plans/lab.yaml"), &e), &shipped("phases/01-foundation.yaml"))?;
    }

    #[test]
    fn mutated_phases_never_panic(e in edits()) {
        load(&shipped("plans/lab.yaml"), &mutate(&shipped("phases/01-foundation.yaml"), &e))?;
    }

    #[test]
    fn arbitrary_templates_never_panic(t in "[ -~]{0,30}(\\{\\{|\\{%|\\}\\}|%\\})[ -~]{0,30}") {
        let phase = shipped("phases/01-foundation.yaml").replacen(
            "description: Create the directories for {{ cluster.name }}'s generated Talos files",
            &format!("description: {:?}", t),
            1,
        );
        load(&shipped("plans/lab.yaml"), &phase)?;
    }

    #[test]
    fn arbitrary_journals_never_panic(lines in proptest::collection::vec(prop_oneof![
        "[ -~]{0,60}",
        Just(r#"{"record":"step-finished","run_id":"r","id":"a","at":"t","outcome":"done","attempts":1,"duration_ms":1,"exit_code":0,"fingerprint":"f","log":"l","detail":""}"#.to_string()),
        Just(r#"{"record":"step-started","run_id":"r","id":"a","at":"t","attempt":1,"fingerprint":"f","log":"l"}"#.to_string()),
        Just(r#"{"record":"reset","at":"t","ids":["a"],"all":false}"#.to_string()),
        Just(r#"{"record":"step-finished","outcome":"#.to_string()),
    ], 0..12)) {
        use bootstrap::state::Store;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("journal.jsonl"), lines.join("\n")).unwrap();
        let store = bootstrap::state::FileStore::new(tmp.path());
        let r = std::panic::catch_unwind(|| store.load().map(|_| ()).map_err(|e| format!("{e:#}")));
        prop_assert!(r.is_ok(), "the journal loader panicked");
    }
}

#[test]
fn the_mutator_changes_the_text() {
    let t = "a: 1\nb: 2\n";
    assert_ne!(mutate(t, &[Edit::Delete(0)]), t);
    assert!(Path::new(&root().join("plans/lab.yaml")).exists());
}
