"""Example production inventory: copy it, list your servers, run
`pyinfra inventory/prod.py deploy.py` (add `--dry` to see the plan and the changes first).

Each top-level list is a group; `group_data/<group>.py` holds that group's settings and
overrides `group_data/all.py`. Per-host settings go in the host's dict.
"""

# Two 4090 boxes serving the same model (the SSH user needs passwordless sudo).
qwen3_8b = [
    ("gpu-01.example.internal", {"ssh_user": "ops", "_sudo": True}),
    ("gpu-02.example.internal", {"ssh_user": "ops", "_sudo": True, "vllm_max_model_len": 16384}),
]

# A four-card 2080 Ti (22 GB modded) server with its own model and settings.
coder = [
    (
        "gpu-03.example.internal",
        {
            "ssh_user": "root",
            "model": "deepseek-ai/DeepSeek-R1-0528-Qwen3-8B",
            "vllm_served_model_name": "coder",
            "vllm_max_model_len": 65536,
            "vllm_chat_template": "qwen3-programming",
        },
    ),
]
