//! Object storage for recordings (local directory or S3-compatible), the local spool and the
//! durable upload queue.

// TEMPORARY until the storage module lands.
pub fn recording_prefix(case_number: &str, session_id: &str, recording_id: &str) -> String {
    let enc: String = case_number
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("cases/{enc}/sessions/{session_id}/{recording_id}")
}
