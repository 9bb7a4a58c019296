//! Known violations the checker must reject, legal histories it must accept, and generated
//! histories of a correct register.

use std::time::Duration;
use std::time::Instant;

use crate::Input;
use crate::KeyResult;
use crate::Operation;
use crate::Options;
use crate::Outcome;
use crate::Output;
use crate::Report;
use crate::Verdict;
use crate::Violation;
use crate::check;
use crate::sim;
use crate::sim::SimConfig;
use crate::sim::simulate;

fn get(client: u64, call: u64, ret: u64, v: Option<&str>) -> Operation {
    Operation::ok(client, "k", Input::Get, call, ret, Output::Get(v.map(String::from)))
}

fn put(client: u64, call: u64, ret: u64, v: &str) -> Operation {
    Operation::ok(client, "k", Input::Put(v.into()), call, ret, Output::Put)
}

fn put_unknown(client: u64, call: u64, v: &str) -> Operation {
    Operation::unknown(client, "k", Input::Put(v.into()), call)
}

fn del(client: u64, call: u64, ret: u64, existed: bool) -> Operation {
    Operation::ok(client, "k", Input::Delete, call, ret, Output::Delete(existed))
}

fn cas_input(expect: Option<&str>, new: &str) -> Input {
    Input::Cas { expect: expect.map(String::from), new: new.into() }
}

fn cas(client: u64, call: u64, ret: u64, expect: Option<&str>, new: &str, ok: bool) -> Operation {
    Operation::ok(client, "k", cas_input(expect, new), call, ret, Output::Cas(ok))
}

fn opts() -> Options {
    Options { per_key_limit: Duration::from_secs(10), threads: 1 }
}

#[track_caller]
fn accepted(history: &[Operation]) {
    let report = check(history, &opts());
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
}

#[track_caller]
fn rejected(history: &[Operation]) -> Violation {
    let report = check(history, &opts());
    assert_eq!(report.verdict, Verdict::NotLinearizable, "{report}");
    report.violations().next().cloned().expect("a violation window")
}

// ---- violations that must be rejected

#[test]
fn stale_read() {
    rejected(&[put(0, 0, 1, "a"), put(0, 2, 3, "b"), get(1, 4, 5, Some("a"))]);
}

#[test]
fn lost_acknowledged_write() {
    rejected(&[put(0, 0, 1, "a"), get(1, 100, 101, None)]);
    rejected(&[put(0, 0, 1, "a"), put(1, 2, 3, "b"), get(2, 4, 5, Some("a")), get(2, 6, 7, Some("b"))]);
}

#[test]
fn lost_update_two_cas_from_the_same_value() {
    // Both compare-and-sets from "a" succeed one after the other: one overwrote the other.
    rejected(&[put(0, 0, 1, "a"), cas(1, 2, 3, Some("a"), "b", true), cas(2, 4, 5, Some("a"), "c", true)]);
    // Concurrent, still only one of them can see "a".
    rejected(&[put(0, 0, 1, "a"), cas(1, 2, 10, Some("a"), "b", true), cas(2, 3, 11, Some("a"), "c", true)]);
}

#[test]
fn value_flipping_back() {
    // Two concurrent writes may land in either order, but readers cannot see a -> b -> a.
    let writes = [put(0, 0, 10, "a"), put(1, 1, 9, "b")];
    let reads = [get(2, 11, 12, Some("a")), get(2, 13, 14, Some("b")), get(3, 15, 16, Some("a"))];
    rejected(&[writes.as_slice(), &reads].concat());
}

#[test]
fn deleted_value_coming_back() {
    rejected(&[put(0, 0, 1, "a"), del(1, 2, 3, true), get(2, 4, 5, Some("a"))]);
    rejected(&[put(0, 0, 1, "a"), del(1, 2, 3, true), get(2, 4, 5, None), get(2, 6, 7, Some("a"))]);
}

#[test]
fn unknown_write_seen_then_unseen() {
    rejected(&[put_unknown(0, 0, "a"), get(1, 5, 6, Some("a")), get(1, 7, 8, None)]);
}

