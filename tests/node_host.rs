//! `scripts/cluster up --node` and `down` leave the host exactly as it was: the processes
//! (containers and shims included), mounts, cgroups in every hierarchy, network links and
//! kernel settings, also when the node crashed and a second `up --node` cleaned up after it.
//!
//! A machine runs one node at a time, and the suite's shared cluster has one, so these tests
//! are ignored in the main run; scripts/test runs them after stopping the shared cluster:
//! `cargo test --test node_host -- --ignored`.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// What the node may change on the host, captured for comparison.
#[derive(Debug, PartialEq, Eq)]
struct Host {
    processes: BTreeSet<String>,
    mounts: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    links: BTreeSet<String>,
    addresses: BTreeSet<String>,
    sysctls: BTreeMap<String, String>,
    paths: BTreeSet<String>,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Processes that belong to a node: its binaries, its containers (by cgroup) and anything
/// naming the node's folders.
fn node_processes() -> BTreeSet<String> {
    const BINARIES: [&str; 6] = [
        "containerd",
        "containerd-shim-runc-v2",
        "kubelet",
        "kube-scheduler",
        "runc",
        "crun",
    ];
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let cmdline = read(&entry.path().join("cmdline")).replace('\0', " ");
        let cgroups = read(&entry.path().join("cgroup"));
        let exe = std::fs::read_link(entry.path().join("exe")).unwrap_or_default();
        let exe_name = exe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if BINARIES.contains(&exe_name.as_str())
            || cgroups.contains("secretref-node")
            || cmdline.contains("secretref-node")
        {
            found.insert(format!("{pid} {cmdline}"));
        }
    }
    found
}

/// Sysctls that change on their own (counters, random values) are left out.
fn sysctls() -> BTreeMap<String, String> {
    const VOLATILE: [&str; 12] = [
        "fs.dentry-state",
        "fs.file-nr",
        "fs.inode-nr",
        "fs.inode-state",
        "fs.aio-nr",
        "kernel.ns_last_pid",
        "kernel.random.",
        "kernel.pty.nr",
        "net.netfilter.nf_conntrack_count",
        "fs.quota.",
        "kernel.sched_domain",
        "vm.stat",
    ];
    output("sysctl", &["-a"])
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .filter(|(k, _)| !VOLATILE.iter().any(|v| k.starts_with(v)))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn snapshot() -> Host {
    let mut cgroups = BTreeSet::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let path = entry.path();
                // The sandbox runs every shell command in a cgroup of its own under process_api.
                if !path.to_string_lossy().contains("/process_api/") {
                    cgroups.insert(path.display().to_string());
                    stack.push(path);
                }
            }
        }
    }
    let paths = [
        "/var/lib/kubelet",
        "/var/log/containers",
        "/run/containerd",
        "/etc/cni",
        "/opt/cni",
    ]
    .into_iter()
    .filter(|p| Path::new(p).exists())
    .map(String::from)
    .chain(
        std::fs::read_dir("/tmp")
            .expect("/tmp")
            .flatten()
            .map(|e| e.path().display().to_string())
            .filter(|p| p.contains("secretref-node")),
    )
    .collect();
    Host {
        processes: node_processes(),
        mounts: read(Path::new("/proc/self/mountinfo"))
            .lines()
            .map(|l| l.split_whitespace().skip(3).collect::<Vec<_>>().join(" "))
            .collect(),
        cgroups,
        links: output("ip", &["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
            .collect(),
        addresses: output("ip", &["-o", "addr", "show"])
            .lines()
            .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
            .collect(),
        sysctls: sysctls(),
        paths,
    }
}

fn assert_same(before: &Host, after: &Host) {
    assert_eq!(before.processes, after.processes, "processes");
    assert_eq!(before.mounts, after.mounts, "mounts");
    assert_eq!(before.cgroups, after.cgroups, "cgroups");
    assert_eq!(before.links, after.links, "network links");
    assert_eq!(before.addresses, after.addresses, "addresses");
    let changed: Vec<_> = after
        .sysctls
        .iter()
        .filter(|(k, v)| before.sysctls.get(*k) != Some(v))
        .collect();
    assert!(changed.is_empty(), "sysctls changed: {changed:?}");
    assert_eq!(before.paths, after.paths, "files and folders");
}

struct Cluster {
    state: PathBuf,
}

impl Cluster {
    fn new(name: &str) -> Cluster {
        let state = support::repo_root()
            .join("target/node-host-tests")
            .join(format!("{name}-{}", std::process::id()));
        Cluster { state }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(support::repo_root().join("scripts/cluster"))
            .args(args)
            .env("SECRETREF_CLUSTER_DIR", &self.state)
            .output()
            .expect("scripts/cluster runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "scripts/cluster {args:?}: {stderr}");
        stderr
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = Command::new(support::tools_bin().join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.state.join("kubeconfig"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl");
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(stdin.unwrap_or_default().as_bytes()).expect("stdin");
        drop(pipe);
        let out = child.wait_with_output().expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A pod with a Secret volume, so that the node has a container, a shim, a network
    /// namespace, a veth and tmpfs mounts to clean up.
    fn run_pod(&self) {
        self.kubectl(&["create", "secret", "generic", "s", "--from-literal=K=v"], None);
        let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{
            "containers":[{"name":"c","image":"localhost/pause:busybox","imagePullPolicy":"Never",
              "volumeMounts":[{"name":"s","mountPath":"/s"}]}],
            "volumes":[{"name":"s","secret":{"secretName":"s"}}]}}"#;
        self.kubectl(&["apply", "-f", "-"], Some(pod));
        self.kubectl(&["wait", "--for=condition=Ready", "pod/p", "--timeout=120s"], None);
    }

    /// Kills every process the state folder names, as a crash would (containers and shims,
    /// which no pid file names, stay behind).
    fn crash(&self) {
        for entry in std::fs::read_dir(&self.state).expect("state").flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "pid")
                && let Ok(pid) = read(&path).trim().parse::<u32>()
            {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(support::repo_root().join("scripts/cluster"))
            .arg("down")
            .env("SECRETREF_CLUSTER_DIR", &self.state)
            .output();
    }
}

#[test]
#[ignore = "needs the machine's one node: scripts/test runs it after stopping the shared cluster"]
fn up_node_and_down_leave_the_host_as_it_was_even_after_a_crash() {
    let before = snapshot();
    assert!(
        before.processes.is_empty(),
        "a node already runs here: {:?}",
        before.processes
    );
    let cluster = Cluster::new("clean");

    let start = Instant::now();
    cluster.run(&["up", "--node"]);
    eprintln!("up --node took {:.1} s", start.elapsed().as_secs_f64());
    cluster.run_pod();
    let during = snapshot();
    assert!(!during.processes.is_empty() && during.links.contains("secretref0"));
    let start = Instant::now();
    cluster.run(&["down"]);
    eprintln!("down took {:.1} s", start.elapsed().as_secs_f64());
    assert_same(&before, &snapshot());

    // A crash leaves containers, shims, the bridge, cgroups and changed sysctls behind; the
    // next `up --node` removes them before it starts.
    cluster.run(&["up", "--node"]);
    cluster.run_pod();
    cluster.crash();
    assert!(!node_processes().is_empty(), "the pod's processes outlive the crash");
    let stderr = cluster.run(&["up", "--node"]);
    assert!(stderr.contains("removing stale state"), "{stderr}");
    cluster.run_pod();
    cluster.run(&["down"]);
    assert_same(&before, &snapshot());
}
