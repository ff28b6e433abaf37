//! The recording manifest (`recordings-schema/manifest.schema.json` defines its shape): types,
//! the hash chain over segments, the canonical form that is signed, and verification.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The schema, compiled into the binary so `qiao verify` needs nothing else.
pub const SCHEMA: &str = include_str!("../../recordings-schema/manifest.schema.json");
pub const FORMAT: &str = "qiao-recording-manifest/1";
pub const ZERO_CHAIN: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub case_id: String,
    pub case: String,
    pub session: SessionInfo,
    pub status: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub participants: Vec<serde_json::Value>,
    pub tracks: Vec<serde_json::Value>,
    pub segments: Vec<Segment>,
    pub chain_head: String,
    pub pauses: Vec<serde_json::Value>,
    pub gaps: Vec<serde_json::Value>,
    pub renditions: Vec<serde_json::Value>,
    pub signature: Option<SignatureBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    pub kind: String,
    pub title: Option<String>,
    pub sites: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub index: u64,
    pub track_id: String,
    pub path: String,
    pub start_ms: u64,
    pub duration_ms: u64,
    pub size: u64,
    pub sha256: String,
    pub chain: String,
    /// The zone the segment was recorded in (`main`, `caucus:1`, …): who may read it depends on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureBlock {
    pub algorithm: String,
    pub public_key: String,
    pub value: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordingError {
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error("manifest.json does not match the schema: {0}")]
    Schema(String),
    #[error("segment {index} ({path}) is missing")]
    MissingSegment { index: u64, path: String },
    #[error("segment {index} ({path}) was changed: its SHA-256 or size differs from the manifest")]
    SegmentChanged { index: u64, path: String },
    #[error("segment {index} ({path}): the chain is broken (segments removed, reordered or edited in the manifest)")]
    ChainBroken { index: u64, path: String },
    #[error("rendition {0} was changed or is missing: its SHA-256 or size differs from the manifest")]
    RenditionChanged(String),
    #[error("chain_head does not match the last segment's chain")]
    HeadMismatch,
    #[error("the manifest is not signed")]
    Unsigned,
    #[error("the signature does not verify: the manifest was changed or signed by another key")]
    BadSignature,
    #[error("signed by {found}, not by the expected key {expected}")]
    WrongKey { expected: String, found: String },
    #[error("a segment path leaves the recording directory: {0}")]
    UnsafePath(String),
}

impl Manifest {
    /// The manifest of a recording that has just started: status `recording`, nothing listed yet.
    pub fn started(case_id: String, case: String, session: SessionInfo, started_at: String) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            case_id,
            case,
            session,
            status: "recording".into(),
            started_at,
            ended_at: None,
            participants: Vec::new(),
            tracks: Vec::new(),
            segments: Vec::new(),
            chain_head: ZERO_CHAIN.into(),
            pauses: Vec::new(),
            gaps: Vec::new(),
            renditions: Vec::new(),
            signature: None,
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The chain value of a segment: SHA-256 over `prev \n index \n path \n sha256`.
pub fn chain_next(prev: &str, index: u64, path: &str, sha256: &str) -> String {
    sha256_hex(format!("{prev}\n{index}\n{path}\n{sha256}").as_bytes())
}

/// The bytes that are signed: the manifest without `signature`, keys sorted, compact.
pub fn canonical_bytes(m: &Manifest) -> Vec<u8> {
    let mut v = serde_json::to_value(m).expect("a manifest always serialises");
    if let Some(o) = v.as_object_mut() {
        o.remove("signature");
    }
    // serde_json's Value map is a BTreeMap (no preserve_order feature): keys come out sorted.
    serde_json::to_vec(&canonicalise(v)).expect("a Value always serialises")
}

fn canonicalise(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(o) => {
            serde_json::Value::Object(o.into_iter().map(|(k, v)| (k, canonicalise(v))).collect())
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(canonicalise).collect()),
        other => other,
    }
}

/// The server's recording-signing key, kept in the data dir (`recording-signing.key`, 32 bytes).
pub struct SigningKeys {
    key: SigningKey,
}

impl SigningKeys {
    pub fn from_seed(seed: [u8; 32]) -> SigningKeys {
        SigningKeys { key: SigningKey::from_bytes(&seed) }
    }

