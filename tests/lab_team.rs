//! What team state needs from the lab: Secrets and Leases with real optimistic concurrency (through
//! the kube client, over HTTP), the `write-conflict` fault, API server outages (`bootstrap lab
//! outage`, the `api-unreachable` fault) as clients see them, and one lab shared by two state
//! directories (one process serves it, the others attach; the next one serves it when it is gone).

mod common;
#[path = "common/lab.rs"]
mod lab;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use bootstrap_lab::apiserver::{self, ServeOptions};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use common::{bin, text};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A kube client for `admin@<cluster>` at `url`, through a kubeconfig written in `dir`.
async fn client(dir: &Path, cluster: &str, url: &str) -> kube::Client {
    let kc = dir.join(format!("kubeconfig-{cluster}"));
    apiserver::kubeconfig::write_kubeconfig(
        &kc,
        &[(
            format!("admin@{cluster}"),
            cluster.to_string(),
            url.to_string(),
        )],
        None,
    )
    .unwrap();
    bootstrap_lab::cluster::client(&kc, None).await.unwrap()
}

fn secret(name: &str, labels: &[(&str, &str)]) -> Secret {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default",
                     "labels": labels.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>()},
        "data": {"journal": B64.encode("one")},
        "stringData": {"owner": "alice"},
    }))
    .unwrap()
}

fn api_error(r: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// One HTTP/1.1 exchange on `stream` (kept alive); the status code and body.
fn http(
    stream: &mut std::net::TcpStream,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    http_body(stream, method, path, "")
}

fn http_body(
    stream: &mut std::net::TcpStream,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: lab\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut status = String::new();
    if reader.read_line(&mut status)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed",
        ));
    }
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut len = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

#[test]
fn secrets_have_real_optimistic_concurrency() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let server = apiserver::serve(ServeOptions {
            cluster: "infra".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let c = client(tmp.path(), "infra", &server.url()).await;
        let secrets: Api<Secret> = Api::namespaced(c, "default");

        // stringData is merged into data (base64) and not stored.
        let created = secrets
            .create(&PostParams::default(), &secret("bootstrap-state", &[("team", "a")]))
            .await
            .unwrap();
        let data = created.data.clone().unwrap();
        assert_eq!(data["journal"].0, b"one");
        assert_eq!(data["owner"].0, b"alice");
        assert!(created.string_data.is_none());

        // POST of an existing name.
        let dup = api_error(
            secrets
                .create(&PostParams::default(), &secret("bootstrap-state", &[]))
                .await,
        );
        assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
        assert_eq!(dup.message, r#"secrets "bootstrap-state" already exists"#);

        // A write with the current resourceVersion wins; one with the old one is refused.
        let mut mine = created.clone();
        mine.string_data = Some([("journal".to_string(), "two".to_string())].into());
        let updated = secrets
            .replace("bootstrap-state", &PostParams::default(), &mine)
            .await
            .unwrap();
        assert_eq!(updated.data.clone().unwrap()["journal"].0, b"two");
        assert_ne!(
            updated.metadata.resource_version,
            created.metadata.resource_version
        );
        let stale = api_error(
            secrets
                .replace("bootstrap-state", &PostParams::default(), &created)
                .await,
        );
        assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
        assert_eq!(
            stale.message,
            r#"Operation cannot be fulfilled on secrets "bootstrap-state": the object has been modified; please apply your changes to the latest version and try again"#
        );
        let now = secrets.get("bootstrap-state").await.unwrap();
        assert_eq!(now.data.unwrap()["journal"].0, b"two", "the stale write changed nothing");

        // Data that is not base64 cannot be decoded, as on a real server.
        let mut raw = std::net::TcpStream::connect(server.addr).unwrap();
        let (code, body) = http_body(
            &mut raw,
            "POST",
            "/api/v1/namespaces/default/secrets",
            r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"}, "data": {"k": "not base64!"}}"#,
        )
        .unwrap();
        assert_eq!(code, 400, "{body}");
        assert!(body.contains("illegal base64 data"), "{body}");

        // Label selectors, then delete.
        secrets
            .create(&PostParams::default(), &secret("other", &[("team", "b")]))
            .await
            .unwrap();
        let listed = secrets
            .list(&ListParams::default().labels("team=a"))
            .await
            .unwrap();
        let names: Vec<_> = listed
            .items
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(names, ["bootstrap-state"]);
        secrets
            .delete("bootstrap-state", &DeleteParams::default())
            .await
            .unwrap();
        let gone = api_error(secrets.get("bootstrap-state").await);
        assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));
        server.shutdown().await;
    });
}

