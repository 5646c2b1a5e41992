//! Wires configuration, clients and the loop together.

use std::path::Path;
use std::process::ExitCode;
use vault_secrets_reloader::config::{self, Command, Config, VaultSettings, SERVICE_ACCOUNT_DIR};
use vault_secrets_reloader::{collector, daemon, kube, logging, reloader, serve, vault};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let config = match config::parse(args, &|name| std::env::var(name).ok()) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{}", config::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("vault-secrets-reloader {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("vault-secrets-reloader: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log_level, config.json_log);
    match run(*config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> Result<(), String> {
    log::info!(
        "vault-secrets-reloader {} starting",
        env!("CARGO_PKG_VERSION")
    );
    if config.collector_period > config.reloader_period {
        log::warn!(
            "--collector-sync-period ({:?}) is longer than --reloader-run-period ({:?}): \
             the reloader will often see an old list of workloads",
            config.collector_period,
            config.reloader_period
        );
    }
    let signals =
        daemon::Signals::install().map_err(|e| format!("installing signal handlers: {e}"))?;
    let mut kube = kube::Kube::new(&config.kube).map_err(|e| format!("Kubernetes client: {e}"))?;
    let vault_client = |settings: &VaultSettings, kube: &mut kube::Kube| {
        if settings.skip_verify {
            log::warn!("TLS verification of {} is off (SKIP_VERIFY)", settings.addr);
        }
        let ca_pem = vault_ca(settings, kube)?;
        let client = vault::Vault::new(settings, ca_pem, config.kube.token_file.clone())
            .map_err(|e| format!("Vault client for {}: {e}", settings.addr))?;
        Ok::<_, String>((client, settings.ignore_missing))
    };
    let vault = vault_client(&config.vault, &mut kube)?;
    let bao = match &config.bao {
        Some(settings) => Some(vault_client(settings, &mut kube)?),
        None => None,
    };
    let server = match serve::Server::bind(&config.listen_address) {
        Ok(server) => Some(server),
        Err(e) => {
            log::error!(
                "cannot listen on {}: {e}; running without health checks",
                config.listen_address
            );
            None
        }
    };
    let code = daemon::Daemon {
        kube,
        collector: collector::Collector::new(&config.namespaces, &config.exclude_namespaces),
        reloader: reloader::Reloader::new(vault, bao),
        server,
        signals,
        collector_period: config.collector_period,
        reloader_period: config.reloader_period,
    }
    .run();
    match code {
        0 => Ok(()),
        _ => Err("stopped with errors".into()),
    }
}

/// The CA to trust for a Vault server: from its file, or from the `ca.crt`
/// key of a Kubernetes Secret.
fn vault_ca(settings: &VaultSettings, kube: &mut kube::Kube) -> Result<Option<Vec<u8>>, String> {
    if let Some(path) = &settings.ca_file {
        return std::fs::read(path)
            .map(Some)
            .map_err(|e| format!("reading the Vault CA {}: {e}", path.display()));
    }
    let Some((namespace, name)) = &settings.ca_secret else {
        return Ok(None);
    };
    let namespace = match namespace {
        Some(ns) => ns.clone(),
        None => own_namespace(),
    };
    kube.secret_value(&namespace, name, "ca.crt")
        .map(Some)
        .map_err(|e| format!("reading ca.crt of Secret {namespace}/{name}: {e}"))
}

/// The namespace the daemon runs in.
fn own_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| std::fs::read_to_string(Path::new(SERVICE_ACCOUNT_DIR).join("namespace")).ok())
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".into())
}
