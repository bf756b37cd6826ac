use super::*;

/// Decodes `input` delivered in the given pieces; returns the data and the outcome.
fn run(pieces: &[&[u8]]) -> (Vec<u8>, Result<bool, ChunkError>) {
    let mut dec = ChunkedDecoder::new(&Limits::default());
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Chunk::Data(d))) => data.extend_from_slice(&d),
                Ok(Some(Chunk::End)) => return (data, Ok(true)),
                Ok(None) => break,
                Err(e) => return (data, Err(e)),
            }
        }
    }
    (data, Ok(false))
}

/// Runs `input` whole, split at every offset and byte by byte; all must agree (hyper's shotgun).
#[track_caller]
fn check(input: &[u8], data: &[u8], outcome: Result<bool, ChunkError>) {
    let whole = run(&[input]);
    assert_eq!(
        whole,
        (data.to_vec(), outcome),
        "whole: {:?}",
        String::from_utf8_lossy(input)
    );
    for k in 1..input.len() {
        assert_eq!(
            run(&[&input[..k], &input[k..]]),
            whole,
            "split at {k}: {:?}",
            String::from_utf8_lossy(input)
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        run(&bytes),
        whole,
        "bytewise: {:?}",
        String::from_utf8_lossy(input)
    );
}

const P1: &[u8] = b"{\"x\":1,\"y\":1}\n";

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn simple_body_and_end() {
    check(b"e\r\n{\"x\":1,\"y\":1}\n\r\n0\r\n\r\n", P1, Ok(true));
}

#[test]
fn b1_overflowing_sizes() {
    for size in [
        "1ffffffffffffffff",
        "f0000000000000003",
        "10000000000000000",
    ] {
        check(
            format!("{size}\r\n").as_bytes(),
            b"",
            Err(ChunkError::SizeOverflow),
        );
    }
}

#[test]
fn b2_huge_size_streams_without_allocation() {
    check(&cat(&[b"ffffffffffffffff\r\n", P1]), P1, Ok(false));
}

#[test]
fn b3_leading_zeros() {
    check(&cat(&[b"0000000e\r\n", P1, b"\r\n0\r\n\r\n"]), P1, Ok(true));
    let z31 = format!("{}e\r\n", "0".repeat(31));
    check(&cat(&[z31.as_bytes(), P1, b"\r\n0\r\n\r\n"]), P1, Ok(true));
    let z32 = format!("{}e\r\n", "0".repeat(32));
    check(z32.as_bytes(), b"", Err(ChunkError::SizeOverflow));
    check(&cat(&[b"0000ffffffffffffffff\r\n", P1]), P1, Ok(false));
}

#[test]
fn b4_no_prefixes_or_whitespace_in_sizes() {
    for size in [
        "0xe", "+e", "-e", "e_0", " e", "\te", "e 0", "e ", "e\t", "e ;a", "e\x00",
    ] {
        check(
            &cat(&[size.as_bytes(), b"\r\n", P1, b"\r\n0\r\n\r\n"]),
            b"",
            Err(ChunkError::Syntax),
        );
    }
}

#[test]
fn b5_empty_lines_are_skipped() {
    check(
        &cat(&[b"\r\ne\r\n", P1, b"\r\n\r\n0\r\n\r\n"]),
        P1,
        Ok(true),
    );
}

#[test]
fn b6_third_empty_line_fails() {
    check(
        &cat(&[b"e\r\n", P1, b"\r\n\r\n\r\n\r\n0\r\n\r\n"]),
        P1,
        Err(ChunkError::TooManyEmptyLines),
    );
    check(
        &cat(&[b"e\r\n", P1, b"\r\n\r\n\r\n0\r\n\r\n"]),
        P1,
        Ok(true),
    );
}

#[test]
fn b7_empty_line_is_not_a_last_chunk() {
    check(&cat(&[b"e\r\n", P1, b"\r\n\r\n"]), P1, Ok(false));
}

#[test]
fn b8_garbage_after_skipped_line() {
    check(
        &cat(&[b"e\r\n", P1, b"\r\nX\r\n"]),
        P1,
        Err(ChunkError::Syntax),
    );
    check(
        &cat(&[b"e\r\n", P1, b"\r\n\r\nzz\r\n"]),
        P1,
        Err(ChunkError::Syntax),
    );
}

#[test]
fn b9_bare_lf_is_rejected_in_the_coding() {
    check(&cat(&[b"e\n", P1, b"\r\n"]), b"", Err(ChunkError::Syntax));
    check(
        b"e\r\n{\"x\":1,\"y\":1}\n\n0\r\n\r\n",
        P1,
        Err(ChunkError::Syntax),
    );
    check(
        &cat(&[b"e\r\n", P1, b"\r\n0\n\r\n"]),
        P1,
        Err(ChunkError::Syntax),
    );
    check(
        &cat(&[b"e\r\n", P1, b"\r\n0\r\n\n"]),
        P1,
        Err(ChunkError::Syntax),
    );
    check(
        &cat(&[b"e\r\n", P1, b"\r\n\n0\r\n\r\n"]),
        P1,
        Err(ChunkError::Syntax),
    );
}

#[test]
fn b10_bare_cr_is_rejected() {
    check(&cat(&[b"e\r", P1, b"\r\n"]), b"", Err(ChunkError::Syntax));
    check(
        b"5\r\r;ABCD\r\n34\r\nE\r\n0\r\n\r\n",
        b"",
        Err(ChunkError::Syntax),
    );
    check(
        &cat(&[b"e\r\n", P1, b"\r\n\r0\r\n\r\n"]),
        P1,
        Err(ChunkError::Syntax),
    );
    check(
        &cat(&[b"e\r\n", P1, b"\r\r\n"]),
        P1,
        Err(ChunkError::Syntax),
    );
}

#[test]
fn b11_b12_b13_desync_attempts() {
    check(b"5\r\n{\"x\":XX\r\n", b"{\"x\":", Err(ChunkError::Syntax));
    check(
        b"10\r\n{\"x\":1,\"y\":1}\n\r\n0\r\n\r\n",
        b"{\"x\":1,\"y\":1}\n\r\n",
        Err(ChunkError::Syntax),
    );
    check(
        b"e\r\n{\"x\":1,\"y\":1}\n0\r\n\r\n",
        P1,
        Err(ChunkError::Syntax),
    );
}

#[test]
fn b14_valid_extensions_are_ignored() {
    for ext in [
        "e;foo=bar",
        "e;foo=\"a \\\"q\\\" ;b\"",
        "e;a;b=c",
        "e;a = b",
        "e; a",
    ] {
        check(
            &cat(&[ext.as_bytes(), b"\r\n", P1, b"\r\n0\r\n\r\n"]),
            P1,
            Ok(true),
        );
    }
    check(&cat(&[b"e\r\n", P1, b"\r\n0;fin\r\n\r\n"]), P1, Ok(true));
    check(&cat(&[b"e\r\n", P1, b"\r\n000\r\n\r\n"]), P1, Ok(true));
}

#[test]
fn b15_malformed_extensions() {
    for ext in [
        "e;",
        "e;foo=",
        "e;[",
        "e;foo=\"open",
        "e;=v",
        "e;\x00",
        "e;a\nb",
        "e;a\rb",
    ] {
        check(
            &cat(&[ext.as_bytes(), b"\r\n", P1, b"\r\n0\r\n\r\n"]),
            b"",
            Err(ChunkError::Syntax),
        );
    }
}

#[test]
fn b16_extension_limit_at_boundaries() {
    for (n, ok) in [(4094, true), (4095, true), (4096, false), (20_000, false)] {
        let input = cat(&[b"1;", "a".repeat(n).as_bytes(), b"\r\n\n\r\n0\r\n\r\n"]);
        let (data, outcome) = run(&[&input]);
        if ok {
            assert_eq!((data, outcome), (b"\n".to_vec(), Ok(true)), "{n}");
        } else {
            assert_eq!(outcome, Err(ChunkError::ExtensionTooLong), "{n}");
        }
        // Bytewise: the error fires as the 4097th extension byte arrives.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes).1, outcome, "bytewise {n}");
    }
}

#[test]
fn b17_overhead_budget_trips_at_the_191st_chunk() {
    let chunk = cat(&[b"1;", "a".repeat(100).as_bytes(), b"\r\n\n\r\n"]);
    let mut dec = ChunkedDecoder::new(&Limits::default());
    let mut buf = BytesMut::from(&chunk.repeat(1000)[..]);
    let mut n_chunks = 0;
    let err = loop {
        match dec.decode(&mut buf) {
            Ok(Some(Chunk::Data(_))) => n_chunks += 1,
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!((n_chunks, err), (190, ChunkError::OverheadBudget));
}

#[test]
fn b18_heartbeats_never_trip_the_budget() {
    let mut dec = ChunkedDecoder::new(&Limits::default());
    let mut buf = BytesMut::from(&b"1\r\n\n\r\n".repeat(200_000)[..]);
    let mut n = 0;
    while let Some(Chunk::Data(_)) = dec.decode(&mut buf).unwrap() {
        n += 1;
        assert_eq!(dec.excess(), 0);
    }
    assert_eq!(n, 200_000);
}

#[test]
fn b19_b21_trailers_are_ignored() {
    check(
        &cat(&[b"e\r\n", P1, b"\r\n0\r\nX-Foo: bar\r\n\r\n"]),
        P1,
        Ok(true),
    );
    for t in [
        "Content-Length: 5",
        "Transfer-Encoding: chunked",
        "plotly-streamtoken: tok2",
        "X:POST / HTTP/1.1",
    ] {
        check(
            &cat(&[b"e\r\n", P1, b"\r\n0\r\n", t.as_bytes(), b"\r\n\r\n"]),
            P1,
            Ok(true),
        );
    }
}

#[test]
fn b20_trailer_limits_and_syntax() {
    let big = cat(&[
        b"e\r\n",
        P1,
        b"\r\n0\r\nX: ",
        "a".repeat(4092).as_bytes(),
        b"\r\n\r\n",
    ]);
    check(&big, P1, Err(ChunkError::TrailersTooLarge));
    let fits = cat(&[
        b"e\r\n",
        P1,
        b"\r\n0\r\nX: ",
        "a".repeat(4091).as_bytes(),
        b"\r\n\r\n",
    ]);
    check(&fits, P1, Ok(true));
    check(
        &cat(&[
            b"e\r\n",
            P1,
            b"\r\n0\r\n",
            "X: a\r\n".repeat(32).as_bytes(),
            b"\r\n",
        ]),
        P1,
        Ok(true),
    );
    check(
        &cat(&[
            b"e\r\n",
            P1,
            b"\r\n0\r\n",
            "X: a\r\n".repeat(33).as_bytes(),
            b"\r\n",
        ]),
        P1,
        Err(ChunkError::TrailersTooLarge),
    );
    for t in ["bad\r\r\n", "X: a\n", "X: a\r\n b\r\n", "X : a\r\n"] {
        check(
            &cat(&[b"e\r\n", P1, b"\r\n0\r\n", t.as_bytes(), b"\r\n"]),
            P1,
            Err(ChunkError::Syntax),
        );
    }
}

#[test]
fn b22_bytes_after_the_end_are_left_alone() {
    let mut dec = ChunkedDecoder::new(&Limits::default());
    let mut buf = BytesMut::from(&cat(&[b"e\r\n", P1, b"\r\n0\r\n\r\n", P1])[..]);
    assert_eq!(
        dec.decode(&mut buf),
        Ok(Some(Chunk::Data(Bytes::from_static(P1))))
    );
    assert_eq!(dec.decode(&mut buf), Ok(Some(Chunk::End)));
    assert_eq!(&buf[..], P1);
    assert_eq!(dec.decode(&mut buf), Ok(Some(Chunk::End)));
    assert_eq!(&buf[..], P1);
}

#[test]
fn b25_uppercase_and_mixed_hex() {
    for size in ["E", "Ff", "fF", "1E"] {
        let n = usize::from_str_radix(size, 16).unwrap();
        let data = "a".repeat(n);
        check(
            &cat(&[size.as_bytes(), b"\r\n", data.as_bytes(), b"\r\n0\r\n\r\n"]),
            data.as_bytes(),
            Ok(true),
        );
    }
}

#[test]
fn encoder_round_trips() {
    let mut out = Vec::new();
    encode_chunk(P1, &mut out);
    encode_chunk(b"", &mut out);
    encode_size(0x3c, true, &mut out);
    assert_eq!(&out, b"e\r\n{\"x\":1,\"y\":1}\n\r\n3C\r\n");
    out.clear();
    for n in [1usize, 15, 16, 255, 4096, 1 << 20] {
        encode_chunk(&vec![b'a'; n], &mut out);
    }
    encode_end(&mut out);
    let (data, outcome) = run(&[&out]);
    assert_eq!(
        (data.len(), outcome),
        (1 + 15 + 16 + 255 + 4096 + (1 << 20), Ok(true))
    );
}
