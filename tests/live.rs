//! The Kubernetes and Vault clients against the real local API server and
//! OpenBao of `scripts/testenv.sh` (run by `scripts/test.sh` with
//! `--ignored` once the environment is up):
//!
//! ```sh
//! eval "$(scripts/testenv.sh env)" && cargo test --test live -- --ignored --test-threads 1
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use vault_secrets_reloader::error::Error;
use vault_secrets_reloader::io::settings::{
    KubeCredentials, KubeSettings, Redacted, Source, VaultAuth, VaultSettings,
};
use vault_secrets_reloader::io::stream::Flow;
use vault_secrets_reloader::kube::watch::{Event, Watch};
use vault_secrets_reloader::kube::{Kube, Lease, LeaseMeta, LeaseSpec, ANSWER_LIMIT};
use vault_secrets_reloader::policy::workload::Kind;
use vault_secrets_reloader::vault::lifetime::{Lifetime, Source as From, SYSTEM_DEFAULT};
use vault_secrets_reloader::vault::listing::PAGE;
use vault_secrets_reloader::vault::{LifetimeError, Lookup, Unreadable, Vault};

fn var(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} unset: eval \"$(scripts/testenv.sh env)\""))
}

/// Runs a command of the environment (kubectl, bao), returning stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("BAO_ADDR", var("VAULT_ADDR"))
        .env("BAO_TOKEN", var("VAULT_TOKEN"))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kubectl(args: &[&str]) -> String {
    run("kubectl", args)
}

fn bao(args: &[&str]) -> String {
    run("bao", args)
}

/// A fresh namespace, and a client acting as a ServiceAccount in it that may
/// do anything there (RBAC is the e2e's concern; this tests the client).
fn namespace_and_client(name: &str) -> (String, Kube) {
    let ns = format!("live-{name}");
    let _ = Command::new("kubectl")
        .args(["delete", "namespace", &ns, "--wait=true"])
        .output();
    kubectl(&["create", "namespace", &ns]);
    kubectl(&["-n", &ns, "create", "serviceaccount", "tester"]);
    kubectl(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "tester",
        "--clusterrole=admin",
        &format!("--serviceaccount={ns}:tester"),
    ]);
    let token = kubectl(&["-n", &ns, "create", "token", "tester"]);
    let token_file = std::env::temp_dir().join(format!("live-{name}-{}.token", std::process::id()));
    std::fs::write(&token_file, token.trim()).unwrap();
    let kube = Kube::new(&KubeSettings {
        proxies: Default::default(),
        api_url: var("KUBE_API_URL"),
        ca: Some(Source::File(PathBuf::from(var("KUBE_CA_FILE")))),
        skip_verify: false,
        credentials: KubeCredentials::Token(Source::File(token_file)),
    })
    .unwrap();
    (ns, kube)
}

fn deployment(ns: &str, name: &str) -> String {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"{name}","namespace":"{ns}"}},
 "spec":{{"selector":{{"matchLabels":{{"app":"{name}"}}}},"template":{{"metadata":{{"labels":{{"app":"{name}"}}}},
 "spec":{{"containers":[{{"name":"c","image":"registry.invalid/x:1"}}]}}}}}}}}"#
    )
}

