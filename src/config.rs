//! One `Config` with a section per area, built from flags and environment variables and
//! validated once at start (`qiao serve --help` documents every field).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::core::CoreConfig;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Directory for the SQLite database, keys, the admin token and recordings.
    #[arg(long, env = "QIAO_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Address the HTTP(S) server (API, web client, signalling) listens on.
    #[arg(long, env = "QIAO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The one UDP address all media uses (one firewall rule). Port 0 picks a free port.
    #[arg(long, env = "QIAO_RTC_UDP", default_value = "127.0.0.1:50000")]
    pub rtc_udp: SocketAddr,

    /// The address announced in ICE candidates (the server's address as clients reach it,
    /// e.g. behind 1:1 NAT). Defaults to the --rtc-udp address; required when that is 0.0.0.0.
    #[arg(long, env = "QIAO_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,

    /// Base URL used in join links. Defaults to http(s)://<listen address>.
    #[arg(long, env = "QIAO_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// TLS for HTTP: off (plain HTTP), self-signed (a certificate made at start with rcgen, for a
    /// LAN), or files (use --tls-cert and --tls-key).
    #[arg(long, env = "QIAO_TLS", value_enum, default_value_t = TlsMode::Off)]
    pub tls: TlsMode,

    /// PEM certificate chain, with --tls files.
    #[arg(long, env = "QIAO_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key, with --tls files.
    #[arg(long, env = "QIAO_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Minimum milliseconds between two keyframe requests (PLI) sent to one published track.
    #[arg(long, env = "QIAO_PLI_INTERVAL_MS", default_value_t = 1000)]
    pub pli_interval_ms: u64,

    /// Most KiB of one video track's latest GOP kept to start new subscribers at once without a
    /// keyframe request (0 turns the cache off; GOPs older than 4 s are never replayed). The
    /// replay is paced (12 Mbit/s) so that a new subscriber's socket does not overflow.
    #[arg(long, env = "QIAO_GOP_CACHE_KB", default_value_t = 1024)]
    pub gop_cache_kb: usize,

    /// Subscribers whose downlink is estimated below this many kbit/s, or who report loss, get
    /// their video paced at 1.5 times what they are sent instead of in the bursts it arrives in
    /// (a keyframe sent at once overflows a weak link's queue). 0 turns pacing off.
    #[arg(long, env = "QIAO_PACE_BELOW_KBPS", default_value_t = 1000)]
    pub pace_below_kbps: u64,

    /// Seconds without media or ICE traffic after which a participant is removed (cause media_timeout).
    #[arg(long, env = "QIAO_PEER_TIMEOUT_SECS", default_value_t = 10)]
    pub peer_timeout_secs: u64,

    /// Seconds a participant whose signalling dropped keeps its place (cause network_lost after).
    #[arg(long, env = "QIAO_RECONNECT_GRACE_SECS", default_value_t = 15)]
    pub reconnect_grace_secs: u64,

    /// Default lifetime of join tokens, in seconds.
    #[arg(long, env = "QIAO_TOKEN_TTL_SECS", default_value_t = 86_400)]
    pub token_ttl_secs: u64,

    /// Where recordings are stored: `local` (a directory, see --recordings-dir) or
    /// `s3://bucket[/prefix]` (endpoint, region and credentials from the standard AWS variables:
    /// AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "QIAO_RECORDINGS_STORE", default_value = "local")]
    pub recordings_store: String,

    /// The local recordings directory (with --recordings-store local). Defaults to <data-dir>/recordings.
    #[arg(long, env = "QIAO_RECORDINGS_DIR")]
    pub recordings_dir: Option<PathBuf>,

    /// Path-style S3 URLs (endpoint/bucket/key), as most self-hosted S3 servers need.
    #[arg(long, env = "QIAO_S3_PATH_STYLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub s3_path_style: bool,

    /// Target length of a recording segment in seconds (video cuts at the next keyframe).
    #[arg(long, env = "QIAO_SEGMENT_SECS", default_value_t = 4)]
    pub segment_secs: u64,

    /// The local spool that holds segments until storage has them, in MiB. An alarm is raised at 80%.
    #[arg(long, env = "QIAO_SPOOL_LIMIT_MB", default_value_t = 4096)]
    pub spool_limit_mb: u64,

    /// How many KiB per second rewriting a recording's working manifest (live.json and the
    /// stored snapshot) may cost: as a long session's manifest grows, it is rewritten less often.
    /// Closed segments are journaled at once, so a crash loses none of them.
    #[arg(long, env = "QIAO_MANIFEST_BUDGET_KIB", default_value_t = 32)]
    pub manifest_budget_kib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    Off,
    SelfSigned,
    Files,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub media: MediaConfig,
    pub core: CoreConfig,
    pub auth: AuthConfig,
    pub recording: RecordingConfig,
}