    pub fn load_or_create(dir: &Path) -> std::io::Result<SigningKeys> {
        let path = dir.join("recording-signing.key");
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice()) {
                return Ok(SigningKeys::from_seed(seed));
            }
        }
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        write_private(&path, &key.to_bytes())?;
        Ok(SigningKeys { key })
    }

    /// The public key, base64, as verifiers get it.
    pub fn public_key_b64(&self) -> String {
        B64.encode(self.key.verifying_key().to_bytes())
    }

    /// Signs the manifest in place.
    pub fn sign(&self, m: &mut Manifest) {
        m.signature = None;
        let sig = self.key.sign(&canonical_bytes(m));
        m.signature = Some(SignatureBlock {
            algorithm: "ed25519".into(),
            public_key: self.public_key_b64(),
            value: B64.encode(sig.to_bytes()),
        });
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(data)
}

/// Checks a recorded session's directory offline: the schema, every segment's hash and size, the
/// chain, the head and the signature (by `expected_key` when given). Returns the manifest.
pub fn verify_recording(dir: &Path, expected_key: Option<&str>) -> Result<Manifest, RecordingError> {
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| RecordingError::Read(manifest_path.display().to_string(), e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| RecordingError::Schema(e.to_string()))?;
    check_schema(&value)?;
    let m: Manifest = serde_json::from_value(value).map_err(|e| RecordingError::Schema(e.to_string()))?;
    let mut prev = ZERO_CHAIN.to_string();
    for (i, s) in m.segments.iter().enumerate() {
        if s.path.starts_with('/') || s.path.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(RecordingError::UnsafePath(s.path.clone()));
        }
        let bytes = std::fs::read(dir.join(&s.path))
            .map_err(|_| RecordingError::MissingSegment { index: s.index, path: s.path.clone() })?;
        if bytes.len() as u64 != s.size || sha256_hex(&bytes) != s.sha256 {
            return Err(RecordingError::SegmentChanged { index: s.index, path: s.path.clone() });
        }
        let expected = chain_next(&prev, s.index, &s.path, &s.sha256);
        if s.index != i as u64 || s.chain != expected {
            return Err(RecordingError::ChainBroken { index: s.index, path: s.path.clone() });
        }
        prev = expected;
    }
    if m.chain_head != prev {
        return Err(RecordingError::HeadMismatch);
    }
    for r in &m.renditions {
        let path = r["path"].as_str().unwrap_or_default();
        if path.starts_with('/') || path.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(RecordingError::UnsafePath(path.into()));
        }
        let ok = std::fs::read(dir.join(path)).is_ok_and(|b| {
            Some(b.len() as u64) == r["size"].as_u64() && r["sha256"].as_str() == Some(sha256_hex(&b).as_str())
        });
        if !ok {
            return Err(RecordingError::RenditionChanged(path.into()));
        }
    }
    let sig = m.signature.as_ref().ok_or(RecordingError::Unsigned)?;
    if let Some(k) = expected_key {
        if k != sig.public_key {
            return Err(RecordingError::WrongKey { expected: k.into(), found: sig.public_key.clone() });
        }
    }
    let key_bytes: [u8; 32] =
        B64.decode(&sig.public_key).ok().and_then(|b| b.try_into().ok()).ok_or(RecordingError::BadSignature)?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| RecordingError::BadSignature)?;
    let sig_bytes: [u8; 64] =
        B64.decode(&sig.value).ok().and_then(|b| b.try_into().ok()).ok_or(RecordingError::BadSignature)?;
    key.verify(&canonical_bytes(&m), &Signature::from_bytes(&sig_bytes)).map_err(|_| RecordingError::BadSignature)?;
    Ok(m)
}

