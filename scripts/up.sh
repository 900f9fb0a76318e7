#!/usr/bin/env bash
# One command from a fresh clone to a running stack: npm dependencies, Pulumi's
# local state backend and a passphrase (no Pulumi Cloud account), an SSH key
# for the server, then `pulumi up`. Safe to run again: every step is skipped
# when already done.
#
#   scripts/up.sh [stack | --stack <stack>] [extra pulumi up arguments]
#   (npm run up -- [stack] ...)
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/env.sh
. scripts/env.sh
readonly KEY_FILE=${CZD_SSH_KEY:-$CZD_STATE_DIR/id_ed25519}
readonly PULUMI=${CZD_PULUMI:-node_modules/.bin/pulumi}  # overridable for tests

STACK=live
UP_ARGS=()
NEW_STACK=0

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The stack comes first, as a word, --stack <name> or --stack=<name> (like npm
# run status); everything after it goes to pulumi up, which must not name
# another stack (this script would have set up the wrong one).
parse_arguments() {
  local arg
  case "${1:-}" in
    --stack)
      [ $# -ge 2 ] || die "--stack needs a stack name"
      STACK=$2
      shift 2
      ;;
    --stack=*)
      STACK=${1#--stack=}
      shift
      ;;
    -* | "") ;;
    *)
      STACK=$1
      shift
      ;;
  esac
  [[ $STACK =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] ||
    die "stack name '$STACK' must be letters, digits, '_', '.' or '-', and not start with '-' or '.'"
  for arg in "$@"; do
    case "$arg" in
      --stack | --stack=* | -s | -s?*) die "name the stack first (npm run up -- <stack> [pulumi up options]), not as '$arg' among the options" ;;
    esac
  done
  UP_ARGS=("$@")
}

check_prerequisites() {
  command -v node >/dev/null || die "Node.js 20 or later is needed: https://nodejs.org"
  command -v git >/dev/null || die "git is needed (deploys ship committed revisions of your app)"
  command -v ssh-keygen >/dev/null || die "ssh-keygen (OpenSSH client) is needed to make the server's key"
  command -v curl >/dev/null || die "curl is needed: the pulumi npm package downloads the Pulumi CLI with it on first use (apt-get install curl ca-certificates)"
  git rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
    die "run this from a git clone of clj-zero-downtime: the sample app is deployed from its git history"
}

install_dependencies() {
  if [ ! -x "$PULUMI" ]; then
    say "installing npm dependencies (npm ci)"
    npm ci --no-audit --no-fund
  fi
}

# True when secrets exist that need the passphrase they were made with: a
# stack in the (local) backend, or this stack's file with an encryption salt
# (committed from another machine).
secrets_exist() {
  local backend_dir
  if grep -q '^encryptionsalt:' "Pulumi.$STACK.yaml" 2>/dev/null; then
    return 0
  fi
  case "$PULUMI_BACKEND_URL" in
    file://*) backend_dir=${PULUMI_BACKEND_URL#file://} ;;
    *) return 1 ;;
  esac
  [ -n "$(find "$backend_dir/.pulumi/stacks" -name '*.json*' -print -quit 2>/dev/null)" ]
}

