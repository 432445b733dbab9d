"""Devnet: anvil with the real PoCo contracts, a requester toolkit, a development scheduler and result proxy."""
