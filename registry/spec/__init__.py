"""Training described as data: model families, trees of standard torch.nn modules, Hugging Face configs,
and datasets with their datasetRoot. Verifiers rebuild from these; no prover code runs."""
