//! Random identifiers from the OS CSPRNG: tokens (L8), read ids, share keys, grid column uids,
//! API keys and salts. One function, so every one of them is unbiased the same way.

/// `[a-z0-9]`: tokens, read ids, share keys, uids.
pub const LOWER_DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `[A-Za-z0-9]`: API keys and salts.
pub const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `n` characters of `alphabet` (at most 256 distinct bytes), each equally likely: bytes past
/// the largest multiple of the alphabet's length are rejected instead of folded.
pub fn chars(alphabet: &[u8], n: usize) -> String {
    debug_assert!(!alphabet.is_empty() && alphabet.len() <= 256);
    let keep = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut b = [0u8; 32];
        let _ = getrandom::fill(&mut b);
        for byte in b {
            if usize::from(byte) < keep && out.len() < n {
                out.push(char::from(alphabet[usize::from(byte) % alphabet.len()]));
            }
        }
    }
    out
}

/// `n` characters of `[a-z0-9]`: read ids, share keys, grid column uids.
pub fn id(n: usize) -> String {
    chars(LOWER_DIGITS, n)
}

/// One token: 10 characters of `[a-z0-9]` from the OS CSPRNG (L8).
pub fn new_token() -> String {
    chars(LOWER_DIGITS, 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_alphabets_and_spread() {
        let s = chars(LOWER_DIGITS, 10_000);
        assert_eq!(s.len(), 10_000);
        assert!(s.bytes().all(|b| LOWER_DIGITS.contains(&b)));
        // Every character shows up (36 × ~278 expected).
        assert!(LOWER_DIGITS
            .iter()
            .all(|c| s.bytes().filter(|b| b == c).count() > 150));
        assert!(chars(ALNUM, 24).bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
