//! Benchmark: plan a generated 10,000-step DAG. Target: under 300 ms on our 2-core machines.
//!
//! Run with `cargo bench --bench plan_dag` (or `scripts/bench`). It loads the files, renders every
//! template, builds and checks the graph, selects everything, computes waves and the JSON view: all of
//! `bootstrap plan --format json` except printing. Exits 1 if the median exceeds the target.

use std::fmt::Write;
use std::time::{Duration, Instant};

use bootstrap::cli::{ColorMode, Global, OutputMode, Selection};

const PHASES: usize = 10;
const STEPS_PER_PHASE: usize = 500; // x2 clusters = 10,000 concrete steps
const TARGET: Duration = Duration::from_millis(300);

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phases = dir.path().join("phases");
    std::fs::create_dir_all(&phases).unwrap();
    for p in 0..PHASES {
        let mut y = format!("id: p{p}\ntitle: Phase {p}\nsteps:\n");
        for s in 0..STEPS_PER_PHASE {
            let needs = if s == 0 {
                String::new()
            } else {
                format!(
                    "    needs: [p{p}-s{}{}]\n",
                    s - 1,
                    if s > 10 {
                        format!(", p{p}-s{}", s / 2)
                    } else {
                        String::new()
                    }
                )
            };
            let _ = write!(
                y,
                "  - id: p{p}-s{s}\n    for_each: cluster\n{needs}    check: {{ cmd: [test, -e, \"/tmp/{{{{ cluster.name }}}}/{s}\"] }}\n    run: {{ cmd: [talosctl, -n, \"{{{{ cluster.first_controlplane.ip }}}}\", apply, \"{{{{ versions.talos }}}}\"] }}\n    timeout: 1m\n"
            );
        }
        y.push_str("gate:\n  - id: ok\n    text: ok on {{ cluster.name }}\n    for_each: cluster\n    check: { nodes: { ready: true } }\n");
        std::fs::write(phases.join(format!("{p:02}.yaml")), y).unwrap();
    }
    let global = Global {
        plan: std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/plans/lab.yaml")),
        phases: phases.clone(),
        state_dir: Some(dir.path().join("state")),
        output: OutputMode::Text,
        color: ColorMode::Never,
        verbose: 0,
        quiet: true,
        chdir: None,
        root: None,
    };
    let mut times = Vec::new();
    let mut steps = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let ws = bootstrap::workspace::Workspace::load(&global).expect("load");
        let sel = ws.dag.select(&[], &[]).expect("select");
        let view = bootstrap::dryrun::build(&ws, &sel, &Selection::default());
        let json = serde_json::to_string(&view).unwrap();
        times.push(t.elapsed());
        steps = view.summary.steps;
        assert!(json.len() > 1000);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "plan_dag: {steps} steps planned; median {median:?} (min {:?}, max {:?}); target {TARGET:?}",
        times[0],
        times[times.len() - 1]
    );
    if median > TARGET {
        eprintln!("plan_dag: over target");
        std::process::exit(1);
    }
}
