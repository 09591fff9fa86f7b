#!/usr/bin/env bash
# Submit command of the cluster-generic profile. Snakemake calls it as `submit.sh JOBSCRIPT` from the
# working directory and reads the job id it prints; status.sh then reports on that id.
#
# This one starts the jobscript as its own detached local process (a new session, stdin closed, outliving
# this script) and keeps what happened to the job in .snakemake/local_jobs/<id>/:
#   pid          the process id
#   record.json  written by the job process itself: its process id and session id, and the job's properties
#                from the jobscript (rule, wildcards, threads, resources)
#   log          the job's output
#   exit         its exit status, written when it ends
# On a real cluster, replace the `setsid` command by your scheduler's submit command, asking for the
# properties' threads, resources.mem_mb and resources.runtime (minutes), and print the scheduler's job id.
set -euo pipefail
jobscript=$1
mkdir -p .snakemake/local_jobs
job=$(mktemp -d .snakemake/local_jobs/XXXXXXXX)
setsid bash -c '
    job=$1 jobscript=$2
    printf "{\"pid\": %d, \"session\": %d, \"job\": %s}\n" $$ "$(ps -o sid= -p $$)" \
        "$(sed -n "s/^# properties = //p" "$jobscript")" > "$job/record.json"
    bash "$jobscript"
    echo $? > "$job/exit.partial" && mv "$job/exit.partial" "$job/exit"
' job "$job" "$jobscript" < /dev/null > "$job/log" 2>&1 &
echo $! > "$job/pid"
basename "$job"
