//! The composite rendition: every participant in a grid with labels and burnt-in recording time,
//! audio mixed, rendered with FFmpeg after a session closes.
