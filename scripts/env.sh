# shellcheck shell=bash
# Source this to run Pulumi by hand with the same local state backend, passphrase
# and CLI as `npm run up`:   source scripts/env.sh && pulumi stack output --stack live
CZD_STATE_DIR=${CZD_STATE_DIR:-$HOME/.clj-zero-downtime}
export CZD_STATE_DIR
export PULUMI_BACKEND_URL=${PULUMI_BACKEND_URL:-file://$CZD_STATE_DIR/state}
if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
  export PULUMI_CONFIG_PASSPHRASE_FILE=$CZD_STATE_DIR/passphrase
fi
# The project's own Pulumi CLI launcher (the `pulumi` npm package).
PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/node_modules/.bin:$PATH"
export PATH