use_local_backend() {
  mkdir -p "$CZD_STATE_DIR/state"
  chmod 700 "$CZD_STATE_DIR"
  if [ -n "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ] && [ ! -f "$PULUMI_CONFIG_PASSPHRASE_FILE" ]; then
    if secrets_exist; then
      die "the passphrase file $PULUMI_CONFIG_PASSPHRASE_FILE is missing, but stacks exist whose secrets it decrypts (in $PULUMI_BACKEND_URL, or Pulumi.$STACK.yaml's encryptionsalt): restore it from your backup (a new passphrase cannot decrypt them)"
    fi
    (umask 077 && head -c 32 /dev/urandom | base64 >"$PULUMI_CONFIG_PASSPHRASE_FILE")
    say "created a passphrase for this machine's stacks in $PULUMI_CONFIG_PASSPHRASE_FILE (back it up: it decrypts your secrets)"
  fi
  say "state backend: $PULUMI_BACKEND_URL"
}

select_stack() {
  if ! "$PULUMI" stack select "$STACK" >/dev/null 2>&1; then
    say "creating stack $STACK"
    "$PULUMI" stack init "$STACK" --secrets-provider passphrase
    NEW_STACK=1
  fi
}

has_config() { "$PULUMI" config get "$1" --stack "$STACK" >/dev/null 2>&1; }

ensure_ssh_key() {
  local public
  if has_config sshPrivateKey; then
    has_config sshPublicKey ||
      die "stack $STACK has an sshPrivateKey but no sshPublicKey: set the public key of that pair with scripts/pulumi config set sshPublicKey \"\$(cat <key-file>.pub)\" --stack $STACK"
    return 0
  fi
  if [ ! -f "$KEY_FILE" ]; then
    ssh-keygen -q -t ed25519 -N '' -C "clj-zero-downtime-$STACK" -f "$KEY_FILE"
    say "created SSH key $KEY_FILE"
  fi
  [ -f "$KEY_FILE.pub" ] ||
    die "$KEY_FILE has no public key beside it: make it with ssh-keygen -y -f $KEY_FILE >$KEY_FILE.pub"
  public=$(cat "$KEY_FILE.pub")
  # Half a pair in the stack: the rest of an interrupted run of this, or a key set by hand.
  if has_config sshPublicKey && [ "$("$PULUMI" config get sshPublicKey --stack "$STACK")" != "$public" ]; then
    die "stack $STACK has an sshPublicKey but no sshPrivateKey, and it is not $KEY_FILE.pub: set the private key of that pair with scripts/pulumi config set --secret sshPrivateKey --stack $STACK -- <key-file"
  fi
  "$PULUMI" config set sshPublicKey "$public" --stack "$STACK"
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
        || die "provider is digitalocean but no API token: export DIGITALOCEAN_TOKEN=... (or scripts/pulumi config set --secret digitalocean:token --stack $STACK -- <token-file)" ;;
    hetzner)
      [ -n "${HCLOUD_TOKEN:-}" ] || "$PULUMI" config get hcloud:token --stack "$STACK" >/dev/null 2>&1 \
        || die "provider is hetzner but no API token: export HCLOUD_TOKEN=... (or scripts/pulumi config set --secret hcloud:token --stack $STACK -- <token-file)" ;;
    existing)
      "$PULUMI" config get host --stack "$STACK" >/dev/null 2>&1 \
        || "$PULUMI" config get serverStack --stack "$STACK" >/dev/null 2>&1 \
        || die "provider is existing but no host: scripts/pulumi config set host <address> --stack $STACK (or serverStack <stack> to share that stack's server)" ;;
  esac
}

# A new stack's first up only creates. A later one can replace the server (a
# changed region, image or provider), so where Pulumi can ask (its rule:
# stdin and stdout are terminals, TERM is not dumb, no CI) it shows the
# preview and asks; elsewhere it could only refuse, so it goes ahead.
# (Not called in a $(...): its stdout would be a pipe there.)
pulumi_should_ask() {
  [ "$NEW_STACK" = 0 ] && [ -t 0 ] && [ -t 1 ] && [ "${TERM:-dumb}" != dumb ] && [ -z "${CI:-}" ]
}

main() {
  parse_arguments "$@"
  check_prerequisites
  install_dependencies
  use_local_backend
  select_stack
  ensure_ssh_key
  check_cloud_credentials
  if ! pulumi_should_ask; then
    UP_ARGS=(--yes ${UP_ARGS[@]+"${UP_ARGS[@]}"})
  fi
  say "pulumi up --stack $STACK"
  # ${UP_ARGS[@]+...}: an empty array is "unbound" under set -u in bash before 4.4 (macOS's own).
  "$PULUMI" up --stack "$STACK" ${UP_ARGS[@]+"${UP_ARGS[@]}"}
}

main "$@"
