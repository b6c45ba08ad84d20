"""Tests against the real vLLM CPU build in the controller venv (scripts/controller-vllm.sh)."""
