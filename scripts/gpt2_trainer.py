"""Example: a GPT-2-config causal LM trained by an ordinary Hugging Face `Trainer` run, recorded by
`PoLCallback`, then published, committed, challenged, audited by three verifier nodes and settled on-chain.

Everything runs on embedded defaults with nothing downloaded: the model is built from its config
(`transformers` GPT-2, about 1.9M parameters at the default size), the token dataset is generated here (a
first-order Markov chain over the vocabulary, so the loss has something to learn), the chain is the in-process
EVM and the store the embedded one. The run uses AdamW, linear warmup, `max_grad_norm=1.0`, gradient
accumulation 2 and, with `--bf16`, bf16 autocast: the settings issue 12 asks for.

    python -m scripts.gpt2_trainer [--out gpt2-out] [--size small|tiny] [--steps 40] [--seed 0] [--bf16]

bf16 is opt-in because bf16 autocast on a CPU without bf16 instructions runs about 3x slower than fp32; it
records and replays exactly at both sizes (the callback commits the Trainer's use_cache=False, docs/prover.md).

Exit code 0 when the honest claim is settled Valid.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from registry.chain.deployment import Deployment
from registry.chain.local import EmbeddedChain
from registry.chain.rpc import RegistryClient
from registry.core.params import preset
from registry.core.states import CLAIM_STATUS
from registry.pol.publish import publish_transcript
from registry.pol.transcript import load_manifest
from registry.spec.datasets import Dataset, build_dataset
from registry.spec.models import build_model
from registry.store.embedded import EmbeddedStore
from scripts.demo import OUTCOME, _report_of, _segments, _wait, running_network

#: model sizes: "small" is the example's (about 1.9M parameters), "tiny" the test's
SIZES: dict[str, dict[str, int]] = {
    "small": {"n_embd": 192, "n_layer": 4, "n_head": 4, "vocab_size": 512, "n_positions": 32},
    "tiny": {"n_embd": 16, "n_layer": 1, "n_head": 2, "vocab_size": 64, "n_positions": 16},
}
SEQ_LEN = {"small": 17, "tiny": 9}  # tokens per example (the causal-LM loss predicts the last SEQ_LEN - 1)
NUM_EXAMPLES = {"small": 1024, "tiny": 64}
TORCH_THREADS = 2  # fixed, so that the same seed gives the same checkpoints on any core count


def family_args(size: str) -> dict[str, Any]:
    return {"config": {"model_type": "gpt2", **SIZES[size]}, "output": "model_output"}


def markov_tokens(num: int, length: int, vocab: int, seed: int) -> np.ndarray:
    """Sequences from a random sparse first-order Markov chain: each token has 4 likely successors."""
    rng = np.random.default_rng(seed)
    succ = rng.integers(0, vocab, size=(vocab, 4))
    out = np.empty((num, length), dtype=np.int64)
    out[:, 0] = rng.integers(0, vocab, size=num)
    for t in range(1, length):
        out[:, t] = succ[out[:, t - 1], rng.integers(0, 4, size=num)]
    return out


def trainer_args(out: Path, steps: int, seed: int, *, bf16: bool = False, **over: Any) -> Any:
    from transformers import TrainingArguments

    kw: dict[str, Any] = dict(output_dir=str(out / "hf"), use_cpu=True, per_device_train_batch_size=8,
                              gradient_accumulation_steps=2, max_steps=steps, learning_rate=1e-3,
                              lr_scheduler_type="linear", warmup_steps=max(1, steps // 8), max_grad_norm=1.0,
                              bf16=bf16, dataloader_drop_last=True, seed=seed, report_to=[], save_strategy="no",
                              logging_strategy="no", disable_tqdm=True)
    kw.update(over)
    return TrainingArguments(**kw)


def train_recorded(out: Path, size: str, steps: int, k: int, seed: int, bf16: bool = False,
                   ) -> tuple[Path, Dataset, float, float]:
    """Trains with the callback; returns (transcript dir, dataset, training seconds, mean loss of the last
    segment's steps as Hugging Face logs it, or NaN)."""
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    from registry.pol.hf_trainer import PoLCallback

    tokens = markov_tokens(NUM_EXAMPLES[size], SEQ_LEN[size], SIZES[size]["vocab_size"], seed)
    ds = build_dataset(out / "dataset", "tokens", tokens, tokens)
    torch.manual_seed(seed)
    args = family_args(size)
    model = build_model("hf-causal-lm", args)
    cb = PoLCallback(out / "transcript", dataset=ds, family_args=args, steps_per_segment=k)
    trainer = Trainer(model=model, args=trainer_args(out, steps, seed, bf16=bf16, logging_strategy="steps",
                                                           logging_steps=k),
                      callbacks=[cb], **cb.trainer_kwargs())
    trainer.remove_callback(PrinterCallback)  # the loss is kept in log_history, not printed every k steps
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
    return out / "transcript", ds, seconds, losses[-1] if losses else float("nan")


def run(out: Path, *, size: str = "small", steps: int = 40, seed: int = 0, bf16: bool = False) -> dict[str, Any]:
    torch.set_num_threads(TORCH_THREADS)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    k = max(1, steps // 8)  # 8 segments: the challenger can name every one (MAX_NAMED_SEGMENTS)
    tdir, _, train_s, loss = train_recorded(out, size, steps, k, seed, bf16)
    m = load_manifest(tdir)
    params = sum(p.numel() for p in build_model("hf-causal-lm", family_args(size)).parameters())
    print(f"trained a GPT-2 of {params:,} parameters for {m['numSteps']} steps ({m['numSegments']} segments "
          f"of {k}) in {train_s:.1f} s, last logged loss {loss:.3f} (uniform: {np.log(SIZES[size]['vocab_size']):.3f})",
          flush=True)

    chain = EmbeddedChain(replace(preset("dev"), commit_period=600, reveal_period=300, exit_delay=1000))
    store = EmbeddedStore(out / "store")
    w3, reg, p, acct = chain.w3, chain.registry, chain.params, chain.accounts
    record = Deployment.from_receipt(w3, chain.deploy_receipt, p, "embedded").save(out / "deployment.json")
    prover, challenger = acct[1], acct[2]
    t_audit = time.perf_counter()
    with running_network(chain, store, record, out) as nodes:
        _wait("the verifiers to register", lambda: reg.functions.activeVerifierCount().call() >= 3, 120, nodes)
        published = publish_transcript(tdir, store, out / "dataset")
        receipt = RegistryClient(w3, reg, None, sender=prover).transact(
            "commitTraining", published.claim_tuple(), value=p.training_bond)
        claim_id = int(reg.events.TrainingClaimCommitted().process_receipt(receipt)[0]["args"]["claimId"])
        named = list(range(min(int(m["numSegments"]), 8)))
        receipt = RegistryClient(w3, reg, None, sender=challenger).transact(
            "openChallenge", claim_id, named, value=p.challenge_bond)
        challenge_id = int(reg.events.ChallengeOpened().process_receipt(receipt)[0]["args"]["challengeId"])
        print(f"committed claim {claim_id} ({published.transcript_cid}) and challenged it on segments {named}; "
              "the verifier nodes take it from here", flush=True)
        t_audit = time.perf_counter()
        _wait("settlement", lambda: reg.functions.getChallenge(challenge_id).call()[2] != 1, 900, nodes)
    audit_s = time.perf_counter() - t_audit
    attested = [a for a in reg.events.Attested().get_logs(from_block=0) if a["args"]["challengeId"] == challenge_id]
    reports = [_report_of(store, a["args"]["reportCid"]) for a in attested]
    segs = _segments(reports[0]) if reports else []
    rhos = [float(s["rho"]) for s in segs if s.get("rho") is not None]
    outcome = OUTCOME.get(reg.functions.getChallenge(challenge_id).call()[2])
    result = {"size": size, "parameters": params, "steps": int(m["numSteps"]), "segments": int(m["numSegments"]),
              "config": {key: m["config"].get(key) for key in ("optimizer", "scheduler", "clip", "accumulation",
                                                                "precision", "loss")},
              "claimId": claim_id, "transcriptCid": published.transcript_cid, "outcome": outcome,
              "claimStatus": CLAIM_STATUS.get(reg.functions.getClaim(claim_id).call()[3]),
              "attestations": [r.get("verdict") for r in reports],
              "reason": reports[0].get("reason") if reports else None,
              "segmentsAudited": sorted(int(s["index"]) for s in segs), "maxRho": max(rhos) if rhos else None,
              "ownerOfFinalWeights": reg.functions.ownerOf(published.summary.final_weights_hash).call(),
              "prover": prover, "seconds": {"train": round(train_s, 1), "audit": round(audit_s, 1)}}
    (out / "result.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpt2-out"))
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (see the known limitation above)")
    args = parser.parse_args(argv)
    r = run(args.out, size=args.size, steps=args.steps, seed=args.seed, bf16=args.bf16)
    rho = f"{r['maxRho']:.3g}" if r["maxRho"] is not None else "-"
    print(f"challenge settled {r['outcome']} (claim {r['claimStatus']}): {len(r['attestations'])} attestations "
          f"{r['attestations']}, {len(r['segmentsAudited'])} segments audited, max rho {rho}")
    print(f"ownerOf(final weights) = {r['ownerOfFinalWeights']}"
          f" ({'the prover' if r['ownerOfFinalWeights'] == r['prover'] else 'not the prover'})")
    print(f"training {r['seconds']['train']} s, challenge to settlement {r['seconds']['audit']} s; "
          f"{args.out / 'result.json'}")
    return 0 if r["outcome"] == "Valid" else 1


if __name__ == "__main__":
    sys.exit(main())
