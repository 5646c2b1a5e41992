//! Flags and environment into one typed [`Config`]; all validation lives here.

use crate::io::proxy::Proxies;
use crate::io::settings::{KubeSettings, Redacted, VaultAuth, VaultSettings};
use crate::kube::kubeconfig::{self, Base, Explicit, Kubeconfig};
use crate::policy::allow::{Addr, AllowList};
use crate::policy::paths::AllowedPaths;
use crate::policy::window::{self, Window};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything the daemon needs to know, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How often the collector refreshes the workload index.
    pub collector_period: Duration,
    /// How often the reloader asks Vault for versions.
    pub reloader_period: Duration,
    /// Lowest level logged.
    pub log_level: log::LevelFilter,
    /// One JSON object per log line instead of `key=value` text.
    pub json_log: bool,
    /// Address of the health and metrics listener, e.g. `0.0.0.0:8080`.
    pub listen_address: String,
    /// Only these namespaces (empty: all).
    pub namespaces: Vec<String>,
    /// Never these namespaces.
    pub exclude_namespaces: Vec<String>,
    /// Act only while holding the Lease.
    pub leader_elect: bool,
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace; `None`: the daemon's own.
    pub lease_namespace: Option<String>,
    /// Log what would be reloaded; patch nothing.
    pub dry_run: bool,
    /// One collector and one reloader pass, then exit.
    pub once: bool,
    /// With `--per-workload-vault-addr`: the addresses a workload's
    /// `vault-addr` annotation may name (the configured servers included);
    /// `None`: the annotation is ignored.
    pub per_workload_vault_addrs: Option<AllowList>,
    /// `--dynamic-secret-default-max-age`: the lifetime of a dynamic secret
    /// whose role and mount cannot be read; `None`: no guessing.
    pub dynamic_default_max_age: Option<Duration>,
    /// `--max-rollouts-per-pass`: at most this many renewal rollouts per
    /// pass; `None`: as many as keep every workload inside its window.
    pub max_rollouts_per_pass: Option<usize>,
    /// `--max-renewals-per-namespace-hour`: at most this many renewal
    /// rollouts of one namespace in any hour.
    pub max_renewals_per_namespace_hour: usize,
    /// `--max-concurrent-rollouts`, `--canary-rollouts` and
    /// `--rollout-timeout`: how rollouts go in waves.
    pub waves: crate::reloader::waves::Settings,
    /// `--reload-window`: when the secret changes of workloads without a
    /// window of their own may be rolled out; `None`: at any time.
    pub reload_window: Option<Window>,
    /// `--max-secrets-per-workload` and `--allowed-secret-paths`: what one
    /// workload may name.
    pub limits: crate::policy::workload::Limits,
    /// `--list-secret-metadata`: list the directories holding several
    /// secrets in use (OpenBao's `detailed-metadata`) instead of reading
    /// each secret's metadata.
    pub list_metadata: bool,
    /// How to reach the Kubernetes API server.
    pub kube: KubeSettings,
    /// The service-account token the Vault and OpenBao logins send;
    /// `None` only when no login needs one.
    pub jwt_file: Option<PathBuf>,
    /// The Vault server for `vault:` references.
    pub vault: VaultSettings,
    /// The OpenBao server for `bao:` references, when `BAO_ADDR` is set;
    /// otherwise `bao:` references go to `vault`.
    pub bao: Option<VaultSettings>,
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    /// Run the daemon.
    Run(Box<Config>),
    /// Print the help text and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
}

/// A flag or environment value that cannot be used; the text names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn bad(what: impl Into<String>) -> ConfigError {
    ConfigError(what.into())
}

/// The help text: every flag and environment variable with its default.
pub const HELP: &str = "\
vault-secrets-reloader: rolls out Deployments, DaemonSets, StatefulSets (and Argo Rollouts) when
the Vault/OpenBao secrets they use get a new version.

USAGE: vault-secrets-reloader [FLAGS]

