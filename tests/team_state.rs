//! Team state through the binary against the lab: the journal and the lock in the infra cluster
//! (Secrets and a Lease), moved there by itself after foundation or by `bootstrap state migrate`,
//! seen from a second state directory, and one writer at a time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::text;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lab plan with `state:` appended (and its one plan-relative path made absolute), written in
/// `dir`.
fn team_plan(dir: &Path, name: &str, state: &str) -> PathBuf {
    let lab = std::fs::read_to_string(root().join("plans/lab.yaml")).unwrap();
    let patch = root().join("talos/patches/common.yaml");
    let text = lab
        .replace(
            "common: ../talos/patches/common.yaml",
            &format!("common: {}", patch.display()),
        )
        .replacen("name: lab", &format!("name: {name}"), 1);
    assert!(
        text.contains(&format!("name: {name}")),
        "the lab plan's name line moved"
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, format!("{text}\nstate:\n{state}")).unwrap();
    path
}

const AFTER_FOUNDATION: &str = "  backend: kubernetes\n  context: admin@infra\n  namespace: bootstrap-system\n  after: foundation\n  lease_seconds: 6\n";

/// `bootstrap` with this plan and state dir; `lab_home` shares one lab between state dirs.
fn bs(plan: &Path, state: &Path, lab_home: Option<&Path>, args: &[&str]) -> Output {
    cmd(plan, &root().join("phases"), state, lab_home, args)
        .output()
        .expect("run bootstrap")
}

fn cmd(
    plan: &Path,
    phases: &Path,
    state: &Path,
    lab_home: Option<&Path>,
    args: &[&str],
) -> Command {
    let mut c = Command::new(common::bin());
    c.arg("--plan")
        .arg(plan)
        .arg("--phases")
        .arg(phases)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("BOOTSTRAP_PLAN")
        .env_remove("BOOTSTRAP_STATE_DIR")
        .env("NO_COLOR", "1")
        .current_dir(root());
    match lab_home {
        // A teammate's kubeconfig: the shared lab's.
        Some(h) => c
            .env("BOOTSTRAP_LAB_HOME", h)
            .env("KUBECONFIG", h.join("kubeconfig")),
        None => c.env_remove("BOOTSTRAP_LAB_HOME").env_remove("KUBECONFIG"),
    };
    c.env_remove("BOOTSTRAP_LAB_FAULTS");
    c
}

fn ok(o: &Output, what: &str) -> String {
    let err = text(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{what} failed:\nstdout:\n{}\nstderr:\n{err}",
        text(&o.stdout)
    );
    err
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", text(&o.stdout), text(&o.stderr)))
}