#[test]
fn leases_round_trip_and_conflict() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let server = apiserver::serve(ServeOptions {
            cluster: "infra".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let c = client(tmp.path(), "infra", &server.url()).await;
        let leases: Api<Lease> = Api::namespaced(c, "default");
        let t = |s: &str| MicroTime(s.parse().unwrap());
        let lease = Lease {
            metadata: kube::api::ObjectMeta {
                name: Some("bootstrap-lock".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("alice@laptop:4242".into()),
                lease_duration_seconds: Some(30),
                acquire_time: Some(t("2026-12-01T04:00:00.123456Z")),
                renew_time: Some(t("2026-12-01T04:00:10.654321Z")),
                lease_transitions: Some(3),
                ..Default::default()
            }),
        };
        let created = leases.create(&PostParams::default(), &lease).await.unwrap();
        let got = leases.get("bootstrap-lock").await.unwrap();
        assert_eq!(got.spec, lease.spec);
        // On the wire, MicroTime has six fractional digits.
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        let (code, body) = http(
            &mut s,
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/default/leases/bootstrap-lock",
        )
        .unwrap();
        assert_eq!(code, 200, "{body}");
        let raw: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(raw["spec"]["renewTime"], "2026-12-01T04:00:10.654321Z");
        assert_eq!(raw["spec"]["acquireTime"], "2026-12-01T04:00:00.123456Z");
        assert_eq!(raw["spec"]["leaseTransitions"], 3);
        // Whatever precision a client sends, the server stores microseconds.
        let (code, body) = http_body(
            &mut s,
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            r#"{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "coarse"}, "spec": {"renewTime": "2026-12-01T04:00:10Z", "acquireTime": "2026-12-01T05:00:10.123456789+01:00"}}"#,
        )
        .unwrap();
        assert_eq!(code, 201, "{body}");
        let raw: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(raw["spec"]["renewTime"], "2026-12-01T04:00:10.000000Z");
        assert_eq!(raw["spec"]["acquireTime"], "2026-12-01T04:00:10.123456Z");

        let mut renewed = got.clone();
        renewed.spec.as_mut().unwrap().renew_time = Some(t("2026-12-01T04:00:20.000001Z"));
        leases
            .replace("bootstrap-lock", &PostParams::default(), &renewed)
            .await
            .unwrap();
        let stale = api_error(
            leases
                .replace("bootstrap-lock", &PostParams::default(), &created)
                .await,
        );
        assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
        assert_eq!(
            stale.message,
            r#"Operation cannot be fulfilled on leases.coordination.k8s.io "bootstrap-lock": the object has been modified; please apply your changes to the latest version and try again"#
        );
        let dup = api_error(leases.create(&PostParams::default(), &lease).await);
        assert_eq!(
            dup.message,
            r#"leases.coordination.k8s.io "bootstrap-lock" already exists"#
        );
        leases
            .delete("bootstrap-lock", &DeleteParams::default())
            .await
            .unwrap();
        server.shutdown().await;
    });
}

