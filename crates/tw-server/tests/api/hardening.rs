//! The intake under attack and misuse: each reproduction of the hardening issue, as a test that
//! failed before its defence existed. In-process servers on free ports, spoken to over HTTP (and
//! raw TCP where a misbehaving client is the point). The defences the `tw-cli` binary takes part
//! in (its `serve` flags and signals, its commands) are proven in tw-cli's `hardening` tests.

mod admin;
mod connections;
mod deliveries;
mod disk;
mod exposures;
mod rate_limits;
