#!/usr/bin/env bash
# Rerun tasks of a pipeline job alone, and make the jobs that wait for it wait for the rerun:
#
#   slurm/rerun.sh DIR JOB [TASKS]      (TASKS: 3, or 3,7 or 0-9; none for a one-task job)
#
# DIR is pipeline.sh's --work and JOB a job id it printed. By hand this is two commands:
#   sbatch --array=TASKS <JOB's command from DIR/logs/jobs.tsv>
#   scontrol update JobId=<each job waiting for JOB> Dependency=afterok:<the new job>
# Slurm keeps a job whose dependency failed pending ("DependencyNeverSatisfied") rather than
# starting it, so the rest of the chain waits; every stage skips the work already done.
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 1; }
work=$1 job=$2 tasks=${3:-}
line=$(awk -F'\t' -v job="$job" '$2 == job {print $3}' "$work/logs/jobs.tsv")
[[ -n $line ]] || { echo "rerun.sh: no job $job in $work/logs/jobs.tsv" >&2; exit 1; }
eval "command=($line)"  # the command as pipeline.sh quoted it
new=$("${command[0]}" ${tasks:+--array="$tasks"} "${command[@]:1}")
new=${new%%;*}
echo "rerun of job $job${tasks:+ task(s) $tasks}: job $new" >&2
# each waiting job's dependencies, e.g. "afterok:15_*(failed)": the same ones, with the new job
# in place of JOB
squeue -h -t PD -o "%i %E" | while read -r waiting dependency; do
  [[ $dependency =~ afterok:${job}[_\(] ]] || continue
  ids=$(tr ',' '\n' <<< "$dependency" | sed -n 's/^afterok:\([0-9]*\).*/\1/p' | { grep -vx "$job" || true; } | tr '\n' ':')
  scontrol update JobId="$waiting" Dependency="afterok:${ids}${new}"
  echo "job $waiting now waits for job $new" >&2
done
echo "$new"
