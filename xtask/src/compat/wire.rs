//! The byte-level cases of `cargo xtask compat`: docs/protocol.md's transcripts (§2.9, §2.11–§2.14,
//! §8.2) replayed byte for byte over loopback TCP, and the MUST scenarios V12–V17, each checked by
//! its exact response, by how the connection ended (a FIN, never a reset) and through the
//! inspection API (`GET /api/streams/{token}`), never by the status code alone.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use super::{CaseEnv, Pass};

/// How long any one exchange may take before the case fails.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

// ---- the transcripts, byte for byte -------------------------------------------------------------

/// docs/protocol.md §2.9: chart_studio 1.1.0's head (two different Host lines).
const CHART_STUDIO_HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: stream.example.org:9999\r\nAccept-Encoding: identity\r\nTransfer-Encoding: chunked\r\nHost: stream.example.org\r\nplotly-streamtoken: abcdef1234\r\n\r\n";

/// docs/protocol.md §2.9: the four writes, a heartbeat and `close()`, one `send()` each.
const CHART_STUDIO_BODY: &[&[u8]] = &[
    b"2e\r\n{\"x\": \"2026-01-01 10:00:00.000000\", \"y\": 0.5}\n\r\n",
    b"21\r\n{\"x\": [1, 2, 3], \"y\": [4, 5, 6]}\n\r\n",
    b"1\r\n\n\r\n",
    b"2b\r\n{\"x\": 1, \"y\": 2, \"layout\": {\"title\": \"t\"}}\n\r\n",
    b"31\r\n{\"marker\": {\"color\": \"red\"}, \"x\": [7], \"y\": [8]}\n\r\n",
    b"\r\n0\r\n\r\n",
];

/// docs/protocol.md §2.11: the arduino-api v2 head with its library-default zone, quoted.
const ARDUINO_HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Python\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nplotly-convertTimestamp: \"America/Montreal\"\r\n\r\n";

/// docs/protocol.md §2.11: `convertTimestamp = false`, so `\r\n\r\n` follows `Connection:
/// close\r\n`.
const ARDUINO_HEAD_NO_ZONE: &[u8] = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Python\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\r\n";

/// docs/protocol.md §2.11: three points on two tokens, UPPERCASE sizes, then the last-chunk.
const ARDUINO_BODY: &[u8] = b"33\r\n{\"x\": 1500, \"y\": 512, \"streamtoken\": \"abcdef1234\"}\n\r\n31\r\n{\"x\": 3500, \"y\": 7, \"streamtoken\": \"zyxwvu9876\"}\n\r\n3C\r\n{\"x\": 4294967295, \"y\": -32768, \"streamtoken\": \"abcdef1234\"}\n\r\n0\r\n\r\n";

/// docs/protocol.md §9.2 V5: one point after the extra CRLF of a head without a zone.
const ARDUINO_ONE_POINT: &[u8] =
    b"33\r\n{\"x\": 1500, \"y\": 512, \"streamtoken\": \"abcdef1234\"}\n\r\n0\r\n\r\n";

/// docs/protocol.md §9.2 V6: the size formula `len(x) + len(y) + 44` with a 5-character token.
const ARDUINO_SHORT_TOKEN: &[u8] = b"33\r\n{\"x\": 1500, \"y\": 512, \"streamtoken\": \"short\"}\n\r\n31\r\n{\"x\": 3500, \"y\": 7, \"streamtoken\": \"short\"}\n\r\n0\r\n\r\n";

