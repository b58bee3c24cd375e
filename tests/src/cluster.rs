//! What cluster tests start themselves: a private `redis-server` on 127.0.0.1 with a
//! free port and no persistence, and `sluice serve` processes that can be killed with -9.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on `ip` (bound and released; good enough for a test's own server).
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `redis-server` of this test's own, on 127.0.0.1.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Start one on a free port; panics (loudly) when redis-server is not installed.
    pub fn start() -> RedisServer {
        let mut r = RedisServer {
            port: free_port("127.0.0.1"),
            child: None,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port, empty, and wait until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): install Debian's redis-server (tests/run does)"
                )
            });
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not listen on port {} within 10 s",
            self.port
        );
    }

    /// Kill it (SIGKILL): the registry becomes unreachable and loses every key.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The arguments that make a `sluice serve` process node `id` of `redis`'s cluster
/// (lease 2 s, per-address limits off).
pub fn node_args(redis: &RedisServer, id: &str, secret: &str) -> Vec<String> {
    [
        "--cluster-redis-url",
        &redis.url(),
        "--cluster-node-id",
        id,
        "--cluster-secret",
        secret,
        "--cluster-lease-ms",
        "2000",
        "--signal-rate",
        "0",
        "--max-sessions-per-ip",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The `sluice` binary next to this test's executable (built by `cargo test --workspace`).
pub fn sluice_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("sluice"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --release -p sluice, or cargo test --workspace)",
        bin.display()
    );
    bin
}

/// A `sluice serve` process.
pub struct Node {
    /// Its HTTPS base URL, from the banner.
    pub url: String,
    /// Where its log goes.
    pub log: PathBuf,
    child: Child,
}

impl Node {
    /// Start `sluice serve` on `ip` (HTTPS and media) with one shard and `args`; returns
    /// once it has printed its banner.
    pub fn start(ip: &str, args: &[&str]) -> Node {
        let log = std::env::temp_dir().join(format!(
            "sluice-node-{}-{ip}-{}.log",
            std::process::id(),
            free_port("127.0.0.1")
        ));
        let mut child = Command::new(sluice_bin())
            .arg("serve")
            .args(["--listen", &format!("{ip}:0"), "--announce-ip", ip])
            .args(["--media-port", "0", "--shards", "1", "--io", "std"])
            .args(args)
            .env_remove("SLUICE_CONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("sluice serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("banner");
        let url = line
            .trim()
            .strip_prefix("sluice listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "no banner from sluice on {ip}: {line:?}; log {}",
                    log.display()
                )
            })
            .to_string();
        Node { url, log, child }
    }

    /// kill -9: no claim is released, no record removed.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
