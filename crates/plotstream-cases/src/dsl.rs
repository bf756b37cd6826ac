//! The bytes DSL of docs/reliability.md §8: what a case sends, as data.
//!
//! A program is a sequence of items separated by whitespace (a `+` between items is allowed and
//! means nothing, so §5's `H + c(P1) + END` reads as written):
//!
//! | item | bytes |
//! | --- | --- |
//! | `"…"` | the string with Rust byte escapes (`\r \n \t \0 \\ \" \xHH \u{…}`) |
//! | `H`, `Hn`, `H[…]…` | the §5 head; `[+F: v]` adds a field line, `[-Name]` drops fields, `[Name=v]` replaces a value (`token`, `TE` are aliases), `[method=M]`, `[line=L]` |
//! | `Hcl(n)` | the §5 Content-Length head |
//! | `P1`, `P2`, `END` | the §5 constants |
//! | `c(…)` | one chunk: lowercase hex length, CRLF, the bytes, CRLF |
//! | `body(…)` | a Content-Length body: `Content-Length: n`, the CRLF that ends the field and the empty line that ends the head, then the n bytes (REST requests) |
//! | `rep(n, …)` | the inner program n times |
//! | `padto(n, …)` | the inner bytes repeated (the last copy cut) until the enclosing sequence is n bytes long |
//! | `nums(a, b)` | `a,a+1,…,b` in decimal |
//! | `pause(ms)` | a write boundary and a pause |
//! | `drip(ms, …)`, `trickle(n, ms, …)` | the inner bytes one byte (or n bytes) per write, `ms` apart |
//! | `\|` | a write boundary without a pause (how a real client segments) |
//! | `eof`, `rst` | half-close; close with SO_LINGER 0 |
//! | `mark` | the origin of the case's `within_ms` |
//! | `await_continue` | wait (up to the response wait) for `100 Continue` before going on |
//!
//! Token placeholders (`tok1`, `tok2`, `nosuch` and those a case declares) are replaced in every
//! literal and head *before* chunk sizes and pads are computed, so a fresh token of another
//! length still gives exact framing.
//!
//! Variables, `$` and a name, are replaced the same way (group K, accounts and ownership):
//!
//! | variable | value |
//! | --- | --- |
//! | `$user`, `$key` | the user and API key of `--credentials USER:KEY` |
//! | `$auth` | `base64(user:key)`, the value of a Basic `Authorization` after `Basic ` |
//! | `$wrong_key`, `$wrong_auth` | a key that is not the user's (the key with `-wrong` appended), and its Basic value |
//! | `$sid` | the stream id of `--stream-id TOKEN`, one the user owns |
//! | `$name` | what an earlier script step captured from its response (`capture = { name = "/json/pointer" }`) |
//!
//! Limits, so that a hostile or mistyped case is refused with an error instead of hanging or
//! allocating without bound (`plotstream_cases::fuzzing` checks them): at most [`MAX_DEPTH`]
//! nested `(…)`, and an evaluation that makes more than [`MAX_EVAL_BYTES`] bytes or
//! [`MAX_EVAL_ITEMS`] items fails. Both count what every nesting level makes, before it is
//! merged: the bytes of `c(…)` count inside and again as the chunk, a `rep` counts its inner
//! program once and then its copies.

mod eval;
mod parse;
mod subst;
mod syntax;

use crate::error::Error;
use syntax::Node;

pub use eval::{MAX_EVAL_BYTES, MAX_EVAL_ITEMS};
pub use parse::MAX_DEPTH;
pub use subst::{substitute_text, variables};
pub use syntax::{payload, Item, END, P1, P2};

type Result<T> = std::result::Result<T, Error>;

/// A parsed program, evaluated per run with that run's tokens.
#[derive(Debug, Clone)]
pub struct Program {
    nodes: Vec<Node>,
}

impl Program {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Program> {
        let nodes = parse::parse(text)?;
        Ok(Program { nodes })
    }

    /// The items of one run; `subst` maps each placeholder to the token that replaces it.
    pub fn eval(&self, subst: &[(String, String)]) -> Result<Vec<Item>> {
        eval::eval(&self.nodes, &subst::pairs(subst))
    }
}

#[cfg(test)]
mod tests {
    use super::eval::nums_len;
    use super::*;

