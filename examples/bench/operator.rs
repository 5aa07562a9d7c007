//! An operator process under measurement: its peak RSS, its metrics, and a clean stop.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::Stdio,
    time::Duration,
};

use anyhow::Context as _;

pub struct Process {
    child: tokio::process::Child,
    pub metrics_port: u16,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl Process {
    pub fn spawn(
        program: &Path,
        args: &[String],
        metrics_port: u16,
        log: &Path,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = tokio::process::Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Process { child, metrics_port })
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// CPU seconds (user + system) it has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.child.id().map_or(0.0, cpu_seconds_of)
    }

    /// The text of its /metrics.
    pub fn metrics(&self) -> String {
        let get = || -> Option<String> {
            let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            write!(
                s,
                "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).ok()?;
            Some(body)
        };
        get().unwrap_or_default()
    }

    /// Sum of every sample of metric `name` whose labels contain all of `labels`.
    pub fn metric_sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| {
                l.starts_with(name)
                    && (l.as_bytes().get(name.len()) == Some(&b'{') || l.as_bytes().get(name.len()) == Some(&b' '))
            })
            .filter(|l| labels.iter().all(|lbl| l.contains(lbl)))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// CPU seconds (user + system) used so far by process `pid` (clock ticks of 1/100 s).
pub fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used so far by the control plane's processes (kube-apiserver, etcd), read
/// from the pid files in `SECRETREF_CLUSTER_DIR`.
pub fn control_plane_cpu() -> (f64, f64) {
    let dir = std::env::var("SECRETREF_CLUSTER_DIR").unwrap_or_default();
    let of = |name: &str| {
        std::fs::read_to_string(format!("{dir}/{name}.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .map_or(0.0, cpu_seconds_of)
    };
    (of("kube-apiserver"), of("etcd"))
}