/// docs/protocol.md §2.12: the old arduino-api (header token, unquoted zone, `+ 15` sizes).
const OLD_ARDUINO: &[u8] = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Python\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nplotly-streamtoken: abcdef1234\r\nplotly-convertTimestamp: America/Montreal\r\n\r\n16\r\n{\"x\": 1500, \"y\": 512}\n\r\n0\r\n\r\n";

/// docs/protocol.md §2.13: the ESP8266 one-shot sketch, one connection per point, lowercase size.
const ESP8266_ONE_SHOT: &[u8] = b"POST / HTTP/1.1\r\nHost: arduino.plot.ly\r\nUser-Agent: Arduino\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nplotly-convertTimestamp: \"Australia/Melbourne\"\r\n\r\n35\r\n{\"x\": 12345, \"y\": 21.5, \"streamtoken\": \"abcdef1234\"}\n\r\n0\r\n\r\n";

/// docs/protocol.md §2.14: the ESP8266HTTPClient sketch, `Content-Length` and no final newline.
const ESP8266_HTTP_CLIENT: &[u8] = b"POST / HTTP/1.1\r\nHost: stream.example.org\r\nUser-Agent: ESP8266HTTPClient\r\nConnection: close\r\nplotly-convertTimestamp: America/Manaus\r\nContent-Type: application/x-www-form-urlencoded\r\nplotly-streamtoken: abcdef1234\r\nContent-Length: 22\r\n\r\n{\"x\":\"12345\", \"y\":\"7\"}";

/// docs/protocol.md §8.2: the Arduino `init()` head, which advertises 212 bytes.
const ARDUINO_INIT_HEAD: &[u8] = b"POST /clientresp HTTP/1.1\r\nHost: 107.21.214.199\r\nUser-Agent: Arduino/0.5.1\r\nContent-Length: 212\r\n\r\n";

/// docs/protocol.md §8.2: the body the Arduino sends: 236 bytes, then a CRLF.
const ARDUINO_INIT_BODY: &[u8] = b"version=0.2&origin=plot&platform=arduino&un=demo&key=demokey123&args=[{\"y\": [], \"x\": [], \"type\": \"scatter\", \"stream\": {\"token\": \"abcdef1234\", \"maxpoints\": 30}}]&kwargs={\"fileopt\": \"overwrite\", \"filename\": \"test\", \"world_readable\": true}";

/// IANA zones of the transcripts and their possible UTC offsets in hours (with and without DST).
const MONTREAL: (&str, &[i64]) = ("America/Montreal", &[-5, -4]);
const MELBOURNE: (&str, &[i64]) = ("Australia/Melbourne", &[10, 11]);
const MANAUS: (&str, &[i64]) = ("America/Manaus", &[-4]);

// ---- the cases -----------------------------------------------------------------------------------

/// V1: the §2.9 transcript, with chart_studio's 0.5 s between the head and the first chunk.
pub(super) fn v1_transcript(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    let mut steps = vec![Step::Send(CHART_STUDIO_HEAD), Step::Sleep(500)];
    for chunk in CHART_STUDIO_BODY {
        steps.push(Step::Sleep(10));
        steps.push(Step::Send(chunk));
    }
    let reply = exchange(server.addr(), &steps)?;
    reply.expect(&ok_response(4))?;
    ensure!(
        reply.after_last_send < Duration::from_millis(100),
        "the FIN came {} ms after the last byte, not within 100 ms (R3)",
        reply.after_last_send.as_millis()
    );
    let state = inspect(server.addr(), "abcdef1234")?;
    expect_field(&state, "last_seq", &json!(4))?;
    expect_field(
        &state,
        "window",
        &json!({"marker.color": ["red"], "x": [7], "y": [8]}),
    )?;
    Ok(Pass(format!(
        "200 \"points\":4, FIN {} ms after the last byte",
        reply.after_last_send.as_millis()
    )))
}

/// V4: the §2.11 transcript: three points on two tokens, x converted in America/Montreal.
pub(super) fn v4_arduino(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    let reply = exchange(
        server.addr(),
        &[Step::Send(ARDUINO_HEAD), Step::Send(ARDUINO_BODY)],
    )?;
    reply.expect(&ok_response(3))?;
    let now = now_micros();
    let first = inspect(server.addr(), "abcdef1234")?;
    let second = inspect(server.addr(), "zyxwvu9876")?;
    expect_field(&first, "last_seq", &json!(2))?;
    expect_field(&second, "last_seq", &json!(1))?;
    expect_field(
        &first,
        "window",
        &window_with_x(&first, json!([512, -32768])),
    )?;
    expect_field(&second, "window", &window_with_x(&second, json!([7])))?;
    let a = converted(&first["window"]["x"][0])?;
    let b = converted(&first["window"]["x"][1])?;
    let c = converted(&second["window"]["x"][0])?;
    // One connection, one T0: the converted values differ exactly as the millis() values do.
    ensure!(
        b - a == (4_294_967_295 - 1500) * 1000 && c - a == (3500 - 1500) * 1000,
        "the converted x {:?} and {:?} do not keep the millis() differences",
        first["window"]["x"],
        second["window"]["x"]
    );
    check_zone(a, 1500, MONTREAL, now)?;
    Ok(Pass(format!(
        "200 \"points\":3 on 2 traces; x 1500 -> {} (America/Montreal)",
        first["window"]["x"][0]
    )))
}

/// V5: a head without a zone, so an extra CRLF before the first size line (K2), one point.
pub(super) fn v5_arduino_no_zone(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    let reply = exchange(
        server.addr(),
        &[
            Step::Send(ARDUINO_HEAD_NO_ZONE),
            Step::Send(ARDUINO_ONE_POINT),
        ],
    )?;
    reply.expect(&ok_response(1))?;
    let state = inspect(server.addr(), "abcdef1234")?;
    expect_field(&state, "last_seq", &json!(1))?;
    expect_field(&state, "window", &json!({"x": [1500], "y": [512]}))?;
    Ok(Pass(
        "the extra CRLF skipped; 200 \"points\":1, x unconverted".into(),
    ))
}

/// V4 and V5 together: the §2.11 body behind a head without a zone.
pub(super) fn v5_arduino_no_zone_two_tokens(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    let reply = exchange(
        server.addr(),
        &[Step::Send(ARDUINO_HEAD_NO_ZONE), Step::Send(ARDUINO_BODY)],
    )?;
    reply.expect(&ok_response(3))?;
    let first = inspect(server.addr(), "abcdef1234")?;
    let second = inspect(server.addr(), "zyxwvu9876")?;
    expect_field(
        &first,
        "window",
        &json!({"x": [1500, 4_294_967_295_u64], "y": [512, -32768]}),
    )?;
    expect_field(&second, "window", &json!({"x": [3500], "y": [7]}))?;
    Ok(Pass("200 \"points\":3 on 2 traces, x unconverted".into()))
}

/// V6: a 5-character token breaks the Arduino's size formula (K16): one line, then `400`.
pub(super) fn v6_arduino_short_token(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    let reply = exchange(
        server.addr(),
        &[Step::Send(ARDUINO_HEAD), Step::Send(ARDUINO_SHORT_TOKEN)],
    )?;
    reply.expect(&error_response(
        400,
        "Bad Request",
        "invalid or malformed request syntax",
    ))?;
    let state = inspect(server.addr(), "short")?;
    expect_field(&state, "last_seq", &json!(1))?;
    ensure!(
        state["window"]["y"] == json!([512]),
        "window {}",
        state["window"]
    );
    Ok(Pass(
        "the line inside the declared 0x33 bytes applied, then 400".into(),
    ))
}

/// V7: the §2.12 transcript: header token, unquoted zone.
pub(super) fn v7_old_arduino(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    let reply = exchange(server.addr(), &[Step::Send(OLD_ARDUINO)])?;
    reply.expect(&ok_response(1))?;
    let now = now_micros();
    let state = inspect(server.addr(), "abcdef1234")?;
    expect_field(&state, "last_seq", &json!(1))?;
    expect_field(&state, "window", &window_with_x(&state, json!([512])))?;
    check_zone(converted(&state["window"]["x"][0])?, 1500, MONTREAL, now)?;
    Ok(Pass(format!(
        "200 \"points\":1; x 1500 -> {} (America/Montreal)",
        state["window"]["x"][0]
    )))
}

/// V8: the §2.13 one-shot request, three times in a row: never `423`.
pub(super) fn v8_esp8266_one_shot(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    for n in 1..=3 {
        let reply = exchange(server.addr(), &[Step::Send(ESP8266_ONE_SHOT)])?;
        reply
            .expect(&ok_response(1))
            .with_context(|| format!("request {n} of 3"))?;
    }
    let now = now_micros();
    let state = inspect(server.addr(), "abcdef1234")?;
    expect_field(&state, "last_seq", &json!(3))?;
    expect_field(
        &state,
        "window",
        &window_with_x(&state, json!([21.5, 21.5, 21.5])),
    )?;
    for x in state["window"]["x"].as_array().into_iter().flatten() {
        check_zone(converted(x)?, 12345, MELBOURNE, now)?;
    }
    Ok(Pass(format!(
        "3 × 200 \"points\":1; x 12345 -> {} (Australia/Melbourne)",
        state["window"]["x"][2]
    )))
}

/// V9: the §2.14 `Content-Length` request without a final newline; x is a string of digits.
pub(super) fn v9_esp8266_http_client(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    let reply = exchange(server.addr(), &[Step::Send(ESP8266_HTTP_CLIENT)])?;
    reply.expect(&ok_response(1))?;
    let now = now_micros();
    let state = inspect(server.addr(), "abcdef1234")?;
    expect_field(&state, "last_seq", &json!(1))?;
    expect_field(&state, "window", &window_with_x(&state, json!(["7"])))?;
    check_zone(converted(&state["window"]["x"][0])?, 12345, MANAUS, now)?;
    Ok(Pass(format!(
        "200 \"points\":1; x \"12345\" -> {} (America/Manaus)",
        state["window"]["x"][0]
    )))
}

/// V12: a line of 65536 bytes without `\n` gets `413` when its last byte arrives, keeping the
/// earlier line; a line of 65536 bytes with its `\n` (L18) is accepted.
pub(super) fn v12_long_line(env: &CaseEnv<'_>) -> Result<Pass> {
    const LIMIT: usize = 64 * 1024;
    let server = env.server(&[])?;
    let mut long = b"{\"x\": 2, \"text\": \"".to_vec();
    long.resize(LIMIT, b'a');
    let mut stream = connect(server.addr())?;
    stream.write_all(&head("v12toolong"))?;
    stream.write_all(&chunk(b"{\"x\": 1, \"y\": 1}\n"))?;
    // One chunk declared larger than the line, so that only the line limit can end it.
    stream.write_all(format!("{:x}\r\n", LIMIT + 100).as_bytes())?;
    stream.write_all(&long[..LIMIT - 1])?;
    thread::sleep(Duration::from_millis(300));
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut probe = [0u8; 1];
    match stream.read(&mut probe) {
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => bail!("the server ended the stream at byte 65535 of the line: {other:?}"),
    }
    stream.write_all(&long[LIMIT - 1..])?;
    let reply = read_reply(&mut stream, Instant::now())?;
    reply.expect(&error_response(413, "Content Too Large", "line too long"))?;
    ensure!(
        reply.after_last_send < Duration::from_secs(1),
        "the 413 came {} ms after byte 65536",
        reply.after_last_send.as_millis()
    );
    let state = inspect(server.addr(), "v12toolong")?;
    expect_field(&state, "last_seq", &json!(1))?;

    // Padded with JSON whitespace: strings (L20) and arrays (L22) have limits of their own.
    let mut line = b"{\"x\": 1,".to_vec();
    line.resize(LIMIT - b"\"y\": 2}\n".len(), b' ');
    line.extend_from_slice(b"\"y\": 2}\n");
    debug_assert_eq!(line.len(), LIMIT);
    let steps = [
        Step::Send(&head("v12justfit")),
        Step::Send(&chunk(&line)),
        Step::Send(b"0\r\n\r\n"),
    ]
    .map(Step::owned);
    let reply = exchange(server.addr(), &steps)?;
    reply.expect(&ok_response(1))?;
    let state = inspect(server.addr(), "v12justfit")?;
    expect_field(&state, "last_seq", &json!(1))?;
    Ok(Pass(
        "65536 bytes without \\n: 413, earlier line kept; 65536 with \\n: accepted".into(),
    ))
}

/// V13: bad JSON ends the stream with `422` after the good lines; `--lenient-lines` skips and
/// counts it.
pub(super) fn v13_bad_json(env: &CaseEnv<'_>) -> Result<Pass> {
    let body = [
        chunk(b"{\"x\":1,\"y\":1}\n"),
        chunk(b"{\"x\":2,\"y\":2}\n"),
        chunk(b"{\"x\":1,\"y\":}\n"),
        chunk(b"{\"x\":4,\"y\":4}\n"),
        b"0\r\n\r\n".to_vec(),
    ]
    .concat();
    let strict = env.server(&[])?;
    let reply = exchange(
        strict.addr(),
        &[Step::Send(&head("v13badjson")), Step::Send(&body)],
    )?;
    reply.expect(&error_response(
        422,
        "Unprocessable Content",
        "json parse error: please stream newline seperated JSON",
    ))?;
    let state = inspect(strict.addr(), "v13badjson")?;
    expect_field(&state, "window", &json!({"x": [1, 2], "y": [1, 2]}))?;

    let lenient = env.server(&["--lenient-lines"])?;
    let reply = exchange(
        lenient.addr(),
        &[Step::Send(&head("v13badjson")), Step::Send(&body)],
    )?;
    reply.expect(&ok_response(3))?;
    let state = inspect(lenient.addr(), "v13badjson")?;
    expect_field(&state, "window", &json!({"x": [1, 2, 4], "y": [1, 2, 4]}))?;
    expect_field(&state, "rejected_lines", &json!(1))?;
    Ok(Pass(
        "strict: 422 after 2 lines; lenient: 200 \"points\":3, 1 rejected".into(),
    ))
}

/// V14: no token header and no `"streamtoken"`: `406` at the line.
pub(super) fn v14_no_token(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    let head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let reply = exchange(
        server.addr(),
        &[
            Step::Send(head),
            Step::Sleep(200),
            Step::Send(&chunk(b"{\"x\":1,\"y\":1}\n")),
        ],
    )?;
    reply.expect(&error_response(
        406,
        "Not Acceptable",
        "bad request header: missing 'plotly-streamtoken'",
    ))?;
    Ok(Pass("406 at the line".into()))
}

/// V15 (takeover, the default): a second writer of a token takes it over; the first gets `423`
/// and a graceful close, the second goes on.
pub(super) fn v15_takeover(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    let mut older = connect(server.addr())?;
    older.write_all(&[head("v15takeovr"), chunk(b"{\"x\":1,\"y\":1}\n")].concat())?;
    thread::sleep(Duration::from_millis(200));
    let mut newer = connect(server.addr())?;
    newer.write_all(&[head("v15takeovr"), chunk(b"{\"x\":2,\"y\":2}\n")].concat())?;
    let reply = read_reply(&mut older, Instant::now())?;
    reply
        .expect(&error_response(
            423,
            "Locked",
            "connection limit associated with this token has been reached",
        ))
        .context("the older writer")?;
    newer.write_all(b"0\r\n\r\n")?;
    read_reply(&mut newer, Instant::now())?
        .expect(&ok_response(1))
        .context("the newer writer")?;
    let state = inspect(server.addr(), "v15takeovr")?;
    expect_field(&state, "window", &json!({"x": [1, 2], "y": [1, 2]}))?;
    Ok(Pass(
        "the older writer got 423 and a FIN, the newer one 200".into(),
    ))
}

/// V15 (`--on-duplicate reject`): the second writer gets `423` right after its head.
pub(super) fn v15_reject(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&["--on-duplicate", "reject"])?;
    let mut older = connect(server.addr())?;
    older.write_all(&[head("v15reject1"), chunk(b"{\"x\":1,\"y\":1}\n")].concat())?;
    thread::sleep(Duration::from_millis(200));
    let reply = exchange(server.addr(), &[Step::Send(&head("v15reject1"))])?;
    reply
        .expect(&error_response(
            423,
            "Locked",
            "connection limit associated with this token has been reached",
        ))
        .context("the newer writer")?;
    older.write_all(&[chunk(b"{\"x\":2,\"y\":2}\n"), b"0\r\n\r\n".to_vec()].concat())?;
    read_reply(&mut older, Instant::now())?
        .expect(&ok_response(2))
        .context("the older writer")?;
    Ok(Pass(
        "the newer writer got 423 after its head; the older one 200 \"points\":2".into(),
    ))
}

