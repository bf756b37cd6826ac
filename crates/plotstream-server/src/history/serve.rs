//! `GET /api/streams/{id}/history` (docs/history.md "Reading"): the only part of history with
//! I/O. Reads run on the blocking pool, a page of records at a time, and each page is written
//! before the next is read: an export's memory does not grow with its range.

use std::sync::Arc;

use plotstream_proto::head::RequestHead;
use tokio::io::AsyncWriteExt as _;

use super::downsample::Bucketing;
use super::export::{Format, Request, Row, X};
use super::query::{By, View};
use super::tier::Mark;
use super::{Store, Stored, Val};
use crate::response::{error, Response};
use crate::shared::Shared;
use crate::transport::{close_gracefully, Io};

/// Points per page of an export (about 2.5 MB of CSV: each page is one blocking read).
const PAGE: u64 = 65_536;

/// What a request resolved to.
struct Plan {
    start: Vec<u8>,
    /// Downsampled points, or `None` for every point of `a..b`.
    marks: Option<Vec<Mark>>,
    a: u64,
    b: u64,
    kind: super::XKind,
}

enum Refused {
    Bad(String),
    Storage(crate::error::StorageError),
}

impl From<crate::error::StorageError> for Refused {
    fn from(e: crate::error::StorageError) -> Self {
        Refused::Storage(e)
    }
}

fn plan(store: &dyn Store, token: &str, req: &Request) -> Result<Plan, Refused> {
    let src = Stored { store, token };
    let view = View::load(&src)?;
    let by_x = view.head.by_x();
    let (first, end) = (view.head.first, view.end);
    let (a, b) =
        match req.by {
            By::N => (
                req.from.map_or(first, |f| f.max(0.0) as u64),
                req.to.map_or(end, |t| (t.max(-1.0) + 1.0) as u64),
            ),
            By::X if !by_x => return Err(Refused::Bad(
                "by=x needs x that are numbers or dates and never decrease; use by=n or by=time"
                    .into(),
            )),
            by => (
                match req.from {
                    Some(f) => view.locate(by, f, false)?,
                    None => first,
                },
                match req.to {
                    Some(t) => view.locate(by, t, true)?,
                    None => end,
                },
            ),
        };
    let (a, b) = (a.max(first), b.min(end));
    let (a, b) = (a, b.max(a));
    let marks = match req.max_points {
        Some(max) if b - a > max as u64 => {
            let bucketing = if by_x {
                let key = |n: u64| -> Result<f64, Refused> {
                    let mut k = f64::NAN;
                    view.points(n, n + 1, &mut |_, p| {
                        k = p.x.key();
                        false
                    })?;
                    Ok(k)
                };
                let lo = match (req.by, req.from) {
                    (By::X, Some(f)) => f,
                    _ => key(a)?,
                };
                let hi = match (req.by, req.to) {
                    (By::X, Some(t)) => t,
                    _ => key(b - 1)?,
                };
                Bucketing::X { lo, hi }
            } else {
                Bucketing::N { lo: a, hi: b }
            };
            let top = if req.tiers { super::tier::TOP } else { 0 };
            Some(view.downsample(a, b, max, bucketing, top)?)
        }
        _ => None,
    };
    let mut start = Vec::new();
    req.format.start(
        view.head.x,
        by_x,
        marks.is_some(),
        (first, end),
        a..b,
        &mut start,
    );
    Ok(Plan {
        start,
        marks,
        a,
        b,
        kind: view.head.x,
    })
}

