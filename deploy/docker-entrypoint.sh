#!/bin/sh
# Container entrypoint for every eipdash process.
#
# EIPDASH_ENV_FILE (optional): a file of KEY=VALUE lines to export before the command starts, once it
# exists. The compose sandbox profile uses it: the sandbox service writes the emulators' endpoint and
# kubeconfig there, and the worker, beat and watch wait for it. Unset in production.
set -eu
if [ -n "${EIPDASH_ENV_FILE:-}" ]; then
    waited=0
    while [ ! -s "$EIPDASH_ENV_FILE" ]; do
        if [ "$waited" -ge 240 ]; then
            echo "eipdash-entrypoint: $EIPDASH_ENV_FILE did not appear within 120s" >&2
            exit 1
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    # KEY=VALUE lines, taken literally (no shell expansion, spaces kept): not sourced as a script.
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
            ''|'#'*) continue ;;
            *=*) export "${line%%=*}=${line#*=}" ;;
        esac
    done < "$EIPDASH_ENV_FILE"
fi
exec "$@"
