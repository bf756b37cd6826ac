//! What the case catalogue (`tests/catalogue.rs`) cannot say about `Ingest`: the values lines
//! decode to (the catalogue states them as stored windows, which only the server has), the
//! timers with time passed in (the catalogue's timer cases run on a real clock over sockets),
//! and the driver's decisions. Bytes come from the catalogue where a case has them, so no
//! transcript is written twice.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use plotstream_cases::{catalogue, payload, Item, Program};

use super::*;
use crate::{Limits, Status, Value};

/// The bytes of the DSL `text` (docs/reliability.md §8), tokens as written (`tok1`).
fn dsl(text: &str) -> String {
    let items = Program::parse(text).unwrap().eval(&[]).unwrap();
    String::from_utf8(payload(&items)).unwrap()
}

/// The items of a catalogue variant (`""` for a one-variant case), with its fixed tokens.
fn case_items(id: &str, variant: &str) -> (Vec<Item>, Vec<(String, String)>) {
    let cases = catalogue().unwrap();
    let case = cases.iter().find(|c| c.id == id).unwrap();
    let v = case.variants.iter().find(|v| v.name == variant).unwrap();
    let subst = case.fixed_tokens();
    (v.bytes.as_ref().unwrap().eval(&subst).unwrap(), subst)
}

/// The updates a catalogue variant's bytes decode to, each with its token's placeholder.
fn updates(id: &str, variant: &str) -> Vec<(String, Update)> {
    let (items, subst) = case_items(id, variant);
    let (events, _) = run_to_end(IngestConfig::default(), &[&payload(&items)], true);
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Update { token, update } => {
                let name = subst
                    .iter()
                    .find(|(_, t)| t == token.as_str())
                    .map_or_else(|| token.as_str().to_owned(), |(p, _)| p.clone());
                Some((name, update))
            }
            _ => None,
        })
        .collect()
}

/// The value of `key` in an update's data.
fn attr<'a>(update: &'a Update, key: &str) -> &'a Value {
    &update
        .data
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .unwrap()
        .1
}

fn str_value(s: &str) -> Value {
    Value::Str(s.into())
}

// ---- decoded values --------------------------------------------------------------------------

#[test]
fn c1_c2_lines_keep_their_order_and_arrays_are_one_update() {
    let xs: Vec<Value> = updates("C1", "")
        .iter()
        .map(|(_, u)| attr(u, "x").clone())
        .collect();
    assert_eq!(xs, [1.0, 2.0, 3.0].map(Value::Number));
    let c2 = updates("C2", "");
    assert_eq!(c2.len(), 1);
    assert!(matches!(attr(&c2[0].1, "x"), Value::Array(v) if v.len() == 3));
}

#[test]
fn c18_c19_values_are_kept_verbatim() {
    let script = updates("C18", "script tag");
    assert_eq!(
        attr(&script[0].1, "x"),
        &str_value("<script>alert(1)</script>")
    );
    let escaped = updates("C18", "escaped NUL, U+2028, LF, CR");
    assert_eq!(attr(&escaped[0].1, "x"), &str_value("a\0\u{2028}\nb\r"));
    let numbers = updates("C19", "");
    assert_eq!(
        attr(&numbers[0].1, "x"),
        &Value::Number(9_007_199_254_740_992.0)
    );
    assert!(
        matches!(attr(&numbers[0].1, "y"), Value::Number(y) if *y == 0.0 && y.is_sign_negative())
    );
}

#[test]
fn c22_a_line_token_routes_the_line_and_is_not_data() {
    let out = updates("C22", "");
    assert_eq!(out[0].0, "tok2");
    assert_eq!(out[0].1.data.len(), 2, "streamtoken is not data");
    assert_eq!(out[1].0, "tok1");
}

