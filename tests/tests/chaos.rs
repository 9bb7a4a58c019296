//! The fault-injection suite: one fault per short history, each node in its own network
//! namespace, every history checked for linearizability (see `radiant_tests::chaos`).
//!
//! Needs root, `ip` and `iptables` (`.ci/run` installs them); elsewhere each scenario prints
//! `chaos: NAME skipped: REASON` and passes. `RADIANT_CHAOS_SEED=0x...` replays a schedule.

use std::time::Duration;

use radiant_tests::Launch;
use radiant_tests::chaos;
use radiant_tests::chaos::Failure;
use radiant_tests::chaos::Run;
use radiant_tests::small_disk::SmallDisk;

/// A scenario's outcome: `None` if it was skipped, else its verdict.
type Outcome = Option<Result<(), Failure>>;

/// Fails the test if the scenario failed.
fn expect_ok(outcome: Outcome) {
    if let Some(Err(failure)) = outcome {
        failure.raise();
    }
}

/// Before the fault: enough history for the fault to cut into.
const WARM_UP: Duration = Duration::from_secs(2);
/// After the heal: traffic on the recovered cluster, so a stale state would be read.
const AFTER: Duration = Duration::from_secs(2);
/// How long a new herald may take to appear once the old one is gone: several election
/// timeouts, on a loaded two-core machine.
const ELECTION: Duration = Duration::from_secs(15);

fn start(name: &'static str, launch: &Launch) -> Option<(Run, std::sync::MutexGuard<'static, ()>)> {
    radiant_tests::init_logging();
    chaos::available(name).then(|| Run::start_with(name, launch.clone(), ""))
}

/// The herald dies with SIGKILL and comes back after a while: the writes it acknowledged must
/// survive, and the new herald must not lose any.
#[test]
fn kill_herald() {
    expect_ok(kill_herald_with(&Launch::default()));
}

fn kill_herald_with(launch: &Launch) -> Outcome {
    kill_herald_as("kill_herald", launch)
}

fn kill_herald_as(name: &'static str, launch: &Launch) -> Outcome {
    let (mut run, _one) = start(name, launch)?;
    let down = run.rng.between(Duration::from_millis(1500), Duration::from_secs(4));
    let missing = fault_on_herald(
        &mut run,
        |h| format!("kill -9 r{}, restarted after {down:?}", h + 1),
        down,
        |run, h| run.cluster.nodes[h].kill9(),
        |run, h| run.cluster.nodes[h].start(),
    );
    Some(run.conclude(missing))
}

/// The herald freezes (SIGSTOP) for longer than the election timeout while its clients wait,
/// then wakes up believing it still leads: the deposed-leader case. It must neither acknowledge
/// a write nor serve a linearizable read from its old term.
#[test]
fn pause_herald() {
    expect_ok(pause_herald_with(&Launch::default()));
}

fn pause_herald_with(launch: &Launch) -> Outcome {
    let (mut run, _one) = start("pause_herald", launch)?;
    let pause = run.rng.between(Duration::from_secs(2), Duration::from_secs(5));
    let missing = fault_on_herald(
        &mut run,
        |h| format!("SIGSTOP r{} for {pause:?}", h + 1),
        pause,
        |run, h| run.cluster.nodes[h].pause(),
        |run, h| run.cluster.nodes[h].resume(),
    );
    Some(run.conclude(missing))
}

/// One fault on order 1's herald, after the warm-up: `inject` it, wait for the other two to
/// elect a new herald (the proof that the fault was felt), keep it until `hold` has passed
/// since the injection (or the election, if that took longer), `heal` it, and let traffic run
/// on the healed cluster. Returns what was missing if no new herald was elected.
fn fault_on_herald(
    run: &mut Run,
    what: impl FnOnce(usize) -> String,
    hold: Duration,
    inject: impl FnOnce(&mut Run, usize),
    heal: impl FnOnce(&mut Run, usize),
) -> Option<String> {
    run.traffic(WARM_UP);
    let h = run.herald().expect("order 1 has a herald");
    let f = run.begin_fault(what(h));
    inject(run, h);
    let started = std::time::Instant::now();
    let others: Vec<usize> = (0..3).filter(|&i| i != h).collect();
    let moved = run.herald_moved_from(h, &others, ELECTION);
    // The fault lasts this long by the schedule the seed drew; nothing is awaited here.
    std::thread::sleep(hold.saturating_sub(started.elapsed()));
    heal(run, h);
    run.end_fault(f);
    run.traffic(AFTER);
    (!moved).then(|| format!("no new herald was elected during the fault on r{}", h + 1))
}

/// The herald is cut from both peers in both directions while clients still reach it: a
/// minority of one must not acknowledge anything, and the majority elects a new herald.
#[test]
fn isolate_herald() {
    expect_ok(partition_herald("isolate_herald", true, true, &Launch::default()));
}

/// Only what the herald sends to its peers is dropped (its heartbeats and appends never
/// arrive); clients still reach it.
#[test]
fn herald_outgoing_cut() {
    expect_ok(partition_herald("herald_outgoing_cut", false, true, &Launch::default()));
}

/// Only what the peers send to the herald is dropped (their votes and acknowledgements never
/// arrive); clients still reach it.
#[test]
fn herald_incoming_cut() {
    expect_ok(partition_herald("herald_incoming_cut", true, false, &Launch::default()));
}

fn partition_herald(name: &'static str, incoming: bool, outgoing: bool, launch: &Launch) -> Outcome {
    let (mut run, _one) = start(name, launch)?;
    let hold = run.rng.between(Duration::from_secs(3), Duration::from_secs(6));
    let way = match (incoming, outgoing) {
        (true, true) => "both ways",
        (true, false) => "incoming",
        _ => "outgoing",
    };
    let missing = fault_on_herald(
        &mut run,
        |h| format!("r{} cut from its peers ({way}) for {hold:?}", h + 1),
        hold,
        |run, h| {
            let others: Vec<usize> = (0..3).filter(|&i| i != h).collect();
            run.cut(h, &others, incoming, outgoing);
        },
        |run, _| run.heal_all(),
    );
    Some(run.conclude(missing))
}

