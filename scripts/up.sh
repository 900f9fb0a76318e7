#!/usr/bin/env bash
# One command from a fresh clone to a running stack: npm dependencies, Pulumi's
# local state backend and a passphrase (no Pulumi Cloud account), an SSH key
# for the server, then `pulumi up`. Safe to run again: every step is skipped
# when already done.
#
#   scripts/up.sh [stack] [extra pulumi up arguments]      (npm run up -- [stack] ...)
set -euo pipefail
cd "$(dirname "$0")/.."

readonly STACK=${1:-live}
shift || true
# shellcheck source=scripts/env.sh
. scripts/env.sh
readonly KEY_FILE=${CZD_SSH_KEY:-$CZD_STATE_DIR/id_ed25519}
readonly PULUMI=${CZD_PULUMI:-node_modules/.bin/pulumi}  # overridable for tests

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

check_prerequisites() {
  command -v node >/dev/null || die "Node.js 20 or later is needed: https://nodejs.org"
  command -v git >/dev/null || die "git is needed (deploys ship committed revisions of your app)"
  command -v ssh-keygen >/dev/null || die "ssh-keygen (OpenSSH client) is needed to make the server's key"
  [ -d .git ] || die "run this from a git clone of clj-zero-downtime: the sample app is deployed from its git history"
}

install_dependencies() {
  if [ ! -x "$PULUMI" ]; then
    say "installing npm dependencies (npm ci)"
    npm ci --no-audit --no-fund
  fi
}

use_local_backend() {
  mkdir -p "$CZD_STATE_DIR/state"
  chmod 700 "$CZD_STATE_DIR"
  if [ -n "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ] && [ ! -f "$PULUMI_CONFIG_PASSPHRASE_FILE" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 >"$PULUMI_CONFIG_PASSPHRASE_FILE")
    say "created a passphrase for this machine's stacks in $PULUMI_CONFIG_PASSPHRASE_FILE (back it up: it decrypts your secrets)"
  fi
  say "state backend: $PULUMI_BACKEND_URL"
}

select_stack() {
  if ! "$PULUMI" stack select "$STACK" >/dev/null 2>&1; then
    say "creating stack $STACK"
    "$PULUMI" stack init "$STACK" --secrets-provider passphrase
  fi
}

ensure_ssh_key() {
  if "$PULUMI" config get sshPublicKey --stack "$STACK" >/dev/null 2>&1; then
    return 0
  fi
  if [ ! -f "$KEY_FILE" ]; then
    ssh-keygen -q -t ed25519 -N '' -C "clj-zero-downtime-$STACK" -f "$KEY_FILE"
    say "created SSH key $KEY_FILE"
  fi
  "$PULUMI" config set sshPublicKey "$(cat "$KEY_FILE.pub")" --stack "$STACK"
  # The private key goes in on stdin, never on a command line.
  "$PULUMI" config set --secret sshPrivateKey --stack "$STACK" -- <"$KEY_FILE"
  say "stack $STACK uses $KEY_FILE.pub (ssh -i $KEY_FILE deploy@<server>)"
}

check_cloud_credentials() {
  local provider
  provider=$("$PULUMI" config get provider --stack "$STACK" 2>/dev/null || echo digitalocean)
  case "$provider" in
    digitalocean)
      [ -n "${DIGITALOCEAN_TOKEN:-}" ] || "$PULUMI" config get digitalocean:token --stack "$STACK" >/dev/null 2>&1 \
        || die "provider is digitalocean but no API token: export DIGITALOCEAN_TOKEN=... (or pulumi config set --secret digitalocean:token ...)" ;;
    hetzner)
      [ -n "${HCLOUD_TOKEN:-}" ] || "$PULUMI" config get hcloud:token --stack "$STACK" >/dev/null 2>&1 \
        || die "provider is hetzner but no API token: export HCLOUD_TOKEN=... (or pulumi config set --secret hcloud:token ...)" ;;
    existing)
      "$PULUMI" config get host --stack "$STACK" >/dev/null 2>&1 \
        || "$PULUMI" config get serverStack --stack "$STACK" >/dev/null 2>&1 \
        || die "provider is existing but no host: pulumi config set host <address> --stack $STACK (or serverStack <stack> to share that stack's server)" ;;
  esac
}

main() {
  check_prerequisites
  install_dependencies
  use_local_backend
  select_stack
  ensure_ssh_key
  check_cloud_credentials
  say "pulumi up --stack $STACK"
  "$PULUMI" up --stack "$STACK" --yes "$@"
}

main "$@"
