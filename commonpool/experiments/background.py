"""Sweeps in the background: one driver thread per sweep, watched and cancelled by handle.

Like commonpool.runner for single runs: the dashboard starts a sweep and
returns at once, then polls the handle. The spec is planned (every point's
config validated) before the thread starts, so a bad spec raises SpecError in
`start` and nothing is written. Everything the thread shares with readers is
replaced whole (progress, status), never mutated in place, so readers need no lock.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from commonpool.experiments.spec import ExperimentSpec, SpecError
from commonpool.experiments.sweep import SweepProgress, SweepResult, new_sweep_id, plan, run_sweep, sweep_dir
from commonpool.runner import HandleStatus, Job, Jobs
from commonpool.store import Store

@dataclass(kw_only=True)
class SweepHandle(Job):
    """One background sweep."""

    sweep_id: str
    spec: ExperimentSpec
    store: Store
    executor: str
    workers: int | None
    runs_planned: int
    progress: SweepProgress | None = None
    result: SweepResult | None = None

    def _run(self) -> SweepResult:
        return run_sweep(self.spec, self.store, self.executor, self.workers, sweep_id=self.sweep_id,
                         progress=self._on_progress, should_stop=self._cancel.is_set)

    def _ended(self, result: SweepResult) -> tuple[HandleStatus, str | None]:
        error = f"{result.failed} of {result.total} runs failed" if result.failures else None
        return result.status, error  # type: ignore[return-value]  # completed, failed or cancelled


class SweepRunner(Jobs[SweepHandle]):
    """The sweeps this process started, by sweep id."""

    def start(self, spec: ExperimentSpec, store: Store, executor: str = "local",
              workers: int | None = None) -> SweepHandle:
        """Start spec in a background thread; the sweep id is fixed before this returns.

        A spec without a seed gets one drawn here, so the plan checked now is
        the plan that runs. Raises SpecError (nothing written) if any point's
        config is invalid.
        """
        if spec.seed is None:
            spec = spec.model_copy(update={"seed": secrets.randbelow(2**31)})
        sweep_id = new_sweep_id(spec.name)
        runs = len(plan(spec, sweep_id))
        if sweep_dir(store, sweep_id).exists():
            raise SpecError(f"sweep id: a sweep named {sweep_id!r} already exists; start it again")
        handle = SweepHandle(sweep_id=sweep_id, spec=spec, store=store, executor=executor, workers=workers,
                             runs_planned=runs)
        return self._launch(sweep_id, handle, "sweep")