/// The rows of `a..` (at most [`PAGE`] points) and where the next page starts.
fn page(
    store: &dyn Store,
    token: &str,
    format: Format,
    a: u64,
    b: u64,
    first_row: bool,
) -> Result<(Vec<u8>, u64), crate::error::StorageError> {
    let src = Stored { store, token };
    let view = View::load(&src)?;
    let mut out = Vec::new();
    let mut next = b;
    let mut first = first_row;
    let stop = a.saturating_add(PAGE).min(b);
    view.points(a, stop, &mut |n, p| {
        format.row(
            &Row {
                n,
                seq: p.seq,
                t: p.t,
                x: X::Kept(&p.x),
                y: &p.y,
            },
            first,
            &mut out,
        );
        first = false;
        true
    })?;
    if stop < b {
        next = stop;
    }
    Ok((out, next))
}

/// Serves one history request for `token`'s stream.
pub async fn serve(stream: Io, head: &RequestHead, token: String, shared: Arc<Shared>) {
    let refused = match start(head, token, &shared).await {
        Ok((req, plan, store, token)) => {
            return write_body(stream, req.format, plan, store, token, &shared).await;
        }
        Err(r) => r,
    };
    close_gracefully(stream, &refused.encode(), true, &shared).await;
}

async fn start(
    head: &RequestHead,
    token: String,
    shared: &Shared,
) -> Result<(Request, Plan, Arc<dyn Store>, String), Response> {
    let req = Request::parse(head.query()).map_err(|m| error(400, &m))?;
    let Some(store) = shared.store.history().cloned() else {
        return Err(error(
            404,
            "this server keeps no history (--in-memory or --retention 0)",
        ));
    };
    // The newest points may be only in the line journal: have them stored first. If the store
    // cannot write now (DC5), what it holds is still read.
    let ticket = shared.store.flush_history_of(&token);
    let _ = shared.store.journal().wait(ticket).await;
    let (s, t, r) = (store.clone(), token.clone(), req.clone());
    match tokio::task::spawn_blocking(move || plan(&*s, &t, &r)).await {
        Ok(Ok(p)) => Ok((req, p, store, token)),
        Ok(Err(Refused::Bad(m))) => Err(error(400, &m)),
        Ok(Err(Refused::Storage(e))) => {
            tracing::warn!(error = %e, "history: a read failed");
            Err(error(503, "history could not be read; try again"))
        }
        Err(_) => Err(error(503, "history could not be read; try again")),
    }
}

async fn write_all(stream: &mut Io, bytes: &[u8], shared: &Shared) -> bool {
    matches!(
        tokio::time::timeout(shared.config.write_timeout, stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

async fn write_body(
    mut stream: Io,
    format: Format,
    plan: Plan,
    store: Arc<dyn Store>,
    token: String,
    shared: &Shared,
) {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n{}Connection: close\r\n\r\n",
        format.content_type(),
        if format == Format::Csv { "Content-Disposition: attachment; filename=\"history.csv\"\r\n" } else { "" }
    )
    .into_bytes();
    out.extend_from_slice(&plan.start);
    if let Some(marks) = &plan.marks {
        let mut y = Val::None;
        for (i, m) in marks.iter().enumerate() {
            format.row(&Row::of_mark(m, plan.kind, &mut y), i == 0, &mut out);
        }
    } else {
        let mut at = plan.a;
        let mut first = true;
        while at < plan.b {
            let (s, t) = (store.clone(), token.clone());
            let b = plan.b;
            let got =
                tokio::task::spawn_blocking(move || page(&*s, &t, format, at, b, first)).await;
            let Ok(Ok((rows, next))) = got else {
                // Mid-body there is no status to change: the body ends short (no closing `]`).
                tracing::warn!("history: a read failed during an export");
                let _ = write_all(&mut stream, &out, shared).await;
                let _ = stream.shutdown().await;
                return;
            };
            first &= rows.is_empty();
            out.extend_from_slice(&rows);
            if !write_all(&mut stream, &out, shared).await {
                return;
            }
            out.clear();
            if next <= at {
                break;
            }
            at = next;
        }
    }
    format.end(&mut out);
    if write_all(&mut stream, &out, shared).await {
        close_gracefully(stream, &[], false, shared).await;
    }
}
