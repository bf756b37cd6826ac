//! What `load --verify` and `conform` read from a target besides the ingest connection, over
//! sockets only (README, "the load generator and the conformance runner speak to any endpoint
//! over sockets only"):
//!
//! - [`http`]: the side-route client (one request per connection), `/metrics` and
//!   `POST /api/tokens`;
//! - [`inspect`]: the inspection reader, `GET /api/streams/{id}` (docs/reliability.md §4.3);
//! - [`sse`]: the viewer, `GET /api/streams/{id}/events` (docs/reliability.md §4.4);
//! - [`jcs`]: the RFC 8785 oracle that recomputes digests (docs/reliability.md P11), written
//!   without `plotstream_proto::canonical` or its number formatter.

pub(crate) mod http;
pub(crate) mod inspect;
pub(crate) mod jcs;
pub(crate) mod sse;

pub(crate) use http::{Endpoint, ErrorKind};
