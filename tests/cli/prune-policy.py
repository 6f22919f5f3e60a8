#!/usr/bin/env python3
"""qbak prune's retention decisions against restic's, point by point.

    prune-policy.py ZONE SET WORKDIR

Makes the points of SET ("full" or "short", see COMMON) at synthetic times over two
years twice: as restic snapshots (`restic backup --time`, the local time
of ZONE, which restic keeps with its offset) and as qbak points
(QBAK_TEST_NOW, a 1 MiB disk, a repository made with --tz ZONE).  Then
for each policy it compares `qbak prune --dry-run --json` with
`restic forget --dry-run --json`: the same points kept, for the same
reasons.  Last, it pins one point (qbak protect; restic: a tag kept with
--keep-tag) and compares again.  Exits 1 naming every difference.
"""
import concurrent.futures
import datetime
import json
import os
import subprocess
import sys
import zoneinfo

QBAK = os.environ.get("QBAK", "qbak")

# Both sets are read in the zone given: ISO week-year boundaries (2020/21:
# 2020 has a week 53, Monday Dec 28 to Sunday Jan 3; 2024/25 and 2025/26:
# the Mondays Dec 30 and Dec 29 open week 1), two points on the oldest
# day, points around local midnight, the two daylight-saving changes of
# 2026 around local midnight and across the changed hour, and points
# spread over the two years before.  Every point is in the past: restic
# counts keep-within back from the newest snapshot that is not in the
# future.
COMMON = [
    "2020-12-27 08:00", "2020-12-27 12:00", "2020-12-28 09:00",
    "2021-01-01 12:00", "2021-01-03 23:30", "2021-01-04 00:30",
    "2024-01-05 10:00", "2024-02-29 23:30", "2024-06-30 12:00",
    "2024-12-28 12:00", "2024-12-29 23:30", "2024-12-30 00:30",
    "2025-01-01 00:00", "2025-01-05 23:00", "2025-01-06 01:00",
    "2025-03-01 12:00", "2025-03-02 23:50", "2025-03-03 00:10",
    "2025-03-04 12:00", "2025-05-11 18:30", "2025-07-19 06:45",
    "2025-09-30 23:59", "2025-10-01 00:01",
    "2025-12-27 12:00", "2025-12-28 23:30", "2025-12-29 00:30",
    "2026-01-01 00:00", "2026-01-04 23:00", "2026-01-05 01:00",
    "2026-06-15 12:00",
]
DST = {
    "Europe/Berlin": [
        "2026-03-28 23:30", "2026-03-29 00:30", "2026-03-29 01:30",
        "2026-03-29 03:30", "2026-03-29 04:10", "2026-03-30 00:20",
        "2026-10-24 23:40", "2026-10-25 00:40", "2026-10-25 01:40",
        "2026-10-25 03:10", "2026-10-25 23:50", "2026-10-26 00:50",
    ],
    "America/New_York": [
        "2026-03-07 23:30", "2026-03-08 00:30", "2026-03-08 01:30",
        "2026-03-08 03:30", "2026-03-08 04:10", "2026-03-08 20:30",
        "2026-03-08 21:30", "2026-03-09 00:20",
        "2026-10-31 23:40", "2026-11-01 00:40", "2026-11-01 02:40",
        "2026-11-01 03:10", "2026-11-01 19:30", "2026-11-01 20:30",
        "2026-11-02 00:50",
    ],
}
# The newest point of set "short" is on Nov 30: keep-within's months roll
# over days as Go's AddDate does (Nov 30 minus 1y9m is "Feb 30", Mar 2).
END30 = ["2026-11-30 18:00"]

POLICIES = [
    ["--keep-last", "7"],
    ["--keep-daily", "7", "--keep-weekly", "5", "--keep-monthly", "6"],
    ["--keep-weekly", "8"],
    ["--keep-weekly", "20", "--keep-yearly", "3"],
    ["--keep-hourly", "10", "--keep-daily", "4"],
    ["--keep-monthly", "30"],
    ["--keep-within", "1y2m"],
    ["--keep-within", "1y9m", "--keep-last", "2"],
    ["--keep-within", "1y8m29d"],
    ["--keep-weekly", "60"],
    ["--keep-daily", "100"],
    ["--keep-yearly", "10", "--keep-weekly", "3"],
    ["--keep-within", "3m4d5h", "--keep-weekly", "3"],
    ["--keep-within", "2d", "--keep-hourly", "3"],
]
PROTECTED_POLICY = ["--keep-daily", "3", "--keep-monthly", "4"]


def point_times(zone, which):
    """The instants (unix seconds) of the set, oldest first."""
    tz = zoneinfo.ZoneInfo(zone)
    # "short": the points of the last two years only, and the newest on
    # Nov 30.
    common = COMMON if which == "full" else [c for c in COMMON
                                             if c >= "2025-03"] + END30
    local = common + DST.get(zone, [])
    out = []
    for s in local:
        d = datetime.datetime.strptime(s, "%Y-%m-%d %H:%M").replace(tzinfo=tz)
        # restic reads --time in its local zone: a wall clock that the
        # change skips or repeats would be read one way or the other.
        if d.replace(fold=1).utcoffset() != d.utcoffset():
            sys.exit(f"{s} is ambiguous in {zone}: pick another time")
        back = datetime.datetime.fromtimestamp(d.timestamp(), tz)
        if back.replace(tzinfo=None) != d.replace(tzinfo=None):
            sys.exit(f"{s} does not exist in {zone}: pick another time")
        out.append(int(d.timestamp()))
    out.sort()
    assert len(set(out)) == len(out)
    if out[-1] >= datetime.datetime.now().timestamp():
        sys.exit("a point is in the future: restic would not count back "
                 "from it; move the sets back")
    return out


