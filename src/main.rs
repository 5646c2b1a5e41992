//! Wires configuration, clients and the loop together.

use std::path::Path;
use std::process::ExitCode;
use vault_secrets_reloader::daemon::config::{self, Command, Config};
use vault_secrets_reloader::io::settings::{VaultSettings, SERVICE_ACCOUNT_DIR};
use vault_secrets_reloader::policy::workload::Kind;
use vault_secrets_reloader::{
    collector, daemon, daemon::logging, io::reactor, io::serve, kube, kube::lease, policy::allow,
    reloader, vault,
};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let config = match config::parse(args, &|name| std::env::var(name).ok()) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{}", config::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("{}", version_line());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("vault-secrets-reloader: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log_level, config.json_log);
    match run(*config) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// What `--version` prints: the version, the target triple and the commit
/// the binary was built from (stamped by build.rs).
fn version_line() -> String {
    format!(
        "vault-secrets-reloader {} ({}, commit {})",
        env!("CARGO_PKG_VERSION"),
        env!("VSR_TARGET"),
        env!("VSR_COMMIT")
    )
}

/// Runs the daemon; the exit code, or why it could not start.
fn run(config: Config) -> Result<u8, String> {
    log::info!(
        "vault-secrets-reloader {} starting",
        env!("CARGO_PKG_VERSION")
    );
    warn_about(&config);
    let signals =
        reactor::Signals::install().map_err(|e| format!("installing signal handlers: {e}"))?;
    let mut kube = kube::Kube::new(&config.kube).map_err(|e| format!("Kubernetes client: {e}"))?;
    let reloader = reloader(&config, &mut kube)?;
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
    let elector = elector(&config)?;
    if config.dry_run {
        log::info!("dry run: nothing will be patched");
    }
    let kinds = kinds(&mut kube);
    let mut collector =
        collector::Collector::new(&kinds, &config.namespaces, &config.exclude_namespaces)
            .with_limits(config.limits.clone())
            .with_sources();
    if config.once {
        collector = collector.without_watches();
    }
    let code = daemon::Daemon {
        kube,
        collector,
        reloader,
        reactor: reactor::Reactor::new(server, signals),
        collector_period: config.collector_period,
        reloader_period: config.reloader_period,
        elector,
        once: config.once,
    }
    .run();
    Ok(code)
}

/// Settings that work but deserve a word at start.
fn warn_about(config: &Config) {
    if config.collector_period > config.reloader_period {
        log::warn!(
            "--collector-sync-period ({:?}) is longer than --reloader-run-period ({:?}): \
             where a watch fails or is forbidden, the reloader will see an old list of workloads",
            config.collector_period,
            config.reloader_period
        );
    }
    if config.kube.skip_verify {
        log::warn!(
            "TLS verification of the API server {} is off (the kubeconfig's \
             insecure-skip-tls-verify)",
            config.kube.api_url
        );
    }
    for settings in std::iter::once(&config.vault).chain(&config.bao) {
        if settings.skip_verify {
            log::warn!("TLS verification of {} is off (SKIP_VERIFY)", settings.addr);
        }
        if allow::cleartext_off_host(&settings.addr) {
            log::warn!(
                "{} is plain http:// to a host that is not loopback: the Vault token and the \
                 service-account token cross the network in cleartext",
                settings.addr
            );
        }
    }
    if allow::cleartext_off_host(&config.kube.api_url) {
        log::warn!(
            "the API server {} is plain http:// to a host that is not loopback: its token \
             crosses the network in cleartext",
            config.kube.api_url
        );
    }
    if config.kube.proxies.all_proxy_ignored {
        log::warn!(
            "ALL_PROXY is not used: HTTPS_PROXY serves https:// servers and HTTP_PROXY http:// \
             ones, NO_PROXY lists what goes direct (Go's rule)"
        );
    }
    let urls = [&config.kube.api_url, &config.vault.addr].into_iter();
    for url in urls.chain(config.bao.as_ref().map(|b| &b.addr)) {
        if let Some(proxy) = config.kube.proxies.for_url(url) {
            log::info!("{url} is reached through the proxy {proxy:?}");
        }
    }
    let allowed = config.per_workload_vault_addrs.as_ref();
    for entry in allowed
        .map(allow::AllowList::cleartext_entries)
        .unwrap_or_default()
    {
        log::warn!(
            "--allowed-vault-addrs lets workloads name {entry}, plain http:// to a host that is \
             not loopback: the reloader's Vault credentials would cross the network in cleartext"
        );
    }
}

