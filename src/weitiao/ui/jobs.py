"""The UI's jobs: `weitiao train`, `export` and `serve`, each in a process of its own.

A job is the same command a user would type, started in its own session (`start_new_session`), so closing the
browser or restarting the UI loses no run: the process goes on, and the run folder it writes is what the Runs page
reads (a run started from the CLI shows up the same way). The UI keeps one small record per job under
`ROOT/.weitiao-ui/jobs/` (the command, its pid, its log file), so that a restarted UI can still show a job's log
and stop it. Stop sends SIGINT, which `weitiao train` turns into a checkpoint (training.callbacks.SaveOnInterrupt);
resume runs the same command with `--resume`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Job:
    id: str
    kind: str  # train, export, serve
    args: list[str]  # after `python -m weitiao`
    target: str  # the run folder (train, export, serve) the job is about
    pid: int
    log: str  # the file that holds the process's stdout and stderr
    started: float
    url: str | None = None  # serve: where the server answers

    def as_dict(self) -> dict:
        return asdict(self)


class Jobs:
    """Start, find and stop the jobs of one UI root. One lock: a double-clicked launch starts one job."""

    def __init__(self, root: Path):
        self.folder = root / ".weitiao-ui" / "jobs"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.processes: dict[str, subprocess.Popen] = {}  # the jobs this UI process started (reaped by poll)

    def start(self, kind: str, args: list[str], target: str, url: str | None = None) -> tuple[Job, bool]:
        """(job, started): a job of the same kind on the same target that is still running is returned instead of
        starting a second one."""
        with self.lock:
            for job in self.all():
                if job.kind == kind and job.target == target and self.running(job):
                    return job, False
            job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
            log = self.folder / f"{job_id}.log"
            with open(log, "wb") as out:
                process = subprocess.Popen([sys.executable, "-m", "weitiao", *args], stdout=out,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            job = Job(job_id, kind, args, target, process.pid, str(log), time.time(), url)
            self.processes[job_id] = process
            (self.folder / f"{job_id}.json").write_text(json.dumps(job.as_dict(), ensure_ascii=False),
                                                        encoding="utf-8")
            return job, True

    def all(self) -> list[Job]:
        jobs = []
        for path in sorted(self.folder.glob("*.json"), reverse=True):
            try:
                jobs.append(Job(**json.loads(path.read_text(encoding="utf-8"))))
            except (json.JSONDecodeError, TypeError):
                continue  # a record being written, or from another version: not one of ours to show
        return jobs

    def for_target(self, target: str) -> list[Job]:
        return [job for job in self.all() if job.target == target]

    def running(self, job: Job) -> bool:
        process = self.processes.get(job.id)
        if process is not None:
            return process.poll() is None
        try:  # a job an earlier UI process started: alive while its pid is, and not a zombie left unreaped
            os.kill(job.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        try:
            return Path(f"/proc/{job.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return True  # no /proc (macOS): the pid answers

    def exit_code(self, job: Job) -> int | None:
        process = self.processes.get(job.id)
        return process.poll() if process is not None else None

    def stop(self, job: Job) -> bool:
        """SIGINT to the job's process group: training saves a checkpoint and stops; a server shuts down."""
        if not self.running(job):
            return False
        os.killpg(job.pid, signal.SIGINT)
        return True

    @staticmethod
    def log_tail(job: Job, chars: int = 6000) -> str:
        try:
            text = Path(job.log).read_bytes()[-chars:].decode("utf-8", "replace")
        except OSError:
            return ""
        # progress bars redraw with carriage returns: keep the last state of each line
        return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines())
