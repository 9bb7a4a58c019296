//! Bad arguments and unreachable nodes: one-line errors with distinct exit codes.

use std::process::Command;

fn ctl(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_radiantctl"))
        .args(args)
        .env_remove("RADIANT_ENDPOINT")
        .output()
        .expect("run radiantctl");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

#[test]
fn bad_endpoint_is_a_usage_error() {
    let (code, err) = ctl(&["--endpoint", "not-an-address", "status"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not-an-address"), "{err}");
}

#[test]
fn station_of_two_is_a_usage_error() {
    let (code, err) = ctl(&["bootstrap", "--station", "127.0.0.1:1,127.0.0.1:2"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("1, 3 or 5"), "{err}");
}

#[test]
fn unreachable_node_exits_4_with_one_line() {
    let addr = closed_port();
    let (code, err) = ctl(&["--endpoint", &addr, "status"]);
    assert_eq!(code, Some(4), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&addr), "{err}");
}

#[test]
fn bootstrap_gives_up_on_a_dead_host_after_the_wait() {
    let addr = closed_port();
    let (code, err) = ctl(&["--wait", "1", "bootstrap", "--station", &addr]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("gave up"), "{err}");
}

#[test]
fn help_works() {
    let (code, _) = ctl(&["--help"]);
    assert_eq!(code, Some(0));
    let out = Command::new(env!("CARGO_BIN_EXE_radiantctl")).args(["demo", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--detach"));
}