/// Five nodes, all in order 1. The herald and one other node are cut from the other three
/// (both ways) for 3-6 s: the minority's herald must not acknowledge anything, the majority
/// elects a new one, and the two halves agree again once healed.
#[test]
fn halves() {
    let Some((mut run, _one)) = start_five("halves", &Launch::default()) else { return };
    run.traffic(WARM_UP);
    let h = run.herald().expect("order 1 has a herald");
    let mut others: Vec<usize> = (0..5).filter(|&i| i != h).collect();
    let mate = others.remove((run.rng.next_u64() % 4) as usize);
    let minority = vec![h, mate];
    let hold = run.rng.between(Duration::from_secs(3), Duration::from_secs(6));
    let f = run.begin_fault(format!("{} cut from {} for {hold:?}", names(&minority), names(&others)));
    let sees: Vec<Vec<usize>> =
        (0..5).map(|i| if minority.contains(&i) { minority.clone() } else { others.clone() }).collect();
    run.connect_only(&sees);
    let started = std::time::Instant::now();
    // The station may sit in either half: ask the majority's nodes themselves.
    let moved = run.leads_locally(&others, 1, ELECTION);
    std::thread::sleep(hold.saturating_sub(started.elapsed()));
    run.heal_all();
    run.end_fault(f);
    run.traffic(AFTER);
    run.finish((!moved).then(|| format!("the majority {} elected no herald", names(&others))));
}

/// Five nodes on a ring: each reaches only its two neighbours, so each sees a majority (itself
/// and them) and no two see the same one. Elections contend; whatever herald wins must not
/// let two majorities acknowledge diverging histories.
#[test]
fn majority_ring() {
    let Some((mut run, _one)) = start_five("majority_ring", &Launch::default()) else { return };
    run.traffic(WARM_UP);
    let ring = shuffled(&mut run, 5);
    let hold = run.rng.between(Duration::from_secs(3), Duration::from_secs(6));
    let sees: Vec<Vec<usize>> = (0..5)
        .map(|i| {
            let at = ring.iter().position(|&r| r == i).unwrap_or(0);
            vec![ring[(at + 1) % 5], ring[(at + 4) % 5]]
        })
        .collect();
    let f = run.begin_fault(format!("ring {} for {hold:?}", names(&ring)));
    run.connect_only(&sees);
    std::thread::sleep(hold);
    let dropped: u64 = (0..5).map(|i| run.dropped(i)).sum();
    run.heal_all();
    run.end_fault(f);
    run.traffic(AFTER);
    run.finish((dropped == 0).then(|| "the ring dropped no packet".into()));
}

/// Five nodes in two halves of two joined by one bridge node that reaches all four: the
/// bridge can lead a majority of either half, and a herald on one side must not keep
/// acknowledging after the other side elects through the bridge.
#[test]
fn bridge() {
    let Some((mut run, _one)) = start_five("bridge", &Launch::default()) else { return };
    run.traffic(WARM_UP);
    let order = shuffled(&mut run, 5);
    let (left, bridge, right) = (vec![order[0], order[1]], order[2], vec![order[3], order[4]]);
    let hold = run.rng.between(Duration::from_secs(3), Duration::from_secs(6));
    let sees: Vec<Vec<usize>> = (0..5)
        .map(|i| {
            if i == bridge {
                (0..5).filter(|&j| j != i).collect()
            } else if left.contains(&i) {
                vec![left[0], left[1], bridge]
            } else {
                vec![right[0], right[1], bridge]
            }
        })
        .collect();
    let f = run.begin_fault(format!("{} | r{} | {} for {hold:?}", names(&left), bridge + 1, names(&right)));
    run.connect_only(&sees);
    std::thread::sleep(hold);
    let dropped: u64 = (0..5).map(|i| run.dropped(i)).sum();
    run.heal_all();
    run.end_fault(f);
    run.traffic(AFTER);
    run.finish((dropped == 0).then(|| "the bridge partition dropped no packet".into()));
}

fn start_five(name: &'static str, launch: &Launch) -> Option<(Run, std::sync::MutexGuard<'static, ()>)> {
    radiant_tests::init_logging();
    chaos::available(name).then(|| Run::start_sized(name, launch.clone(), "", 5))
}

/// `0..n` in an order the seed draws.
fn shuffled(run: &mut Run, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        v.swap(i, (run.rng.next_u64() % (i as u64 + 1)) as usize);
    }
    v
}

/// `{r1, r3}` for nodes 0 and 2.
fn names(nodes: &[usize]) -> String {
    let n: Vec<String> = nodes.iter().map(|i| format!("r{}", i + 1)).collect();
    format!("{{{}}}", n.join(", "))
}

/// The herald's link loses a share of its packets, both ways, for several seconds: requests
/// slow down and some time out with an unknown outcome, which the history must still explain.
#[test]
fn flaky_herald() {
    let Some((mut run, _one)) = start("flaky_herald", &Launch::default()) else { return };
    run.traffic(WARM_UP);
    let h = run.herald().expect("order 1 has a herald");
    let percent = run.rng.pick(&[10, 20, 30]);
    let hold = run.rng.between(Duration::from_secs(3), Duration::from_secs(6));
    let f = run.begin_fault(format!("r{} drops {percent} % of its packets for {hold:?}", h + 1));
    run.flaky(h, percent);
    std::thread::sleep(hold);
    let dropped = run.dropped(h);
    run.heal_all();
    run.end_fault(f);
    run.traffic(AFTER);
    run.finish((dropped == 0).then(|| "no packet was dropped".into()));
}

/// The herald's Raft RPCs (appends, heartbeats, votes) each wait a random 0 to 100, 300 or
/// 1000 ms before they leave, for 3-6 s (the `net-delay` failpoint: a slow, jittery link):
/// commits slow down, a long delay lets the followers' election timers run out, and nothing
/// may be acknowledged out of order or lost.
#[test]
fn slow_herald() {
    let name = "slow_herald";
    let Some((mut run, _one)) = start_built(name, "") else { return };
    run.traffic(WARM_UP);
    let h = run.herald().expect("order 1 has a herald");
    let max_ms = run.rng.pick(&[100u64, 300, 1000]);
    let hold = run.rng.between(Duration::from_secs(3), Duration::from_secs(6));
    let f = run.begin_fault(format!("r{}'s Raft RPCs each delayed 0-{max_ms} ms for {hold:?}", h + 1));
    run.failpoint(h, "net-delay", &format!("return({max_ms})")).unwrap_or_else(|e| panic!("setting net-delay: {e}"));
    std::thread::sleep(hold);
    let felt = run.waited_since(f, Duration::from_millis(max_ms / 2));
    run.failpoint(h, "net-delay", "").unwrap_or_else(|e| panic!("clearing net-delay: {e}"));
    run.end_fault(f);
    run.traffic(AFTER);
    run.finish((!felt).then(|| "no operation waited on the slow link".into()));
}

