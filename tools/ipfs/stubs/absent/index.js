// Optional WebRTC dependencies of js-ipfs are deliberately not installed (see package.json).
throw new Error('not installed: WebRTC support is left out of this js-ipfs install')
