#!/usr/bin/env bash
# Status command of the cluster-generic profile: print running, success or failed for a job id that
# submit.sh printed. On a real cluster, ask the scheduler instead (e.g. its accounting command).
job=.snakemake/local_jobs/$1
if [[ -f $job/exit ]]; then
    [[ $(< "$job/exit") == 0 ]] && echo success || echo failed
elif kill -0 "$(< "$job/pid")" 2>/dev/null; then
    echo running
else
    echo failed  # gone without writing its exit status: the process was killed
fi