#[test]
fn delete_of_an_absent_key_cannot_report_it_existed() {
    rejected(&[del(0, 0, 1, true)]);
    rejected(&[put(0, 0, 1, "a"), del(1, 2, 3, false)]);
}

#[test]
fn failed_write_seen() {
    rejected(&[Operation::failed(0, "k", Input::Put("a".into()), 0), get(1, 5, 6, Some("a"))]);
}

#[test]
fn cas_outputs_must_match_the_value() {
    // It reported failure although the value was the expected one.
    rejected(&[put(0, 0, 1, "a"), cas(1, 2, 3, Some("a"), "b", false)]);
    // It reported success against a value the key did not hold.
    rejected(&[put(0, 0, 1, "a"), cas(1, 2, 3, None, "b", true)]);
    // Its write was lost.
    rejected(&[put(0, 0, 1, "a"), cas(1, 2, 3, Some("a"), "b", true), get(2, 4, 5, Some("a"))]);
}

#[test]
fn a_read_of_a_value_nobody_wrote() {
    rejected(&[put(0, 0, 1, "a"), get(1, 2, 3, Some("z"))]);
}

// ---- legal histories that must be accepted

#[test]
fn empty_and_sequential_histories() {
    accepted(&[]);
    accepted(&[put(0, 0, 1, "a"), get(0, 2, 3, Some("a")), del(0, 4, 5, true), get(0, 6, 7, None)]);
    accepted(&[get(0, 0, 1, None), del(0, 2, 3, false)]);
}

#[test]
fn concurrent_writes_in_either_order() {
    let writes = [put(0, 0, 10, "a"), put(1, 1, 9, "b")];
    accepted(&[writes.as_slice(), &[get(2, 11, 12, Some("a"))]].concat());
    accepted(&[writes.as_slice(), &[get(2, 11, 12, Some("b"))]].concat());
    // A read concurrent with both may see either, or neither.
    accepted(&[writes.as_slice(), &[get(2, 2, 3, None), get(3, 4, 5, Some("b")), get(2, 6, 7, Some("a"))]].concat());
}

#[test]
fn a_call_at_the_instant_of_a_return_counts_as_concurrent() {
    // The read was called at the instant the write returned: either order is allowed.
    accepted(&[put(0, 0, 5, "a"), get(1, 5, 6, None)]);
    rejected(&[put(0, 0, 5, "a"), get(1, 6, 7, None)]);
}

#[test]
fn unknown_write_seen_late() {
    // Called at 0, it takes effect long after its client gave up, after another write.
    accepted(&[
        put_unknown(0, 0, "a"),
        put(1, 1, 2, "b"),
        get(1, 3, 4, Some("b")),
        get(2, 1_000_000, 1_000_001, Some("b")),
        get(2, 9_000_000, 9_000_001, Some("a")),
        get(2, 9_000_002, 9_000_003, Some("a")),
    ]);
}

#[test]
fn unknown_write_never_seen() {
    accepted(&[put_unknown(0, 0, "a"), get(1, 5, 6, None), put(1, 7, 8, "b"), get(1, 9, 10, Some("b"))]);
}

#[test]
fn unknown_write_explains_an_existing_key() {
    // Nobody reads its value, but the delete saw the key present: only the unknown put explains it.
    accepted(&[put_unknown(0, 0, "a"), get(1, 1, 2, None), del(1, 3, 4, true), get(1, 5, 6, None)]);
    rejected(&[put_unknown(0, 10, "a"), get(1, 1, 2, None), del(1, 3, 4, true)]);
}

#[test]
fn failed_write_never_seen() {
    accepted(&[put(0, 0, 1, "a"), Operation::failed(1, "k", Input::Put("b".into()), 2), get(2, 10, 11, Some("a"))]);
}

#[test]
fn reads_without_answers_are_dropped() {
    accepted(&[
        put(0, 0, 1, "a"),
        Operation::unknown(1, "k", Input::Get, 2),
        Operation::failed(1, "k", Input::Get, 3),
        get(0, 4, 5, Some("a")),
    ]);
}