def run(cmd, env=None, **kw):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr}")
    return r.stdout


def restic_env(zone, repo):
    env = dict(os.environ)
    env.update(TZ=zone, RESTIC_PASSWORD="qbak-test", RESTIC_REPOSITORY=repo)
    return env


def restic_decisions(env, policy, tag=None):
    args = ["restic", "forget", "--no-cache", "--no-lock", "--dry-run",
            "--json",
            "--host", "qbak"] + policy
    if tag:
        args += ["--keep-tag", tag]
    groups = json.loads(run(args, env=env))
    out = {}
    for g in groups:
        for kind in ("keep", "remove"):
            for sn in g.get(kind) or []:
                t = int(datetime.datetime.fromisoformat(sn["time"]).timestamp())
                out[t] = {"action": kind, "reasons": set()}
        for r in g.get("reasons") or []:
            t = int(datetime.datetime.fromisoformat(
                r["snapshot"]["time"]).timestamp())
            for m in r["matches"]:
                if m.startswith("has tags"):
                    m = "protected"
                elif m.endswith(" snapshot"):
                    m = m[:-len(" snapshot")]
                out[t]["reasons"].add(m)
    return out


def qbak_decisions(repo, policy):
    o = json.loads(run([QBAK, "prune", "--dry-run", "--json"] + policy +
                       [repo]))
    return {p["unix-time"]: {"action": p["action"], "reasons":
                             set(p["reasons"]), "id": p["id"],
                             "local": p["local-time"]}
            for p in o["points"]}


def compare(name, want, got):
    bad = []
    if set(want) != set(got):
        bad.append(f"{name}: points differ: restic {sorted(want)}, "
                   f"qbak {sorted(got)}")
        return bad
    for t in sorted(want):
        w, g = want[t], got[t]
        if w["action"] != g["action"] or w["reasons"] != g["reasons"]:
            bad.append(f"{name}: point {g['id']} ({g['local']}): restic "
                       f"{w['action']} {sorted(w['reasons'])}, qbak "
                       f"{g['action']} {sorted(g['reasons'])}")
    return bad


def main():
    zone, which, work = sys.argv[1:4]
    times = point_times(zone, which)
    tz = zoneinfo.ZoneInfo(zone)
    rrepo = os.path.join(work, "restic")
    qrepo = os.path.join(work, "qbak")
    disk = os.path.join(work, "disk.qcow2")
    data = os.path.join(work, "data")
    with open(data, "w") as f:
        f.write("one small file\n")
    run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "1M"])
    env = restic_env(zone, rrepo)
    run(["restic", "init", "--no-cache"], env=env)

    def restic_backup(t):
        local = datetime.datetime.fromtimestamp(t, tz)
        run(["restic", "backup", "--no-cache", "-q", "--host", "qbak",
             "--time", local.strftime("%Y-%m-%d %H:%M:%S"), data], env=env)

    # restic's backups take a shared lock: run them beside qbak's, which
    # go one after the other, oldest first.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        jobs = [pool.submit(restic_backup, t) for t in times]
        for t in times:
            qenv = dict(os.environ, QBAK_TEST_NOW=str(t))
            run([QBAK, "backup", "--tz", zone, disk, qrepo], env=qenv)
        for j in jobs:
            j.result()

    cfg = json.load(open(os.path.join(qrepo, "config")))
    if cfg.get("timezone") != zone:
        sys.exit(f"the repository's zone is {cfg.get('timezone')}, not {zone}")

    bad = []
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        wants = list(pool.map(lambda p: restic_decisions(env, p), POLICIES))
    for policy, want in zip(POLICIES, wants):
        bad += compare(" ".join(policy), want, qbak_decisions(qrepo, policy))

    # Pin the second newest point: kept as protected, and still the
    # newest of its day for keep-daily, as restic's tagged snapshot is.
    pin = times[-2]
    ids = qbak_decisions(qrepo, ["--keep-last", "1"])
    run([QBAK, "protect", qrepo, ids[pin]["id"]])
    sid = None
    for sn in json.loads(run(["restic", "snapshots", "--no-cache", "--json"],
                             env=env)):
        if int(datetime.datetime.fromisoformat(sn["time"]).timestamp()) == pin:
            sid = sn["id"]
    run(["restic", "tag", "--no-cache", "--add", "pin", sid], env=env)
    name = "protected + " + " ".join(PROTECTED_POLICY)
    bad += compare(name, restic_decisions(env, PROTECTED_POLICY, tag="pin"),
                   qbak_decisions(qrepo, PROTECTED_POLICY))

    for line in bad:
        print(line)
    print(f"{zone} {which}: {len(times)} points, {len(POLICIES) + 1} "
          f"policies, {len(bad)} differences")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