FLAGS (Go duration syntax: 30s, 1m, 1h30m):
  --collector-sync-period DURATION  how often the collector lists what its watch streams
                                    do not follow (a failed or forbidden watch); changes
                                    otherwise apply as they arrive [default: 30s]
  --reloader-run-period DURATION    how often Vault is checked for new versions [default: 60s]
  --log-level LEVEL                 debug, info, warn or error [default: info]
  --enable-json-log                 one JSON object per log line [default: off]
  --namespaces A,B                  only these namespaces [default: all; env NAMESPACES]
  --exclude-namespaces C,D          never these namespaces [env EXCLUDE_NAMESPACES]
  --leader-elect                    act only while holding a coordination.k8s.io Lease
                                    (identity: $POD_NAME, else the host name) [default: off]
  --lease-name NAME                 the Lease [default: vault-secrets-reloader]
  --lease-namespace NS              its namespace [default: the reloader's own]
  --dry-run                         log what would be reloaded, patch nothing [default: off]
  --once                            one collector and one reloader pass, then exit:
                                    0 when all went well, 1 otherwise [default: off]
  --per-workload-vault-addr         honour the webhook's vault-addr pod-template annotation
                                    (secrets-webhook.security.bank-vaults.io/vault-addr or
                                    vault.security.banzaicloud.io/vault-addr); a short host
                                    is qualified as HOST.NAMESPACE.svc [default: off]
  --allowed-vault-addrs LIST        the only addresses a vault-addr annotation may name
                                    (required with --per-workload-vault-addr; the reloader's
                                    credentials go to them): scheme://host[:port] or a
                                    *.suffix host pattern, comma separated; no scheme means
                                    https, no port any port; http only where an entry says
                                    http://; {namespace} in the host is the workload's
                                    namespace, a final @NAMESPACE keeps the entry to that
                                    namespace's workloads [env ALLOWED_VAULT_ADDRS]
  --dynamic-secret-default-max-age DURATION
                                    the lifetime of a dynamic secret whose role and mount
                                    cannot be read, for workloads annotated
                                    dynamic-secret-max-age: auto; at least 10s [default:
                                    none: such a workload gets a Warning Event and is not
                                    renewed; env DYNAMIC_SECRET_DEFAULT_MAX_AGE]
  --max-rollouts-per-pass N         at most N dynamic-secret renewal rollouts per reloader
                                    pass, earliest deadline first; secret changes are never
                                    held [default: as many as keep each workload inside its
                                    window; env MAX_ROLLOUTS_PER_PASS]; shared between
                                    namespaces, each one's earliest deadline in turn
  --max-renewals-per-namespace-hour N
                                    at most N renewal rollouts of one namespace in any hour;
                                    past it its renewals wait and it gets a Warning Event
                                    [default: 3600; env MAX_RENEWALS_PER_NAMESPACE_HOUR]
  --max-concurrent-rollouts N       at most N workloads rolled out by the reloader in progress
                                    at once, cluster-wide (as kubectl rollout status judges
                                    them); the others wait, oldest change first; renewals
                                    count, and wait unless their deadline would pass
                                    [default: 0, no limit; env MAX_CONCURRENT_ROLLOUTS]
  --canary-rollouts N               for each new secret version, the first N workloads using
                                    it roll alone; the others wait until those are done
                                    [default: 0, none; env CANARY_ROLLOUTS]
  --rollout-timeout DURATION        with waves on (either flag above), a rollout not done
                                    after this long fails, whatever its kind (a Deployment
                                    also fails past its progressDeadlineSeconds, if sooner);
                                    a failed rollout holds the pending ones of the same
                                    secret version [default: 10m; env ROLLOUT_TIMEOUT]
  --reload-window SPEC              when secret changes of workloads without their own
                                    <prefix>/reload-window annotation may be rolled out:
                                    DAYS HH:MM[:SS]-HH:MM[:SS] ZONE, several separated by
                                    ';', e.g. 'Mon-Fri 22:00-06:00 Europe/Berlin; Sat,Sun
                                    00:00-24:00 UTC' (IANA zones); outside it they wait,
                                    pending; renewals go anyway [default: none, any time; env
                                    RELOAD_WINDOW]
  --max-secrets-per-workload N      watch only the first N secrets a workload names (sorted);
                                    past N it gets a Warning Event [default: 100; env
                                    MAX_SECRETS_PER_WORKLOAD]
  --allowed-secret-paths LIST       the only secret paths workloads may name: patterns with
                                    {namespace} (the workload's), * for one segment and a
                                    final ** for the rest, comma separated, e.g.
                                    secret/data/{namespace}/**; a reference outside them is
                                    never checked and gets a Warning Event [default: any
                                    path; env ALLOWED_SECRET_PATHS]
  --list-secret-metadata            read the versions of the secrets of a directory holding
                                    3 or more in use with a few list requests (OpenBao's
                                    detailed-metadata; the policy needs list on
                                    MOUNT/detailed-metadata/*) instead of one read each; a
                                    refused or unsupported listing falls back to the reads
                                    [default: off; env LIST_SECRET_METADATA]
  --follow-secret-refs              also follow the vault: references in the Secrets that
                                    containers name (envFrom secretRef, secretKeyRef), as
                                    the webhook injects them; needs get, list and watch on
                                    Secrets (manifests/optional/follow-secret-refs.yaml)
                                    [default: off; env FOLLOW_SECRET_REFS]
  --kubeconfig PATH                 run outside a cluster with a kubeconfig's context: its
                                    server, CA (or insecure-skip-tls-verify) and user: token,
                                    tokenFile or client certificate; not exec or auth-provider
                                    [env KUBECONFIG: its first file]
  --context NAME                    the kubeconfig's context [default: its current-context]
  --kube-api-url URL                API server [env KUBE_API_URL]
  --kube-token-file PATH            bearer token, re-read as it rotates [env KUBE_TOKEN_FILE]
  --kube-ca-file PATH               API server CA [env KUBE_CA_FILE]
                                    Order: a --kube-* flag (or its env) wins over the
                                    kubeconfig, which wins over the in-cluster defaults:
                                    https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
                                    and /var/run/secrets/kubernetes.io/serviceaccount/token
                                    and ca.crt
  -h, --help                        this text
  -V, --version                     the version

ENVIRONMENT:
  LISTEN_ADDRESS               health and metrics listener [default: :8080]
  VAULT_ADDR                   Vault server [default: https://vault:8200]
  VAULT_AUTH_METHOD            kubernetes, jwt or token [default: jwt, or token when
                               VAULT_TOKEN is set]
  VAULT_TOKEN                  token for the token method
  VAULT_ROLE                   role for the kubernetes and jwt methods (required for them)
  VAULT_PATH                   auth mount of the kubernetes and jwt methods [default: kubernetes]
  VAULT_JWT_FILE               service-account token those methods log in with (OpenBao's
                               too) [default: the Kubernetes token file; required when the
                               Kubernetes user is a client certificate or an inline token]
  VAULT_NAMESPACE              sent as X-Vault-Namespace [default: none]
  VAULT_CACERT                 PEM file of Vault's CA [default: public roots]
  VAULT_TLS_SECRET             Kubernetes Secret whose ca.crt is Vault's CA [default: none]
  VAULT_TLS_SECRET_NS          its namespace [default: the reloader's own]
  VAULT_SKIP_VERIFY            true: accept any certificate (logs a warning) [default: false]
  VAULT_CLIENT_TIMEOUT         time limit of each Vault request [default: 10s]
  VAULT_IGNORE_MISSING_SECRETS true: a missing secret path is a warning, not an error
                               [default: false]
  BAO_ADDR, BAO_*              when BAO_ADDR is set, bao: references are checked against
                               this OpenBao server; each BAO_X not set takes VAULT_X
  HTTPS_PROXY, HTTP_PROXY      the http:// proxy for https:// and for http:// servers, API
                               server and Vault alike, watch streams included (a CONNECT
                               tunnel; ALL_PROXY and other schemes are not used) [default:
                               none]
  NO_PROXY                     what goes direct: *, addresses, CIDRs, domains (a.com: it and
                               its subdomains; .a.com: subdomains), each with an optional
                               :port; localhost and loopback always [default: none]
  POD_NAMESPACE                the reloader's own namespace [default: read from the
                               service account]
  POD_NAME                     leader-election identity [default: the host name]
  RUST_LOG                     per-module log directives after --log-level, e.g.
                               vault_secrets_reloader::kube=debug [default: none]

HEALTH: /healthz, /readyz and /metrics are answered by the loop as soon as they arrive,
also while it waits for a request to Vault or the API server; a server that hangs delays
no answer. The probes in manifests/ allow 15s.

CHECK NOW: any new value of secrets-reloader.security.bank-vaults.io/check-now on a workload's
metadata (kubectl annotate --overwrite deploy/app ...check-now=$(date +%s)) has its secrets
checked within a second instead of at the next pass, and an Event says what was found; at
most one check per workload every 10s (a request inside that is served when it ends). SIGHUP
runs both passes at once, for every workload.
";

/// Parses the command line (without the program name) and the environment.
pub fn parse(
    args: Vec<std::ffi::OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, ConfigError> {
    let args = args.into_iter().map(double_dash).collect();
    let (args, json_log) = take_bool_flag(args, "--enable-json-log")?;
    let (args, leader_elect) = take_bool_flag(args, "--leader-elect")?;
    let (args, dry_run) = take_bool_flag(args, "--dry-run")?;
    let (args, once) = take_bool_flag(args, "--once")?;
    let (args, per_workload_vault_addr) = take_bool_flag(args, "--per-workload-vault-addr")?;
    let (args, list_metadata) =
        switch(args, env, "--list-secret-metadata", "LIST_SECRET_METADATA")?;
    let (args, follow_secrets) = switch(args, env, "--follow-secret-refs", "FOLLOW_SECRET_REFS")?;
    let mut args = pico_args::Arguments::from_vec(args);
    if args.contains(["-h", "--help"]) {
        return Ok(Command::Help);
    }
    if args.contains(["-V", "--version"]) {
        return Ok(Command::Version);
    }
    let collector_period = period(&mut args, "--collector-sync-period", "30s")?;
    let reloader_period = period(&mut args, "--reloader-run-period", "60s")?;
    let log_level = log_level(text_flag(&mut args, "--log-level")?.as_deref())?;
    let namespaces = list(flag_or_env(&mut args, env, "--namespaces", "NAMESPACES")?);
    let exclude_namespaces = list(flag_or_env(
        &mut args,
        env,
        "--exclude-namespaces",
        "EXCLUDE_NAMESPACES",
    )?);
    let lease_name =
        text_flag(&mut args, "--lease-name")?.unwrap_or_else(|| "vault-secrets-reloader".into());
    let lease_namespace = text_flag(&mut args, "--lease-namespace")?;
    let servers = ServerFlags::take(&mut args, env, per_workload_vault_addr)?;
    let tuning = Tuning::take(&mut args, env)?;
    if let Some(first) = args.finish().first() {
        return Err(bad(format!(
            "unexpected argument '{}' (see --help)",
            first.to_string_lossy()
        )));
    }
    let servers = servers.settings(env)?;
    Ok(Command::Run(Box::new(Config {
        collector_period,
        reloader_period,
        log_level,
        json_log,
        listen_address: listen_address(env("LISTEN_ADDRESS"))?,
        namespaces,
        exclude_namespaces,
        leader_elect,
        lease_name,
        lease_namespace,
        dry_run,
        once,
        per_workload_vault_addrs: servers.allowed,
        dynamic_default_max_age: tuning.dynamic_default_max_age,
        max_rollouts_per_pass: tuning.max_rollouts_per_pass,
        max_renewals_per_namespace_hour: tuning.max_renewals_per_namespace_hour,
        waves: tuning.waves,
        reload_window: tuning.reload_window,
        limits: crate::policy::workload::Limits {
            follow_secrets,
            ..tuning.limits
        },
        list_metadata,
        kube: servers.kube,
        jwt_file: servers.jwt_file,
        vault: servers.vault,
        bao: servers.bao,
    })))
}

/// `--log-level`.
fn log_level(text: Option<&str>) -> Result<log::LevelFilter, ConfigError> {
    match text {
        None | Some("info") => Ok(log::LevelFilter::Info),
        Some("debug") => Ok(log::LevelFilter::Debug),
        Some("warn") | Some("warning") => Ok(log::LevelFilter::Warn),
        Some("error") => Ok(log::LevelFilter::Error),
        Some(other) => Err(bad(format!(
            "--log-level: '{other}' is not one of debug, info, warn, error"
        ))),
    }
}

/// The rollout and tenant limits: how often and how much.
struct Tuning {
    dynamic_default_max_age: Option<Duration>,
    max_rollouts_per_pass: Option<usize>,
    max_renewals_per_namespace_hour: usize,
    waves: crate::reloader::waves::Settings,
    reload_window: Option<Window>,
    limits: crate::policy::workload::Limits,
}

impl Tuning {
    /// Takes the limits' flags (or their environment variables).
    fn take(
        args: &mut pico_args::Arguments,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Tuning, ConfigError> {
        let dynamic_default_max_age = default_max_age(flag_or_env(
            args,
            env,
            "--dynamic-secret-default-max-age",
            "DYNAMIC_SECRET_DEFAULT_MAX_AGE",
        )?)?;
        let max_rollouts_per_pass = at_least(
            "--max-rollouts-per-pass",
            1,
            flag_or_env(
                args,
                env,
                "--max-rollouts-per-pass",
                "MAX_ROLLOUTS_PER_PASS",
            )?,
        )?;
        let max_renewals_per_namespace_hour = at_least(
            "--max-renewals-per-namespace-hour",
            1,
            flag_or_env(
                args,
                env,
                "--max-renewals-per-namespace-hour",
                "MAX_RENEWALS_PER_NAMESPACE_HOUR",
            )?,
        )?
        .unwrap_or(crate::policy::renewal::PER_NAMESPACE_HOUR_DEFAULT);
        let max_concurrent_rollouts = at_least(
            "--max-concurrent-rollouts",
            0,
            flag_or_env(
                args,
                env,
                "--max-concurrent-rollouts",
                "MAX_CONCURRENT_ROLLOUTS",
            )?,
        )?
        .unwrap_or(0);
        let canaries = at_least(
            "--canary-rollouts",
            0,
            flag_or_env(args, env, "--canary-rollouts", "CANARY_ROLLOUTS")?,
        )?
        .unwrap_or(0);
        let timeout = rollout_timeout(flag_or_env(
            args,
            env,
            "--rollout-timeout",
            "ROLLOUT_TIMEOUT",
        )?)?;
        let reload_window = flag_or_env(args, env, "--reload-window", "RELOAD_WINDOW")?
            .filter(|text| !text.trim().is_empty())
            .map(|text| window::parse(&text))
            .transpose()
            .map_err(|why| bad(format!("--reload-window: {why}")))?;
        let max_secrets = at_least(
            "--max-secrets-per-workload",
            1,
            flag_or_env(
                args,
                env,
                "--max-secrets-per-workload",
                "MAX_SECRETS_PER_WORKLOAD",
            )?,
        )?
        .unwrap_or(crate::policy::workload::MAX_SECRETS_DEFAULT);
        let allowed_paths =
            flag_or_env(args, env, "--allowed-secret-paths", "ALLOWED_SECRET_PATHS")?
                .map(|text| AllowedPaths::parse(&text))
                .transpose()
                .map_err(|why| bad(format!("--allowed-secret-paths: {why}")))?;
        Ok(Tuning {
            dynamic_default_max_age,
            max_rollouts_per_pass,
            max_renewals_per_namespace_hour,
            waves: crate::reloader::waves::Settings {
                max_concurrent: max_concurrent_rollouts,
                canaries,
                timeout,
            },
            reload_window,
            limits: crate::policy::workload::Limits {
                max_secrets,
                allowed_paths,
                follow_secrets: false,
            },
        })
    }
}

/// The flags that say how to reach the servers, before the environment
/// and the kubeconfig complete them.
struct ServerFlags {
    explicit: Explicit,
    kubeconfig: Option<String>,
    context: Option<String>,
    per_workload_vault_addr: bool,
    allowed: Option<String>,
}

/// How to reach the servers, validated.
struct Servers {
    kube: KubeSettings,
    vault: VaultSettings,
    bao: Option<VaultSettings>,
    allowed: Option<AllowList>,
    jwt_file: Option<PathBuf>,
}

impl ServerFlags {
    /// Takes the server flags (or their environment variables).
    fn take(
        args: &mut pico_args::Arguments,
        env: &dyn Fn(&str) -> Option<String>,
        per_workload_vault_addr: bool,
    ) -> Result<ServerFlags, ConfigError> {
        let explicit = Explicit {
            api_url: flag_or_env(args, env, "--kube-api-url", "KUBE_API_URL")?,
            token_file: flag_or_env(args, env, "--kube-token-file", "KUBE_TOKEN_FILE")?
                .map(PathBuf::from),
            ca_file: flag_or_env(args, env, "--kube-ca-file", "KUBE_CA_FILE")?.map(PathBuf::from),
        };
        Ok(ServerFlags {
            explicit,
            kubeconfig: text_flag(args, "--kubeconfig")?,
            context: text_flag(args, "--context")?,
            per_workload_vault_addr,
            allowed: flag_or_env(args, env, "--allowed-vault-addrs", "ALLOWED_VAULT_ADDRS")?,
        })
    }

    /// The servers' settings: the flags, then the environment, then the
    /// kubeconfig or the in-cluster service account.
    fn settings(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Servers, ConfigError> {
        let kubeconfig = kubeconfig::path(self.kubeconfig, env("KUBECONFIG"));
        let proxies = Proxies::from_env(env).map_err(bad)?;
        let kube = KubeSettings {
            proxies: proxies.clone(),
            ..kube_settings(self.explicit, kubeconfig, self.context, env)?
        };
        let vault = VaultSettings {
            proxies: proxies.clone(),
            ..vault_settings("VAULT_", env)?
        };
        let bao = match env("BAO_ADDR") {
            Some(addr) if !addr.is_empty() => {
                let with_fallback =
                    |name: &str| env(name).or_else(|| env(&name.replacen("BAO_", "VAULT_", 1)));
                let bao = vault_settings("BAO_", &with_fallback)?;
                Some(VaultSettings { proxies, ..bao })
            }
            _ => None,
        };
        let allowed = allowed_addrs(
            self.per_workload_vault_addr,
            self.allowed,
            &vault,
            bao.as_ref(),
        )?;
        let jwt_file = jwt_file(env("VAULT_JWT_FILE"), &kube, &vault, bao.as_ref())?;
        Ok(Servers {
            kube,
            vault,
            bao,
            allowed,
            jwt_file,
        })
    }
}

/// The allowlist of `--per-workload-vault-addr`, which needs one: the
/// configured servers and the listed addresses.
fn allowed_addrs(
    enabled: bool,
    list: Option<String>,
    vault: &VaultSettings,
    bao: Option<&VaultSettings>,
) -> Result<Option<AllowList>, ConfigError> {
    let list = list.filter(|text| !text.trim().is_empty());
    let text = match (enabled, list) {
        (false, None) => return Ok(None),
        (false, Some(_)) => {
            return Err(bad(
                "--allowed-vault-addrs has no effect without --per-workload-vault-addr",
            ))
        }
        (true, None) => {
            return Err(bad(
                "--per-workload-vault-addr needs --allowed-vault-addrs: the Vault servers \
                 workloads may name (the reloader's credentials are sent to them)",
            ))
        }
        (true, Some(text)) => text,
    };
    let mut allowed =
        AllowList::parse(&text).map_err(|why| bad(format!("--allowed-vault-addrs: {why}")))?;
    for settings in std::iter::once(vault).chain(bao) {
        if let Ok(addr) = Addr::parse(&settings.addr) {
            allowed = allowed.also(&addr);
        }
    }
    Ok(Some(allowed))
}

/// Go's flag package accepts `-name` for `--name`; spell it the long way.
fn double_dash(arg: std::ffi::OsString) -> std::ffi::OsString {
    match arg.to_str() {
        Some(text) if text.len() > 2 && text.starts_with('-') && !text.starts_with("--") => {
            format!("-{text}").into()
        }
        _ => arg,
    }
}

/// Removes a Go-style boolean flag (`--name` or `--name=true|false`) from
/// `args`, returning whether it was set.
/// A switch given by `flag` (which wins) or by the environment's `var`.
fn switch(
    args: Vec<std::ffi::OsString>,
    env: &dyn Fn(&str) -> Option<String>,
    flag: &str,
    var: &str,
) -> Result<(Vec<std::ffi::OsString>, bool), ConfigError> {
    let (args, given) = take_bool_flag(args, flag)?;
    let value = match env(var) {
        Some(value) if !given => parse_bool(var, &value)?,
        _ => given,
    };
    Ok((args, value))
}

fn take_bool_flag(
    args: Vec<std::ffi::OsString>,
    name: &str,
) -> Result<(Vec<std::ffi::OsString>, bool), ConfigError> {
    let mut value = false;
    let mut kept = Vec::with_capacity(args.len());
    for arg in args {
        let text = arg.to_string_lossy();
        match text.strip_prefix(name) {
            Some("") => value = true,
            Some(assigned) if assigned.starts_with('=') => {
                value = parse_bool(name, &assigned[1..])?;
            }
            _ => kept.push(arg),
        }
    }
    Ok((kept, value))
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" | "on" => Ok(true),
        "0" | "f" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(bad(format!("{name}: '{value}' is not true or false"))),
    }
}

/// A flag's value; given several times, the last one counts (as with Go's
/// flag package).
/// The last value of flag `name`, else environment variable `var`.
fn flag_or_env(
    args: &mut pico_args::Arguments,
    env: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    var: &str,
) -> Result<Option<String>, ConfigError> {
    Ok(text_flag(args, name)?.or_else(|| env(var)))
}

fn text_flag(
    args: &mut pico_args::Arguments,
    name: &'static str,
) -> Result<Option<String>, ConfigError> {
    let mut last = None;
    while let Some(value) = args
        .opt_value_from_str(name)
        .map_err(|e| bad(format!("{name}: {e}")))?
    {
        last = Some(value);
    }
    Ok(last)
}

fn period(
    args: &mut pico_args::Arguments,
    name: &'static str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let text = text_flag(args, name)?.unwrap_or_else(|| default.to_string());
    let value =
        crate::policy::time::parse_duration(&text).map_err(|why| bad(format!("{name}: {why}")))?;
    if value < Duration::from_secs(1) {
        return Err(bad(format!("{name}: '{text}' is shorter than 1s")));
    }
    Ok(value)
}

/// `--dynamic-secret-default-max-age`: a duration of at least 10s, as the
/// workloads' own max-age annotation.
fn default_max_age(text: Option<String>) -> Result<Option<Duration>, ConfigError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    let name = "--dynamic-secret-default-max-age";
    let value = crate::policy::time::parse_duration(text.trim())
        .map_err(|why| bad(format!("{name}: {why}")))?;
    if value < Duration::from_secs(10) {
        return Err(bad(format!("{name}: '{text}' is shorter than 10s")));
    }
    Ok(Some(value))
}

/// `--rollout-timeout` in seconds: a duration of at least 1s, 10m when
/// not given.
fn rollout_timeout(text: Option<String>) -> Result<u64, ConfigError> {
    let text = text.filter(|t| !t.trim().is_empty());
    let text = text.unwrap_or_else(|| "10m".to_string());
    let value = crate::policy::time::parse_duration(text.trim())
        .map_err(|why| bad(format!("--rollout-timeout: {why}")))?;
    if value < Duration::from_secs(1) {
        return Err(bad(format!(
            "--rollout-timeout: '{text}' is shorter than 1s"
        )));
    }
    Ok(value.as_secs())
}

/// A limit given to flag `name`: a whole number of at least 1 (0 would
/// never renew, or watch nothing).
fn at_least(name: &str, least: usize, text: Option<String>) -> Result<Option<usize>, ConfigError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    match text.trim().parse::<usize>() {
        Ok(n) if n >= least => Ok(Some(n)),
        _ => Err(bad(format!(
            "{name}: '{text}' is not a whole number of at least {least}"
        ))),
    }
}

fn list(value: Option<String>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The API settings in their order: flags (or their environment
/// variables), then the kubeconfig (`--kubeconfig` or `KUBECONFIG`), then the
/// in-cluster service account. A kubeconfig is not read when the flags give
/// everything.
fn kube_settings(
    explicit: Explicit,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<KubeSettings, ConfigError> {
    let loaded = match kubeconfig.filter(|_| !explicit.is_complete()) {
        Some(path) => {
            let named =
                |e: kubeconfig::KubeconfigError| bad(format!("kubeconfig {}: {e}", path.display()));
            Some((Kubeconfig::load(&path).map_err(named)?, path))
        }
        None => None,
    };
    let in_cluster_url = env("KUBERNETES_SERVICE_HOST").map(|host| {
        let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
        if host.contains(':') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        }
    });
    let url_source = match (&explicit.api_url, &loaded) {
        (Some(_), _) => "--kube-api-url".to_string(),
        (None, Some((_, path))) => format!("kubeconfig {}: server", path.display()),
        (None, None) => "KUBERNETES_SERVICE_HOST".to_string(),
    };
    let base = match &loaded {
        Some((config, _)) => Base::Kubeconfig(config, context.as_deref()),
        None => Base::InCluster(in_cluster_url.as_deref()),
    };
    let mut settings = kubeconfig::settings(explicit, base).map_err(|e| match &loaded {
        Some((_, path)) => bad(format!("kubeconfig {}: {e}", path.display())),
        None => bad(e.to_string()),
    })?;
    settings.api_url = base_url(&url_source, &settings.api_url)?;
    Ok(settings)
}

/// The token file the Vault and OpenBao logins send: `VAULT_JWT_FILE`, else
/// the API credentials' token file. An error when a login needs one and
/// there is none (a client certificate or an inline token).
fn jwt_file(
    explicit: Option<String>,
    kube: &KubeSettings,
    vault: &VaultSettings,
    bao: Option<&VaultSettings>,
) -> Result<Option<PathBuf>, ConfigError> {
    let file = explicit
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
        .or_else(|| kube.credentials.token_file().map(Path::to_path_buf));
    let login = std::iter::once(vault)
        .chain(bao)
        .find_map(|settings| match &settings.auth {
            VaultAuth::Login { method, .. } => Some(*method),
            VaultAuth::Token(_) => None,
        });
    match (login, file) {
        (Some(method), None) => Err(bad(format!(
            "the {method} auth method logs in with a service-account token, and the \
             Kubernetes credentials are not a token file: set VAULT_JWT_FILE (or VAULT_TOKEN)"
        ))),
        (_, file) => Ok(file),
    }
}

/// An `http(s)://host[:port]` URL without a trailing slash.
fn base_url(name: &str, url: &str) -> Result<String, ConfigError> {
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(trimmed.to_string())
        }
        _ => Err(bad(format!(
            "{name}: '{url}' is not an http:// or https:// URL"
        ))),
    }
}

fn listen_address(value: Option<String>) -> Result<String, ConfigError> {
    let value = value.unwrap_or_else(|| ":8080".into());
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.clone()
    };
    full.parse::<std::net::SocketAddr>().map_err(|_| {
        bad(format!(
            "LISTEN_ADDRESS: '{value}' is not HOST:PORT or :PORT"
        ))
    })?;
    Ok(full)
}

fn vault_settings(
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<VaultSettings, ConfigError> {
    let var = |name: &str| env(&format!("{prefix}{name}")).filter(|v| !v.is_empty());
    let name = |n: &str| format!("{prefix}{n}");
    let addr = base_url(
        &name("ADDR"),
        &var("ADDR").unwrap_or_else(|| "https://vault:8200".into()),
    )?;
    let auth = vault_auth(&var, &name)?;
    let bool_var = |n: &str| match var(n) {
        Some(v) => parse_bool(&name(n), &v),
        None => Ok(false),
    };
    let timeout = match var("CLIENT_TIMEOUT") {
        Some(text) => crate::policy::time::parse_duration(&text)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                bad(format!(
                    "{}: '{text}' is not a positive duration",
                    name("CLIENT_TIMEOUT")
                ))
            })?,
        None => Duration::from_secs(10),
    };
    Ok(VaultSettings {
        proxies: Default::default(),
        addr,
        auth,
        namespace: var("NAMESPACE"),
        ca_file: var("CACERT").map(PathBuf::from),
        ca_secret: var("TLS_SECRET").map(|secret| (var("TLS_SECRET_NS"), secret)),
        skip_verify: bool_var("SKIP_VERIFY")?,
        timeout,
        ignore_missing: bool_var("IGNORE_MISSING_SECRETS")?,
    })
}

/// How to get a Vault token, from `var` (a variable under the prefix
/// `name` adds): a fixed token, or a login with the service-account JWT.
fn vault_auth(
    var: &dyn Fn(&str) -> Option<String>,
    name: &dyn Fn(&str) -> String,
) -> Result<VaultAuth, ConfigError> {
    match (var("AUTH_METHOD").as_deref(), var("TOKEN")) {
        (Some("token"), Some(token)) | (None, Some(token)) => Ok(VaultAuth::Token(Redacted(token))),
        (Some("token"), None) => Err(bad(format!(
            "{}=token needs {}",
            name("AUTH_METHOD"),
            name("TOKEN")
        ))),
        (m @ (Some("kubernetes" | "jwt") | None), _) => {
            let method = if m == Some("kubernetes") {
                "kubernetes"
            } else {
                "jwt"
            };
            let role = var("ROLE").ok_or_else(|| {
                bad(format!(
                    "{} is required for the {method} auth method (or set {})",
                    name("ROLE"),
                    name("TOKEN")
                ))
            })?;
            let mount = var("PATH").unwrap_or_else(|| "kubernetes".into());
            Ok(VaultAuth::Login {
                method,
                role,
                mount: mount.trim_matches('/').to_string(),
            })
        }
        (Some(other), _) => Err(bad(format!(
            "{}: '{other}' is not one of kubernetes, jwt, token",
            name("AUTH_METHOD")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::settings::{KubeCredentials, Source};
    use std::collections::HashMap;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args = args.iter().map(std::ffi::OsString::from).collect();
        match parse(args, &|name| env.get(name).cloned())? {
            Command::Run(config) => Ok(*config),
            other => panic!("expected a config, got {other:?}"),
        }
    }

    const IN_CLUSTER: &[(&str, &str)] = &[
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
        ("VAULT_ROLE", "reloader"),
    ];

    #[test]
    fn defaults_match_the_original_tool() {
        let config = run(&[], IN_CLUSTER).unwrap();
        assert_eq!(config.collector_period, Duration::from_secs(30));
        assert_eq!(config.reloader_period, Duration::from_secs(60));
        assert_eq!(config.log_level, log::LevelFilter::Info);
        assert!(!config.json_log);
        assert_eq!(config.listen_address, "0.0.0.0:8080");
        assert_eq!(config.kube.api_url, "https://10.96.0.1:443");
        let token = PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token");
        assert_eq!(config.kube.credentials.token_file(), Some(token.as_path()));
        assert_eq!(config.jwt_file, Some(token));
        assert_eq!(
            config.kube.ca,
            Some(Source::File(
                "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt".into()
            ))
        );
        assert_eq!(config.vault.addr, "https://vault:8200");
        assert_eq!(
            config.vault.auth,
            VaultAuth::Login {
                method: "jwt",
                role: "reloader".into(),
                mount: "kubernetes".into()
            }
        );
        assert_eq!(config.vault.timeout, Duration::from_secs(10));
        assert!(!config.vault.skip_verify && !config.vault.ignore_missing);
        assert!(config.bao.is_none());
        assert!(!config.leader_elect && !config.dry_run && !config.once);
        assert_eq!(config.lease_name, "vault-secrets-reloader");
        assert_eq!(config.lease_namespace, None);
        assert_eq!(config.dynamic_default_max_age, None);
        assert_eq!(config.max_rollouts_per_pass, None);
        assert_eq!(config.limits.max_secrets, 100);
        assert!(!config.list_metadata);
    }

    #[test]
    fn allowed_secret_paths_by_flag_or_environment() {
        assert_eq!(run(&[], IN_CLUSTER).unwrap().limits.allowed_paths, None);
        let flag = run(
            &["--allowed-secret-paths", "secret/data/{namespace}/**"],
            IN_CLUSTER,
        )
        .unwrap()
        .limits
        .allowed_paths
        .unwrap();
        assert!(flag.allows("a", "secret/data/a/x") && !flag.allows("b", "secret/data/a/x"));
        let mut env = IN_CLUSTER.to_vec();
        env.push(("ALLOWED_SECRET_PATHS", "shared/data/*"));
        let from_env = run(&[], &env).unwrap().limits.allowed_paths.unwrap();
        assert!(from_env.allows("a", "shared/data/ca"));
        let error = run(&["--allowed-secret-paths", "secret/**/x"], IN_CLUSTER)
            .unwrap_err()
            .0;
        assert_eq!(
            error,
            "--allowed-secret-paths: 'secret/**/x': ** may only be its last segment"
        );
    }

    #[test]
    fn an_unsupported_proxy_is_refused_at_start() {
        let mut env = IN_CLUSTER.to_vec();
        env.push(("https_proxy", "socks5://proxy:1080"));
        let error = run(&[], &env).unwrap_err().0;
        assert!(
            error.starts_with("https_proxy: a socks5:// proxy is not supported"),
            "{error}"
        );
        let mut env = IN_CLUSTER.to_vec();
        env.extend([("HTTPS_PROXY", "http://proxy:3128"), ("NO_PROXY", ".svc")]);
        let config = run(&[], &env).unwrap();
        assert!(config.kube.proxies.for_url("https://api.example").is_some());
        assert_eq!(config.vault.proxies, config.kube.proxies);
    }

    #[test]
    fn secrets_per_workload_by_flag_or_environment() {
        let flag = run(&["--max-secrets-per-workload=40"], IN_CLUSTER).unwrap();
        assert_eq!(flag.limits.max_secrets, 40);
        let mut env = IN_CLUSTER.to_vec();
        env.push(("MAX_SECRETS_PER_WORKLOAD", "7"));
        assert_eq!(run(&[], &env).unwrap().limits.max_secrets, 7);
        for bad in ["0", "lots", "-1"] {
            let error = run(&["--max-secrets-per-workload", bad], IN_CLUSTER)
                .unwrap_err()
                .0;
            assert_eq!(
                error,
                format!("--max-secrets-per-workload: '{bad}' is not a whole number of at least 1")
            );
        }
    }

    #[test]
    fn listing_is_asked_for_by_flag_or_environment() {
        assert!(
            run(&["--list-secret-metadata"], IN_CLUSTER)
                .unwrap()
                .list_metadata
        );
        let with = |value| {
            let mut env = IN_CLUSTER.to_vec();
            env.push(("LIST_SECRET_METADATA", value));
            env
        };
        assert!(run(&[], &with("true")).unwrap().list_metadata);
        assert!(!run(&[], &with("false")).unwrap().list_metadata);
        assert!(
            run(&["--list-secret-metadata"], &with("false"))
                .unwrap()
                .list_metadata
        );
        let error = run(&[], &with("maybe")).unwrap_err().0;
        assert!(error.contains("LIST_SECRET_METADATA"), "{error}");
    }

    #[test]
    fn canaries_and_the_rollout_timeout_have_defaults_flags_and_environment() {
        let waves = run(&[], IN_CLUSTER).unwrap().waves;
        assert_eq!((waves.canaries, waves.timeout), (0, 600));
        let flags = ["--canary-rollouts", "2", "--rollout-timeout", "90s"];
        let waves = run(&flags, IN_CLUSTER).unwrap().waves;
        assert_eq!((waves.canaries, waves.timeout), (2, 90));
        let mut env = IN_CLUSTER.to_vec();
        env.extend([("CANARY_ROLLOUTS", "1"), ("ROLLOUT_TIMEOUT", "1h")]);
        let waves = run(&[], &env).unwrap().waves;
        assert_eq!((waves.canaries, waves.timeout), (1, 3600));
        for (flags, error) in [
            (
                ["--rollout-timeout", "0s"],
                "--rollout-timeout: '0s' is shorter than 1s",
            ),
            (
                ["--canary-rollouts", "x"],
                "--canary-rollouts: 'x' is not a whole number",
            ),
        ] {
            let got = run(&flags, IN_CLUSTER).unwrap_err().0;
            assert!(got.contains(error), "{got}");
        }
    }

    #[test]
    fn max_concurrent_rollouts_is_a_count_where_zero_means_no_limit() {
        assert_eq!(run(&[], IN_CLUSTER).unwrap().waves.max_concurrent, 0);
        let flag = run(&["--max-concurrent-rollouts", "5"], IN_CLUSTER).unwrap();
        assert_eq!(flag.waves.max_concurrent, 5);
        let mut env = IN_CLUSTER.to_vec();
        env.push(("MAX_CONCURRENT_ROLLOUTS", "0"));
        assert_eq!(run(&[], &env).unwrap().waves.max_concurrent, 0);
        let error = run(&["--max-concurrent-rollouts", "-1"], IN_CLUSTER)
            .unwrap_err()
            .0;
        assert!(
            error.contains("--max-concurrent-rollouts: '-1' is not a whole number of at least 0"),
            "{error}"
        );
    }

    #[test]
    fn a_reload_window_by_flag_or_environment_and_a_bad_one_stops_the_start() {
        assert_eq!(run(&[], IN_CLUSTER).unwrap().reload_window, None);
        let spec = "Mon-Fri 22:00-06:00 Europe/Berlin; Sat,Sun 00:00-24:00 UTC";
        let flag = run(&["--reload-window", spec], IN_CLUSTER).unwrap();
        assert_eq!(flag.reload_window, Some(window::parse(spec).unwrap()));
        let mut env = IN_CLUSTER.to_vec();
        env.push(("RELOAD_WINDOW", "* 01:00-02:00 UTC"));
        let from_env = run(&[], &env).unwrap().reload_window;
        assert_eq!(from_env, Some(window::parse("* 01:00-02:00 UTC").unwrap()));
        let error = run(
            &["--reload-window", "Mon 10:00-11:00 Mars/Olympus"],
            IN_CLUSTER,
        )
        .unwrap_err()
        .0;
        assert_eq!(
            error,
            "--reload-window: range 1: 'Mars/Olympus' is not an IANA time zone (or UTC)"
        );
    }

    #[test]
    fn secrets_are_followed_only_when_asked_for() {
        let follows = |args: &[&str], env: &[(&str, &str)]| {
            let mut all = IN_CLUSTER.to_vec();
            all.extend_from_slice(env);
            run(args, &all).unwrap().limits.follow_secrets
        };
        assert!(!follows(&[], &[]));
        assert!(follows(&["--follow-secret-refs"], &[]));
        assert!(follows(&[], &[("FOLLOW_SECRET_REFS", "true")]));
        assert!(!follows(&["--follow-secret-refs=false"], &[]));
    }

    #[test]
    fn dynamic_secret_flags() {
        let config = run(
            &[
                "--dynamic-secret-default-max-age=1h30m",
                "--max-rollouts-per-pass",
                "5",
            ],
            IN_CLUSTER,
        )
        .unwrap();
        assert_eq!(
            config.dynamic_default_max_age,
            Some(Duration::from_secs(5400))
        );
        assert_eq!(config.max_rollouts_per_pass, Some(5));
        assert_eq!(config.max_renewals_per_namespace_hour, 3600);
        let mut env = IN_CLUSTER.to_vec();
        env.extend([
            ("DYNAMIC_SECRET_DEFAULT_MAX_AGE", "12h"),
            ("MAX_ROLLOUTS_PER_PASS", "2"),
            ("MAX_RENEWALS_PER_NAMESPACE_HOUR", "40"),
        ]);
        let config = run(&[], &env).unwrap();
        assert_eq!(
            config.dynamic_default_max_age,
            Some(Duration::from_secs(43200))
        );
        assert_eq!(config.max_rollouts_per_pass, Some(2));
        assert_eq!(config.max_renewals_per_namespace_hour, 40);
        for (args, expected) in [
            (
                ["--dynamic-secret-default-max-age", "9s"],
                "shorter than 10s",
            ),
            (
                ["--dynamic-secret-default-max-age", "auto"],
                "--dynamic-secret-default-max-age",
            ),
            (["--max-rollouts-per-pass", "0"], "at least 1"),
            (["--max-rollouts-per-pass", "-3"], "--max-rollouts-per-pass"),
        ] {
            let error = run(&args, IN_CLUSTER).unwrap_err().0;
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected}"
            );
        }
    }

    #[test]
    fn reads_go_style_flags() {
        let config = run(
            &[
                "--collector-sync-period=2s",
                "-reloader-run-period",
                "1m30s",
                "--log-level",
                "debug",
                "--enable-json-log=true",
                "--kube-api-url",
                "https://127.0.0.1:6443/",
                "--namespaces",
                "a, b,",
                "--leader-elect",
                "--lease-namespace=infra",
                "-once",
                "--log-level=warn",
                "--log-level=debug",
            ],
            &[("VAULT_TOKEN", "s.x"), ("LISTEN_ADDRESS", "127.0.0.1:9000")],
        )
        .unwrap();
        assert_eq!(config.collector_period, Duration::from_secs(2));
        assert_eq!(config.reloader_period, Duration::from_secs(90));
        assert_eq!(config.log_level, log::LevelFilter::Debug);
        assert!(config.json_log);
        assert_eq!(config.kube.api_url, "https://127.0.0.1:6443");
        assert_eq!(config.namespaces, vec!["a", "b"]);
        assert!(config.leader_elect && config.once && !config.dry_run);
        assert_eq!(config.lease_namespace.as_deref(), Some("infra"));
        assert_eq!(config.listen_address, "127.0.0.1:9000");
        assert_eq!(config.vault.auth, VaultAuth::Token(Redacted("s.x".into())));
    }

    #[test]
    fn bao_settings_fall_back_to_vault_ones() {
        let mut env = IN_CLUSTER.to_vec();
        env.extend([
            ("BAO_ADDR", "http://127.0.0.1:8201"),
            ("VAULT_CLIENT_TIMEOUT", "3s"),
            ("BAO_AUTH_METHOD", "kubernetes"),
        ]);
        let bao = run(&[], &env).unwrap().bao.unwrap();
        assert_eq!(bao.addr, "http://127.0.0.1:8201");
        assert_eq!(bao.timeout, Duration::from_secs(3));
        assert_eq!(
            bao.auth,
            VaultAuth::Login {
                method: "kubernetes",
                role: "reloader".into(),
                mount: "kubernetes".into()
            }
        );
    }

    #[test]
    fn per_workload_addresses_need_an_allowlist() {
        let mut env = IN_CLUSTER.to_vec();
        env.push(("VAULT_ADDR", "https://vault.infra.svc:8200"));
        assert_eq!(run(&[], &env).unwrap().per_workload_vault_addrs, None);
        let error = run(&["--per-workload-vault-addr"], &env).unwrap_err().0;
        assert!(error.contains("needs --allowed-vault-addrs"), "{error}");
        let error = run(&["--allowed-vault-addrs=https://x.svc"], &env)
            .unwrap_err()
            .0;
        assert!(error.contains("no effect without"), "{error}");
        let error = run(
            &[
                "--per-workload-vault-addr",
                "--allowed-vault-addrs",
                "ftp://x",
            ],
            &env,
        )
        .unwrap_err()
        .0;
        assert!(
            error.starts_with("--allowed-vault-addrs: 'ftp://x'"),
            "{error}"
        );
        env.push(("ALLOWED_VAULT_ADDRS", "*.vault.example.com"));
        let allowed = run(&["--per-workload-vault-addr"], &env)
            .unwrap()
            .per_workload_vault_addrs
            .unwrap();
        let addr = |text| Addr::parse(text).unwrap();
        assert!(allowed.allows(&addr("https://eu.vault.example.com:8200"), "ns"));
        assert!(
            allowed.allows(&addr("https://vault.infra.svc:8200"), "ns"),
            "the configured server"
        );
        assert!(!allowed.allows(&addr("https://vault.other.svc:8200"), "ns"));
    }

    #[test]
    fn bad_values_name_what_is_wrong() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (
                &["--collector-sync-period", "soon"],
                IN_CLUSTER,
                "--collector-sync-period",
            ),
            (
                &["--reloader-run-period=500ms"],
                IN_CLUSTER,
                "shorter than 1s",
            ),
            (&["--log-level", "loud"], IN_CLUSTER, "--log-level"),
            (
                &["--enable-json-log=maybe"],
                IN_CLUSTER,
                "--enable-json-log",
            ),
            (&["--what"], IN_CLUSTER, "unexpected argument '--what'"),
            (&["--what"], &[], "unexpected argument '--what'"),
            (&[], &[("VAULT_TOKEN", "t")], "KUBE_API_URL"),
            (
                &["--kube-api-url", "ftp://x"],
                &[("VAULT_TOKEN", "t")],
                "--kube-api-url",
            ),
            (&[], &IN_CLUSTER[..2], "VAULT_ROLE is required"),
            (
                &[],
                &[IN_CLUSTER[0], ("VAULT_AUTH_METHOD", "token")],
                "needs VAULT_TOKEN",
            ),
            (
                &[],
                &[IN_CLUSTER[0], ("VAULT_AUTH_METHOD", "ldap")],
                "VAULT_AUTH_METHOD",
            ),
            (
                &[],
                &[
                    IN_CLUSTER[0],
                    IN_CLUSTER[2],
                    ("VAULT_SKIP_VERIFY", "yes please"),
                ],
                "VAULT_SKIP_VERIFY",
            ),
            (
                &[],
                &[IN_CLUSTER[0], IN_CLUSTER[2], ("VAULT_CLIENT_TIMEOUT", "0s")],
                "VAULT_CLIENT_TIMEOUT",
            ),
            (
                &[],
                &[IN_CLUSTER[0], IN_CLUSTER[2], ("VAULT_ADDR", "vault:8200")],
                "VAULT_ADDR",
            ),
            (
                &[],
                &[IN_CLUSTER[0], IN_CLUSTER[2], ("LISTEN_ADDRESS", "8080")],
                "LISTEN_ADDRESS",
            ),
        ];
        for (args, env, expected) in cases {
            let error = run(args, env).expect_err(expected).0;
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected}"
            );
        }
    }

    #[test]
    fn help_and_version() {
        let parse_args = |a: &str| parse(vec![a.into()], &|_| None).unwrap();
        assert!(matches!(parse_args("--help"), Command::Help));
        assert!(matches!(parse_args("-V"), Command::Version));
    }

    #[test]
    fn help_lists_every_setting() {
        for name in [
            "--collector-sync-period",
            "--reloader-run-period",
            "--log-level",
            "--enable-json-log",
            "--namespaces",
            "--exclude-namespaces",
            "--leader-elect",
            "--lease-name",
            "--lease-namespace",
            "--dry-run",
            "--once",
            "--per-workload-vault-addr",
            "--allowed-vault-addrs",
            "ALLOWED_VAULT_ADDRS",
            "--dynamic-secret-default-max-age",
            "DYNAMIC_SECRET_DEFAULT_MAX_AGE",
            "--max-rollouts-per-pass",
            "MAX_ROLLOUTS_PER_PASS",
            "--list-secret-metadata",
            "LIST_SECRET_METADATA",
            "--reload-window",
            "RELOAD_WINDOW",
            "--kube-api-url",
            "--kube-token-file",
            "--kube-ca-file",
            "--kubeconfig",
            "KUBECONFIG",
            "--context",
            "VAULT_JWT_FILE",
            "LISTEN_ADDRESS",
            "VAULT_ADDR",
            "VAULT_AUTH_METHOD",
            "VAULT_TOKEN",
            "VAULT_ROLE",
            "VAULT_PATH",
            "VAULT_NAMESPACE",
            "VAULT_CACERT",
            "VAULT_TLS_SECRET",
            "VAULT_TLS_SECRET_NS",
            "VAULT_SKIP_VERIFY",
            "VAULT_CLIENT_TIMEOUT",
            "VAULT_IGNORE_MISSING_SECRETS",
            "BAO_ADDR",
            "POD_NAMESPACE",
            "POD_NAME",
            "RUST_LOG",
        ] {
            assert!(HELP.contains(name), "--help misses {name}");
        }
    }

    /// A kubeconfig file in a fresh directory, removed when dropped.
    struct TempKubeconfig(PathBuf);

    impl TempKubeconfig {
        fn new(text: &str) -> TempKubeconfig {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let dir = std::env::temp_dir().join(format!("vsr-config-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("config"), text).unwrap();
            TempKubeconfig(dir)
        }

        fn path(&self) -> String {
            self.0.join("config").display().to_string()
        }
    }

    impl Drop for TempKubeconfig {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const EDGE: &str = "current-context: edge
clusters: [{name: edge, cluster: {server: 'https://10.0.0.1:6443/', certificate-authority: ca.crt}}]
contexts:
- {name: edge, context: {cluster: edge, user: cert}}
- {name: sa, context: {cluster: edge, user: sa}}
- {name: inline, context: {cluster: edge, user: inline}}
- {name: cloud, context: {cluster: edge, user: cloud}}
users:
- {name: cert, user: {client-certificate: edge.crt, client-key: edge.key}}
- {name: sa, user: {tokenFile: sa.token}}
- {name: inline, user: {token: very-secret}}
- {name: cloud, user: {exec: {command: aws}}}
";

    #[test]
    fn a_kubeconfig_gives_the_api_settings_and_the_login_needs_a_jwt_file() {
        let file = TempKubeconfig::new(EDGE);
        let kubeconfig = file.path();
        let flag = ["--kubeconfig", kubeconfig.as_str()];
        let role = [("VAULT_ROLE", "reloader")];
        let error = run(&flag, &role).unwrap_err().0;
        assert!(error.contains("set VAULT_JWT_FILE"), "{error}");
        let with_jwt = [role[0], ("VAULT_JWT_FILE", "/run/jwt")];
        let config = run(&flag, &with_jwt).unwrap();
        assert_eq!(config.kube.api_url, "https://10.0.0.1:6443");
        assert_eq!(config.kube.ca, Some(Source::File(file.0.join("ca.crt"))));
        assert_eq!(
            config.kube.credentials,
            KubeCredentials::ClientCert {
                cert: Source::File(file.0.join("edge.crt")),
                key: Source::File(file.0.join("edge.key")),
            }
        );
        assert_eq!(config.jwt_file, Some(PathBuf::from("/run/jwt")));
        let config = run(&flag, &[("VAULT_TOKEN", "t")]).unwrap();
        assert_eq!(config.jwt_file, None, "no login, no JWT file");
        let env = [role[0], ("KUBECONFIG", kubeconfig.as_str())];
        let config = run(&["--context", "sa"], &env).unwrap();
        assert_eq!(
            config.jwt_file,
            Some(file.0.join("sa.token")),
            "the user's tokenFile"
        );
        let error = run(&["--context", "inline"], &env).unwrap_err().0;
        assert!(
            error.contains("VAULT_JWT_FILE") && !error.contains("very-secret"),
            "{error}"
        );
        let config = run(&["--context=inline", "--kube-token-file=/run/t"], &env).unwrap();
        assert_eq!(
            config.jwt_file,
            Some(PathBuf::from("/run/t")),
            "the flag's token file"
        );
    }

    #[test]
    fn kubeconfig_errors_name_the_file_and_exit_as_config_errors() {
        let file = TempKubeconfig::new(EDGE);
        let kubeconfig = file.path();
        let env = [("VAULT_TOKEN", "t"), ("KUBECONFIG", kubeconfig.as_str())];
        let error = run(&["--context", "cloud"], &env).unwrap_err().0;
        assert_eq!(
            error,
            format!(
                "kubeconfig {kubeconfig}: user 'cloud' authenticates with an exec credential \
                 plugin (exec), which is not supported: use a token, tokenFile or \
                 client-certificate/client-key"
            )
        );
        let error = run(&["--context", "nowhere"], &env).unwrap_err().0;
        assert!(error.ends_with("has no context 'nowhere'"), "{error}");
        let missing = [("VAULT_TOKEN", "t"), ("KUBECONFIG", "/nonexistent/config")];
        let error = run(&[], &missing).unwrap_err().0;
        assert!(
            error.starts_with("kubeconfig /nonexistent/config: cannot be read"),
            "{error}"
        );
        let flags = [
            "--kube-api-url=https://x",
            "--kube-token-file=/t",
            "--kube-ca-file=/c",
        ];
        assert!(
            run(&flags, &missing).is_ok(),
            "not read when the flags give all"
        );
        let bad_server = TempKubeconfig::new(&EDGE.replace("https://10.0.0.1:6443/", "10.0.0.1"));
        let error = run(&["--kubeconfig", &bad_server.path()], &env[..1])
            .unwrap_err()
            .0;
        assert!(error.contains(": server: '10.0.0.1' is not"), "{error}");
    }

    #[test]
    fn tokens_do_not_show_in_debug_output() {
        let config = run(&[], &[IN_CLUSTER[0], ("VAULT_TOKEN", "hvs.very-secret")]).unwrap();
        assert!(!format!("{config:?}").contains("very-secret"));
    }
}
