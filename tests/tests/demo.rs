//! `radiantctl demo`, the README's first command, in both its forms.

use std::process::Command;
use std::process::Stdio;

use radiant_tests::DEADLINE;
use radiant_tests::bin;
use radiant_tests::wait_until;
use serde_json::Value;

fn pids(dir: &std::path::Path) -> Vec<i32> {
    let state: Value = serde_json::from_slice(&std::fs::read(dir.join("demo.json")).unwrap()).unwrap();
    state["nodes"].as_array().unwrap().iter().map(|n| n["pid"].as_i64().unwrap() as i32).collect()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only probes the process.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn detached_demo_runs_until_demo_down() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("demo");
    let out = Command::new(bin("radiantctl"))
        .args(["--output", "json", "demo", "--nodes", "4", "--station", "3", "--detach", "--dir"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"]["nodes"].as_array().unwrap().len(), 4);
    assert!(v["status"]["bondsmith"]["name"].is_string());
    let pids = pids(&d);
    assert_eq!(pids.len(), 4);

    let endpoint = v["endpoint"].as_str().unwrap();
    let status = Command::new(bin("radiantctl")).args(["--endpoint", endpoint, "status"]).output().unwrap();
    assert!(status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout).contains("bondsmith"));

    let down = Command::new(bin("radiantctl")).args(["demo", "down", "--dir"]).arg(&d).output().unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    // The nodes were not our children, so once stopped they are gone, not zombies.
    wait_until(DEADLINE, "demo nodes to exit", || pids.iter().all(|&p| !alive(p)).then_some(()));
}

#[test]
fn foreground_demo_stops_its_nodes_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("demo");
    let mut demo = Command::new(bin("radiantctl"))
        .args(["demo", "--nodes", "3", "--station", "3", "--dir"])
        .arg(&d)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    // The status table is printed once the cluster is up; Ctrl-C is sent after that.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = String::new();
    wait_until(DEADLINE, "demo to print the status table", || {
        while let Ok(line) = rx.try_recv() {
            printed.push_str(&line);
            printed.push('\n');
        }
        (printed.contains("bondsmith") && printed.contains("└")).then_some(())
    });
    let pids = pids(&d);
    // SAFETY: SIGINT to the radiantctl we started, as Ctrl-C would.
    unsafe {
        libc::kill(demo.id() as i32, libc::SIGINT);
    }
    let status = wait_until(DEADLINE, "demo to exit", || demo.try_wait().unwrap());
    assert!(status.success(), "demo exit status {status:?}");
    assert!(pids.iter().all(|&p| !alive(p)), "every node stopped");
    assert!(!d.join("demo.json").exists(), "state file removed");
}