    const H: &str = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[track_caller]
    fn check(program: &str, expected: &[u8]) {
        let items = Program::parse(program).unwrap().eval(&[]).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&payload(&items)),
            String::from_utf8_lossy(expected)
        );
    }

    #[test]
    fn constants_and_chunks() {
        check("H c(P1) END", format!("{H}e\r\n{P1}\r\n{END}").as_bytes());
        check(r#""\r\n" + c("ab") + END"#, b"\r\n2\r\nab\r\n0\r\n\r\n");
        check(r#""\xff\x00\u{feff}""#, b"\xff\x00\xef\xbb\xbf");
        check("rep(3, \"ab\")", b"ababab");
        check("nums(0, 3)", b"0,1,2,3");
        check("nums(-2, 1)", b"-2,-1,0,1");
        check("nums(3, 2)", b"");
        for (a, b) in [
            (0, 0),
            (-1, -1),
            (-12, 3),
            (-1001, -9),
            (7, 1234),
            (-5, 105),
        ] {
            let text = payload(
                &Program::parse(&format!("nums({a}, {b})"))
                    .unwrap()
                    .eval(&[])
                    .unwrap(),
            );
            assert_eq!(nums_len(a, b), text.len() as u128, "nums({a}, {b})");
        }
        check("Hcl(28)", b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\nContent-Length: 28\r\n\r\n");
    }

    #[test]
    fn head_modifiers() {
        check(
            "H[+Expect: 100-continue][token=a b][-Host]",
            b"POST / HTTP/1.1\r\nplotly-streamtoken: a b\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        );
        check(
            "H[method=PUT][TE=gzip, chunked]",
            b"PUT / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        );
        check(
            r"H[+X-A: a\rb]",
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\nTransfer-Encoding: chunked\r\nX-A: a\rb\r\n\r\n",
        );
        check(
            "Hn",
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
    }

    #[test]
    fn pads_count_the_enclosing_sequence() {
        check("\"ab\" padto(5, \"xy\")", b"abxyx");
        check("c(\"a\" padto(3, \" \"))", b"3\r\na  \r\n");
    }

    #[test]
    fn substitution_happens_before_framing() {
        let p = Program::parse(r#"H c("{\"streamtoken\":\"tok1\"}\n")"#).unwrap();
        let items = p.eval(&[("tok1".into(), "abcdefghij".into())]).unwrap();
        let bytes = payload(&items);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("plotly-streamtoken: abcdefghij\r\n"));
        assert!(
            text.ends_with("1d\r\n{\"streamtoken\":\"abcdefghij\"}\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn bodies_carry_their_length_after_substitution() {
        let p = Program::parse(r#""PUT /v2/plots/$fid HTTP/1.1\r\n" body("{\"token\":\"$sid\"}")"#)
            .unwrap();
        let subst = [
            ("$fid".to_owned(), "demo:123456789012".to_owned()),
            ("$sid".to_owned(), "abcdef1234".to_owned()),
        ];
        let text = String::from_utf8(payload(&p.eval(&subst).unwrap())).unwrap();
        assert_eq!(
            text,
            "PUT /v2/plots/demo:123456789012 HTTP/1.1\r\nContent-Length: 22\r\n\r\n{\"token\":\"abcdef1234\"}"
        );
        check("body()", b"Content-Length: 0\r\n\r\n");
    }

    #[test]
    fn variables_are_named_once_and_substituted_longest_first() {
        assert_eq!(
            variables("a $auth b $wrong_auth $auth $ $fid."),
            ["$auth", "$wrong_auth", "$fid"]
        );
        let subst = [
            ("$auth".to_owned(), "A".to_owned()),
            ("$wrong_auth".to_owned(), "W".to_owned()),
            ("tok1".to_owned(), "t".to_owned()),
        ];
        assert_eq!(substitute_text("$auth/$wrong_auth/tok1", &subst), "A/W/t");
    }

    #[test]
    fn timing_items() {
        let items = Program::parse("\"a\" pause(5) | drip(7, \"bc\") eof")
            .unwrap()
            .eval(&[])
            .unwrap();
        assert_eq!(
            items,
            [
                Item::Bytes(b"a".to_vec()),
                Item::Pause(5),
                Item::Flush,
                Item::Bytes(b"b".to_vec()),
                Item::Pause(7),
                Item::Bytes(b"c".to_vec()),
                Item::Eof,
            ]
        );
    }

    /// Found while writing `check_conform_dsl` (fuzz target `conform_dsl`): a count of the
    /// program was trusted. `rep(n, )` looped n times over nothing (2^64 - 1: a hang),
    /// `rep(n, "…")` allocated n copies at once (a capacity-overflow panic, or an abort when
    /// the allocation failed), and `padto(n, …)`, `nums(a, b)` and a `rep` of pauses made
    /// whatever the numbers said. Each is now refused past MAX_EVAL_BYTES or MAX_EVAL_ITEMS,
    /// before the allocation, and `rep` of nothing makes nothing.
    #[test]
    fn fuzz_counts_from_the_program_are_bounded() {
        let eval = |p: &str| Program::parse(p).and_then(|p| p.eval(&[]));
        assert_eq!(eval("rep(18446744073709551615, )").unwrap(), []);
        assert_eq!(eval("rep(18446744073709551615, rep(3, ))").unwrap(), []);
        for hostile in [
            "rep(18446744073709551615, \"ab\")",
            "rep(9223372036854775807, \"a\")",
            "rep(67108865, \"a\")",
            "rep(33554433, \"ab\")",
            "rep(65537, eof)",
            "rep(40000, pause(1) \"a\")",
            "rep(4096, rep(4096, rep(5, \"a\")))",
            "padto(18446744073709551615, \"a\")",
            "padto(67108865, \"a\")",
            "nums(0, 9223372036854775807)",
            "nums(-9223372036854775807, 9223372036854775807)",
            "drip(1, rep(65537, \"a\"))",
            "c(rep(67108860, \"a\"))",
        ] {
            let err = eval(hostile).unwrap_err().to_string();
            assert!(err.contains("MAX_EVAL_"), "{hostile}: {err}");
        }
        // At the bounds, counting what the inner program makes too: MAX_EVAL_BYTES bytes
        // made with "a" and its copies, MAX_EVAL_ITEMS items with the inner `eof`.
        let items = eval("rep(67108863, \"a\")").unwrap();
        assert_eq!(payload(&items).len(), MAX_EVAL_BYTES - 1);
        assert!(eval("rep(67108864, \"a\")").is_err());
        let pad = eval("padto(67108862, \"ab\")").unwrap();
        assert_eq!(payload(&pad).len(), MAX_EVAL_BYTES - 2);
        assert!(eval("padto(67108863, \"ab\")").is_err());
        assert_eq!(eval("rep(65535, eof)").unwrap().len(), MAX_EVAL_ITEMS - 1);
        assert!(eval("rep(65536, eof)").is_err());
    }

    /// Found while writing `check_conform_dsl`: `(…)` nested thousands deep recursed as deep in
    /// the parser and in the evaluation.
    #[test]
    fn fuzz_nesting_is_bounded() {
        let nested = |n: usize| format!("{}\"a\"{}", "c(".repeat(n), ")".repeat(n));
        assert!(Program::parse(&nested(MAX_DEPTH)).is_ok());
        let err = Program::parse(&nested(MAX_DEPTH + 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MAX_DEPTH"), "{err}");
        assert!(Program::parse(&nested(100_000)).is_err());
        // Depth counts what is open, not how many groups there were.
        assert!(Program::parse(&"c(\"a\") ".repeat(1000)).is_ok());
    }

    /// Found while writing `check_conform_dsl`'s plain decoder of literals: `\x` and `\u{…}`
    /// took a sign
    /// (`u8::from_str_radix` accepts `+`), so `"\x+f"` was the byte 0x0f, not an error (the
    /// same mistake as `url_decode`'s `%+a` in plotstream-server).
    #[test]
    fn fuzz_escapes_take_hex_digits_only() {
        for bad in [
            r#""\x+f""#,
            r#""\x-1""#,
            r#""\u{+41}""#,
            r#""\u{}""#,
            r#""\x f""#,
        ] {
            assert!(Program::parse(bad).is_err(), "{bad} parsed");
        }
        check(r#""\x0F\u{41}\u{0000041}""#, b"\x0fAA");
    }

    #[test]
    fn errors_are_reported() {
        for bad in [
            "c(",
            "\"abc",
            "H[x",
            "foo",
            "rep(x, \"a\")",
            "c(pause(1))",
            "body(eof)",
        ] {
            let r = Program::parse(bad).and_then(|p| p.eval(&[]));
            assert!(r.is_err(), "{bad} parsed");
        }
    }
}