/// A follower freezes and wakes up again: the order keeps serving through the other two, and
/// the woken follower catches up without disturbing anything.
#[test]
fn pause_follower() {
    let Some((mut run, _one)) = start("pause_follower", &Launch::default()) else { return };
    run.traffic(WARM_UP);
    let h = run.herald().expect("order 1 has a herald");
    let victim = run.rng.pick(&[(h + 1) % 3, (h + 2) % 3]);
    let pause = run.rng.between(Duration::from_secs(1), Duration::from_secs(4));
    let f = run.begin_fault(format!("SIGSTOP follower r{} for {pause:?}", victim + 1));
    run.cluster.nodes[victim].pause();
    let before = run.completed();
    std::thread::sleep(pause);
    let served = run.completed() > before;
    run.cluster.nodes[victim].resume();
    run.end_fault(f);
    run.traffic(AFTER);
    run.finish((!served).then(|| "nothing completed while the follower was paused".into()));
}

/// A follower freezes (SIGSTOP) until the bondsmith declares it dead and a spare replaces it,
/// then wakes up believing it is still a member: the false death. It must not vote or
/// acknowledge again in the order it was replaced out of (it is stopped and purged once heard
/// from), and the order converges on its new members.
#[test]
fn false_death() {
    let Some((mut run, _one)) = start("false_death", &Launch::default()) else { return };
    run.grow(2); // two spares: the victim's places in the order and in the station
    run.cluster.ctl_ok(&["set", "down_after_ms", "1000"]);
    run.cluster.ctl_ok(&["set", "replace_after_ms", "2000"]);
    run.traffic(WARM_UP);
    let h = run.herald().expect("order 1 has a herald");
    let victim = run.rng.pick(&[(h + 1) % 3, (h + 2) % 3]);
    let name = run.cluster.nodes[victim].name.clone();
    let f = run.begin_fault(format!("SIGSTOP r{} until it is replaced", victim + 1));
    run.cluster.nodes[victim].pause();
    let replaced = run.replaced(&name, REBALANCE);
    let after = run.rng.between(Duration::from_millis(200), Duration::from_secs(2));
    std::thread::sleep(after);
    run.cluster.nodes[victim].resume();
    run.end_fault(f);
    run.traffic(AFTER);
    run.finish((!replaced).then(|| format!("{name} was not replaced in order 1 while it was frozen")));
}

/// A member replacement under way: with two spares and short failure timers, a station
/// member of order 1 other than the bondsmith (`victim`) is killed for good; the bondsmith
/// (`bondsmith`) replaces it in order 1 and in the station. `hold` is a failpoint action set
/// on the bondsmith at `point` before the kill.
struct Replacement {
    victim: usize,
    bondsmith: usize,
}

fn begin_replacement(run: &mut Run, point: &str, hold: &str) -> Replacement {
    run.grow(2);
    run.cluster.ctl_ok(&["set", "down_after_ms", "1000"]);
    run.cluster.ctl_ok(&["set", "replace_after_ms", "2000"]);
    run.traffic(WARM_UP);
    let bondsmith = run.bondsmith().expect("a bondsmith");
    let victim = run.rng.pick(&[(bondsmith + 1) % 3, (bondsmith + 2) % 3]);
    run.failpoint(bondsmith, point, hold).unwrap_or_else(|e| panic!("setting {point}: {e}"));
    Replacement { victim, bondsmith }
}

