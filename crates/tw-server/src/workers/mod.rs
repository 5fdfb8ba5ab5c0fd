//! The background workers: queued events become incidents ([`queue`]), triage jobs run their
//! playbooks ([`triage`]); each runs until the server stops and releases what it claimed but did
//! not finish, for another instance to take at once. Beside them, the writers of delivery records
//! ([`deliveries`]).

pub mod deliveries;
pub mod queue;
pub mod settings;
pub mod triage;
