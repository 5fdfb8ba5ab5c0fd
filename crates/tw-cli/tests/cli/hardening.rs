//! The binary's part in the hardening issue's defences: `tw-cli serve`'s flags and its stop on
//! SIGTERM, the key and audit commands, and what the CLI shows of refused deliveries. The
//! server's own defences are proven over HTTP in tw-server's `hardening` tests.

mod admin;
mod connections;
mod deliveries;
mod exposures;
mod rate_limits;

/// Every test of this module runs on SQLite here, and again on PostgreSQL through this one (the
/// in-process servers, and the key commands on their store, then use a PostgreSQL database).
#[test]
fn these_tests_pass_on_postgres() {
    tw_store::testing::rerun_on_postgres(&["hardening::"]);
}