#[test]
fn cas_success_and_failure() {
    accepted(&[
        cas(0, 0, 1, None, "a", true),
        cas(1, 2, 3, None, "b", false),
        cas(0, 4, 5, Some("a"), "c", true),
        cas(1, 6, 7, Some("a"), "d", false),
        get(2, 8, 9, Some("c")),
        del(2, 10, 11, true),
        cas(0, 12, 13, Some("c"), "e", false),
        cas(0, 14, 15, None, "f", true),
        get(1, 16, 17, Some("f")),
    ]);
    // Two concurrent compare-and-sets from the same value: exactly one may win.
    accepted(&[
        put(0, 0, 1, "a"),
        cas(1, 2, 10, Some("a"), "b", true),
        cas(2, 3, 11, Some("a"), "c", false),
        get(0, 12, 13, Some("b")),
    ]);
}

#[test]
fn unknown_cas_may_or_may_not_apply() {
    let base = [put(0, 0, 1, "a"), Operation::unknown(1, "k", cas_input(Some("a"), "b"), 2)];
    accepted(&[base.as_slice(), &[get(2, 10, 11, Some("b"))]].concat());
    accepted(&[base.as_slice(), &[get(2, 10, 11, Some("a"))]].concat());
    accepted(&[base.as_slice(), &[get(2, 10, 11, Some("a")), get(2, 12, 13, Some("b"))]].concat());
    rejected(&[base.as_slice(), &[get(2, 10, 11, Some("b")), get(2, 12, 13, Some("a"))]].concat());
    // It cannot apply against a value it does not expect.
    rejected(&[put(0, 0, 1, "z"), Operation::unknown(1, "k", cas_input(Some("a"), "b"), 2), get(2, 10, 11, Some("b"))]);
}

#[test]
fn unknown_delete_may_or_may_not_apply() {
    let base = [put(0, 0, 1, "a"), Operation::unknown(1, "k", Input::Delete, 2)];
    accepted(&[base.as_slice(), &[get(2, 10, 11, Some("a")), get(2, 12, 13, None)]].concat());
    accepted(&[base.as_slice(), &[get(2, 10, 11, Some("a")), put(2, 12, 13, "b"), get(2, 14, 15, Some("b"))]].concat());
    rejected(&[base.as_slice(), &[get(2, 10, 11, None), get(2, 12, 13, Some("a"))]].concat());
}

#[test]
fn keys_are_independent() {
    // Each key on its own is fine; a reader seeing the writes out of order across keys
    // is allowed for per-key linearizability.
    let k = |key: &str, mut op: Operation| {
        op.key = key.into();
        op
    };
    let h = [
        k("x", put(0, 0, 1, "a")),
        k("y", put(0, 2, 3, "b")),
        k("y", get(1, 4, 5, Some("b"))),
        k("x", get(1, 6, 7, Some("a"))),
        k("z", put(2, 0, 1, "c")),
        k("z", get(2, 2, 3, None)),
    ];
    let report = check(&h, &opts());
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let verdicts: Vec<(&str, Verdict)> = report.keys.iter().map(|k| (k.key.as_str(), k.result.verdict())).collect();
    assert_eq!(verdicts, [("x", Verdict::Linearizable), ("y", Verdict::Linearizable), ("z", Verdict::NotLinearizable)]);
}

// ---- the report

#[test]
fn the_window_names_the_stale_read() {
    let v = rejected(&[
        put(0, 0, 1_000_000, "a"),
        put(0, 2_000_000, 3_000_000, "b"),
        get(1, 2_500_000, 2_600_000, Some("b")),
        get(2, 4_000_000, 5_000_000, Some("a")),
        put(0, 6_000_000, 7_000_000, "c"),
    ]);
    assert_eq!(v.stuck, get(2, 4_000_000, 5_000_000, Some("a")));
    assert_eq!(v.value.as_deref(), Some("b"));
    assert_eq!(v.writer, Some(put(0, 2_000_000, 3_000_000, "b")));
    assert_eq!(v.linearized, 3);
    assert_eq!(v.ops, 5);
    assert!(v.concurrent.is_empty(), "{v}");
    let text = v.to_string();
    assert!(text.contains("4.000 ms ..      5.000 ms] client 2     get -> \"a\"\n"), "{text}");
    assert!(text.contains("the value \"b\", written by\n    [     2.000 ms"), "{text}");
}

