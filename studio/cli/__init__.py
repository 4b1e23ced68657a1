"""`mini-studio`, the command line for people who live in a terminal.

It talks to Mini Studio's public HTTP API only (httpx, a timeout on every call) and imports nothing
from the server's code (an import-linter contract keeps it so). One module per feature: `config`
(where the URL and keys come from), `client` (HTTP and errors), `files` and `uploads`, `jobs` and
`watch`, `deploy`, `chat`, `admin`; `main` puts them together.
"""
