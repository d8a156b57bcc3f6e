#!/usr/bin/env node
// Builds OpenZeppelin StandardMerkleTrees for the cases given on stdin and prints roots, proofs and dumps.
// The reference implementation that `registry/core/merkle.py` must reproduce (tests/vectors/merkle.json).
"use strict";
const path = require("path");
const { StandardMerkleTree } = require(path.join(__dirname, "..", "node_modules", "@openzeppelin", "merkle-tree"));

const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = cases.map(({ name, leafEncoding, values }) => {
  const tree = StandardMerkleTree.of(values, leafEncoding);
  return {
    name,
    leafEncoding,
    values,
    root: tree.root,
    leafHashes: values.map((v) => tree.leafHash(v)),
    proofs: values.map((_, i) => tree.getProof(i)),
    dump: tree.dump(),
  };
});
process.stdout.write(JSON.stringify(out, null, 1) + "\n");