#[test]
fn the_window_lists_the_concurrent_operations() {
    // The last read overlaps a write of "c": neither order explains "a".
    let v = rejected(&[
        put(0, 0, 1, "a"),
        put(0, 2, 3, "b"),
        put(1, 4, 20, "c"),
        get(2, 5, 10, Some("a")),
        put_unknown(3, 6, "d"),
    ]);
    assert_eq!(v.stuck, get(2, 5, 10, Some("a")));
    // The window places the most known operations and guesses no unknown outcome.
    assert_eq!(v.writer, Some(put(1, 4, 20, "c")));
    assert_eq!(v.value.as_deref(), Some("c"));
    assert_eq!(v.concurrent, [put_unknown(3, 6, "d")]);
    assert!(v.recent.is_empty(), "{v}");
}

#[test]
fn report_display_summarizes() {
    let ok = check(&[put(0, 0, 1, "a"), get(0, 2, 3, Some("a"))], &opts());
    assert!(ok.to_string().starts_with("linearizable: 1 keys, 2 operations"), "{ok}");
    let bad = check(&[put(0, 0, 1, "a"), get(0, 2, 3, None)], &opts());
    let text = bad.to_string();
    assert!(text.starts_with("NOT linearizable (1 keys)"), "{text}");
    assert!(text.contains("key \"k\" is not linearizable"), "{text}");
}

#[test]
fn a_malformed_operation_is_not_a_pass() {
    let report = check(&[Operation::ok(0, "k", Input::Get, 0, 1, Output::Put)], &opts());
    assert_eq!(report.verdict, Verdict::Unknown, "{report}");
    let report = check(&[put(0, 5, 1, "a")], &opts());
    assert_eq!(report.verdict, Verdict::Unknown, "{report}");
    assert!(report.to_string().contains("before its call"), "{report}");
}

// ---- the time limit

/// Thirty concurrent writes and unknown writes, then a read of a value nobody wrote: proving it
/// impossible means trying every subset of the writes.
fn pathological() -> Vec<Operation> {
    let mut h: Vec<Operation> = (0..30).map(|i| put(i, 0, 100, &format!("v{i}"))).collect();
    h.extend((0..30).map(|i| put_unknown(100 + i, 0, &format!("u{i}"))));
    h.push(get(200, 10, 11, Some("nobody wrote this")));
    h.extend((0..30).map(|i| get(201, 200 + 2 * i, 201 + 2 * i, Some(&format!("u{i}")))));
    h
}

#[test]
fn the_time_limit_gives_unknown_not_a_pass() {
    let opts = Options { per_key_limit: Duration::from_millis(1), threads: 1 };
    let report = check(&pathological(), &opts);
    assert_eq!(report.verdict, Verdict::Unknown, "{report}");
    assert!(matches!(report.keys[0].result, KeyResult::Unknown(crate::GaveUp::TimeLimit { .. })));
    assert!(report.to_string().contains("time limit of 1ms reached"), "{report}");
    // A violation elsewhere still wins over a key given up on.
    let mut h = pathological();
    h.extend([put(0, 0, 1, "a"), get(0, 2, 3, None)].map(|mut o| {
        o.key = "other".into();
        o
    }));
    assert_eq!(check(&h, &opts).verdict, Verdict::NotLinearizable);
}

// ---- generated histories

fn check_generated(cfg: &SimConfig) -> (Vec<Operation>, Report) {
    let h = simulate(cfg);
    assert_eq!(h.len(), cfg.ops);
    let started = Instant::now();
    let report = check(&h, &Options { per_key_limit: Duration::from_secs(60), threads: 2 });
    eprintln!("{} ops, {} keys: {:?}, {} steps", h.len(), cfg.keys, started.elapsed(), {
        report.keys.iter().map(|k| k.steps).sum::<u64>()
    });
    (h, report)
}