/// V16: body framing: `gzip, chunked` → `501`; chunked with `Content-Length` → `400`; neither →
/// `411`.
pub(super) fn v16_framing(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    let cases: [(&[u8], String); 3] = [
        (
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\nplotly-streamtoken: v16framing\r\n\r\n",
            error_response(501, "Not Implemented", "unsupported transfer coding"),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 14\r\nplotly-streamtoken: v16framing\r\n\r\n",
            error_response(400, "Bad Request", "invalid or malformed request syntax"),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: v16framing\r\n\r\n",
            error_response(411, "Length Required", "length required"),
        ),
    ];
    for (request, expected) in &cases {
        exchange(server.addr(), &[Step::Send(request)])?.expect(expected)?;
    }
    Ok(Pass("501, 400, 411".into()))
}

/// V17: the client half-closes in the middle of a line: the complete line stays, the partial
/// one is dropped, and the server answers `400` and closes gracefully.
pub(super) fn v17_fin_mid_line(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    let reply = exchange(
        server.addr(),
        &[
            Step::Send(&head("v17finmid1")),
            Step::Send(b"e\r\n{\"x\":1,\"y\":1}\n\r\n8\r\n{\"x\":2,\""),
            Step::Sleep(50),
            Step::ShutdownWrite,
        ],
    )?;
    reply.expect(&error_response(
        400,
        "Bad Request",
        "invalid or malformed request syntax",
    ))?;
    let state = inspect(server.addr(), "v17finmid1")?;
    expect_field(&state, "window", &json!({"x": [1], "y": [1]}))?;
    Ok(Pass(
        "1 line kept, the partial one dropped; 400 and a FIN".into(),
    ))
}

