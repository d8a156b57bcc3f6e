"""`proofreg-verifier check` and `proofreg-verifier calibrate`: the engine without a chain.

`check TRANSCRIPT` runs the audit a committee member runs (same engine, same policy) on a local transcript
directory or a transcript CID, with the manifest's own digests standing in for the on-chain claim, and writes
the report JSON plus a PNG of per-segment ρ against δ. Exit status: 0 Valid, 3 Invalid, 4 Unavailable;
1 for errors (one line on stderr), 2 for usage errors (click's).

`calibrate` replays honest transcripts on this machine and prints the ρ distribution and each shipped
policy's false-reject / false-accept rates (`verifier.calibrate`).
"""

from __future__ import annotations

import json
import math
import secrets
import sys
import tempfile
from pathlib import Path

import click

from registry.cli.common import CliError, emit, handle_errors, json_option, progress_bar, with_store_options
from registry.core.params import preset

EXIT_CODE = {"Valid": 0, "Invalid": 3, "Unavailable": 4}


def _seed(text: str | None) -> bytes:
    if text is None:
        return secrets.token_bytes(32)
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise CliError(f"--seed must be 32 bytes of hex, got {text!r}") from None
    if len(raw) != 32:
        raise CliError(f"--seed must be 32 bytes of hex, got {len(raw)} bytes")
    return raw


@click.command()
@click.argument("transcript")
@click.option("--segment", "segments", type=click.IntRange(min=0), multiple=True,
              help="Audit this segment (repeatable).")
@click.option("--all", "all_segments", is_flag=True, help="Audit every segment.")
@click.option("--samples", type=click.IntRange(min=0), default=None,
              help="Segments drawn from --seed by the contract's rule (default: the default preset's S=8; "
                   "0 when --segment or --all is given).")
@click.option("--seed", "seed_hex", default=None, help="32-byte hex challenge seed (default: random).")
@click.option("--policy", "policy_name", default=None, help="Tolerance policy (default pol-tolerance/1).")
@click.option("--threshold", type=click.FloatRange(min=0), default=None, help="Override the policy's δ.")
@click.option("--top-q", type=click.IntRange(min=0), default=None,
              help="Override the policy's Q (largest-update segments audited per epoch).")
@click.option("--top-q-from-checkpoints", is_flag=True,
              help="Recompute every update norm from all checkpoints before choosing top-Q (fetches them all).")
@click.option("--extra-samples", type=click.IntRange(min=0), default=None,
              help="Override the policy's extra draws.")
