#!/usr/bin/env bash
# Deploy one commit from CI, non-interactively; fail the job on anything but a healthy new release.
#   SLOTCTL=slotctl INVENTORY=inventory.yaml COMMIT=<40-hex sha> [HOSTS="--all --serial 2 --max-fail 1"] deploy.sh
# The JSON envelope is kept as deploy-result.json (a CI artifact); human progress goes to the job log (stderr).
set -uo pipefail
: "${COMMIT:?set COMMIT to the full SHA to deploy}"
SLOTCTL=${SLOTCTL:-slotctl}
INVENTORY=${INVENTORY:-inventory.yaml}
# shellcheck disable=SC2086  # HOSTS is a list of options
"$SLOTCTL" -i "$INVENTORY" deploy --commit "$COMMIT" --yes --json ${HOSTS:-} > deploy-result.json
code=$?
case $code in
  0) echo "deployed $COMMIT: healthy" >&2 ;;
  1) echo "deploy of $COMMIT FAILED its probes and was rolled back; the old release runs, healthy" >&2 ;;
  2) echo "deploy refused: bad input or an unexpected difference (nothing switched)" >&2 ;;
  4) echo "another deploy holds the lock" >&2 ;;
  5) echo "the bot did not quiesce in time: nothing switched" >&2 ;;
  6) echo "ROLLBACK FAILED: the host needs an operator now (see docs/runbooks.md, exit 6)" >&2 ;;
  *) echo "slotctl exited $code" >&2 ;;
esac
python3 -c 'import json,sys; d=json.load(open("deploy-result.json")); [print(f"{h}: {r.get(\"summary\") or r.get(\"error\")}", file=sys.stderr) for h,r in d["hosts"].items()]; d["error"] and print(d["error"], file=sys.stderr)' || true
exit "$code"
