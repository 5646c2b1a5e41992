//! Coverage-guided fuzzing of the reference parser (needs a nightly toolchain):
//!   cd fuzz && cargo +nightly fuzz run refs -- -max_total_time=60
//! Any input: no panic, and every watched path is part of the input and
//! round-trips through its state-annotation key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_secrets_reloader::policy::refs::{scan_from_path, scan_value, Provider, SecretRef};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let found = scan_value(text)
        .into_iter()
        .chain(scan_from_path(text, Provider::Vault))
        .chain(scan_from_path(text, Provider::Bao));
    for secret in found.flatten() {
        assert!(text.contains(secret.path.as_str()));
        assert_eq!(SecretRef::from_key(&secret.key()), Some(secret.clone()));
    }
});
