//! scripts/cluster on bad input: clear messages, non-zero exits within seconds, no hangs.
//! Each test uses a state folder of its own, so it never touches the shared control plane.

mod support;

use std::{
    net::TcpListener,
    process::{Command, Output},
    time::{Duration, Instant},
};

fn cluster(state: &std::path::Path, args: &[&str], env: &[(&str, String)]) -> (Output, Duration) {
    let start = Instant::now();
    let mut cmd = Command::new(support::repo_root().join("scripts/cluster"));
    cmd.args(args).env("SECRETREF_CLUSTER_DIR", state);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("scripts/cluster runs");
    (out, start.elapsed())
}

/// Stops a test's own control plane however the test ends.
struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = cluster(&self.0, &["down"], &[]);
    }
}

fn temp_state(name: &str) -> std::path::PathBuf {
    let dir = support::repo_root()
        .join("target/cluster-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn down_with_nothing_running_is_a_noop() {
    let state = temp_state("noop");
    let (out, _) = cluster(&state, &["down"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was running"));
}

#[test]
fn up_with_a_taken_port_fails_fast_and_names_the_port() {
    let _ = support::tools_bin(); // binaries are built by the shared harness or scripts/test
    let state = temp_state("taken");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (out, took) = cluster(&state, &["up"], &[("SECRETREF_APISERVER_PORT", port.to_string())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("port {port} is already in use")), "{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let (out, _) = cluster(&state, &["down"], &[]);
    assert!(out.status.success());
}

#[test]
fn up_replaces_stale_pid_files_and_down_stops_it() {
    let state = temp_state("stale");
    std::fs::create_dir_all(&state).expect("state dir");
    for name in ["etcd", "kube-apiserver", "kube-controller-manager"] {
        // A pid that is not running (pid_max is far below this on Linux).
        std::fs::write(state.join(format!("{name}.pid")), "4194304999").expect("pid file");
    }
    let (out, took) = cluster(&state, &["up"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("removing stale state"), "{stderr}");
    assert!(took < Duration::from_secs(90), "took {took:?}");
    let kubeconfig = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("kubeconfig")
        .to_string();
    assert!(kubeconfig.ends_with("kubeconfig"));

    let (status, _) = cluster(&state, &["status"], &[]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("kube-apiserver: ready"));

    let (out, _) = cluster(&state, &["down"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stopped kube-apiserver"), "{stderr}");
    assert!(!state.exists(), "down removes its state");
}

/// `secretref run` on first contact, against a control plane of its own: each thing a new
/// user may lack (an API server, the CRDs, the operator namespace, permissions) stops it with
/// one line naming the fix; once it is up it says what it serves and how to check it.
#[test]
fn first_contact_errors_name_the_fix() {
    let state = temp_state("first-contact");
    let _down = Down(state.clone());
    let (out, _) = cluster(&state, &["up"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kubeconfig = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("kubeconfig")
        .to_string();
    let kubectl = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(support::tools_bin().join("kubectl"));
        cmd.arg("--kubeconfig").arg(&kubeconfig).args(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write");
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("kubectl output");
        assert!(out.status.success(), "kubectl {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Runs `secretref run` with `config`; returns (exit ok, stdout, stderr), stopping it after
    // `wait` if it is still running (that is, it started).
    let run = |config: &str, wait: Duration| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_secretref"))
            .args(["run", "--metrics-bind-address", "127.0.0.1:0"])
            .env("KUBECONFIG", config)
            .env_remove("POD_NAMESPACE")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("secretref runs");
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && child.try_wait().expect("wait").is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        if child.try_wait().expect("wait").is_none() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
        let out = child.wait_with_output().expect("output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let fails_with = |config: &str, needles: &[&str]| {
        let (ok, _, stderr) = run(config, Duration::from_secs(30));
        assert!(!ok, "secretref run started: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line, not a dump: {stderr}");
        for needle in needles {
            assert!(lines[0].contains(needle), "lacks {needle:?}: {}", lines[0]);
        }
    };

    let dead = state.join("dead.kubeconfig");
    let text = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    let port = text
        .split("https://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(['\n', '"']).next())
        .expect("port");
    std::fs::write(&dead, text.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:1")).expect("write");
    fails_with(
        dead.to_str().expect("utf-8"),
        &["cannot reach the Kubernetes API server", "KUBECONFIG"],
    );
    fails_with(
        &kubeconfig,
        &["CRDs are not installed", "secretref crds | kubectl apply"],
    );

    let crds = secretref::api::crds_yaml().expect("crds");
    kubectl(&["apply", "--server-side", "-f", "-"], Some(&crds));
    kubectl(
        &[
            "wait",
            "--for",
            "condition=established",
            "--timeout=60s",
            "crd/secretrefs.secretref.dev",
        ],
        None,
    );
    fails_with(
        &kubeconfig,
        &[
            "namespace \"secretref-system\" does not exist",
            "create it",
            "--operator-namespace",
        ],
    );

    kubectl(&["create", "namespace", "secretref-system"], None);
    kubectl(&["create", "serviceaccount", "nobody", "-n", "secretref-system"], None);
    let token = kubectl(&["create", "token", "nobody", "-n", "secretref-system"], None);
    let nobody = state.join("nobody.kubeconfig");
    let (head, _) = text.split_once("users:").expect("users");
    std::fs::write(
        &nobody,
        format!("{head}users:\n- name: admin\n  user:\n    token: {}\ncontexts:\n- name: local\n  context: {{ cluster: local, user: admin }}\ncurrent-context: local\n", token.trim()),
    )
    .expect("write");
    fails_with(nobody.to_str().expect("utf-8"), &["may not list SecretRefs", "RBAC"]);

    let (_, stdout, stderr) = run(&kubeconfig, Duration::from_secs(15));
    assert!(
        stdout.contains("secretref is up") && stdout.contains("secretref status -A"),
        "{stdout}{stderr}"
    );
}

#[test]
fn kill_and_start_refuse_what_they_cannot_do() {
    let state = temp_state("killstart");
    std::fs::create_dir_all(&state).expect("state dir");
    for (args, says) in [
        (&["kill", "kube-proxy"][..], "unknown component 'kube-proxy'"),
        (&["kill", "etcd"][..], "etcd is not running"),
        (
            &["start", "kube-apiserver"][..],
            "kube-apiserver was never started here",
        ),
    ] {
        let (out, took) = cluster(&state, args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
    }
    let _ = std::fs::remove_dir_all(&state);
}
