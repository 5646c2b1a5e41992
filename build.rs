//! Stamps the binary with the target triple and the git commit it is built
//! from, for `--version` (env `VSR_TARGET` and `VSR_COMMIT`).
//!
//! The commit comes from `BUILD_GIT_COMMIT` when set (a container build has
//! no `.git`), else from `git rev-parse`, else it is `unknown`. Cargo reruns
//! this only when HEAD or the branch it points to moves, not on every build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=VSR_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BUILD_GIT_COMMIT");
    let commit = match std::env::var("BUILD_GIT_COMMIT") {
        Ok(commit) if !commit.is_empty() => commit,
        _ => {
            watch_git_head();
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=VSR_COMMIT={commit}");
}

/// Asks cargo to rerun when HEAD changes: HEAD itself (a checkout) and the
/// branch it names (a commit). A branch without a loose ref file lives in
/// packed-refs until the next commit writes the file into its directory, so
/// then those two are watched. Without git, nothing is.
fn watch_git_head() {
    let Some(head) = git_path("HEAD") else { return };
    watch(&head);
    let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) else {
        return;
    };
    let Some(loose) = git_path(&branch) else {
        return;
    };
    if loose.exists() {
        watch(&loose);
        return;
    }
    if let Some(dir) = loose.parent().filter(|d| d.exists()) {
        watch(dir);
    }
    if let Some(packed) = git_path("packed-refs").filter(|p| p.exists()) {
        watch(&packed);
    }
}

fn watch(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

/// Where git keeps `name` (worktrees keep HEAD apart from the shared refs).
fn git_path(name: &str) -> Option<PathBuf> {
    git(&["rev-parse", "--path-format=absolute", "--git-path", name]).map(PathBuf::from)
}

/// The trimmed standard output of a successful `git ARGS`, else None.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}
