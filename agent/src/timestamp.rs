//! Timestamps as the reports print them: RFC 3339 UTC with microseconds
//! (`2026-11-22T15:29:53.123456Z`). PURE: formatting only, no clock.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serializer;

use crate::Nanos;

/// `ts` (nanoseconds since the epoch) as RFC 3339 UTC with microseconds.
pub fn format(ts: Nanos) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(ts)).to_string()
}

/// serde's `serialize_with` for [`Nanos`] fields.
pub fn serialize<S: Serializer>(ts: &Nanos, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*ts))
}
