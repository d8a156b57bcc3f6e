"""The contract's enum values by name (ProofRegistry.sol's ClaimStatus, ChallengeStatus, ClaimKind and
InitOrigin), in one place for the CLI, the explorer, the daemon and the reports."""

CLAIM_STATUS = {1: "Committed", 2: "Valid", 3: "Invalid", 4: "Finalized"}
CHALLENGE_STATUS = {1: "Open", 2: "Valid", 3: "Invalid", 4: "Unavailable", 5: "Expired"}
KIND = {1: "training", 2: "inference"}
ORIGIN_NAMES = {0: "seed", 1: "parent", 2: "external"}
