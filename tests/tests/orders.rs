//! Orders, heralds and shard placement happen on their own once nodes join.

use radiant_tests::Cluster;
use radiant_tests::status;

#[test]
fn three_station_six_satellites_make_two_orders_of_32_shards() {
    radiant_tests::init_logging();
    let c = Cluster::start(9);
    c.bootstrap(&[0, 1, 2]);
    c.join(&[0, 1, 2], &[3, 4, 5, 6, 7, 8]);
    let s = c.wait_status(0, "two orders with heralds, 64 shards placed", |s| {
        s["orders"].as_array().is_some_and(|o| o.len() == 2 && o.iter().all(|o| o["herald"].is_string()))
            && s["shards"]["assigned"] == 64
    });
    let orders = s["orders"].as_array().unwrap();
    for o in orders {
        assert_eq!(o["members"].as_array().unwrap().len(), 3, "{o}");
        assert_eq!(o["shards"], 32, "{o}");
        let herald = o["herald"].as_str().unwrap();
        assert!(o["members"].as_array().unwrap().iter().any(|m| m == herald), "herald is a member: {o}");
    }
    for i in 3..9 {
        assert_eq!(status::state(&s, &c.nodes[i].name), "member");
    }
    for i in 0..3 {
        assert_eq!(status::state(&s, &c.nodes[i].name), "station", "station-only members serve no shards");
    }
    let heralds = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["roles"].as_array().unwrap().iter().any(|r| r == "herald"))
        .count();
    assert_eq!(heralds, 2);

    let events = c.ctl_ok(&["events", "--limit", "0"]);
    let reasons: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert!(reasons.iter().filter(|r| r.contains("form order")).count() == 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.starts_with("herald registered")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("spread evenly")), "{reasons:?}");

    let shards = c.ctl_ok(&["shards"]);
    assert_eq!(shards.as_array().unwrap().len(), 64);
    assert!(shards.as_array().unwrap().iter().all(|s| s["order"].is_u64()));
}
