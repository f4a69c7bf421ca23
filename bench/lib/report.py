"""Samples of every metric across rounds: min/median/max, ratios, the printed table and JSON."""

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Metric:
    """One number the harness reports, for Mailqueue and (when it has one) a peer."""

    key: str
    label: str
    unit: str
    peer: str | None = None
    # For rates higher is better; for latencies, seconds and memory lower is.
    higher_is_better: bool = True


MAILQUEUE = "mailqueue"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0-100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def fmt(value: float | None) -> str:
    """A number with about three significant digits."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


@dataclass
class Recorder:
    """Collects samples per metric and contestant, with the raw details of each sample."""

    metrics: list[Metric]
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    details: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    def add(self, key: str, contestant: str, value: float, *, round_no: int, **extra) -> None:
        """Record one sample (and whatever raw details come with it)."""
        self.samples.setdefault(key, {}).setdefault(contestant, []).append(value)
        self.details.append(
            {"metric": key, "contestant": contestant, "round": round_no, "value": value, **extra}
        )

    def error(self, what: str, *, round_no: int, message: str) -> None:
        """Record a measurement that failed (it is reported, the run goes on)."""
        self.errors.append({"what": what, "round": round_no, "error": message})

    def summary(self, key: str, contestant: str) -> dict | None:
        """min, median, max and count of one metric for one contestant."""
        values = self.samples.get(key, {}).get(contestant)
        if not values:
            return None
        return {
            "min": min(values),
            "median": statistics.median(values),
            "max": max(values),
            "n": len(values),
        }

    def ratio(self, metric: Metric) -> float | None:
        """Mailqueue's median divided by the peer's median."""
        ours = self.summary(metric.key, MAILQUEUE)
        theirs = self.summary(metric.key, metric.peer) if metric.peer else None
        if not ours or not theirs or not theirs["median"]:
            return None
        return ours["median"] / theirs["median"]

    def table(self) -> str:
        """The report as a fixed-width table, one metric a line."""

        def triple(summary: dict | None) -> str:
            if not summary:
                return "-"
            return " / ".join(fmt(summary[k]) for k in ("min", "median", "max"))

        header = (
            f"{'measure':<44} {'unit':<10} {'Mailqueue min / med / max':>27}   "
            f"{'peer':<22} {'peer min / med / max':>25}   {'ratio':>6}"
        )
        lines = [header, "-" * len(header)]
        for metric in self.metrics:
            ours = self.summary(metric.key, MAILQUEUE)
            theirs = self.summary(metric.key, metric.peer) if metric.peer else None
            if not ours and not theirs:
                continue
            ratio = self.ratio(metric)
            lines.append(
                f"{metric.label:<44} {metric.unit:<10} {triple(ours):>27}   "
                f"{metric.peer or '':<22} {triple(theirs) if metric.peer else '':>25}   "
                f"{fmt(ratio) if ratio is not None else '':>6}"
            )
        return "\n".join(lines)

    def write_json(self, path: Path, meta: dict) -> None:
        """All raw samples, their details, summaries and errors, as JSON."""
        summaries = {}
        for metric in self.metrics:
            contestants = [MAILQUEUE] + ([metric.peer] if metric.peer else [])
            summaries[metric.key] = {
                **asdict(metric),
                "summary": {name: self.summary(metric.key, name) for name in contestants},
                "ratio": self.ratio(metric),
            }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "meta": meta,
                    "metrics": summaries,
                    "samples": self.samples,
                    "details": self.details,
                    "errors": self.errors,
                },
                indent=2,
                default=str,
            )
        )
