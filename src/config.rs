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

    /// Seconds without media or ICE traffic after which a participant is removed (cause media_timeout).
    #[arg(long, env = "QIAO_PEER_TIMEOUT_SECS", default_value_t = 10)]
    pub peer_timeout_secs: u64,

    /// Seconds a participant whose signalling dropped keeps its place (cause network_lost after).
    #[arg(long, env = "QIAO_RECONNECT_GRACE_SECS", default_value_t = 15)]
    pub reconnect_grace_secs: u64,

    /// Default lifetime of join tokens, in seconds.
    #[arg(long, env = "QIAO_TOKEN_TTL_SECS", default_value_t = 86_400)]
    pub token_ttl_secs: u64,
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
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::WeakAdminToken);
        }
        Ok(Config {
            data_dir: a.data_dir,
            http: HttpConfig {
                listen: a.listen,
                public_url: a.public_url,
                tls: a.tls,
                tls_cert: a.tls_cert,
                tls_key: a.tls_key,
            },
            media: MediaConfig { udp: a.rtc_udp, public_ip: a.public_ip },
            core: CoreConfig {
                pli_interval: Duration::from_millis(a.pli_interval_ms),
                peer_timeout: Duration::from_secs(a.peer_timeout_secs),
                reconnect_grace: Duration::from_secs(a.reconnect_grace_secs),
            },
            auth: AuthConfig { admin_token, token_ttl: Duration::from_secs(a.token_ttl_secs) },
        })
    }

    /// A configuration for tests and embedding: everything on 127.0.0.1 with ephemeral ports.
    pub fn local_ephemeral(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            http: HttpConfig {
                listen: ([127, 0, 0, 1], 0).into(),
                public_url: None,
                tls: TlsMode::Off,
                tls_cert: None,
                tls_key: None,
            },
            media: MediaConfig { udp: ([127, 0, 0, 1], 0).into(), public_ip: None },
            core: CoreConfig::default(),
            auth: AuthConfig { admin_token: None, token_ttl: Duration::from_secs(86_400) },
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
