"""Inventory of throwaway lab hosts (the quick start and the tests write it).

Reads a JSON file named by $VLLM_DEPLOY_LAB_INVENTORY: a list of [name, data] pairs,
where data holds the SSH settings and any group data overrides for that host.
"""

import json
import os

_path = os.environ.get("VLLM_DEPLOY_LAB_INVENTORY")
if not _path:
    raise SystemExit("inventory/lab.py: set VLLM_DEPLOY_LAB_INVENTORY to the lab's JSON host list")
with open(_path, encoding="utf-8") as _file:
    lab = [tuple(entry) for entry in json.load(_file)]
