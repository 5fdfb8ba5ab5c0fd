//! (tests added by the hardening work)
#[allow(unused_imports)]
use crate::common::*;