/// Waits until order 1 has a learner (the replacement catching up), as the station reports.
fn learner_appears(run: &Run, deadline: Duration) -> bool {
    let end = std::time::Instant::now() + deadline;
    while std::time::Instant::now() < end {
        let s = (0..run.cluster.nodes.len()).find_map(|i| run.status_quick(i));
        if s.is_some_and(|s| !radiant_tests::status::order_nodes(&s, 1, "learners").is_empty()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The bondsmith crashes at one persisted step of a member replacement (drawn from the seed:
/// after the map records the replacement, after the replica is started, after the learner is
/// added and before the swap, after the swap), is restarted, and the new or restarted
/// bondsmith must finish the replacement from what the map and the reports say.
#[test]
fn replace_bondsmith_crash() {
    let name = "replace_bondsmith_crash";
    let Some((mut run, _one)) = start_built(name, "") else { return };
    let step = run.rng.pick(&["begin_replace", "start_replica", "add_learner", "set_voters"]);
    let point = format!("recovery-{step}-after");
    let r = begin_replacement(&mut run, &point, "panic");
    let victim_name = run.cluster.nodes[r.victim].name.clone();
    let f = run.begin_fault(format!(
        "r{} killed for good; bondsmith r{} crashes at {point}, restarted",
        r.victim + 1,
        r.bondsmith + 1
    ));
    run.cluster.nodes[r.victim].kill9();
    let crashed = run.exited(r.bondsmith, REBALANCE);
    run.cluster.nodes[r.bondsmith].kill9();
    run.cluster.nodes[r.bondsmith].start();
    let replaced = run.replaced(&victim_name, REBALANCE);
    run.end_fault(f);
    run.traffic(AFTER);
    let missing = if !crashed {
        Some(format!("the bondsmith never reached {point}"))
    } else {
        (!replaced).then(|| format!("{victim_name} was not replaced after the bondsmith's crash"))
    };
    run.finish(missing);
}

/// While a replacement's learner is in order 1 (the swap held 4 s on the bondsmith), order
/// 1's herald is killed and restarted: the new herald must carry the learner on and the swap
/// must happen on it.
#[test]
fn replace_herald_killed() {
    replace_with_fault("replace_herald_killed", |run, learner_seen| {
        let h = run.herald().expect("order 1 has a herald");
        let f = run.begin_fault(format!("herald r{} killed while {learner_seen}, restarted", h + 1));
        run.cluster.nodes[h].kill9();
        std::thread::sleep(run.rng.between(Duration::from_millis(500), Duration::from_secs(2)));
        run.cluster.nodes[h].start();
        run.end_fault(f);
    });
}

/// While a replacement's learner is in order 1 (the swap held 4 s on the bondsmith), the
/// learner is cut from every peer for 2-5 s: the swap must wait for it, or go on without it
/// only through a configuration a quorum can commit.
#[test]
fn replace_learner_cut() {
    replace_with_fault("replace_learner_cut", |run, learner_seen| {
        let learners = (0..run.cluster.nodes.len())
            .find_map(|i| run.status_quick(i))
            .map(|s| radiant_tests::status::order_nodes(&s, 1, "learners"))
            .unwrap_or_default();
        // The last spare if the learner was already promoted meanwhile.
        let learner = learners.first().map_or(run.cluster.nodes.len() - 1, |n| run.cluster.index_of(n));
        let hold = run.rng.between(Duration::from_secs(2), Duration::from_secs(5));
        let f =
            run.begin_fault(format!("learner r{} cut from its peers for {hold:?} while {learner_seen}", learner + 1));
        let peers: Vec<usize> = (0..run.cluster.nodes.len()).filter(|&p| p != learner).collect();
        run.cut(learner, &peers, true, true);
        std::thread::sleep(hold);
        run.heal_all();
        run.end_fault(f);
    });
}

/// Runs a replacement whose swap the bondsmith holds for 4 s, and injects (and heals) `fault`
/// once order 1 shows the learner; the replacement must finish and the history stay
/// linearizable.
fn replace_with_fault(name: &'static str, fault: impl FnOnce(&mut Run, &str)) {
    let Some((mut run, _one)) = start_built(name, "") else { return };
    let r = begin_replacement(&mut run, "recovery-set_voters-before", "return(4000)");
    let victim_name = run.cluster.nodes[r.victim].name.clone();
    tracing::info!("--- r{} killed for good: the bondsmith replaces it", r.victim + 1);
    run.cluster.nodes[r.victim].kill9();
    let seen = learner_appears(&run, REBALANCE);
    fault(&mut run, "the replacement is a learner");
    let replaced = run.replaced(&victim_name, REBALANCE);
    run.traffic(AFTER);
    let missing = if !seen {
        Some("order 1 never showed a learner".to_string())
    } else {
        (!replaced).then(|| format!("{victim_name} was not replaced"))
    };
    run.finish(missing);
}

/// Who dies in a move scenario.
#[derive(Debug, Clone, Copy)]
enum Party {
    SourceHerald,
    DestinationHerald,
    Bondsmith,
    /// A member of the destination order that is not its herald.
    DestinationMember,
}

/// The fault a move scenario injects while a shard is being copied.
#[derive(Debug, Clone, Copy)]
enum MoveFault {
    /// SIGKILL, restarted 0.5-2 s later.
    Kill(Party),
    /// SIGSTOP the source herald for 3-5 s: its order elects another herald, the move goes
    /// on through it (freeze, switch), and the old herald wakes up after the switch.
    PauseSourceHerald,
    /// Cut every member of the source order from every member of the destination, both
    /// ways, for 3-5 s.
    CutApart,
}

/// How long the shards may take to settle once a second order formed (32 small moves, two at
/// a time, on a loaded two-core machine, with a kill among them).
const REBALANCE: Duration = Duration::from_secs(120);

/// A second order forms while the clients run, and half of the 64 shards move onto it with
/// their data; with `fault`, that fault hits while a shard is being copied. Every move must
/// finish, the shards end balanced, and the history (whose readers may keep an old map and
/// ask the source) must be linearizable.
fn moves_with(name: &'static str, launch: &Launch, fault: Option<MoveFault>) -> Outcome {
    let (mut run, _one) = start(name, launch)?;
    run.traffic(WARM_UP);
    run.grow(3);
    let mut missed = None;
    if let Some(fault) = fault {
        missed = match run.move_copying(REBALANCE) {
            None => Some("no move was seen copying".to_string()),
            Some((from, to)) => move_fault(&mut run, fault, from, to).err(),
        };
    }
    if missed.is_none() {
        missed = run.balanced(REBALANCE).err();
    }
    run.traffic(AFTER);
    Some(run.conclude(missed))
}

/// Injects and heals `fault` on the move from order `from` to order `to`; `Err` says why it
/// could not be injected.
fn move_fault(run: &mut Run, fault: MoveFault, from: u64, to: u64) -> Result<(), String> {
    let members = |run: &Run, order: u64| -> Vec<usize> {
        let s = (0..run.cluster.nodes.len()).find_map(|i| run.status_quick(i));
        let names = s.map(|s| radiant_tests::status::order_nodes(&s, order, "members")).unwrap_or_default();
        names.iter().map(|n| run.cluster.index_of(n)).collect()
    };
    match fault {
        MoveFault::Kill(party) => {
            let victim = match party {
                Party::SourceHerald => run.herald_of(from),
                Party::DestinationHerald => run.herald_of(to),
                Party::Bondsmith => run.bondsmith(),
                Party::DestinationMember => {
                    let herald = run.herald_of(to);
                    members(run, to).into_iter().find(|m| Some(*m) != herald)
                }
            }
            .ok_or(format!("no {party:?} found"))?;
            let f = run.begin_fault(format!("kill -9 the {party:?} r{} mid-copy ({from} -> {to})", victim + 1));
            run.cluster.nodes[victim].kill9();
            std::thread::sleep(run.rng.between(Duration::from_millis(500), Duration::from_secs(2)));
            run.cluster.nodes[victim].start();
            run.end_fault(f);
            Ok(())
        }
        MoveFault::PauseSourceHerald => {
            let h = run.herald_of(from).ok_or("no source herald found")?;
            let hold = run.rng.between(Duration::from_secs(3), Duration::from_secs(5));
            let f = run.begin_fault(format!("SIGSTOP the source herald r{} mid-copy for {hold:?}", h + 1));
            run.cluster.nodes[h].pause();
            let started = std::time::Instant::now();
            let others: Vec<usize> = members(run, from).into_iter().filter(|&m| m != h).collect();
            let moved = run.leads_locally(&others, from, ELECTION);
            std::thread::sleep(hold.saturating_sub(started.elapsed()));
            run.cluster.nodes[h].resume();
            run.end_fault(f);
            if moved { Ok(()) } else { Err(format!("order {from} elected no herald while r{} was frozen", h + 1)) }
        }
        MoveFault::CutApart => {
            let (src, dst) = (members(run, from), members(run, to));
            if src.is_empty() || dst.is_empty() {
                return Err(format!("no members of order {from} or {to} found"));
            }
            let hold = run.rng.between(Duration::from_secs(3), Duration::from_secs(5));
            let f = run.begin_fault(format!("order {from} cut from order {to} mid-copy for {hold:?}"));
            for &m in &src {
                run.cut(m, &dst, true, true);
            }
            std::thread::sleep(hold);
            let dropped: u64 = src.iter().map(|&m| run.dropped(m)).sum();
            run.heal_all();
            run.end_fault(f);
            if dropped > 0 { Ok(()) } else { Err("the cut dropped no packet".into()) }
        }
    }
}

#[test]
fn moves_under_load() {
    expect_ok(moves_with("moves_under_load", &Launch::default(), None));
}

#[test]
fn move_kill_source_herald() {
    expect_ok(moves_with("move_kill_source_herald", &Launch::default(), Some(MoveFault::Kill(Party::SourceHerald))));
}

#[test]
fn move_kill_destination_herald() {
    let fault = Some(MoveFault::Kill(Party::DestinationHerald));
    expect_ok(moves_with("move_kill_destination_herald", &Launch::default(), fault));
}

#[test]
fn move_kill_bondsmith() {
    expect_ok(moves_with("move_kill_bondsmith", &Launch::default(), Some(MoveFault::Kill(Party::Bondsmith))));
}

#[test]
fn move_kill_destination_member() {
    let fault = Some(MoveFault::Kill(Party::DestinationMember));
    expect_ok(moves_with("move_kill_destination_member", &Launch::default(), fault));
}

#[test]
fn move_pause_source_herald() {
    expect_ok(moves_with("move_pause_source_herald", &Launch::default(), Some(MoveFault::PauseSourceHerald)));
}

#[test]
fn move_cut_apart() {
    expect_ok(moves_with("move_cut_apart", &Launch::default(), Some(MoveFault::CutApart)));
}

/// The suite's self-test: each bug planted in a `planted-bugs` build of radiantd (see
/// `radiantd/src/planted.rs`) must make the scenarios that should catch it fail. A suite that
/// passes against a broken store guards nothing.
///
/// Needs that build: `cargo build -p radiantd --features failpoints,planted-bugs --target-dir
/// target/chaos`, named by `RADIANT_CHAOS_BIN_DIR` (`.ci/run` does both).
#[test]
fn planted_bugs_are_caught() {
    if !chaos::available("planted_bugs_are_caught") {
        return;
    }
    let Some(radiantd) = chaos_build("planted_bugs_are_caught") else { return };
    let planted =
        |bug: &str| Launch { radiantd: Some(radiantd.clone()), env: vec![("RADIANT_PLANTED_BUG".into(), bug.into())] };
    type Scenario = fn(&Launch) -> Outcome;
    // Each case: the bug, the scenario that must catch it, and what the failure must say
    // (the serve-after-switch case must be caught by the ownership check on its own). A
    // paused herald steps down within milliseconds of waking (the first message of the new
    // term), so `pause_herald` rarely meets a read in that window; a herald cut off for
    // seconds serves its pinned reader the whole time.
    let cases: [(&str, &str, Scenario, &str); 4] = [
        ("ack-before-commit", "kill_herald", kill_herald_with, ""),
        ("append-without-fsync", "power_cut", power_cut_with, ""),
        ("read-without-leadership", "isolate_herald", |l| partition_herald("isolate_herald", true, true, l), ""),
        (
            "serve-after-switch",
            "moves_under_load",
            |l| moves_with("moves_under_load", l, None),
            "two orders served a shard at once",
        ),
    ];
    let mut missed = Vec::new();
    for (bug, scenario, run, says) in cases {
        // Caught means the checker rejected the history: a run that failed for another
        // reason (the fault not felt, no recovery) proves nothing about the checker.
        let caught = match run(&planted(bug)) {
            Some(Err(Failure::History(panic))) => {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                text.contains(says)
            }
            _ => false,
        };
        chaos::say(&format!("chaos: selftest bug={bug} scenario={scenario} caught={caught}"));
        if !caught {
            missed.push(format!("{scenario} passed with the bug {bug} planted (or failed without saying {says:?})"));
        }
    }
    assert!(missed.is_empty(), "the suite misses planted bugs: {}", missed.join("; "));
}

/// Starts a scenario on the fault suite's build of radiantd with `extra_config`; `None`, with
/// a message, where the lab or that build is missing.
fn start_built(name: &'static str, extra_config: &str) -> Option<(Run, std::sync::MutexGuard<'static, ()>)> {
    radiant_tests::init_logging();
    if !chaos::available(name) {
        return None;
    }
    let radiantd = chaos_build(name)?;
    Some(Run::start_with(name, Launch { radiantd: Some(radiantd), env: Vec::new() }, extra_config))
}

/// The fault suite's build of radiantd (features `failpoints` and `planted-bugs`), named by
/// `RADIANT_CHAOS_BIN_DIR`; `None`, with a message, where it is not given.
fn chaos_build(name: &str) -> Option<std::path::PathBuf> {
    let Some(dir) = std::env::var_os("RADIANT_CHAOS_BIN_DIR") else {
        chaos::say(&format!(
            "chaos: {name} skipped: RADIANT_CHAOS_BIN_DIR does not name a build of radiantd with the failpoints and \
             planted-bugs features"
        ));
        return None;
    };
    let radiantd = std::path::PathBuf::from(dir).join("radiantd");
    assert!(radiantd.is_file(), "{} is not built", radiantd.display());
    Some(radiantd)
}

/// openraft issue #2118, end to end: a node that becomes leader counts its whole log as
/// flushed, so no append may still be waiting for its fsync when it can. Every node runs on the
/// volatile disk model; both followers' log syncs are held for 1.5-3 s (`log-sync-before`:
/// their appends are written but not synced), the herald is killed, and one of the followers
/// is elected inside that window. Then the whole cluster loses power. The new herald's vote
/// save must have made its earlier appends durable (the unit test
/// `a_vote_makes_every_earlier_append_durable` in `raft/log_store.rs` fails without that);
/// every acknowledged write must be there and the history linearizable.
#[test]
fn election_with_appends_unsynced() {
    let name = "election_with_appends_unsynced";
    if !chaos::available(name) {
        return;
    }
    let Some(radiantd) = chaos_build(name) else { return };
    let env = vec![("RADIANT_VOLATILE_DISK".to_string(), "1".to_string())];
    let (mut run, _one) = Run::start_with(name, Launch { radiantd: Some(radiantd), env }, "");
    run.traffic(WARM_UP);
    let h = run.herald().expect("order 1 has a herald");
    let followers = [(h + 1) % 3, (h + 2) % 3];
    let hold = run.rng.between(Duration::from_millis(1500), Duration::from_secs(3));
    let action = format!("sleep({})", hold.as_millis());
    let f = run.begin_fault(format!(
        "r{} and r{} hold their log syncs {hold:?}; herald r{} killed; then a power cut",
        followers[0] + 1,
        followers[1] + 1,
        h + 1
    ));
    for &i in &followers {
        run.failpoint(i, "log-sync-before", &action).unwrap_or_else(|e| panic!("setting log-sync-before: {e}"));
    }
    run.cluster.nodes[h].kill9();
    let elected = run.leads_locally(&followers, 1, Duration::from_secs(10));
    run.traffic(Duration::from_millis(500));
    let down = run.rng.between(Duration::from_millis(300), Duration::from_secs(1));
    cut_the_power(&mut run, down);
    run.end_fault(f);
    run.traffic(AFTER);
    run.finish((!elected).then(|| "no follower was elected while its appends were held".into()));
}

/// Every node dies with SIGKILL at the same instant and comes back `down` later; on the
/// volatile disk model each keeps only what it had synced.
fn cut_the_power(run: &mut Run, down: Duration) {
    for node in run.cluster.nodes.iter_mut() {
        node.kill9();
    }
    std::thread::sleep(down);
    for node in run.cluster.nodes.iter_mut() {
        node.start();
    }
}

/// A node crashes (the process aborts) exactly at a persisted step of its storage: before and
/// after a log append is made durable, before and after an applied batch commits, before a
/// purge of the log behind a snapshot. The victim (herald or follower) and the restart delay
/// come from the seed. Whatever the node had acknowledged must survive, and whatever it had
/// not must not be half there.
fn storage_crash(name: &'static str, point: &str) {
    // Snapshots every 200 entries, so that purges happen within the run.
    let Some((mut run, _one)) = start_built(name, "snapshot_logs = 200") else { return };
    run.traffic(WARM_UP);
    let h = run.herald().expect("order 1 has a herald");
    let victim = run.rng.pick(&[h, (h + 1) % 3, (h + 2) % 3]);
    let f = run.begin_fault(format!("r{} crashes at {point}", victim + 1));
    run.failpoint(victim, point, "panic").unwrap_or_else(|e| panic!("setting {point}: {e}"));
    let crashed = run.exited(victim, Duration::from_secs(20));
    let down = run.rng.between(Duration::from_millis(200), Duration::from_secs(2));
    std::thread::sleep(down);
    run.cluster.nodes[victim].kill9(); // reaps it, or stops it if the failpoint was never hit
    run.cluster.nodes[victim].start();
    run.end_fault(f);
    run.traffic(AFTER);
    run.finish((!crashed).then(|| format!("r{} never reached {point}", victim + 1)));
}

/// A follower crashes exactly while it installs a snapshot: it is frozen until the herald
/// has purged the log behind a snapshot (one every 200 entries), then woken with the
/// failpoint set, so the herald must send it the snapshot and the install is where it dies.
/// Restarted, it must install a snapshot again and catch up, whatever the crash left half
/// written.
fn snapshot_install_crash(name: &'static str, point: &str) {
    let Some((mut run, _one)) = start_built(name, "snapshot_logs = 200") else { return };
    run.traffic(WARM_UP);
    let h = run.herald().expect("order 1 has a herald");
    let victim = run.rng.pick(&[(h + 1) % 3, (h + 2) % 3]);
    let f = run.begin_fault(format!("r{} falls behind the purged log and crashes at {point}", victim + 1));
    run.failpoint(victim, point, "panic").unwrap_or_else(|e| panic!("setting {point}: {e}"));
    run.cluster.nodes[victim].pause();
    // Past two snapshots' worth of writes, so the entries it lacks are purged at the herald.
    run.progress(1000, Duration::from_secs(30));
    run.cluster.nodes[victim].resume();
    let crashed = run.exited(victim, Duration::from_secs(30));
    run.cluster.nodes[victim].kill9(); // reaps it, or stops it if it never got a snapshot
    run.cluster.nodes[victim].start();
    run.end_fault(f);
    run.traffic(AFTER);
    run.finish((!crashed).then(|| format!("r{} never installed a snapshot", victim + 1)));
}

#[test]
fn snapshot_install_crash_before() {
    snapshot_install_crash("snapshot_install_crash_before", "order-snapshot-install-before");
}

#[test]
fn snapshot_install_crash_after() {
    snapshot_install_crash("snapshot_install_crash_after", "order-snapshot-install-after");
}

/// The herald's disk fails its fsyncs with EIO (the `disk-sync` failpoint, below redb): the
/// herald must stop rather than go on with a store it cannot trust, never acknowledging the
/// batch whose fsync failed; the others elect a new herald, and the restarted node catches up.
#[test]
fn fsync_eio() {
    let name = "fsync_eio";
    let Some((mut run, _one)) = start_built(name, "") else { return };
    run.traffic(WARM_UP);
    let h = run.herald().expect("order 1 has a herald");
    let f = run.begin_fault(format!("r{}'s fsyncs fail with EIO", h + 1));
    // The node's sync thread may hit the failpoint and stop the node before the RPC that set
    // it is answered: a broken call is then the fault taking effect, which `stopped` and the
    // log line below check.
    if let Err(e) = run.failpoint(h, "disk-sync", "return") {
        chaos::say(&format!("chaos: fsync_eio: setting disk-sync answered {e:?} (the node may have stopped first)"));
    }
    let stopped = run.exited(h, Duration::from_secs(20));
    let said = run.cluster.nodes[h].log().contains("storage failed while");
    let down = run.rng.between(Duration::from_millis(500), Duration::from_secs(2));
    std::thread::sleep(down);
    run.cluster.nodes[h].kill9();
    run.cluster.nodes[h].start();
    run.end_fault(f);
    run.traffic(AFTER);
    run.finish((!(stopped && said)).then(|| format!("r{} did not stop on its failed commit", h + 1)));
}

/// Every node runs on the volatile disk model (radiantd's `disk` module: a write stays in
/// memory until the next fsync), and the herald dies with SIGKILL under load: whatever it had
/// not synced is gone, as in a power cut. Nothing it acknowledged may be lost (an acknowledged
/// write was synced on a quorum), and its vote and log, as far as they were synced, must be
/// enough for it to rejoin without voting twice or serving what it lost.
#[test]
fn lost_unsynced_writes() {
    let name = "lost_unsynced_writes";
    if !chaos::available(name) {
        return;
    }
    let Some(radiantd) = chaos_build(name) else { return };
    let env = vec![("RADIANT_VOLATILE_DISK".to_string(), "1".to_string())];
    expect_ok(kill_herald_as(name, &Launch { radiantd: Some(radiantd), env }));
}

/// Every node runs on the volatile disk model and all of them die with SIGKILL at the same
/// instant under load, a power cut of the whole cluster, and come back 0.5-2 s later: each
/// keeps only what it had synced. Every acknowledged write was synced on a quorum before it
/// was acknowledged, so every one of them must still be there.
#[test]
fn power_cut() {
    let name = "power_cut";
    if !chaos::available(name) {
        return;
    }
    let Some(radiantd) = chaos_build(name) else { return };
    expect_ok(power_cut_with(&Launch { radiantd: Some(radiantd), env: Vec::new() }));
}

fn power_cut_with(launch: &Launch) -> Outcome {
    let mut launch = launch.clone();
    launch.env.push(("RADIANT_VOLATILE_DISK".into(), "1".into()));
    let (mut run, _one) = start("power_cut", &launch)?;
    run.traffic(WARM_UP);
    let down = run.rng.between(Duration::from_millis(500), Duration::from_secs(2));
    let f = run.begin_fault(format!("power cut: every node SIGKILLed, restarted after {down:?}"));
    cut_the_power(&mut run, down);
    run.end_fault(f);
    run.traffic(AFTER);
    // Every node died, so the fault happened; `conclude` requires the cluster to take writes
    // again.
    Some(run.conclude(None))
}

/// A follower's data dir sits on a small tmpfs that fills up under load: the node must stop
/// with a clear error (ENOSPC named in its log) rather than serve from a store it cannot
/// write, and once the space is freed and it restarts, its store must open as it was (not
/// corrupt) and catch up.
#[test]
fn disk_full() {
    let Some((mut run, _one)) = start("disk_full", &Launch::default()) else { return };
    run.traffic(WARM_UP);
    let h = run.herald().expect("order 1 has a herald");
    let victim = run.rng.pick(&[(h + 1) % 3, (h + 2) % 3]);
    // Setup, not the fault: the follower restarts onto a 256 MiB tmpfs holding its data.
    run.cluster.nodes[victim].kill9();
    let data = run.cluster.nodes[victim].dir.join("data");
    let disk = SmallDisk::mount(&data, 256).unwrap_or_else(|e| panic!("a small disk for r{}: {e}", victim + 1));
    run.cluster.nodes[victim].start();
    run.traffic(Duration::from_secs(1));
    let f = run.begin_fault(format!("r{}'s disk is full", victim + 1));
    disk.fill().unwrap_or_else(|e| panic!("filling r{}'s disk: {e}", victim + 1));
    let stopped = run.exited(victim, Duration::from_secs(30));
    let said = run.cluster.nodes[victim].log().contains("No space left on device");
    disk.free().unwrap_or_else(|e| panic!("freeing r{}'s disk: {e}", victim + 1));
    run.cluster.nodes[victim].kill9(); // reaps it, or stops it if it never stopped
    run.cluster.nodes[victim].start();
    run.end_fault(f);
    run.traffic(AFTER);
    let missing = match (stopped, said) {
        (true, true) => None,
        (false, _) => Some(format!("r{} kept running on a full disk", victim + 1)),
        (true, false) => Some(format!("r{} stopped without saying the disk was full", victim + 1)),
    };
    run.finish(missing);
    drop(disk);
}

/// The herald's fsyncs stall for seconds, below redb (a disk that hangs on fsync): writes wait, no
/// read may be served from a state the herald cannot vouch for, and everything resumes when
/// the disk does.
#[test]
fn fsync_stall() {
    let name = "fsync_stall";
    let Some((mut run, _one)) = start_built(name, "") else { return };
    run.traffic(WARM_UP);
    let h = run.herald().expect("order 1 has a herald");
    let stall = run.rng.between(Duration::from_millis(1500), Duration::from_secs(3));
    let hold = run.rng.between(Duration::from_secs(3), Duration::from_secs(6));
    let f = run.begin_fault(format!("r{}'s fsyncs stall {stall:?} each for {hold:?}", h + 1));
    let action = format!("sleep({})", stall.as_millis());
    run.failpoint(h, "disk-sync", &action).unwrap_or_else(|e| panic!("setting disk-sync: {e}"));
    std::thread::sleep(hold);
    // Operations take milliseconds here; one that took half a second, or timed out, waited
    // on the disk.
    let felt = run.waited_since(f, Duration::from_millis(500));
    run.failpoint(h, "disk-sync", "").unwrap_or_else(|e| panic!("clearing disk-sync: {e}"));
    run.end_fault(f);
    run.traffic(AFTER);
    run.finish((!felt).then(|| "no operation waited on the stalled disk".into()));
}

/// A follower crashes exactly while it saves a vote (before or after the vote is durable):
/// the herald is frozen for 2 s so that the others elect, and the victim dies at its vote.
/// Restarted, it must never vote twice in a term.
fn vote_crash(name: &'static str, point: &str) {
    let Some((mut run, _one)) = start_built(name, "") else { return };
    run.traffic(WARM_UP);
    let h = run.herald().expect("order 1 has a herald");
    let victim = run.rng.pick(&[(h + 1) % 3, (h + 2) % 3]);
    let f = run.begin_fault(format!("herald r{} frozen 2 s; r{} crashes at {point}", h + 1, victim + 1));
    run.failpoint(victim, point, "panic").unwrap_or_else(|e| panic!("setting {point}: {e}"));
    run.cluster.nodes[h].pause();
    let crashed = run.exited(victim, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    run.cluster.nodes[h].resume();
    run.cluster.nodes[victim].kill9();
    run.cluster.nodes[victim].start();
    run.end_fault(f);
    run.traffic(AFTER);
    run.finish((!crashed).then(|| format!("r{} never saved a vote", victim + 1)));
}

#[test]
fn storage_crash_log_vote_before() {
    vote_crash("storage_crash_log_vote_before", "log-vote-before");
}

#[test]
fn storage_crash_log_vote_after() {
    vote_crash("storage_crash_log_vote_after", "log-vote-after");
}

/// A station member other than the bondsmith crashes exactly while it applies a map change
/// (before or after its batch commits); the change is a setting written for the purpose.
fn station_apply_crash(name: &'static str, point: &str) {
    let Some((mut run, _one)) = start_built(name, "") else { return };
    run.traffic(WARM_UP);
    let b = run.bondsmith().expect("a bondsmith");
    let victim = run.rng.pick(&[(b + 1) % 3, (b + 2) % 3]);
    let f = run.begin_fault(format!("r{} crashes at {point} on a map change", victim + 1));
    run.failpoint(victim, point, "panic").unwrap_or_else(|e| panic!("setting {point}: {e}"));
    run.cluster.ctl_ok(&["set", "move_rate_mib", "7"]);
    let crashed = run.exited(victim, Duration::from_secs(20));
    std::thread::sleep(run.rng.between(Duration::from_millis(200), Duration::from_secs(2)));
    run.cluster.nodes[victim].kill9();
    run.cluster.nodes[victim].start();
    run.end_fault(f);
    run.traffic(AFTER);
    run.finish((!crashed).then(|| format!("r{} never applied the map change", victim + 1)));
}

#[test]
fn storage_crash_station_apply_before() {
    station_apply_crash("storage_crash_station_apply_before", "station-apply-before");
}

#[test]
fn storage_crash_station_apply_after() {
    station_apply_crash("storage_crash_station_apply_after", "station-apply-after");
}

#[test]
fn storage_crash_log_append_before() {
    storage_crash("storage_crash_log_append_before", "log-append-before");
}

#[test]
fn storage_crash_log_append_after() {
    storage_crash("storage_crash_log_append_after", "log-append-after");
}

#[test]
fn storage_crash_order_apply_before() {
    storage_crash("storage_crash_order_apply_before", "order-apply-before");
}

#[test]
fn storage_crash_order_apply_after() {
    storage_crash("storage_crash_order_apply_after", "order-apply-after");
}

#[test]
fn storage_crash_log_purge_before() {
    storage_crash("storage_crash_log_purge_before", "log-purge-before");
}

/// Exploratory mode, on demand: with `RADIANT_CHAOS_BUDGET=SECONDS`, draws scenarios at random
/// (each with a fresh seed from the clock) until the budget is spent, and fails on the first
/// run that fails; its seed line replays it. Prints how many runs were exercised, passed or
/// failed, and what share of them felt their fault. Without the variable it does nothing.
#[test]
fn explore() {
    let Some(budget) = std::env::var("RADIANT_CHAOS_BUDGET").ok().and_then(|b| b.parse::<u64>().ok()) else {
        chaos::say("chaos: explore skipped: set RADIANT_CHAOS_BUDGET=SECONDS to explore");
        return;
    };
    if !chaos::available("explore") {
        return;
    }
    type Scenario = fn(&Launch) -> Outcome;
    let scenarios: [(&str, Scenario); 9] = [
        ("kill_herald", kill_herald_with),
        ("pause_herald", pause_herald_with),
        ("isolate_herald", |l| partition_herald("isolate_herald", true, true, l)),
        ("herald_outgoing_cut", |l| partition_herald("herald_outgoing_cut", false, true, l)),
        ("herald_incoming_cut", |l| partition_herald("herald_incoming_cut", true, false, l)),
        ("moves_under_load", |l| moves_with("moves_under_load", l, None)),
        ("move_kill_source_herald", |l| {
            moves_with("move_kill_source_herald", l, Some(MoveFault::Kill(Party::SourceHerald)))
        }),
        ("move_kill_destination_herald", |l| {
            moves_with("move_kill_destination_herald", l, Some(MoveFault::Kill(Party::DestinationHerald)))
        }),
        ("move_kill_bondsmith", |l| moves_with("move_kill_bondsmith", l, Some(MoveFault::Kill(Party::Bondsmith)))),
    ];
    let end = std::time::Instant::now() + Duration::from_secs(budget);
    let mut pick = radiant_tests::workload::Rng::new(chaos::seed());
    let (mut runs, mut not_exercised) = (0u32, 0u32);
    while std::time::Instant::now() < end {
        let (name, scenario) = pick.pick(&scenarios);
        runs += 1;
        match scenario(&Launch::default()) {
            Some(Ok(())) | None => {}
            Some(Err(Failure::Check(why))) if why.contains("not exercised") => not_exercised += 1,
            Some(Err(failure)) => {
                chaos::say(&format!("chaos: explore: {name} failed after {runs} runs"));
                failure.raise();
            }
        }
    }
    chaos::say(&format!(
        "chaos: explore runs={runs} exercised={} not_exercised={not_exercised} share_exercised={:.2}",
        runs - not_exercised,
        f64::from(runs - not_exercised) / f64::from(runs.max(1))
    ));
}
