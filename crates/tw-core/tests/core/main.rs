//! tw-core's integration tests, one binary: the vendor fixtures normalized and snapshotted, the
//! normalizers under arbitrary input, the built-in playbooks on realistic payloads, and the
//! cargo-fuzz targets run for a bounded time, and URL hosts read as a browser reads them.

mod fixtures;
mod fuzz;
mod normalize_props;
mod triage_playbooks;
mod url_hosts;
mod vendor_fixtures;
