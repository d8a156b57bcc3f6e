"""Proof-of-Learning, prover side and the replay shared with verifiers (SPEC sections 2, 3, 6).

- `recorder.Recorder`: records a transcript from an ordinary PyTorch training loop.
- `checkpoint`: the safetensors checkpoint format (no pickle) and RNG state capture/restore.
- `transcript`: `manifest.json` format, validation, segment tree and claim summary.
- `config`: the training configuration that `configHash` commits to, and rebuilding model/optimizer from it.
- `replay`: re-executing a segment and measuring ρ.
- `train`: a built-in training run with recording on; `bench`: recording overhead.
"""

from registry.pol.checkpoint import Checkpoint, TranscriptError, decode_checkpoint, read_checkpoint
from registry.pol.recorder import Recorder, RecorderError
from registry.pol.replay import SegmentDistance, check_segment, replay_segment, segment_distance
from registry.pol.transcript import TranscriptSummary, load_manifest, segment_tree

__all__ = [
    "Checkpoint",
    "Recorder",
    "RecorderError",
    "SegmentDistance",
    "TranscriptError",
    "TranscriptSummary",
    "check_segment",
    "decode_checkpoint",
    "load_manifest",
    "read_checkpoint",
    "replay_segment",
    "segment_distance",
    "segment_tree",
]
