"""The benchmark sweep of `bench.py`: vLLM's own `vllm bench serve` commands and the report built from its results.

Pure Python, no pyinfra import: `command` renders what runs on the host, `inputs` describes what was
measured from the host plan, `report` turns vLLM's result files into report.json, report.md and plots.
"""
