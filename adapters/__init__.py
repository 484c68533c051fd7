"""Chat platform adapters: each turns a platform's commands into jobs and posts their results."""
