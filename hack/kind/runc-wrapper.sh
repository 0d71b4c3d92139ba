#!/bin/sh
# runc, minus the capabilities this machine never grants.
#
# Docker and kind start "privileged" containers with every capability the kernel knows; in a sandbox whose
# capability bounding set lacks some (e.g. CAP_SYS_RESOURCE), runc then fails with "unable to apply caps:
# operation not permitted". This wrapper removes the capabilities named in UNHELD_CAPS (set in the line
# below by localcluster/kind.py from /proc/self/status) from the container's spec, or from an exec's
# process spec, and runs the real runc. On a machine that grants every capability it is never installed.
# Without CAP_SYS_RESOURCE, an oom_score_adj below runc's own cannot be set either (the kubelet asks -998
# for its pods' sandboxes): it is raised to runc's own.
UNHELD_CAPS=""
REAL_RUNC=/usr/sbin/runc

held_only() { # $1: a JSON file, $2: the jq path of its process (.process, or . for an exec's process spec)
  jq --arg unheld "$UNHELD_CAPS" --argjson own "$(cat /proc/self/oom_score_adj)" "
    ($2.capabilities // {}) |= with_entries(.value |= map(select(. as \$c | \$unheld | split(\" \") | index(\$c) | not)))
    | if (\$unheld | split(\" \") | index(\"CAP_SYS_RESOURCE\")) and ($2.oomScoreAdj // \$own) < \$own
      then $2.oomScoreAdj = \$own else . end" "$1" >"$1.held" && mv "$1.held" "$1"
}

previous=""
for arg in "$@"; do
  case "$previous" in
    --bundle | -b) if [ -f "$arg/config.json" ]; then held_only "$arg/config.json" .process; fi ;;
    --process | -p) if [ -f "$arg" ]; then held_only "$arg" ""; fi ;;
  esac
  previous=$arg
done
exec "$REAL_RUNC" "$@"
