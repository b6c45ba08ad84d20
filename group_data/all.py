"""Settings for every host: only what this site changes from the defaults.

Every setting is declared once, with its type, default, validator and meaning, in
`plan/schema.py`; README's "Settings reference" is generated from it (`python -m plan.schema`
prints it). Inventories and `group_data/<group>.py` override this file per group or per host.
Every value is validated before a host is touched; a name that is no setting stops the run with
the closest known one ("did you mean vllm_gpu_memory_utilization?"). Names starting with `_`
are yours (helpers) or pyinfra's (`_sudo`).

Examples:

    model = "Qwen/Qwen2.5-7B-Instruct"
    mirror_preset = "tuna"
    vllm_runtime = "docker"
"""
