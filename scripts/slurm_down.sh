#!/usr/bin/env bash
# slurm_down.sh: stop the local Slurm cluster that scripts/slurm_up.sh started (slurmd, slurmctld,
# slurmdbd, MariaDB, munged), each by the PID in its pid file, and only if that PID is still the
# expected daemon. Packages, config, the job database and logs (/var/log/slurm) are kept, so
# `bash scripts/slurm_up.sh` starts it again in ~2 s. Safe to run when nothing is running.
#   Usage: bash scripts/slurm_down.sh
set -uo pipefail
for entry in /run/slurmd.pid:slurmd /run/slurmctld.pid:slurmctld /run/slurmdbd.pid:slurmdbd \
             /run/mysqld/mysqld.pid:mariadbd /run/munge/munged.pid:munged; do
  f=${entry%%:*}; name=${entry##*:}
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || continue   # stale pid file
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "$name ($pid) still running after 10 s" >&2
    else echo "stopped $name ($pid)"; fi
  fi
done
exit 0
