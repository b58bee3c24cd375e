//! `sluice config print`: flags > SLUICE_* environment > TOML file > defaults,
//! and bad keys or values are errors that name the key.

use std::process::Command;

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE_") {
            c.env_remove(k);
        }
    }
    c
}

fn value(toml: &str, key: &str) -> String {
    toml.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("{key} missing in:\n{toml}"))
        .to_string()
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `sluice serve` on ephemeral ports with `extra` arguments and environment;
/// returns the child and its HTTPS base URL, read from the banner.
fn serve(extra: &[&str], env: &[(&str, &std::path::Path)]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut cmd = sluice();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--media-port",
        "0",
        "--shards",
        "1",
    ])
    .args(extra)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .strip_prefix("sluice listening on ")
        .unwrap_or_else(|| panic!("banner: {first}"))
        .to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{first}");
    // Keep reading: the server prints more after the first line, and a closed
    // pipe must not be what the test observes.
    std::thread::spawn(move || lines.for_each(drop));
    (child, url)
}

/// Wait up to `limit` for `child` to exit successfully.
fn exits_cleanly(child: &mut std::process::Child, limit: std::time::Duration, what: &str) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "exit status {s}");
            return;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not exit after {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn flags_beat_environment_beat_file_beat_defaults() {
    let file = temp_file(
        "p.toml",
        "shards = 3\nmedia_port = 41000\nmax_sessions = 7\nio = \"std\"\n",
    );
    let out = sluice()
        .args(["config", "print", "--config"])
        .arg(&file)
        .args(["--shards", "5"])
        .env("SLUICE_SHARDS", "4")
        .env("SLUICE_MEDIA_PORT", "42000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = String::from_utf8(out.stdout).unwrap();
    assert_eq!(value(&toml, "shards"), "5", "flag wins over env and file");
    assert_eq!(value(&toml, "media_port"), "42000", "env wins over file");
    assert_eq!(value(&toml, "max_sessions"), "7", "file wins over default");
    assert_eq!(value(&toml, "io"), "\"std\"");
    assert_eq!(value(&toml, "listen"), "\"127.0.0.1:8443\"", "default");
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let file = temp_file("bad.toml", "shardz = 2\n");
    let out = sluice()
        .args(["config", "print", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shardz"));

    let out = sluice()
        .args(["config", "print", "--io", "epoll"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("io") && err.contains("auto, uring, mmsg, std"),
        "{err}"
    );

    let out = sluice()
        .args(["config", "print"])
        .env("SLUICE_SHARDS", "many")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shards"));
}

#[test]
fn token_command_mints_a_verifiable_token() {
    let out = sluice()
        .args(["token", "--secret", "k", "--stream", "cam", "--publish"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = sluice::auth::TokenKey::new(b"k")
        .verify(token.trim(), sluice::auth::unix_now())
        .unwrap();
    assert!(claims.publish && !claims.subscribe);
    assert_eq!(claims.stream.as_deref(), Some("cam"));
}

#[test]
fn token_command_refuses_a_token_with_neither_stream_nor_room() {
    let out = sluice()
        .args(["token", "--secret", "k", "--publish"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--stream") && err.contains("--room"), "{err}");
    let out = sluice()
        .args(["token", "--secret", "k", "--room", "*", "--subscribe"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = sluice::auth::TokenKey::new(b"k")
        .verify(token.trim(), sluice::auth::unix_now())
        .unwrap();
    assert_eq!(claims.room.as_deref(), Some("*"));
    assert_eq!(claims.stream, None);
}

#[test]
fn sigterm_with_no_sessions_exits_cleanly_and_systemd_hears_ready_then_stopping() {
    let notify_path = temp_file("notify.sock", "");
    std::fs::remove_file(&notify_path).unwrap();
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    let recv = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let (mut child, _) = serve(&[], &[("NOTIFY_SOCKET", &notify_path)]);
    let ready = recv();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", child.id())),
        "{ready}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopping = recv();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    exits_cleanly(&mut child, std::time::Duration::from_secs(15), "SIGTERM");
}

/// A supervisor may close stdout: the banner's failed write must not stop the
/// server before it tells systemd it is ready (this raced with the first test
/// above when it dropped the pipe after the first line).
#[test]
fn serving_with_stdout_closed_still_reports_ready_and_drains() {
    let notify_path = temp_file("notify-closed.sock", "");
    std::fs::remove_file(&notify_path).unwrap();
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    let mut child = sluice()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--media-port",
            "0",
            "--shards",
            "1",
        ])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("READY with stdout closed");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let n = notify.recv(&mut buf).expect("STOPPING");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    exits_cleanly(&mut child, std::time::Duration::from_secs(15), "SIGTERM");
}

#[test]
fn admin_drain_makes_the_serving_process_exit() {
    let (mut child, url) = serve(&["--drain-timeout-secs", "60"], &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = rt.block_on(async {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        // Open dev mode: the admin API needs no token.
        let r = http
            .post(format!("{url}/admin/drain"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.unwrap()
    });
    assert!(body.contains("\"draining\":true"), "{body}");
    // No sessions: the process exits long before the 60 s drain deadline.
    exits_cleanly(
        &mut child,
        std::time::Duration::from_secs(20),
        "POST /admin/drain",
    );
}

#[test]
fn announce_ip_takes_a_comma_list_from_the_flag_or_the_environment() {
    let print = |args: &[&str], env: Option<&str>| {
        let mut c = sluice();
        c.args(["config", "print"]).args(args);
        if let Some(v) = env {
            c.env("SLUICE_ANNOUNCE_IP", v);
        }
        c.output().unwrap()
    };
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let flag = ok(print(
        &[
            "--announce-ip",
            "203.0.113.7,10.0.0.5,2001:db8::7",
            "--media-bind",
            "::",
        ],
        None,
    ));
    assert!(
        flag.contains(
            "announce_ip = [\n    \"203.0.113.7\",\n    \"10.0.0.5\",\n    \"2001:db8::7\",\n]"
        ),
        "{flag}"
    );
    let env = ok(print(&[], Some("203.0.113.7, 10.0.0.5")));
    assert!(
        env.contains("\"203.0.113.7\",\n    \"10.0.0.5\",\n]"),
        "spaces after commas are fine: {env}"
    );
    // One address prints as before, and the flag beats the environment.
    let one = ok(print(&["--announce-ip", "192.0.2.1"], Some("203.0.113.7")));
    assert_eq!(value(&one, "announce_ip"), "\"192.0.2.1\"");

    for (arg, want) in [
        ("203.0.113.7,203.0.113.7", "203.0.113.7 is listed twice"),
        (
            "203.0.113.7,0.0.0.0",
            "0.0.0.0 cannot be put in ICE candidates",
        ),
        (
            "203.0.113.7,example.com",
            "\"example.com\" is not an IP address",
        ),
    ] {
        let out = print(&["--announce-ip", arg], None);
        assert!(!out.status.success(), "{arg}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("announce") && err.contains(want),
            "{arg}: {err}"
        );
    }
}

#[test]
fn media_tcp_port_follows_media_port_until_set_and_0_turns_it_off() {
    let print = |args: &[&str]| {
        let out = sluice()
            .args(["config", "print"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let follows = print(&["--media-port", "41000"]);
    assert_eq!(value(&follows, "media_tcp_port"), "41000", "{follows}");
    let own = sluice()
        .args(["config", "print", "--media-port", "41000"])
        .env("SLUICE_MEDIA_TCP_PORT", "443")
        .output()
        .unwrap();
    assert_eq!(
        value(&String::from_utf8(own.stdout).unwrap(), "media_tcp_port"),
        "443"
    );
    let off = print(&["--media-tcp-port", "0"]);
    assert_eq!(value(&off, "media_tcp_port"), "0");
    let caps = print(&[
        "--tcp-max-conns-per-shard",
        "10",
        "--tcp-max-conns-per-ip",
        "0",
        "--tcp-queue-budget-bytes",
        "0",
    ]);
    assert_eq!(value(&caps, "tcp_max_conns_per_shard"), "10");
    assert_eq!(value(&caps, "tcp_max_conns_per_ip"), "0");
    assert_eq!(value(&caps, "tcp_queue_budget_bytes"), "0");
}
