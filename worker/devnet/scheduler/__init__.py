"""Development scheduler: a small iexec-core stand-in (REST API for workers and the STOMP push channel)."""