#[test]
fn the_simulator_produces_unknown_and_failed_outcomes() {
    let h = simulate(&SimConfig { ops: 5_000, ..SimConfig::default() });
    let unknown = h.iter().filter(|o| o.outcome == Outcome::Unknown).count();
    let failed = h.iter().filter(|o| o.outcome == Outcome::Failed).count();
    let cas_ok = h.iter().filter(|o| matches!(&o.outcome, Outcome::Ok { output: Output::Cas(true), .. })).count();
    assert!(unknown > 20 && failed > 10 && cas_ok > 50, "{unknown} unknown, {failed} failed, {cas_ok} cas");
    assert_eq!(h, simulate(&SimConfig { ops: 5_000, ..SimConfig::default() }), "seeded");
}

#[test]
fn a_large_generated_history_is_linearizable_and_one_stale_read_is_caught() {
    let cfg = SimConfig { ops: 20_000, seed: 7, ..SimConfig::default() };
    let (mut h, report) = check_generated(&cfg);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
    assert_eq!(report.keys.len(), cfg.keys);

    let r = sim::stale_read(&mut h).expect("a read to corrupt");
    let report = check(&h, &Options { per_key_limit: Duration::from_secs(60), threads: 2 });
    assert_eq!(report.verdict, Verdict::NotLinearizable, "{report}");
    let v: Vec<&Violation> = report.violations().collect();
    assert_eq!(v.len(), 1, "{report}");
    assert_eq!(v[0].key, h[r].key);
    assert_eq!(v[0].stuck, h[r], "{report}");
}

#[test]
fn a_long_history_of_one_key() {
    // Deep enough to overflow a recursive search's stack in a debug build.
    let cfg = SimConfig { ops: 30_000, keys: 1, clients: 3, seed: 5, ..SimConfig::default() };
    let (_, report) = check_generated(&cfg);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
}

#[test]
fn a_hot_key_with_many_concurrent_clients() {
    let cfg = SimConfig { ops: 10_000, keys: 2, seed: 11, ..SimConfig::default() };
    let (mut h, report) = check_generated(&cfg);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
    let r = sim::stale_read(&mut h).expect("a read to corrupt");
    let report = check(&h, &Options { per_key_limit: Duration::from_secs(60), threads: 2 });
    assert_eq!(report.verdict, Verdict::NotLinearizable, "{report}");
    let v = report.violations().next().expect("a violation");
    assert_eq!(v.key, h[r].key);
    assert!(v.stuck == h[r] || v.concurrent.contains(&h[r]), "{report}");
}

// ---- against a brute-force reference

/// Tries every order (and every subset of the unknown operations) that respects real time:
/// the definition, with no pruning.
fn reference(h: &[Operation]) -> bool {
    let ops: Vec<&Operation> = h
        .iter()
        .filter(|o| !matches!((&o.input, &o.outcome), (_, Outcome::Failed) | (Input::Get, Outcome::Unknown)))
        .collect();
    fn step(op: &Operation, state: &Option<String>) -> Option<Option<String>> {
        let out = match &op.outcome {
            Outcome::Ok { output, .. } => Some(output),
            _ => None,
        };
        match (&op.input, out) {
            (Input::Get, Some(Output::Get(v))) => (v == state).then(|| state.clone()),
            (Input::Put(v), _) => Some(Some(v.clone())),
            (Input::Delete, Some(Output::Delete(e))) => (*e == state.is_some()).then_some(None),
            (Input::Delete, None) => Some(None),
            (Input::Cas { expect, new }, Some(Output::Cas(true))) => (expect == state).then(|| Some(new.clone())),
            (Input::Cas { expect, .. }, Some(Output::Cas(false))) => (expect != state).then(|| state.clone()),
            (Input::Cas { expect, new }, None) => Some(if expect == state { Some(new.clone()) } else { state.clone() }),
            _ => None,
        }
    }
    fn go(ops: &[&Operation], done: &mut Vec<bool>, state: Option<String>) -> bool {
        let pending_known = (0..ops.len()).filter(|&i| !done[i] && ops[i].ret().is_some());
        let Some(first_ret) = pending_known.filter_map(|i| ops[i].ret()).min() else { return true };
        for i in 0..ops.len() {
            if done[i] || ops[i].call > first_ret {
                continue;
            }
            if let Some(next) = step(ops[i], &state) {
                done[i] = true;
                if go(ops, done, next) {
                    return true;
                }
                done[i] = false;
            }
        }
        false
    }
    go(&ops, &mut vec![false; ops.len()], None)
}

