"""Replays in threads of one process (the daemon's audit workers, the main job's in-process verifier nodes)
share torch's process-wide generators: each must still replay its own dropout masks exactly."""

from __future__ import annotations

import threading
from pathlib import Path

from registry.pol.replay import check_segment
from registry.pol.train import train
from registry.spec.datasets import Dataset


def test_concurrent_replays_of_a_dropout_run_reproduce_exactly(tmp_path: Path) -> None:
    run = train(tmp_path, epochs=1, steps_per_segment=10, seed=3, max_steps=40)  # MLP with dropout 0.1
    dataset = Dataset.load(run.dataset_dir)
    rhos: list[float] = []
    errors: list[BaseException] = []

    def replay_all() -> None:
        try:
            for _ in range(3):
                for s in range(run.summary.num_segments):
                    rhos.append(check_segment(run.transcript_dir, s, dataset).rho)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=replay_all) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(rhos) == 3 * 3 * run.summary.num_segments
    assert max(rhos) == 0.0, f"a concurrent replay diverged: max rho {max(rhos)}"
