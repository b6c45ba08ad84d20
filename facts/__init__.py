"""Host facts: exact commands (commands), pure parsers (parsers), pyinfra facts (host), gathering (gather)."""
