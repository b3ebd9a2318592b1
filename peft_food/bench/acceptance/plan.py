"""The acceptance run's clock and record. Every part is a `Check` with a verdict (pass, fail or skip,
with the reason), the `Budget` decides whether the next part still fits, and the `Record` is
rewritten atomically after each part, so a run that is stopped leaves everything it had measured.
Torch-free."""

from __future__ import annotations

import json
import math
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from peft_food.errors import first_line
from peft_food.files import write_atomic

FILE = "acceptance.json"


@dataclass
class Check:
    name: str  # e.g. train/lora/bf16
    kind: str  # train, torchrun, store, compile, bench, matmul
    verdict: str = "skip"  # pass | fail | skip
    reason: str | None = None  # why skipped or failed
    seconds: float | None = None
    criteria: dict[str, bool] = field(default_factory=dict)  # each stated criterion -> met
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the traceback's tail, where the part raised


class Budget:
    """Seconds left before the run must end. A part is started only if the longest part of its kind
    so far (before any: `prior`, a guess for the device) still fits."""

    def __init__(self, seconds: float, *, started: float):
        self.seconds, self.deadline = seconds, started + seconds
        self.taken: dict[str, list[float]] = {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def estimate(self, kind: str, *, prior: float) -> float:
        return max(self.taken.get(kind, []), default=prior)

    def fits(self, kind: str, *, prior: float) -> bool:
        return self.left() >= self.estimate(kind, prior=prior)

    def spent(self, kind: str, seconds: float) -> None:
        self.taken.setdefault(kind, []).append(seconds)


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a figure is written as its name (a string), never dropped."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


class Record:
    """acceptance.json in the out dir: the run's header, every check, and the sections the benchmark
    fills (`sections`), rewritten whole after each part."""

    def __init__(self, out_dir: Path, header: dict[str, Any]):
        self.path = out_dir / FILE
        self.header, self.checks, self.sections = header, [], {}
        self.planned: list[tuple[str, str]] = []  # (name, kind) of every part, in order, before any runs
        self.current: str | None = None
        self.stopped: str | None = None
        self._lock = threading.Lock()

    def verdict(self) -> str:
        return "fail" if self.stopped or any(c.verdict == "fail" for c in self.checks) else "pass"

    def as_dict(self) -> dict[str, Any]:
        counts = {v: sum(c.verdict == v for c in self.checks) for v in ("pass", "fail", "skip")}
        return finite(
            {
                **self.header,
                "verdict": self.verdict(),
                "counts": counts,
                "stopped": self.stopped,
                "checks": [asdict(c) for c in self.checks],
                **self.sections,
            }
        )

    def write(self) -> None:
        with self._lock:
            write_atomic(self.path, (json.dumps(self.as_dict(), indent=2) + "\n").encode())


def run_part(
    record: Record,
    budget: Budget,
    *,
    name: str,
    kind: str,
    prior: float,
    part: Callable[[], tuple[dict[str, bool], dict[str, Any]]],
    skip: str | None = None,
) -> Check:
    """Run one part unless `skip` (a reason) or the budget says no; its criteria decide the verdict,
    and an exception fails it with the error's first line (the traceback's tail kept in the record)."""
    check = Check(name=name, kind=kind)
    record.checks.append(check)
    if skip is None and not budget.fits(kind, prior=prior):
        skip = (
            f"budget: {max(0.0, budget.left()):.0f} s left of {budget.seconds:.0f}, a {kind} part takes "
            f"~{budget.estimate(kind, prior=prior):.0f} s"
        )
    if skip is not None:
        check.reason = skip
        record.write()
        return check
    record.current = name
    started = time.monotonic()
    try:
        check.criteria, check.figures = part()
        failed = [what for what, met in check.criteria.items() if not met]
        check.verdict = "fail" if failed else "pass"
        check.reason = f"not met: {'; '.join(failed)}" if failed else None
    except Exception as err:  # a part that raises fails, and the next part still runs
        check.verdict, check.reason = "fail", f"{type(err).__name__}: {first_line(err)}"
        check.error = "".join(traceback.format_exception(err)[-12:])
    check.seconds = round(time.monotonic() - started, 2)
    budget.spent(kind, check.seconds)
    record.current = None
    record.write()
    return check


def watchdog(record: Record, budget: Budget, *, on_stop: Callable[[], None]) -> threading.Timer:
    """The budget as a hard stop: a part still running at the deadline (a hang, a guess far too low)
    ends the run there; the record says which part, and `on_stop` prints the table before exiting."""

    def stop() -> None:
        record.stopped = f"the budget of {budget.seconds:.0f} s ran out during {record.current or 'start-up'}"
        for check in record.checks:
            if check.name == record.current:  # unfinished: a skip for lack of time, as the ones not started
                check.reason = "budget: ran out while this part ran"
        reached = {check.name for check in record.checks}
        record.checks += [
            Check(name=name, kind=kind, reason="budget: not reached")
            for name, kind in record.planned
            if name not in reached
        ]
        record.write()
        on_stop()

    timer = threading.Timer(max(0.0, budget.left()), stop)
    timer.daemon = True
    timer.start()
    return timer
