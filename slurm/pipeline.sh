#!/usr/bin/env bash
# Submit the data pipeline to Slurm and return: clean -> dedup's four passes -> [tokenizer] ->
# prepare, each an array job that starts when the one before has ended well (--dependency=afterok),
# so the chain runs on its own, with as many tasks at once as the cluster has room for.
#
#   slurm/pipeline.sh --input=RAW --work=DIR --tasks=N [--cpus=C] [--prepare_cpus=C] [--clean="FLAGS"]
#                     [--dedup="FLAGS"] [--tokenizer="FLAGS"] [--prepare="FLAGS"] [--sbatch="OPTIONS"]
#
# writes DIR/clean, DIR/dedup, DIR/tokenizer (with --tokenizer, "" for the defaults; prepare then
# uses it) and DIR/tokens, the same files as the scripts on one machine, logs in DIR/logs/, and
# DIR/logs/jobs.tsv: each job's id and the exact sbatch command, so `slurm/rerun.sh DIR JOB TASK`
# can resubmit one task that failed.
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
input="" work="" tasks="" cpus=1 prepare_cpus="" clean_flags="" dedup_flags="" prepare_flags="" sbatch_flags=""
tokenizer_flags="" train_tokenizer=""
for arg in "$@"; do
  case $arg in
    --input=*) input=${arg#*=} ;;
    --work=*) work=${arg#*=} ;;
    --tasks=*) tasks=${arg#*=} ;;
    --cpus=*) cpus=${arg#*=} ;;
    --prepare_cpus=*) prepare_cpus=${arg#*=} ;;
    --clean=*) clean_flags=${arg#*=} ;;
    --dedup=*) dedup_flags=${arg#*=} ;;
    --tokenizer=*) tokenizer_flags=${arg#*=} train_tokenizer=1 ;;
    --prepare=*) prepare_flags=${arg#*=} ;;
    --sbatch=*) sbatch_flags=${arg#*=} ;;
    -h|--help) usage ;;
    *) echo "pipeline.sh: unknown argument $arg" >&2; usage 1 >&2 ;;
  esac
done
if [[ -z $input || -z $work || ! $tasks =~ ^[1-9][0-9]*$ ]]; then
  echo "pipeline.sh: need --input=RAW --work=DIR --tasks=N (N >= 1)" >&2
  exit 1
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
input=$(realpath "$input")
mkdir -p "$work/logs"
work=$(realpath "$work")
: > "$work/logs/jobs.tsv"

# submit NAME AFTER TASKS SCRIPT FLAGS...: an array of TASKS tasks (none for TASKS=1) that waits for
# job AFTER; prints the job id
submit() {
  local name=$1 after=$2 count=$3 script=$4 log
  shift 4
  log="$work/logs/$name-%A_%a.out"
  [[ $count == 1 ]] && log="$work/logs/$name-%j.out"
  # shellcheck disable=SC2206  # --sbatch holds several options, split on spaces on purpose
  local command=(sbatch --parsable --job-name="webgpt-$name" --chdir="$repo" --output="$log"
                 --cpus-per-task="${CPUS:-$cpus}" $sbatch_flags "$repo/slurm/$script" "$@")
  local extra=()
  [[ $count != 1 ]] && extra+=(--array="0-$((count - 1))")
  [[ -n $after ]] && extra+=(--dependency="afterok:$after")
  local id
  id=$("${command[0]}" "${extra[@]}" "${command[@]:1}")
  id=${id%%;*}  # "id;cluster" on a federation
  printf '%s\t%s\t%s\n' "$name" "$id" "$(printf '%q ' "${command[@]}")" >> "$work/logs/jobs.tsv"
  printf '%-18s job %-8s %s task(s)\n' "$name" "$id" "$count" >&2
  echo "$id"
}

# shellcheck disable=SC2086  # the stage flags are several flags, split on spaces on purpose
{
  clean=$(submit clean "" "$tasks" clean.sbatch --input="$input" --output="$work/clean" \
          --num_shards="$tasks" $clean_flags)
  dedup=(--input="$work/clean" --output="$work/dedup" $dedup_flags)
  signatures=$(submit dedup-signatures "$clean" "$tasks" dedup.sbatch --pass=signatures "${dedup[@]}" \
               --num_shards="$tasks")
  buckets=$(submit dedup-buckets "$signatures" "$tasks" dedup.sbatch --pass=buckets "${dedup[@]}" \
            --num_shards="$tasks")
  clusters=$(submit dedup-clusters "$buckets" 1 dedup.sbatch --pass=clusters "${dedup[@]}")
  write=$(submit dedup-write "$clusters" "$tasks" dedup.sbatch --pass=write "${dedup[@]}" --num_shards="$tasks")
  before_prepare=$write tokenizer="" use_tokenizer=()
  if [[ -n $train_tokenizer ]]; then  # one task, as prepare: one vocabulary of the whole corpus
    tokenizer=$(CPUS=${prepare_cpus:-$cpus} submit tokenizer "$write" 1 tokenizer.sbatch --input="$work/dedup" \
                --output="$work/tokenizer" $tokenizer_flags)
    before_prepare=$tokenizer use_tokenizer=(--tokenizer="$work/tokenizer")  # --prepare's comes after
  fi
  prepare=$(CPUS=${prepare_cpus:-$cpus} submit prepare "$before_prepare" 1 prepare.sbatch --input="$work/dedup" \
            --output="$work/tokens" "${use_tokenizer[@]}" $prepare_flags)
}
echo "$clean $signatures $buckets $clusters $write $prepare${tokenizer:+ $tokenizer}"  # tokenizer's last: as before
echo "submitted; watch with: squeue   logs: $work/logs/   a failed task K of job J: slurm/rerun.sh $work J K" >&2
