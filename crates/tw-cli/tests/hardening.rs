//! The intake under attack and misuse: each reproduction of the hardening issue, as a test that
//! failed before its defence existed. In-process servers on free ports, spoken to over HTTP (and
//! raw TCP where a misbehaving client is the point).
mod common;

#[path = "hardening/connections.rs"]
mod connections;
#[path = "hardening/rate_limits.rs"]
mod rate_limits;
#[path = "hardening/deliveries.rs"]
mod deliveries;
#[path = "hardening/admin.rs"]
mod admin;
#[path = "hardening/exposures.rs"]
mod exposures;
#[path = "hardening/disk.rs"]
mod disk;

/// Every test of this binary runs on SQLite here, and again on PostgreSQL through this one.
#[test]
fn these_tests_pass_on_postgres() {
    common::rerun_on_postgres();
}