/// V19: the Arduino's `init()` (§8.2): 212 bytes advertised, 236 sent, then a CRLF. Exactly one
/// response, with `All Streams Go!` and at least one byte after it, then the server's FIN.
pub(super) fn v19_arduino_clientresp(env: &CaseEnv<'_>) -> Result<Pass> {
    ensure!(
        ARDUINO_INIT_BODY.len() == 236,
        "the §8.2 body is {} bytes, not 236",
        ARDUINO_INIT_BODY.len()
    );
    let server = env.server(&[])?;
    let request = [ARDUINO_INIT_HEAD, ARDUINO_INIT_BODY, b"\r\n"].concat();
    let reply = exchange(server.addr(), &[Step::Send(&request)])?;
    ensure!(
        reply.end == End::Fin,
        "the answer ended with {:?}",
        reply.end
    );
    let text = String::from_utf8_lossy(&reply.bytes);
    ensure!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.matches("HTTP/1.1 ").count() == 1,
        "not exactly one 200 response: {text:?}"
    );
    let go = text
        .find("All Streams Go!")
        .with_context(|| format!("no `All Streams Go!` in {text:?}"))?;
    ensure!(
        text.len() > go + "All Streams Go!".len(),
        "nothing follows `All Streams Go!`"
    );
    let (_, body) = text
        .split_once("\r\n\r\n")
        .context("the answer has no body")?;
    let body: Value = serde_json::from_str(body).context("the answer is not JSON")?;
    ensure!(body["error"] == json!(""), "error is {}", body["error"]);
    // kwargs ends 24 bytes past the 212 advertised: it parses only if the whole body was read.
    ensure!(
        body["filename"] == json!("test"),
        "filename is {}: kwargs, which ends after byte 212, was not read whole",
        body["filename"]
    );
    let url = body["url"].as_str().unwrap_or_default();
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or_default();
    ensure!(
        path.starts_with("/~demo/") && !path.ends_with('/'),
        "url {url:?}"
    );
    let state = inspect(server.addr(), "abcdef1234")?;
    expect_field(&state, "maxpoints", &json!(30))?;
    let (status, _) = get(server.addr(), path)?;
    ensure!(status == 200, "GET {path} answered {status}");
    Ok(Pass(format!(
        "the whole body read; one 200 with All Streams Go!, then a FIN; {path} served; abcdef1234 bound with maxpoints 30"
    )))
}