@click.option("--no-init-check", is_flag=True, help="Skip the initialization check of checkpoint 0.")
@click.option("--dataset", "dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Local dataset folder (default: ../dataset beside a local transcript, else the "
                                 "manifest's dataset CID in the store).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--no-prefetch", is_flag=True, help="Fetch each segment only when its turn comes.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("proofreg-check.json"), show_default=True, help="Report JSON to write.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG of per-segment ρ against δ (default: the report path with .png).")
@with_store_options
@json_option
@handle_errors
def check(transcript: str, segments: tuple[int, ...], all_segments: bool, samples: int | None, seed_hex: str | None,
          policy_name: str | None, threshold: float | None, top_q: int | None, top_q_from_checkpoints: bool,
          extra_samples: int | None,
          no_init_check: bool, dataset_dir: Path | None, device: str, no_prefetch: bool, report_path: Path,
          plot_path: Path | None, ipfs: str | None, store_dir: Path | None, as_json: bool) -> None:
    """Verify a transcript (local directory or CID) without a chain; write a report JSON and a PNG plot."""
    from registry.cli.common import open_store
    from verifier.engine import DirSource, Engine, Source, StoreSource
    from verifier.policy import PolicyError, get_policy
    from verifier.report import plot_report

    try:
        policy = get_policy(policy_name).with_overrides(threshold=threshold, top_q=top_q,
                                                        extra_samples=extra_samples,
                                                        init_check=False if no_init_check else None,
                                                        top_q_from_checkpoints=top_q_from_checkpoints or None)
    except PolicyError as exc:
        raise CliError(str(exc)) from None
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CliError(f"--device {device}: no CUDA device is available here (use --device cpu or auto)")
    seed = _seed(seed_hex)
    draw = samples if samples is not None else (0 if segments or all_segments else preset("default").samples)
    local = Path(transcript)
    source: Source
    store = None
    dataset_source: Source | None = None
    if local.is_dir():
        _check_manifest_syntax(local)
        source = DirSource(local)
        ddir = dataset_dir or (local.parent / "dataset" if (local.parent / "dataset").is_dir() else None)
        if ddir is not None:
            dataset_source = DirSource(ddir)
        else:
            store = open_store(ipfs, store_dir)
    elif local.exists() or "/" in transcript:
        raise CliError(f"{transcript} is neither a transcript directory nor a CID")
    else:
        store = open_store(ipfs, store_dir)
        source = StoreSource(store, transcript)
        if dataset_dir is not None:
            dataset_source = DirSource(dataset_dir)
    for path in (report_path, plot_path):
        if path is not None and not path.parent.exists():
            raise CliError(f"cannot write {path}: {path.parent} does not exist")
    with progress_bar("replaying segments", not as_json) as update, \
            tempfile.TemporaryDirectory() as tmp:
        count = {"n": 0}

        def step(_result: object) -> None:
            count["n"] += 1
            update(count["n"], max(count["n"], len(segments) + draw))

        engine = Engine(source, None, list(segments), policy=policy, dataset_source=dataset_source, store=store,
                        device=device, workdir=Path(tmp), seed=seed, draw=draw, prefetch=not no_prefetch,
                        all_segments=all_segments, on_segment=step)
        report = engine.run()
    report.write(report_path)
    plot = plot_report(report, plot_path or report_path.with_suffix(".png"),
                       title=f"{transcript[-60:]}: {report.verdict}")
    # the report's own rule (`SegmentResult.to_json`): an infinite ρ is null there and named in the reason
    rhos = [s.rho for s in report.segments if s.rho is not None and math.isfinite(s.rho)]
    summary = {"verdict": report.verdict, "reason": report.reason, "policy": policy.name,
               "threshold": policy.threshold, "segments": [s.index for s in report.segments],
               "maxRho": max(rhos) if rhos else None, "init": report.init["method"] if report.init else None,
               "membershipProofs": report.checks.get("membershipProofs"),
               "bytesFetched": report.bytes_fetched, "datasetBytesFetched": report.dataset_bytes_fetched,
               "seconds": round(report.seconds, 3), "report": str(report_path), "plot": str(plot)}
    emit(summary, as_json)
    sys.exit(EXIT_CODE[report.verdict])


def _check_manifest_syntax(tdir: Path) -> None:
    """A local directory is the user's input: a missing or unparsable manifest is an input error (one line,
    exit 1: file, position, what was expected), not a verdict. A manifest that parses but breaks a protocol
    rule is judged like any other evidence (Invalid, exit 3)."""
    path = tdir / "manifest.json"
    try:
        json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CliError(f"{tdir} is not a transcript directory: no manifest.json") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: byte {exc.start}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: line {exc.lineno} column {exc.colno}: not valid JSON: {exc.msg}") from None


@click.command()
@click.argument("transcripts", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dataset", "dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Dataset folder of the transcripts (default: ../dataset beside each).")
@click.option("--train", "train_count", type=click.IntRange(min=0), default=0,
              help="Also train this many honest runs here (MLP on digits, seeds 0..N-1) and calibrate on them.")
@click.option("--max-steps", type=click.IntRange(min=1), default=60, show_default=True,
              help="Steps of each run trained by --train.")
@click.option("-k", "--steps-per-segment", "k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--mix", is_flag=True, help="With --train: every fourth run a BatchNorm ResNet-20 with Adam.")
@click.option("--threads", default="", help="Comma-separated CPU thread counts to replay at (default: current).")
@click.option("--max-segments", type=click.IntRange(min=1), default=None, help="Segments per transcript.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda[:N] or auto.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the full result JSON here (and a PNG beside it).")
@json_option
@handle_errors
def calibrate(transcripts: tuple[Path, ...], dataset_dir: Path | None, train_count: int, max_steps: int, k: int,
              mix: bool, threads: str, max_segments: int | None, device: str, out_path: Path | None,
              as_json: bool) -> None:
    """Replay honest transcripts on this hardware: ρ distribution and each policy's false-reject/accept rates."""
    from registry.pol.checkpoint import TranscriptError
    from registry.spec.datasets import DatasetError
    from verifier.calibrate import Run, plot_calibration, train_runs
    from verifier.calibrate import calibrate as run_calibration

    if not transcripts and not train_count:
        raise CliError("give transcript directories to calibrate on, or --train N to train honest runs here")
    try:
        thread_counts = [int(t) for t in threads.split(",") if t.strip()]
    except ValueError:
        raise CliError(f"--threads must be comma-separated integers, got {threads!r}") from None
    if any(t < 1 for t in thread_counts):
        raise CliError("--threads: thread counts must be at least 1")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CliError(f"--device {device}: no CUDA device is available here")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            runs = [Run.open(t, dataset_dir) for t in transcripts]
        except (TranscriptError, DatasetError) as exc:
            raise CliError(f"not an honest transcript with its dataset: {exc}") from None
        if train_count:
            with progress_bar("training honest runs", not as_json) as update:
                runs += train_runs(Path(tmp), train_count, max_steps=max_steps, k=k, progress=update, mix=mix)
        with progress_bar("replaying segments", not as_json) as update:
            result = run_calibration(runs, device=device, threads=thread_counts, max_segments=max_segments,
                                     progress=update)
    if out_path is not None:
        out_path.write_text(json.dumps(result, indent=1) + "\n")
        plot_calibration(result, out_path.with_suffix(".png"))
    brief = {k: v for k, v in result.items() if k != "samples"}
    if as_json:
        emit(brief, True)
        return
    click.echo(f"device {result['device']}, recorded at threads {result['recordedThreads']}")
    for label, q in [*result["honest"].items(), ("honest (all)", result["honestAll"])]:
        click.echo(f"  honest {label:<14} {_q(q)}")
    for label, q in result["forged"].items():
        click.echo(f"  forged {label:<14} {_q(q)}")
    for label, q in result.get("honestState", {}).items():
        click.echo(f"  state  {label:<22} {_q(q)}")
    for label, q in result.get("forgedState", {}).items():
        click.echo(f"  forged state {label:<16} {_q(q)}")
    for p in result["policies"]:
        click.echo(f"  {p['policy']:<22} δ={p['threshold']:<8g} false reject {p['falseRejects']}/{p['honest']}"
                   f"  false accept {p['falseAccepts']}/{p['forged']}; state δ={p.get('stateThreshold', 0):g} "
                   f"false reject {p.get('stateFalseRejects')}/{p['honest']}"
                   f"  false accept {p.get('stateFalseAccepts')}/{p.get('stateForged')}")


def _q(q: dict[str, object]) -> str:
    if not q.get("count"):
        return "n=0"
    return (f"n={q['count']} zero={q['zero']} min={q['min']:.3g} p50={q['p50']:.3g} p99={q['p99']:.3g} "
            f"max={q['max']:.3g}")


__all__ = ["calibrate", "check"]