#[test]
fn write_conflict_fault_gives_exactly_times_conflicts() {
    let l = lab::TestLab::start(Some(
        r#"[{"id": "race", "kind": "write-conflict", "cluster": "infra", "resource": "secrets", "name_prefix": "team-", "times": 2},
            {"id": "lease-race", "kind": "write-conflict", "cluster": "infra", "resource": "leases.coordination.k8s.io", "times": 1}]"#,
    ));
    let url = l.handle.as_ref().unwrap().endpoints()["infra"].clone();
    let work = l.work();
    l.rt.block_on(async {
        let c = client(&work, "infra", &url).await;
        let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
        secrets
            .create(&PostParams::default(), &secret("team-state", &[]))
            .await
            .unwrap();
        secrets
            .create(&PostParams::default(), &secret("unrelated", &[]))
            .await
            .unwrap();
        // Read, change, write; on a conflict read again: exactly two conflicts, then it lands.
        let mut conflicts = Vec::new();
        for _ in 0..10 {
            let mut s = secrets.get("team-state").await.unwrap();
            s.string_data = Some([("journal".to_string(), "mine".to_string())].into());
            match secrets
                .replace("team-state", &PostParams::default(), &s)
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(e)) => conflicts.push((e.code, e.reason, e.message)),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(conflicts.len(), 2, "{conflicts:?}");
        for (code, reason, message) in &conflicts {
            assert_eq!((*code, reason.as_str()), (409, "Conflict"));
            assert!(
                message.starts_with(r#"Operation cannot be fulfilled on secrets "team-state""#)
            );
        }
        let s = secrets.get("team-state").await.unwrap();
        let data = s.data.unwrap();
        assert_eq!(data["journal"].0, b"mine");
        assert_eq!(
            data["owner"].0, b"alice",
            "the concurrent writer left the data alone"
        );
        assert!(
            s.metadata
                .annotations
                .unwrap_or_default()
                .contains_key("lab.bootstrap.dev/concurrent-write")
        );
        // Another name is not affected.
        let mut u = secrets.get("unrelated").await.unwrap();
        u.string_data = Some([("x".to_string(), "y".to_string())].into());
        secrets
            .replace("unrelated", &PostParams::default(), &u)
            .await
            .unwrap();

        // Leases too, once.
        let leases: Api<Lease> = Api::namespaced(c, "default");
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "bootstrap-lock"},
            "spec": {"holderIdentity": "alice", "leaseDurationSeconds": 30}
        }))
        .unwrap();
        let got = leases.create(&PostParams::default(), &lease).await.unwrap();
        let first = api_error(
            leases
                .replace("bootstrap-lock", &PostParams::default(), &got)
                .await,
        );
        assert_eq!(first.code, 409);
        let got = leases.get("bootstrap-lock").await.unwrap();
        assert_eq!(
            got.spec.as_ref().unwrap().holder_identity.as_deref(),
            Some("alice")
        );
        leases
            .replace("bootstrap-lock", &PostParams::default(), &got)
            .await
            .unwrap();
    });
}

/// `bootstrap` with a state dir and the lab in `lab_home`.
fn team_cmd(args: &[&str], state: &Path, lab_home: &Path) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .env("BOOTSTRAP_STATE_DIR", state)
        .env("BOOTSTRAP_LAB_HOME", lab_home)
        .env_remove("BOOTSTRAP_PLAN")
        .env("NO_COLOR", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn team(args: &[&str], state: &Path, lab_home: &Path) -> Output {
    team_cmd(args, state, lab_home).output().unwrap()
}

/// `bootstrap lab serve`, until it says it is serving.
fn serve(state: &Path, lab_home: &Path) -> Child {
    let mut child = team_cmd(&["lab", "serve"], state, lab_home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        if line.contains("Press Ctrl-C to stop.") {
            break;
        }
    }
    assert!(line.contains("The lab is serving"), "{line}");
    // Keep reading so the server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    child
}

fn stop(mut child: Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

fn kubectl_path() -> std::path::PathBuf {
    // The real kubectl from PATH (not the lab's stand-in).
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file() && !p.to_string_lossy().contains("/lab/bin/"))
        .expect("a real kubectl must be on PATH for this test; run scripts/ensure-kubectl")
}

fn endpoints(lab_home: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(lab_home.join("endpoints.json")).unwrap()).unwrap()
}