/// The reloader with its Vault clients: `VAULT_ADDR`, `BAO_ADDR` and, with
/// `--per-workload-vault-addr`, the allowed addresses workloads name.
fn reloader(config: &Config, kube: &mut kube::Kube) -> Result<reloader::Reloader, String> {
    // Read only by a login, and config::parse gives a file whenever one is
    // configured.
    let jwt_file = config.jwt_file.clone().unwrap_or_default();
    let list_metadata = config.list_metadata;
    let listing = move |client: vault::Vault| match list_metadata {
        true => client.with_listing(),
        false => client,
    };
    let mut vault_client = |settings: &VaultSettings| {
        let ca_pem = vault_ca(settings, kube)?;
        let client = vault::Vault::new(settings, ca_pem, jwt_file.clone())
            .map_err(|e| format!("Vault client for {}: {e}", settings.addr))?;
        Ok::<_, String>((listing(client), settings.ignore_missing))
    };
    let vault = vault_client(&config.vault)?;
    let bao = config.bao.as_ref().map(&mut vault_client).transpose()?;
    let per_workload = match config.per_workload_vault_addrs.clone() {
        Some(allowed) => {
            let settings = config.vault.clone();
            let ca_pem = vault_ca(&settings, kube)?;
            let make: reloader::ClientFactory = Box::new(move |addr| {
                let settings = VaultSettings {
                    addr: addr.to_string(),
                    ..settings.clone()
                };
                vault::Vault::new(&settings, ca_pem.clone(), jwt_file.clone()).map(listing)
            });
            Some(reloader::PerWorkload::new(make, allowed))
        }
        None => None,
    };
    let dynamic = reloader::DynamicSettings {
        default_max_age: config.dynamic_default_max_age,
        max_rollouts: config.max_rollouts_per_pass,
        period: config.reloader_period,
        per_namespace_hour: config.max_renewals_per_namespace_hour,
    };
    Ok(
        reloader::Reloader::new(vault, bao, per_workload, config.dry_run)
            .with_dynamic(dynamic)
            .with_limits(config.limits.clone())
            .with_waves(config.waves)
            .with_reload_window(config.reload_window.clone()),
    )
}

/// The Lease candidate with `--leader-elect`, on its own API client.
fn elector(config: &Config) -> Result<Option<lease::Elector>, String> {
    if !config.leader_elect {
        return Ok(None);
    }
    let namespace = config.lease_namespace.clone().unwrap_or_else(own_namespace);
    let lease_client = kube::Kube::with_timeout(&config.kube, lease::REQUEST_TIMEOUT)
        .map_err(|e| format!("Kubernetes client: {e}"))?;
    Ok(Some(lease::Elector::new(
        lease_client,
        namespace,
        config.lease_name.clone(),
        identity(),
    )))
}

/// The kinds to watch: the built-in three, and Argo Rollouts when served.
fn kinds(kube: &mut kube::Kube) -> Vec<Kind> {
    let mut kinds = Kind::BUILT_IN.to_vec();
    match kube.serves(Kind::Rollout) {
        Ok(true) => {
            log::info!("Argo Rollouts found: watching Rollouts too");
            kinds.push(Kind::Rollout);
        }
        Ok(false) => {}
        Err(e) => log::warn!(
            "could not tell whether Argo Rollouts is installed ({e}); not watching Rollouts"
        ),
    }
    kinds
}

/// This replica's leader-election identity: the pod name, else the host name.
fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("vault-secrets-reloader-{}", std::process::id()))
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
