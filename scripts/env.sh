# shellcheck shell=bash
# The local state backend, passphrase and CLI that `npm run up`, `npm run status`
# and scripts/pulumi use. Run Pulumi by hand through scripts/pulumi (any shell,
# any directory), or source this in bash:  source scripts/env.sh && pulumi ...
if [ -z "${BASH_SOURCE[0]:-}" ]; then
  echo "scripts/env.sh is for bash; from another shell run Pulumi as scripts/pulumi <arguments>" >&2
  return 1
fi
CZD_STATE_DIR=${CZD_STATE_DIR:-$HOME/.clj-zero-downtime}
export CZD_STATE_DIR
export PULUMI_BACKEND_URL=${PULUMI_BACKEND_URL:-file://$CZD_STATE_DIR/state}
# A passphrase the user set, even an empty one, is the one Pulumi uses (it wins over the file).
if [ -z "${PULUMI_CONFIG_PASSPHRASE+set}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
  export PULUMI_CONFIG_PASSPHRASE_FILE=$CZD_STATE_DIR/passphrase
fi
# The project's own Pulumi CLI launcher (the `pulumi` npm package).
PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/node_modules/.bin:$PATH"
export PATH
