use std::process::ExitCode;

use orderly::configuration::Settings;
use orderly::startup::Application;

#[actix_web::main]
async fn main() -> ExitCode {
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
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "orderly listening on http://{host}:{} (profile {})",
        app.port(),
        profile.as_str()
    );
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log::error!("server error: {err}");
            ExitCode::FAILURE
        }
    }
}