#[test]
fn two_state_dirs_share_one_lab_and_an_outage_is_real() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("shared-lab");
    let (s1, s2) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let server = serve(&s1, &home);

    // The second state dir finds the lab served, by the first process.
    let again = team(&["lab", "serve"], &s2, &home);
    assert_eq!(again.status.code(), Some(3), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains(&format!("already served by process {}", server.id())),
        "{}",
        text(&again.stderr)
    );
    // Bob's run uses the same API servers: talosctl writes his kubeconfig from the shared lab.
    let eps = endpoints(&home);
    let infra = eps["infra"].as_str().unwrap().to_string();
    let status = team(&["lab", "status"], &s2, &home);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));

    let kubeconfig = home.join("kubeconfig");
    let kubectl = |args: &[&str]| {
        Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--context")
            .arg("admin@infra")
            .args(args)
            .output()
            .unwrap()
    };
    let ok = kubectl(&["create", "namespace", "team"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));

    // An idle keep-alive connection, as a client's pool holds one.
    let addr = infra.trim_start_matches("http://").to_string();
    let mut pooled = std::net::TcpStream::connect(&addr).unwrap();
    assert_eq!(
        http(&mut pooled, "GET", "/api/v1/namespaces/team")
            .unwrap()
            .0,
        200
    );

    let out = team(&["lab", "outage", "infra", "--seconds", "4"], &s2, &home);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the API server of cluster infra is unreachable for 4s"),
        "{}",
        text(&out.stderr)
    );
    let until: u64 = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(home.join("outages.json")).unwrap(),
    )
    .unwrap()["infra"]
        .as_u64()
        .unwrap();
    let down_at = Instant::now();
    // The pooled connection is cut, a new one is refused, and kubectl says what it says against a
    // control plane that is down.
    assert!(http(&mut pooled, "GET", "/api/v1/namespaces/team").is_err());
    let refused = std::net::TcpStream::connect(&addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let failed = kubectl(&["get", "ns", "--request-timeout=2s"]);
    assert_ne!(failed.status.code(), Some(0));
    assert!(
        text(&failed.stderr).contains("refused"),
        "{}",
        text(&failed.stderr)
    );
    // The apps cluster is not affected.
    let apps = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--context", "admin@apps", "get", "ns"])
        .output()
        .unwrap();
    assert_eq!(apps.status.code(), Some(0), "{}", text(&apps.stderr));

    // Then the same URL serves again, with every write made before.
    let mut back = None;
    while down_at.elapsed() < Duration::from_secs(60) {
        let o = kubectl(&["get", "ns", "team", "-o", "name"]);
        if o.status.success() {
            back = Some(text(&o.stdout));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(back.as_deref(), Some("namespace/team\n"));
    assert!(
        bootstrap_lab::core::now_ms() >= until,
        "the outage lasted its window"
    );
    assert_eq!(endpoints(&home)["infra"], infra.as_str());

    // When the serving process is gone, the next one serves the lab, on the same addresses.
    stop(server);
    let server = serve(&s2, &home);
    assert_eq!(endpoints(&home)["infra"], infra.as_str());
    let o = kubectl(&["get", "ns", "team", "-o", "name"]);
    assert_eq!(text(&o.stdout), "namespace/team\n", "{}", text(&o.stderr));
    stop(server);
}

#[test]
fn the_api_unreachable_fault_fires_once_on_its_command() {
    let l = lab::TestLab::start(Some(
        r#"[{"id": "down", "kind": "api-unreachable", "cluster": "infra", "matches": "get ns", "seconds": 3}]"#,
    ));
    let url = l.handle.as_ref().unwrap().endpoints()["infra"].clone();
    apiserver::kubeconfig::write_kubeconfig(
        &l.kubeconfig(),
        &[("admin@infra".into(), "infra".into(), url.clone())],
        None,
    )
    .unwrap();
    let get = |what: &str| l.tool("kubectl", &["--context", "admin@infra", "get", what]);
    let o = get("nodes");
    assert_eq!(o.status.code(), Some(0), "{}", lab::err(&o));
    // The command the fault matches meets the outage it starts.
    let o = get("ns");
    assert_ne!(
        o.status.code(),
        Some(0),
        "{}{} {:?} {:?} {:?}",
        lab::out(&o),
        lab::err(&o),
        std::fs::read_to_string(l.lab_dir().join("outages.json")),
        std::fs::read_to_string(l.lab_dir().join("outages-applied.json")),
        std::fs::read_to_string(l.lab_dir().join("faults.json"))
    );
    let addr = url.trim_start_matches("http://");
    assert_eq!(
        lab::err(&o),
        format!(
            "The connection to the server {addr} was refused - did you specify the right host or port?\n"
        )
    );
    assert_eq!(
        std::net::TcpStream::connect(addr).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    // Then it serves again, and the fault does not fire twice.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) && std::net::TcpStream::connect(addr).is_err() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = get("ns");
    assert_eq!(o.status.code(), Some(0), "{}", lab::err(&o));
    assert!(lab::out(&o).contains("kube-system"));
}

#[test]
fn a_second_process_attaches_and_takes_over_when_the_first_is_gone() {
    let mut first = lab::TestLab::start(None);
    // A second user of the same lab dir (another state dir): it attaches.
    let (plan, _) =
        bootstrap::spec::load_plan(&Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/lab.yaml"))
            .unwrap();
    let other_state = first.tmp.path().join("bob");
    let mut cfg = bootstrap::lab::config(
        &plan,
        &other_state,
        Path::new(env!("CARGO_BIN_EXE_bootstrap")),
    )
    .unwrap();
    cfg.lab_dir = Some(first.lab_dir());
    // Bob's kubeconfig from some other lab: attaching points it at this lab's servers.
    let bob_kc = cfg.kubeconfig.clone().unwrap();
    apiserver::kubeconfig::write_kubeconfig(
        &bob_kc,
        &[(
            "admin@infra".into(),
            "infra".into(),
            "http://127.0.0.1:1".into(),
        )],
        None,
    )
    .unwrap();
    let second = first.rt.block_on(bootstrap_lab::Lab::start(&cfg)).unwrap();
    assert_eq!(second.served_by(), Some(std::process::id()));
    assert_eq!(
        second.endpoints(),
        first.handle.as_ref().unwrap().endpoints()
    );
    let infra = second.endpoints()["infra"].clone();
    let kc = std::fs::read_to_string(&bob_kc).unwrap();
    assert!(kc.contains(&infra), "{kc}");
    assert!(!kc.contains("127.0.0.1:1\n"), "{kc}");
    let work = first.work();
    first.rt.block_on(async {
        let c = client(&work, "infra", &infra).await;
        let secrets: Api<Secret> = Api::namespaced(c, "default");
        secrets
            .create(&PostParams::default(), &secret("kept", &[]))
            .await
            .unwrap();
    });
    // The serving handle stops; the attached one serves, on the same address, with the writes.
    let h = first.handle.take().unwrap();
    first.rt.block_on(h.shutdown());
    let addr = infra.trim_start_matches("http://").to_string();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) && std::net::TcpStream::connect(&addr).is_err()
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    first.rt.block_on(async {
        let c = client(&work, "infra", &infra).await;
        let secrets: Api<Secret> = Api::namespaced(c, "default");
        let kept = secrets.get("kept").await.unwrap();
        assert_eq!(kept.data.unwrap()["owner"].0, b"alice");
    });
    first.rt.block_on(second.shutdown());
}

#[test]
fn a_run_with_another_state_dir_uses_the_served_lab() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("shared-lab");
    let (s1, s2) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let server = serve(&s1, &home);
    let eps = endpoints(&home);
    // Bob's run attaches: it starts no servers of its own, and its steps reach Alice's.
    let run = team(&["run", "--phase", "foundation", "-v"], &s2, &home);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}{}",
        text(&run.stdout),
        text(&run.stderr)
    );
    assert!(
        text(&run.stderr).contains(&format!("is served by process {}", server.id())),
        "{}",
        text(&run.stderr)
    );
    assert_eq!(endpoints(&home), eps);
    // No lab of its own: `<state dir>/lab` is the shared one (the plan's checkout names it so).
    assert_eq!(
        std::fs::canonicalize(s2.join("lab")).unwrap(),
        std::fs::canonicalize(&home).unwrap()
    );
    // Bob's kubeconfig (written by his run's talosctl) names the shared servers.
    let kc = std::fs::read_to_string(s2.join("kubeconfig")).unwrap();
    for url in eps.as_object().unwrap().values() {
        assert!(kc.contains(url.as_str().unwrap()), "{kc}");
    }
    // What Bob's run did is what Alice's view of the lab shows.
    let status = team(&["lab", "status", "--output", "json"], &s1, &home);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    for c in v["clusters"].as_array().unwrap() {
        assert_eq!(c["bootstrapped"], true, "{c}");
        for n in c["nodes"].as_array().unwrap() {
            assert_eq!(n["kubernetes"], "Ready", "{n}");
        }
    }
    stop(server);
}