/// T0 is the epoch in `run_to_end`, so x = n ms converts to 1970-01-01 00:00:00.n UTC in the
/// head's zone.
#[test]
fn real_clients_timestamps_convert_in_their_zone() {
    // Arduino v2, "America/Montreal" quoted: x = 1000 ms is 19:00:01 the evening before.
    let q4 = updates("Q4", "");
    assert_eq!(q4[1].0, "zyxwvu9876");
    assert_eq!(
        attr(&q4[1].1, "x"),
        &str_value("1969-12-31 19:00:01.000000")
    );
    let v4 = updates("V4", "the §2.11 bytes");
    assert_eq!(
        attr(&v4[0].1, "x"),
        &str_value("1969-12-31 19:00:01.500000")
    );
    // The old Arduino API, the zone unquoted.
    let q5 = updates("Q5", "");
    assert_eq!(
        attr(&q5[0].1, "x"),
        &str_value("1969-12-31 19:00:00.010000")
    );
    // ESP8266HTTPClient: x a string of digits, y a string kept as one.
    let q6 = updates("Q6", "");
    assert_eq!(
        attr(&q6[0].1, "x"),
        &str_value("1969-12-31 20:00:12.345000")
    );
    assert_eq!(attr(&q6[0].1, "y"), &str_value("7"));
    // The ESP8266 one-shot sketch, Melbourne (UTC+10 in January 1970, before its first DST).
    let (items, _) = case_items("V8", "");
    let (events, _) = run_to_end(IngestConfig::default(), &[&payload(&items)], true);
    let x = events.iter().find_map(|e| match e {
        Event::Update { update, .. } => Some(attr(update, "x").clone()),
        _ => None,
    });
    assert_eq!(x, Some(str_value("1970-01-01 10:00:12.345000")));
}

// ---- timers (exact, with time passed in) ---------------------------------------------------

fn feed(ingest: &mut Ingest, now: Duration, bytes: &str) -> Vec<Event> {
    let mut b = BytesMut::from(bytes.as_bytes());
    ingest.handle_input(now, &mut b);
    drain(ingest, now)
}

fn drain(ingest: &mut Ingest, now: Duration) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(ev) = ingest.poll_event(now) {
        if matches!(ev, Event::Head(_)) {
            ingest.admit(now, SystemTime::UNIX_EPOCH);
        }
        out.push(ev);
    }
    out
}

fn fire(ingest: &mut Ingest, now: Duration) -> Option<(Option<u16>, EndReason)> {
    ingest.handle_timeout(now);
    drain(ingest, now).into_iter().find_map(|e| match e {
        Event::End(end) => Some((end.status.map(|s| s.code()), end.reason)),
        _ => None,
    })
}

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn e1_pre_head_silent_close_at_60s() {
    let mut i = Ingest::new(IngestConfig::default(), S(0));
    assert_eq!(i.poll_timeout(), Some(S(60)));
    assert_eq!(fire(&mut i, S(59)), None);
    assert_eq!(fire(&mut i, S(60)), Some((None, EndReason::PreHeadTimeout)));
}

#[test]
fn e2_head_deadline_counts_from_the_first_byte() {
    let mut i = Ingest::new(IngestConfig::default(), S(0));
    feed(&mut i, S(5), "P");
    for t in 6..15 {
        feed(&mut i, S(t), "O");
        assert_eq!(
            i.poll_timeout(),
            Some(S(15)),
            "later bytes do not extend it"
        );
    }
    assert_eq!(
        fire(&mut i, S(15)),
        Some((Some(408), EndReason::HeadTimeout))
    );
}

#[test]
fn e3_e5_e6_idle_counts_completed_lines_only() {
    let mut i = Ingest::new(IngestConfig::default(), S(0));
    feed(&mut i, S(1), &dsl("H"));
    assert_eq!(i.poll_timeout(), Some(S(61)));
    feed(&mut i, S(10), &dsl("c(P1)"));
    assert_eq!(i.poll_timeout(), Some(S(70)));
    // Partial lines, size digits, extensions and empty lines never reset it.
    feed(&mut i, S(20), "1\r\n{\r\n");
    feed(&mut i, S(30), "0");
    feed(&mut i, S(40), "1;a=b");
    assert_eq!(i.poll_timeout(), Some(S(70)));
    assert_eq!(fire(&mut i, S(69)), None);
    assert_eq!(
        fire(&mut i, S(70)),
        Some((Some(408), EndReason::IdleTimeout))
    );
}

