use std::process::ExitCode;

use orderly::configuration::Settings;
use orderly::startup::Application;

/// mimalloc instead of glibc's malloc: a request allocates and frees many
/// small objects across threads, and glibc's malloc was ~13 % of the
/// process's samples in the publish profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `--help` prints: the binary takes no arguments, only its
/// configuration (README "Configuration").
const USAGE: &str = "\
orderly — a strictly ordered job queue service

usage: orderly            (no arguments: configured by files and environment)
       orderly --help | --version

Settings: config/default.toml, then config/<ORDERLY_ENV>.toml (dev, test or
production; the folder is ORDERLY_CONFIG_DIR, default ./config), then
environment variables ORDERLY__SECTION__KEY (e.g. ORDERLY__SERVER__PORT=8080,
ORDERLY__AUTH__JWT_SECRET=...). RUST_LOG sets the log level.";

#[actix_web::main]
async fn main() -> ExitCode {
    // No arguments are taken: anything else is answered, not started on.
    if let Some(arg) = std::env::args_os().nth(1) {
        return match arg.to_string_lossy().as_ref() {
            "--help" | "-h" => {
                println!("{USAGE}");
                ExitCode::SUCCESS
            }
            "--version" | "-V" => {
                println!("orderly {}", env!("CARGO_PKG_VERSION"));
                ExitCode::SUCCESS
            }
            other => {
                eprintln!("orderly: unexpected argument {other:?}\n\n{USAGE}");
                ExitCode::from(2)
            }
        };
    }
    // Freed memory goes back to the OS 10 ms after it is freed
    // (`mi_option_purge_delay`, 15 in mimalloc's option enum; its default,
    // set here so the choice is visible). At 0 (an earlier choice, for peak
    // RSS) every batch request re-faulted and zeroed fresh pages: page
    // faults and page clearing were ~27 % of Orderly's samples in the batch
    // row, whose Orderly CPU per job fell 25-30 % with a delay; peak RSS in
    // the bench rose from 66-70 to 72-76 MB (1000 ms: 77-93 MB).
    // SAFETY: sets a process-wide allocator option; no allocation depends on it.
    unsafe { libmimalloc_sys::mi_option_set(15, 10) };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            log::error!("refusing to start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let (host, profile) = (settings.server.host.clone(), settings.profile);
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(err) => {
            log::error!("cannot start: {err}");
            // At once: actors started before the failure would otherwise
            // run their first steps while the runtime is torn down (panics
            // in the log of a clean refusal).
            std::process::exit(1);
        }
    };
    log::info!(
        "orderly listening on http://{host}:{} (profile {})",
        app.port(),
        profile.as_str()
    );
    match app.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log::error!("server error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(err) => {
                log::warn!("cannot listen for SIGTERM ({err}); only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
