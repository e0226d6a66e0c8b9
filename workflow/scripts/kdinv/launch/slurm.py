"""What snakemake-executor-plugin-slurm is told about its jobs' states.

The plugin (2.8.0, the newest release) asks ``sacct -X --format=JobIdRaw,State`` (or ``squeue``)
for the state of every job of the run and compares each with fixed names. Two states a real
cluster reports fall through those names, and the plugin then counts the job as running forever:

- sacct writes a job cancelled by a user or an administrator as ``CANCELLED by <uid>``;
- a preempted job reads ``PREEMPTED``, which the plugin always counts as running. That is right
  where the site requeues preempted jobs (the job runs again under its job id, and sacct shows
  PREEMPTED until it has started again) and hangs the run where the site cancels them
  (PreemptMode=CANCEL, or a job that may not be requeued): the state stays PREEMPTED.

Other jobs a run would wait on forever, because the plugin counts every state it does not know
as running and every PENDING reason as waiting (:class:`StateFix`): a job held (``scontrol
hold``, a launch failure requeued held), waiting for nodes down or drained, REVOKED, pending for
a request the cluster can never grant (``PartitionTimeLimit`` and the like, which SLURM accepts
with ``EnforcePartLimits=NO``), or, with the squeue status command, listed once and then gone.

:func:`install` imports the plugin and wraps its status query so that the plugin sees the first
word of each state (``CANCELLED by 0`` -> ``CANCELLED``, a failure it resubmits with the
profile's retries), a PREEMPTED job as failed (``CANCELLED``) once squeue shows that it was not
requeued (squeue still lists it as PREEMPTED, or no longer lists it at all; a preempted job that
squeue shows pending or running again stays PREEMPTED, left to SLURM), and the jobs above as
failed (cancelled first if still queued), at once or after ``job_resources.stuck_minutes``, with
an error naming the SLURM job, the rule and the reason. It also wraps the executor's status loop
(``Executor.check_active_jobs``) to learn which rule each SLURM job runs.

It checks that the status loop resolves the wrapped function and that the plugin, its jobstep
and the executor interface are the versions it was tested with (TESTED, pinned in
requirements.txt); the workflow (rules/cluster.smk) stops a SLURM run before its first
submission, naming the versions, where either does not hold. The wrapper changes only the
states the plugin reads, in the Snakemake process that submits the jobs.
"""

from __future__ import annotations

import importlib
import subprocess
import time

PLUGIN = "snakemake_executor_plugin_slurm"
PREEMPTED = "PREEMPTED"
# what the plugin is told about a preempted job that SLURM did not requeue: one of its failure
# states, so that Snakemake resubmits the job (and the job resumes from its resume state)
NOT_REQUEUED = "CANCELLED"


def first_word(states: dict[str, str]) -> dict[str, str]:
    """``{job id: state}`` with every state cut to its first word (``CANCELLED by 0`` -> ``CANCELLED``)."""
    return {job: (state.split() or [state])[0] for job, state in states.items()}