#[test]
fn e4_heartbeats_keep_a_stream_alive() {
    let mut i = Ingest::new(IngestConfig::default(), S(0));
    feed(&mut i, S(0), &dsl("H"));
    for k in 1..=11 {
        let chunk = if k % 2 == 0 {
            dsl("c(\"\\n\")")
        } else {
            "2\r\n\r\n\r\n".to_owned()
        };
        feed(&mut i, S(55 * k), &chunk);
        assert_eq!(fire(&mut i, S(55 * k + 1)), None);
    }
    assert!(!i.is_ended());
}

#[test]
fn e13_unbound_connection_gets_406_despite_heartbeats() {
    let mut i = Ingest::new(IngestConfig::default(), S(0));
    feed(&mut i, S(0), &dsl("Hn"));
    feed(&mut i, S(20), &dsl("c(\"\\n\")"));
    feed(&mut i, S(40), &dsl("c(\"\\n\")"));
    assert_eq!(i.poll_timeout(), Some(S(60)));
    assert_eq!(fire(&mut i, S(60)), Some((Some(406), EndReason::Unbound)));
    // A data line with its own token binds the connection.
    let mut i = Ingest::new(IngestConfig::default(), S(0));
    feed(&mut i, S(0), &dsl("Hn"));
    feed(
        &mut i,
        S(30),
        &dsl(r#"c("{\"x\":1,\"streamtoken\":\"tok2\"}\n")"#),
    );
    assert_eq!(i.poll_timeout(), Some(S(90)));
}

#[test]
fn e12_chart_studio_pauses_are_fine() {
    // Q1's transcript: chart_studio's head, then its writes a second apart.
    let (items, _) = case_items("Q1", "0.5 s after the head");
    let Item::Bytes(head) = &items[0] else {
        panic!("Q1 starts with its head: {items:?}")
    };
    let mut i = Ingest::new(IngestConfig::default(), S(0));
    feed(&mut i, S(0), std::str::from_utf8(head).unwrap());
    let evs = feed(&mut i, S(1), &dsl("c(P1)"));
    assert!(matches!(evs[0], Event::Update { .. }));
    let evs = feed(&mut i, S(2), "\r\n0\r\n\r\n");
    assert!(matches!(&evs[..], [Event::End(e)] if e.status.map(|s| s.code()) == Some(200)));
}

#[test]
fn driver_decisions_take_effect_at_once() {
    // reject_line: the refused line does not count, nothing after it is decoded.
    let mut i = Ingest::new(IngestConfig::default(), S(0));
    let mut b = BytesMut::from(dsl("H c(P1) c(P2)").as_bytes());
    i.handle_input(S(0), &mut b);
    assert!(matches!(i.poll_event(S(0)), Some(Event::Head(_))));
    i.admit(S(0), SystemTime::UNIX_EPOCH);
    assert!(matches!(i.poll_event(S(0)), Some(Event::Update { .. })));
    assert!(matches!(i.poll_event(S(0)), Some(Event::Update { .. })));
    i.reject_line(Status::NOT_FOUND);
    assert!(
        matches!(i.poll_event(S(0)), Some(Event::End(e)) if e.n_points == 1 && e.status.map(|s| s.code()) == Some(404))
    );
    assert_eq!(i.poll_event(S(0)), None);
    // close_with at the head: no 100 Continue is sent.
    let mut i = Ingest::new(IngestConfig::default(), S(0));
    let mut b = BytesMut::from(dsl("H[+Expect: 100-continue]").as_bytes());
    i.handle_input(S(0), &mut b);
    assert!(matches!(i.poll_event(S(0)), Some(Event::Head(_))));
    i.close_with(Status::NOT_FOUND);
    let mut out = Vec::new();
    assert!(matches!(i.poll_event(S(0)), Some(Event::End(_))));
    i.poll_transmit(&mut out);
    assert!(out.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
}

#[test]
fn limits_are_configurable() {
    let limits = Limits {
        idle: S(5),
        ..Limits::default()
    };
    let mut i = Ingest::new(
        IngestConfig {
            limits,
            lenient_lines: false,
        },
        S(0),
    );
    feed(&mut i, S(0), &dsl("H"));
    assert_eq!(i.poll_timeout(), Some(S(5)));
}
