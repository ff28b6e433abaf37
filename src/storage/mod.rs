//! Object storage for recordings (local directory or S3-compatible), the local spool and the
//! durable upload queue.
