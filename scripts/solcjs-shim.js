#!/usr/bin/env node
// Offline stand-in for a native `solc` binary, built on the npm `solc` package (WebAssembly).
// Speaks the subset of solc's CLI that py-solc-x and ape-solidity use: `--version` and
// `--standard-json [--base-path DIR] [--include-path DIR]... [--allow-paths ...]` with the input on stdin.
// Unlike `solcjs`, it prints nothing but the compiler's JSON on stdout.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require(path.join(__dirname, "..", "node_modules", "solc"));

const args = process.argv.slice(2);
if (args.includes("--version")) {
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
  process.exit(0);
}
if (!args.includes("--standard-json")) {
  process.stderr.write("solcjs-shim: only --version and --standard-json are supported\n");
  process.exit(2);
}
const roots = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--base-path" || args[i] === "--include-path") roots.push(args[++i]);
}
if (roots.length === 0) roots.push(process.cwd());

function findImports(importPath) {
  for (const root of roots) {
    const candidate = path.resolve(root, importPath);
    if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, "utf8") };
  }
  if (fs.existsSync(importPath)) return { contents: fs.readFileSync(importPath, "utf8") };
  return { error: `File not found: ${importPath}` };
}

const input = fs.readFileSync(0, "utf8");
process.stdout.write(solc.compile(input, { import: findImports }));
