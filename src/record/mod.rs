//! Recording: the recorder (a server-side subscriber of every track that muxes short segments
//! with FFmpeg), the manifest (segment hash chain, Ed25519 signature, offline check behind
//! `qiao verify`), crash recovery, and the composite rendition rendered after close.

pub mod clock;
pub mod composite;
pub mod depacketize;
pub mod live;
pub mod manifest;
pub mod mux;
pub mod recorder;
pub mod service;

pub use manifest::{verify_recording, Manifest, RecordingError, SigningKeys};
