//! Recording. Today: the manifest — its types, the segment hash chain, the server's Ed25519
//! signature and the offline check behind `qiao verify <dir>`. The recorder itself (a subscriber
//! of every track that muxes segments with FFmpeg) builds on this.

pub mod composite;
pub mod manifest;

pub use manifest::{verify_recording, Manifest, RecordingError, SigningKeys};
