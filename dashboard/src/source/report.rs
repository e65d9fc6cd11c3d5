//! `--report FILE`: the output of `meshwatch analyze --format json`, shown as `analyze` judged
//! it (its verdicts are the engine's; nothing is judged again).

use std::path::Path;

use super::{now_rfc3339, SourceError};
use crate::model::{Evidence, ReportView, Snapshot, SourceInfo};

/// Read and check the report at `path`.
pub fn load(path: &Path) -> Result<Snapshot, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|e| SourceError::ReportUnreadable {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    parse(&text, path)
}

/// The snapshot of a report's text.
pub fn parse(text: &str, path: &Path) -> Result<Snapshot, SourceError> {
    let r: ReportView = serde_json::from_str(text).map_err(|e| SourceError::ReportInvalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let s = r.summary;
    let evidence = Evidence {
        window_seconds: None,
        first_packet: s.first_packet,
        last_packet: s.last_packet,
        drops_known: false,
        evidence_incomplete: false,
        decode_errors: Some(s.decode_errors),
        decode_errors_by_reason: s.decode_errors_by_reason,
        flows_evicted: Some(s.flows_evicted),
        reassembly_gave_up: Some(s.reassembly_gave_up),
        edges_folded: Some(s.edges_folded),
        truncated_files: s.truncated_files,
        min_connections: None,
        max_unknown_ratio: None,
        ..Evidence::default()
    };
    Ok(Snapshot {
        source: SourceInfo {
            kind: "report",
            detail: path.display().to_string(),
            live: false,
        },
        loaded_at: now_rfc3339(),
        evidence,
        edges: r.edges,
        verdicts: r.verdicts,
        namespaces: r.namespaces,
        mesh: r.mesh,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_report_is_refused_with_the_reason() {
        let err = parse("{\"summary\": {}}", Path::new("x.json"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("x.json is not the output of `meshwatch analyze --format json`")
                && err.contains("verdicts"),
            "{err}"
        );
    }
}
