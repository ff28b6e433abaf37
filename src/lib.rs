//! Qiao (桥): a WebRTC SFU for remote hearings, mediation and petition reception.
//!
//! # Layout
//!
//! - [`config`]: one `Config` with a section per area, from flags and environment, validated once.
//! - [`core`]: the media core — rooms, participants, tracks, subscriptions and every forwarding
//!   decision; no sockets, no clock, no locks; tested faster than real time.
//! - [`media`]: the driver — owns the single UDP socket and every peer connection (webrtc-rs's
//!   sans-IO `rtc`), feeds the core and carries out its outputs.
//! - [`signal`]: the WebSocket protocol (versioned serde enums) and one task per connection.
//! - [`api`]: thin axum handlers; `api::app(state)` builds the router for tests.
//! - [`record`]: the recorder (a subscriber of every track, muxing segments with FFmpeg), the
//!   manifest (segment hash chain, Ed25519 signature, offline check), crash recovery and the
//!   composite rendition.
//! - [`storage`]: recordings' object store (local directory or S3), spool and upload queue.
//! - [`store`]: metadata in SQLite (sites, cases, sessions, participants, presence history).
//! - [`auth`]: join tokens (JWT) and the admin token.
//! - [`server`]: start-up wiring shared by `main` and the tests.
//! - [`verify`]: offline checks behind `qiao verify` (audit-log exports; recordings in `record`).
//!
//! Dependency direction: `config` ← `core` ← `media` ← `signal` ← `api` ← `server` ← `main`;
//! `store` and `auth` are leaves. See ARCHITECTURE.md for the invariants each module keeps.

pub mod api;
pub mod auth;
pub mod config;
pub mod core;
pub mod media;
pub mod record;
pub mod server;
pub mod signal;
pub mod storage;
pub mod store;
pub mod verify;
