"""The vocabulary every layer speaks: pure definitions, no I/O, importing no other package of the worker.

- ``status``: replicate statuses and causes, task notifications, the chain's task and contribution
  enums, and the scheduler's workflow graph;
- ``models``: the scheduler's and the result proxy's JSON bodies;
- ``crypto``: identifiers, hashes and signatures of the protocol (login challenge, authorization,
  result hash and seal);
- ``stomp``: the STOMP 1.2 frame codec of the push channel;
- ``errors``: the error roots, split by what the caller should do, and ``StepFailed``.

Adapters (``chain``, ``scheduler``, ``compute``, ``data``, ``result``) and the replicate core import
from here; nothing here imports them.
"""
