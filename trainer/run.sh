#!/usr/bin/env bash
# Launch CLIP-ViP training with torchrun.
#   trainer/run.sh CONFIG.yaml [--key value ...]
# One process per visible GPU (nccl); without a GPU one CPU process (gloo is used if you ask for more with
# NPROC_PER_NODE). Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT in the environment, or pass
# --nnodes/--node_rank/--master_addr/--master_port/--nproc_per_node (anywhere in the arguments); every
# other --key value goes to the training config. Rendezvous defaults to 127.0.0.1:29500 (single node).
# The config and every path are checked once (python -m trainer.train --check) before torchrun starts,
# so a mistake is one line. Ctrl-C stops every process and prints one line; rerunning resumes.
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit "$1"; }
[[ $# -ge 1 ]] || usage 2
[[ "$1" == "-h" || "$1" == "--help" ]] && usage 0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"
elif [[ -x "$repo/.venv/bin/python" ]]; then py="$repo/.venv/bin/python"
else py="$(command -v python3 || command -v python)"; fi

nnodes="${NNODES:-1}"
node_rank="${NODE_RANK:-0}"
master_addr="${MASTER_ADDR:-127.0.0.1}"
master_port="${MASTER_PORT:-29500}"
nproc="${NPROC_PER_NODE:-}"

train_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nnodes|--node_rank|--node-rank|--master_addr|--master-addr|--master_port|--master-port|--nproc_per_node|--nproc-per-node)
      [[ $# -ge 2 ]] || { echo "run.sh: $1 needs a value" >&2; exit 2; }
      case "$1" in
        --nnodes) nnodes="$2" ;;
        --node_rank|--node-rank) node_rank="$2" ;;
        --master_addr|--master-addr) master_addr="$2" ;;
        --master_port|--master-port) master_port="$2" ;;
        *) nproc="$2" ;;
      esac
      shift 2 ;;
    --nnodes=*|--node_rank=*|--node-rank=*|--master_addr=*|--master-addr=*|--master_port=*|--master-port=*|--nproc_per_node=*|--nproc-per-node=*)
      key="${1%%=*}"; set -- "$key" "${1#*=}" "${@:2}" ;;
    *) train_args+=("$1"); shift ;;
  esac
done

if [[ -z "$nproc" ]]; then
  ngpu="$("$py" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)"
  nproc=$(( ngpu > 0 ? ngpu : 1 ))
fi

"$py" -m trainer.train --check "${train_args[@]}" >/dev/null || exit $?

echo "run.sh: $nnodes node(s) x $nproc process(es), node_rank $node_rank, rendezvous $master_addr:$master_port" >&2
# torchrun runs in a session of its own, so Ctrl-C reaches only this script, which then stops that whole
# session at once (torchrun itself would answer a signal with a traceback per process). Checkpoints are
# written atomically, so the rerun resumes from the last one.
setsid "$py" -m torch.distributed.run \
  --nnodes="$nnodes" --node_rank="$node_rank" --nproc_per_node="$nproc" \
  --master_addr="$master_addr" --master_port="$master_port" \
  -m trainer.train "${train_args[@]}" &
pid=$!
trap 'kill -KILL -- "-$pid" 2>/dev/null; echo "interrupted: rerun the same command to resume" >&2; exit 130' INT TERM
set +e
wait "$pid"
exit $?
