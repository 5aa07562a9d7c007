//! moto's server: a real AWS Secrets Manager (and STS) of its own on a free loopback port,
//! started per test (its state is then the test's alone) and stopped by pid when dropped.
//! `tools/build moto` installs it once into a cached virtualenv.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use super::repo_root;

/// The `moto_server` script, installing moto on first use.
fn moto_server() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new(repo_root().join("tools/build"))
            .arg("moto")
            .stderr(Stdio::inherit())
            .output()
            .expect("tools/build runs");
        assert!(out.status.success(), "tools/build moto failed");
        let bin = String::from_utf8(out.stdout).expect("utf-8 output");
        PathBuf::from(bin.lines().last().expect("bin path on the last line").trim()).join("moto_server")
    })
}

/// A running moto server; killed (by its pid) when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it answers.
    pub fn start() -> Moto {
        Moto::start_on(free_port())
    }

    fn start_on(port: u16) -> Moto {
        let server = moto_server();
        let dir = repo_root().join("target/moto-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join(format!("moto-{port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        // moto keeps its request recording in a file: one per server, beside its log.
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(&dir)
            .env("MOTO_RECORDER_FILEPATH", dir.join(format!("moto-{port}.recording")))
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let moto = Moto { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while moto
            .http("GET", "/moto-api/", "")
            .is_none_or(|(status, _)| status != 200)
        {
            assert!(
                Instant::now() < deadline,
                "moto did not answer within 60 s (log: {:?})",
                moto.log
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// The endpoint URL a store's `endpoint` field takes.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts recording every request moto serves (see [`Moto::recorded`]).
    pub fn start_recording(&self) {
        self.http("POST", "/moto-api/recorder/reset-recording", "");
        let (status, _) = self
            .http("POST", "/moto-api/recorder/start-recording", "")
            .expect("moto answers");
        assert_eq!(status, 200, "recording started");
    }

    /// The AWS calls moto served since [`Moto::start_recording`], in order: moto's own
    /// request log.
    pub fn recorded(&self) -> Vec<Recorded> {
        let (_, body) = self
            .http("GET", "/moto-api/recorder/download-recording", "")
            .expect("moto answers");
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| !r["url"].as_str().unwrap_or_default().contains("/moto-api/"))
            .map(|r| {
                let body = body_of(&r);
                let key_id = r["headers"]["Authorization"]
                    .as_str()
                    .and_then(|a| a.split("Credential=").nth(1))
                    .and_then(|c| c.split('/').next())
                    .map(str::to_string);
                Recorded {
                    operation: operation(&r, &body),
                    key_id,
                    body,
                }
            })
            .collect()
    }

    /// How many of each operation moto served since [`Moto::start_recording`].
    pub fn counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for r in self.recorded() {
            *counts.entry(r.operation).or_insert(0) += 1;
        }
        counts
    }

    /// Kills the server (its state is lost); `restart` starts a fresh one on the same port.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.stop();
        let fresh = Moto::start_on(self.port);
        // Hand the new process over; the old handle is already reaped.
        *self = fresh;
    }

    /// A minimal HTTP/1.0 request to moto's own API: (status, body).
    fn http(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    }
}

/// One request moto served.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `ListSecrets`, `GetSecretValue`, ... or an STS action such as `AssumeRole`.
    pub operation: String,
    /// The access key id the request was signed with (None: unsigned).
    pub key_id: Option<String>,
    /// The request body.
    pub body: String,
}

/// A recorded request's body (moto base64-encodes it).
fn body_of(request: &serde_json::Value) -> String {
    let body = request["body"].as_str().unwrap_or_default();
    if request["body_encoded"].as_bool() == Some(true) {
        data_encoding::BASE64
            .decode(body.as_bytes())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    } else {
        body.to_string()
    }
}

/// The operation of one recorded request.
fn operation(request: &serde_json::Value, body: &str) -> String {
    if let Some(target) = request["headers"]["X-Amz-Target"].as_str() {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    // Query-protocol calls (STS) carry `Action=...` in a form body.
    body.split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .unwrap_or("unknown")
        .to_string()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
