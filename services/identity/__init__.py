"""Credentials, shared by the authorization service that checks them and the commands that issue them: the
API key format, issuing and revoking keys, the key file, and the development JWT issuer."""
