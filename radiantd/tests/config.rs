//! Bad configurations end with one line naming the file and the key, and exit code 2.

use std::path::Path;
use std::process::Command;

fn radiantd(config: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_radiantd")).arg("--config").arg(config).output().expect("run radiantd");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn check_refused(body: &str, key: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("radiantd.toml");
    std::fs::write(&path, body.replace("{dir}", &dir.path().join("data").display().to_string())).unwrap();
    let (code, err) = radiantd(&path);
    assert_eq!(code, Some(2), "exit code for {key}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line for {key}: {err}");
    assert!(err.contains(&path.display().to_string()), "names the file: {err}");
    assert!(err.contains(key), "names `{key}`: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unknown_key() {
    check_refused("listen = \"127.0.0.1:7400\"\ndata_dir = \"{dir}\"\nlisten_adress = \"x\"\n", "listen_adress");
}

#[test]
fn unparsable_address() {
    check_refused("listen = \"127.0.0.1:notaport\"\ndata_dir = \"{dir}\"\n", "listen");
    check_refused("listen = \"127.0.0.1:7400\"\nadvertise = \"no-port\"\ndata_dir = \"{dir}\"\n", "advertise");
}

#[test]
fn missing_data_dir() {
    check_refused("listen = \"127.0.0.1:7400\"\n", "data_dir");
}

#[test]
fn unwritable_data_dir() {
    // A path below a regular file can be neither created nor written, even by root.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    check_refused(&format!("listen = \"127.0.0.1:7400\"\ndata_dir = \"{}/data\"\n", file.display()), "data_dir");
}

#[test]
fn wrong_type_and_bad_timing() {
    check_refused("listen = 7400\ndata_dir = \"{dir}\"\n", "listen");
    check_refused(
        "listen = \"127.0.0.1:7400\"\ndata_dir = \"{dir}\"\nheartbeat_ms = 200\nelection_timeout_ms = 300\n",
        "election_timeout_ms",
    );
}

#[test]
fn missing_file() {
    let (code, err) = radiantd(Path::new("/nonexistent/radiantd.toml"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/radiantd.toml"), "{err}");
}

#[test]
fn check_config_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("radiantd.toml");
    std::fs::write(&path, format!("listen = \"127.0.0.1:7400\"\ndata_dir = \"{}\"\n", dir.path().display())).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_radiantd")).arg("--check-config").arg("--config").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_second_radiantd_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> =
        (0..2).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).collect();
    let write = |name: &str, port: u16| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!("listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n", dir.path().join("data").display()),
        )
        .unwrap();
        p
    };
    let first = write("a.toml", ports[0]);
    let second = write("b.toml", ports[1]);
    let log_path = dir.path().join("first.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut running =
        Command::new(env!("CARGO_BIN_EXE_radiantd")).arg("--config").arg(&first).stderr(log).spawn().unwrap();
    // The first holds the database once it says it is ready.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&log_path).unwrap_or_default().contains("radiantd ready") {
        assert!(std::time::Instant::now() < end, "first radiantd never became ready");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut second_run = Command::new(env!("CARGO_BIN_EXE_radiantd"))
        .arg("--config")
        .arg(&second)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(st) = second_run.try_wait().unwrap() {
            break Some(st);
        }
        if std::time::Instant::now() > end {
            let _ = second_run.kill();
            let _ = second_run.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = second_run.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let outcome = (status.and_then(|s| s.code()) == Some(3)).then_some(stderr);
    let _ = running.kill();
    let _ = running.wait();
    let err = outcome.expect("second radiantd refused with exit code 3");
    assert!(err.contains("in use by another radiantd"), "{err}");
}