def _squeue(job_ids: list[str], fields: str, timeout: float) -> list[list[str]] | None:
    """squeue's rows (``fields``, e.g. ``%i|%T``, split at ``|`` and stripped) for these job ids, of
    the jobs it still knows; None when squeue cannot be asked."""
    try:
        proc = subprocess.run(
            ["squeue", "--noheader", "--states=all", f"--format={fields}", "--jobs", ",".join(job_ids)],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        # every id unknown (purged after MinJobAge): squeue says so and exits 1
        return [] if "Invalid job id" in proc.stderr else None
    width = fields.count("|") + 1
    rows = [(line.strip().split("|", width - 1) + [""] * width)[:width] for line in proc.stdout.splitlines()]
    return [[part.strip() for part in row] for row in rows if row[0].strip()]


def squeue_states(job_ids: list[str], timeout: float = 30.0) -> dict[str, str] | None:
    """The states squeue shows now for these job ids (jobs it no longer knows are absent), or None
    when squeue cannot be asked."""
    rows = _squeue(job_ids, "%i|%T", timeout)
    return None if rows is None else {job: state for job, state in rows}


def resolve_preempted(states: dict[str, str], now: dict[str, str] | None) -> dict[str, str]:
    """``states`` with each PREEMPTED job that SLURM did not requeue turned into NOT_REQUEUED.

    ``now``: what squeue shows for the preempted jobs (see :func:`squeue_states`); None when it
    could not be asked, which leaves every state as it is until the next status check.
    """
    if now is None:
        return dict(states)
    out = dict(states)
    for job, state in states.items():
        if state == PREEMPTED and now.get(job, PREEMPTED).split()[0] == PREEMPTED:
            out[job] = NOT_REQUEUED
    return out


def normalise(
    states: dict[str, str], logger=None, ask_squeue=squeue_states, ended: set[str] | None = None
) -> dict[str, str]:
    """The states the plugin should see for ``states`` as sacct or squeue printed them.

    ``ended``: the preempted jobs already found not requeued (sacct keeps listing them as
    PREEMPTED); updated in place, so that squeue is asked, and the warning logged, once per job.
    """
    states = first_word(states)
    ended = set() if ended is None else ended
    preempted = [job for job, state in states.items() if state == PREEMPTED and job not in ended]
    out = resolve_preempted(states, ask_squeue(preempted)) if preempted else dict(states)
    new = [job for job in preempted if out[job] != PREEMPTED]
    if new and logger is not None:
        logger.warning(
            f"SLURM job(s) {', '.join(new)} were preempted and not requeued: reported as "
            f"{NOT_REQUEUED}, so that Snakemake resubmits them (they continue from their resume state)"
        )
    ended.update(new)
    for job, state in states.items():
        if state == PREEMPTED and job in ended:
            out[job] = NOT_REQUEUED
    return out


# --- jobs that would wait forever ---------------------------------------------------------------

# PENDING reasons of a request that the cluster can never grant as it is configured: the job is
# reported failed at once (squeue's %r; SLURM's job reason codes).
NEVER = {
    "PartitionTimeLimit", "PartitionNodeLimit", "PartitionConfig", "BadConstraints",
    "QOSMaxWallDurationPerJobLimit", "AssocMaxWallDurationPerJobLimit",
    "QOSMaxNodePerJobLimit", "AssocMaxNodesPerJobLimit", "QOSMaxCpuPerJobLimit",
    "AssocMaxCpuPerJobLimit", "QOSMaxMemoryPerJob", "QOSMaxGRESPerJob", "QOSMaxTRESPerJob",
    "AssocMaxTRESPerJob", "InvalidAccount", "InvalidQOS", "AccountNotAllowed", "QOSNotAllowed",
    "DependencyNeverSatisfied", "FrontEndDown",
}
# reasons (prefixes) that may clear by someone's action: a hold (scontrol hold/uhold/requeuehold,
# a launch failure SLURM requeued held), nodes down, drained or reserved, a partition down or
# inactive. The job is reported failed once it has waited for one of them for the grace period.
MAYBE = (
    "JobHeldAdmin", "JobHeldUser", "launch failed requeued held", "job requeued in held state",
    "ReqNodeNotAvail", "NodeDown", "PartitionDown", "PartitionInactive",
)
# states (sacct and squeue) of a held job; REVOKED: the job is gone (a federation's sibling)
HELD_STATES = {"REQUEUE_HOLD", "SPECIAL_EXIT"}
WAITING_STATES = {"PENDING", "REQUEUED", *HELD_STATES}
GONE_STATES = {"REVOKED"}
# what the plugin is told about a job reported failed here (one of its failure states)
REPORTED_FAILED = "CANCELLED"


def classify(state: str, reason: str) -> str:
    """``"never"``, ``"maybe"`` or ``"wait"`` for a job's state and squeue reason (``%r``)."""
    if state in GONE_STATES:
        return "never"
    reason = reason.strip()
    if reason.split(",")[0].strip() in NEVER:
        return "never"
    if state in HELD_STATES or reason.startswith(MAYBE):
        return "maybe"
    return "wait"


def squeue_reasons(job_ids: list[str], timeout: float = 30.0) -> dict[str, tuple[str, str]] | None:
    """``{job id: (state, reason)}`` that squeue shows now for these jobs (absent: unknown to it),
    or None when squeue cannot be asked."""
    rows = _squeue(job_ids, "%i|%T|%r", timeout)
    return None if rows is None else {job: (state, reason) for job, state, reason in rows}


def scancel(job: str, timeout: float = 30.0) -> None:
    """Cancel a job reported failed, so that it cannot start beside its retry later."""
    try:
        subprocess.run(["scancel", job], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass


class StateFix:
    """What the plugin is told about the jobs of one run, kept across its status checks.

    - ``CANCELLED by <uid>`` -> CANCELLED; PREEMPTED and not requeued -> CANCELLED (see above);
    - REVOKED, or PENDING for a reason in NEVER: reported failed at once;
    - held (HELD_STATES, or a reason in MAYBE): reported failed after ``grace_seconds``;
    - with the squeue status command, a job the executor still waits for that squeue listed
      before and no longer lists (purged after MinJobAge: its end is unknown): reported failed.

    A job reported failed while it is still in the queue is cancelled (scancel) first, and the
    log names the SLURM job, the Snakemake rule and wildcards, and the reason.
    """

    def __init__(self, grace_seconds: float = 1800.0, logger=None, ask_squeue=squeue_states,
                 ask_reasons=squeue_reasons, cancel=scancel, clock=time.monotonic):
        self.grace_seconds = grace_seconds
        self.logger = logger
        self.ask_squeue, self.ask_reasons, self.cancel, self.clock = ask_squeue, ask_reasons, cancel, clock
        self.ended: set[str] = set()  # preempted, not requeued
        self.waiting_since: dict[str, float] = {}  # jobs held (or alike), since when
        self.described: dict[str, str] = {}  # SLURM job id -> "rule <name> (<wildcards>)"
        self.active: set[str] | None = None  # the jobs the executor waits for (None: unknown)
        self.listed: dict[str, str] = {}  # jobs the squeue status command listed, last state
        self.failed: dict[str, str] = {}  # jobs reported failed here -> why

    def describe(self, job: str) -> str:
        return f"SLURM job {job} ({self.described.get(job, 'rule unknown')})"

    def report(self, job: str, why: str) -> None:
        self.failed[job] = why
        if self.logger is not None:
            self.logger.error(f"{self.describe(job)}: {why}")

    def __call__(self, states: dict[str, str], command: str = "") -> dict[str, str]:
        out = normalise(states, self.logger, ask_squeue=self.ask_squeue, ended=self.ended)
        for job in self.failed:  # sacct keeps listing a cancelled held job as PENDING a while
            if job in out:
                out[job] = REPORTED_FAILED
        self._stuck(out)
        if command.split()[:1] == ["squeue"]:
            self._vanished(out)
        return out

    def _stuck(self, out: dict[str, str]) -> None:
        for job, state in out.items():
            if state in GONE_STATES and job not in self.failed:
                self.report(job, f"SLURM state {state}: it will not run; reported failed")
                out[job] = REPORTED_FAILED
        waiting = sorted(j for j, s in out.items() if s in WAITING_STATES and j not in self.failed)
        if self.active is not None:
            waiting = [j for j in waiting if j in self.active]
            # jobs the status command does not list: sacct lists no job that was never eligible
            # to start, such as one held since its submission; squeue does
            waiting += sorted(self.active - set(out) - set(self.failed))
        for job in list(self.waiting_since):
            if job not in waiting:
                del self.waiting_since[job]
        if not waiting:
            return
        reasons = self.ask_reasons(waiting)
        if reasons is None:
            return
        now = self.clock()
        for job in waiting:
            if job not in reasons and job not in out:
                continue  # not known to squeue either (not yet, or no longer)
            state, reason = reasons.get(job, (out.get(job, ""), ""))
            kind = classify(state, reason)
            what = f"{state} ({reason})" if reason else state
            if kind == "wait":
                self.waiting_since.pop(job, None)
                continue
            if kind == "maybe":
                since = self.waiting_since.setdefault(job, now)
                if now - since < self.grace_seconds:
                    continue
                why = (f"{what} for {(now - since) / 60:.1f} min (grace: job_resources.stuck_minutes); "
                       "cancelled and reported failed")
            else:
                why = f"{what}: the cluster will never start it as requested; cancelled and reported failed"
            self.cancel(job)
            self.report(job, why)
            out[job] = REPORTED_FAILED
            self.waiting_since.pop(job, None)

    def _vanished(self, out: dict[str, str]) -> None:
        for job, state in list(self.listed.items()):
            if job in out or job in self.failed or (self.active is not None and job not in self.active):
                continue
            self.report(
                job,
                f"squeue listed it ({state}) and no longer does (purged after the cluster's MinJobAge): "
                "how it ended is unknown; reported failed, so that Snakemake reruns it",
            )
            out[job] = REPORTED_FAILED
        self.listed = {job: state for job, state in out.items() if job not in self.failed}


def describe_job(job) -> str:
    """``rule <name> (<wildcards>)`` of a Snakemake job, ``group <id> (rules ...)`` of a group job."""
    try:
        if job.is_group():
            names = sorted({j.name for j in job.jobs})
            return f"group {job.groupid}: rules {', '.join(names)}"
        wildcards = ", ".join(f"{k}={v}" for k, v in dict(job.wildcards_dict).items())
        return f"rule {job.name}" + (f", {wildcards}" if wildcards else "")
    except Exception:  # noqa: BLE001 - a description only: never let it break the status loop
        return f"rule {getattr(job, 'name', 'unknown')}"


# --- installing the fix into the plugin ---------------------------------------------------------

# The versions whose code this fix was read against and run with on the local cluster
# (tests/slurm); requirements.txt pins them. Any other version stops a SLURM run before its
# first submission, naming the versions.
TESTED = {
    "snakemake-executor-plugin-slurm": ("2.8.0",),
    "snakemake-executor-plugin-slurm-jobstep": ("0.6.1",),
    "snakemake-interface-executor-plugins": ("9.4.0",),
}


class NotInForce(RuntimeError):
    """The fix cannot be put in force in this installation."""


def installed_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in TESTED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def version_problems(versions: dict[str, str | None]) -> list[str]:
    return [
        f"{name} {versions.get(name) or 'not installed'} (tested: {', '.join(tested)})"
        for name, tested in TESTED.items() if versions.get(name) not in tested
    ]


def _versions_text(versions: dict[str, str | None]) -> str:
    return ", ".join(f"{name} {v or 'not installed'}" for name, v in versions.items())


def install(grace_seconds: float = 1800.0, logger=None, plugin=None, versions=None) -> StateFix:
    """Wrap the SLURM executor plugin's status query (importing the plugin), and check that the
    executor's status loop calls the wrapper and that the versions are those tested (TESTED).
    Raises NotInForce, naming the versions, when any of it does not hold. Calling it again
    updates the grace and logger of the fix in force and returns it."""
    versions = installed_versions() if versions is None else versions
    if plugin is None:
        try:
            plugin = importlib.import_module(PLUGIN)
        except ImportError as e:
            raise NotInForce(f"{PLUGIN} cannot be imported ({e}); installed: {_versions_text(versions)}")
    problems = version_problems(versions)
    if problems:
        raise NotInForce(
            "the workflow's fix of SLURM job states (kdinv/launch/slurm.py) was tested with other versions: "
            + "; ".join(problems)
            + ". Install the versions of requirements.txt (pip install -r requirements.txt)"
        )
    current = getattr(plugin, "query_job_status", None)
    executor = getattr(plugin, "Executor", None)
    check = getattr(executor, "check_active_jobs", None)
    if current is None or check is None:
        raise NotInForce(
            f"{PLUGIN} has no query_job_status or Executor.check_active_jobs: the workflow's fix of "
            f"SLURM job states does not fit it ({_versions_text(versions)})"
        )
    fix = getattr(current, "kdinv_fix", None)
    if fix is None:
        fix = StateFix(grace_seconds, logger)
        original = current

        async def query_job_status(command, logger):
            states, duration = await original(command, logger)
            if states is not None:
                fix.logger = fix.logger or logger
                states = fix(states, command)
            return states, duration

        query_job_status.kdinv_fix = fix
        plugin.query_job_status = query_job_status
        loop = check

        async def check_active_jobs(self, active_jobs):
            fix.active = {j.external_jobid for j in active_jobs}
            for j in active_jobs:
                if j.external_jobid not in fix.described:
                    fix.described[j.external_jobid] = describe_job(j.job)
            async for j in loop(self, active_jobs):
                yield j

        check_active_jobs.kdinv_loop = loop
        executor.check_active_jobs = check_active_jobs
    fix.grace_seconds = grace_seconds
    fix.logger = logger if logger is not None else fix.logger
    verify(plugin, versions)
    return fix


def verify(plugin, versions=None) -> None:
    """Raise NotInForce unless the executor's status loop resolves query_job_status to the fix:
    it must call it by that global name of the plugin's module."""
    versions = installed_versions() if versions is None else versions
    check = plugin.Executor.check_active_jobs
    loop = getattr(check, "kdinv_loop", None)
    code = getattr(loop, "__code__", None)
    resolved = getattr(loop, "__globals__", {}).get("query_job_status")
    if (
        code is None
        or "query_job_status" not in code.co_names
        or getattr(resolved, "kdinv_fix", None) is None
    ):
        raise NotInForce(
            f"{PLUGIN}'s status loop (Executor.check_active_jobs) does not call the workflow's fix of "
            f"SLURM job states ({_versions_text(versions)}): a run could wait forever on a cancelled, "
            "preempted or held job. Install the versions of requirements.txt"
        )


# --- first-day checks of a SLURM run ------------------------------------------------------------

# default-resources key by which a profile says that the cluster's default partition has GPUs
GPUS_IN_DEFAULT_PARTITION = "gpus_in_default_partition"


def wants_gpu(resources) -> bool:
    """Whether a job's resources ask SLURM for a GPU (gpu: --gpus; gres gpu:/shard:)."""
    try:
        gpus = int(resources.get("gpu", 0) or 0)
    except (TypeError, ValueError):
        gpus = 1
    gres = str(resources.get("gres", "") or "")
    return gpus > 0 or any(part.split(":")[0] in ("gpu", "shard") for part in gres.split(",") if part)


def gpu_jobs_without_partition(jobs) -> list[str]:
    """``"<rule> (<n> jobs)"`` for each rule of which jobs ask for a GPU and name no
    slurm_partition, unless their resources say that the default partition has GPUs
    (profiles/slurm default-resources)."""
    refused: dict[str, int] = {}
    for job in jobs:
        resources = job.resources
        if not wants_gpu(resources) or resources.get("slurm_partition"):
            continue
        if int(resources.get(GPUS_IN_DEFAULT_PARTITION, 0) or 0):
            continue
        refused[job.name] = refused.get(job.name, 0) + 1
    return [f"{rule} ({n} job{'s' if n > 1 else ''})" for rule, n in sorted(refused.items())]


# --- inside a SLURM job: the early SIGTERM must reach the script ----------------------------------


def forward_signal(sig: int, pid: int | None = None) -> list[int]:
    """Send ``sig`` to the direct children of process ``pid`` (this one by default); returns
    their pids. With the job shell's ``exec`` (rules/cluster.smk) a child is the script itself."""
    import psutil

    sent = []
    for child in psutil.Process(pid).children():
        try:
            child.send_signal(sig)
            sent.append(child.pid)
        except psutil.Error:
            pass
    return sent


def forward_sigterm_to_jobs() -> bool:
    """Make the Snakemake that runs a SLURM job pass SIGTERM on to the scripts it runs.

    SLURM sends a step's SIGTERM (``--signal``, ``scancel``, a preemption) to the step's task
    only, that Snakemake, where the cluster tracks processes with proctrack/cgroup, the usual
    choice: its plugin signals "only slurm tasks unless signal is SIGKILL". The script, a child,
    would never see it, save nothing, and be killed at the limit. Snakemake's scheduler takes
    SIGTERM as a request to stop after the running job (``JobScheduler.exit_gracefully``, bound
    with ``signal.signal`` when the scheduler is created, after the workflow is read); the
    wrapper installed here first forwards the signal to this process's children. Where SLURM
    signals every process of the step (proctrack/linuxproc) the script gets it twice, which its
    handler (a flag) does not mind. Returns whether the wrapper is in place."""
    import signal

    try:
        from snakemake.scheduling import job_scheduler
    except ImportError:
        return False
    cls = getattr(job_scheduler, "JobScheduler", None)
    original = getattr(cls, "exit_gracefully", None)
    if original is None:
        return False
    if getattr(original, "kdinv_forwards", False):
        return True

    def exit_gracefully(self, *args):
        forward_signal(signal.SIGTERM)
        return original(self, *args)

    exit_gracefully.kdinv_forwards = True
    cls.exit_gracefully = exit_gracefully
    return True