// ---- wire helpers --------------------------------------------------------------------------------

/// One step of an exchange.
#[derive(Debug, Clone)]
enum Step<'a> {
    Send(&'a [u8]),
    /// Milliseconds to wait.
    Sleep(u64),
    /// Half-close: the client's FIN.
    ShutdownWrite,
    /// Bytes built at run time.
    Owned(Vec<u8>),
}

impl Step<'_> {
    /// The step with its bytes copied, so that arrays of steps can borrow temporaries.
    fn owned(self) -> Step<'static> {
        match self {
            Step::Send(bytes) => Step::Owned(bytes.to_vec()),
            Step::Sleep(ms) => Step::Sleep(ms),
            Step::ShutdownWrite => Step::ShutdownWrite,
            Step::Owned(bytes) => Step::Owned(bytes),
        }
    }
}

/// How the server ended the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// A FIN: `read` returned 0. The only acceptable end (docs/protocol.md §4.4).
    Fin,
    /// A reset, which would raise `ConnectionResetError` in chart_studio.
    Reset,
    /// Still open after [`EXCHANGE_TIMEOUT`].
    Timeout,
}

/// What the server sent, how the connection ended, and how long after the last byte sent.
#[derive(Debug)]
struct Reply {
    bytes: Vec<u8>,
    end: End,
    after_last_send: Duration,
}