/// Where recordings go and how they are cut.
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    pub store: StoreConfig,
    /// Segments wait here (under the data dir) until storage has them.
    pub spool_dir: PathBuf,
    pub spool_limit_bytes: u64,
    pub segment: Duration,
    /// Bytes per second the working manifest's rewrites may cost (`record::live`).
    pub manifest_budget: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Local { root: PathBuf },
    S3(S3Config),
}

#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing '/'; may be empty.
    pub prefix: String,
    /// `None` means AWS itself (region endpoint).
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for S3Config {
    // The secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// `s3://bucket[/prefix]` plus the standard AWS environment variables.
    pub fn from_url_and_env(url: &str, path_style: bool) -> Result<S3Config, ConfigError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| ConfigError::BadStore(url.into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ConfigError::BadStore(url.into()));
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let access_key = env("AWS_ACCESS_KEY_ID").ok_or(ConfigError::MissingEnv("AWS_ACCESS_KEY_ID"))?;
        let secret_key = env("AWS_SECRET_ACCESS_KEY").ok_or(ConfigError::MissingEnv("AWS_SECRET_ACCESS_KEY"))?;
        Ok(S3Config {
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').into(),
            endpoint: env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")),
            region: env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into()),
            path_style,
            access_key,
            secret_key,
        })
    }
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// `None` means "derive from the bound address" (useful with port 0).
    pub public_url: Option<String>,
    pub tls: TlsMode,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct MediaConfig {
    pub udp: SocketAddr,
    pub public_ip: Option<IpAddr>,
    /// Downlinks estimated below this (bits per second) have their video paced; 0: none.
    pub pace_below_bps: u64,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// From QIAO_ADMIN_TOKEN; `None` means read or generate `admin.token` in the data dir.
    pub admin_token: Option<String>,
    pub token_ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--tls files needs both --tls-cert and --tls-key")]
    MissingTlsFiles,
    #[error("--rtc-udp {0} is a wildcard address: set --public-ip to the address clients reach")]
    NeedPublicIp(SocketAddr),
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("QIAO_ADMIN_TOKEN must be at least 16 characters")]
    WeakAdminToken,
    #[error("--recordings-store must be `local` or s3://bucket[/prefix], not {0:?}")]
    BadStore(String),
    #[error("--recordings-store s3://… needs the environment variable {0}")]
    MissingEnv(&'static str),
}

