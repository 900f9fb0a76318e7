#!/usr/bin/env bash
# Day-2 operations (npm run status | logs | rollback): scripts/ops.ts does the work.
# This wrapper only sources scripts/env.sh, so the state backend, passphrase and CLI
# defaults stay in that one file, shared with `npm run up` and with Pulumi run by hand.
#
#   scripts/ops.sh status|logs|rollback [options]      (npm run status -- --stack beta)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh
export TS_NODE_PROJECT=$PWD/tsconfig.json
exec node -r ts-node/register/transpile-only scripts/ops.ts "$@"
