"""Results: computed.json, the result digest, the result zip and the upload to the result proxy."""
