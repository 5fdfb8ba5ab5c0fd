//! The background workers: queued events become incidents ([`queue`]), triage jobs run their
//! playbooks ([`triage`]). Each runs until the server stops and releases what it claimed but did
//! not finish, for another instance to take at once.

pub mod queue;
pub mod settings;
pub mod triage;
