//! The operator as users run it: the real `secretref run` binary, cluster-wide, started and
//! SIGKILLed by pid. Every run appends its JSON logs to one file, scanned at the end.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    process::{Child, Command},
};

use crate::{cluster::ChaosCluster, support::eventually};

pub struct OperatorProcess {
    child: Option<Child>,
    kubeconfig: PathBuf,
    pub log: PathBuf,
    metrics: Option<String>,
    /// How many times it was started.
    pub starts: u32,
}

impl OperatorProcess {
    /// Starts the operator against `cluster` and waits until it serves /metrics.
    pub async fn start(cluster: &ChaosCluster) -> OperatorProcess {
        let log = cluster.state.join("operator.log");
        let mut operator = OperatorProcess {
            child: None,
            kubeconfig: cluster.kubeconfig.clone(),
            log,
            metrics: None,
            starts: 0,
        };
        operator.spawn().await;
        operator
    }

    async fn spawn(&mut self) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("operator log file");
        let before = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let child = Command::new(env!("CARGO_BIN_EXE_secretref"))
            .args([
                "run",
                "--leader-elect=false",
                "--operator-namespace",
                "secretref-system",
                "--metrics-bind-address",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            // Values must not reach logs at any level: log as much as is practical.
            .env(
                "RUST_LOG",
                "info,secretref=trace,kube_runtime::watcher=debug,kube_runtime::controller=debug",
            )
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .expect("the operator starts");
        self.child = Some(child);
        self.starts += 1;
        // Its admin address is in its first log lines.
        let log = self.log.clone();
        let address = eventually(Duration::from_secs(60), "the operator's admin endpoint", || {
            let log = log.clone();
            async move { admin_address(&log, before) }
        })
        .await;
        self.metrics = Some(address);
        assert!(self.alive(), "the operator exited during start-up: {}", self.tail());
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Whether the process still runs (it never exits on its own in these scenarios).
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, as the OOM killer or a node failure would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.metrics = None;
    }

    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// SIGSTOP / SIGCONT: freezes the process (its connections stay open but unread).
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// The resident set size in KiB (VmRSS).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The /metrics text of the running operator.
    pub async fn metrics(&self) -> String {
        let address = self.metrics.as_deref().expect("a running operator");
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("admin endpoint");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: operator\r\n\r\n")
            .await
            .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("response");
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    }

    /// How many SecretRef reconciles this run has finished (`secretref_reconciles_total`).
    pub async fn secretref_reconciles(&self) -> u64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("secretref_reconciles_total{") && l.contains("kind=\"SecretRef\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tail(&self) -> String {
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// The admin address a run logged after byte `from` of the log.
fn admin_address(log: &Path, from: u64) -> Option<String> {
    let text = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(text.get(from as usize..)?).into_owned();
    text.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["message"].as_str()? == "serving /livez, /readyz and /metrics")
            .then(|| v["addr"].as_str().map(String::from))?
    })
}
