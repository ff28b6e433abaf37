//! `qiao`: start-up only — parse the command line, set up logging, start the server, wait for a
//! signal, shut down.

use clap::{Parser, Subcommand};
use qiao::config::{Config, ServeArgs};

#[derive(Parser)]
#[command(
    name = "qiao",
    version,
    about = "Qiao (桥): video mediation and remote hearing server / 视频调解与远程庭审服务器"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
// Parsed once at start: the size of the `Serve` variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Run the server (HTTP API, web client, signalling and media) on embedded defaults:
    /// SQLite and recordings under ./data, HTTP on 127.0.0.1:8080, media on UDP 127.0.0.1:50000.
    Serve(ServeArgs),
    /// Check offline what Qiao exported, and exit 1 naming what was changed:
    /// a recorded session's directory (manifest.json against the schema, every segment's SHA-256,
    /// the hash chain, the head, the Ed25519 signature), or an audit-log export file
    /// (GET /api/v1/audit: every entry's hash and the chain).
    Verify {
        /// A recording directory (holding manifest.json) or an audit export file.
        path: std::path::PathBuf,
        /// The server's public key (base64, GET /api/v1/recordings/public-key): the manifest must
        /// be signed by it.
        #[arg(long)]
        public_key: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rtc=warn,rtc_dtls=error,webrtc=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qiao: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match cli.command {
        Cmd::Serve(args) => runtime.block_on(serve(args)),
        Cmd::Verify { path, public_key } if path.is_dir() => {
            match qiao::record::verify_recording(&path, public_key.as_deref()) {
                Ok(m) => {
                    println!(
                        "完整 / intact: {} segments, case {}, session {}, 完整性校验值 / integrity value {}",
                        m.segments.len(),
                        m.case_id,
                        m.session.id,
                        m.chain_head
                    );
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("qiao verify: 录像被改动或不完整 / recording altered or incomplete: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Cmd::Verify { path, .. } => match qiao::verify::verify_file(&path) {
            Ok(r) => {
                let range = if r.contiguous { "a contiguous range" } else { "one session's entries" };
                println!(
                    "完整 / intact: {} audit entries ({range}, seq {}–{}), head {}",
                    r.entries, r.first_seq, r.last_seq, r.head
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("qiao verify: {e}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

async fn serve(args: ServeArgs) -> std::process::ExitCode {
    let admin = std::env::var("QIAO_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    let config = match Config::from_args(args, admin) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qiao: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let data_dir = config.data_dir.clone();
    let server = match qiao::server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("qiao: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if server.admin_token_generated {
        println!(
            "管理员令牌 / admin token (saved in {}/admin.token, shown once): {}",
            data_dir.display(),
            server.admin_token
        );
    }
    println!("qiao listening on {} (media udp {})", server.base_url, server.media_addr);
    shutdown_signal().await;
    println!("qiao shutting down");
    server.shutdown().await;
    std::process::ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
