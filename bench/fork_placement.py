"""Where builtin:example's forked task ran, per request, from a scheduler trace (issue #14).

    perf sched record -o sched.data -- tools/deno run -A main.ts infer --threads 1 --requests 300
    python3 bench/fork_placement.py sched.data

For every fork that woke an inter-op worker (the inference thread wakes spindle-interop), it
finds the worker's next run and the request's end (the inference thread wakes Deno's runtime)
and sorts the requests: 'othercpu' (the worker ran the task on another CPU: side by side),
'samecpu' (it ran on the forker's CPU: one after the other), 'inline' (the worker ran less than
0.2 ms: the forker ran the task itself at its wait); each 'fast' or 'slow' (over 0.9 ms). Needs
perf with sched tracepoints (root, or perf_event_paranoid <= 1).
"""
import collections
import re
import subprocess
import sys

SLOW_MS = 0.9

lines = subprocess.run(["perf", "sched", "timehist", "-i", sys.argv[1], "-w"],
                       capture_output=True, text=True, check=True).stdout.splitlines()
row = re.compile(r'\s*([\d.]+)\s+\[(\d+)\]\s+(.+?)\[(\d+)(?:/(\d+))?\]\s+(.*)')
events = []
for line in lines:
    match = row.match(line)
    if match:
        time, cpu, name, tid, pid, rest = match.groups()
        events.append((float(time), int(cpu), name.strip(), int(tid), int(pid or tid), rest))
owners = collections.Counter(e[4] for e in events if e[2].startswith('spindle-interop'))
pid = owners.most_common(1)[0][0]
ours = [e for e in events if e[4] == pid]
kinds = collections.Counter()
latencies = []
for index, event in enumerate(ours):
    if 'awakened: spindle-interop' not in event[5]:
        continue
    forker, forker_cpu, start = event[3], event[1], event[0]
    worker = int(re.search(r'spindle-interop\[(\d+)', event[5]).group(1))
    worker_run = worker_cpu = end = None
    for later in ours[index + 1:index + 60]:
        if later[3] == worker and 'awakened' not in later[5] and worker_run is None:
            worker_run, worker_cpu = float(later[5].split()[2]), later[1]
        if later[3] == forker and ('awakened: tokio' in later[5] or f'awakened: deno[{pid}]' in later[5]):
            end = later[0]
            break
    if end is None:
        continue
    latency = (end - start) * 1000
    latencies.append(latency)
    kind = 'inline' if worker_run is None or worker_run < 0.2 else ('samecpu' if worker_cpu == forker_cpu else 'othercpu')
    kinds[(kind, 'slow' if latency > SLOW_MS else 'fast')] += 1
print('requests', len(latencies))
for key, count in sorted(kinds.items()):
    print(*key, count)
latencies.sort()
print('p50 %.3f ms, p90 %.3f ms' % (latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.9)]))