impl Reply {
    /// Fails unless the server sent exactly `expected` and then a FIN.
    fn expect(&self, expected: &str) -> Result<()> {
        ensure!(
            self.bytes == expected.as_bytes(),
            "the server sent {:?}, not {expected:?}",
            String::from_utf8_lossy(&self.bytes)
        );
        ensure!(
            self.end == End::Fin,
            "the connection ended with {:?} after the response, not a FIN",
            self.end
        );
        Ok(())
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, EXCHANGE_TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Runs `steps` on a fresh connection, then reads until the server closes.
fn exchange(addr: SocketAddr, steps: &[Step<'_>]) -> Result<Reply> {
    let mut stream = connect(addr)?;
    let mut last_send = Instant::now();
    for step in steps {
        match step {
            Step::Send(bytes) => {
                stream.write_all(bytes).context("send")?;
                last_send = Instant::now();
            }
            Step::Owned(bytes) => {
                stream.write_all(bytes).context("send")?;
                last_send = Instant::now();
            }
            Step::Sleep(ms) => thread::sleep(Duration::from_millis(*ms)),
            Step::ShutdownWrite => {
                stream.shutdown(Shutdown::Write).context("shutdown")?;
                last_send = Instant::now();
            }
        }
    }
    read_reply(&mut stream, last_send)
}

/// Reads until EOF, a reset or [`EXCHANGE_TIMEOUT`].
fn read_reply(stream: &mut TcpStream, last_send: Instant) -> Result<Reply> {
    let deadline = Instant::now() + EXCHANGE_TIMEOUT;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let end = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break End::Timeout;
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break End::Fin,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == ErrorKind::ConnectionReset => break End::Reset,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break End::Timeout
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err).context("read"),
        }
    };
    Ok(Reply {
        bytes,
        end,
        after_last_send: last_send.elapsed(),
    })
}