fn apply(manifest: &str) {
    let mut child = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
#[ignore = "needs scripts/testenv.sh up"]
fn lists_page_by_page_then_watches_only_changes() {
    let (ns, mut kube) = namespace_and_client("list");
    for i in 0..5 {
        apply(&deployment(&ns, &format!("d{i}")));
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let resource_version = loop {
        let page: vault_secrets_reloader::kube::Page = kube
            .list(
                Kind::Deployment,
                Some(&ns),
                2,
                token.as_deref(),
                ANSWER_LIMIT,
            )
            .unwrap();
        pages += 1;
        names.extend(
            page.items
                .iter()
                .filter_map(|item| item.0.as_ref().ok())
                .map(|w| w.metadata.name.clone()),
        );
        if page.metadata.continue_token.is_empty() {
            break page.metadata.resource_version;
        }
        token = Some(page.metadata.continue_token);
    };
    assert_eq!(pages, 3, "5 items in pages of 2");
    assert_eq!(names, ["d0", "d1", "d2", "d3", "d4"]);

    apply(&deployment(&ns, "d5"));
    kubectl(&["-n", &ns, "delete", "deployment", "d0"]);
    let mut watch = kube
        .open_watch(Kind::Deployment, Some(&ns), &resource_version, 30)
        .unwrap();
    let mut events = Vec::new();
    let seen = |events: &[Event], name: &str| {
        events.iter().any(|e| match e {
            Event::Applied(w) => w.metadata.name == name,
            _ => false,
        })
    };
    let deleted = |events: &[Event], name: &str| {
        events
            .iter()
            .any(|e| matches!(e, Event::Deleted(w) if w.metadata.name == name))
    };
    // Both changes come on the stream, d5 first: a read may end between them.
    read_until(&mut watch, &mut events, |e| {
        seen(e, "d5") && deleted(e, "d0")
    });
    // The same stream, still open, brings a change made after it opened.
    apply(&deployment(&ns, "d6"));
    read_until(&mut watch, &mut events, |e| seen(e, "d6"));
    kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

/// Reads `watch` (each read returns at once) until `done` holds for the
/// events so far; panics after 20 s or when the watch ends or fails.
fn read_until(watch: &mut Watch, events: &mut Vec<Event>, done: impl Fn(&[Event]) -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !done(events) {
        assert!(std::time::Instant::now() < until, "{events:?}");
        assert_eq!(watch.events(events), Ok(Flow::Open), "{events:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs scripts/testenv.sh up"]
fn a_stale_patch_is_refused_and_a_lease_has_one_holder() {
    let (ns, mut kube) = namespace_and_client("patch");
    apply(&deployment(&ns, "app"));
    let patch = |rv: &str, value: &str| serde_json::json!({"metadata": {"resourceVersion": rv, "annotations": {"test": value}}});
    // The deployment controller may write its status between our read and
    // our patch: then the patch is refused, which is the point; read again.
    let (rv, stored) = (0..20)
        .find_map(|_| {
            let rv = kube
                .get(Kind::Deployment, &ns, "app")
                .unwrap()
                .metadata
                .resource_version;
            match kube.merge_patch(Kind::Deployment, &ns, "app", &patch(&rv, "1")) {
                Ok(stored) => Some((rv, stored)),
                Err(Error::Conflict) => None,
                Err(e) => panic!("{e}"),
            }
        })
        .expect("a fresh resourceVersion is accepted");
    assert_ne!(stored.metadata.resource_version, rv);
    assert!(matches!(
        kube.merge_patch(Kind::Deployment, &ns, "app", &patch(&rv, "2")),
        Err(Error::Conflict)
    ));
    assert!(matches!(
        kube.get(Kind::Deployment, &ns, "gone"),
        Err(Error::NotFound)
    ));

    assert_eq!(kube.get_lease(&ns, "l").unwrap(), None);
    let lease = Lease {
        api_version: "coordination.k8s.io/v1".into(),
        kind: "Lease".into(),
        metadata: LeaseMeta {
            name: "l".into(),
            namespace: ns.clone(),
            resource_version: String::new(),
        },
        spec: LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        },
    };
    let created = kube.write_lease(&lease).unwrap();
    assert!(matches!(kube.write_lease(&lease), Err(Error::Conflict)));
    let mut taken = created.clone();
    taken.spec.holder_identity = Some("b".into());
    kube.write_lease(&taken).unwrap();
    // A write based on the old resourceVersion loses.
    assert!(matches!(kube.write_lease(&taken), Err(Error::Conflict)));
    assert_eq!(
        kube.get_lease(&ns, "l")
            .unwrap()
            .unwrap()
            .spec
            .holder_identity
            .as_deref(),
        Some("b")
    );
    kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

fn settings_with_token(token: &str) -> VaultSettings {
    VaultSettings {
        proxies: Default::default(),
        addr: var("VAULT_ADDR"),
        auth: VaultAuth::Token(Redacted(token.into())),
        namespace: None,
        ca_file: None,
        ca_secret: None,
        skip_verify: false,
        timeout: Duration::from_secs(5),
        ignore_missing: false,
    }
}

fn vault_with_token(token: &str) -> Vault {
    Vault::new(
        &settings_with_token(token),
        None,
        PathBuf::from("/nonexistent"),
    )
    .unwrap()
}

#[test]
#[ignore = "needs scripts/testenv.sh up"]
fn a_namespace_that_does_not_exist_is_a_configuration_error_not_a_missing_secret() {
    let settings = VaultSettings {
        namespace: Some("no-such-namespace".into()),
        ..settings_with_token(&var("VAULT_TOKEN"))
    };
    let mut vault = Vault::new(&settings, None, PathBuf::from("/nonexistent")).unwrap();
    // The token's own lookup goes nowhere: no usable token, and why.
    match vault.current_version("secret/data/anything") {
        Lookup::Failed(e @ Error::Token(_)) if matches!(&e, Error::Token(c) if matches!(**c, Error::Misrouted(_))) =>
        {
            assert!(e.to_string().contains("namespace not found"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
#[ignore = "needs scripts/testenv.sh up"]
fn versions_come_from_metadata_with_a_metadata_only_token() {
    let _ = Command::new("bao")
        .args(["secrets", "disable", "live/kv"])
        .output();
    bao(&["secrets", "enable", "-path=live/kv", "-version=2", "kv"]);
    let _ = Command::new("bao")
        .args(["secrets", "disable", "live-v1"])
        .output();
    bao(&["secrets", "enable", "-path=live-v1", "-version=1", "kv"]);
    bao(&["kv", "put", "live/kv/app", "k=1"]);
    bao(&["kv", "put", "live/kv/app", "k=2"]);
    bao(&["kv", "put", "live-v1/app", "k=1"]);
    let policy = std::env::temp_dir().join(format!("live-policy-{}.hcl", std::process::id()));
    std::fs::write(
        &policy,
        "path \"live/kv/metadata/*\" { capabilities = [\"read\"] }\npath \"live-v1/*\" { capabilities = [\"read\"] }\n",
    )
    .unwrap();
    bao(&["policy", "write", "live-metadata", policy.to_str().unwrap()]);
    let token = bao(&[
        "token",
        "create",
        "-policy=live-metadata",
        "-ttl=10m",
        "-field=token",
    ]);
    let mut vault = vault_with_token(token.trim());

    let first = match vault.current_version("live/kv/data/app") {
        Lookup::Found(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.number, 2);
    assert!(first.created.starts_with("20"), "{first:?}");
    assert!(matches!(
        vault.current_version("live/kv/data/none"),
        Lookup::Missing
    ));
    assert!(matches!(
        vault.current_version("live-v1/app"),
        Lookup::Unwatchable(_)
    ));
    assert!(matches!(
        vault.current_version("live/kv/app"),
        Lookup::Unwatchable(_)
    ));

    // Deleted and re-created: the number comes back, the creation time does not.
    bao(&["kv", "metadata", "delete", "live/kv/app"]);
    assert!(matches!(
        vault.current_version("live/kv/data/app"),
        Lookup::Missing
    ));
    bao(&["kv", "put", "live/kv/app", "k=3"]);
    bao(&["kv", "put", "live/kv/app", "k=4"]);
    match vault.current_version("live/kv/data/app") {
        Lookup::Found(again) => {
            assert_eq!(again.number, 2);
            assert_ne!(again.created, first.created);
        }
        other => panic!("{other:?}"),
    }
    // Soft-deleted: the version is still there, but cannot be read.
    bao(&["kv", "delete", "live/kv/app"]);
    assert!(matches!(
        vault.current_version("live/kv/data/app"),
        Lookup::Unreadable(ref v, Unreadable::Deleted) if v.number == 2
    ));

    // A path the policy does not name: that path's answer, the token works
    // (asked once, through lookup-self, which the default policy allows).
    bao(&["kv", "put", "secret/live-denied", "k=1"]);
    vault.take_requests();
    vault.begin_pass();
    for _ in 0..3 {
        assert!(matches!(
            vault.current_version("secret/data/live-denied"),
            Lookup::Denied
        ));
    }
    assert_eq!(
        vault
            .take_requests()
            .get(&("lookup-self", "2xx".to_string())),
        Some(&1)
    );
    assert!(matches!(
        vault.current_version("live/kv/data/none"),
        Lookup::Missing
    ));

    // A token Vault does not know: no usable token, not a denied path.
    let mut refused = vault_with_token("not-a-token");
    assert!(matches!(
        refused.current_version("live/kv/data/app"),
        Lookup::Failed(Error::Token(ref cause)) if **cause == Error::Denied(403)
    ));
}

/// Enables a fresh secrets engine of `kind` at `mount` (no trailing `/`).
fn fresh_mount(kind: &str, mount: &str) {
    let _ = Command::new("bao")
        .args(["secrets", "disable", mount])
        .env("BAO_ADDR", var("VAULT_ADDR"))
        .env("BAO_TOKEN", var("VAULT_TOKEN"))
        .output();
    bao(&["secrets", "enable", &format!("-path={mount}"), kind]);
}

/// A token whose only policy is `hcl`, written as `name`.
fn token_with_policy(name: &str, hcl: &str) -> String {
    let file = std::env::temp_dir().join(format!("live-{name}-{}.hcl", std::process::id()));
    std::fs::write(&file, hcl).unwrap();
    bao(&["policy", "write", name, file.to_str().unwrap()]);
    let token = bao(&[
        "token",
        "create",
        &format!("-policy={name}"),
        "-ttl=10m",
        "-field=token",
    ]);
    token.trim().to_string()
}

/// The optional dynamic-secrets block of manifests/vault-policy.hcl,
/// uncommented, for the mount `mount` (no trailing `/`) instead of
/// `database`.
fn documented_dynamic_block(mount: &str) -> String {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/vault-policy.hcl");
    let text = std::fs::read_to_string(file).unwrap();
    let block: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("# Optional: dynamic secrets"))
        .filter(|l| l.starts_with("#path") || l.starts_with("#  capabilities") || *l == "#}")
        .map(|l| &l[1..])
        .collect();
    assert_eq!(block.len(), 6, "{block:?}");
    block.join("\n").replace("database/", &format!("{mount}/")) + "\n"
}

#[test]
#[ignore = "needs scripts/testenv.sh up"]
fn lifetimes_come_from_roles_and_tune_and_no_lease_is_created() {
    let audit_from = std::fs::metadata(var("VAULT_AUDIT_LOG")).unwrap().len() as usize;
    fresh_mount("database", "live-db");
    // A role definition is stored without contacting any database.
    bao(&[
        "write",
        "live-db/roles/app",
        "db_name=none",
        "default_ttl=20s",
        "max_ttl=60s",
    ]);
    bao(&["write", "live-db/roles/plain", "db_name=none"]);
    bao(&[
        "secrets",
        "tune",
        "-default-lease-ttl=40s",
        "-max-lease-ttl=2m",
        "live-db",
    ]);
    fresh_mount("pki", "live-pki");
    bao(&[
        "write",
        "-field=serial_number",
        "live-pki/root/generate/internal",
        "common_name=live.test",
    ]);
    bao(&[
        "write",
        "live-pki/roles/web",
        "allow_any_name=true",
        "ttl=30s",
    ]);

    let policy = documented_dynamic_block("live-db") + &documented_dynamic_block("live-pki");
    let mut vault = vault_with_token(&token_with_policy("live-dynamic", &policy));
    let secs = Duration::from_secs;
    let lifetime = |ttl, max, renewable, source| Lifetime {
        ttl: secs(ttl),
        max: secs(max),
        renewable,
        source,
    };
    assert_eq!(
        vault.lifetime("live-db/creds/app"),
        Ok(lifetime(20, 60, true, From::Role))
    );
    assert_eq!(
        vault.lifetime("live-db/creds/plain"),
        Ok(lifetime(40, 120, true, From::Tune))
    );
    let pki = vault.lifetime("live-pki/issue/web").unwrap();
    assert_eq!(
        pki,
        Lifetime {
            ttl: secs(30),
            max: SYSTEM_DEFAULT,
            renewable: false,
            source: From::Role
        }
    );
    assert_eq!(pki.effective(true), secs(30));
    assert!(matches!(
        vault.lifetime("live-other/creds/app"),
        Err(LifetimeError::Unknown(_))
    ));

    // Roles only: the tune is refused, OpenBao's mount config says what it was tuned to.
    let roles_only = "path \"live-db/roles/*\" { capabilities = [\"read\"] }\n";
    let mut vault = vault_with_token(&token_with_policy("live-roles", roles_only));
    assert_eq!(
        vault.lifetime("live-db/creds/plain"),
        Ok(lifetime(40, 120, true, From::MountConfig))
    );

    // No access under the mount: nothing is known, nothing guessed.
    let mut none = vault_with_token(&token_with_policy(
        "live-none",
        "path \"nothing/*\" { capabilities = [\"read\"] }\n",
    ));
    match none.lifetime("live-db/creds/app") {
        Err(LifetimeError::Unknown(why)) => assert!(
            why.contains("sys/internal/ui/mounts/live-db/creds/app"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    let mut root = vault_with_token(&var("VAULT_TOKEN"));
    assert_eq!(
        root.lifetime("secret/data/x"),
        Err(LifetimeError::NotDynamic)
    );

    // The roles were read, the dynamic paths never requested.
    let audit = std::fs::read(var("VAULT_AUDIT_LOG")).unwrap();
    let paths: Vec<String> = String::from_utf8_lossy(&audit[audit_from..])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["request"]["path"].as_str().map(str::to_string))
        .collect();
    assert!(paths.iter().any(|p| p == "live-db/roles/app"), "{paths:?}");
    assert!(
        paths.iter().any(|p| p == "sys/mounts/live-db/tune"),
        "{paths:?}"
    );
    let dynamic: Vec<&String> = paths
        .iter()
        .filter(|p| p.contains("/creds/") || p.contains("/issue/") || p.contains("/sign/"))
        .filter(|p| !p.starts_with("sys/"))
        .collect();
    assert!(dynamic.is_empty(), "{dynamic:?}");
}

/// Writes `count` secrets `PREFIX/k000…` (version 1) to the KV v2 mount at
/// `mount` of the server at `addr` with `token`, through the API: one CLI
/// call each would take a minute.
fn write_secrets(addr: &str, token: &str, mount: &str, prefix: &str, count: usize) {
    let agent = ureq::Agent::new_with_defaults();
    for i in 0..count {
        agent
            .post(format!("{addr}/v1/{mount}/data/{prefix}/k{i:03}"))
            .header("X-Vault-Token", token)
            .send(r#"{"data":{"v":"1"}}"#)
            .unwrap_or_else(|e| panic!("writing {prefix}/k{i:03}: {e}"));
    }
}

/// `vault` once it has looked up the mount of `path` (a listing asks only
/// about mounts known from earlier lookups), its counts reset.
fn warmed(mut vault: Vault, path: &str) -> Vault {
    vault.current_version(path);
    vault.take_requests();
    vault
}

/// The versions `vault` finds for `paths`, after a prefetch, by outcome.
fn look_up_all(vault: &mut Vault, paths: &[String]) -> Vec<String> {
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let mut plan = vault.prefetch(&refs);
    while let Some(step) = vault.list_next(&mut plan) {
        step.expect("the server answers");
    }
    paths
        .iter()
        .map(|path| match vault.current_version(path) {
            Lookup::Found(v) => format!("{path} found {}", v.number),
            Lookup::Unreadable(v, why) => format!("{path} {why} {}", v.number),
            Lookup::Missing => format!("{path} missing"),
            other => panic!("{path}: {other:?}"),
        })
        .collect()
}

/// How many list and metadata requests `vault` sent since the last call.
fn sent(vault: &mut Vault) -> (u64, u64) {
    let counts = vault.take_requests();
    let of = |kind: &str| -> u64 {
        counts
            .iter()
            .filter(|((what, _), _)| *what == kind)
            .map(|(_, n)| n)
            .sum()
    };
    (of("list"), of("metadata"))
}

#[test]
#[ignore = "needs scripts/testenv.sh up"]
fn openbao_lists_a_directory_in_pages_and_finds_what_single_reads_find() {
    let _ = Command::new("bao")
        .args(["secrets", "disable", "live-list"])
        .output();
    bao(&["secrets", "enable", "-path=live-list", "-version=2", "kv"]);
    write_secrets(
        &var("VAULT_ADDR"),
        &var("VAULT_TOKEN"),
        "live-list",
        "dir",
        450,
    );
    bao(&["kv", "put", "live-list/dir/k012", "v=2"]);
    bao(&["kv", "delete", "live-list/dir/k021"]);
    bao(&["kv", "destroy", "-versions=1", "live-list/dir/k030"]);
    let policy = std::env::temp_dir().join(format!("live-list-{}.hcl", std::process::id()));
    std::fs::write(
        &policy,
        "path \"live-list/metadata/*\" { capabilities = [\"read\"] }\n\
         path \"live-list/detailed-metadata/*\" { capabilities = [\"list\"] }\n",
    )
    .unwrap();
    bao(&["policy", "write", "live-list", policy.to_str().unwrap()]);
    let token = bao(&["token", "create", "-policy=live-list", "-field=token"]);
    // Every third key of 450, and one that does not exist: all the pages.
    let mut paths: Vec<String> = (0..450)
        .step_by(3)
        .map(|i| format!("live-list/data/dir/k{i:03}"))
        .collect();
    paths.push("live-list/data/dir/k999".into());

    let mut single = vault_with_token(token.trim());
    let expected = look_up_all(&mut single, &paths);
    assert_eq!(sent(&mut single), (0, paths.len() as u64));
    let mut listing = warmed(vault_with_token(token.trim()).with_listing(), &paths[0]);
    let got = look_up_all(&mut listing, &paths);
    assert_eq!(got, expected);
    assert!(got.contains(&"live-list/data/dir/k999 missing".to_string()));
    assert!(got.contains(&"live-list/data/dir/k030 destroyed 1".to_string()));
    // Every page holding one of the 450, then (k999 sorts after them all)
    // the one after the last full page, which is empty or short.
    assert_eq!(sent(&mut listing), (450 / PAGE as u64 + 1, 0));

    assert!(got.contains(&"live-list/data/dir/k012 found 2".to_string()));
    assert!(got.contains(&"live-list/data/dir/k021 deleted 1".to_string()));

    // Without the list capability: refused, and read one by one.
    std::fs::write(
        &policy,
        "path \"live-list/metadata/*\" { capabilities = [\"read\"] }\n",
    )
    .unwrap();
    bao(&[
        "policy",
        "write",
        "live-list-read",
        policy.to_str().unwrap(),
    ]);
    let reader = bao(&["token", "create", "-policy=live-list-read", "-field=token"]);
    let mut refused = warmed(vault_with_token(reader.trim()).with_listing(), &paths[0]);
    assert_eq!(look_up_all(&mut refused, &paths), expected);
    assert_eq!(sent(&mut refused), (1, paths.len() as u64));
    let _ = std::fs::remove_file(&policy);
}

#[test]
#[ignore = "needs scripts/testenv.sh up"]
fn hashicorp_vault_has_no_listing_and_its_secrets_are_read_one_by_one() {
    let (addr, root) = (var("HASHICORP_VAULT_ADDR"), var("HASHICORP_VAULT_TOKEN"));
    write_secrets(&addr, &root, "secret", "live-list", 4);
    let paths: Vec<String> = (0..5)
        .map(|i| format!("secret/data/live-list/k{i:03}"))
        .collect();
    let settings = VaultSettings {
        addr,
        ..settings_with_token(&root)
    };
    let vault = Vault::new(&settings, None, PathBuf::from("/nonexistent"))
        .unwrap()
        .with_listing();
    let mut vault = warmed(vault, &paths[0]);
    let got = look_up_all(&mut vault, &paths);
    assert!(got[..4].iter().all(|s| s.contains(" found ")), "{got:?}");
    assert_eq!(got[4], "secret/data/live-list/k004 missing");
    assert_eq!(sent(&mut vault), (1, 5));
}
