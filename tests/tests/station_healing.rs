//! The station heals as orders do: a station member that dies for good is replaced by a
//! spare, the bondsmith included (after its successor takes over), and satellites keep
//! reaching the station after every member they were joined with has been replaced.

use radiant_tests::Cluster;
use radiant_tests::status;

fn station_names(s: &serde_json::Value) -> Vec<String> {
    s["station"]
        .as_array()
        .map_or(vec![], |ids| ids.iter().filter_map(|id| id.as_str()).filter_map(|id| status::name_of(s, id)).collect())
}

/// Kills `victim` for good and waits (through node `via`) until a spare took its station seat.
fn kill_and_wait(c: &mut Cluster, via: usize, victim: &str) -> serde_json::Value {
    tracing::info!("--- kill -9 station member {victim} for good");
    let i = c.index_of(victim);
    c.nodes[i].kill9();
    c.wait_status(via, &format!("{victim} replaced in the station"), |s| {
        let station = station_names(s);
        station.len() == 3 && !station.iter().any(|m| m == victim) && status::bondsmith(s).is_some()
    })
}

#[test]
fn station_members_are_replaced_the_bondsmith_too_and_satellites_follow() {
    radiant_tests::init_logging();
    // A station of three that serves no shards, and spares: orders of five, so that none
    // forms from the few spares this test has and they stay free for the station.
    let mut c = Cluster::start(5);
    let station = c.addrs(&[0, 1, 2]).join(",");
    c.ctl_ok(&["bootstrap", "--station", &station, "--replicas", "5"]);
    c.join(&[0, 1, 2], &[3, 4]);
    let s = c.wait_status(0, "two spares", |s| (3..5).all(|i| status::state(s, &c.nodes[i].name) == "spare"));
    c.ctl_ok(&["set", "replace_after_ms", "0"]);
    let bondsmith = status::bondsmith(&s).unwrap();
    let original = station_names(&s);

    let follower = original.iter().find(|m| **m != bondsmith).unwrap().clone();
    let via = (0..3).find(|i| c.nodes[*i].name != follower && c.nodes[*i].name != bondsmith).unwrap();
    let s = kill_and_wait(&mut c, via, &follower);
    tracing::info!(station = ?station_names(&s), "--- replaced");

    let via = c.index_of(&station_names(&s).into_iter().find(|m| *m != bondsmith && original.contains(m)).unwrap());
    let s = kill_and_wait(&mut c, via, &bondsmith);
    let new = status::bondsmith(&s).unwrap();
    assert_ne!(new, bondsmith);
    tracing::info!(station = ?station_names(&s), bondsmith = new, "--- the bondsmith was replaced too");

    tracing::info!("--- join still works, through the new station");
    let fresh = c.add_node();
    let station_addrs: Vec<usize> = station_names(&s).iter().map(|n| c.index_of(n)).collect();
    let joined = c.join(&station_addrs, &[fresh]);
    assert_eq!(joined[0]["result"], "joined", "{joined}");
    let last = original.iter().find(|m| station_names(&s).contains(m)).unwrap().clone();
    let via = station_addrs.iter().copied().find(|i| c.nodes[*i].name != last).unwrap();
    let s = kill_and_wait(&mut c, via, &last);
    let station = station_names(&s);
    assert!(station.iter().all(|m| !original.contains(m)), "every original member replaced: {station:?}");

    tracing::info!("--- a satellite restarted now phones the new station, not the one it was joined with");
    let sat = c.index_of(&station[0]);
    c.nodes[sat].kill9();
    c.nodes[sat].start();
    let via = c.index_of(&station[1]);
    c.wait_status(via, "the restarted member up again", |s| status::state(s, &station[0]) != "down");
    let events = c.ctl_at(&c.nodes[via].addr, &["events", "--limit", "0"]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.contains("takes its place in the station"), "{events}");
}