/// A chart_studio-style head naming `token` in its header.
fn head(token: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nplotly-streamtoken: {token}\r\n\r\n"
    )
    .into_bytes()
}

/// One chunk holding `data`, with a lowercase hex size.
fn chunk(data: &[u8]) -> Vec<u8> {
    [
        format!("{:x}\r\n", data.len()).as_bytes(),
        data,
        b"\r\n".as_slice(),
    ]
    .concat()
}

/// The end-of-stream `200` of docs/protocol.md §4.1, byte for byte.
fn ok_response(points: u64) -> String {
    let body = format!(
        "{{\"status\":200,\"message\":\"healthy endpoint disconnect\",\"points\":{points}}}"
    );
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// An error response of docs/protocol.md §4.1, byte for byte.
fn error_response(code: u16, reason: &str, message: &str) -> String {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}",
        message.len()
    )
}

/// `GET path`: the status and the body.
pub(super) fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let reply = exchange(addr, &[Step::Send(request.as_bytes())])?;
    let text = String::from_utf8_lossy(&reply.bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: no complete response in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("GET {path}: bad status line in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// `GET /api/streams/{token}` as JSON.
fn inspect(addr: SocketAddr, token: &str) -> Result<Value> {
    let path = format!("/api/streams/{token}");
    let (status, body) = get(addr, &path)?;
    ensure!(
        status == 200,
        "GET {path} answered {status}: the server has no stream {token}"
    );
    serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body}"))
}

fn expect_field(state: &Value, field: &str, expected: &Value) -> Result<()> {
    ensure!(
        state[field] == *expected,
        "{}: {field} is {}, not {expected}",
        state["token"],
        state[field]
    );
    Ok(())
}

/// `{"x": <the window's own x>, "y": y}`: for windows whose x values are checked separately.
fn window_with_x(state: &Value, y: Value) -> Value {
    json!({"x": state["window"]["x"], "y": y})
}

// ---- converted timestamps ------------------------------------------------------------------------

/// A converted `x` (`YYYY-MM-DD HH:MM:SS.ffffff`, docs/protocol.md §3.7) as microseconds since the
/// epoch, reading the wall-clock time as if it were UTC.
fn converted(x: &Value) -> Result<i64> {
    let text = x
        .as_str()
        .with_context(|| format!("x {x} was not converted to a date string"))?;
    parse_wall_clock(text).with_context(|| format!("x {text:?} is not YYYY-MM-DD HH:MM:SS.ffffff"))
}

fn parse_wall_clock(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let shape = b"dddd-dd-dd dd:dd:dd.dddddd";
    if bytes.len() != shape.len()
        || !bytes.iter().zip(shape).all(|(b, s)| match s {
            b'd' => b.is_ascii_digit(),
            other => b == other,
        })
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text[range].parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second, micros) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((((days * 24 + hour) * 60 + minute) * 60 + second) * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Checks that `x` (a converted wall-clock time) is T0 + `millis` in `zone`, with T0 within a
/// minute before `now`: `x - millis - now` must be one of the zone's UTC offsets, to a minute.
fn check_zone(x: i64, millis: i64, (zone, offsets): (&str, &[i64]), now: i64) -> Result<()> {
    let skew = x - millis * 1000 - now;
    if offsets
        .iter()
        .any(|hours| (skew - hours * 3_600_000_000).abs() <= 60_000_000)
    {
        return Ok(());
    }
    #[allow(clippy::cast_precision_loss)] // for the message only
    let hours = skew as f64 / 3.6e9;
    bail!(
        "x is {hours:.3} h from now (less {millis} ms), not a UTC offset of {zone} ({offsets:?} h)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes after the head of a request.
    fn body_of(request: &[u8]) -> &[u8] {
        let end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        &request[end + 4..]
    }

    /// The chunk sizes of the well-formed transcripts match their data, each chunk ends its
    /// line, and the last-chunk ends the body (the short-token transcript is wrong on purpose).
    #[test]
    fn transcript_chunk_sizes_match_their_data() {
        let transcripts: [(&str, Vec<u8>); 6] = [
            ("§2.9", CHART_STUDIO_BODY.concat()),
            ("§2.11", ARDUINO_BODY.to_vec()),
            (
                "V5",
                [body_of(ARDUINO_HEAD_NO_ZONE), ARDUINO_ONE_POINT].concat(),
            ),
            ("§2.12", body_of(OLD_ARDUINO).to_vec()),
            ("§2.13", body_of(ESP8266_ONE_SHOT).to_vec()),
            (
                "V6 lines",
                b"2e\r\n{\"x\": 1500, \"y\": 512, \"streamtoken\": \"short\"}\n\r\n0\r\n\r\n"
                    .to_vec(),
            ),
        ];
        for (name, body) in transcripts {
            let mut rest = body.as_slice();
            let mut chunks = 0;
            loop {
                // Empty lines before a size line (K2).
                while let Some(after) = rest.strip_prefix(b"\r\n") {
                    rest = after;
                }
                let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
                let size_text = std::str::from_utf8(&rest[..line_end]).unwrap();
                let size = usize::from_str_radix(size_text, 16).unwrap();
                rest = &rest[line_end + 2..];
                if size == 0 {
                    assert_eq!(rest, b"\r\n", "{name}: bytes after the last-chunk");
                    break;
                }
                assert_eq!(
                    &rest[size..size + 2],
                    b"\r\n",
                    "{name}: chunk {chunks} is not {size} bytes"
                );
                assert_eq!(
                    rest[size - 1],
                    b'\n',
                    "{name}: chunk {chunks} does not end its line"
                );
                rest = &rest[size + 2..];
                chunks += 1;
            }
            assert!(chunks > 0, "{name}: no chunk");
        }
        // The V6 transcript declares the size a 10-character token would need.
        assert_eq!(&ARDUINO_SHORT_TOKEN[..4], b"33\r\n");
        assert_eq!(
            body_of(ESP8266_HTTP_CLIENT),
            b"{\"x\":\"12345\", \"y\":\"7\"}"
        );
    }

    #[test]
    fn arduino_init_lengths_follow_the_formula() {
        // 115 + len(un) + n*(87 + len(maxpoints)) + (n-1)*2 + len(filename), docs/protocol.md §8.2.
        assert_eq!(115 + 4 + (87 + 2) + 4, 212);
        assert_eq!(ARDUINO_INIT_BODY.len(), 212 + 24);
    }

    #[test]
    fn responses_are_byte_exact() {
        assert_eq!(
            ok_response(5),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 65\r\nConnection: close\r\n\r\n{\"status\":200,\"message\":\"healthy endpoint disconnect\",\"points\":5}"
        );
        assert_eq!(
            error_response(408, "Request Timeout", "timeout on active data"),
            "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nConnection: close\r\n\r\ntimeout on active data"
        );
    }

    #[test]
    fn wall_clock_times_parse() {
        assert_eq!(parse_wall_clock("1970-01-01 00:00:00.000000"), Some(0));
        assert_eq!(
            parse_wall_clock("2026-01-15 10:00:01.500000"),
            Some(1_768_471_201_500_000)
        );
        assert_eq!(parse_wall_clock("2026-01-15T10:00:01.500000"), None);
        assert_eq!(parse_wall_clock("2026-01-15 10:00:01.5"), None);
        assert_eq!(parse_wall_clock("2026-13-15 10:00:01.500000"), None);
    }

    #[test]
    fn zones_accept_their_offsets_only() {
        let now = 1_768_489_200_000_000; // 2026-01-15T15:00:00Z
        let montreal = parse_wall_clock("2026-01-15 10:00:01.500000").unwrap_or_default();
        assert!(check_zone(montreal, 1500, MONTREAL, now).is_ok());
        assert!(check_zone(montreal, 1500, MELBOURNE, now).is_err());
        assert!(check_zone(montreal + 120_000_000, 1500, MONTREAL, now).is_err());
    }
}