/// Each step's id and status, from `status --output json`.
fn statuses(o: &Output) -> Vec<(String, String)> {
    json(o)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn after_foundation_the_state_moves_into_the_cluster_and_back_by_command() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = team_plan(tmp.path(), "lab", AFTER_FOUNDATION);
    let st = tmp.path().join("state");

    let run = bs(&plan, &st, None, &["run", "--phase", "foundation"]);
    let err = ok(&run, "foundation");
    assert!(
        err.contains("moved to namespace bootstrap-system of kube context admin@infra"),
        "{err}"
    );
    assert!(st.join("backend.json").exists());
    assert!(st.join("journal.migrated.jsonl").exists());
    assert!(
        !st.join("journal.jsonl").exists(),
        "the local journal stays behind"
    );

    // Everything the run recorded, including after the move (the gate's record), is in the cluster.
    let show = bs(&plan, &st, None, &["state", "show", "--output", "json"]);
    ok(&show, "state show");
    let doc = json(&show);
    assert_eq!(doc["backend"], "kubernetes");
    assert_eq!(doc["location"]["namespace"], "bootstrap-system");
    assert_eq!(doc["lock"]["holder"], serde_json::Value::Null, "{doc}");
    assert_eq!(doc["last_run"]["outcome"], "succeeded", "{doc}");
    assert!(doc["report"]["bytes"].as_u64().unwrap() > 100, "{doc}");
    let status = bs(&plan, &st, None, &["status", "--output", "json"]);
    ok(&status, "status");
    let rows = statuses(&status);
    assert!(rows.len() > 30, "{rows:?}");
    let done = rows.iter().filter(|(_, s)| s == "done").count();
    assert_eq!(
        done as u64,
        doc["steps_recorded"].as_u64().unwrap(),
        "every recorded step is done: {rows:?}"
    );
    assert!(
        rows.iter()
            .any(|(id, s)| id == "gate/foundation" && s == "done"),
        "{rows:?}"
    );

    // The report teammates see names the host whose disk holds the step logs.
    let report = bs(&plan, &st, None, &["state", "show", "--report"]);
    let md = text(&report.stdout);
    assert!(md.contains("its step logs stay on that machine"), "{md}");
    assert!(md.contains("**Outcome: succeeded**"), "{md}");

    // Nothing to do: read from the cluster.
    let again = bs(&plan, &st, None, &["run", "--phase", "foundation"]);
    assert!(ok(&again, "re-run").contains("No changes."));

    // `reset` writes to the cluster too (under the lock), and the next run redoes the step.
    ok(
        &bs(&plan, &st, None, &["reset", "talos-dirs/infra"]),
        "reset in the cluster",
    );
    let reset = statuses(&bs(&plan, &st, None, &["status", "--output", "json"]));
    assert!(
        reset
            .iter()
            .any(|(id, s)| id == "talos-dirs/infra" && s == "never-run"),
        "{reset:?}"
    );
    let redo = bs(&plan, &st, None, &["run", "--phase", "foundation"]);
    assert!(!ok(&redo, "run after reset").contains("No changes."));
    let rows = statuses(&bs(&plan, &st, None, &["status", "--output", "json"]));
    assert_eq!(
        std::fs::metadata(st.join("spool.jsonl")).map_or(0, |m| m.len()),
        0,
        "every record reached the cluster"
    );

    // Back to this machine, and into the cluster again by command: status unchanged each time.
    let back = bs(&plan, &st, None, &["state", "migrate", "--to", "local"]);
    ok(&back, "migrate --to local");
    assert!(!st.join("backend.json").exists());
    let local = bs(&plan, &st, None, &["status", "--output", "json"]);
    assert_eq!(statuses(&local), rows);
    let show = bs(&plan, &st, None, &["state", "show", "--output", "json"]);
    assert_eq!(json(&show)["backend"], "local");

    let up = bs(
        &plan,
        &st,
        None,
        &["state", "migrate", "--to", "kubernetes"],
    );
    ok(&up, "migrate --to kubernetes");
    let remote = bs(&plan, &st, None, &["status", "--output", "json"]);
    assert_eq!(statuses(&remote), rows);
    let twice = bs(
        &plan,
        &st,
        None,
        &["state", "migrate", "--to", "kubernetes"],
    );
    assert_eq!(twice.status.code(), Some(2), "{}", text(&twice.stderr));
    assert!(text(&twice.stderr).contains("already in namespace bootstrap-system"));
}

/// A lab shared by several state directories (`BOOTSTRAP_LAB_HOME`), a plan that keeps its state in
/// the infra cluster after foundation (lease 8 s: short, with room for a loaded 2-core machine),
/// and phases: foundation, then a `team` phase.
struct Team {
    tmp: tempfile::TempDir,
    plan: PathBuf,
    phases: PathBuf,
    home: PathBuf,
}

const TEAM_STATE: &str =
    "  backend: kubernetes\n  context: admin@infra\n  after: foundation\n  lease_seconds: 8\n";

