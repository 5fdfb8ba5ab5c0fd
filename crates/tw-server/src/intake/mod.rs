//! The intake as a service: what becomes of a delivery once its source is known and its body is
//! read, whoever received it. [`verify`] proves the request comes from its source; [`service`]
//! decides the rest (a test event, stored at once or queued, normalized or dead-lettered) and
//! stores it. The route (`routes/intake.rs`) only extracts the request and maps the [`Outcome`]
//! or [`Refusal`] to its answer; the queue worker ([`crate::workers::queue`]) turns queued events
//! into store requests with the same normalization ([`queued_request`]).

pub mod reprocess;
pub mod service;
pub mod verify;

pub use service::{Delivery, Outcome, Refusal, TEST_EVENT_TYPE, accepting, queued_request, receive, source, test_event};

/// A sender-chosen name cut to `max` characters, for an error or a log line: the sender picks its
/// length.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}
