//! Which real client's bytes: [`Flavour`], and the punctuation and notations of each one.

/// Which real client's bytes to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// chart_studio 1.1.0 on CPython (§2.9): `json.dumps` with `", "` and `": "`, Python `repr`
    /// floats, pure ASCII strings, lowercase hex sizes, `\r\n0\r\n\r\n` at close.
    Python,
    /// npm plotly@1.0.6 (§2.10): `JSON.stringify`, compact, JavaScript number notation.
    Node,
    /// arduino-api v2 (§2.11): `", "` and `": "`, a `streamtoken` in every line, UPPERCASE sizes,
    /// `Host: 127.0.0.1` and no token header. Floats are written in Python notation, since the
    /// library's fixed two decimals would not round-trip.
    Arduino,
    /// plotstream's own writer: compact, shortest numbers as `zmij` prints them, fastest.
    Raw,
}

/// How a flavour spells numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NumStyle {
    /// CPython `repr`: `1.0`, `1e-05`, `1e+16`.
    Python,
    /// ECMAScript `Number::toString`: `1`, `0.000001`, `1e-7`, `100000000000000000000`.
    Js,
    /// `zmij` as it prints: `1.0`, `0.00001`, `1e-6`, `1e+16`.
    Raw,
}

/// The punctuation and notations of one flavour.
#[derive(Debug, Clone, Copy)]
pub(super) struct Style {
    pub(super) comma: &'static [u8],
    pub(super) colon: &'static [u8],
    pub(super) num: NumStyle,
    /// Escape everything outside printable ASCII (`ensure_ascii`).
    pub(super) ascii: bool,
    pub(super) upper_hex: bool,
    pub(super) x_prefix: &'static [u8],
    pub(super) y_prefix: &'static [u8],
    pub(super) token_prefix: &'static [u8],
}

impl Style {
    /// The style of `flavour`.
    pub(super) const fn of(flavour: Flavour) -> &'static Style {
        match flavour {
            Flavour::Python => &PYTHON,
            Flavour::Node => &NODE,
            Flavour::Arduino => &ARDUINO,
            Flavour::Raw => &RAW,
        }
    }
}

pub(super) const PYTHON: Style = Style {
    comma: b", ",
    colon: b": ",
    num: NumStyle::Python,
    ascii: true,
    upper_hex: false,
    x_prefix: b"{\"x\": ",
    y_prefix: b", \"y\": ",
    token_prefix: b", \"streamtoken\": \"",
};

pub(super) const ARDUINO: Style = Style {
    upper_hex: true,
    ascii: false,
    ..PYTHON
};

pub(super) const NODE: Style = Style {
    comma: b",",
    colon: b":",
    num: NumStyle::Js,
    ascii: false,
    upper_hex: false,
    x_prefix: b"{\"x\":",
    y_prefix: b",\"y\":",
    token_prefix: b",\"streamtoken\":\"",
};

pub(super) const RAW: Style = Style {
    num: NumStyle::Raw,
    ..NODE
};

pub(super) const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
pub(super) const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
