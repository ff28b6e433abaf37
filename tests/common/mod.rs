//! Shared integration-test harness. Each test binary uses a subset.
#![allow(dead_code)]

pub mod av;
pub mod browser;
pub mod client;
pub mod fixtures;
pub mod forwarding;
pub mod latency;
pub mod netem;
pub mod recorder;
pub mod rtp_check;
pub mod s3;
pub mod server;
pub mod simulcast;
