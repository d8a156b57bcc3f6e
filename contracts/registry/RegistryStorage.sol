// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title RegistryStorage
/// @notice The proof registry's types, events, errors, parameters and storage, shared by its roles (claims,
/// verifiers, challenges, settlement), plus the lookups and payment credit every role uses.
/// @dev Abstract: `ProofRegistry` puts the roles together at one address. Storage is `internal` so that the
/// role contracts share it; nothing outside this file's inheritance tree sees it except through the views.
abstract contract RegistryStorage {
    // ------------------------------------------------------------------------------------------------------
    // Types
    // ------------------------------------------------------------------------------------------------------

    enum ClaimKind {
        None,
        Training,
        Inference
    }

    /// @dev Order matters: a claim only ever moves to a larger value (Invalid and Finalized are terminal).
    enum ClaimStatus {
        None,
        Committed,
        Valid,
        Invalid,
        Finalized
    }

    enum ChallengeStatus {
        None,
        Open,
        Valid,
        Invalid,
        Unavailable,
        Expired
    }

    enum Verdict {
        None,
        Valid,
        Invalid,
        Unavailable
    }

    /// @notice Where a training run's checkpoint 0 came from: a seeded initialisation, the final weights of an
    /// earlier training claim (fine-tuning), or weights from outside the registry.
    enum InitOrigin {
        Seed,
        Parent,
        External
    }

    enum VerifierStatus {
        None,
        Active,
        Exiting
    }

    /// @notice Deployment parameters; immutable, readable through `parameters()`.
    struct Params {
        uint256 trainingBond; // wei posted with commitTraining
        uint256 inferenceBond; // wei posted with commitInference
        uint256 challengeBond; // wei posted with openChallenge
        uint256 verifierStake; // minimum stake of an eligible verifier
        uint64 challengeWindow; // blocks after commit during which challenges may open
        uint64 seedDelay; // blocks between opening a challenge and its seed block
        uint64 commitPeriod; // blocks after the seed block during which committee members commit their verdicts
        uint64 revealPeriod; // blocks after the commit deadline during which commitments are revealed
        uint64 exitDelay; // blocks between requestExit and completeExit; more than commitPeriod + revealPeriod
        uint8 committeeSize; // C, at most 8
        uint8 quorum; // equal verdicts that settle before the deadline; C/2 < quorum <= C
        uint8 samples; // S sampled segments per challenge
        uint16 minoritySlashBps; // slice of stake lost by a verifier outvoted by the outcome
        uint16 silentSlashBps; // slice of stake lost by a committee member silent at the deadline
        uint16 verifierRewardBps; // share of the losing bond paid to the majority verifiers
    }

    /// @notice What a prover commits for a training run (SPEC section 2).
    struct TrainingClaim {
        string transcriptCid;
        bytes32 segmentRoot;
        bytes32 chainHead;
        bytes32 finalWeightsHash;
        bytes32 datasetRoot;
        bytes32 configHash;
        uint32 numSegments;
        uint32 stepsPerSegment;
        bytes32 initWeightsHash; // canonical weights hash of checkpoint 0
        uint64 parentClaimId; // the training claim whose final weights are checkpoint 0; 0 unless origin is Parent
        InitOrigin origin;
    }

    /// @notice What a prover commits for a ZK inference proof (SPEC section 2).
    struct InferenceClaim {
        uint256 modelClaimId;
        bytes32 vkHash;
        bytes32 proofDigest;
        bytes32 instancesHash;
        string bundleCid;
    }

    /// @notice Stored claim: slot 0 packs the metadata, slot 1 the root, slot 2 the ownership and lineage links.
    struct Claim {
        address prover;
        uint40 committedAt;
        ClaimKind kind;
        ClaimStatus status;
        uint8 openChallenges;
        uint32 numSegments;
        bytes32 root; // training: segmentRoot; inference: keccak256(abi.encode(vkHash, proofDigest, instancesHash))
        uint64 nextSameWeights; // next training claim with the same finalWeightsHash, 0 if none
        uint64 modelClaimId; // inference: the linked training claim, 0 if none (written only when linked)
        uint64 parentClaimId; // training: the claim whose final weights are checkpoint 0, 0 unless origin is Parent
        InitOrigin origin; // training: where checkpoint 0 came from (written only when not Seed)
    }

    /// @notice A challenge as `getChallenge` returns it; stored as a `ChallengeRecord`.
    struct Challenge {
        address challenger;
        uint64 claimId;
        ChallengeStatus status;
        uint8 committeeSize; // drawn size, may be below C when few verifiers are eligible
        uint8 namedCount;
        bool drawn;
        uint64 seedBlock;
        uint64 deadline; // last block at which reveals are accepted (the settlement deadline)
        uint64 commitDeadline; // last block at which commitments are accepted
        uint16 verdicts; // 2 bits per committee position (a revealed Verdict)
        uint8 committed; // bit p set once position p has committed
        bytes32 seed; // openRandao (`block.prevrandao | 1` at open/reseed) until drawn, then the seed
        uint256 committee; // packed uint32 verifier ids, position p at bits [32p, 32p+32)
        uint256 named; // packed uint32 segment indices named by the challenger
    }

    /// @dev A challenge in storage, packed so that the commit phase touches as few slots as it can: slot 0 holds
    /// what is fixed at open, slot 1 everything a commit, a reveal or a draw of up to 4 members reads and writes
    /// (so the draw adds no fresh slot, and reads no claim: the prover's verifier id is here), slot 3 only
    /// members 4..7. The deadlines are not stored: they follow from the seed block and the immutable periods
    /// (`_commitDeadlineOf`, `_deadlineOf`).
    struct ChallengeRecord {
        address challenger; // slot 0
        uint64 claimId;
        uint8 namedCount;
        uint40 seedBlock; // slot 1
        ChallengeStatus status;
        uint16 verdicts; // 2 bits per committee position (a revealed Verdict)
        uint8 committed; // bit p set once position p has committed
        bool drawn;
        uint8 committeeSize; // drawn size, may be below C when few verifiers are eligible
        uint128 committeeLow; // packed uint32 verifier ids of positions 0..3, position p at bits [32p, 32p+32)
        uint40 proverKey; // the prover's verifier id + 1 at open (or the last reseed), 0 if it was no verifier
        bytes32 seed; // slot 2: openRandao (`block.prevrandao | 1` at open/reseed) until drawn, then the seed
        uint128 committeeHigh; // slot 3: packed uint32 verifier ids of positions 4..7; written only when C > 4
        uint256 named; // slot 4: packed uint32 segment indices named by the challenger
    }

    struct Verifier {
        uint96 stake;
        uint32 id;
        VerifierStatus status;
        uint40 since; // Active: registration block; Exiting: first block at which completeExit succeeds
        uint32 activeIndex; // position in the active list while Active
    }

    struct WeightsIndex {
        uint64 first;
        uint64 last;
    }

    // ------------------------------------------------------------------------------------------------------
    // Events
    // ------------------------------------------------------------------------------------------------------

    event TrainingClaimCommitted(
        uint256 indexed claimId, address indexed prover, bytes32 indexed finalWeightsHash, TrainingClaim claim
    );
    event InferenceClaimCommitted(
        uint256 indexed claimId, address indexed prover, uint256 indexed modelClaimId, InferenceClaim claim
    );
    event ClaimValidated(uint256 indexed claimId, uint256 indexed challengeId);
    event ClaimRejected(uint256 indexed claimId, uint256 indexed challengeId);
    event ClaimFinalized(uint256 indexed claimId);
    /// @notice An inference claim's proof was verified on-chain by `verifier` (whose code hash is the claim's
    /// vkHash); `finalized` is true for unlinked claims, false for linked ones (now Valid, link challengeable).
    event InferenceVerifiedOnChain(uint256 indexed claimId, address indexed verifier, bool finalized);

    event VerifierRegistered(address indexed verifier, uint256 id, uint256 stake);
    event StakeIncreased(address indexed verifier, uint256 amount, uint256 stake);
    event StakeDecreased(address indexed verifier, uint256 amount, uint256 stake);
    event VerifierExitRequested(address indexed verifier, uint256 exitBlock);
    event VerifierExited(address indexed verifier, uint256 amount);
    event VerifierSlashed(address indexed verifier, uint256 indexed challengeId, uint256 amount);
    event VerifierRewarded(address indexed verifier, uint256 indexed challengeId, uint256 amount);

    event ChallengeOpened(
        uint256 indexed challengeId,
        uint256 indexed claimId,
        address indexed challenger,
        uint256 seedBlock,
        uint256 commitDeadline,
        uint256 deadline,
        uint32[] namedSegments
    );
    event ChallengeReseeded(uint256 indexed challengeId, uint256 seedBlock, uint256 commitDeadline, uint256 deadline);
    event CommitteeDrawn(uint256 indexed challengeId, bytes32 seed, address[] committee);
    /// @notice A committee member committed to a verdict without showing it (commit phase).
    event VerdictCommitted(uint256 indexed challengeId, address indexed verifier, bytes32 commitment);
    /// @notice A committee member revealed its committed verdict (reveal phase): the attestation that counts.
    event Attested(
        uint256 indexed challengeId, address indexed verifier, Verdict verdict, bytes32 resultsHash, string reportCid
    );
    event ChallengeSettled(uint256 indexed challengeId, uint256 indexed claimId, ChallengeStatus outcome);

    event PaymentCredited(address indexed account, uint256 amount);
    event Withdrawn(address indexed account, uint256 amount);

    // ------------------------------------------------------------------------------------------------------
    // Errors
    // ------------------------------------------------------------------------------------------------------

    error InvalidParameter(string name);
    error WrongBond(uint256 expected, uint256 given);
    error InvalidClaim();
    error InvalidCid();
    error ClaimAlreadyCommitted(uint256 claimId);
    error UnknownClaim(uint256 claimId);
    error UnknownModelClaim(uint256 claimId);
    error ModelClaimRejected(uint256 claimId);
    error UnknownParentClaim(uint256 claimId);
    error ParentClaimRejected(uint256 claimId);
    error ClaimNotChallengeable(uint256 claimId, ClaimStatus status);
    error ChallengeWindowClosed(uint256 claimId, uint256 windowEnd);
    error ChallengeWindowOpen(uint256 claimId, uint256 windowEnd);
    error ChallengesStillOpen(uint256 claimId, uint256 openChallenges);
    error ClaimNotFinalizable(uint256 claimId, ClaimStatus status);
    error NotInferenceClaim(uint256 claimId);
    error ProofDoesNotMatchClaim(uint256 claimId);
    error ProofRejected(uint256 claimId, address verifier);
    error SelfChallenge();
    error TooManyNamedSegments(uint256 given, uint256 max);
    error SegmentOutOfRange(uint256 index, uint256 numSegments);
    error TooManyOpenChallenges(uint256 claimId);
    error UnknownChallenge(uint256 challengeId);
    error ChallengeNotOpen(uint256 challengeId, ChallengeStatus status);
    error SeedNotReady(uint256 seedBlock);
    error SeedExpired(uint256 seedBlock);
    error SeedStillAvailable(uint256 seedBlock);
    error CommitteeAlreadyDrawn(uint256 challengeId);
    error CommitteeNotDrawn(uint256 challengeId);
    error NotCommitteeMember(uint256 challengeId, address account);
    error InvalidVerdict();
    error InvalidCommitment();
    error CommitPhaseOver(uint256 challengeId, uint256 commitDeadline);
    error AlreadyCommitted(uint256 challengeId, address verifier);
    error RevealNotOpen(uint256 challengeId, uint256 commitDeadline);
    error RevealPhaseOver(uint256 challengeId, uint256 deadline);
    error NotCommitted(uint256 challengeId, address verifier);
    error AlreadyRevealed(uint256 challengeId, address verifier);
    error CommitmentMismatch(uint256 challengeId, address verifier);
    error NotSettleable(uint256 challengeId, uint256 deadline);
    error AlreadyRegistered(address verifier);
    error NotActiveVerifier(address account);
    error NotExiting(address account);
    error InsufficientStake(uint256 required, uint256 given);
    error StakeTooLarge();
    error ZeroAmount();
    error ExitNotReady(uint256 exitBlock);
    error NothingToWithdraw();
    error TransferFailed();

    // ------------------------------------------------------------------------------------------------------
    // Constants, immutables, storage
    // ------------------------------------------------------------------------------------------------------

    /// @notice Most segment indices a challenger may name (they pack into one storage slot).
    uint256 public constant MAX_NAMED_SEGMENTS = 8;
    /// @notice Most committee members (their ids pack into 256 bits, verdicts into 16 bits).
    uint256 public constant MAX_COMMITTEE = 8;
    /// @notice Longest CID string accepted, so events stay bounded.
    uint256 public constant MAX_CID_LENGTH = 128;
    uint256 internal constant _BPS = 10_000;
    uint256 internal constant _BLOCKHASH_WINDOW = 256;

    uint256 internal immutable _trainingBond;
    uint256 internal immutable _inferenceBond;
    uint256 internal immutable _challengeBond;
    uint256 internal immutable _verifierStake;
    uint64 internal immutable _challengeWindow;
    uint64 internal immutable _seedDelay;
    uint64 internal immutable _commitPeriod;
    uint64 internal immutable _revealPeriod;
    uint64 internal immutable _exitDelay;
    uint8 internal immutable _committeeSize;
    uint8 internal immutable _quorum;
    uint8 internal immutable _samples;
    uint16 internal immutable _minoritySlashBps;
    uint16 internal immutable _silentSlashBps;
    uint16 internal immutable _verifierRewardBps;

    uint256 internal _nextClaimId = 1; // starts non-zero so no commit pays for a zero-to-non-zero counter write
    uint256 internal _nextChallengeId = 1;
    mapping(uint256 claimId => Claim) internal _claims;
    mapping(uint256 challengeId => ChallengeRecord) internal _challenges;
    mapping(bytes32 finalWeightsHash => WeightsIndex) internal _byWeights;
    mapping(address account => Verifier) internal _verifiers;
    address[] internal _verifierAddresses; // by id, append-only
    uint32[] internal _active; // ids of Active verifiers, the pool committees are drawn from
    mapping(address account => uint256) internal _pending;
    mapping(uint256 challengeId => mapping(uint256 position => bytes32)) internal _commitments;

    constructor(Params memory p) {
        if (p.trainingBond == 0) revert InvalidParameter("trainingBond");
        if (p.inferenceBond == 0) revert InvalidParameter("inferenceBond");
        if (p.challengeBond == 0) revert InvalidParameter("challengeBond");
        if (p.verifierStake == 0 || p.verifierStake > type(uint96).max) revert InvalidParameter("verifierStake");
        if (p.challengeWindow == 0) revert InvalidParameter("challengeWindow");
        if (p.seedDelay == 0) revert InvalidParameter("seedDelay");
        if (p.commitPeriod == 0) revert InvalidParameter("commitPeriod");
        if (p.revealPeriod == 0) revert InvalidParameter("revealPeriod");
        // An exit must outlast every committee the verifier was drawn for before it left the pool (their reveal
        // deadlines are at most commitPeriod + revealPeriod - 1 blocks after the request), plus time to settle.
        if (uint256(p.exitDelay) <= uint256(p.commitPeriod) + p.revealPeriod) revert InvalidParameter("exitDelay");
        if (p.committeeSize == 0 || p.committeeSize > MAX_COMMITTEE) revert InvalidParameter("committeeSize");
        if (p.quorum <= p.committeeSize / 2 || p.quorum > p.committeeSize) revert InvalidParameter("quorum");
        if (p.samples == 0) revert InvalidParameter("samples");
        if (p.minoritySlashBps > _BPS) revert InvalidParameter("minoritySlashBps");
        if (p.silentSlashBps > _BPS) revert InvalidParameter("silentSlashBps");
        if (p.verifierRewardBps > _BPS) revert InvalidParameter("verifierRewardBps");
        _trainingBond = p.trainingBond;
        _inferenceBond = p.inferenceBond;
        _challengeBond = p.challengeBond;
        _verifierStake = p.verifierStake;
        _challengeWindow = p.challengeWindow;
        _seedDelay = p.seedDelay;
        _commitPeriod = p.commitPeriod;
        _revealPeriod = p.revealPeriod;
        _exitDelay = p.exitDelay;
        _committeeSize = p.committeeSize;
        _quorum = p.quorum;
        _samples = p.samples;
        _minoritySlashBps = p.minoritySlashBps;
        _silentSlashBps = p.silentSlashBps;
        _verifierRewardBps = p.verifierRewardBps;
    }

    // ------------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------------

    /// @notice The deployment parameters.
    function parameters() external view returns (Params memory) {
        return Params({
            trainingBond: _trainingBond,
            inferenceBond: _inferenceBond,
            challengeBond: _challengeBond,
            verifierStake: _verifierStake,
            challengeWindow: _challengeWindow,
            seedDelay: _seedDelay,
            commitPeriod: _commitPeriod,
            revealPeriod: _revealPeriod,
            exitDelay: _exitDelay,
            committeeSize: _committeeSize,
            quorum: _quorum,
            samples: _samples,
            minoritySlashBps: _minoritySlashBps,
            silentSlashBps: _silentSlashBps,
            verifierRewardBps: _verifierRewardBps
        });
    }

    /// @notice Claims committed so far (ids are 1 .. claimCount).
    function claimCount() external view returns (uint256) {
        return _nextClaimId - 1;
    }

    /// @notice Challenges opened so far (ids are 1 .. challengeCount).
    function challengeCount() external view returns (uint256) {
        return _nextChallengeId - 1;
    }

    /// @notice Verifiers ever registered (ids are 0 .. verifierCount-1).
    function verifierCount() external view returns (uint256) {
        return _verifierAddresses.length;
    }

    /// @notice Verifiers in the pool committees are drawn from.
    function activeVerifierCount() external view returns (uint256) {
        return _active.length;
    }

    function getClaim(uint256 claimId) external view returns (Claim memory) {
        return _existingClaim(claimId);
    }

    function getChallenge(uint256 challengeId) external view returns (Challenge memory) {
        ChallengeRecord storage ch = _existingChallenge(challengeId);
        return Challenge({
            challenger: ch.challenger,
            claimId: ch.claimId,
            status: ch.status,
            committeeSize: ch.committeeSize,
            namedCount: ch.namedCount,
            drawn: ch.drawn,
            seedBlock: ch.seedBlock,
            deadline: uint64(_deadlineOf(ch)),
            commitDeadline: uint64(_commitDeadlineOf(ch)),
            verdicts: ch.verdicts,
            committed: ch.committed,
            seed: ch.seed,
            committee: _committeeOf(ch),
            named: ch.named
        });
    }

    function getVerifier(address account) external view returns (Verifier memory) {
        return _verifiers[account];
    }

    function verifierAt(uint256 id) external view returns (address) {
        return _verifierAddresses[id];
    }

    function pendingWithdrawal(address account) external view returns (uint256) {
        return _pending[account];
    }

    /// @notice Last block in which `claimId` can be challenged.
    function challengeWindowEnd(uint256 claimId) external view returns (uint256) {
        return uint256(_existingClaim(claimId).committedAt) + _challengeWindow;
    }

    // ------------------------------------------------------------------------------------------------------
    // Internal helpers
    // ------------------------------------------------------------------------------------------------------

    function _existingClaim(uint256 claimId) internal view returns (Claim storage claim) {
        claim = _claims[claimId];
        if (claim.kind == ClaimKind.None) revert UnknownClaim(claimId);
    }

    function _existingChallenge(uint256 challengeId) internal view returns (ChallengeRecord storage ch) {
        ch = _challenges[challengeId];
        if (ch.status == ChallengeStatus.None) revert UnknownChallenge(challengeId);
    }

    function _openChallenge(uint256 challengeId) internal view returns (ChallengeRecord storage ch) {
        ch = _existingChallenge(challengeId);
        if (ch.status != ChallengeStatus.Open) revert ChallengeNotOpen(challengeId, ch.status);
    }

    /// @dev Last block at which commitments are accepted: `commitPeriod` blocks after the seed block.
    function _commitDeadlineOf(ChallengeRecord storage ch) internal view returns (uint256) {
        return uint256(ch.seedBlock) + _commitPeriod;
    }

    /// @dev Last block at which reveals are accepted (the settlement deadline): `revealPeriod` after the commit one.
    function _deadlineOf(ChallengeRecord storage ch) internal view returns (uint256) {
        return uint256(ch.seedBlock) + _commitPeriod + _revealPeriod;
    }

    /// @dev The committee's packed uint32 verifier ids, position p at bits [32p, 32p+32).
    function _committeeOf(ChallengeRecord storage ch) internal view returns (uint256 packed) {
        packed = ch.committeeLow;
        if (ch.committeeSize > 4) packed |= uint256(ch.committeeHigh) << 128;
    }

    /// @dev `_verifierAddresses[id]` without the bounds check, whose length read is a cold slot in every draw and
    /// settlement (like OpenZeppelin's `Arrays.unsafeAccess`). Only for ids taken from `_active` or a committee:
    /// ids are handed out in order and the array is append-only, so those are always below its length.
    function _verifierAddressAt(uint256 id) internal view returns (address account) {
        assembly ("memory-safe") {
            mstore(0, _verifierAddresses.slot)
            account := sload(add(keccak256(0, 0x20), id))
        }
    }

    /// @dev `_active[index]` without the bounds check, for `index < _active.length` (8 uint32 ids a slot, the
    /// lowest index in the lowest bits, as Solidity packs them).
    function _activeAt(uint256 index) internal view returns (uint256 id) {
        assembly ("memory-safe") {
            mstore(0, _active.slot)
            let word := sload(add(keccak256(0, 0x20), shr(3, index)))
            id := and(shr(shl(5, and(index, 7)), word), 0xffffffff)
        }
    }

    function _activeVerifier(address account) internal view returns (Verifier storage v) {
        v = _verifiers[account];
        if (v.status != VerifierStatus.Active) revert NotActiveVerifier(account);
    }

    function _bondOf(ClaimKind kind) internal view returns (uint256) {
        return kind == ClaimKind.Training ? _trainingBond : _inferenceBond;
    }

    function _checkCid(string calldata cid) internal pure {
        uint256 length = bytes(cid).length;
        if (length == 0 || length > MAX_CID_LENGTH) revert InvalidCid();
    }

    function _credit(address account, uint256 amount) internal {
        _pending[account] += amount;
        emit PaymentCredited(account, amount);
    }
}