#[test]
fn a_patch_naming_a_stale_resource_version_is_a_conflict() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let server = apiserver::serve(ServeOptions {
            cluster: "infra".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let c = client(tmp.path(), "infra", &server.url()).await;
        let leases: Api<Lease> = Api::namespaced(c, "default");
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "bootstrap-lock"},
            "spec": {"holderIdentity": "alice", "leaseDurationSeconds": 30}
        }))
        .unwrap();
        let created = leases.create(&PostParams::default(), &lease).await.unwrap();
        let rv = created.metadata.resource_version.clone().unwrap();
        let pp = kube::api::PatchParams::default();
        // With the current resourceVersion it applies; the same again is stale.
        let patch = serde_json::json!({"metadata": {"resourceVersion": rv}, "spec": {"holderIdentity": "bob"}});
        let got = leases
            .patch("bootstrap-lock", &pp, &kube::api::Patch::Merge(&patch))
            .await
            .unwrap();
        assert_eq!(got.spec.unwrap().holder_identity.as_deref(), Some("bob"));
        let stale = api_error(
            leases
                .patch("bootstrap-lock", &pp, &kube::api::Patch::Merge(&patch))
                .await,
        );
        assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
        // Without one, it applies to whatever is stored.
        let free = serde_json::json!({"spec": {"holderIdentity": "carol"}});
        leases
            .patch("bootstrap-lock", &pp, &kube::api::Patch::Merge(&free))
            .await
            .unwrap();
        server.shutdown().await;
    });
}
