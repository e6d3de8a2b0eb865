"""What every layer shares: the user-error type, safe file reading and writing, and the messages
that turn schema errors into something a user can act on. Imports nothing else of llmsim."""