/// A small random history over a few repeated values; `sim` makes it come from a real
/// register (then maybe corrupts one output), otherwise outputs are random.
fn random_history(rng: &mut u64, n: usize, sim: bool) -> Vec<Operation> {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let values = ["a", "b", "c"];
    let mut h = Vec::new();
    let mut register: Option<String> = None;
    let mut t = 0;
    for i in 0..n {
        let call = if next() % 3 == 0 { t } else { next() % 12 };
        t = call;
        let ret = call + next() % 8;
        let v = values[(next() % 3) as usize].to_string();
        let maybe = |x: u64| (!x.is_multiple_of(4)).then(|| values[(x % 3) as usize].to_string());
        let input = match next() % 8 {
            0..=2 => Input::Get,
            3..=4 => Input::Put(v),
            5 => Input::Delete,
            _ => Input::Cas { expect: maybe(next()), new: v },
        };
        // Outputs as a register applying the operations in call order would give.
        let output = match &input {
            Input::Get => Output::Get(register.clone()),
            Input::Put(v) => {
                register = Some(v.clone());
                Output::Put
            }
            Input::Delete => Output::Delete(register.take().is_some()),
            Input::Cas { expect, new } => {
                let ok = *expect == register;
                if ok {
                    register = Some(new.clone());
                }
                Output::Cas(ok)
            }
        };
        let output = if sim && next() % 6 != 0 {
            output
        } else {
            match &input {
                Input::Get => Output::Get(maybe(next())),
                Input::Put(_) => Output::Put,
                Input::Delete => Output::Delete(next() % 2 == 0),
                Input::Cas { .. } => Output::Cas(next() % 2 == 0),
            }
        };
        let outcome = match next() % 10 {
            0..=1 if !matches!(input, Input::Get) => Outcome::Unknown,
            2 => Outcome::Failed,
            _ => Outcome::Ok { output, ret },
        };
        h.push(Operation { client: i as u64, key: "k".into(), input, call, outcome });
    }
    h
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let (mut yes, mut no) = (0, 0);
    for round in 0..20_000 {
        let n = 1 + round % 8;
        let h = random_history(&mut rng, n, round % 2 == 0);
        let expected = reference(&h);
        let report = check(&h, &opts());
        let got = report.verdict == Verdict::Linearizable;
        assert_ne!(report.verdict, Verdict::Unknown, "{report}");
        assert_eq!(got, expected, "round {round}: checker says {report}\nfor {h:#?}");
        if expected { yes += 1 } else { no += 1 }
    }
    assert!(yes > 3_000 && no > 3_000, "{yes} linearizable, {no} not");
}

/// The same with longer histories and more unknown outcomes. Every run does a few thousand
/// rounds per seed; `LINCHECK_ROUNDS=300000 cargo test --release -p radiant-lincheck` explores
/// far more after a change to the search.
#[test]
fn agrees_with_brute_force_at_length() {
    let rounds: usize = std::env::var("LINCHECK_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(2_000);
    for seed in 1..=4u64 {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(seed);
        let (mut yes, mut no) = (0, 0);
        for round in 0..rounds {
            let n = 1 + round % 11;
            let mut h = random_history(&mut rng, n, round % 3 != 0);
            if seed > 2 {
                for (i, o) in h.iter_mut().enumerate() {
                    if o.input != Input::Get && (rng >> i) & 1 == 1 {
                        o.outcome = Outcome::Unknown;
                    }
                }
            }
            let expected = reference(&h);
            let report = check(&h, &opts());
            assert_eq!(report.verdict == Verdict::Linearizable, expected, "round {round}: {report}\n{h:#?}");
            if expected { yes += 1 } else { no += 1 }
        }
        eprintln!("seed {seed}: {yes} yes {no} no");
    }
}
