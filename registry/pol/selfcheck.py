"""The recorder checks itself: before a transcript is finished, segments are replayed with the verifier's own
replay code, so a loop that does something the config does not say (another loss, gradient clipping,
autocast, random numbers drawn outside the committed generators) fails at record time with a reason, instead
of recording silently and being judged Invalid later."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from registry.pol.config import rebuild_model
from registry.pol.replay import (
    load_segment_checkpoint,
    replay_segment_state,
    segment_distance,
    state_distances,
)
from registry.spec.datasets import Dataset

#: The largest reproduction error a self-check accepts, for the weights (ρ) and every other state group:
#: the δ and δ_state of the default tolerance policy (pol-tolerance/1). Replay on the recording machine and
#: device is normally exact (ρ = 0).
SELF_CHECK_THRESHOLD = 1e-3

LIKELY_CAUSES = ("a loss other than the declared one (Recorder loss=)", "gradient clipping",
                 "torch.autocast or another precision", "random numbers drawn outside the model's forward",
                 "an extra forward or backward that changed the gradients")


def self_check_segments(manifest: dict[str, Any]) -> list[int]:
    """The segments the recorder replays before it finishes: the first, the last, and one in between drawn
    from the chain head (a digest of every checkpoint, so the loop cannot aim at a segment it knows is left
    out)."""
    n = int(manifest["numSegments"])
    picked = {0, n - 1}
    if n > 2:
        head = bytes.fromhex(str(manifest["chainHead"]).removeprefix("0x"))
        picked.add(1 + int.from_bytes(head[:8], "big") % (n - 2))
    return sorted(picked)


def check_segments(transcript_dir: str | Path, dataset: Dataset, segments: Sequence[int], *,
                   manifest: dict[str, Any], device: torch.device | str = "cpu") -> str | None:
    """None when every segment in `segments` replays onto its next checkpoint; otherwise one line that names
    the segment, the state that diverged and the likely causes."""
    model = rebuild_model(manifest["config"], device)  # one build, re-used by every replay below
    names = [n for n, _ in model.named_parameters()]
    for index in segments:
        start = load_segment_checkpoint(transcript_dir, manifest, index)
        end = load_segment_checkpoint(transcript_dir, manifest, index + 1)
        replayed, optim = replay_segment_state(transcript_dir, index, dataset, device=device, manifest=manifest,
                                               checkpoint=start, model=model)
        replayed = {k: v.cpu() for k, v in replayed.items()}
        rho = segment_distance(replayed, end.model, start.model, names).rho
        groups = [("weights", rho, None)] + [
            (s.name, s.distance, s.error or s.worst)
            for s in state_distances(replayed, optim, start, end, manifest["config"], SELF_CHECK_THRESHOLD)
            if not s.passed]
        bad = [(g, d, w) for g, d, w in groups if not (math.isfinite(d) and d <= SELF_CHECK_THRESHOLD)]
        if bad:
            group, dist, worst = max(bad, key=lambda b: b[1] if math.isfinite(b[1]) else math.inf)
            where = f" ({worst})" if worst else ""
            return (f"the recorded run does not replay: segment {index} diverges in {group}{where}, distance "
                    f"{dist:.3g} > {SELF_CHECK_THRESHOLD:g}; the loop likely does something the config does not "
                    f"declare: {'; '.join(LIKELY_CAUSES)}")
    return None
