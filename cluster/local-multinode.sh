#!/usr/bin/env bash
# A Ray "cluster" of one head and two worker nodes on this machine, to try multi-node scheduling and
# node loss without hardware. Then: mmder sweep EXPERIMENT.yaml --address 127.0.0.1:6379
#   bash cluster/local-multinode.sh start [CPUS_PER_NODE]   |   bash cluster/local-multinode.sh stop
# Kill one worker node mid-sweep (ray stop on it, or kill its raylet) to see Ray Train restart the
# worker group from the last checkpoint.
set -euo pipefail
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token} RAY_ENABLE_UV_RUN_RUNTIME_ENV=0
cpus=${2:-1}
case "${1:-start}" in
  start)
    ray start --head --port=6379 --num-cpus=0 --include-dashboard=true
    for i in 1 2; do
      # Separate temp/plasma folders would need separate machines; one machine shares them, which
      # Ray supports for testing (all nodes report the same IP; Train sees one "node" of ranks).
      ray start --address=127.0.0.1:6379 --num-cpus="$cpus" --resources="{\"node$i\": 1}"
    done
    ray status
    ;;
  stop) ray stop --force ;;
  *) echo "usage: $0 start [CPUS_PER_NODE] | stop" >&2; exit 2 ;;
esac
