"""Chain: the PoCo contracts through web3, transactions, the chain watcher, protocol hashes."""