impl Team {
    /// `steps`: the `team` phase's steps (YAML list items, indented two spaces).
    fn new(steps: &str) -> Team {
        let tmp = tempfile::tempdir().unwrap();
        let plan = team_plan(tmp.path(), "lab", TEAM_STATE);
        let phases = tmp.path().join("phases");
        std::fs::create_dir_all(&phases).unwrap();
        std::fs::copy(
            root().join("phases/01-foundation.yaml"),
            phases.join("01-foundation.yaml"),
        )
        .unwrap();
        std::fs::write(
            phases.join("90-team.yaml"),
            format!("id: team\ntitle: Team rehearsal\nsteps:\n{steps}"),
        )
        .unwrap();
        let home = tmp.path().join("lab");
        Team {
            plan,
            phases,
            home,
            tmp,
        }
    }
    fn state(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
    fn cmd(&self, state: &str, args: &[&str]) -> Command {
        cmd(
            &self.plan,
            &self.phases,
            &self.state(state),
            Some(&self.home),
            args,
        )
    }
    fn run(&self, state: &str, args: &[&str]) -> Output {
        self.cmd(state, args).output().expect("run bootstrap")
    }
    /// Start a command in the background (with extra lab faults, read by whoever serves the lab).
    fn spawn(&self, state: &str, args: &[&str], faults: Option<&str>) -> Child {
        let mut c = self.cmd(state, args);
        if let Some(f) = faults {
            c.env("BOOTSTRAP_LAB_FAULTS", f);
        }
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        Child(c.spawn().expect("spawn bootstrap"))
    }
}

/// A background `bootstrap`, killed if the test ends first.
struct Child(std::process::Child);

impl Child {
    /// Panics with its output if it has ended (it was expected to still run).
    fn running(&mut self, what: &str) {
        if let Ok(Some(_)) = self.0.try_wait() {
            let c = std::mem::replace(self, Child(Command::new("true").spawn().unwrap()));
            let out = c.wait();
            panic!(
                "{what} ended early ({:?}):\n{}\n{}",
                out.status.code(),
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    fn wait(mut self) -> Output {
        let mut out = Vec::new();
        let mut err = Vec::new();
        use std::io::Read;
        if let Some(mut o) = self.0.stdout.take() {
            o.read_to_end(&mut out).unwrap();
        }
        if let Some(mut e) = self.0.stderr.take() {
            e.read_to_end(&mut err).unwrap();
        }
        let status = self.0.wait().unwrap();
        Output {
            status,
            stdout: out,
            stderr: err,
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Poll until `f` holds (at most `secs`).
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

/// `state show --output json` from `state`.
fn show(team: &Team, state: &str) -> serde_json::Value {
    let o = team.run(state, &["state", "show", "--output", "json"]);
    ok(&o, "state show");
    json(&o)
}

/// `bootstrap lab serve` for the shared lab, in the background, once it serves.
fn serve(team: &Team, faults: Option<&str>) -> Child {
    let mut c = team.spawn("server", &["lab", "serve"], faults);
    let out = c.0.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("The lab is serving"), "{first}");
    // Keep reading so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    c
}

/// Alice starts the team phase; returns once Bob sees her run holding the lock.
fn alice_holds_the_lock(team: &Team) -> Child {
    let mut a = team.spawn("alice", &["run", "--phase", "team"], None);
    let pid = a.pid();
    eventually(30, "alice's run to hold the lock", || {
        a.running("alice's run");
        show(team, "bob")["lock"]["pid"].as_u64() == Some(u64::from(pid))
    });
    a
}

/// A team whose `slow` step waits while its marker file exists (a run holds the lock there).
fn held_team() -> (Team, PathBuf) {
    let team = Team::new("");
    let marker = team.tmp.path().join("hold");
    std::fs::write(
        team.phases.join("90-team.yaml"),
        format!(
            "id: team\ntitle: Team rehearsal\nsteps:\n  - id: slow\n    run: {{ cmd: [sh, -c, 'while test -e \"$0\"; do sleep 0.2; done', {m:?}] }}\n  - id: after-slow\n    needs: [slow]\n    run: {{ cmd: [\"true\"] }}\n",
            m = marker.display().to_string()
        ),
    )
    .unwrap();
    (team, marker)
}

#[test]
fn a_second_state_dir_sees_the_same_steps_and_one_run_at_a_time_with_takeover_after_kill_9() {
    let (team, marker) = held_team();
    let found = team.run("alice", &["run", "--phase", "foundation"]);
    assert!(ok(&found, "foundation").contains("state  moved to"));

    // Bob's empty state dir, the same plan: the same steps.
    let alice = team.run("alice", &["status", "--output", "json"]);
    let bob = team.run("bob", &["status", "--output", "json"]);
    ok(&bob, "bob's status");
    assert!(
        text(&bob.stderr).contains("using it (pointer written to"),
        "{}",
        text(&bob.stderr)
    );
    assert_eq!(statuses(&bob), statuses(&alice));
    assert!(team.state("bob").join("backend.json").exists());

    // Alice runs the team phase and holds the lock while `slow` waits.
    std::fs::write(&marker, "").unwrap();
    let a = alice_holds_the_lock(&team);
    let second = team.run("bob", &["run", "--phase", "team"]);
    assert_eq!(second.status.code(), Some(3), "{}", text(&second.stderr));
    let err = text(&second.stderr);
    assert!(
        err.contains(&format!("is locked by pid {} on", a.pid())),
        "the second run names the first: {err}"
    );

    // kill -9 Alice: Bob's resume takes the lock over (her process is gone) and converges.
    a.signal("-KILL");
    drop(a);
    std::fs::remove_file(&marker).unwrap();
    let resumed = team.run("bob", &["resume"]);
    let err = ok(&resumed, "bob's resume");
    assert!(err.contains("took over the lock"), "{err}");
    assert!(err.contains("its process is gone"), "{err}");
    let end = team.run("alice", &["status", "--output", "json", "--phase", "team"]);
    let rows = statuses(&end);
    assert!(
        rows.iter().all(|(_, s)| s == "done"),
        "alice sees bob's finished run: {rows:?}"
    );
    assert_eq!(
        show(&team, "alice")["lock"]["holder"],
        serde_json::Value::Null
    );
}

#[test]
fn a_holder_that_stops_renewing_loses_the_lock_after_its_lease_and_never_writes_again() {
    let (team, marker) = held_team();
    // The lab is served by a process of its own, so that stopping a run stops only the run.
    let _server = serve(&team, None);
    ok(
        &team.run("alice", &["run", "--phase", "foundation"]),
        "foundation",
    );
    std::fs::write(&marker, "").unwrap();
    let a = alice_holds_the_lock(&team);
    // Alice's machine freezes: her lease is not renewed.
    a.signal("-STOP");
    let held = team.run("bob", &["reset", "after-slow"]);
    assert_eq!(held.status.code(), Some(3), "{}", text(&held.stderr));
    eventually(20, "the lease to expire", || {
        show(&team, "bob")["lock"]["expired"] == true
    });
    std::fs::remove_file(&marker).unwrap();
    let resumed = team.run("bob", &["resume"]);
    let err = ok(&resumed, "bob's resume");
    assert!(err.contains("its lease expired"), "{err}");
    let before = team.run("bob", &["status", "--output", "json"]);
    // Alice wakes up: her lock is gone, she starts nothing and writes nothing more there.
    a.signal("-CONT");
    let out = a.wait();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("the lock was taken over"), "{err}");
    let after = team.run("bob", &["status", "--output", "json"]);
    assert_eq!(statuses(&after), statuses(&before));
    assert_eq!(json(&after)["last_run"], json(&before)["last_run"]);
}

#[test]
fn an_unreachable_api_server_stops_the_run_with_exit_3_and_nothing_recorded_is_lost() {
    // `trigger` makes the infra API server (where the state is) unreachable for 9 s; the chain goes
    // on without it until the lease cannot be renewed.
    let mut steps = String::from(
        "  - id: trigger\n    run: { cmd: [sh, -c, 'kubectl --context admin@apps get ns outage-trigger >/dev/null 2>&1; true'] }\n",
    );
    for i in 0..12 {
        let needs = if i == 0 {
            "trigger".to_string()
        } else {
            format!("c{}", i - 1)
        };
        steps.push_str(&format!(
            "  - id: c{i}\n    needs: [{needs}]\n    run: {{ cmd: [sleep, \"0.7\"] }}\n"
        ));
    }
    let team = Team::new(&steps);
    ok(
        &team.run("alice", &["run", "--phase", "foundation"]),
        "foundation",
    );
    let faults = r#"[{"id":"infra-down","kind":"api-unreachable","cluster":"infra","matches":"get ns outage-trigger","seconds":12}]"#;
    let a = team.spawn(
        "alice",
        &["run", "--phase", "team", "--output", "json"],
        Some(faults),
    );
    let out = a.wait();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lost = events
        .iter()
        .find(|e| e["event"] == "lock-lost")
        .unwrap_or_else(|| panic!("no lock-lost event: {events:?}"));
    assert!(
        lost["reason"]
            .as_str()
            .unwrap()
            .contains("could not be renewed"),
        "{lost}"
    );
    assert!(err.contains("It started nothing new after that"), "{err}");
    // Nothing started after the lock was lost.
    let at = events
        .iter()
        .position(|e| e["event"] == "lock-lost")
        .unwrap();
    assert!(
        !events[at..].iter().any(|e| e["event"] == "step-started"),
        "a step started after the lock was lost: {events:?}"
    );
    let spool = std::fs::read_to_string(team.state("alice").join("spool.jsonl")).unwrap();
    let kept: Vec<&str> = spool
        .lines()
        .skip(1)
        .filter(|l| l.contains("\"record\":\"step-finished\""))
        .collect();
    assert!(
        !kept.is_empty(),
        "steps finished during the outage are kept here: {spool}"
    );
    // Once it serves again, the next run sends what was kept and goes on from there.
    let resumed = (0..40)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(500));
            team.run("alice", &["resume"])
        })
        .find(|o| o.status.code() == Some(0))
        .expect("resume converges once the API server is back");
    let err = text(&resumed.stderr);
    assert!(err.contains("could not send to"), "{err}");
    let status = team.run("alice", &["status", "--output", "json", "--phase", "team"]);
    let doc = json(&status);
    let first_run = kept[0]
        .split("\"run_id\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    for s in doc["steps"].as_array().unwrap() {
        assert_eq!(s["status"], "done", "{s}");
    }
    assert!(
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["run_id"] == first_run),
        "what finished during the outage is recorded with the run that did it, not run again: {doc}"
    );
}

#[test]
fn a_write_that_loses_its_resource_version_race_is_applied_again_without_losing_a_record() {
    let team = Team::new(
        "  - id: one\n    run: { cmd: [\"true\"] }\n  - id: two\n    needs: [one]\n    run: { cmd: [\"true\"] }\n  - id: three\n    needs: [two]\n    run: { cmd: [\"true\"] }\n",
    );
    ok(
        &team.run("alice", &["run", "--phase", "foundation"]),
        "foundation",
    );
    let faults = r#"[{"id":"race","kind":"write-conflict","cluster":"infra","resource":"secrets","name_prefix":"bootstrap-state-g","times":3}]"#;
    let out = team
        .spawn("alice", &["run", "--phase", "team"], Some(faults))
        .wait();
    let err = ok(&out, "the team phase");
    assert!(
        err.contains("3 write(s) to the state lost a resourceVersion race"),
        "{err}"
    );
    let status = team.run("bob", &["status", "--output", "json", "--phase", "team"]);
    let rows = statuses(&status);
    assert_eq!(rows.len(), 4, "three steps and the phase's gate: {rows:?}");
    assert!(rows.iter().all(|(_, s)| s == "done"), "{rows:?}");
    assert_eq!(json(&status)["last_run"]["outcome"], "succeeded");
}

#[test]
fn migrating_onto_another_plans_state_is_refused_unless_forced() {
    let team = Team::new("  - id: one\n    run: { cmd: [\"true\"] }\n");
    ok(
        &team.run("alice", &["run", "--phase", "foundation"]),
        "foundation",
    );
    // Carol's plan has another name and keeps its state in the same namespace from the start.
    let other = team_plan(
        team.tmp.path(),
        "other",
        "  backend: kubernetes\n  context: admin@infra\n  lease_seconds: 8\n",
    );
    let carol = team.state("carol");
    let migrate = |force: bool| {
        let mut args = vec!["state", "migrate", "--to", "kubernetes"];
        if force {
            args.push("--force");
        }
        cmd(&other, &team.phases, &carol, Some(&team.home), &args)
            .output()
            .unwrap()
    };
    let refused = migrate(false);
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.contains("holds the state of another plan, \"lab\""),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert!(!carol.join("backend.json").exists());
    // Alice's state is untouched.
    assert_eq!(show(&team, "alice")["last_run"]["outcome"], "succeeded");

    let forced = migrate(true);
    ok(&forced, "migrate --force");
    assert!(carol.join("backend.json").exists());
    let shown = cmd(
        &other,
        &team.phases,
        &carol,
        Some(&team.home),
        &["state", "show", "--output", "json"],
    )
    .output()
    .unwrap();
    let doc = json(&shown);
    assert_eq!(doc["backend"], "kubernetes", "{doc}");
    assert_eq!(doc["steps_recorded"], 0, "{doc}");
}

/// Successful irreversible actions in the lab's call log (talosctl bootstrap, apply-config
/// --insecure), by node: each must happen at most once.
fn irreversible_twice(lab_home: &Path) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    let calls = std::fs::read_to_string(lab_home.join("calls.jsonl")).unwrap_or_default();
    for l in calls.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        let args: Vec<&str> = v["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .collect();
        let node = args
            .iter()
            .position(|a| *a == "-n")
            .and_then(|i| args.get(i + 1))
            .copied()
            .unwrap_or("");
        if v["tool"] == "talosctl" && v["exit"] == 0 {
            if args.last() == Some(&"bootstrap") {
                *seen.entry(format!("bootstrap {node}")).or_default() += 1;
            } else if args.contains(&"apply-config") && args.contains(&"--insecure") {
                *seen.entry(format!("apply-config {node}")).or_default() += 1;
            }
        }
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect()
}

/// kill -9 at instants spread over foundation, the move into the cluster and the mesh phase;
/// `resume` converges each time and no irreversible action runs twice. `BOOTSTRAP_TEAM_CRASH_N`
/// sets the number of instants (default 3).
#[test]
fn kill_9_around_the_move_into_the_cluster_then_resume_converges() {
    let n: u32 = std::env::var("BOOTSTRAP_TEAM_CRASH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut failures = Vec::new();
    for i in 0..n {
        let tmp = tempfile::tempdir().unwrap();
        let plan = team_plan(tmp.path(), "lab", TEAM_STATE);
        let (st, home) = (tmp.path().join("state"), tmp.path().join("lab"));
        let at = Duration::from_millis(1500 + u64::from(i) * 9000 / u64::from(n.max(1)));
        let mut run = cmd(
            &plan,
            &root().join("phases"),
            &st,
            Some(&home),
            &["run", "--phase", "mesh"],
        );
        let mut child = run
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let _ = child.kill();
        let _ = child.wait();
        let started = st.join("journal.jsonl").exists() || st.join("backend.json").exists();
        let again = if started { "resume" } else { "run" };
        let args: &[&str] = if started {
            &["resume"]
        } else {
            &["run", "--phase", "mesh"]
        };
        let out = bs(&plan, &st, Some(&home), args);
        let status = bs(
            &plan,
            &st,
            Some(&home),
            &["status", "--output", "json", "--phase", "mesh"],
        );
        let open: Vec<_> = statuses(&status)
            .into_iter()
            .filter(|(_, s)| s != "done" && s != "satisfied")
            .collect();
        let twice = irreversible_twice(&home);
        if out.status.code() != Some(0) || !open.is_empty() || !twice.is_empty() {
            failures.push(format!(
                "kill at {at:?}, then {again}: exit {:?}, not done {open:?}, irreversible twice {twice:?}\n{}",
                out.status.code(),
                text(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn a_damaged_state_pointer_is_named_with_its_line_and_a_fix_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("state");
    std::fs::create_dir_all(&st).unwrap();
    std::fs::write(
        st.join("backend.json"),
        "{\"backend\": \"kubernetes\", \"plan\":\n",
    )
    .unwrap();
    for args in [&["status"][..], &["state", "show"][..]] {
        let o = bs(&root().join("plans/lab.yaml"), &st, None, args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("backend.json is not a state pointer") && err.contains("line 2"),
            "{err}"
        );
        assert!(
            err.contains("remove it to use the local state again"),
            "{err}"
        );
    }
}
