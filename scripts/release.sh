#!/usr/bin/env bash
# Release binaries: fully static, stripped musl executables for x86-64 and
# arm64 Linux, in dist/ with their SHA256SUMS:
#   dist/vault-secrets-reloader-VERSION-x86_64-linux-musl
#   dist/vault-secrets-reloader-VERSION-aarch64-linux-musl
#
# Usage: scripts/release.sh [TRIPLE...]   (default: both triples above)
#
# Installs what is missing, and says so: the Rust targets (rustup), and from
# Debian (apt-get, as root) musl-tools for a native build, gcc-ARCH-linux-gnu
# for a cross build (ring compiles C and assembly for the target) and
# qemu-user-static to run a foreign binary once. Builds on an x86-64 or an
# arm64 Debian host; the Containerfile runs this script for each platform.
#
# Each binary must have no NEEDED library and no interpreter, weigh at most
# 4 MiB, and print its version and target with --version (a foreign one
# through qemu-user; RELEASE_RUN_CHECK=0 skips running it).
# A second run is quick: nothing is installed again and cargo's cache holds.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

NAME=vault-secrets-reloader
MAX_BYTES=$((4 * 1024 * 1024))
DIST=$REPO/dist
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
HOST_ARCH=$(uname -m)
APT_UPDATED=

log() { printf 'release: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- installs

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_install() { # package -> installed from Debian unless it already is
  installed "$1" && return 0
  command -v apt-get >/dev/null || die "$1 is missing and there is no apt-get; install it"
  ((EUID == 0)) || die "$1 is missing; install it as root (apt-get install $1)"
  if [[ -z $APT_UPDATED ]]; then
    log "apt-get update"
    apt-get update -qq >&2
    APT_UPDATED=1
  fi
  log "installing $1 (apt-get install -y $1)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "$1" >&2
}

rust_target() { # triple -> the Rust standard library for it is installed
  rustup target list --installed | grep -qx "$1" && return 0
  log "installing the Rust target $1 (rustup target add $1)"
  rustup target add "$1" >&2
}

# ---------------------------------------------------------------- per target

arch_of() { echo "${1%%-*}"; }

# The version in Cargo.toml's [package] section (no python or jq needed, so
# that this runs in the Containerfile's build stage as it is).
package_version() {
  awk -F'"' '/^\[/ { p = ($0 == "[package]") } p && /^version *=/ { print $2; exit }' Cargo.toml
}

# The C compiler for a target, which the package installs: musl's wrapper for
# the host's own architecture, else the GNU cross compiler (ring's C and
# assembly use no libc headers that differ between glibc and musl).
cc_for() {
  local arch
  arch=$(arch_of "$1")
  if [[ $arch == "$HOST_ARCH" ]]; then echo musl-gcc; else echo "$arch-linux-gnu-gcc"; fi
}
cc_package_for() {
  local arch
  arch=$(arch_of "$1")
  if [[ $arch == "$HOST_ARCH" ]]; then echo musl-tools; else echo "gcc-${arch//_/-}-linux-gnu"; fi
}

# The cargo command with the target's compiler and linker as environment
# variables, so that a plain `cargo build` is left as .cargo/config.toml
# says. Rust's musl targets bring their own C runtime and libc
# (self-contained) and link statically by default; the native one links
# with the host's cc, a foreign one with the cross compiler.
build() {
  local triple=$1 cc var
  cc=$(cc_for "$triple")
  var=${triple//-/_}
  local env=("CC_$var=$cc")
  if [[ $(arch_of "$triple") != "$HOST_ARCH" ]]; then
    env+=("AR_$var=$(arch_of "$triple")-linux-gnu-ar" "CARGO_TARGET_${var^^}_LINKER=$cc")
  fi
  log "building $triple (${env[*]})"
  env "${env[@]}" cargo build --release --locked --quiet --target "$triple"
}

# Runs a binary of the given triple: natively or through qemu-user.
run_binary() {
  local triple=$1
  shift
  local arch
  arch=$(arch_of "$triple")
  if [[ $arch == "$HOST_ARCH" ]]; then "$@"; else "qemu-$arch-static" "$@"; fi
}

# Checks a built binary: static, within budget, runs and names its target.
verify() {
  local triple=$1 bin=$2 size version
  size=$(stat -c %s "$bin")
  ((size <= MAX_BYTES)) || die "$bin is $size bytes, over the $MAX_BYTES budget"
  ! readelf -d "$bin" | grep -q NEEDED || die "$bin needs shared libraries"
  ! readelf -l "$bin" | grep -q INTERP || die "$bin names a program interpreter"
  ! readelf -S "$bin" | grep -q '\.symtab' || die "$bin is not stripped"
  [[ ${RELEASE_RUN_CHECK:-1} == 0 ]] && return 0
  version=$(run_binary "$triple" "$bin" --version) || die "$bin --version failed"
  [[ $version == "$NAME "*"($triple, commit "* ]] || die "$bin --version says: $version"
  log "$version"
}

# ---------------------------------------------------------------- main

main() {
  local triples=("$@") version triple arch out built=()
  ((${#triples[@]})) || triples=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
  case $HOST_ARCH in x86_64 | aarch64) ;; *) die "unsupported build host $HOST_ARCH" ;; esac
  version=$(package_version)
  for triple in "${triples[@]}"; do
    [[ $triple == *-unknown-linux-musl ]] || die "not a Linux musl triple: $triple"
    arch=$(arch_of "$triple")
    rust_target "$triple"
    apt_install "$(cc_package_for "$triple")"
    if [[ $arch != "$HOST_ARCH" && ${RELEASE_RUN_CHECK:-1} != 0 ]]; then
      apt_install qemu-user-static
    fi
  done
  mkdir -p "$DIST"
  for triple in "${triples[@]}"; do
    build "$triple"
    out=$NAME-$version-${triple/-unknown/}
    verify "$triple" "$TARGET_DIR/$triple/release/$NAME"
    cp "$TARGET_DIR/$triple/release/$NAME" "$DIST/$out.tmp"
    mv "$DIST/$out.tmp" "$DIST/$out"
    log "$out: $(stat -c %s "$DIST/$out") bytes"
    built+=("$out")
  done
  (cd "$DIST" && sha256sum "${built[@]}" >SHA256SUMS)
  log "done: $DIST (${built[*]} SHA256SUMS)"
}

main "$@"
