// Hardhat is only used as a local JSON-RPC node here (`npx hardhat node --hostname 127.0.0.1 --port 8545`);
// contracts are compiled by solc (registry/chain/toolchain.py, ape-solidity), never by Hardhat.
// Accounts: the mnemonic, HD path and count of ape's test accounts (ape-config.yaml), so ape, web3.py and
// Hardhat agree on addresses. Works offline.
module.exports = {
  networks: {
    hardhat: {
      chainId: 31337,
      // The EVM target of the shipped artifact (registry/chain/toolchain.py COMPILER_SETTINGS.evmVersion), which the
      // embedded EVM follows too (registry/chain/local.py); tests/test_evm_target.py keeps the three in step.
      hardfork: "shanghai",
      accounts: {
        mnemonic: "test test test test test test test test test test test junk",
        path: "m/44'/60'/0'/0",
        count: 10,
      },
    },
  },
};
