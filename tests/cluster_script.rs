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
