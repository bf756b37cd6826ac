//! Reading streams for the routes: the inspection object, the listing, and what a page or feed
//! URL names (read ids).

use sha2::{Digest, Sha256};

use super::report::StreamSummary;
use super::Store;
use crate::text::{hex, push_json_str};

impl Store {
    /// The inspection object of docs/reliability.md §4.3, as JSON, with the stream's read `id`;
    /// `token` is `null` unless `show_token` (keys mode never shows a write token).
    pub fn inspect(&self, token: &str, show_token: bool) -> Option<String> {
        let cell = self.find(token)?;
        let s = cell.lock();
        if s.removed {
            return None;
        }
        let mut window = Vec::new();
        s.write_window(&mut window);
        let digest = hex(&Sha256::digest(&window));
        let mut out = String::with_capacity(window.len() + 256);
        out.push_str("{\"token\":");
        if show_token {
            push_json_str(&mut out, token);
        } else {
            out.push_str("null");
        }
        out.push_str(",\"id\":");
        push_json_str(&mut out, &s.read_id);
        out.push_str(&format!(
            ",\"epoch\":\"{}\",\"first_seq\":{},\"last_seq\":{},\"count\":{},\"maxpoints\":{},\"bytes\":{},\"budget_limited\":{},\"writer_connected\":{},\"rejected_lines\":{},\"displaced_lines\":{},\"window\":",
            s.epoch,
            s.first_seq(),
            s.last_seq,
            s.count(),
            s.window.maxpoints(),
            s.window.bytes(),
            s.budget_limited,
            s.writer.is_some(),
            s.rejected_lines,
            s.displaced_lines
        ));
        out.push_str(&String::from_utf8_lossy(&window));
        out.push_str(&format!(",\"digest\":\"{digest}\"}}"));
        Some(out)
    }

    /// `(token, last_seq, count, writer_connected, viewers)` for every stream, sorted by token.
    pub fn list(&self) -> Vec<StreamSummary> {
        let mut out: Vec<StreamSummary> = self
            .cells()
            .into_iter()
            .filter_map(|(t, cell)| {
                let s = cell.lock();
                (!s.removed).then(|| StreamSummary {
                    token: t,
                    read_id: s.read_id.clone(),
                    last_seq: s.last_seq,
                    count: s.count(),
                    writer_connected: s.writer.is_some(),
                    n_viewers: s.viewers.iter().filter(|v| !v.tx.is_closed()).count(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.token.cmp(&b.token));
        out
    }

    /// Resolves what a page or feed URL names: a read id, or (`allow_token`, open mode) a
    /// write token. Returns the token.
    pub fn resolve(&self, id: &str, allow_token: bool) -> Option<String> {
        let index = self.index();
        if let Some(t) = index.by_read_id.get(id) {
            return Some(t.clone());
        }
        (allow_token && index.streams.contains_key(id)).then(|| id.to_owned())
    }

    /// The read id of `token`'s stream.
    pub fn read_id(&self, token: &str) -> Option<String> {
        let cell = self.find(token)?;
        let s = cell.lock();
        (!s.removed).then(|| s.read_id.clone())
    }
}
