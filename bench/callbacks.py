"""Hydra callbacks of `python -m bench run` (bench/conf/config.yaml `hydra.callbacks`)."""
from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback

from bench.results import write_leaderboard

log = logging.getLogger(__name__)


class LeaderboardCallback(Callback):
    """Regenerates <paths.results>/leaderboard.csv after a run or a sweep; after a sweep also the
    whole report (bench.report: tables, figures, grids, report.html) into the same directory."""

    def on_run_end(self, config, **kwargs) -> None:
        write_leaderboard(Path(config.paths.results))

    def on_multirun_end(self, config, **kwargs) -> None:
        # the report writes the leaderboard too; alone only when the report fails
        if not write_report(Path(config.paths.results)):
            write_leaderboard(Path(config.paths.results))


def write_report(results_dir: Path) -> bool:
    """`python -m bench report RESULTS_DIR` after a sweep; a failure is one warning line (and
    False), since the sweep's results are already safe on disk and the report can be regenerated
    from them."""
    try:
        from bench.report import report
        report(results_dir)
        return True
    except Exception as e:  # noqa: BLE001  (never lose a finished sweep to a plotting error)
        log.warning("report for %s not written: %s: %s", results_dir, type(e).__name__, " ".join(str(e).split())[:300])
        return False
