// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ProofHashing} from "./libraries/ProofHashing.sol";
import {Sampling} from "./libraries/Sampling.sol";
import {IZkVerifier} from "./interfaces/IZkVerifier.sol";

/// @title ProofRegistry
/// @notice On-chain anchor of the proof registry (SPEC sections 2 and 5): bonded training (Proof-of-Learning)
/// and inference (ZK) claims, staked verifiers, bonded challenges settled by a committee drawn from a future
/// block hash, and pull payments.
/// @dev Gas policy: the contract stores only what it enforces (packed claim metadata, the segment root and
/// the ownership links); every other claim field is emitted once in the commit event, which is where clients
/// read it. All durations are in blocks. All money leaves through `withdraw` (pull payments); the only
/// external call is in `withdraw`, after its state change (checks-effects-interactions).
contract ProofRegistry {
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
        uint64 exitDelay; // blocks between requestExit and completeExit
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
        bytes32 seed;
        uint256 committee; // packed uint32 verifier ids, position p at bits [32p, 32p+32)
        uint256 named; // packed uint32 segment indices named by the challenger
    }

    struct Verifier {
        uint96 stake;
        uint32 id;
        VerifierStatus status;
        uint40 since; // Active: registration block; Exiting: first block at which completeExit succeeds
        uint16 openDuties; // unsettled committees this verifier sits on
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
    error OpenDuties(uint256 count);
    error NothingToWithdraw();
    error TransferFailed();

    // ------------------------------------------------------------------------------------------------------
    // Constants, immutables, storage
    // ------------------------------------------------------------------------------------------------------

    /// @notice Most segment indices a challenger may name (they pack into one storage slot).
    uint256 public constant MAX_NAMED_SEGMENTS = 8;
    /// @notice Most committee members (their ids pack into one storage slot, verdicts into 16 bits).
    uint256 public constant MAX_COMMITTEE = 8;
    /// @notice Longest CID string accepted, so events stay bounded.
    uint256 public constant MAX_CID_LENGTH = 128;
    uint256 private constant _BPS = 10_000;
    uint256 private constant _BLOCKHASH_WINDOW = 256;

    uint256 private immutable _trainingBond;
    uint256 private immutable _inferenceBond;
    uint256 private immutable _challengeBond;
    uint256 private immutable _verifierStake;
    uint64 private immutable _challengeWindow;
    uint64 private immutable _seedDelay;
    uint64 private immutable _commitPeriod;
    uint64 private immutable _revealPeriod;
    uint64 private immutable _exitDelay;
    uint8 private immutable _committeeSize;
    uint8 private immutable _quorum;
    uint8 private immutable _samples;
    uint16 private immutable _minoritySlashBps;
    uint16 private immutable _silentSlashBps;
    uint16 private immutable _verifierRewardBps;

    uint256 private _nextClaimId = 1; // starts non-zero so no commit pays for a zero-to-non-zero counter write
    uint256 private _nextChallengeId = 1;
    mapping(uint256 claimId => Claim) private _claims;
    mapping(uint256 challengeId => Challenge) private _challenges;
    mapping(bytes32 finalWeightsHash => WeightsIndex) private _byWeights;
    mapping(address account => Verifier) private _verifiers;
    address[] private _verifierAddresses; // by id, append-only
    uint32[] private _active; // ids of Active verifiers, the pool committees are drawn from
    mapping(address account => uint256) private _pending;
    mapping(uint256 challengeId => mapping(uint256 position => bytes32)) private _commitments;

    constructor(Params memory p) {
        if (p.trainingBond == 0) revert InvalidParameter("trainingBond");
        if (p.inferenceBond == 0) revert InvalidParameter("inferenceBond");
        if (p.challengeBond == 0) revert InvalidParameter("challengeBond");
        if (p.verifierStake == 0 || p.verifierStake > type(uint96).max) revert InvalidParameter("verifierStake");
        if (p.challengeWindow == 0) revert InvalidParameter("challengeWindow");
        if (p.seedDelay == 0) revert InvalidParameter("seedDelay");
        if (p.commitPeriod == 0) revert InvalidParameter("commitPeriod");
        if (p.revealPeriod == 0) revert InvalidParameter("revealPeriod");
        if (p.exitDelay == 0) revert InvalidParameter("exitDelay");
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
    // Claims
    // ------------------------------------------------------------------------------------------------------

    /// @notice Commits a Proof-of-Learning claim with the training bond.
    /// @return claimId the new claim's id (ids start at 1).
    function commitTraining(TrainingClaim calldata c) external payable returns (uint256 claimId) {
        if (msg.value != _trainingBond) revert WrongBond(_trainingBond, msg.value);
        if (c.numSegments == 0 || c.stepsPerSegment == 0) revert InvalidClaim();
        if (c.segmentRoot == 0 || c.chainHead == 0 || c.finalWeightsHash == 0 || c.configHash == 0) {
            revert InvalidClaim();
        }
        if (c.initWeightsHash == 0 || (c.origin == InitOrigin.Parent) != (c.parentClaimId != 0)) revert InvalidClaim();
        _checkCid(c.transcriptCid);
        if (c.parentClaimId != 0) {
            Claim storage parent = _claims[c.parentClaimId];
            if (parent.kind != ClaimKind.Training) revert UnknownParentClaim(c.parentClaimId);
            if (parent.status == ClaimStatus.Invalid) revert ParentClaimRejected(c.parentClaimId);
        }

        WeightsIndex storage index = _byWeights[c.finalWeightsHash];
        uint64 last = index.last;
        if (last != 0) {
            Claim storage previous = _claims[last];
            if (
                previous.prover == msg.sender && previous.root == c.segmentRoot
                    && previous.status != ClaimStatus.Invalid
            ) revert ClaimAlreadyCommitted(last);
        }

        claimId = _nextClaimId++;
        Claim storage claim = _claims[claimId];
        claim.prover = msg.sender;
        claim.committedAt = uint40(block.number);
        claim.kind = ClaimKind.Training;
        claim.status = ClaimStatus.Committed;
        claim.numSegments = c.numSegments;
        claim.root = c.segmentRoot;
        if (c.origin != InitOrigin.Seed) {
            claim.parentClaimId = c.parentClaimId;
            claim.origin = c.origin;
        }
        if (last == 0) index.first = uint64(claimId);
        else _claims[last].nextSameWeights = uint64(claimId);
        index.last = uint64(claimId);
        emit TrainingClaimCommitted(claimId, msg.sender, c.finalWeightsHash, c);
    }

    /// @notice Commits a ZK inference claim with the inference bond.
    /// @dev `modelClaimId` is 0 or a training claim that has not been rejected.
    function commitInference(InferenceClaim calldata c) external payable returns (uint256 claimId) {
        if (msg.value != _inferenceBond) revert WrongBond(_inferenceBond, msg.value);
        if (c.vkHash == 0 || c.proofDigest == 0 || c.instancesHash == 0) revert InvalidClaim();
        _checkCid(c.bundleCid);
        if (c.modelClaimId != 0) {
            Claim storage model = _claims[c.modelClaimId];
            if (model.kind != ClaimKind.Training) revert UnknownModelClaim(c.modelClaimId);
            if (model.status == ClaimStatus.Invalid) revert ModelClaimRejected(c.modelClaimId);
        }
        claimId = _nextClaimId++;
        Claim storage claim = _claims[claimId];
        claim.prover = msg.sender;
        claim.committedAt = uint40(block.number);
        claim.kind = ClaimKind.Inference;
        claim.status = ClaimStatus.Committed;
        claim.root = keccak256(abi.encode(c.vkHash, c.proofDigest, c.instancesHash));
        if (c.modelClaimId != 0) claim.modelClaimId = uint64(c.modelClaimId); // exists, so it fits in 64 bits
        emit InferenceClaimCommitted(claimId, msg.sender, c.modelClaimId, c);
    }

    /// @notice Verifies an inference claim's proof on-chain with an ezkl-rendered verifier contract, no committee.
    /// @dev For this path the claim's `vkHash` is the verifier's EXTCODEHASH (the verifier embeds one vk, so its
    /// code identifies the circuit); `proof` and `instances` must hash to the claim's `proofDigest` and
    /// `instancesHash` (keccak256 of the bytes, keccak256(abi.encode(instances))). An unlinked claim
    /// (modelClaimId 0) is finalized and its bond credited back: the chain checked everything it claims. A linked
    /// claim becomes Valid: that its circuit is the training claim's final model is checked off-chain, so it stays
    /// challengeable until its window ends. The verifier is called with STATICCALL: it cannot change state or
    /// re-enter, so the effects after it keep checks-effects-interactions safe.
    function verifyInferenceOnChain(
        uint256 claimId,
        address verifier,
        bytes calldata proof,
        uint256[] calldata instances
    ) external {
        Claim storage claim = _existingClaim(claimId);
        if (claim.kind != ClaimKind.Inference) revert NotInferenceClaim(claimId);
        ClaimStatus status = claim.status;
        if (status != ClaimStatus.Committed && status != ClaimStatus.Valid) revert ClaimNotFinalizable(claimId, status);
        if (claim.openChallenges != 0) revert ChallengesStillOpen(claimId, claim.openChallenges);
        bytes32 root = keccak256(abi.encode(verifier.codehash, keccak256(proof), keccak256(abi.encode(instances))));
        if (root != claim.root) revert ProofDoesNotMatchClaim(claimId);
        (bool ok, bytes memory ret) =
            verifier.staticcall(abi.encodeWithSelector(IZkVerifier.verifyProof.selector, proof, instances));
        if (!ok || ret.length != 32 || !abi.decode(ret, (bool))) revert ProofRejected(claimId, verifier);

        bool finalized = claim.modelClaimId == 0;
        claim.status = finalized ? ClaimStatus.Finalized : ClaimStatus.Valid;
        emit InferenceVerifiedOnChain(claimId, verifier, finalized);
        if (finalized) {
            emit ClaimFinalized(claimId);
            _credit(claim.prover, _inferenceBond);
        }
    }

    /// @notice Finalizes a claim whose window has passed with no open challenge, and credits its bond back.
    function finalize(uint256 claimId) external {
        Claim storage claim = _existingClaim(claimId);
        ClaimStatus status = claim.status;
        if (status != ClaimStatus.Committed && status != ClaimStatus.Valid) revert ClaimNotFinalizable(claimId, status);
        uint256 windowEnd = uint256(claim.committedAt) + _challengeWindow;
        if (block.number <= windowEnd) revert ChallengeWindowOpen(claimId, windowEnd);
        if (claim.openChallenges != 0) revert ChallengesStillOpen(claimId, claim.openChallenges);
        claim.status = ClaimStatus.Finalized;
        emit ClaimFinalized(claimId);
        _credit(claim.prover, _bondOf(claim.kind));
    }

    // ------------------------------------------------------------------------------------------------------
    // Verifiers
    // ------------------------------------------------------------------------------------------------------

    /// @notice Registers the caller as a verifier; `msg.value` (at least `verifierStake`) is the stake.
    function registerVerifier() external payable {
        Verifier storage v = _verifiers[msg.sender];
        if (v.status != VerifierStatus.None) revert AlreadyRegistered(msg.sender);
        if (msg.value < _verifierStake) revert InsufficientStake(_verifierStake, msg.value);
        if (msg.value > type(uint96).max) revert StakeTooLarge();
        uint256 id = _verifierAddresses.length;
        _verifierAddresses.push(msg.sender);
        v.stake = uint96(msg.value);
        v.id = uint32(id);
        v.status = VerifierStatus.Active;
        v.since = uint40(block.number);
        v.activeIndex = uint32(_active.length);
        _active.push(uint32(id));
        emit VerifierRegistered(msg.sender, id, msg.value);
    }

    /// @notice Adds `msg.value` to an active verifier's stake (e.g. to become eligible again after a slash).
    function increaseStake() external payable {
        Verifier storage v = _activeVerifier(msg.sender);
        if (msg.value == 0) revert ZeroAmount();
        uint256 stake = uint256(v.stake) + msg.value;
        if (stake > type(uint96).max) revert StakeTooLarge();
        v.stake = uint96(stake);
        emit StakeIncreased(msg.sender, msg.value, stake);
    }

    /// @notice Moves stake above `verifierStake` (e.g. earned rewards) to the caller's withdrawable balance.
    function withdrawExcessStake(uint256 amount) external {
        Verifier storage v = _activeVerifier(msg.sender);
        if (amount == 0) revert ZeroAmount();
        uint256 stake = v.stake;
        if (amount > stake || stake - amount < _verifierStake) {
            revert InsufficientStake(_verifierStake, amount > stake ? 0 : stake - amount);
        }
        v.stake = uint96(stake - amount);
        emit StakeDecreased(msg.sender, amount, stake - amount);
        _credit(msg.sender, amount);
    }

    /// @notice Leaves the pool committees are drawn from; the stake stays slashable until `completeExit`.
    function requestExit() external {
        Verifier storage v = _activeVerifier(msg.sender);
        _removeActive(v.activeIndex);
        uint256 exitBlock = block.number + _exitDelay;
        v.status = VerifierStatus.Exiting;
        v.since = uint40(exitBlock);
        v.activeIndex = 0;
        emit VerifierExitRequested(msg.sender, exitBlock);
    }

    /// @notice After the exit delay, and once every committee it sat on has settled, credits the stake back.
    function completeExit() external {
        Verifier storage v = _verifiers[msg.sender];
        if (v.status != VerifierStatus.Exiting) revert NotExiting(msg.sender);
        if (block.number < v.since) revert ExitNotReady(v.since);
        if (v.openDuties != 0) revert OpenDuties(v.openDuties);
        uint256 amount = v.stake;
        delete _verifiers[msg.sender];
        emit VerifierExited(msg.sender, amount);
        _credit(msg.sender, amount);
    }

    // ------------------------------------------------------------------------------------------------------
    // Challenges
    // ------------------------------------------------------------------------------------------------------

    /// @notice Challenges a claim inside its window, with the challenge bond and up to 8 named segments.
    /// @dev The seed is the hash of block `block.number + seedDelay`, unknown to everyone now.
    function openChallenge(uint256 claimId, uint32[] calldata namedSegments)
        external
        payable
        returns (uint256 challengeId)
    {
        if (msg.value != _challengeBond) revert WrongBond(_challengeBond, msg.value);
        Claim storage claim = _existingClaim(claimId);
        ClaimStatus status = claim.status;
        if (status != ClaimStatus.Committed && status != ClaimStatus.Valid) {
            revert ClaimNotChallengeable(claimId, status);
        }
        uint256 windowEnd = uint256(claim.committedAt) + _challengeWindow;
        if (block.number > windowEnd) revert ChallengeWindowClosed(claimId, windowEnd);
        if (msg.sender == claim.prover) revert SelfChallenge();
        uint256 packed = _packNamed(namedSegments, claim.numSegments);
        if (claim.openChallenges == type(uint8).max) revert TooManyOpenChallenges(claimId);

        claim.openChallenges += 1;
        challengeId = _nextChallengeId++;
        Challenge storage ch = _challenges[challengeId];
        ch.challenger = msg.sender;
        ch.claimId = uint64(claimId);
        ch.status = ChallengeStatus.Open;
        ch.namedCount = uint8(namedSegments.length);
        if (packed != 0) ch.named = packed;
        _scheduleSeed(ch);
        emit ChallengeOpened(
            challengeId, claimId, msg.sender, ch.seedBlock, ch.commitDeadline, ch.deadline, namedSegments
        );
    }

    /// @notice Sets a fresh seed block when nobody drew the committee while the old seed's hash was readable.
    function reseed(uint256 challengeId) external {
        Challenge storage ch = _openChallenge(challengeId);
        if (ch.drawn) revert CommitteeAlreadyDrawn(challengeId);
        if (block.number <= uint256(ch.seedBlock) + _BLOCKHASH_WINDOW) revert SeedStillAvailable(ch.seedBlock);
        (uint256 seedBlock, uint256 commitDeadline, uint256 deadline) = _scheduleSeed(ch);
        emit ChallengeReseeded(challengeId, seedBlock, commitDeadline, deadline);
    }

    /// @notice Fixes the seed and draws the committee once the seed block is mined; a no-op once drawn.
    /// @dev Anyone may call it (verifier daemons do); `commitVerdict` calls it too.
    function drawCommittee(uint256 challengeId) public {
        Challenge storage ch = _openChallenge(challengeId);
        if (!ch.drawn) _draw(ch, challengeId);
    }

    /// @notice Commit phase: a committee member binds itself to a verdict without showing it, once per challenge,
    /// from the seed block until the commit deadline. Draws the committee first if nobody has.
    /// @param commitment `commitmentOf(verdict, resultsHash, reportCid, salt, msg.sender)`; the member in it makes
    /// a copied commitment useless to anyone else.
    function commitVerdict(uint256 challengeId, bytes32 commitment) external {
        Challenge storage ch = _openChallenge(challengeId);
        if (block.number > ch.commitDeadline) revert CommitPhaseOver(challengeId, ch.commitDeadline);
        if (commitment == 0) revert InvalidCommitment();
        if (!ch.drawn) _draw(ch, challengeId);
        uint256 position = _positionOf(ch, challengeId, msg.sender);
        uint8 committed = ch.committed;
        if (committed & (1 << position) != 0) revert AlreadyCommitted(challengeId, msg.sender);
        ch.committed = committed | uint8(1 << position);
        _commitments[challengeId][position] = commitment;
        emit VerdictCommitted(challengeId, msg.sender, commitment);
    }

    /// @notice Reveal phase: opens the caller's commitment; only revealed verdicts count. Open after the commit
    /// deadline, or earlier once every member has committed (nothing is left to copy), until the deadline.
    /// @param resultsHash keccak256 of the canonical results JSON; `reportCid` holds the full report.
    function revealVerdict(
        uint256 challengeId,
        Verdict verdict,
        bytes32 resultsHash,
        string calldata reportCid,
        bytes32 salt
    ) external {
        Challenge storage ch = _openChallenge(challengeId);
        if (block.number > ch.deadline) revert RevealPhaseOver(challengeId, ch.deadline);
        uint256 size = ch.committeeSize;
        if (block.number <= ch.commitDeadline && (!ch.drawn || ch.committed != (1 << size) - 1)) {
            revert RevealNotOpen(challengeId, ch.commitDeadline);
        }
        if (verdict == Verdict.None) revert InvalidVerdict();
        _checkCid(reportCid);
        uint256 position = _positionOf(ch, challengeId, msg.sender);
        if (ch.committed & (1 << position) == 0) revert NotCommitted(challengeId, msg.sender);
        uint16 verdictBits = ch.verdicts;
        if ((verdictBits >> (2 * position)) & 3 != 0) revert AlreadyRevealed(challengeId, msg.sender);
        if (_commitments[challengeId][position] != commitmentOf(verdict, resultsHash, reportCid, salt, msg.sender)) {
            revert CommitmentMismatch(challengeId, msg.sender);
        }
        ch.verdicts = verdictBits | uint16(uint256(verdict) << (2 * position));
        emit Attested(challengeId, msg.sender, verdict, resultsHash, reportCid);
    }

    /// @notice The commitment a member submits: `keccak256(abi.encode(verdict, resultsHash, reportCid, salt,
    /// member))`. `salt` is 32 secret random bytes, so the verdict cannot be guessed from the commitment.
    function commitmentOf(Verdict verdict, bytes32 resultsHash, string calldata reportCid, bytes32 salt, address member)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(verdict, resultsHash, reportCid, salt, member));
    }

    /// @notice Settles a challenge once a quorum of equal revealed verdicts exists, or after the deadline.
    /// @dev After the deadline the plurality of the revealed verdicts wins; none or a tie is Expired. A commitment
    /// never revealed counts as silence.
    function settle(uint256 challengeId) external {
        Challenge storage ch = _openChallenge(challengeId);
        bool afterDeadline = block.number > ch.deadline;
        ChallengeStatus outcome = _outcome(_tally(ch), afterDeadline);
        if (outcome == ChallengeStatus.None) revert NotSettleable(challengeId, ch.deadline);

        ch.status = outcome;
        uint256 claimId = ch.claimId;
        Claim storage claim = _claims[claimId];
        claim.openChallenges -= 1;
        emit ChallengeSettled(challengeId, claimId, outcome);
        (uint256 pool, address winner) = _resolveClaim(ch, claim, challengeId, claimId, outcome);
        _distribute(ch, challengeId, outcome, afterDeadline, pool, winner);
    }

    // ------------------------------------------------------------------------------------------------------
    // Payments
    // ------------------------------------------------------------------------------------------------------

    /// @notice Sends the caller everything credited to it.
    function withdraw() external {
        uint256 amount = _pending[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        _pending[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = payable(msg.sender).call{value: amount}("");
        if (!ok) revert TransferFailed();
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
        return _existingChallenge(challengeId);
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

    /// @notice The seed: stored once drawn, else the seed block's hash while it is readable.
    function seedOf(uint256 challengeId) external view returns (bytes32) {
        Challenge storage ch = _existingChallenge(challengeId);
        return ch.drawn ? ch.seed : _readSeed(ch, challengeId);
    }

    /// @notice The committee of a drawn challenge, in position order.
    function committee(uint256 challengeId) external view returns (address[] memory) {
        Challenge storage ch = _existingChallenge(challengeId);
        if (!ch.drawn) revert CommitteeNotDrawn(challengeId);
        return _committeeAddresses(ch.committee, ch.committeeSize);
    }

    /// @notice The verdict of each committee position (None where silent), aligned with `committee`.
    function verdicts(uint256 challengeId) external view returns (Verdict[] memory out) {
        Challenge storage ch = _existingChallenge(challengeId);
        uint256 size = ch.committeeSize;
        out = new Verdict[](size);
        for (uint256 p; p < size; ++p) {
            out[p] = Verdict((ch.verdicts >> (2 * p)) & 3);
        }
    }

    /// @notice The commitment of each committee position (zero where none), aligned with `committee`.
    function commitments(uint256 challengeId) external view returns (bytes32[] memory out) {
        Challenge storage ch = _existingChallenge(challengeId);
        uint256 size = ch.committeeSize;
        out = new bytes32[](size);
        for (uint256 p; p < size; ++p) {
            out[p] = _commitments[challengeId][p];
        }
    }

    /// @notice The segments the challenger named.
    function namedSegments(uint256 challengeId) public view returns (uint256[] memory out) {
        Challenge storage ch = _existingChallenge(challengeId);
        uint256 count = ch.namedCount;
        out = new uint256[](count);
        for (uint256 i; i < count; ++i) {
            out[i] = (ch.named >> (32 * i)) & 0xffffffff;
        }
    }

    /// @notice Segments the committee must check: S draws `keccak256(abi.encode(seed, "segment", j)) % N`,
    /// then the named ones (duplicates kept, in that order). Empty for inference claims.
    function sampledSegments(uint256 challengeId) external view returns (uint256[] memory out) {
        Challenge storage ch = _existingChallenge(challengeId);
        if (!ch.drawn) revert CommitteeNotDrawn(challengeId);
        uint256 n = _claims[ch.claimId].numSegments;
        if (n == 0) return new uint256[](0);
        uint256[] memory named = namedSegments(challengeId);
        uint256 samples = _samples;
        out = new uint256[](samples + named.length);
        bytes32 seed = ch.seed;
        for (uint256 j; j < samples; ++j) {
            out[j] = Sampling.segmentAt(seed, j, n);
        }
        for (uint256 i; i < named.length; ++i) {
            out[samples + i] = named[i];
        }
    }

    /// @notice True when the segment leaf and `proof` lead to the training claim's `segmentRoot`.
    function verifySegment(
        uint256 claimId,
        uint256 index,
        bytes32 ckptHash,
        bytes32 nextCkptHash,
        bytes32 batchesHash,
        bytes32[] calldata proof
    ) external view returns (bool) {
        Claim storage claim = _existingClaim(claimId);
        if (claim.kind != ClaimKind.Training) revert UnknownClaim(claimId);
        if (index >= claim.numSegments) return false;
        return ProofHashing.verify(proof, claim.root, ProofHashing.segmentLeaf(index, ckptHash, nextCkptHash, batchesHash));
    }

    /// @notice True when example `index` with `exampleHash` is in the dataset tree with root `datasetRoot`.
    function verifyExample(bytes32 datasetRoot, uint256 index, bytes32 exampleHash, bytes32[] calldata proof)
        external
        pure
        returns (bool)
    {
        return ProofHashing.verify(proof, datasetRoot, ProofHashing.exampleLeaf(index, exampleHash));
    }

    function segmentLeaf(uint256 index, bytes32 ckptHash, bytes32 nextCkptHash, bytes32 batchesHash)
        external
        pure
        returns (bytes32)
    {
        return ProofHashing.segmentLeaf(index, ckptHash, nextCkptHash, batchesHash);
    }

    function exampleLeaf(uint256 index, bytes32 exampleHash) external pure returns (bytes32) {
        return ProofHashing.exampleLeaf(index, exampleHash);
    }

    /// @notice The prover of the earliest-committed, not rejected, training claim with these final weights.
    function ownerOf(bytes32 finalWeightsHash) external view returns (address) {
        uint256 claimId = ownerClaimOf(finalWeightsHash);
        return claimId == 0 ? address(0) : _claims[claimId].prover;
    }

    /// @notice The claim behind `ownerOf`, 0 if none: claims that are Invalid or tainted are skipped.
    function ownerClaimOf(bytes32 finalWeightsHash) public view returns (uint256) {
        uint64 claimId = _byWeights[finalWeightsHash].first;
        while (claimId != 0) {
            Claim storage claim = _claims[claimId];
            if (claim.status != ClaimStatus.Invalid && !isTainted(claimId)) return claimId;
            claimId = claim.nextSameWeights;
        }
        return 0;
    }

    /// @notice The training claim whose final weights are `claimId`'s checkpoint 0; 0 if none.
    function parentOf(uint256 claimId) external view returns (uint256) {
        return _existingClaim(claimId).parentClaimId;
    }

    /// @notice Where `claimId`'s checkpoint 0 came from (Seed for inference claims).
    function originOf(uint256 claimId) external view returns (InitOrigin) {
        return _existingClaim(claimId).origin;
    }

    /// @notice True when an ancestor of `claimId` (its parent, the parent's parent, ...) was rejected: the
    /// run started from weights nobody vouches for any more.
    /// @dev Parents have smaller ids than their children, so the walk ends.
    function isTainted(uint256 claimId) public view returns (bool) {
        uint256 id = _existingClaim(claimId).parentClaimId;
        while (id != 0) {
            Claim storage ancestor = _claims[id];
            if (ancestor.status == ClaimStatus.Invalid) return true;
            id = ancestor.parentClaimId;
        }
        return false;
    }

    // ------------------------------------------------------------------------------------------------------
    // Internal helpers
    // ------------------------------------------------------------------------------------------------------

    function _existingClaim(uint256 claimId) private view returns (Claim storage claim) {
        claim = _claims[claimId];
        if (claim.kind == ClaimKind.None) revert UnknownClaim(claimId);
    }

    function _existingChallenge(uint256 challengeId) private view returns (Challenge storage ch) {
        ch = _challenges[challengeId];
        if (ch.status == ChallengeStatus.None) revert UnknownChallenge(challengeId);
    }

    function _openChallenge(uint256 challengeId) private view returns (Challenge storage ch) {
        ch = _existingChallenge(challengeId);
        if (ch.status != ChallengeStatus.Open) revert ChallengeNotOpen(challengeId, ch.status);
    }

    function _activeVerifier(address account) private view returns (Verifier storage v) {
        v = _verifiers[account];
        if (v.status != VerifierStatus.Active) revert NotActiveVerifier(account);
    }

    function _bondOf(ClaimKind kind) private view returns (uint256) {
        return kind == ClaimKind.Training ? _trainingBond : _inferenceBond;
    }

    function _checkCid(string calldata cid) private pure {
        uint256 length = bytes(cid).length;
        if (length == 0 || length > MAX_CID_LENGTH) revert InvalidCid();
    }

    function _credit(address account, uint256 amount) private {
        _pending[account] += amount;
        emit PaymentCredited(account, amount);
    }

    /// @dev Seed block `seedDelay` blocks ahead; commitments close `commitPeriod` blocks after it, reveals
    /// `revealPeriod` blocks after that.
    function _scheduleSeed(Challenge storage ch)
        private
        returns (uint256 seedBlock, uint256 commitDeadline, uint256 deadline)
    {
        seedBlock = block.number + _seedDelay;
        commitDeadline = seedBlock + _commitPeriod;
        deadline = commitDeadline + _revealPeriod;
        ch.seedBlock = uint64(seedBlock);
        ch.commitDeadline = uint64(commitDeadline);
        ch.deadline = uint64(deadline);
    }

    /// @dev Checks the named segments (at most 8, each below `numSegments`) and packs them as uint32s.
    function _packNamed(uint32[] calldata named, uint256 numSegments) private pure returns (uint256 packed) {
        uint256 count = named.length;
        if (count > MAX_NAMED_SEGMENTS) revert TooManyNamedSegments(count, MAX_NAMED_SEGMENTS);
        for (uint256 i; i < count; ++i) {
            uint256 s = named[i];
            if (s >= numSegments) revert SegmentOutOfRange(s, numSegments);
            packed |= s << (32 * i);
        }
    }

    /// @dev `keccak256(abi.encode(blockhash(seedBlock), challengeId))`. The seed block's hash commits to its whole
    /// header, whose `mixHash` is that block's `prevrandao` from paris on, so the beacon chain's RANDAO is in
    /// the seed; `block.prevrandao` of the drawing block is not read, since whoever includes the draw could
    /// then pick among up to 256 values by delaying it (docs/protocol.md section 5). The challenge id keeps
    /// two challenges with the same seed block from sharing a committee and a sample.
    function _readSeed(Challenge storage ch, uint256 challengeId) private view returns (bytes32) {
        uint256 seedBlock = ch.seedBlock;
        if (block.number <= seedBlock) revert SeedNotReady(seedBlock);
        if (block.number > seedBlock + _BLOCKHASH_WINDOW) revert SeedExpired(seedBlock);
        return keccak256(abi.encode(blockhash(seedBlock), challengeId));
    }

    /// @dev Picks C distinct eligible verifiers: the j-th pick starts at `committeeStart(seed, j, n)` in the
    /// active list and probes forward to the first eligible verifier not yet picked. Eligible: registered
    /// before the seed block, stake at least `verifierStake`, neither the prover nor the challenger.
    function _draw(Challenge storage ch, uint256 challengeId) private {
        bytes32 seed = _readSeed(ch, challengeId);
        address prover = _claims[ch.claimId].prover;
        address challenger = ch.challenger;
        uint256 seedBlock = ch.seedBlock;
        uint256 n = _active.length;
        uint256 packed;
        uint256 size;
        address[] memory members = new address[](_committeeSize);
        for (uint256 j; j < _committeeSize && n != 0; ++j) {
            uint256 pos = Sampling.committeeStart(seed, j, n);
            bool found;
            for (uint256 probes; probes < n; ++probes) {
                uint256 id = _active[pos];
                if (!_isPicked(packed, size, id)) {
                    address account = _verifierAddresses[id];
                    Verifier storage v = _verifiers[account];
                    if (account != prover && account != challenger && v.since < seedBlock && v.stake >= _verifierStake)
                    {
                        packed |= id << (32 * size);
                        members[size] = account;
                        ++size;
                        v.openDuties += 1;
                        found = true;
                        break;
                    }
                }
                pos = pos + 1 == n ? 0 : pos + 1;
            }
            if (!found) break;
        }
        ch.seed = seed;
        ch.drawn = true;
        ch.committeeSize = uint8(size);
        ch.committee = packed;
        assembly ("memory-safe") {
            mstore(members, size) // a smaller pool draws fewer members
        }
        emit CommitteeDrawn(challengeId, seed, members);
    }

    function _isPicked(uint256 packed, uint256 size, uint256 id) private pure returns (bool) {
        for (uint256 p; p < size; ++p) {
            if ((packed >> (32 * p)) & 0xffffffff == id) return true;
        }
        return false;
    }

    function _committeeAddresses(uint256 packed, uint256 size) private view returns (address[] memory out) {
        out = new address[](size);
        for (uint256 p; p < size; ++p) {
            out[p] = _verifierAddresses[(packed >> (32 * p)) & 0xffffffff];
        }
    }

    function _positionOf(Challenge storage ch, uint256 challengeId, address account) private view returns (uint256) {
        Verifier storage v = _verifiers[account];
        if (v.status != VerifierStatus.None) {
            uint256 id = v.id;
            uint256 packed = ch.committee;
            uint256 size = ch.committeeSize;
            for (uint256 p; p < size; ++p) {
                if ((packed >> (32 * p)) & 0xffffffff == id) return p;
            }
        }
        revert NotCommitteeMember(challengeId, account);
    }

    function _tally(Challenge storage ch) private view returns (uint256[4] memory votes) {
        uint256 size = ch.committeeSize;
        uint256 bits = ch.verdicts;
        for (uint256 p; p < size; ++p) {
            ++votes[(bits >> (2 * p)) & 3];
        }
    }

    /// @dev Moves the claim's status for the outcome; returns the losing bond and who keeps what the
    /// verifiers do not get. Valid: the challenger's bond, for the prover. Invalid or Unavailable: the prover's
    /// bond (unless an earlier challenge already took it), for the challenger, who also gets the own bond back.
    /// Expired: nothing is lost; the challenger gets the bond back.
    function _resolveClaim(
        Challenge storage ch,
        Claim storage claim,
        uint256 challengeId,
        uint256 claimId,
        ChallengeStatus outcome
    ) private returns (uint256 pool, address winner) {
        if (outcome == ChallengeStatus.Valid) {
            pool = _challengeBond;
            winner = claim.prover;
            if (claim.status == ClaimStatus.Committed) {
                claim.status = ClaimStatus.Valid;
                emit ClaimValidated(claimId, challengeId);
            }
        } else {
            winner = ch.challenger;
            _credit(winner, _challengeBond);
            if (outcome != ChallengeStatus.Expired && claim.status != ClaimStatus.Invalid) {
                pool = _bondOf(claim.kind);
                claim.status = ClaimStatus.Invalid;
                emit ClaimRejected(claimId, challengeId);
            }
        }
    }

    /// @dev Slashes, then shares `verifierRewardBps` of the pool plus everything slashed equally among the
    /// rewarded members; the rest (and any rounding dust) goes to `winner`, so nothing stays behind.
    function _distribute(
        Challenge storage ch,
        uint256 challengeId,
        ChallengeStatus outcome,
        bool afterDeadline,
        uint256 pool,
        address winner
    ) private {
        (uint256 slashed, uint256 rewardedMask, uint256 rewarded) =
            _slashCommittee(ch, challengeId, outcome, afterDeadline);
        uint256 each;
        if (rewarded != 0) {
            each = ((pool * _verifierRewardBps) / _BPS + slashed) / rewarded;
            if (each != 0) _rewardCommittee(ch, challengeId, rewardedMask, each);
        }
        uint256 toWinner = pool + slashed - each * rewarded;
        if (toWinner != 0) _credit(winner, toWinner);
    }

    /// @dev Quorum first; after the deadline the strict plurality of given verdicts; None if not settleable.
    function _outcome(uint256[4] memory votes, bool afterDeadline) private view returns (ChallengeStatus) {
        for (uint256 v = 1; v < 4; ++v) {
            if (votes[v] >= _quorum) return ChallengeStatus(v + 1);
        }
        if (!afterDeadline) return ChallengeStatus.None;
        uint256 best;
        uint256 bestVotes;
        bool tie;
        for (uint256 v = 1; v < 4; ++v) {
            if (votes[v] > bestVotes) {
                best = v;
                bestVotes = votes[v];
                tie = false;
            } else if (votes[v] == bestVotes && bestVotes != 0) {
                tie = true;
            }
        }
        if (best == 0 || tie) return ChallengeStatus.Expired;
        return ChallengeStatus(best + 1);
    }

    /// @dev Releases every member's duty and slashes: outvoted members always, silent members after the
    /// deadline. Returns what was slashed and which positions share the reward (the majority, or on Expired
    /// the members who attested).
    function _slashCommittee(Challenge storage ch, uint256 challengeId, ChallengeStatus outcome, bool afterDeadline)
        private
        returns (uint256 slashed, uint256 rewardedMask, uint256 rewarded)
    {
        uint256 size = ch.committeeSize;
        uint256 packed = ch.committee;
        uint256 verdictBits = ch.verdicts;
        uint256 winning = outcome == ChallengeStatus.Expired ? 0 : uint256(outcome) - 1;
        for (uint256 p; p < size; ++p) {
            address account = _verifierAddresses[(packed >> (32 * p)) & 0xffffffff];
            Verifier storage v = _verifiers[account];
            v.openDuties -= 1;
            uint256 vote = (verdictBits >> (2 * p)) & 3;
            uint256 bps;
            if (vote == 0) {
                if (afterDeadline) bps = _silentSlashBps;
            } else if (winning == 0 || vote == winning) {
                rewardedMask |= 1 << p;
                ++rewarded;
            } else {
                bps = _minoritySlashBps;
            }
            if (bps != 0) {
                uint256 amount = (uint256(v.stake) * bps) / _BPS;
                if (amount != 0) {
                    v.stake -= uint96(amount);
                    slashed += amount;
                    emit VerifierSlashed(account, challengeId, amount);
                }
            }
        }
    }

    /// @dev Rewards compound into stake (the record is written anyway); stake past uint96 is credited instead.
    function _rewardCommittee(Challenge storage ch, uint256 challengeId, uint256 mask, uint256 each) private {
        uint256 size = ch.committeeSize;
        uint256 packed = ch.committee;
        for (uint256 p; p < size; ++p) {
            if (mask & (1 << p) == 0) continue;
            address account = _verifierAddresses[(packed >> (32 * p)) & 0xffffffff];
            Verifier storage v = _verifiers[account];
            uint256 stake = uint256(v.stake) + each;
            if (stake > type(uint96).max) {
                _credit(account, each);
            } else {
                v.stake = uint96(stake);
                emit VerifierRewarded(account, challengeId, each);
            }
        }
    }

    function _removeActive(uint256 index) private {
        uint256 lastIndex = _active.length - 1;
        if (index != lastIndex) {
            uint32 moved = _active[lastIndex];
            _active[index] = moved;
            _verifiers[_verifierAddresses[moved]].activeIndex = uint32(index);
        }
        _active.pop();
    }
}