/// Validates a manifest against the schema compiled into the binary.
pub fn check_schema(value: &serde_json::Value) -> Result<(), RecordingError> {
    let schema: serde_json::Value = serde_json::from_str(SCHEMA).expect("the bundled schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the bundled schema is a valid schema");
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(RecordingError::Schema(errors.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes three segments and a signed manifest into `dir`.
    fn recorded(dir: &Path, keys: &SigningKeys) -> Manifest {
        let mut segments = Vec::new();
        let mut prev = ZERO_CHAIN.to_string();
        for i in 0..3u64 {
            let path = format!("tracks/t_01/{i:06}.webm");
            let bytes = format!("segment {i} media bytes").into_bytes();
            std::fs::create_dir_all(dir.join("tracks/t_01")).unwrap();
            std::fs::write(dir.join(&path), &bytes).unwrap();
            let sha = sha256_hex(&bytes);
            let chain = chain_next(&prev, i, &path, &sha);
            segments.push(Segment {
                index: i,
                track_id: "t_01".into(),
                path,
                start_ms: i * 5000,
                duration_ms: 5000,
                size: bytes.len() as u64,
                sha256: sha,
                chain: chain.clone(),
                zone: None,
            });
            prev = chain;
        }
        let example: Manifest =
            serde_json::from_str(include_str!("../../recordings-schema/examples/hearing.json")).unwrap();
        // The example lists a composite rendition; these tests are about segments.
        let mut m = Manifest { segments, chain_head: prev, signature: None, renditions: Vec::new(), ..example };
        keys.sign(&mut m);
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        m
    }

    #[test]
    fn the_example_manifest_validates_against_the_schema() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../recordings-schema/examples/hearing.json")).unwrap();
        assert_eq!(check_schema(&v), Ok(()));
        let mut bad = v.clone();
        bad["status"] = "paused".into();
        assert!(matches!(check_schema(&bad), Err(RecordingError::Schema(_))));
    }

    #[test]
    fn an_untouched_recording_verifies_and_its_head_is_the_last_chain() {
        let dir = tempfile::tempdir().unwrap();
        let keys = SigningKeys::from_seed([7; 32]);
        let m = recorded(dir.path(), &keys);
        let v = verify_recording(dir.path(), Some(&keys.public_key_b64())).unwrap();
        assert_eq!(v.chain_head, m.segments[2].chain);
    }

    #[test]
    fn one_flipped_byte_names_its_segment() {
        let dir = tempfile::tempdir().unwrap();
        let keys = SigningKeys::from_seed([7; 32]);
        let m = recorded(dir.path(), &keys);
        let p = dir.path().join(&m.segments[1].path);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[3] ^= 0x01;
        std::fs::write(&p, bytes).unwrap();
        assert_eq!(
            verify_recording(dir.path(), None),
            Err(RecordingError::SegmentChanged { index: 1, path: m.segments[1].path.clone() })
        );
    }

    #[test]
    fn a_removed_segment_or_an_edited_manifest_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let keys = SigningKeys::from_seed([7; 32]);
        let m = recorded(dir.path(), &keys);
        // Removing a segment from the manifest breaks the chain even if re-signed by someone else.
        let mut cut = m.clone();
        cut.segments.remove(1);
        SigningKeys::from_seed([9; 32]).sign(&mut cut);
        std::fs::write(dir.path().join("manifest.json"), serde_json::to_vec(&cut).unwrap()).unwrap();
        assert!(matches!(verify_recording(dir.path(), None), Err(RecordingError::ChainBroken { index: 2, .. })));
        // Editing any field invalidates the signature.
        let mut edited = m.clone();
        edited.case_id = "(2024)冀0925民初9999号".into();
        std::fs::write(dir.path().join("manifest.json"), serde_json::to_vec(&edited).unwrap()).unwrap();
        assert_eq!(verify_recording(dir.path(), None), Err(RecordingError::BadSignature));
        // A manifest re-signed by another key is refused when the server's key is expected.
        let mut forged = m.clone();
        SigningKeys::from_seed([9; 32]).sign(&mut forged);
        std::fs::write(dir.path().join("manifest.json"), serde_json::to_vec(&forged).unwrap()).unwrap();
        assert!(matches!(
            verify_recording(dir.path(), Some(&keys.public_key_b64())),
            Err(RecordingError::WrongKey { .. })
        ));
    }

    #[test]
    fn a_segment_path_cannot_leave_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let keys = SigningKeys::from_seed([7; 32]);
        let mut m = recorded(dir.path(), &keys);
        m.segments[0].path = "tracks/../../etc/passwd".into();
        std::fs::write(dir.path().join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        assert!(matches!(
            verify_recording(dir.path(), None),
            Err(RecordingError::Schema(_) | RecordingError::UnsafePath(_))
        ));
    }
}