impl Config {
    pub fn from_args(a: ServeArgs, admin_token: Option<String>) -> Result<Config, ConfigError> {
        if a.tls == TlsMode::Files && (a.tls_cert.is_none() || a.tls_key.is_none()) {
            return Err(ConfigError::MissingTlsFiles);
        }
        if a.rtc_udp.ip().is_unspecified() && a.public_ip.is_none() {
            return Err(ConfigError::NeedPublicIp(a.rtc_udp));
        }
        for (v, name) in [
            (a.pli_interval_ms, "--pli-interval-ms"),
            (a.peer_timeout_secs, "--peer-timeout-secs"),
            (a.token_ttl_secs, "--token-ttl-secs"),
            (a.segment_secs, "--segment-secs"),
            (a.spool_limit_mb, "--spool-limit-mb"),
            (a.manifest_budget_kib, "--manifest-budget-kib"),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::WeakAdminToken);
        }
        let store = if a.recordings_store == "local" {
            StoreConfig::Local { root: a.recordings_dir.clone().unwrap_or_else(|| a.data_dir.join("recordings")) }
        } else {
            StoreConfig::S3(S3Config::from_url_and_env(&a.recordings_store, a.s3_path_style)?)
        };
        let recording = RecordingConfig {
            store,
            spool_dir: a.data_dir.join("spool"),
            spool_limit_bytes: a.spool_limit_mb.saturating_mul(1 << 20),
            segment: Duration::from_secs(a.segment_secs),
            manifest_budget: a.manifest_budget_kib.saturating_mul(1024),
        };
        Ok(Config {
            recording,
            data_dir: a.data_dir,
            http: HttpConfig {
                listen: a.listen,
                public_url: a.public_url,
                tls: a.tls,
                tls_cert: a.tls_cert,
                tls_key: a.tls_key,
            },
            media: MediaConfig { udp: a.rtc_udp, public_ip: a.public_ip, pace_below_bps: a.pace_below_kbps * 1000 },
            core: CoreConfig {
                pli_interval: Duration::from_millis(a.pli_interval_ms),
                peer_timeout: Duration::from_secs(a.peer_timeout_secs),
                reconnect_grace: Duration::from_secs(a.reconnect_grace_secs),
                gop_cache_bytes: a.gop_cache_kb * 1024,
                ..CoreConfig::default()
            },
            auth: AuthConfig { admin_token, token_ttl: Duration::from_secs(a.token_ttl_secs) },
        })
    }

    /// A configuration for tests and embedding: everything on 127.0.0.1 with ephemeral ports.
    pub fn local_ephemeral(data_dir: PathBuf) -> Config {
        Config {
            http: HttpConfig {
                listen: ([127, 0, 0, 1], 0).into(),
                public_url: None,
                tls: TlsMode::Off,
                tls_cert: None,
                tls_key: None,
            },
            media: MediaConfig { udp: ([127, 0, 0, 1], 0).into(), public_ip: None, pace_below_bps: 1_000_000 },
            core: CoreConfig::default(),
            auth: AuthConfig { admin_token: None, token_ttl: Duration::from_secs(86_400) },
            recording: RecordingConfig {
                store: StoreConfig::Local { root: data_dir.join("recordings") },
                spool_dir: data_dir.join("spool"),
                spool_limit_bytes: 1 << 30,
                segment: Duration::from_secs(4),
                manifest_budget: 32 * 1024,
            },
            data_dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        Cli::try_parse_from(std::iter::once("qiao").chain(args.iter().copied())).unwrap().serve
    }

    #[test]
    fn the_defaults_are_embedded_and_local() {
        let c = Config::from_args(parse(&[]), None).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.media.udp.to_string(), "127.0.0.1:50000");
        assert_eq!(c.http.tls, TlsMode::Off);
        assert_eq!(c.core.pli_interval, Duration::from_secs(1));
    }

    #[test]
    fn invalid_combinations_are_refused_with_a_reason() {
        assert!(matches!(Config::from_args(parse(&["--tls", "files"]), None), Err(ConfigError::MissingTlsFiles)));
        assert!(matches!(
            Config::from_args(parse(&["--rtc-udp", "0.0.0.0:50000"]), None),
            Err(ConfigError::NeedPublicIp(_))
        ));
        assert!(Config::from_args(parse(&["--rtc-udp", "0.0.0.0:50000", "--public-ip", "192.0.2.1"]), None).is_ok());
        assert!(matches!(Config::from_args(parse(&["--pli-interval-ms", "0"]), None), Err(ConfigError::Zero(_))));
        assert!(matches!(Config::from_args(parse(&[]), Some("short".into())), Err(ConfigError::WeakAdminToken)));
    }
}
